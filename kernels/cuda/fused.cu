// The fused element-wise kernel on CUDA: one pass over the output evaluating
// a small program of element-wise ops (encoded as core/fused_program.hpp
// says). Each thread walks the program for its element with intermediate
// values in the value dtype, calling the same functors as the unfused kernels
// (kernels/elementwise_ops.hpp, by their index in the shared list), so fused
// and unfused results are bitwise the same. Leaves may be strided and broadcast (one launch_loop
// operand each); outputs are compact and written after the element's inputs
// were read, so an output may overwrite an input in place. Programs larger
// than the kernel's fixed-size description run unfused, op by op, through
// the registered CUDA kernels.

#include <memory>

#include "core/fused_program.hpp"
#include "kernels/cuda/common.cuh"
#include "kernels/elementwise_ops.hpp"

namespace loom::cuda {
namespace {

// The limits the fusion pass keeps to (ew::kFusedCaps), as array sizes.
constexpr int kMaxInstrs = ew::kFusedMaxInstrs;
constexpr int kMaxLeaves = ew::kFusedMaxLeaves;
constexpr int kMaxOutputs = ew::kFusedMaxOutputs;

struct Program {
  fused::Program prog;
  std::vector<int> ops;         // each instruction's index in ew::ElementwiseOps
  std::vector<size_t> outputs;  // instruction of each output
  DType value = float32;
};

std::shared_ptr<const void> prepare_fused(const KernelCall& c) {
  auto p = std::make_shared<Program>();
  p->prog = fused::decode(c.attrs, c.in.size());
  for (const fused::Instr& in : p->prog.instrs) {
    const int op = ew::op_index(in.op);
    LOOM_ASSERT(op >= 0 && ew::op_arity(op) == in.arity(), "fused: '", in.op, "' is not an element-wise op of the shared list");
    p->ops.push_back(op);
  }
  p->outputs.push_back(p->prog.instrs.size() - 1);
  for (int64_t k : p->prog.outs) p->outputs.push_back(size_t(k));
  LOOM_ASSERT(p->outputs.size() == c.out.size(), "fused: ", c.out.size(), " outputs for ", p->outputs.size());
  p->value = boolean;
  for (const NDArray& a : c.in)
    if (p->value == boolean && is_floating(a.dtype())) p->value = a.dtype();
  return p;
}

// ---------------------------------------------------------------- the interpreter

struct DeviceProgram {
  int n = 0;
  int8_t op[kMaxInstrs];  // index in ew::ElementwiseOps
  int8_t arg[kMaxInstrs][3];  // leaf r >= 0, instruction k as -(k + 1), kUnused
  uint8_t leaf_bool[kMaxLeaves];
  int n_out = 0;
  int8_t out_instr[kMaxOutputs];
  uint8_t out_bool[kMaxOutputs];
};

constexpr int8_t kUnused = -128;

template <class T>
struct FusedF {
  void* out[kMaxOutputs];  // compact, same shape: all at offset off[0]
  const void* leaf[kMaxLeaves];
  DeviceProgram prog;

  __device__ T load(int r, const int64_t (&off)[kMaxLeaves + 1]) const {
    if (prog.leaf_bool[r]) return T(static_cast<const uint8_t*>(leaf[r])[off[r + 1]] != 0);
    return static_cast<const T*>(leaf[r])[off[r + 1]];
  }

