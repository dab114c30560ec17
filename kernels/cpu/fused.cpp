// The fused element-wise kernel: runs a small program of element-wise ops
// (built by the planner's fusion pass) over chunks of the output, so that a
// chain like relu(x * w + b) makes one pass over memory instead of three.
// Each instruction calls the same inner loop as the unfused kernel (chunk<Op>
// of kernels/cpu/elementwise.hpp, generated from the shared list of
// element-wise ops), so fused and unfused results are bitwise identical.
//
// The program's encoding is core/fused_program.hpp. Per chunk, the last
// instruction writes output 0 directly and the other outputs are copied out
// of scratch after every instruction ran. Output 0 may overwrite an input in
// place: the in-place pass hands over only inputs of output 0's layout, and
// every inner loop reads an element before it writes that element.

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <sstream>

#include "core/fused_program.hpp"
#include "core/kernel.hpp"
#include "kernels/cpu/elementwise.hpp"
#include "kernels/cpu/loops.hpp"

namespace loom::cpu {
namespace {

constexpr int64_t kChunk = 512;

struct Instr {
  ChunkFn fn;
  DType in, out;
  int64_t arg[3];
  int arity;
};

enum class LeafMode { contiguous, scalar, strided };

struct Leaf {
  LeafMode mode;
  std::vector<int64_t> strides;  // broadcast to the output shape (strided mode)
};

struct Program {
  std::vector<Instr> instrs;
  std::vector<size_t> outputs;  // instruction of each output
  std::vector<Leaf> leaves;
  Shape shape;
  bool root_direct = false;  // the last instruction writes output 0 itself (no copy from scratch)
};

template <class... Ops>
constexpr std::array<ChunkFn, sizeof...(Ops)> chunk_table(ew::OpList<Ops...>) {
  return {&chunk<Ops>...};
}
/// The inner loop of each op, by its index in the shared list.
constexpr auto kChunks = chunk_table(ew::ElementwiseOps{});

std::shared_ptr<const void> prepare_fused(const KernelCall& c) {
  auto p = std::make_shared<Program>();
  const fused::Program prog = fused::decode(c.attrs, c.in.size());
  DType value = boolean;
  for (const NDArray& a : c.in)
    if (value == boolean && is_floating(a.dtype())) value = a.dtype();
  auto dtype_of_ref = [&](int64_t r) {
    return r >= 0 ? c.in[size_t(r)].dtype() : prog.instrs[size_t(fused::instr_of(r))].to_bool ? boolean : value;
  };
  for (const fused::Instr& ins : prog.instrs) {
    Instr in{};
    in.out = ins.to_bool ? boolean : value;
    const int op = ew::op_index(ins.op);
    LOOM_ASSERT(op >= 0, "fused: ", ins.op, " is not an element-wise op of the shared list");
    in.fn = kChunks[size_t(op)];
    in.arity = ins.arity();
    for (int j = 0; j < 3; ++j) in.arg[j] = ins.arg[j];
    // The dtype the inner loop dispatches on: the value operands' (where: operand 1).
    in.in = dtype_of_ref(in.arg[in.arity == 3 ? 1 : 0]);
    p->instrs.push_back(in);
  }
  p->outputs.push_back(prog.instrs.size() - 1);
  for (int64_t k : prog.outs) p->outputs.push_back(size_t(k));
  LOOM_ASSERT(p->outputs.size() == c.out.size(), "fused: ", c.out.size(), " outputs for ", p->outputs.size());
  p->root_direct = std::count(p->outputs.begin(), p->outputs.end(), p->outputs[0]) == 1;
  const NDArray& out = c.out[0];
  p->shape = out.shape();
  for (const NDArray& a : c.in) {
    Leaf l;
    if (a.numel() == 1) l.mode = LeafMode::scalar;
    else if (a.is_compact() && a.numel() == out.numel()) l.mode = LeafMode::contiguous;
    else {
      l.mode = LeafMode::strided;
      l.strides = broadcast_strides(a.layout(), out.shape());
    }
    p->leaves.push_back(std::move(l));
  }
  return p;
}

/// Elements [e0, e0 + m) of the output's index space read from `a` through
/// its broadcast strides into dst, with an odometer (idx: one per dim).
void gather_strided(const NDArray& a, const std::vector<int64_t>& strides, const Shape& shape, int64_t e0, int64_t m,
                    int64_t* idx, char* dst) {
  const size_t nd = shape.size();
  int64_t rem = e0, off = 0;
  for (size_t d = nd; d-- > 0;) {
    idx[d] = rem % shape[d];
    rem /= shape[d];
    off += idx[d] * strides[d];
  }
  const size_t sz = a.itemsize();
  const char* src = static_cast<const char*>(a.raw());
  // Runs along the innermost dim: stride 1 copies, stride 0 repeats one value.
  const int64_t inner = shape[nd - 1], si = strides[nd - 1];
  for (int64_t i = 0; i < m;) {
    const int64_t run = std::min(m - i, inner - idx[nd - 1]);
    char* d = dst + size_t(i) * sz;
    const char* s0 = src + off * int64_t(sz);
    if (si == 1) std::memcpy(d, s0, size_t(run) * sz);
    else if (si == 0)
      for (int64_t j = 0; j < run; ++j) std::memcpy(d + size_t(j) * sz, s0, sz);
    else
      for (int64_t j = 0; j < run; ++j) std::memcpy(d + size_t(j) * sz, s0 + j * si * int64_t(sz), sz);
    i += run;
    // Advance the odometer by `run` elements: the inner dim wraps, outer dims step.
    off += run * si;
    idx[nd - 1] += run;
    for (size_t dd = nd - 1; dd > 0 && idx[dd] == shape[dd]; --dd) {
      off -= strides[dd] * shape[dd];
      idx[dd] = 0;
      off += strides[dd - 1];
      ++idx[dd - 1];
    }
  }
}

void fused_kernel(const KernelCall& c) {
  std::shared_ptr<const void> owned;
  const Program* p = static_cast<const Program*>(c.state);
  if (!p) {  // eager call without a plan
    owned = prepare_fused(c);
    p = static_cast<const Program*>(owned.get());
  }
  const int64_t n = c.out[0].numel();
  const size_t ni = p->instrs.size(), nl = p->leaves.size();
  const int64_t chunks = (n + kChunk - 1) / kChunk, chunk_len = std::min(kChunk, n);
  parallel_for(chunks, std::max<int64_t>(1, kGrain / kChunk), [&](int64_t lo, int64_t hi) {
    // Scratch: one chunk per instruction and per leaf (8 bytes covers every
    // dtype), as long as the output when it is shorter (scalar programs).
    auto scratch = std::make_unique_for_overwrite<double[]>(size_t(chunk_len) * (ni + nl));
    auto slot = [&](size_t i) { return reinterpret_cast<char*>(scratch.get() + i * size_t(chunk_len)); };
    std::vector<const void*> leaf_ptr(nl);
    std::vector<int64_t> idx(p->shape.size());  // gather_strided's odometer
    for (size_t r = 0; r < nl; ++r)
      if (p->leaves[r].mode == LeafMode::scalar) {  // broadcast once for the whole task
        const NDArray& a = c.in[r];
        size_t sz = a.itemsize();
        for (int64_t i = 0; i < chunk_len; ++i) std::memcpy(slot(ni + r) + size_t(i) * sz, a.raw(), sz);
        leaf_ptr[r] = slot(ni + r);
      }
    for (int64_t ch = lo; ch < hi; ++ch) {
      const int64_t e0 = ch * kChunk, m = std::min(kChunk, n - e0);
      for (size_t r = 0; r < nl; ++r) {
        const NDArray& a = c.in[r];
        const Leaf& leaf = p->leaves[r];
        if (leaf.mode == LeafMode::contiguous) {
          leaf_ptr[r] = static_cast<const char*>(a.raw()) + e0 * int64_t(a.itemsize());
        } else if (leaf.mode == LeafMode::strided) {
          gather_strided(a, leaf.strides, p->shape, e0, m, idx.data(), slot(ni + r));
          leaf_ptr[r] = slot(ni + r);
        }
      }
      for (size_t k = 0; k < ni; ++k) {
        const Instr& in = p->instrs[k];
        const void* a[3] = {};
        for (int j = 0; j < in.arity; ++j) {
          int64_t r = in.arg[j];
          a[j] = r >= 0 ? leaf_ptr[size_t(r)] : static_cast<const void*>(slot(size_t(-r - 1)));
        }
        const bool direct = k + 1 == ni && p->root_direct;
        in.fn(in.in, direct ? static_cast<char*>(c.out[0].raw()) + e0 * int64_t(c.out[0].itemsize()) : slot(k), a, m);
      }
      for (size_t j = p->root_direct ? 1 : 0; j < p->outputs.size(); ++j) {
        const NDArray& o = c.out[j];
        std::memcpy(static_cast<char*>(o.raw()) + e0 * int64_t(o.itemsize()), slot(p->outputs[j]),
                    size_t(m) * o.itemsize());
      }
    }
  });
}

const bool registered = [] {
  KernelInfo k{&fused_kernel, false, &prepare_fused};
  k.fusion = &ew::kFusedCaps;
  register_kernel("fused", DeviceKind::cpu, FloatTypes::dtypes(), k);
  return true;
}();

}  // namespace
}  // namespace loom::cpu
