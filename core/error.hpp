#pragma once
/// Errors. User mistakes raise loom::Error with a message naming the op, node,
/// file or placeholder and what was expected. Internal invariants use
/// LOOM_ASSERT, which also throws (never aborts) but marks the bug as ours.

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace loom {

/// The one exception type users see.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <class... Args>
std::string cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
[[noreturn]] void assert_fail(const char* expr, const char* file, int line, const std::string& msg);
}  // namespace detail

/// Builds a message from streamable pieces and throws loom::Error.
template <class... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(detail::cat(std::forward<Args>(args)...));
}

}  // namespace loom

/// Throws loom::Error with the streamed message when `cond` is false.
#define LOOM_CHECK(cond, ...)                 \
  do {                                        \
    if (!(cond)) ::loom::fail(__VA_ARGS__);   \
  } while (0)

/// Internal invariant: a failure is a loom bug, reported with file and line.
#define LOOM_ASSERT(cond, ...)                                                            \
  do {                                                                                    \
    if (!(cond)) ::loom::detail::assert_fail(#cond, __FILE__, __LINE__,                   \
                                             ::loom::detail::cat("" __VA_OPT__(, ) __VA_ARGS__)); \
  } while (0)
