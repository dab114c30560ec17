// Host emulation of cuDNN v9's graph API for convolutions (see include/cudnn.h
// and README.md): descriptors hold attributes, finalize checks what cuDNN
// requires, heuristics offer one engine, and execution runs a reference
// convolution over the tensors as their descriptors declare them.

#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "cudnn.h"

struct cudnnContext {
  cudaStream_t stream = nullptr;
};

namespace {

struct Attr {
  cudnnBackendAttributeType_t type;
  int64_t count = 0;
  std::vector<unsigned char> bytes;
  template <class T>
  T at(int64_t i) const {
    T v;
    std::memcpy(&v, bytes.data() + size_t(i) * sizeof(T), sizeof(T));
    return v;
  }
};

struct Descriptor {
  cudnnBackendDescriptorType_t type;
  std::map<int, Attr> attrs;
  bool finalized = false;
  const Descriptor* graph = nullptr;  // an engine configuration's operation graph
  int64_t workspace = 0;              // an execution plan's
  const Attr* get(int name) const {
    auto it = attrs.find(name);
    return it == attrs.end() ? nullptr : &it->second;
  }
  const Descriptor* desc(int name) const {
    const Attr* a = get(name);
    return a && a->type == CUDNN_TYPE_BACKEND_DESCRIPTOR && a->count == 1 ? a->at<const Descriptor*>(0) : nullptr;
  }
  std::vector<int64_t> ints(int name) const {
    std::vector<int64_t> v;
    if (const Attr* a = get(name); a && a->type == CUDNN_TYPE_INT64)
      for (int64_t i = 0; i < a->count; ++i) v.push_back(a->at<int64_t>(i));
    return v;
  }
};

size_t size_of(cudnnBackendAttributeType_t t) {
  switch (t) {
    case CUDNN_TYPE_DATA_TYPE:
    case CUDNN_TYPE_FLOAT:
    case CUDNN_TYPE_CONVOLUTION_MODE:
    case CUDNN_TYPE_HEUR_MODE:
      return 4;
    default:
      return 8;  // handles, int64, double, pointers, descriptors
  }
}

bool ready(const Descriptor* d, cudnnBackendDescriptorType_t t) { return d && d->type == t && d->finalized; }

/// The tensors and parameters of a convolution operation.
struct ConvOp {
  const Descriptor *x, *w, *y, *conv;
  const Attr *alpha, *beta;
};

ConvOp conv_op(const Descriptor& op) {
  switch (op.type) {
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR:
      return {op.desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X),
              op.desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W),
              op.desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y),
              op.desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC),
              op.get(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA),
              op.get(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA)};
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR:
      return {op.desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX),
              op.desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W),
              op.desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY),
              op.desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC),
              op.get(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA),
              op.get(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA)};
    default:
      return {op.desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X),
              op.desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW),
              op.desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY),
              op.desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC),
              op.get(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA),
              op.get(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA)};
  }
}

struct Geo {
  int64_t N, C, H, W, K, Cg, R, S, OH, OW, sh, sw, pt, pl, dh, dw;
  bool flip;  // CUDNN_CONVOLUTION: the filter is flipped
};

int data_type(const Descriptor& t) { return t.get(CUDNN_ATTR_TENSOR_DATA_TYPE)->at<int>(0); }

