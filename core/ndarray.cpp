#include "core/ndarray.hpp"

#include <cmath>
#include <cstring>
#include <numeric>
#include <sstream>

#include "core/kernel.hpp"
#include "core/op.hpp"

namespace loom {

// ---------------------------------------------------------------- Layout

bool Layout::is_compact() const {
  int64_t expect = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] == 0) return true;
    if (shape[i] != 1 && strides[i] != expect) return false;
    expect *= shape[i];
  }
  return true;
}

std::pair<int64_t, int64_t> Layout::extent() const {
  int64_t lo = offset, hi = offset;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 0) return {offset, offset};
    int64_t span = strides[i] * (shape[i] - 1);
    (span < 0 ? lo : hi) += span;
  }
  return {lo, hi + 1};
}

Shape resolve_reshape(const Shape& from, const Shape& to, const char* what) {
  int64_t count = numel(from);
  Shape r = to;
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < r.size(); ++i) {
    if (r[i] == -1) {
      if (infer >= 0) fail(what, ": more than one -1 in target shape ", shape_str(to));
      infer = int(i);
    } else if (r[i] < 0) {
      fail(what, ": negative dimension in target shape ", shape_str(to));
    } else if (__builtin_mul_overflow(known, r[i], &known)) {
      fail(what, ": target shape ", shape_str(to), " has more than 2^63 elements");
    }
  }
  if (infer >= 0) {
    if (known == 0 || count % known != 0)
      fail(what, ": cannot reshape ", shape_str(from), " to ", shape_str(to));
    r[size_t(infer)] = count / known;
  } else if (known != count) {
    fail(what, ": cannot reshape ", shape_str(from), " (", count, " elements) to ", shape_str(to), " (",
         known, " elements)");
  }
  return r;
}

