#pragma once
// check_range's rule and message (ops/loss.cpp), shared by its reference and
// the CPU and CUDA kernels, so that every device reports the same error.

#include <cmath>
#include <sstream>
#include <string>

#include "core/attrs.hpp"

namespace loom {

struct RangeCheck {
  double low, high;
  bool allow_nan;
  std::string expected;

  /// Whether v passes: in [low, high], or NaN when allowed.
  template <class T>
  bool admits(T v) const {
    return (v >= T(low) && v <= T(high)) || (allow_nan && v != v);
  }
  /// The end of the error message after "element i is ".
  std::string outside() const {
    std::ostringstream os;
    os << "outside [" << low << ", " << high << "]" << (allow_nan ? "" : " or NaN") << " (expected " << expected << ")";
    return os.str();
  }
};

inline RangeCheck range_check(const Attrs& a) {
  return {a.f("low"), a.f("high"), a.get_or("allow_nan", false), a.get<std::string>("expected")};
}

}  // namespace loom
