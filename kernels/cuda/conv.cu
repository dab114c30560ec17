// conv2d, conv2d_backward_data and conv2d_backward_filter on CUDA.
//
// cuDNN's graph API (v9's backend descriptors: tensors, a convolution, one
// operation, an operation graph, engine heuristics, an execution plan): the
// engine is chosen once per plan (the first of heuristics mode A that
// finalizes within the workspace cap), its workspace is the node's arena
// workspace, and a call is one cudnnBackendExecute on the session's stream.
// Plans are cached per (device, pass, geometry, dtype): the workspace query
// and prepare() build the same one.
//
// Own direct kernels run whatever cuDNN declines (no engine for a shape or
// dtype): one thread per output element (forward), input element (data
// gradient) or weight (filter gradient), each a plain sum in a fixed order,
// so they are deterministic. The bias + ReLU epilogue is an own kernel.

#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/conv_geometry.hpp"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/streams.hpp"

namespace loom::cuda {
namespace {

using conv::Geometry;
enum class Pass { forward, backward_data, backward_filter };

// ---------------------------------------------------------------- handles

// One cuDNN handle per (device, stream), as for cuBLAS (matmul.cu), released with the stream.
struct DnnHandle {
  cudnnHandle_t h = nullptr;
  std::mutex mu;
};
struct DnnHandles {
  std::mutex mu;
  std::map<std::pair<int, cudaStream_t>, std::unique_ptr<DnnHandle>> map;
};
DnnHandles& dnn_handles() {
  static DnnHandles* h = new DnnHandles;  // never destroyed: no cuDNN call during process exit
  return *h;
}

DnnHandle& dnn_handle(int device, cudaStream_t s) {
  DnnHandles& all = dnn_handles();
  std::lock_guard lock(all.mu);
  auto& slot = all.map[{device, s}];
  if (!slot) {
    auto h = std::make_unique<DnnHandle>();
    LOOM_CUDA_CHECK(cudnnCreate(&h->h));
    LOOM_CUDA_CHECK(cudnnSetStream(h->h, s));
    slot = std::move(h);
  }
  return *slot;
}

// ---------------------------------------------------------------- backend descriptors

/// An owned cuDNN backend descriptor.
class Desc {
 public:
  explicit Desc(cudnnBackendDescriptorType_t type) { LOOM_CUDA_CHECK(cudnnBackendCreateDescriptor(type, &d_)); }
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;
  ~Desc() {
    if (d_) cudnnBackendDestroyDescriptor(d_);
  }
  cudnnBackendDescriptor_t get() const { return d_; }
  Desc& set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count, const void* values) {
    LOOM_CUDA_CHECK(cudnnBackendSetAttribute(d_, name, type, count, values));
    return *this;
  }
  Desc& ints(cudnnBackendAttributeName_t name, const std::vector<int64_t>& v) {
    return set(name, CUDNN_TYPE_INT64, int64_t(v.size()), v.data());
  }
  Desc& desc(cudnnBackendAttributeName_t name, const Desc& other) {
    cudnnBackendDescriptor_t d = other.get();
    return set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &d);
  }
  /// Finalizes; false when cuDNN does not support this configuration.
  bool finalize() { return cudnnBackendFinalize(d_) == CUDNN_STATUS_SUCCESS; }
  void finalize_or_fail(const char* what) {
    cudnnStatus_t s = cudnnBackendFinalize(d_);
    if (s != CUDNN_STATUS_SUCCESS) fail("cuDNN: finalizing ", what, ": ", cudnnGetErrorString(s));
  }

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
};

enum Uid : int64_t { kX = 1, kW = 2, kY = 3 };

/// A chosen execution plan and its workspace. It keeps every descriptor it
/// was built from alive (the plan refers to its engine configuration, which
/// refers to the operation graph, ...), as cuDNN's own frontend does.
struct DnnPlan {
  std::vector<std::unique_ptr<Desc>> parts;
  Desc* plan = nullptr;
  int64_t workspace = 0;
};

/// Workspace cuDNN may use per convolution: engines needing more are skipped.
constexpr int64_t kMaxWorkspace = int64_t(256) << 20;

