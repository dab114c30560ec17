#include "core/error.hpp"

namespace loom::detail {

void assert_fail(const char* expr, const char* file, int line, const std::string& msg) {
  throw Error(cat("internal error (loom bug) at ", file, ":", line, ": ", expr,
                  msg.empty() ? "" : " — ", msg));
}

}  // namespace loom::detail
