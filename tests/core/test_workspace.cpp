// Kernel workspaces: scratch memory a kernel asks for is planned in the arena,
// live for its step only, disjoint from every buffer live at the same time,
// and counted in the lower bound; eager calls (invoke, folding) get it too.

#include "tests/core/graphs.hpp"

using namespace loom;

namespace {

const std::string kScratchOp = "test_scratch_reverse";

// out = x reversed (flat), computed through the workspace: x is copied there
// first, so a workspace overlapping x or out, or too small, gives wrong values
// or the error below.
template <class T>
void scratch_reverse(const KernelCall& c) {
  const int64_t n = c.out[0].numel();
  LOOM_CHECK(c.workspace && c.workspace_bytes >= size_t(n) * sizeof(T), kScratchOp, ": workspace missing or short");
  auto disjoint = [&](const NDArray& a) {
    const char* w = static_cast<const char*>(c.workspace);
    const char* p = static_cast<const char*>(a.raw());
    return p + a.nbytes() <= w || w + c.workspace_bytes <= p;
  };
  LOOM_CHECK(disjoint(c.in[0]) && disjoint(c.out[0]), kScratchOp, ": workspace overlaps an operand");
  T* w = static_cast<T*>(c.workspace);
  const T* x = static_cast<const T*>(c.in[0].raw());
  for (int64_t i = 0; i < n; ++i) w[i] = x[i];
  T* y = static_cast<T*>(c.out[0].raw());
  for (int64_t i = 0; i < n; ++i) y[i] = w[n - 1 - i];
}

const bool registered = [] {
  OpDef d;
  d.name = kScratchOp;
  d.min_inputs = d.max_inputs = 1;
  d.attrs = AttrSchema::none();
  d.infer = [](const InferContext& c) { return std::vector<TensorType>{c.in[0]}; };
  d.reference = [](std::span<const NDArray> in, const Attrs&) {
    NDArray x = in[0].compact(), y = NDArray::empty(x.shape(), x.dtype());
    const int64_t n = x.numel(), size = int64_t(dtype_size(x.dtype()));
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(static_cast<char*>(y.raw()) + i * size, static_cast<const char*>(x.raw()) + (n - 1 - i) * size,
                  size_t(size));
    return std::vector<NDArray>{y};
  };
  d.examples = [](uint64_t seed) {
    return std::vector<OpExample>{{"matrix", {test::rand({3, 5}, seed, float64)}, {}, {}, false}};
  };
  register_op(std::move(d));
  KernelInfo k;
  k.fn = [](const KernelCall& c) {
    dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() { scratch_reverse<T>(c); });
  };
  k.compact_inputs = true;
  k.workspace = [](const WorkspaceQuery& q) { return size_t(numel(q.out[0])) * dtype_size(q.dtype); };
  register_kernel(kScratchOp, DeviceKind::cpu, FloatTypes::dtypes(), k);
  return true;
}();

Tensor scratch_reverse(const Tensor& x) { return x.graph().add1(kScratchOp, {x}); }

}  // namespace

TEST_SUITE("core/workspace") {
  TEST_CASE("workspaces live in the arena for one step and count in the lower bound") {
    Graph g;
    Tensor x = g.placeholder("x", {64, 16});
    // A chain and a branch, so workspaces and activations compete for bytes.
    Tensor a = scratch_reverse(x * 2.0);
    Tensor b = scratch_reverse(a + 1.0);
    Tensor c = scratch_reverse(x - 3.0);
    Tensor y = b * c;
    NDArray xv = test::rand({64, 16}, 3);
    auto op = [](const char* name, const NDArray& v, float k) { return invoke(name, {v, NDArray::scalar(k)})[0]; };
    auto rev = [](const NDArray& v) { return invoke(kScratchOp, {v})[0]; };
    NDArray want = invoke("mul", {rev(op("add", rev(op("mul", xv, 2)), 1)), rev(op("sub", xv, 3))})[0];
    for (Executor ex : {Executor::serial, Executor::parallel}) {
      Session s(g, {.threads = 2, .executor = ex});
      PlanInfo info = s.plan_info({y}, {{x, xv}});
      test::verify_plan(info);
      CHECK(test::identical(s.run({y}, {{x, xv}})[0], want));
      const PlanStats st = s.stats().last_plan;
      // Each workspace is a buffer of 64*16 floats written and read by one step.
      int scratch = 0;
      for (const auto& buf : info.buffers)
        if (buf.bytes == 64 * 16 * 4 && buf.writers.size() == 1 && buf.readers.size() == 1 &&
            buf.writers[0] == buf.readers[0] && buf.first == buf.last)
          ++scratch;
      CHECK(scratch >= 3);
      CHECK(st.lower_bound_bytes >= 3 * 64 * 16 * 4);  // input, output and workspace of one step at least
      CHECK(st.arena_bytes <= st.lower_bound_bytes * 1.10);
    }
  }

  TEST_CASE("eager calls and constant folding get a workspace too") {
    NDArray xv = test::rand({7}, 5);
    NDArray r = invoke(kScratchOp, {xv})[0];
    for (int64_t i = 0; i < 7; ++i) CHECK(r.data<float>()[i] == xv.data<float>()[6 - i]);
    Graph g;
    Tensor y = scratch_reverse(g.constant(xv));  // folded when the plan is built
    Session s(g);
    CHECK(test::identical(s.run({y})[0], r));
    CHECK(s.stats().last_plan.folded >= 1);
  }
}