std::optional<Layout> layout_reshape(const Layout& in, const Shape& shape) {
  // The no-copy reshape of numpy/PyTorch: split the old dims into chunks that
  // are contiguous with each other and match the new dims against them.
  Layout out{shape, Strides(shape.size()), in.offset};
  int64_t n = numel(shape);
  if (n == 0 || in.shape.empty() || in.is_compact()) {
    out.strides = compact_strides(shape);
    return out;
  }
  int64_t view_d = int64_t(shape.size()) - 1;
  int64_t chunk_base = in.strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = int64_t(in.shape.size()) - 1; d >= 0; --d) {
    tensor_numel *= in.shape[size_t(d)];
    if (d == 0 || (in.shape[size_t(d - 1)] != 1 && in.strides[size_t(d - 1)] != tensor_numel * chunk_base)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[size_t(view_d)] == 1)) {
        out.strides[size_t(view_d)] = view_numel * chunk_base;
        view_numel *= shape[size_t(view_d)];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (d > 0) {
        chunk_base = in.strides[size_t(d - 1)];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return out;
}

Layout layout_permute(const Layout& in, const std::vector<int64_t>& axes, const char* what) {
  size_t n = in.shape.size();
  if (axes.size() != n) fail(what, ": ", axes.size(), " axes given for a ", n, "-d array ", shape_str(in.shape));
  Layout out{Shape(n), Strides(n), in.offset};
  std::vector<bool> seen(n, false);
  for (size_t i = 0; i < n; ++i) {
    int a = normalize_axis(axes[i], int64_t(n), what);
    if (seen[size_t(a)]) fail(what, ": axis ", axes[i], " repeated");
    seen[size_t(a)] = true;
    out.shape[i] = in.shape[size_t(a)];
    out.strides[i] = in.strides[size_t(a)];
  }
  return out;
}

Layout layout_broadcast(const Layout& in, const Shape& shape, const char* what) {
  size_t n = shape.size(), m = in.shape.size();
  if (m > n) fail(what, ": cannot broadcast ", shape_str(in.shape), " to ", shape_str(shape));
  for (int64_t d : shape) LOOM_CHECK(d >= 0, what, ": cannot broadcast to ", shape_str(shape), " (dims must be known)");
  Layout out{shape, Strides(n, 0), in.offset};
  for (size_t i = 0; i < m; ++i) {
    size_t j = n - m + i;
    if (in.shape[i] == shape[j]) out.strides[j] = in.strides[i];
    else if (in.shape[i] != 1) fail(what, ": cannot broadcast ", shape_str(in.shape), " to ", shape_str(shape));
  }
  return out;
}

Layout layout_slice(const Layout& in, const std::vector<Slice>& slices, const char* what) {
  if (slices.size() > in.shape.size())
    fail(what, ": ", slices.size(), " slices for a ", in.shape.size(), "-d array ", shape_str(in.shape));
  Layout out = in;
  for (size_t i = 0; i < slices.size(); ++i) {
    const Slice& s = slices[i];
    int64_t n = in.shape[i];
    if (s.step == 0) fail(what, ": slice step cannot be zero (axis ", i, ")");
    int64_t start, stop, len;
    auto norm = [&](int64_t v, int64_t lo, int64_t hi) {
      if (v < 0) v += n;
      return std::clamp(v, lo, hi);
    };
    // In unsigned arithmetic: a step of INT64_MIN or INT64_MAX must not overflow.
    const uint64_t step = s.step > 0 ? uint64_t(s.step) : 0 - uint64_t(s.step);
    if (s.step > 0) {
      start = s.start == Slice::kNone ? 0 : norm(s.start, 0, n);
      stop = s.stop == Slice::kNone ? n : norm(s.stop, 0, n);
      len = stop > start ? int64_t((uint64_t(stop - start) - 1) / step + 1) : 0;
    } else {
      start = s.start == Slice::kNone ? n - 1 : norm(s.start, -1, n - 1);
      stop = s.stop == Slice::kNone ? -1 : norm(s.stop, -1, n - 1);
      len = start > stop ? int64_t((uint64_t(start - stop) - 1) / step + 1) : 0;
    }
    if (len > 0) out.offset += start * in.strides[i];
    out.shape[i] = len;
    // With two or more elements |step| < n, so the product fits; one element needs no stride.
    out.strides[i] = len > 1 ? in.strides[i] * s.step : in.strides[i];
  }
  return out;
}

// ---------------------------------------------------------------- NDArray

NDArray::NDArray(std::shared_ptr<Buffer> buf, Layout layout, DType dtype)
    : buf_(std::move(buf)), layout_(std::move(layout)), dtype_(dtype) {
  // A user's layout as well as loom's own views: errors, not assertions.
  LOOM_CHECK(layout_.shape.size() == layout_.strides.size(), "NDArray: shape ", shape_str(layout_.shape), " and ",
             layout_.strides.size(), " strides differ in rank");
  for (int64_t d : layout_.shape)
    LOOM_CHECK(d >= 0, "NDArray: shape ", shape_str(layout_.shape), " has a negative dim");
  if (buf_ && numel() > 0) {
    auto [lo, hi] = layout_.extent();
    LOOM_CHECK(lo >= 0 && size_t(hi) * dtype_size(dtype_) <= buf_->bytes(), "NDArray: a view of shape ",
               shape_str(layout_.shape), " reaches outside its buffer of ", buf_->bytes(), " bytes");
  }
}

NDArray NDArray::empty(const Shape& shape, DType dtype, Device device) {
  LOOM_CHECK(is_static(shape), "NDArray: shape ", shape_str(shape), " has a dynamic or negative dim");
  return NDArray(Buffer::allocate(device, checked_bytes(shape, dtype_size(dtype))), Layout::compact(shape), dtype);
}

NDArray NDArray::zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }

NDArray NDArray::full(const Shape& shape, double value, DType dtype, Device device) {
  NDArray a = empty(shape, dtype, device);
  a.fill(value);
  return a;
}

NDArray NDArray::arange(int64_t n, DType dtype) {
  NDArray a = empty({n}, dtype);
  dispatch(dtype, [&]<class T>() {
    T* p = a.data<T>();
    for (int64_t i = 0; i < n; ++i) p[i] = T(i);
  });
  return a;
}

Device NDArray::device() const { return buf_ ? buf_->device() : Device::cpu(); }

int64_t NDArray::numel() const { return loom::numel(layout_.shape); }

int64_t NDArray::dim(int64_t axis) const { return layout_.shape[size_t(normalize_axis(axis, ndim(), "dim"))]; }

void* NDArray::raw() const {
  LOOM_CHECK(buf_, "NDArray: use of an undefined array");
  return static_cast<char*>(buf_->data()) + layout_.offset * int64_t(itemsize());
}

void NDArray::check_type(DType t) const {
  LOOM_CHECK(t == dtype_, "NDArray: data<", dtype_name(t), ">() on a ", dtype_name(dtype_), " array");
}