/// The geometry, or false when the tensors and the convolution disagree (cuDNN: BAD_PARAM).
bool geometry(const ConvOp& op, Geo& g) {
  if (!ready(op.x, CUDNN_BACKEND_TENSOR_DESCRIPTOR) || !ready(op.w, CUDNN_BACKEND_TENSOR_DESCRIPTOR) ||
      !ready(op.y, CUDNN_BACKEND_TENSOR_DESCRIPTOR) || !ready(op.conv, CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR) ||
      !op.alpha || !op.beta)
    return false;
  const auto x = op.x->ints(CUDNN_ATTR_TENSOR_DIMENSIONS), w = op.w->ints(CUDNN_ATTR_TENSOR_DIMENSIONS),
             y = op.y->ints(CUDNN_ATTR_TENSOR_DIMENSIONS);
  if (x.size() != 4 || w.size() != 4 || y.size() != 4) return false;
  const int t = data_type(*op.x);
  if (data_type(*op.w) != t || data_type(*op.y) != t) return false;
  const int comp = op.conv->get(CUDNN_ATTR_CONVOLUTION_COMP_TYPE)->at<int>(0);
  const cudnnBackendAttributeType_t scalar = comp == CUDNN_DATA_DOUBLE ? CUDNN_TYPE_DOUBLE : CUDNN_TYPE_FLOAT;
  if (op.alpha->type != scalar || op.beta->type != scalar) return false;
  const auto st = op.conv->ints(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES),
             dl = op.conv->ints(CUDNN_ATTR_CONVOLUTION_DILATIONS),
             pre = op.conv->ints(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS),
             post = op.conv->ints(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS);
  g = {x[0],
       x[1],
       x[2],
       x[3],
       w[0],
       w[1],
       w[2],
       w[3],
       y[2],
       y[3],
       st[0],
       st[1],
       pre[0],
       pre[1],
       dl[0],
       dl[1],
       op.conv->get(CUDNN_ATTR_CONVOLUTION_CONV_MODE)->at<int>(0) == CUDNN_CONVOLUTION};
  if (g.Cg <= 0 || g.C % g.Cg || g.K % (g.C / g.Cg) || y[0] != g.N || y[1] != g.K) return false;
  auto out = [](int64_t in, int64_t a, int64_t b, int64_t k, int64_t d, int64_t s) {
    return (in + a + b - d * (k - 1) - 1) / s + 1;
  };
  return g.OH == out(g.H, pre[0], post[0], g.R, g.dh, g.sh) && g.OW == out(g.W, pre[1], post[1], g.S, g.dw, g.sw);
}

bool finalize(Descriptor& d) {
  switch (d.type) {
    case CUDNN_BACKEND_TENSOR_DESCRIPTOR: {
      const auto dims = d.ints(CUDNN_ATTR_TENSOR_DIMENSIONS), strides = d.ints(CUDNN_ATTR_TENSOR_STRIDES);
      if (!d.get(CUDNN_ATTR_TENSOR_DATA_TYPE) || !d.get(CUDNN_ATTR_TENSOR_UNIQUE_ID) ||
          !d.get(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT) || dims.empty() || dims.size() != strides.size())
        return false;
      for (size_t i = 0; i < dims.size(); ++i)
        if (dims[i] <= 0 || strides[i] <= 0) return false;
      return true;
    }
    case CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR: {
      const auto st = d.ints(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES), dl = d.ints(CUDNN_ATTR_CONVOLUTION_DILATIONS),
                 pre = d.ints(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS), post = d.ints(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS),
                 dims = d.ints(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS);
      if (!d.get(CUDNN_ATTR_CONVOLUTION_COMP_TYPE) || !d.get(CUDNN_ATTR_CONVOLUTION_CONV_MODE) || dims.size() != 1 ||
          dims[0] != 2 || st.size() != 2 || dl.size() != 2 || pre.size() != 2 || post.size() != 2)
        return false;
      for (int i = 0; i < 2; ++i)
        if (st[size_t(i)] < 1 || dl[size_t(i)] < 1 || pre[size_t(i)] < 0 || post[size_t(i)] < 0) return false;
      return true;
    }
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR:
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR:
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR: {
      Geo g;
      return geometry(conv_op(d), g);
    }
    case CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR:
      return d.get(CUDNN_ATTR_DEVICEPROP_HANDLE) && d.get(CUDNN_ATTR_DEVICEPROP_HANDLE)->at<void*>(0);
    case CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR: {
      const Descriptor* op = d.desc(CUDNN_ATTR_OPERATIONGRAPH_OPS);
      return op && op->finalized;
    }
    case CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR:
      return ready(d.desc(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH), CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR) &&
             d.get(CUDNN_ATTR_ENGINEHEUR_MODE);
    case CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR: {
      const Descriptor* cfg = d.desc(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG);
      if (!ready(cfg, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR) || !cfg->graph) return false;
      d.graph = cfg->graph;
      d.workspace = 4096;  // nonzero: loom must plan it and pass it
      return true;
    }
    case CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR: {
      const Attr *ids = d.get(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS), *ptrs = d.get(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS);
      return ids && ptrs && ids->count == ptrs->count && d.get(CUDNN_ATTR_VARIANT_PACK_WORKSPACE);
    }
    default:
      return false;
  }
}

