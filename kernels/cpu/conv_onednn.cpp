// oneDNN convolutions (Debian's libdnnl 2.6, JIT kernels for AVX2, AVX-512
// and newer, chosen by oneDNN from the CPU at run time).
//
// oneDNN is built with OpenMP; loom's threads are TBB's. So oneDNN never
// starts threads here: the batch is split into chunks of a few images, each
// a oneDNN call with an OpenMP thread count of 1, and the chunks into one
// TBB task per thread. Weight gradients are summed per task in chunk order
// (the reorder back to OIHW does the adding), then over tasks in task order.
//
// The JIT kernels want blocked layouts (nChw16c, OIhw16i16o, ...): operands
// are reordered into the node's workspace and results back into the plan's
// NCHW / OIHW arrays. Measured on the ResNet9 and CNN layers at batch 128
// these round trips cost less than what the direct kernels save over im2col
// (see README, "Convolution kernels").

#include "kernels/cpu/conv_onednn.hpp"

#include <dlfcn.h>

#include <oneapi/dnnl/dnnl.hpp>
#include <optional>

#include "core/parallel.hpp"

namespace loom::cpu::onednn {

namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using DT = memory::data_type;

const dnnl::engine& cpu_engine() {
  static const dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

/// Pins this thread's OpenMP team size to 1, so oneDNN runs on the calling
/// (TBB) thread. Looked up at run time: libgomp comes with libdnnl.
void single_threaded() {
  using Fn = void (*)(int);
  static const Fn set = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  if (set) set(1);
}

/// Runs a reorder from one memory object to another (execute() wants lvalues).
void copy(const dnnl::reorder& r, const dnnl::stream& s, memory from, memory to) { r.execute(s, from, to); }

/// 64-byte-aligned offsets into the workspace.
size_t align(size_t n) { return (n + 63) & ~size_t(63); }

/// A conversion between a user layout and the one the primitive wants.
struct Reorder {
  memory::desc user, inner;
  std::optional<dnnl::reorder> to_inner, to_user;  // only those the pass needs
  bool needed() const { return user != inner; }
  size_t bytes() const { return needed() ? align(inner.get_size()) : 0; }
};

/// The primitives for one chunk size (one of the three descriptors is set).
struct Chunk {
  int64_t n = 0;
  std::optional<dnnl::convolution_forward::primitive_desc> fwd;
  std::optional<dnnl::convolution_backward_data::primitive_desc> data;
  std::optional<dnnl::convolution_backward_weights::primitive_desc> filter;
  memory::desc scratch_desc;
  std::optional<dnnl::primitive> prim;
  Reorder src, dst, weights;                 // src/dst: x / y (or dx / dy); weights: w (or dw)
  std::optional<dnnl::reorder> add_weights;  // backward filter: dw += reorder(inner)
  size_t scratch = 0;
  std::string impl;
};

}  // namespace

struct Conv {
  conv::Geometry g;
  Pass pass;
  bool bias = false, relu = false;
  int64_t nb = 1, chunks = 1, tasks = 1;  // chunks of nb images (the last may be smaller), split over tasks
  std::vector<Chunk> kinds;               // [0]: nb images; [1]: the last chunk's size when it differs
  std::string impl;
  size_t per_task = 0, shared = 0;  // workspace: per task, and the one weight reorder (forward, data)

