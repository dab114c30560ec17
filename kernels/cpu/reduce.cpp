// Reductions over any set of axes: sum, mean, max, min, argmax, argmin, and
// sum_to (reduce a broadcast gradient back to an input's shape).
//
// The input is made compact, adjacent dims with the same role (kept or
// reduced) are merged, and one of three loops runs:
//  - all reduced: fixed-size chunks in parallel, partials combined in order;
//  - innermost dim reduced: one task range per group of outputs;
//  - innermost dim kept: contiguous rows accumulated into a vector of outputs.
// Chunking never depends on the thread count, so results are deterministic.

#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "core/kernel.hpp"
#include "kernels/cpu/loops.hpp"
#include "kernels/cpu/simd.hpp"

namespace loom::cpu {
namespace {

// Integer sums accumulate in uint64_t: they wrap as PyTorch's do (a signed
// overflow would be undefined), and the result is taken modulo the type.
template <class T>
using Acc = std::conditional_t<std::is_floating_point_v<T>, double, uint64_t>;

struct SumOp {
  template <class T> using A = Acc<T>;
  template <class T> static A<T> init() { return A<T>(0); }
  template <class T> static void add(A<T>& a, T x) { a += A<T>(x); }
  template <class T> static void merge(A<T>& a, const A<T>& b) { a += b; }
  template <class T> static T finish(const A<T>& a, int64_t) { return T(a); }
  // Eight independent accumulators: the adds pipeline and vectorize.
  template <class T> static void run(A<T>& a, const T* p, int64_t n) {
    A<T> s[8] = {};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      for (int k = 0; k < 8; ++k) s[k] += A<T>(p[i + k]);
    for (; i < n; ++i) s[0] += A<T>(p[i]);
    a += ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  }
};
struct MeanOp : SumOp {
  template <class T> static T finish(const A<T>& a, int64_t n) {
    return n ? T(a / A<T>(n)) : T(std::numeric_limits<double>::quiet_NaN());
  }
};
template <bool IsMax>
struct ExtremeOp {
  template <class T> using A = T;
  // The identity: -inf for a float max (so max([-inf]) is -inf), lowest() for an integer one.
  template <class T> static T init() {
    if constexpr (std::is_floating_point_v<T>)
      return IsMax ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::infinity();
    return IsMax ? std::numeric_limits<T>::lowest() : std::numeric_limits<T>::max();
  }
  template <class T> static void add(T& a, T x) {
    a = (IsMax ? (x > a || x != x) : (x < a || x != x)) ? x : a;  // NaN propagates
  }
  template <class T> static void merge(T& a, const T& b) { add<T>(a, b); }
  template <class T> static T finish(const T& a, int64_t) { return a; }
  // Two 16-byte vectors of lanes (GCC vector extensions: the scalar form of
  // this loop does not vectorize) and a NaN mask on the side.
  template <class T> static void run(T& a, const T* p, int64_t n) {
    constexpr int L = 16 / sizeof(T);
    typedef T V __attribute__((vector_size(16)));
    using M = decltype(V{} != V{});
    V s0 = {}, s1 = {};
    for (int k = 0; k < L; ++k) s0[k] = s1[k] = a;
    M nan0 = {}, nan1 = {};
    int64_t i = 0;
    for (; i + 2 * L <= n; i += 2 * L) {
      V v0, v1;
      std::memcpy(&v0, p + i, sizeof v0);
      std::memcpy(&v1, p + i + L, sizeof v1);
      if constexpr (IsMax) {
        s0 = v0 > s0 ? v0 : s0;
        s1 = v1 > s1 ? v1 : s1;
      } else {
        s0 = v0 < s0 ? v0 : s0;
        s1 = v1 < s1 ? v1 : s1;
      }
      nan0 |= v0 != v0;
      nan1 |= v1 != v1;
    }
    bool nan = false;
    for (int k = 0; k < L; ++k) {
      nan |= (nan0[k] | nan1[k]) != 0;
      add<T>(a, s0[k]);
      add<T>(a, s1[k]);
    }
    for (; i < n; ++i) add<T>(a, p[i]);
    if (nan && a == a) a = std::numeric_limits<T>::quiet_NaN();
  }
};

struct Groups {
  std::vector<int64_t> size;
  std::vector<bool> reduced;
  std::vector<int64_t> stride;  // compact strides of the merged dims
};

Groups make_groups(const Shape& s, const std::vector<bool>& mask) {
  Groups g;
  for (size_t d = 0; d < s.size(); ++d) {
    if (s[d] == 1) continue;
    if (!g.size.empty() && g.reduced.back() == mask[d]) g.size.back() *= s[d];
    else {
      g.size.push_back(s[d]);
      g.reduced.push_back(mask[d]);
    }
  }
  g.stride.resize(g.size.size());
  int64_t acc = 1;
  for (size_t i = g.size.size(); i-- > 0;) {
    g.stride[i] = acc;
    acc *= g.size[i];
  }
  return g;
}

// Offsets (into the compact input) of every combination of the groups selected by `want_reduced`,
// in row-major order; the last group of that kind is excluded when `skip_last` (it is looped inline).
std::vector<int64_t> offsets(const Groups& g, bool want_reduced, bool skip_last) {
  std::vector<size_t> dims;
  for (size_t i = 0; i < g.size.size(); ++i)
    if (g.reduced[i] == want_reduced) dims.push_back(i);
  if (skip_last && !dims.empty()) dims.pop_back();
  std::vector<int64_t> out{0};
  for (size_t d : dims) {
    std::vector<int64_t> next;
    next.reserve(out.size() * size_t(g.size[d]));
    for (int64_t base : out)
      for (int64_t i = 0; i < g.size[d]; ++i) next.push_back(base + i * g.stride[d]);
    out.swap(next);
  }
  return out;
}

/// a = op(a, p[0, n)) and acc[j] = op(acc[j], p[j]): the reductions' inner
/// loops, compiled for each instruction set (kernels/cpu/simd.hpp).
template <class Op, class T, class A>
LOOM_CPU_CLONES void fold_run(A& a, const T* p, int64_t n) {
  Op::template run<T>(a, p, n);
}
template <class Op, class T, class A>
LOOM_CPU_CLONES void fold_columns(A* acc, const T* p, int64_t n) {
  for (int64_t j = 0; j < n; ++j) Op::template add<T>(acc[j], p[j]);
}

// With few outputs, the reduced rows are also split into fixed chunks whose
// partial results are merged in chunk order (deterministic for any thread count).
constexpr int64_t kChunkElems = 1 << 16, kManyTasks = 64;

/// One reduction of a compact input x into y. `init` starts every
/// accumulator: the op's identity, or a max/min's "initial" value.
template <class Op, class T>
struct Reduction {
  using A = typename Op::template A<T>;
  const T* x;
  T* y;
  int64_t n_out, n_red;
  A init;
  Groups g;