/// Element (a, b, c, d) of a 4-D tensor as its descriptor lays it out.
template <class T>
struct Tensor4 {
  T* p;
  int64_t s[4];
  T& operator()(int64_t a, int64_t b, int64_t c, int64_t d) const {
    return p[a * s[0] + b * s[1] + c * s[2] + d * s[3]];
  }
};

template <class T>
cudnnStatus_t run(const Descriptor& op, const Descriptor& pack) {
  const ConvOp c = conv_op(op);
  Geo g;
  if (!geometry(c, g)) return CUDNN_STATUS_BAD_PARAM;
  const Attr *ids = pack.get(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS),
             *ptrs = pack.get(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS);
  auto tensor = [&](const Descriptor* t, Tensor4<T>& out) {
    const int64_t uid = t->get(CUDNN_ATTR_TENSOR_UNIQUE_ID)->at<int64_t>(0);
    const auto st = t->ints(CUDNN_ATTR_TENSOR_STRIDES);
    for (int64_t i = 0; i < ids->count; ++i)
      if (ids->at<int64_t>(i) == uid) {
        out.p = static_cast<T*>(ptrs->at<void*>(i));
        for (int k = 0; k < 4; ++k) out.s[k] = st[size_t(k)];
        return out.p != nullptr;
      }
    return false;
  };
  Tensor4<T> x{}, w{}, y{};
  if (!tensor(c.x, x) || !tensor(c.w, w) || !tensor(c.y, y)) return CUDNN_STATUS_BAD_PARAM;
  const double alpha = c.alpha->type == CUDNN_TYPE_DOUBLE ? c.alpha->at<double>(0) : c.alpha->at<float>(0);
  const double beta = c.beta->type == CUDNN_TYPE_DOUBLE ? c.beta->at<double>(0) : c.beta->at<float>(0);
  // The output tensor of this pass, and the reference sums (double) of every product that lands in it.
  const bool fwd = op.type == CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR;
  const bool data = op.type == CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR;
  const Tensor4<T>& out = fwd ? y : data ? x : w;
  const int64_t od[4] = {fwd    ? g.N
                         : data ? g.N
                                : g.K,
                         fwd    ? g.K
                         : data ? g.C
                                : g.Cg,
                         fwd    ? g.OH
                         : data ? g.H
                                : g.R,
                         fwd    ? g.OW
                         : data ? g.W
                                : g.S};
  std::vector<double> acc(size_t(od[0] * od[1] * od[2] * od[3]), 0.0);
  auto slot = [&](int64_t a, int64_t b, int64_t cc, int64_t d) -> double& {
    return acc[size_t(((a * od[1] + b) * od[2] + cc) * od[3] + d)];
  };
  const int64_t Kg = g.K / (g.C / g.Cg);
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t k = 0; k < g.K; ++k)
      for (int64_t oh = 0; oh < g.OH; ++oh)
        for (int64_t ow = 0; ow < g.OW; ++ow)
          for (int64_t cg = 0; cg < g.Cg; ++cg)
            for (int64_t r = 0; r < g.R; ++r)
              for (int64_t s = 0; s < g.S; ++s) {
                const int64_t ih = oh * g.sh - g.pt + r * g.dh, iw = ow * g.sw - g.pl + s * g.dw;
                if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) continue;
                const int64_t ci = (k / Kg) * g.Cg + cg;
                const int64_t fr = g.flip ? g.R - 1 - r : r, fs = g.flip ? g.S - 1 - s : s;
                if (fwd)
                  slot(n, k, oh, ow) += double(x(n, ci, ih, iw)) * double(w(k, cg, fr, fs));
                else if (data)
                  slot(n, ci, ih, iw) += double(y(n, k, oh, ow)) * double(w(k, cg, fr, fs));
                else
                  slot(k, cg, fr, fs) += double(x(n, ci, ih, iw)) * double(y(n, k, oh, ow));
              }
  for (int64_t a = 0; a < od[0]; ++a)
    for (int64_t b = 0; b < od[1]; ++b)
      for (int64_t cc = 0; cc < od[2]; ++cc)
        for (int64_t d = 0; d < od[3]; ++d) {
          T& o = out(a, b, cc, d);
          o = T(alpha * slot(a, b, cc, d) + (beta == 0 ? 0.0 : beta * double(o)));
        }
  return CUDNN_STATUS_SUCCESS;
}

}  // namespace