std::unique_ptr<Desc> tensor(Uid uid, std::vector<int64_t> dims, cudnnDataType_t type, int64_t align) {
  std::vector<int64_t> strides(dims.size(), 1);
  for (size_t i = dims.size() - 1; i-- > 0;) strides[i] = strides[i + 1] * dims[i + 1];
  auto t = std::make_unique<Desc>(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  const int64_t id = uid;
  t->set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type)
      .ints(CUDNN_ATTR_TENSOR_DIMENSIONS, dims)
      .ints(CUDNN_ATTR_TENSOR_STRIDES, strides)
      .set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &id)
      .set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align);
  t->finalize_or_fail("a tensor descriptor");
  return t;
}

/// Builds the operation graph of one convolution pass and its execution plan
/// (the first engine configuration of heuristics mode A that finalizes within
/// kMaxWorkspace), or nullopt when cuDNN has none.
std::optional<DnnPlan> build_plan(cudnnHandle_t h, Pass pass, const Geometry& g, DType dtype) {
  DnnPlan result;
  auto keep = [&](std::unique_ptr<Desc> d) -> Desc& {
    result.parts.push_back(std::move(d));
    return *result.parts.back();
  };
  auto make = [&](cudnnBackendDescriptorType_t t) -> Desc& { return keep(std::make_unique<Desc>(t)); };
  const bool f64 = dtype == float64;
  const cudnnDataType_t type = f64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
  const int64_t align = int64_t(dtype_size(dtype));
  Desc& x = keep(tensor(kX, {g.N, g.C, g.H, g.W}, type, align));
  Desc& w = keep(tensor(kW, {g.K, g.Cg(), g.R, g.S}, type, align));
  Desc& y = keep(tensor(kY, {g.N, g.K, g.OH, g.OW}, type, align));
  Desc& conv = make(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
  const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  const int64_t dims = 2;
  conv.set(CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type)
      .set(CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode)
      .set(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &dims)
      .ints(CUDNN_ATTR_CONVOLUTION_DILATIONS, {g.dh, g.dw})
      .ints(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, {g.sh, g.sw})
      .ints(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, {g.pt, g.pl})
      .ints(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, {g.pb, g.pr});
  conv.finalize_or_fail("a convolution descriptor");

  // alpha = 1, beta = 0 in the compute type.
  const double one64 = 1, zero64 = 0;
  const float one32 = 1, zero32 = 0;
  const cudnnBackendAttributeType_t scalar = f64 ? CUDNN_TYPE_DOUBLE : CUDNN_TYPE_FLOAT;
  const void* one = f64 ? static_cast<const void*>(&one64) : &one32;
  const void* zero = f64 ? static_cast<const void*>(&zero64) : &zero32;
  Desc* op = nullptr;
  if (pass == Pass::forward) {
    op = &make(CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR);
    op->desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, x)
        .desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, w)
        .desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, y)
        .desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, conv)
        .set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, scalar, 1, one)
        .set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, scalar, 1, zero);
  } else if (pass == Pass::backward_data) {
    op = &make(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR);
    op->desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, x)
        .desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W, w)
        .desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, y)
        .desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC, conv)
        .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, scalar, 1, one)
        .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA, scalar, 1, zero);
  } else {
    op = &make(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR);
    op->desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, x)
        .desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW, w)
        .desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, y)
        .desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC, conv)
        .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, scalar, 1, one)
        .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA, scalar, 1, zero);
  }
  if (!op->finalize()) return std::nullopt;

  Desc& device = make(CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR);
  device.set(CUDNN_ATTR_DEVICEPROP_HANDLE, CUDNN_TYPE_HANDLE, 1, &h);
  if (!device.finalize()) return std::nullopt;
  Desc& graph = make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  graph.desc(CUDNN_ATTR_OPERATIONGRAPH_OPS, *op);
  if (!graph.finalize()) return std::nullopt;
  Desc& heur = make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
  const cudnnBackendHeurMode_t heur_mode = CUDNN_HEUR_MODE_A;
  heur.desc(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph)
      .set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &heur_mode)
      .desc(CUDNN_ATTR_ENGINEHEUR_DEVICEPROP, device);
  if (!heur.finalize()) return std::nullopt;
  int64_t count = 0;
  LOOM_CUDA_CHECK(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0,
                                           &count, nullptr));
  std::vector<Desc*> configs;
  std::vector<cudnnBackendDescriptor_t> raw;
  for (int64_t i = 0; i < count; ++i) {
    configs.push_back(&make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR));
    raw.push_back(configs.back()->get());
  }
  if (count > 0)
    LOOM_CUDA_CHECK(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                             count, &count, raw.data()));
  for (int64_t i = 0; i < count; ++i) {
    auto plan = std::make_unique<Desc>(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
    plan->desc(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, *configs[size_t(i)])
        .desc(CUDNN_ATTR_EXECUTION_PLAN_DEVICEPROP, device);
    if (!plan->finalize()) continue;
    int64_t ws = 0, n = 0;
    LOOM_CUDA_CHECK(
        cudnnBackendGetAttribute(plan->get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, &ws));
    if (ws > kMaxWorkspace) continue;
    result.plan = &keep(std::move(plan));
    result.workspace = ws;
    return result;
  }
  return std::nullopt;
}

