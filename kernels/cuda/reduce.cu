// Reductions over any set of axes on strided input: sum, mean, max, min,
// argmax, argmin, sum_to; and size.
//
// The input's dims are split into kept and reduced lists (size-1 dims dropped,
// mergeable neighbours merged); output o and reduction index r map to input
// offsets through them. One of two kernels runs, each optionally split along
// r into a fixed number of chunks whose partials a third kernel combines:
//  - block per output: threads stride over r, then a shared-memory tree
//    (reductions along contiguous memory, and the all-axes case);
//  - thread per output: a sequential loop over r (small reductions, and
//    reductions across rows where neighbouring outputs are neighbours in
//    memory, so loads coalesce).
// The split and the tree depend only on the shapes, never on the device or on
// timing, so results are deterministic. Accumulators follow the CPU: double
// for float sums, int64 for integer sums; argmax/argmin pick the first NaN,
// else the first extreme element.

#include <algorithm>
#include <cmath>

#include "kernels/cuda/common.cuh"

namespace loom::cuda {
namespace {

struct RedDims {
  int nk = 0, nr = 0;
  int64_t ksize[kMaxDims], kstride[kMaxDims];
  int64_t rsize[kMaxDims], rstride[kMaxDims];
};

// Offset of linear index i over (size, stride) lists, last dim fastest.
__device__ __forceinline__ int64_t offset_in(int n, const int64_t* size, const int64_t* stride, int64_t i) {
  if (n == 0) return 0;
  if (n == 1) return i * stride[0];
  int64_t off = 0;
  if (i <= int64_t(0xFFFFFFFFu)) {
    uint32_t r = uint32_t(i);
    for (int d = n - 1; d > 0; --d) {
      uint32_t s = uint32_t(size[d]), q = r / s;
      off += int64_t(r - q * s) * stride[d];
      r = q;
    }
    return off + int64_t(r) * stride[0];
  }
  for (int d = n - 1; d > 0; --d) {
    int64_t q = i / size[d];
    off += (i - q * size[d]) * stride[d];
    i = q;
  }
  return off + i * stride[0];
}

// ---------------------------------------------------------------- the ops

// Integer sums in uint64_t: they wrap, as the CPU's and PyTorch's do.
template <class T>
using SumAcc = std::conditional_t<std::is_floating_point_v<T>, double, uint64_t>;

template <class T>
struct SumOp {
  using In = T;
  using Out = T;
  using Acc = SumAcc<T>;
  bool mean;
  __device__ Acc init() const { return Acc(0); }
  __device__ void add(Acc& a, T x, int64_t) const { a += Acc(x); }
  __device__ void merge(Acc& a, const Acc& b) const { a += b; }
  __device__ T finish(const Acc& a, int64_t n) const {
    if constexpr (std::is_floating_point_v<T>)
      if (mean) return n ? T(a / Acc(n)) : T(NAN);
    return T(a);
  }
};

// Starts from `initial`: the identity like the CPU kernel (-inf for a float
// max, lowest() for an integer one) or the node's "initial" attribute.
template <class T>
struct ExtremeOp {
  using In = T;
  using Out = T;
  using Acc = T;
  bool is_max;
  T initial;
  __device__ T init() const { return initial; }
  __device__ void add(T& a, T x, int64_t) const { merge(a, x); }
  __device__ void merge(T& a, const T& x) const {
    if (is_max ? (x > a || x != x) : (x < a || x != x)) a = x;  // NaN propagates
  }
  __device__ T finish(const T& a, int64_t) const { return a; }
};

template <class T>
struct ArgAcc {
  T v;
  int64_t i;  // -1: empty
};

template <class T>
struct ArgOp {
  using In = T;
  using Out = int64_t;
  using Acc = ArgAcc<T>;
  bool is_max;
  __device__ Acc init() const { return {T(0), -1}; }
  __device__ void add(Acc& a, T x, int64_t r) const { merge(a, Acc{x, r}); }
  // The first NaN wins, else the extreme value, ties to the lower index: the
  // same answer as the CPU's sequential scan, in any merge order.
  __device__ void merge(Acc& a, const Acc& b) const {
    if (b.i < 0) return;
    if (a.i < 0) {
      a = b;
      return;
    }
    const bool an = a.v != a.v, bn = b.v != b.v;
    if (an || bn) {
      if (bn && (!an || b.i < a.i)) a = b;
      return;
    }
    if (is_max ? b.v > a.v : b.v < a.v) a = b;
    else if (b.v == a.v && b.i < a.i) a = b;
  }
  __device__ int64_t finish(const Acc& a, int64_t) const { return a.i < 0 ? 0 : a.i; }
};

// ---------------------------------------------------------------- kernels

// Tree over the block in shared memory (blockDim.x a power of two): a fixed
// order, hence deterministic. Returns the result in thread 0.
template <class Op>
__device__ typename Op::Acc block_combine(typename Op::Acc a, const Op& op, typename Op::Acc* sh) {
  const unsigned t = threadIdx.x;
  sh[t] = a;
  __syncthreads();
  for (unsigned w = blockDim.x / 2; w > 0; w /= 2) {
    if (t < w) {
      typename Op::Acc v = sh[t];
      op.merge(v, sh[t + w]);
      sh[t] = v;
    }
    __syncthreads();
  }
  a = sh[0];
  __syncthreads();  // sh is reused by the next output
  return a;
}

// One block per (output, split): threads stride over the split's chunk of r.
template <class Op>
__global__ void reduce_block_kernel(RedDims p, const typename Op::In* x, typename Op::Out* y,
                                    typename Op::Acc* partial, int64_t n_out, int64_t n_red, int64_t splits,
                                    int64_t chunk, Op op) {
  using Acc = typename Op::Acc;
  Acc* sh = dynamic_shared<Acc>();
  for (int64_t blk = blockIdx.x; blk < n_out * splits; blk += gridDim.x) {
    const int64_t o = blk / splits, s = blk - o * splits;
    const int64_t base = offset_in(p.nk, p.ksize, p.kstride, o);
    const int64_t r0 = s * chunk, r1 = min(n_red, r0 + chunk);
    Acc a = op.init();
    for (int64_t r = r0 + threadIdx.x; r < r1; r += blockDim.x) op.add(a, x[base + offset_in(p.nr, p.rsize, p.rstride, r)], r);
    a = block_combine(a, op, sh);
    if (threadIdx.x == 0) {
      if (splits == 1) y[o] = op.finish(a, n_red);
      else partial[blk] = a;
    }
  }
}

// One thread per (output, split), outputs fastest so neighbouring threads read
// neighbouring elements when the kept dims are the contiguous ones.
template <class Op>
__global__ void reduce_thread_kernel(RedDims p, const typename Op::In* x, typename Op::Out* y,
                                     typename Op::Acc* partial, int64_t n_out, int64_t n_red, int64_t splits,
                                     int64_t chunk, Op op) {
  using Acc = typename Op::Acc;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < n_out * splits;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t s = t / n_out, o = t - s * n_out;
    const int64_t base = offset_in(p.nk, p.ksize, p.kstride, o);
    const int64_t r0 = s * chunk, r1 = min(n_red, r0 + chunk);
    Acc a = op.init();
    if (p.nr == 1) {
      const int64_t st = p.rstride[0];
      for (int64_t r = r0; r < r1; ++r) op.add(a, x[base + r * st], r);
    } else {
      for (int64_t r = r0; r < r1; ++r) op.add(a, x[base + offset_in(p.nr, p.rsize, p.rstride, r)], r);
    }
    if (splits == 1) y[o] = op.finish(a, n_red);
    else partial[o * splits + s] = a;
  }
}

// Combines the partials of each output in a fixed tree (one block per output).
template <class Op>
__global__ void reduce_partials_kernel(const typename Op::Acc* partial, typename Op::Out* y, int64_t n_out,
                                       int64_t n_red, int64_t splits, Op op) {
  using Acc = typename Op::Acc;
  Acc* sh = dynamic_shared<Acc>();
  for (int64_t o = blockIdx.x; o < n_out; o += gridDim.x) {
    Acc a = op.init();
    for (int64_t s = threadIdx.x; s < splits; s += blockDim.x) op.merge(a, partial[o * splits + s]);
    a = block_combine(a, op, sh);
    if (threadIdx.x == 0) y[o] = op.finish(a, n_red);
  }
}

// ---------------------------------------------------------------- host side

// Kept and reduced dims of `in` (size-1 dims dropped). Reduced dims are
// ordered by decreasing |stride| (the innermost loop then walks the smallest
// stride) unless `logical` is set: argmax reports positions in row-major order.
RedDims make_dims(const KernelCall& c, const NDArray& in, const std::vector<bool>& mask, bool logical) {
  struct D {
    int64_t size, stride;
  };
  std::vector<D> kept, red;
  for (size_t d = 0; d < size_t(in.ndim()); ++d) {
    if (in.shape()[d] == 1) continue;
    (mask[d] ? red : kept).push_back({in.shape()[d], in.strides()[d]});
  }
  if (!logical)
    std::stable_sort(red.begin(), red.end(),
                     [](const D& a, const D& b) { return std::llabs(a.stride) > std::llabs(b.stride); });
  auto merge = [](std::vector<D>& v) {
    std::vector<D> m;
    for (const D& d : v) {
      if (!m.empty() && m.back().stride == d.stride * d.size) {
        m.back().size *= d.size;
        m.back().stride = d.stride;
      } else {
        m.push_back(d);
      }
    }
    v.swap(m);
  };
  merge(kept);
  merge(red);
  if (kept.size() > size_t(kMaxDims) || red.size() > size_t(kMaxDims))
    fail(c.op, " '", c.node, "': input ", shape_str(in.shape()), " has more than ", kMaxDims,
         " kept or reduced dims that cannot be merged");
  RedDims p;
  p.nk = int(kept.size());
  p.nr = int(red.size());
  for (size_t i = 0; i < kept.size(); ++i) p.ksize[i] = kept[i].size, p.kstride[i] = kept[i].stride;
  for (size_t i = 0; i < red.size(); ++i) p.rsize[i] = red[i].size, p.rstride[i] = red[i].stride;
  return p;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int pow2_threads(int64_t work) {
  int t = 32;
  while (t < kThreads && t < work) t *= 2;
  return t;
}

template <class Op>
void run_reduce(const KernelCall& c, const NDArray& in, const NDArray& out, const std::vector<bool>& mask, Op op,
                bool logical = false) {
  using Acc = typename Op::Acc;
  const int64_t n_out = out.numel();
  if (n_out == 0) return;
  int64_t n_red = 1;
  for (size_t d = 0; d < mask.size(); ++d)
    if (mask[d]) n_red *= in.shape()[d];
  RedDims p = make_dims(c, in, mask, logical);
  cudaStream_t s = stream_of(c);
  const auto* x = static_cast<const typename Op::In*>(in.raw());
  auto* y = static_cast<typename Op::Out*>(out.raw());

  // Thread per output when reductions are short, or when outputs are adjacent
  // in memory and the reduction is not (summing over rows).
  const bool kept_contig = p.nk > 0 && p.kstride[p.nk - 1] == 1;
  const bool red_contig = p.nr > 0 && p.rstride[p.nr - 1] == 1;
  const bool per_thread = n_red <= 16 || (kept_contig && !red_contig);
  int64_t splits = 1;
  if (per_thread) {  // about 2^17 threads (a GPU's worth), each summing at least 32 elements
    if (n_out < (1 << 17)) splits = std::max<int64_t>(1, std::min(ceil_div(1 << 17, n_out), n_red / 32));
  } else {
    if (n_out < 1024) splits = std::max<int64_t>(1, std::min(ceil_div(2048, n_out), n_red / 4096));
  }
  const int64_t chunk = ceil_div(std::max<int64_t>(n_red, 1), splits);
  Temp partial(splits > 1 ? size_t(n_out * splits) * sizeof(Acc) : 0, s);
  Acc* part = partial.get<Acc>();

  if (per_thread) {
    launch(reduce_thread_kernel<Op>, grid_for(n_out * splits), kThreads, 0, s, c.op, p, x, y, part, n_out, n_red,
           splits, chunk, op);
  } else {
    const unsigned threads = pow2_threads(chunk);
    const unsigned blocks = unsigned(std::min<int64_t>(n_out * splits, 1 << 20));
    launch(reduce_block_kernel<Op>, blocks, threads, threads * sizeof(Acc), s, c.op, p, x, y, part, n_out, n_red,
           splits, chunk, op);
  }
  if (splits > 1) {
    const unsigned threads = pow2_threads(splits);
    launch(reduce_partials_kernel<Op>, unsigned(std::min<int64_t>(n_out, 1 << 20)), threads, threads * sizeof(Acc), s,
           c.op, part, y, n_out, n_red, splits, op);
  }
}

std::vector<bool> axes_mask(const NDArray& in, const Attrs& attrs) {
  const auto& axes = attrs.ints("axes");  // empty: all; may be negative
  std::vector<bool> mask(size_t(in.ndim()), axes.empty());
  for (int64_t a : axes) mask[size_t(a < 0 ? a + in.ndim() : a)] = true;
  return mask;
}

template <bool Mean>
void sum_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  dispatch_among(NumericTypes{}, c.out[0].dtype(), [&]<class T>() {
    run_reduce(c, c.in[0], c.out[0], axes_mask(c.in[0], c.attrs), SumOp<T>{Mean});
  });
}

template <bool IsMax>
void extreme_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  dispatch_among(NumericTypes{}, c.out[0].dtype(), [&]<class T>() {
    T initial = IsMax ? std::numeric_limits<T>::lowest() : std::numeric_limits<T>::max();
    if constexpr (std::is_floating_point_v<T>) initial = IsMax ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::infinity();
    if (const AttrValue* v = c.attrs.find("initial")) initial = convert<T>(std::get<double>(*v));
    run_reduce(c, c.in[0], c.out[0], axes_mask(c.in[0], c.attrs), ExtremeOp<T>{IsMax, initial});
  });
}