  const Chunk& kind_of(int64_t ch) const { return ch == chunks - 1 && kinds.size() > 1 ? kinds[1] : kinds[0]; }
  std::pair<int64_t, int64_t> task_chunks(int64_t t) const { return {t * chunks / tasks, (t + 1) * chunks / tasks}; }
};

namespace {

memory::dims dims4(int64_t a, int64_t b, int64_t c, int64_t d) { return {a, b, c, d}; }

memory::desc weights_desc(const conv::Geometry& g, Tag tag) {
  if (g.groups == 1) return memory::desc(dims4(g.K, g.C, g.R, g.S), DT::f32, tag);
  return memory::desc({g.groups, g.Kg(), g.Cg(), g.R, g.S}, DT::f32, tag == Tag::any ? Tag::any : Tag::goihw);
}

/// Primitive descriptors for a chunk of n images (no code generated).
std::optional<Chunk> describe(const Conv& c, int64_t n) {
  const conv::Geometry& g = c.g;
  const dnnl::engine& e = cpu_engine();
  const memory::desc src(dims4(n, g.C, g.H, g.W), DT::f32, Tag::any), dst(dims4(n, g.K, g.OH, g.OW), DT::f32, Tag::any);
  const memory::desc wei = weights_desc(g, Tag::any), bias({g.K}, DT::f32, Tag::x);
  const memory::dims stride{g.sh, g.sw}, dil{g.dh - 1, g.dw - 1}, pad_l{g.pt, g.pl}, pad_r{g.pb, g.pr};
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::primitive_attr fwd_attr = attr;
  if (c.relu) {
    dnnl::post_ops ops;
    ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    fwd_attr.set_post_ops(ops);
  }
  const auto alg = dnnl::algorithm::convolution_direct;
  const auto kind = dnnl::prop_kind::forward_training;  // also the hint of the backward passes
  const dnnl::convolution_forward::desc fd =
      c.bias ? dnnl::convolution_forward::desc(kind, alg, src, wei, bias, dst, stride, dil, pad_l, pad_r)
             : dnnl::convolution_forward::desc(kind, alg, src, wei, dst, stride, dil, pad_l, pad_r);
  dnnl::convolution_forward::primitive_desc fpd(fd, fwd_attr, e, true);
  if (!fpd) return std::nullopt;
  Chunk ch;
  ch.n = n;
  memory::desc in_src, in_dst, in_wei;
  if (c.pass == Pass::forward) {
    ch.fwd = fpd;
    in_src = fpd.src_desc(), in_dst = fpd.dst_desc(), in_wei = fpd.weights_desc();
    ch.scratch_desc = fpd.scratchpad_desc(), ch.impl = fpd.impl_info_str();
  } else if (c.pass == Pass::backward_data) {
    dnnl::convolution_backward_data::desc bd(alg, src, wei, dst, stride, dil, pad_l, pad_r);
    dnnl::convolution_backward_data::primitive_desc bpd(bd, attr, e, fpd, true);
    if (!bpd) return std::nullopt;
    ch.data = bpd;
    in_src = bpd.diff_src_desc(), in_dst = bpd.diff_dst_desc(), in_wei = bpd.weights_desc();
    ch.scratch_desc = bpd.scratchpad_desc(), ch.impl = bpd.impl_info_str();
  } else {
    dnnl::convolution_backward_weights::desc bw(alg, src, wei, dst, stride, dil, pad_l, pad_r);
    dnnl::convolution_backward_weights::primitive_desc bpd(bw, attr, e, fpd, true);
    if (!bpd) return std::nullopt;
    ch.filter = bpd;
    in_src = bpd.src_desc(), in_dst = bpd.diff_dst_desc(), in_wei = bpd.diff_weights_desc();
    ch.scratch_desc = bpd.scratchpad_desc(), ch.impl = bpd.impl_info_str();
  }
  ch.src = {memory::desc(dims4(n, g.C, g.H, g.W), DT::f32, Tag::nchw), in_src, {}, {}};
  ch.dst = {memory::desc(dims4(n, g.K, g.OH, g.OW), DT::f32, Tag::nchw), in_dst, {}, {}};
  ch.weights = {weights_desc(g, g.groups == 1 ? Tag::oihw : Tag::goihw), in_wei, {}, {}};
  ch.scratch = align(ch.scratch_desc.get_size());
  return ch;
}

/// Generates the code: the convolution and the reorders this pass needs.
void build(Conv& c, Chunk& ch) {
  const dnnl::engine& e = cpu_engine();
  auto make_reorder = [&](const memory::desc& from, const memory::desc& to) {
    return dnnl::reorder(dnnl::reorder::primitive_desc(e, from, e, to));
  };
  if (ch.fwd)
    ch.prim = dnnl::convolution_forward(*ch.fwd);
  else if (ch.data)
    ch.prim = dnnl::convolution_backward_data(*ch.data);
  else
    ch.prim = dnnl::convolution_backward_weights(*ch.filter);
  // Forward reads src and writes dst; backward data reads dy (dst) and writes dx (src); backward filter reads both.
  const bool src_in = c.pass != Pass::backward_data, dst_in = c.pass != Pass::forward;
  if (ch.src.needed())
    (src_in ? ch.src.to_inner : ch.src.to_user) =
        make_reorder(src_in ? ch.src.user : ch.src.inner, src_in ? ch.src.inner : ch.src.user);
  if (ch.dst.needed())
    (dst_in ? ch.dst.to_inner : ch.dst.to_user) =
        make_reorder(dst_in ? ch.dst.user : ch.dst.inner, dst_in ? ch.dst.inner : ch.dst.user);
  if (ch.weights.needed()) {
    if (c.pass == Pass::backward_filter) {
      ch.weights.to_user = make_reorder(ch.weights.inner, ch.weights.user);
      dnnl::post_ops sum;  // the reorder adds to what dw holds: chunks accumulate in it
      sum.append_sum(1.0f);
      dnnl::primitive_attr attr;
      attr.set_post_ops(sum);
      ch.add_weights = dnnl::reorder(dnnl::reorder::primitive_desc(e, ch.weights.inner, e, ch.weights.user, attr));
    } else {
      ch.weights.to_inner = make_reorder(ch.weights.user, ch.weights.inner);
    }
  }
}

}  // namespace

/// Bytes of reordered activations a task holds at once (but at least
/// kMinChunk images per call): chunks stay in L2 between the reorders and
/// the convolution, and the workspace small. Measured on ResNet9 at batch
/// 128: 128 KiB chunks use as little time as whole-batch ones and bring the
/// arena from 1.085x to 1.02x its lower bound; the CNN's layers (75-100 KiB
/// per image) run as fast with 8 images per call as with whole-batch chunks,
/// 15% slower with one.
constexpr size_t kChunkBytes = size_t(128) << 10;
constexpr int64_t kMinChunk = 8;

std::shared_ptr<const Conv> make(const conv::Geometry& g, Pass pass, bool bias, bool relu, int threads, bool generate) {
  if (g.N == 0) return nullptr;
  single_threaded();
  auto c = std::make_shared<Conv>();
  c->g = g, c->pass = pass, c->bias = bias, c->relu = relu;
  const size_t per_image = size_t(g.C * g.H * g.W + g.K * g.P()) * sizeof(float);
  const int64_t per_thread = (g.N + threads - 1) / std::max(threads, 1);
  c->nb = std::min(std::max(int64_t(kChunkBytes / std::max<size_t>(per_image, 1)), kMinChunk), per_thread);
  c->chunks = (g.N + c->nb - 1) / c->nb;
  c->tasks = std::min<int64_t>(c->chunks, std::max(threads, 1));
  for (int64_t n : {c->nb, g.N - (c->chunks - 1) * c->nb}) {
    if (!c->kinds.empty() && n == c->kinds[0].n) break;
    std::optional<Chunk> ch;
    try {
      ch = describe(*c, n);
    } catch (const dnnl::error&) {  // geometry oneDNN rejects (e.g. a stride beyond its int range): im2col runs it
    }
    if (!ch) return nullptr;
    c->kinds.push_back(std::move(*ch));
  }
  c->impl = c->kinds[0].impl;
  if (c->impl.rfind("jit", 0) != 0) return nullptr;  // gemm or reference: im2col does better
  for (const Chunk& ch : c->kinds) {
    size_t t = ch.src.bytes() + ch.dst.bytes() + ch.scratch;
    // Backward filter: the chunk's dw (in oneDNN's layout, or in OIHW when that is oneDNN's), and the task's
    // running sum at the end of its block (task 0 sums into dw itself).
    const size_t oihw = align(size_t(g.K * g.Cg() * g.R * g.S) * 4);
    if (pass == Pass::backward_filter) t += (ch.weights.needed() ? ch.weights.bytes() : oihw) + oihw;
    c->per_task = std::max(c->per_task, t);
  }
  if (pass != Pass::backward_filter) c->shared = c->kinds[0].weights.bytes();
  if (generate)
    for (Chunk& ch : c->kinds) build(*c, ch);
  return c;
}

size_t workspace_bytes(const Conv& c) {
  // Never 0: a planned node then always has a workspace, which tells prepare() it is planned.
  return std::max<size_t>(64, c.shared + size_t(c.tasks) * c.per_task);
}

const char* implementation(const Conv& c) { return c.impl.c_str(); }

namespace {

/// One call of a planned convolution: its operands in NCHW / OIHW (x, w, y for
/// the forward; dy, w, dx for backward data; x, dy, dw for backward filter)
/// and the workspace, split into the weights in the primitive's layout
/// (shared) and one slice per task.
struct Run {
  const Conv& c;
  const conv::Geometry& g;
  const dnnl::engine& e;
  char* ws;
  float *x = nullptr, *y = nullptr, *w = nullptr, *b = nullptr;
  void* w_inner = nullptr;  // the weights in the primitive's layout (forward, backward data)
  int64_t wsize;