  /// Everything reduced: a chunked parallel reduction, merged in chunk order.
  void all() const {
    const int64_t n = n_red, chunk = kChunkElems;
    std::vector<A> part(size_t((n + chunk - 1) / chunk), init);
    parallel_chunks(n, chunk, [&](int64_t c, int64_t lo, int64_t hi) {
      A a = init;
      fold_run<Op>(a, x + lo, hi - lo);
      part[size_t(c)] = a;
    });
    A a = init;
    for (const A& p : part) Op::template merge<T>(a, p);
    y[0] = Op::template finish<T>(a, n);
  }

  /// Innermost group reduced: contiguous runs of length `inner` per output.
  void rows() const {
    const std::vector<int64_t> kept_off = offsets(g, false, false);  // one per output, in output order
    const int64_t inner = g.size.back();
    const std::vector<int64_t> red_off = offsets(g, true, true);
    const int64_t rows = int64_t(red_off.size());
    const int64_t per_chunk = std::max<int64_t>(1, kChunkElems / inner);
    const int64_t chunks = n_out >= kManyTasks ? 1 : (rows + per_chunk - 1) / per_chunk;
    auto chunk_of = [&](int64_t o, int64_t c) {
      A a = init;
      for (int64_t r = c * per_chunk; r < std::min(rows, (c + 1) * per_chunk); ++r)
        fold_run<Op>(a, x + kept_off[size_t(o)] + red_off[size_t(r)], inner);
      return a;
    };
    if (chunks == 1) {
      parallel_for(n_out, std::max<int64_t>(1, kGrain / std::max<int64_t>(n_red, 1)), [&](int64_t lo, int64_t hi) {
        for (int64_t o = lo; o < hi; ++o) y[o] = Op::template finish<T>(chunk_of(o, 0), n_red);
      });
      return;
    }
    std::vector<A> part(size_t(n_out * chunks));
    parallel_for(n_out * chunks, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t t = lo; t < hi; ++t) part[size_t(t)] = chunk_of(t / chunks, t % chunks);
    });
    for (int64_t o = 0; o < n_out; ++o) {
      A a = init;
      for (int64_t c = 0; c < chunks; ++c) Op::template merge<T>(a, part[size_t(o * chunks + c)]);
      y[o] = Op::template finish<T>(a, n_red);
    }
  }

