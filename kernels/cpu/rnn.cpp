// The fused LSTM cell and its backward (ops/rnn.cpp): one pass over a step's
// gates. Rows are independent; within a row the four gate blocks are read at
// the same column, so the inner loop over columns vectorizes (the float32
// sigmoid and tanh are the branch-free ones of the element-wise kernels),
// compiled for each instruction set (kernels/cpu/simd.hpp).

#include "core/kernel.hpp"
#include "kernels/cpu/elementwise.hpp"
#include "kernels/cpu/loops.hpp"

namespace loom::cpu {
namespace {

// Outputs never alias inputs (the op is not in-place): __restrict lets the loops vectorize.
template <class T, bool kTwo>
LOOM_CPU_CLONES void cell_row(const T* __restrict g1, const T* __restrict g2, const T* __restrict cp, T* __restrict h, T* __restrict c,
              T* __restrict act, int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    T pi = g1[j], pf = g1[H + j], pg = g1[2 * H + j], po = g1[3 * H + j];
    if constexpr (kTwo) pi += g2[j], pf += g2[H + j], pg += g2[2 * H + j], po += g2[3 * H + j];
    const T i = Sigmoid::f(pi), f = Sigmoid::f(pf), g = Tanh::f(pg), o = Sigmoid::f(po);
    const T cv = f * cp[j] + i * g;
    c[j] = cv;
    h[j] = o * Tanh::f(cv);
    act[j] = i, act[H + j] = f, act[2 * H + j] = g, act[3 * H + j] = o;
  }
}

// Rows per task: a step of a small batch (20 x 200) stays on one thread.
int64_t row_grain(int64_t H) { return std::max<int64_t>(1, kGrain / std::max<int64_t>(4 * H, 1)); }

void lstm_cell_kernel(const KernelCall& k) {
  const NDArray &cp = k.in[0], &g1 = k.in[1];
  const int64_t H = cp.shape().back(), rows = H ? cp.numel() / H : 0;
  dispatch_among(FloatTypes{}, cp.dtype(), [&]<class T>() {
    const T* pc = static_cast<const T*>(cp.raw());
    const T* p1 = static_cast<const T*>(g1.raw());
    const T* p2 = k.in.size() > 2 ? static_cast<const T*>(k.in[2].raw()) : nullptr;
    T* h = static_cast<T*>(k.out[0].raw());
    T* c = static_cast<T*>(k.out[1].raw());
    T* act = static_cast<T*>(k.out[2].raw());
    parallel_for(rows, row_grain(H), [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        const T* a = p1 + r * 4 * H;
        if (p2) cell_row<T, true>(a, p2 + r * 4 * H, pc + r * H, h + r * H, c + r * H, act + r * 4 * H, H);
        else cell_row<T, false>(a, nullptr, pc + r * H, h + r * H, c + r * H, act + r * 4 * H, H);
      }
    });
  });
}

template <class T>
LOOM_CPU_CLONES void cell_grad_row(const T* __restrict act, const T* __restrict cp, const T* __restrict c, const T* __restrict dh,
                   const T* __restrict dc, T* __restrict dg, T* __restrict dcp, int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    const T i = act[j], f = act[H + j], g = act[2 * H + j], o = act[3 * H + j];
    const T tc = Tanh::f(c[j]), dhj = dh[j];
    const T dct = dc[j] + dhj * o * (T(1) - tc * tc);
    dg[j] = dct * g * i * (T(1) - i);
    dg[H + j] = dct * cp[j] * f * (T(1) - f);
    dg[2 * H + j] = dct * i * (T(1) - g * g);
    dg[3 * H + j] = dhj * tc * o * (T(1) - o);
    dcp[j] = dct * f;
  }
}

void lstm_cell_grad_kernel(const KernelCall& k) {
  const NDArray& cp = k.in[1];
  const int64_t H = cp.shape().back(), rows = H ? cp.numel() / H : 0;
  dispatch_among(FloatTypes{}, cp.dtype(), [&]<class T>() {
    auto in = [&](size_t i) { return static_cast<const T*>(k.in[i].raw()); };
    T* dg = static_cast<T*>(k.out[0].raw());
    T* dcp = static_cast<T*>(k.out[1].raw());
    parallel_for(rows, row_grain(H), [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r)
        cell_grad_row(in(0) + r * 4 * H, in(1) + r * H, in(2) + r * H, in(3) + r * H, in(4) + r * H, dg + r * 4 * H,
                      dcp + r * H, H);
    });
  });
}

const bool registered = [] {
  register_kernel("lstm_cell", DeviceKind::cpu, FloatTypes::dtypes(), {&lstm_cell_kernel, true});
  register_kernel("lstm_cell_grad", DeviceKind::cpu, FloatTypes::dtypes(), {&lstm_cell_grad_kernel, true});
  return true;
}();

}  // namespace
}  // namespace loom::cpu
