#pragma once
/// Shapes and strides. A dimension of -1 is dynamic (e.g. the batch): it is
/// resolved from the feeds when a Session compiles a plan.

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace loom {

using Shape = std::vector<int64_t>;
using Strides = std::vector<int64_t>;  // in elements, may be 0 (broadcast) or negative (flip)

inline constexpr int64_t kDynamic = -1;

/// "[2,3,4]"; dynamic dims print as "?".
std::string shape_str(const Shape& s);

/// Product of dims; a shape with a dynamic dim has no numel (throws).
int64_t numel(const Shape& s);

bool is_static(const Shape& s);

/// Row-major strides of a compact array of shape `s`.
Strides compact_strides(const Shape& s);

/// Normalizes a possibly negative axis against `ndim`; throws naming `what`.
int normalize_axis(int64_t axis, int64_t ndim, const char* what);

/// The shape two shapes broadcast to (numpy rules); throws naming `what`.
/// Dynamic dims broadcast with 1 or with another dynamic dim.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* what = "broadcast");

struct ShapePrinter {
  const Shape& s;
};
inline std::ostream& operator<<(std::ostream& os, ShapePrinter p) { return os << shape_str(p.s); }
/// For streaming into error messages: `fail("bad ", S(shape))`.
inline ShapePrinter S(const Shape& s) { return {s}; }

}  // namespace loom