/// LOOM_CUDNN=0 in the environment: every convolution runs the own kernels
/// (to compare them with cuDNN's, or to rule cuDNN out).
bool cudnn_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("LOOM_CUDNN");
    return !(v && std::string(v) == "0");
  }();
  return on;
}

/// The plan for a node, built once per (device, pass, geometry, dtype) and
/// shared by every plan that has the same convolution (null: own kernels).
std::shared_ptr<const DnnPlan> plan_for(Device device, Pass pass, const Geometry& g, DType dtype) {
  if (!cudnn_enabled()) return nullptr;
  using Key = std::tuple<int, int, DType, std::vector<int64_t>>;
  static std::mutex mu;
  static auto* cache = new std::map<Key, std::shared_ptr<const DnnPlan>>;  // lives to exit, like the handles
  const Key key{
      device.index,
      int(pass),
      dtype,
      {g.N, g.C, g.H, g.W, g.K, g.R, g.S, g.OH, g.OW, g.sh, g.sw, g.pt, g.pb, g.pl, g.pr, g.dh, g.dw, g.groups}};
  std::lock_guard lock(mu);
  auto it = cache->find(key);
  if (it != cache->end()) return it->second;
  use_device(device);
  DnnHandle& h = dnn_handle(device.index, nullptr);
  std::lock_guard use(h.mu);
  std::optional<DnnPlan> p = build_plan(h.h, pass, g, dtype);
  auto shared = p ? std::make_shared<const DnnPlan>(std::move(*p)) : nullptr;
  cache->emplace(key, shared);
  return shared;
}

// ---------------------------------------------------------------- own kernels

/// Output element i: the sum over its window of every input channel of its group.
/// Padding is zeros that are multiplied (0 * inf = NaN), as the reference and the CPU's
/// im2col kernels (README, "Infinities and NaN").
template <class T>
__global__ void conv_forward_kernel(Geometry g, const T* x, const T* w, T* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ow = i % g.OW, oh = (i / g.OW) % g.OH, k = (i / g.P()) % g.K, b = i / (g.P() * g.K);
    const int64_t c0 = (k / g.Kg()) * g.Cg();
    T acc = 0;
    for (int64_t c = 0; c < g.Cg(); ++c)
      for (int64_t r = 0; r < g.R; ++r) {
        const int64_t ih = g.in_row(oh, r);
        for (int64_t s = 0; s < g.S; ++s) {
          const int64_t iw = g.in_col(ow, s);
          const bool inside = ih >= 0 && ih < g.H && iw >= 0 && iw < g.W;
          const T v = inside ? x[((b * g.C + c0 + c) * g.H + ih) * g.W + iw] : T(0);
          acc += v * w[((k * g.Cg() + c) * g.R + r) * g.S + s];
        }
      }
    y[i] = acc;
  }
}

