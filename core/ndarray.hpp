#pragma once
/// NDArray: a strided view (buffer, offset, shape, strides, dtype) of device
/// memory. Views (reshape of compact data, permute, broadcast_to, slice, flip)
/// share the buffer and copy nothing; compact() copies only when needed.

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/buffer.hpp"
#include "core/dtype.hpp"
#include "core/shape.hpp"

namespace loom {

/// Python-style slice of one axis: start/stop may be negative (from the end)
/// or kNone; step may be negative (step -1 over a whole axis is a flip).
struct Slice {
  static constexpr int64_t kNone = std::numeric_limits<int64_t>::min();
  int64_t start = kNone;
  int64_t stop = kNone;
  int64_t step = 1;
  static Slice all() { return {}; }
  static Slice range(int64_t start, int64_t stop, int64_t step = 1) { return {start, stop, step}; }
};

/// Shape, strides (elements) and element offset of a view, without storage.
struct Layout {
  Shape shape;
  Strides strides;
  int64_t offset = 0;

  static Layout compact(const Shape& s) { return {s, compact_strides(s), 0}; }
  bool is_compact() const;
  /// Smallest and one-past-largest element index reachable (for bounds checks).
  std::pair<int64_t, int64_t> extent() const;
};

/// View arithmetic shared by NDArray and the graph's view ops. Each throws
/// loom::Error naming `what` on bad arguments.
std::optional<Layout> layout_reshape(const Layout& in, const Shape& shape);  // nullopt: needs a copy
Layout layout_permute(const Layout& in, const std::vector<int64_t>& axes, const char* what = "permute");
Layout layout_broadcast(const Layout& in, const Shape& shape, const char* what = "broadcast_to");
Layout layout_slice(const Layout& in, const std::vector<Slice>& slices, const char* what = "slice");
/// Resolves -1 in a reshape target against `count` elements; throws naming `what`.
Shape resolve_reshape(const Shape& from, const Shape& to, const char* what = "reshape");

class NDArray {
 public:
  NDArray() = default;
  NDArray(std::shared_ptr<Buffer> buf, Layout layout, DType dtype);

  static NDArray empty(const Shape& shape, DType dtype = float32, Device device = Device::cpu());
  static NDArray zeros(const Shape& shape, DType dtype = float32, Device device = Device::cpu());
  static NDArray full(const Shape& shape, double value, DType dtype = float32,
                      Device device = Device::cpu());
  static NDArray scalar(double value, DType dtype = float32) { return full({}, value, dtype); }
  /// A host array holding `values` in row-major order; shape defaults to [n]
  /// (use scalar() for a 0-d array).
  template <class T>
  static NDArray from(const std::vector<T>& values, Shape shape = {});
  /// 0, 1, ..., n-1.
  static NDArray arange(int64_t n, DType dtype = float32);

  bool defined() const { return buf_ != nullptr; }
  const Shape& shape() const { return layout_.shape; }
  const Strides& strides() const { return layout_.strides; }
  int64_t offset() const { return layout_.offset; }
  const Layout& layout() const { return layout_; }
  DType dtype() const { return dtype_; }
  Device device() const;
  int64_t ndim() const { return int64_t(layout_.shape.size()); }
  int64_t numel() const;
  int64_t dim(int64_t axis) const;
  size_t itemsize() const { return dtype_size(dtype_); }
  size_t nbytes() const { return size_t(numel()) * itemsize(); }
  const std::shared_ptr<Buffer>& buffer() const { return buf_; }
  /// Address of the first element (the element at index 0,...,0).
  void* raw() const;
  template <class T>
  T* data() const {
    check_type(dtype_of<T>());
    return static_cast<T*>(raw());
  }
  bool is_compact() const { return layout_.is_compact(); }
  bool same_storage(const NDArray& o) const { return buf_ && buf_ == o.buf_; }

  // ---- views: no copy ----
  /// Reshape without copying; throws if the data layout does not allow it.
  NDArray view(const Shape& shape) const;
  /// Reshape: a view when possible, otherwise a compact copy. -1 infers a dim.
  NDArray reshape(const Shape& shape) const;
  NDArray permute(const std::vector<int64_t>& axes) const;
  /// Swaps the last two axes (a matrix transpose; batched for N-d).
  NDArray transpose() const;
  NDArray broadcast_to(const Shape& shape) const;
  /// One Slice per leading axis; missing trailing axes are taken whole.
  NDArray slice(const std::vector<Slice>& slices) const;
  /// Element i along `axis`, dropping that axis.
  NDArray select(int64_t axis, int64_t i) const;
  NDArray flip(const std::vector<int64_t>& axes) const;

  // ---- copies ----
  /// This array if already compact, else a compact copy.
  NDArray compact() const;
  /// Always a fresh compact copy.
  NDArray clone() const;
  NDArray to(Device device) const;
  NDArray astype(DType dtype) const;
  /// Set-item: copies `src` (broadcast to this view's shape, cast to its
  /// dtype) into the elements this view addresses.
  void assign(const NDArray& src) const;
  void fill(double value) const;

  // ---- host access (copies from device when needed) ----
  template <class T>
  std::vector<T> to_vector() const;
  /// The single element of a 1-element array.
  double item() const;
  /// Element at a full index, as double (slow; for tests and printing).
  double at(const std::vector<int64_t>& index) const;
  std::string str(int64_t max_per_axis = 6) const;

 private:
  void check_type(DType t) const;
  std::shared_ptr<Buffer> buf_;
  Layout layout_;
  DType dtype_ = float32;
};

std::ostream& operator<<(std::ostream& os, const NDArray& a);

/// Copies `src` into `dst` elementwise (shapes must match; dtypes may differ)
/// on the device of dst, using the registered "copy" kernel.
void copy_into(const NDArray& dst, const NDArray& src);

template <class T>
NDArray NDArray::from(const std::vector<T>& values, Shape shape) {
  if (shape.empty()) shape = {int64_t(values.size())};
  LOOM_CHECK(is_static(shape) && size_t(loom::numel(shape)) == values.size(), "NDArray::from: ",
             values.size(), " values do not fill shape ", shape_str(shape));
  NDArray a = empty(shape, dtype_of<T>());
  T* p = a.data<T>();
  for (size_t i = 0; i < values.size(); ++i) p[i] = values[i];
  return a;
}

template <class T>
std::vector<T> NDArray::to_vector() const {
  NDArray h = to(Device::cpu()).compact();
  if (h.dtype() != dtype_of<T>()) h = h.astype(dtype_of<T>());
  const T* p = h.data<T>();
  return std::vector<T>(p, p + h.numel());
}

}  // namespace loom