// sum_to: out has the shape of the second input; reduce the dims broadcasting added.
void sum_to_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  const NDArray& in = c.in[0];
  const Shape& os = c.out[0].shape();
  std::vector<bool> mask(size_t(in.ndim()), false);
  const size_t lead = in.shape().size() - os.size();
  for (size_t d = 0; d < in.shape().size(); ++d) mask[d] = d < lead || (os[d - lead] == 1 && in.shape()[d] != 1);
  dispatch_among(NumericTypes{}, c.out[0].dtype(), [&]<class T>() { run_reduce(c, in, c.out[0], mask, SumOp<T>{false}); });
}

// argmax/argmin over attribute "axis", or over all elements when absent; int64 output.
template <bool IsMax>
void arg_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  const NDArray& in = c.in[0];
  std::vector<bool> mask(size_t(in.ndim()), true);
  if (c.attrs.has("axis")) {
    int64_t ax = c.attrs.i("axis");
    if (ax < 0) ax += in.ndim();
    mask.assign(size_t(in.ndim()), false);
    mask[size_t(ax)] = true;
  }
  dispatch_among(NumericTypes{}, in.dtype(), [&]<class T>() { run_reduce(c, in, c.out[0], mask, ArgOp<T>{IsMax}, true); });
}

// size: the element count over "axes" of a shape-only input, as a scalar.
void size_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  const auto mask = axes_mask(c.in[0], c.attrs);
  double n = 1;
  for (size_t d = 0; d < mask.size(); ++d)
    if (mask[d]) n *= double(c.in[0].shape()[d]);
  fill_view(view_of(c.out[0]), n, stream_of(c));
}

const bool registered = [] {
  const auto num = NumericTypes::dtypes();
  register_kernel("size", DeviceKind::cuda, num, {&size_kernel});
  register_kernel("sum", DeviceKind::cuda, num, {&sum_kernel<false>});
  register_kernel("mean", DeviceKind::cuda, FloatTypes::dtypes(), {&sum_kernel<true>});
  register_kernel("max", DeviceKind::cuda, num, {&extreme_kernel<true>});
  register_kernel("min", DeviceKind::cuda, num, {&extreme_kernel<false>});
  register_kernel("sum_to", DeviceKind::cuda, num, {&sum_to_kernel});
  register_kernel("argmax", DeviceKind::cuda, {int64}, {&arg_kernel<true>});
  register_kernel("argmin", DeviceKind::cuda, {int64}, {&arg_kernel<false>});
  return true;
}();

}  // namespace
}  // namespace loom::cuda