/// Input element i: the sum over every output position and weight that read it.
template <class T>
__global__ void conv_backward_data_kernel(Geometry g, const T* dy, const T* w, T* dx, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t iw = i % g.W, ih = (i / g.W) % g.H, c = (i / g.HW()) % g.C, b = i / (g.HW() * g.C);
    const int64_t grp = c / g.Cg(), cg = c % g.Cg();
    T acc = 0;
    for (int64_t r = 0; r < g.R; ++r) {
      const int64_t th = ih + g.pt - r * g.dh;  // = oh * sh
      if (th < 0 || th % g.sh) continue;
      const int64_t oh = th / g.sh;
      if (oh >= g.OH) continue;
      for (int64_t s = 0; s < g.S; ++s) {
        const int64_t tw = iw + g.pl - s * g.dw;
        if (tw < 0 || tw % g.sw) continue;
        const int64_t ow = tw / g.sw;
        if (ow >= g.OW) continue;
        for (int64_t kk = 0; kk < g.Kg(); ++kk) {
          const int64_t k = grp * g.Kg() + kk;
          acc += dy[((b * g.K + k) * g.OH + oh) * g.OW + ow] * w[((k * g.Cg() + cg) * g.R + r) * g.S + s];
        }
      }
    }
    dx[i] = acc;
  }
}

/// Weight element i: the sum over the batch and every output position (padding
/// multiplied, as in the forward).
template <class T>
__global__ void conv_backward_filter_kernel(Geometry g, const T* x, const T* dy, T* dw, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t s = i % g.S, r = (i / g.S) % g.R, cg = (i / (g.R * g.S)) % g.Cg(), k = i / (g.R * g.S * g.Cg());
    const int64_t c = (k / g.Kg()) * g.Cg() + cg;
    T acc = 0;
    for (int64_t b = 0; b < g.N; ++b)
      for (int64_t oh = 0; oh < g.OH; ++oh) {
        const int64_t ih = g.in_row(oh, r);
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          const int64_t iw = g.in_col(ow, s);
          const bool inside = ih >= 0 && ih < g.H && iw >= 0 && iw < g.W;
          const T v = inside ? x[((b * g.C + c) * g.H + ih) * g.W + iw] : T(0);
          acc += v * dy[((b * g.K + k) * g.OH + oh) * g.OW + ow];
        }
      }
    dw[i] = acc;
  }
}

/// y = relu?(y + bias[channel]) in place (a NaN stays NaN, as on the CPU).
template <class T>
__global__ void epilogue_kernel(T* y, const T* bias, int64_t plane, int64_t channels, bool relu, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const T v = y[i] + (bias ? bias[(i / plane) % channels] : T(0));
    y[i] = relu && v < T(0) ? T(0) : v;
  }
}

// ---------------------------------------------------------------- the kernels

Geometry geometry_of(Pass pass, std::span<const Shape> in, std::span<const Shape> out, const Attrs& a) {
  switch (pass) {
    case Pass::forward:
      return conv::geometry(in[0], in[1], out[0], a);
    case Pass::backward_data:
      return conv::geometry(out[0], in[1], in[0], a);
    case Pass::backward_filter:
      return conv::geometry(in[0], out[0], in[1], a);
  }
  return {};
}

std::vector<Shape> shapes_of(std::span<const NDArray> a) {
  std::vector<Shape> s;
  for (const NDArray& x : a) s.push_back(x.shape());
  return s;
}

template <Pass P>
size_t workspace(const WorkspaceQuery& q) {
  const Geometry g = geometry_of(P, q.in, q.out, q.attrs);
  if (g.N == 0) return 0;
  auto plan = plan_for(q.device, P, g, q.dtype);
  return plan ? size_t(plan->workspace) : 0;
}

template <Pass P>
std::shared_ptr<const void> prepare(const KernelCall& c) {
  const Geometry g = geometry_of(P, shapes_of(c.in), shapes_of(c.out), c.attrs);
  if (g.N == 0) return nullptr;
  auto plan = plan_for(c.ctx.device, P, g, c.out[0].dtype());
  // Plans bind the workspace first: one that does not hold the engine's runs the own kernels. Eager
  // calls (invoke) prepare before they allocate it, from the same workspace query.
  return plan && (!c.workspace || size_t(plan->workspace) <= c.workspace_bytes) ? plan : nullptr;
}