NDArray NDArray::view(const Shape& shape) const {
  Shape s = resolve_reshape(this->shape(), shape, "view");
  auto l = layout_reshape(layout_, s);
  LOOM_CHECK(l, "view: cannot view ", shape_str(this->shape()), " with strides ", shape_str(strides()), " as ",
             shape_str(s), " without a copy (use reshape)");
  return NDArray(buf_, *l, dtype_);
}

NDArray NDArray::reshape(const Shape& shape) const {
  Shape s = resolve_reshape(this->shape(), shape, "reshape");
  if (auto l = layout_reshape(layout_, s)) return NDArray(buf_, *l, dtype_);
  return clone().view(s);
}

NDArray NDArray::permute(const std::vector<int64_t>& axes) const {
  return NDArray(buf_, layout_permute(layout_, axes), dtype_);
}

NDArray NDArray::transpose() const {
  LOOM_CHECK(ndim() >= 2, "transpose: needs at least 2 dims, got ", shape_str(shape()));
  std::vector<int64_t> axes(static_cast<size_t>(ndim()));
  std::iota(axes.begin(), axes.end(), 0);
  std::swap(axes[axes.size() - 1], axes[axes.size() - 2]);
  return permute(axes);
}

NDArray NDArray::broadcast_to(const Shape& shape) const {
  return NDArray(buf_, layout_broadcast(layout_, shape), dtype_);
}

NDArray NDArray::slice(const std::vector<Slice>& slices) const {
  return NDArray(buf_, layout_slice(layout_, slices), dtype_);
}

NDArray NDArray::select(int64_t axis, int64_t i) const {
  int a = normalize_axis(axis, ndim(), "select");
  int64_t n = layout_.shape[size_t(a)];
  if (i < -n || i >= n) fail("select: index ", i, " out of range for axis ", a, " of size ", n);
  if (i < 0) i += n;
  Layout l = layout_;
  l.offset += i * l.strides[size_t(a)];
  l.shape.erase(l.shape.begin() + a);
  l.strides.erase(l.strides.begin() + a);
  return NDArray(buf_, l, dtype_);
}

NDArray NDArray::flip(const std::vector<int64_t>& axes) const {
  std::vector<Slice> s(static_cast<size_t>(ndim()));
  for (int64_t a : axes) {
    Slice& axis = s[size_t(normalize_axis(a, ndim(), "flip"))];
    LOOM_CHECK(axis.step != -1, "flip: axis ", a, " is given twice");
    axis.step = -1;
  }
  return slice(s);
}

NDArray NDArray::compact() const { return is_compact() ? *this : clone(); }

NDArray NDArray::clone() const {
  NDArray r = empty(shape(), dtype_, device());
  copy_into(r, *this);
  return r;
}

NDArray NDArray::astype(DType dtype) const {
  NDArray r = empty(shape(), dtype, device());
  copy_into(r, *this);
  return r;
}

NDArray NDArray::to(Device device) const {
  if (device == this->device()) return *this;
  NDArray src = compact();
  NDArray r = empty(shape(), dtype_, device);
  size_t n = nbytes();
  if (device.is_cpu()) {
    device_backend(src.device()).copy_to_host(r.raw(), src.raw(), n, nullptr);
    device_backend(src.device()).synchronize(nullptr);
  } else if (src.device().is_cpu()) {
    device_backend(device).copy_from_host(r.raw(), src.raw(), n, nullptr);
    device_backend(device).synchronize(nullptr);
  } else {
    return to(Device::cpu()).to(device);
  }
  return r;
}

void NDArray::assign(const NDArray& src) const {
  LOOM_CHECK(defined() && src.defined(), "assign: undefined array");
  NDArray s = src.device() == device() ? src : src.to(device());
  copy_into(*this, s.broadcast_to(shape()));
}

void NDArray::fill(double value) const {
  NDArray one = empty({}, float64);
  *one.data<double>() = value;
  assign(one);  // converted as casts convert: to integers saturating, NaN to 0
}

namespace {
/// The bytes [first, last) an array's elements occupy (strides may be negative or 0).
std::pair<const char*, const char*> byte_extent(const NDArray& a) {
  int64_t lo = 0, hi = 0;
  for (size_t d = 0; d < a.shape().size(); ++d) {
    const int64_t span = (a.shape()[d] - 1) * a.strides()[d];
    (span < 0 ? lo : hi) += span;
  }
  const char* first = static_cast<const char*>(a.raw());
  return {first + lo * int64_t(a.itemsize()), first + (hi + 1) * int64_t(a.itemsize())};
}
}  // namespace