  /// Innermost group kept: accumulate contiguous rows of `inner` outputs, in
  /// column blocks of at most 1024.
  void columns() const {
    const std::vector<int64_t> kept_off = offsets(g, false, false);
    const int64_t inner = g.size.back(), outer = n_out / inner;
    const std::vector<int64_t> red_off = offsets(g, true, false);
    const int64_t rows = int64_t(red_off.size());
    const int64_t col_block = 1024, col_blocks = (inner + col_block - 1) / col_block;
    const int64_t width = std::min(inner, col_block), tasks = outer * col_blocks;
    const int64_t per_chunk = std::max<int64_t>(1, kChunkElems / width);
    const int64_t chunks = tasks >= kManyTasks ? 1 : (rows + per_chunk - 1) / per_chunk;
    // part[(task * chunks + chunk) * width + j]: partial accumulators of one column block.
    std::vector<A> part(size_t(tasks * chunks * width));
    parallel_for(tasks * chunks, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t t = lo; t < hi; ++t) {
        const int64_t task = t / chunks, c = t % chunks;
        const int64_t ob = task / col_blocks, c0 = (task % col_blocks) * col_block, c1 = std::min(inner, c0 + col_block);
        A* acc = part.data() + t * width;
        std::fill(acc, acc + width, init);
        const int64_t base = kept_off[size_t(ob * inner)];
        for (int64_t r = c * per_chunk; r < std::min(rows, (c + 1) * per_chunk); ++r) {
          fold_columns<Op>(acc, x + base + red_off[size_t(r)] + c0, c1 - c0);
        }
      }
    });
    parallel_for(tasks, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t task = lo; task < hi; ++task) {
        const int64_t ob = task / col_blocks, c0 = (task % col_blocks) * col_block, c1 = std::min(inner, c0 + col_block);
        A* acc = part.data() + task * chunks * width;
        for (int64_t c = 1; c < chunks; ++c)
          for (int64_t j = 0; j < c1 - c0; ++j) Op::template merge<T>(acc[j], acc[c * width + j]);
        for (int64_t j = 0; j < c1 - c0; ++j) y[ob * inner + c0 + j] = Op::template finish<T>(acc[j], n_red);
      }
    });
  }
};

template <class Op, class T>
void reduce_typed(const NDArray& in_any, const NDArray& out, const std::vector<bool>& mask,
                  typename Op::template A<T> init = Op::template init<T>()) {
  const NDArray in = in_any.compact();
  T* y = static_cast<T*>(out.raw());
  const int64_t n_out = out.numel();
  if (n_out == 0) return;
  const int64_t n_red = in.numel() / n_out;
  if (n_red == 0) {  // empty reduced axes: every output is the empty reduction (sum 0, mean NaN, initial)
    for (int64_t o = 0; o < n_out; ++o) y[o] = Op::template finish<T>(init, 0);
    return;
  }
  const Reduction<Op, T> r{static_cast<const T*>(in.raw()), y, n_out, n_red, init, make_groups(in.shape(), mask)};
  if (n_out == 1) r.all();
  else if (r.g.reduced.back()) r.rows();
  else r.columns();
}

std::vector<bool> axes_mask(const NDArray& in, const Attrs& attrs) {
  const auto& axes = attrs.ints("axes");  // empty: all; may be negative
  std::vector<bool> mask(size_t(in.ndim()), axes.empty());
  for (int64_t a : axes) mask[size_t(a < 0 ? a + in.ndim() : a)] = true;
  return mask;
}