void run_cudnn(const DnnPlan& p, const KernelCall& c, void* x, void* w, void* y) {
  cudaStream_t s = stream_of(c);
  DnnHandle& h = dnn_handle(c.ctx.device.index, s);
  std::lock_guard lock(h.mu);
  LOOM_CUDA_CHECK(cudnnSetStream(h.h, s));
  Desc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  const std::vector<int64_t> uids{kX, kW, kY};
  void* ptrs[] = {x, w, y};
  void* ws = c.workspace;
  pack.ints(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, uids)
      .set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 3, ptrs)
      .set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
  pack.finalize_or_fail("a variant pack");
  LOOM_CUDA_CHECK(cudnnBackendExecute(h.h, p.plan->get(), pack.get()));
}

template <Pass P, class T>
void run_typed(const KernelCall& c) {
  const Geometry g = geometry_of(P, shapes_of(c.in), shapes_of(c.out), c.attrs);
  const cudaStream_t s = stream_of(c);
  const int64_t n = c.out[0].numel();
  if (n == 0) return;
  if (g.N == 0) return zero_array(c.out[0], s);  // a weight gradient over an empty batch
  // x, w, y as the convolution sees them: the output is one of the three.
  void* x = (P == Pass::backward_data ? c.out[0] : c.in[0]).raw();
  void* w = (P == Pass::backward_filter ? c.out[0] : c.in[1]).raw();
  void* y = (P == Pass::forward ? c.out[0] : P == Pass::backward_data ? c.in[0] : c.in[1]).raw();
  if (c.state) {
    run_cudnn(*static_cast<const DnnPlan*>(c.state), c, x, w, y);
  } else if constexpr (P == Pass::forward) {
    launch(conv_forward_kernel<T>, grid_for(n), kThreads, 0, s, "conv2d", g, static_cast<const T*>(x),
           static_cast<const T*>(w), static_cast<T*>(y), n);
  } else if constexpr (P == Pass::backward_data) {
    launch(conv_backward_data_kernel<T>, grid_for(n), kThreads, 0, s, "conv2d_backward_data", g,
           static_cast<const T*>(y), static_cast<const T*>(w), static_cast<T*>(x), n);
  } else {
    launch(conv_backward_filter_kernel<T>, grid_for(n), kThreads, 0, s, "conv2d_backward_filter", g,
           static_cast<const T*>(x), static_cast<const T*>(y), static_cast<T*>(w), n);
  }
  if constexpr (P == Pass::forward) {
    const bool relu = c.attrs.get_or("relu", false);
    const T* bias = c.in.size() > 2 ? static_cast<const T*>(c.in[2].raw()) : nullptr;
    if (bias || relu)
      launch(epilogue_kernel<T>, grid_for(n), kThreads, 0, s, "conv2d epilogue", static_cast<T*>(y), bias, g.P(), g.K,
             relu, n);
  }
}

template <Pass P>
void kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { run_typed<P, T>(c); });
}

template <Pass P>
void register_pass(const char* op) {
  KernelInfo k{&kernel<P>, true, &prepare<P>};
  k.workspace = &workspace<P>;
  register_kernel(op, DeviceKind::cuda, FloatTypes::dtypes(), k);
}

const bool registered = [] {
  register_pass<Pass::forward>("conv2d");
  register_pass<Pass::backward_data>("conv2d_backward_data");
  register_pass<Pass::backward_filter>("conv2d_backward_filter");
  return true;
}();

}  // namespace

void release_dnn_handles(cudaStream_t s) noexcept {
  DnnHandles& all = dnn_handles();
  std::lock_guard lock(all.mu);
  for (auto it = all.map.begin(); it != all.map.end();) {
    if (it->first.second == s) {
      std::lock_guard use(it->second->mu);
      cudnnDestroy(it->second->h);
      it = all.map.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace loom::cuda