void copy_into(const NDArray& dst, const NDArray& src) {
  LOOM_CHECK(dst.shape() == src.shape(), "copy: shape ", shape_str(src.shape()), " does not match ",
             shape_str(dst.shape()));
  LOOM_CHECK(dst.device() == src.device(), "copy: ", src.device().str(), " to ", dst.device().str(),
             " (use NDArray::to)");
  for (size_t d = 0; d < dst.shape().size(); ++d)
    LOOM_CHECK(dst.strides()[d] != 0 || dst.shape()[d] <= 1, "copy: the destination ", shape_str(dst.shape()),
               " is a broadcast view (stride 0 on axis ", d, "): its elements share memory");
  if (dst.numel() == 0) return;
  // A source overlapping the destination (a.assign(a.transpose()), shifted slices) is read before anything is
  // written, as NumPy does.
  if (dst.same_storage(src)) {
    const auto [d0, d1] = byte_extent(dst);
    const auto [s0, s1] = byte_extent(src);
    if (d0 < s1 && s0 < d1) return copy_into(dst, src.clone());
  }
  const KernelInfo* k = find_kernel(core_op::copy.name(), dst.device().kind, dst.dtype());
  LOOM_CHECK(k, "copy: no kernel for ", dtype_name(dst.dtype()), " on ", dst.device().str());
  KernelContext ctx{dst.device()};
  Attrs none;
  KernelCall call{ctx, std::span(&src, 1), std::span(&dst, 1), none, core_op::copy.name(), "copy"};
  k->fn(call);
  if (!dst.device().is_cpu()) device_backend(dst.device()).synchronize(nullptr);
}

double NDArray::item() const {
  LOOM_CHECK(numel() == 1, "item: array of shape ", shape_str(shape()), " has ", numel(), " elements, not 1");
  return at(std::vector<int64_t>(size_t(ndim()), 0));
}

double NDArray::at(const std::vector<int64_t>& index) const {
  LOOM_CHECK(int64_t(index.size()) == ndim(), "at: ", index.size(), " indices for a ", ndim(), "-d array");
  if (!device().is_cpu()) return to(Device::cpu()).at(index);
  int64_t off = 0;
  for (size_t i = 0; i < index.size(); ++i) {
    LOOM_CHECK(index[i] >= 0 && index[i] < shape()[i], "at: index ", index[i], " out of range for axis ", i,
               " of size ", shape()[i]);
    off += index[i] * strides()[i];
  }
  return dispatch(dtype_, [&]<class T>() { return double(static_cast<const T*>(raw())[off]); });
}

std::string NDArray::str(int64_t max_per_axis) const {
  if (!defined()) return "NDArray(undefined)";
  LOOM_CHECK(max_per_axis >= 2, "NDArray::str: max_per_axis must be >= 2 (the first and last shown), got ",
             max_per_axis);
  NDArray h = to(Device::cpu());
  // Integers print every digit (through a double, 123456789 printed as 1.23457e+08).
  const bool integral = !is_floating(dtype_) && dtype_ != boolean;
  const NDArray ints = integral ? h.astype(int64).compact() : NDArray();
  std::ostringstream os;
  std::vector<int64_t> idx(size_t(ndim()), 0);
  auto rec = [&](auto&& self, size_t axis) -> void {
    if (axis == idx.size()) {
      if (integral) {
        int64_t flat = 0;
        for (size_t a = 0; a < idx.size(); ++a) flat = flat * h.shape()[a] + idx[a];
        os << ints.data<int64_t>()[flat];
        return;
      }
      double v = h.at(idx);
      if (dtype_ == boolean) os << (v != 0 ? "true" : "false");
      else os << v;
      return;
    }
    os << "[";
    int64_t n = h.shape()[axis];
    for (int64_t i = 0; i < n; ++i) {
      if (n > max_per_axis && i == max_per_axis / 2) {
        os << "..., ";
        i = n - max_per_axis / 2;
      }
      idx[axis] = i;
      self(self, axis + 1);
      if (i + 1 < n) os << (axis + 1 == idx.size() ? ", " : ",\n" + std::string(axis + 1, ' '));
    }
    os << "]";
  };
  rec(rec, 0);
  os << " (" << dtype_name(dtype_) << shape_str(shape()) << ")";
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const NDArray& a) { return os << a.str(); }

}  // namespace loom