  __device__ void operator()(const int64_t (&off)[kMaxLeaves + 1]) const {
    T val[kMaxInstrs];  // comparisons keep 0/1 in T: only where's condition reads them
    for (int k = 0; k < prog.n; ++k) {
      T x[3] = {T(0), T(0), T(0)};
      for (int j = 0; j < 3; ++j) {
        const int r = prog.arg[k][j];
        if (r != kUnused) x[j] = r >= 0 ? load(r, off) : val[-r - 1];
      }
      val[k] = ew::apply<T>(prog.op[k], x);
    }
    for (int j = 0; j < prog.n_out; ++j) {
      const T v = val[prog.out_instr[j]];
      if (prog.out_bool[j]) static_cast<bool*>(out[j])[off[0]] = v != T(0);
      else static_cast<T*>(out[j])[off[0]] = v;
    }
  }
};

// Runs the program op by op through the registered kernels (programs too
// large for DeviceProgram; rare), then copies the outputs.
void run_unfused(const KernelCall& c, const Program& p) {
  std::vector<NDArray> vals;
  cudaStream_t s = stream_of(c);
  for (const fused::Instr& in : p.prog.instrs) {
    std::vector<NDArray> ins;
    Shape shape;
    for (int j = 0; j < in.arity(); ++j) {
      const int64_t r = in.arg[j];
      ins.push_back(r >= 0 ? c.in[size_t(r)] : vals[size_t(fused::instr_of(r))]);
      shape = broadcast_shapes(shape, ins.back().shape());
    }
    const DType t = in.to_bool ? boolean : p.value;
    NDArray out = NDArray::empty(shape, t, c.ctx.device);
    const KernelInfo* info = find_kernel(in.op, DeviceKind::cuda, t);
    LOOM_ASSERT(info, "fused: no CUDA kernel for ", in.op);
    Attrs none;
    KernelCall call{c.ctx, ins, std::span<const NDArray>(&out, 1), none, in.op, c.node, c.node_key};
    info->fn(call);
    vals.push_back(out);
  }
  for (size_t j = 0; j < p.outputs.size(); ++j)
    copy_array(c.out[j], vals[p.outputs[j]].broadcast_to(c.out[j].shape()), s);
  // The temporaries' memory is freed (cudaFree synchronizes) only after the copies ran.
}

void fused_kernel(const KernelCall& c) {
  use_device(c.ctx.device);
  std::shared_ptr<const void> owned;
  const Program* p = static_cast<const Program*>(c.state);
  if (!p) {  // an eager call, outside a plan
    owned = prepare_fused(c);
    p = static_cast<const Program*>(owned.get());
  }
  if (p->ops.size() > size_t(kMaxInstrs) || c.in.size() > size_t(kMaxLeaves) || c.out.size() > size_t(kMaxOutputs))
    return run_unfused(c, *p);

  DeviceProgram dp;
  dp.n = int(p->ops.size());
  for (int k = 0; k < dp.n; ++k) {
    dp.op[k] = int8_t(p->ops[size_t(k)]);
    for (int j = 0; j < 3; ++j) {
      const int64_t r = p->prog.instrs[size_t(k)].arg[j];
      dp.arg[k][j] = r == fused::kNoArg ? kUnused : int8_t(r);
    }
  }
  for (size_t r = 0; r < size_t(kMaxLeaves); ++r) dp.leaf_bool[r] = r < c.in.size() && c.in[r].dtype() == boolean;
  dp.n_out = int(p->outputs.size());
  for (int j = 0; j < dp.n_out; ++j) {
    dp.out_instr[j] = int8_t(p->outputs[size_t(j)]);
    dp.out_bool[j] = c.out[size_t(j)].dtype() == boolean;
  }

  const NDArray& o = c.out[0];
  const Layout unused{{}, {}, 0};  // a 0-d operand: stride 0 everywhere
  std::array<Layout, kMaxLeaves + 1> layouts;
  std::array<const Layout*, kMaxLeaves + 1> ops;
  layouts[0] = o.layout();
  for (size_t r = 0; r < size_t(kMaxLeaves); ++r) layouts[r + 1] = r < c.in.size() ? c.in[r].layout() : unused;
  for (size_t i = 0; i < layouts.size(); ++i) ops[i] = &layouts[i];
  Loop<kMaxLeaves + 1> L = make_loop<kMaxLeaves + 1>(o.shape(), ops);
  dispatch_among(FloatTypes{}, p->value, [&]<class T>() {
    launch_loop<kMaxLeaves + 1>(L, stream_of(c), c.op, [&](const std::array<int64_t, kMaxLeaves + 1>& b) {
      FusedF<T> f;
      for (size_t j = 0; j < size_t(kMaxOutputs); ++j)
        f.out[j] = j < c.out.size() ? static_cast<char*>(c.out[j].raw()) + b[0] * int64_t(c.out[j].itemsize()) : nullptr;
      for (size_t r = 0; r < size_t(kMaxLeaves); ++r)
        f.leaf[r] = r < c.in.size() ? static_cast<const char*>(c.in[r].raw()) + b[r + 1] * int64_t(c.in[r].itemsize())
                                    : nullptr;
      f.prog = dp;
      return f;
    });
  });
}

const bool registered = [] {
  KernelInfo k{&fused_kernel, false, &prepare_fused};
  k.fusion = &ew::kFusedCaps;
  register_kernel("fused", DeviceKind::cuda, FloatTypes::dtypes(), k);
  return true;
}();

}  // namespace
}  // namespace loom::cuda