/// v in T as casts convert: to integers saturating, NaN to 0.
template <class T>
T saturate_cast(double v) {
  if constexpr (std::is_integral_v<T>) {
    if (v != v) return T(0);
    if (v <= double(std::numeric_limits<T>::lowest())) return std::numeric_limits<T>::lowest();
    if (v >= double(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
  }
  return T(v);
}

template <class Op, class... Ts>
void reduce_kernel(const KernelCall& c) {
  dispatch_among(TypeList<Ts...>{}, c.out[0].dtype(), [&]<class T>() {
    typename Op::template A<T> init = Op::template init<T>();
    if (const AttrValue* v = c.attrs.find("initial")) init = saturate_cast<T>(std::get<double>(*v));
    reduce_typed<Op, T>(c.in[0], c.out[0], axes_mask(c.in[0], c.attrs), init);
  });
}

// sum_to: out has the shape of the second input; reduce the dims broadcasting added.
void sum_to_kernel(const KernelCall& c) {
  const NDArray& in = c.in[0];
  const Shape& os = c.out[0].shape();
  std::vector<bool> mask(size_t(in.ndim()), false);
  size_t lead = in.shape().size() - os.size();
  for (size_t d = 0; d < in.shape().size(); ++d)
    mask[d] = d < lead || (os[d - lead] == 1 && in.shape()[d] != 1);
  dispatch_among(NumericTypes{}, c.out[0].dtype(), [&]<class T>() { reduce_typed<SumOp, T>(in, c.out[0], mask); });
}

// argmax/argmin over one axis (attribute "axis"), or over all elements when absent; int64 output.
template <bool IsMax>
void arg_kernel(const KernelCall& c) {
  dispatch_among(NumericTypes{}, c.in[0].dtype(), [&]<class T>() {
    NDArray in = c.in[0].compact();
    const T* x = static_cast<const T*>(in.raw());
    int64_t* y = static_cast<int64_t*>(c.out[0].raw());
    int64_t outer = 1, n = in.numel(), inner = 1;
    if (c.attrs.has("axis")) {
      int64_t ax = c.attrs.i("axis");
      if (ax < 0) ax += in.ndim();  // as the CUDA kernel (issue 15 normalizes every axis when nodes are built)
      n = in.shape()[size_t(ax)];
      for (int64_t d = 0; d < ax; ++d) outer *= in.shape()[size_t(d)];
      for (int64_t d = ax + 1; d < in.ndim(); ++d) inner *= in.shape()[size_t(d)];
    }
    parallel_for(outer * inner, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)), [&](int64_t lo, int64_t hi) {
      for (int64_t o = lo; o < hi; ++o) {
        const T* p = x + (o / inner) * n * inner + o % inner;
        int64_t best = 0;
        for (int64_t i = 1; i < n; ++i) {
          T v = p[i * inner], b = p[best * inner];
          if (b != b) break;  // first NaN wins
          if (v != v || (IsMax ? v > b : v < b)) best = i;
        }
        y[o] = best;
      }
    });
  });
}

// size: the element count over "axes" of a shape-only input, as a scalar.
void size_kernel(const KernelCall& c) {
  const auto mask = axes_mask(c.in[0], c.attrs);
  double n = 1;
  for (size_t d = 0; d < mask.size(); ++d)
    if (mask[d]) n *= double(c.in[0].shape()[d]);
  dispatch_among(NumericTypes{}, c.out[0].dtype(), [&]<class T>() { *static_cast<T*>(c.out[0].raw()) = saturate_cast<T>(n); });
}

const bool registered = [] {
  register_kernel("size", DeviceKind::cpu, NumericTypes::dtypes(), {&size_kernel});
  auto num = NumericTypes::dtypes();
  register_kernel("sum", DeviceKind::cpu, num, {&reduce_kernel<SumOp, float, double, int32_t, int64_t, uint8_t>});
  register_kernel("mean", DeviceKind::cpu, FloatTypes::dtypes(), {&reduce_kernel<MeanOp, float, double>});
  register_kernel("max", DeviceKind::cpu, num,
                  {&reduce_kernel<ExtremeOp<true>, float, double, int32_t, int64_t, uint8_t>});
  register_kernel("min", DeviceKind::cpu, num,
                  {&reduce_kernel<ExtremeOp<false>, float, double, int32_t, int64_t, uint8_t>});
  register_kernel("sum_to", DeviceKind::cpu, num, {&sum_to_kernel});
  register_kernel("argmax", DeviceKind::cpu, {int64}, {&arg_kernel<true>});
  register_kernel("argmin", DeviceKind::cpu, {int64}, {&arg_kernel<false>});
  return true;
}();

}  // namespace
}  // namespace loom::cpu