  Run(const Conv& conv, const KernelCall& call);
  /// Task t's weight-gradient sum (user layout): task 0 sums into dw itself.
  float* sum_of(int64_t t) const {
    if (t == 0) return w;
    return reinterpret_cast<float*>(ws + c.shared + size_t(t + 1) * c.per_task - align(size_t(wsize) * 4));
  }
  /// Memory for chunk operand `user` in the primitive's layout, taken from the task's slice at p (advanced)
  /// and filled from `user` when `in`, or `user` itself where the layouts agree.
  memory inner(const Reorder& r, float* user, bool in, char*& p, dnnl::stream& s) const {
    memory u(r.user, e, user);
    if (!r.needed()) return u;
    memory m(r.inner, e, p);
    p += r.bytes();
    if (in) r.to_inner->execute(s, u, m);
    return m;
  }
  void chunk(int64_t t, int64_t ch, bool first_of_task, dnnl::stream& s) const;
  void forward(const Chunk& k, float* xc, float* yc, memory& scratch, char*& p, dnnl::stream& s) const;
  void backward_data(const Chunk& k, float* xc, float* yc, memory& scratch, char*& p, dnnl::stream& s) const;
  void backward_filter(const Chunk& k, float* xc, float* yc, memory& scratch, char*& p, float* sum, bool first,
                       dnnl::stream& s) const;
};

Run::Run(const Conv& conv, const KernelCall& call)
    : c(conv), g(conv.g), e(cpu_engine()), ws(static_cast<char*>(call.workspace)), wsize(g.K * g.Cg() * g.R * g.S) {
  auto f = [](const NDArray& a) { return static_cast<float*>(a.raw()); };
  if (c.pass == Pass::forward) {
    x = f(call.in[0]), w = f(call.in[1]), y = f(call.out[0]);
    if (c.bias) b = f(call.in[2]);
  } else if (c.pass == Pass::backward_data) {
    y = f(call.in[0]), w = f(call.in[1]), x = f(call.out[0]);
  } else {
    x = f(call.in[0]), y = f(call.in[1]), w = f(call.out[0]);
  }
  // The weights in the primitive's layout, once for every chunk.
  const Chunk& first = c.kinds[0];
  w_inner = w;
  if (c.pass != Pass::backward_filter && first.weights.needed()) {
    single_threaded();
    dnnl::stream s(e);
    memory from(first.weights.user, e, w), to(first.weights.inner, e, ws);
    first.weights.to_inner->execute(s, from, to);
    w_inner = ws;
  }
}

void Run::forward(const Chunk& k, float* xc, float* yc, memory& scratch, char*& p, dnnl::stream& s) const {
  memory src = inner(k.src, xc, true, p, s), dst = inner(k.dst, yc, false, p, s);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src},
                                       {DNNL_ARG_WEIGHTS, memory(c.kinds[0].weights.inner, e, w_inner)},
                                       {DNNL_ARG_DST, dst},
                                       {DNNL_ARG_SCRATCHPAD, scratch}};
  if (b) args[DNNL_ARG_BIAS] = memory(memory::desc({g.K}, DT::f32, Tag::x), e, b);
  k.prim->execute(s, args);
  if (k.dst.needed()) copy(*k.dst.to_user, s, dst, memory(k.dst.user, e, yc));
}