const char* cudnnGetErrorString(cudnnStatus_t s) {
  switch (s) {
    case CUDNN_STATUS_SUCCESS:
      return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_BAD_PARAM:
      return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_NOT_SUPPORTED:
      return "CUDNN_STATUS_NOT_SUPPORTED";
  }
  return "CUDNN_STATUS_UNKNOWN";
}

cudnnStatus_t cudnnCreate(cudnnHandle_t* h) {
  *h = new cudnnContext;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroy(cudnnHandle_t h) {
  delete h;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetStream(cudnnHandle_t h, cudaStream_t s) {
  h->stream = s;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendCreateDescriptor(cudnnBackendDescriptorType_t type, cudnnBackendDescriptor_t* d) {
  *d = new Descriptor{type, {}};
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendDestroyDescriptor(cudnnBackendDescriptor_t d) {
  delete static_cast<Descriptor*>(d);
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendSetAttribute(cudnnBackendDescriptor_t desc, cudnnBackendAttributeName_t name,
                                       cudnnBackendAttributeType_t type, int64_t count, const void* elements) {
  auto* d = static_cast<Descriptor*>(desc);
  if (!d || d->finalized || count < 0 || (count > 0 && !elements)) return CUDNN_STATUS_BAD_PARAM;
  Attr a{type, count, std::vector<unsigned char>(size_t(count) * size_of(type))};
  if (count) std::memcpy(a.bytes.data(), elements, a.bytes.size());
  d->attrs[name] = std::move(a);
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendGetAttribute(cudnnBackendDescriptor_t const desc, cudnnBackendAttributeName_t name,
                                       cudnnBackendAttributeType_t type, int64_t requested, int64_t* count,
                                       void* elements) {
  auto* d = static_cast<Descriptor*>(desc);
  if (!d || !d->finalized || !count) return CUDNN_STATUS_BAD_PARAM;
  if (name == CUDNN_ATTR_ENGINEHEUR_RESULTS && type == CUDNN_TYPE_BACKEND_DESCRIPTOR) {
    *count = 1;  // one engine: the reference
    if (requested >= 1) {
      auto* cfg = static_cast<Descriptor**>(elements)[0];
      if (!cfg || cfg->type != CUDNN_BACKEND_ENGINECFG_DESCRIPTOR) return CUDNN_STATUS_BAD_PARAM;
      cfg->graph = d->desc(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH);
      cfg->finalized = true;
    }
    return CUDNN_STATUS_SUCCESS;
  }
  if (name == CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE && type == CUDNN_TYPE_INT64 && requested >= 1) {
    *count = 1;
    *static_cast<int64_t*>(elements) = d->workspace;
    return CUDNN_STATUS_SUCCESS;
  }
  return CUDNN_STATUS_NOT_SUPPORTED;
}

cudnnStatus_t cudnnBackendFinalize(cudnnBackendDescriptor_t desc) {
  auto* d = static_cast<Descriptor*>(desc);
  if (!d || d->finalized) return CUDNN_STATUS_BAD_PARAM;
  if (!finalize(*d)) return CUDNN_STATUS_BAD_PARAM;
  d->finalized = true;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendExecute(cudnnHandle_t handle, cudnnBackendDescriptor_t plan_desc,
                                  cudnnBackendDescriptor_t pack_desc) {
  auto *plan = static_cast<Descriptor*>(plan_desc), *pack = static_cast<Descriptor*>(pack_desc);
  if (!handle || !ready(plan, CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR) ||
      !ready(pack, CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR))
    return CUDNN_STATUS_BAD_PARAM;
  void* ws = pack->get(CUDNN_ATTR_VARIANT_PACK_WORKSPACE)->at<void*>(0);
  if (plan->workspace > 0) {
    if (!ws) return CUDNN_STATUS_BAD_PARAM;
    std::memset(ws, 0xCD, size_t(plan->workspace));  // scribbles on it, as a real engine may
  }
  const Descriptor& op = *plan->graph->desc(CUDNN_ATTR_OPERATIONGRAPH_OPS);
  const ConvOp c = conv_op(op);
  return data_type(*c.x) == CUDNN_DATA_DOUBLE ? run<double>(op, *pack) : run<float>(op, *pack);
}
