#pragma once
/// Shapes and strides. A dimension of -1 is dynamic (e.g. the batch): it is
/// resolved from the feeds when a Session compiles a plan.

#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace loom {

using Shape = std::vector<int64_t>;
using Strides = std::vector<int64_t>;  // in elements, may be 0 (broadcast) or negative (flip)

inline constexpr int64_t kDynamic = -1;

/// "[2,3,4]"; dynamic dims print as "?".
std::string shape_str(const Shape& s);

/// Product of dims; a shape with a dynamic dim has no numel (throws).
/// Throws loom::Error naming the shape when the product of its nonzero dims
/// exceeds int64 (then no stride or offset of any view of it can overflow).
int64_t numel(const Shape& s);

/// The largest array in bytes (2^48, more than any machine addresses): sizes
/// from users and files are checked against it, and sums of a few million
/// such sizes still fit in 64 bits.
inline constexpr int64_t kMaxArrayBytes = int64_t(1) << 48;

/// numel(s) * itemsize; throws loom::Error naming the shape above kMaxArrayBytes.
size_t checked_bytes(const Shape& s, size_t itemsize);

/// A shape as user code or a file may declare it: every dim >= -1 (-1:
/// dynamic) and the known dims within kMaxArrayBytes at `itemsize` bytes each
/// (0: element counts only). Throws loom::Error "<what>: ..." naming the shape.
void check_shape(const Shape& s, size_t itemsize, std::string_view what);
/// check_shape's test, without the message.
bool valid_shape(const Shape& s, size_t itemsize);

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