void Run::backward_data(const Chunk& k, float* xc, float* yc, memory& scratch, char*& p, dnnl::stream& s) const {
  memory dy = inner(k.dst, yc, true, p, s), dx = inner(k.src, xc, false, p, s);
  k.prim->execute(s, {{DNNL_ARG_DIFF_DST, dy},
                      {DNNL_ARG_WEIGHTS, memory(c.kinds[0].weights.inner, e, w_inner)},
                      {DNNL_ARG_DIFF_SRC, dx},
                      {DNNL_ARG_SCRATCHPAD, scratch}});
  if (k.src.needed()) copy(*k.src.to_user, s, dx, memory(k.src.user, e, xc));
}

/// The chunk's dw in oneDNN's layout, then written (the task's first chunk) or added (the others) into `sum`.
void Run::backward_filter(const Chunk& k, float* xc, float* yc, memory& scratch, char*& p, float* sum, bool first,
                          dnnl::stream& s) const {
  memory src = inner(k.src, xc, true, p, s), dy = inner(k.dst, yc, true, p, s);
  float* direct = first ? sum : reinterpret_cast<float*>(p + k.weights.bytes());
  memory dw = k.weights.needed() ? memory(k.weights.inner, e, p) : memory(k.weights.user, e, direct);
  k.prim->execute(s,
                  {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_DIFF_WEIGHTS, dw}, {DNNL_ARG_SCRATCHPAD, scratch}});
  if (k.weights.needed()) {
    copy(first ? *k.weights.to_user : *k.add_weights, s, dw, memory(k.weights.user, e, sum));
  } else if (!first) {
    s.wait();
    for (int64_t i = 0; i < wsize; ++i) sum[i] += direct[i];
  }
}

