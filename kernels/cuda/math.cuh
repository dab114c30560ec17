#pragma once
// Scalar math for hand-written CUDA kernels (optimizer updates, RNN cells,
// losses), from the element-wise ops' shared definitions
// (kernels/elementwise_ops.hpp), so they compute what the element-wise
// kernels of both devices compute.

#include <cuda_runtime.h>

#include "kernels/elementwise_ops.hpp"

namespace loom::cuda {

using ew::wrap_add;
using ew::wrap_mul;
using ew::wrap_sub;

template <class T>
__device__ __forceinline__ T d_exp(T x) { return ew::Exp::f(x); }
template <class T>
__device__ __forceinline__ T d_log(T x) { return ew::Log::f(x); }
template <class T>
__device__ __forceinline__ T d_sqrt(T x) { return ew::Sqrt::f(x); }
template <class T>
__device__ __forceinline__ T d_tanh(T x) { return ew::Tanh::f(x); }
template <class T>
__device__ __forceinline__ T d_sigmoid(T x) { return ew::Sigmoid::f(x); }
template <class T>
__device__ __forceinline__ T d_pow(T a, T b) { return ew::Pow::f(a, b); }

}  // namespace loom::cuda
