// The fused LSTM cell and its backward (ops/rnn.cpp) on the GPU: one thread
// per (row, column) reads the column's four gates, so a step is one launch
// over compact inputs (the kernels ask for them). Same formulas as the CPU
// kernels (kernels/cpu/rnn.cpp).

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/math.cuh"

namespace loom::cuda {
namespace {

template <class T>
__global__ void lstm_cell_kernel(T* h, T* c, T* act, const T* cp, const T* g1, const T* g2, int64_t rows,
                                 int64_t H) {
  const int64_t total = rows * H;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / H, j = e - r * H, base = r * 4 * H + j;
    T pre[4];
    for (int q = 0; q < 4; ++q) pre[q] = g1[base + q * H] + (g2 ? g2[base + q * H] : T(0));
    const T i = d_sigmoid(pre[0]), f = d_sigmoid(pre[1]), g = d_tanh(pre[2]), o = d_sigmoid(pre[3]);
    const T cv = f * cp[e] + i * g;
    c[e] = cv;
    h[e] = o * d_tanh(cv);
    act[base] = i, act[base + H] = f, act[base + 2 * H] = g, act[base + 3 * H] = o;
  }
}

template <class T>
__global__ void lstm_cell_grad_kernel(T* dg, T* dcp, const T* act, const T* cp, const T* c, const T* dh, const T* dc,
                                      int64_t rows, int64_t H) {
  const int64_t total = rows * H;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / H, j = e - r * H, base = r * 4 * H + j;
    const T i = act[base], f = act[base + H], g = act[base + 2 * H], o = act[base + 3 * H];
    const T tc = d_tanh(c[e]), dhe = dh[e];
    const T dct = dc[e] + dhe * o * (T(1) - tc * tc);
    dg[base] = dct * g * i * (T(1) - i);
    dg[base + H] = dct * cp[e] * f * (T(1) - f);
    dg[base + 2 * H] = dct * i * (T(1) - g * g);
    dg[base + 3 * H] = dhe * tc * o * (T(1) - o);
    dcp[e] = dct * f;
  }
}

void lstm_cell(const KernelCall& c) {
  use_device(c.ctx.device);
  const NDArray& cp = c.in[0];
  const int64_t H = cp.shape().back(), rows = H ? cp.numel() / H : 0;
  if (rows * H == 0) return;
  dispatch_among(FloatTypes{}, cp.dtype(), [&]<class T>() {
    auto in = [&](size_t k) { return static_cast<const T*>(c.in[k].raw()); };
    auto out = [&](size_t k) { return static_cast<T*>(c.out[k].raw()); };
    const T* g2 = c.in.size() > 2 ? in(2) : nullptr;
    launch(lstm_cell_kernel<T>, grid_for(rows * H), kThreads, 0, stream_of(c), c.op, out(0), out(1), out(2), in(0),
           in(1), g2, rows, H);
  });
}

void lstm_cell_grad(const KernelCall& c) {
  use_device(c.ctx.device);
  const NDArray& cp = c.in[1];
  const int64_t H = cp.shape().back(), rows = H ? cp.numel() / H : 0;
  if (rows * H == 0) return;
  dispatch_among(FloatTypes{}, cp.dtype(), [&]<class T>() {
    auto in = [&](size_t k) { return static_cast<const T*>(c.in[k].raw()); };
    auto out = [&](size_t k) { return static_cast<T*>(c.out[k].raw()); };
    launch(lstm_cell_grad_kernel<T>, grid_for(rows * H), kThreads, 0, stream_of(c), c.op, out(0), out(1), in(0),
           in(1), in(2), in(3), in(4), rows, H);
  });
}

const bool registered = [] {
  register_kernel("lstm_cell", DeviceKind::cuda, FloatTypes::dtypes(), {&lstm_cell, true});
  register_kernel("lstm_cell_grad", DeviceKind::cuda, FloatTypes::dtypes(), {&lstm_cell_grad, true});
  return true;
}();

}  // namespace
}  // namespace loom::cuda