void Run::chunk(int64_t t, int64_t ch, bool first_of_task, dnnl::stream& s) const {
  const Chunk& k = c.kind_of(ch);
  const int64_t n0 = ch * c.nb;
  char* p = ws + c.shared + size_t(t) * c.per_task;
  float* xc = x + n0 * g.C * g.H * g.W;
  float* yc = y + n0 * g.K * g.P();
  memory scratch(k.scratch_desc, e, p);
  p += k.scratch;
  if (c.pass == Pass::forward) forward(k, xc, yc, scratch, p, s);
  else if (c.pass == Pass::backward_data) backward_data(k, xc, yc, scratch, p, s);
  else backward_filter(k, xc, yc, scratch, p, sum_of(t), first_of_task, s);
}

}  // namespace

void run(const Conv& c, const KernelCall& call) {
  LOOM_CHECK(call.workspace_bytes >= workspace_bytes(c), call.op, " '", call.node, "': workspace of ",
             call.workspace_bytes, " bytes, need ", workspace_bytes(c));
  const Run r(c, call);
  parallel_for(c.tasks, 1, [&](int64_t lo, int64_t hi) {
    single_threaded();
    dnnl::stream s(r.e);
    for (int64_t t = lo; t < hi; ++t) {
      auto [c0, c1] = c.task_chunks(t);
      for (int64_t ch = c0; ch < c1; ++ch) r.chunk(t, ch, ch == c0, s);
    }
    s.wait();
  });
  if (c.pass != Pass::backward_filter) return;
  for (int64_t t = 1; t < c.tasks; ++t) {  // the tasks' sums, in task order
    const float* part = r.sum_of(t);
    for (int64_t i = 0; i < r.wsize; ++i) r.w[i] += part[i];
  }
}

}  // namespace loom::cpu::onednn
