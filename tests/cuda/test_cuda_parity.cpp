// CPU/CUDA parity. Registry-driven: every op with examples runs eagerly on
// both devices (float32 and float64, CUDA inputs compact, transposed and
// flipped), and its gradient graph runs in a CPU and a CUDA Session. Then the
// paths the small examples do not reach: large and strided reductions, every
// matmul batch layout, deterministic gather_grad, dtype conversions, errors
// raised from device checks, Philox streams, and a training step.
//
// Needs only loom's public headers, so it builds without CUDA. Without a GPU
// the GPU cases are reported as skipped; in a build without CUDA the kernel
// coverage case is skipped too.

#include <cmath>
#include <functional>
#include <initializer_list>
#include <set>
#include <string>

#include "core/autodiff.hpp"
#include "core/invoke.hpp"
#include "core/kernel.hpp"
#include "core/op.hpp"
#include "core/session.hpp"
#include "ops/ops.hpp"
#include "tests/util.hpp"

using namespace loom;
using loom::test::error_of;
using loom::test::identical;

namespace {

/// Whether this build has the CUDA backend (kernels or at least the device kind).
bool cuda_built() {
  for (const KernelEntry& k : registered_kernels())
    if (k.device == DeviceKind::cuda) return true;
  try {
    device_backend(Device::cuda());
    return true;
  } catch (const Error& e) {
    return std::string(e.what()).find("built without CUDA") == std::string::npos;
  }
}

bool has_gpu() { return device_count(DeviceKind::cuda) > 0; }

const Device kGpu = Device::cuda();

// An op with a CPU kernel only, as a user's own op might be: a CUDA session
// runs it on the host (core's host fallback). Defined once here, so the op
// sweep checks it like any other op.
const std::string kHostOnly = "test_host_only_affine";
const bool host_only_registered = [] {
  OpDef d;
  d.name = kHostOnly;
  d.min_inputs = d.max_inputs = 1;
  d.attrs = AttrSchema::none();
  d.infer = [](const InferContext& c) { return std::vector<TensorType>{c.in[0]}; };
  d.reference = [](std::span<const NDArray> in, const Attrs&) {
    NDArray out = NDArray::empty(in[0].shape(), in[0].dtype());
    NDArray x = in[0].compact().astype(float64), y = NDArray::empty(in[0].shape(), float64);
    for (int64_t i = 0; i < x.numel(); ++i) y.data<double>()[i] = 2 * x.data<double>()[i] + 1;
    out.assign(y.astype(in[0].dtype()));
    return std::vector<NDArray>{out};
  };
  d.examples = [](uint64_t seed) {
    return std::vector<OpExample>{{"affine", {test::rand({3, 5}, seed, float64)}, {}, {}, false}};
  };
  register_op(std::move(d));
  register_kernel(kHostOnly, DeviceKind::cpu, FloatTypes::dtypes(), {[](const KernelCall& c) {
                    dispatch_among(FloatTypes{}, c.out[0].dtype(), [&]<class T>() {
                      const T* x = static_cast<const T*>(c.in[0].raw());
                      T* y = static_cast<T*>(c.out[0].raw());
                      for (int64_t i = 0; i < c.out[0].numel(); ++i) y[i] = T(2) * x[i] + T(1);
                    });
                  }, true});
  return true;
}();

// Ops their examples cannot run (structural, or needing a variable, or without
// a device kernel): tested by the session cases.
const std::set<std::string> kNotFromExamples = {"placeholder", "constant", "variable", "no_op", "assign", kHostOnly};

/// Normalized mean squared error of got against want (both host or device);
/// NaN and infinities must sit at the same places with the same values.
double nmse(const NDArray& got, const NDArray& want) {
  NDArray x = got.to(Device::cpu()).astype(float64), y = want.to(Device::cpu()).astype(float64);
  const double *p = x.data<double>(), *q = y.data<double>();
  double err = 0, ref = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    if (std::isnan(p[i]) || std::isnan(q[i])) {
      if (std::isnan(p[i]) != std::isnan(q[i])) return INFINITY;
      continue;
    }
    if (std::isinf(p[i]) || std::isinf(q[i])) {
      if (p[i] != q[i]) return INFINITY;
      continue;
    }
    err += (p[i] - q[i]) * (p[i] - q[i]);
    ref += q[i] * q[i];
  }
  return err / std::max(ref, 1e-30);
}

/// "" when gpu matches cpu: same shape and dtype, floats within NMSE `tol`,
/// everything else exactly equal.
std::string mismatch(const NDArray& cpu, const NDArray& gpu, double tol) {
  if (cpu.shape() != gpu.shape()) return "shape " + shape_str(gpu.shape()) + " vs " + shape_str(cpu.shape());
  if (cpu.dtype() != gpu.dtype())
    return "dtype " + std::string(dtype_name(gpu.dtype())) + " vs " + std::string(dtype_name(cpu.dtype()));
  if (is_floating(cpu.dtype())) {
    double e = nmse(gpu, cpu);
    return e <= tol ? "" : "NMSE " + std::to_string(e);
  }
  return identical(cpu.compact(), gpu.to(Device::cpu()).compact()) ? "" : "values differ";
}

/// The host array on the GPU: compact (0), as a transposed view of a compact
/// transpose (1), or as a flipped view with negative strides (2).
NDArray on_gpu(const NDArray& host, int layout) {
  std::vector<int64_t> rev(size_t(host.ndim())), all(size_t(host.ndim()));
  for (int64_t i = 0; i < host.ndim(); ++i) rev[size_t(i)] = host.ndim() - 1 - i, all[size_t(i)] = i;
  if (layout == 1 && host.ndim() >= 2) return host.permute(rev).compact().to(kGpu).permute(rev);
  if (layout == 2 && host.ndim() >= 1) return host.flip(all).compact().to(kGpu).flip(all);
  return host.to(kGpu);
}

/// Runs one op eagerly on device d. With inputs this is loom::invoke; an op
/// without inputs (full, random) is dispatched to d's kernel directly, since
/// invoke places input-less ops on the CPU.
std::vector<NDArray> run_eager(const OpDef& op, const std::vector<NDArray>& in, const Attrs& attrs, Device d,
                               InvokeOptions opt = {.seed = 1234, .run_counter = 3, .node_key = 77}) {
  if (!in.empty()) return invoke(op.name, in, attrs, opt);
  InferContext ctx{op.name, op.name, {}, attrs};
  std::vector<TensorType> types = op.infer(ctx);
  const KernelInfo* k = find_kernel(op.name, d.kind, types.at(0).dtype);
  REQUIRE_MESSAGE(k, "no ", d.str(), " kernel for ", op.name);
  std::vector<NDArray> out;
  for (const TensorType& t : types) out.push_back(NDArray::empty(t.shape, t.dtype, d));
  KernelContext kc{d, nullptr, opt.seed, opt.run_counter};
  KernelCall call{kc, {}, out, attrs, op.name, op.name, opt.node_key};
  k->fn(call);
  if (!d.is_cpu()) device_backend(d).synchronize(nullptr);
  return out;
}

NDArray cast_float(const NDArray& a, DType t) { return is_floating(a.dtype()) ? a.astype(t) : a; }

/// y = op(inputs), loss = sum_k sum(y_k * w_k), gradients of loss; returns
/// the floating outputs and the gradients from a session on `device`.
std::vector<NDArray> run_gradient_graph(const OpDef& op, const OpExample& ex, SessionOptions options) {
  Graph g;
  std::vector<Tensor> xs;
  Feeds feeds;
  for (size_t i = 0; i < ex.inputs.size(); ++i) {
    const NDArray v = cast_float(ex.inputs[i], float32);
    if (is_floating(v.dtype())) {
      std::string name = "x";  // (not "x" + to_string: GCC 12 warns falsely with -Wrestrict)
      name += std::to_string(i);
      xs.push_back(g.placeholder(name, v.shape(), v.dtype()));
      feeds.push_back({xs.back(), v});
    } else {
      xs.push_back(g.constant(v));
    }
  }
  std::vector<Tensor> ys = g.add(op.name, xs, ex.attrs);
  std::vector<Tensor> fetches;
  Tensor loss;
  uint64_t seed = 41;
  for (const Tensor& y : ys) {
    if (!is_floating(y.dtype())) continue;
    fetches.push_back(y);
    Tensor term = sum(y * g.constant(test::rand(y.shape(), seed++, y.dtype(), 0.5, 1.5)));
    loss = loss.valid() ? loss + term : term;
  }
  std::vector<int> wrt = ex.grad_inputs;
  if (wrt.empty())
    for (size_t i = 0; i < ex.inputs.size(); ++i)
      if (is_floating(ex.inputs[i].dtype())) wrt.push_back(int(i));
  std::vector<Tensor> targets;
  for (int i : wrt) targets.push_back(xs[size_t(i)]);
  for (const Tensor& d : gradients(loss, targets)) fetches.push_back(d);
  Session s(g, options);
  return s.run(fetches, feeds);
}

/// Reductions of kernels/cuda/reduce.cu against the CPU's on inputs large enough to split, in 3 layouts.
void check_large_reductions(std::initializer_list<DType> dtypes) {
  using V = std::vector<int64_t>;
  struct Case {
    Shape shape;
    V axes;
    bool keepdims;
  };
  // Large enough that every path of kernels/cuda/reduce.cu splits its reductions over blocks or threads and
  // merges partials (block per output: [30, 1000] whole, [3, 20001] rows, [30011]; thread per output:
  // [9001, 3] columns), small enough for the emulator (each element is an emulated thread's work, under ASan).
  const std::vector<Case> cases = {
      {{30, 1000}, {}, false},        {{30, 1000}, {1}, false}, {{30, 1000}, {0}, true},
      {{3, 20001}, {1}, false},       {{9001, 3}, {0}, false},  {{8, 50, 9, 7}, {1, 3}, true},
      {{8, 50, 9, 7}, {0, 2}, false}, {{30011}, {}, false},     {{64, 1, 33}, {1}, false},
      {{4, 6}, {-1}, true},
  };
  for (const Case& k : cases)
    for (DType t : dtypes)
      for (int layout = 0; layout < 3; ++layout) {
        CAPTURE(shape_str(k.shape));
        CAPTURE(attr_str(k.axes));
        CAPTURE(dtype_name(t));
        CAPTURE(layout);
        const NDArray x = test::rand(k.shape, 11, t, t == uint8 ? 0 : -50, 50);
        const NDArray gx = on_gpu(x, layout);
        const Attrs attrs{{"axes", k.axes}, {"keepdims", k.keepdims}};
        for (std::string op : {"sum", "mean", "max", "min"}) {
          if (op == "mean" && !is_floating(t)) continue;
          CAPTURE(op);
          const std::string m = mismatch(invoke(op, {x}, attrs)[0], invoke(op, {gx}, attrs)[0], 1e-12);
          CHECK_MESSAGE(m.empty(), m);
        }
        if (k.axes.size() <= 1 && x.numel() > 0) {
          Attrs arg;  // (a non-negative axis: the CPU kernel does not normalize negative ones)
          if (!k.axes.empty()) arg.set("axis", k.axes[0] < 0 ? k.axes[0] + int64_t(k.shape.size()) : k.axes[0]);
          for (std::string op : {"argmax", "argmin"}) {
            CAPTURE(op);
            CHECK(mismatch(invoke(op, {x}, arg)[0], invoke(op, {gx}, arg)[0], 0).empty());
          }
        }
      }
}

}  // namespace

TEST_SUITE("cuda/parity") {
  TEST_CASE("every (op, dtype) with a CPU kernel has a CUDA kernel" * doctest::skip(!cuda_built())) {
    int pairs = 0;
    for (const KernelEntry& k : registered_kernels()) {
      if (k.device != DeviceKind::cpu || k.op.starts_with("test_")) continue;  // test-only ops: CPU kernels only
      for (DType t : k.dtypes) {
        CHECK_MESSAGE(find_kernel(k.op, DeviceKind::cuda, t), "no CUDA kernel for ", k.op, " ", dtype_name(t));
        ++pairs;
      }
    }
    CHECK(pairs > 100);
  }

  TEST_CASE("every op's examples run the same on CPU and CUDA" * doctest::skip(!has_gpu())) {
    int checked = 0;
    for (const OpDef* op : registered_ops()) {
      // Test-only ops have CPU kernels only, and eager calls do not fall back to the host (sessions do).
      if (kNotFromExamples.count(op->name) || op->name.starts_with("test_") || !op->examples) continue;
      for (const OpExample& ex : op->examples(31)) {
        for (DType t : {float32, float64}) {
          CAPTURE(op->name);
          CAPTURE(ex.label);
          CAPTURE(dtype_name(t));
          std::vector<NDArray> ins;
          for (const NDArray& a : ex.inputs) ins.push_back(cast_float(a, t));
          const std::vector<NDArray> cpu = run_eager(*op, ins, ex.attrs, Device::cpu());
          for (int layout = 0; layout < (ins.empty() ? 1 : 3); ++layout) {
            CAPTURE(layout);
            std::vector<NDArray> gins;
            for (const NDArray& a : ins) gins.push_back(on_gpu(a, layout));
            const std::vector<NDArray> gpu = run_eager(*op, gins, ex.attrs, kGpu);
            REQUIRE(gpu.size() == cpu.size());
            for (size_t i = 0; i < cpu.size(); ++i) {
              CHECK(gpu[i].device() == kGpu);
              const std::string m = mismatch(cpu[i], gpu[i], t == float32 ? 1e-6 : 1e-12);
              CHECK_MESSAGE(m.empty(), "output ", i, ": ", m);
            }
            ++checked;
          }
        }
      }
    }
    CHECK(checked > 200);
  }

  TEST_CASE("batch norm keeps the CPU's inf/NaN conventions (README, Infinities and NaN)" * doctest::skip(!has_gpu())) {
    // NaN where the CPU has NaN, the same infinities: the finite shift of the statistics,
    // NaN kept by the variance, ReLU gradients through NaN, w * invstd factored out of dx.
    int checked = 0;
    for (std::string name : {"batch_norm", "batch_norm_grad"}) {
      const OpDef& op = find_op(name);
      for (const OpExample& ex : op.examples(37))
        for (size_t i = 0; i < ex.inputs.size(); ++i)
          for (double v : {double(INFINITY), -double(INFINITY), double(NAN)}) {
            std::vector<NDArray> ins;
            for (const NDArray& a : ex.inputs) ins.push_back(a.astype(float64));
            ins[i].data<double>()[ins[i].numel() / 2] = v;
            CAPTURE(name);
            CAPTURE(ex.label);
            CAPTURE(i);
            CAPTURE(v);
            const std::vector<NDArray> cpu = run_eager(op, ins, ex.attrs, Device::cpu());
            std::vector<NDArray> gins;
            for (const NDArray& a : ins) gins.push_back(a.to(kGpu));
            const std::vector<NDArray> gpu = run_eager(op, gins, ex.attrs, kGpu);
            for (size_t o = 0; o < cpu.size(); ++o) {
              const NDArray c = cpu[o].compact(), g = gpu[o].to(Device::cpu()).compact();
              for (int64_t e = 0; e < c.numel(); ++e) {
                const double p = c.data<double>()[e], q = g.data<double>()[e];
                CAPTURE(o);
                CAPTURE(e);
                const bool same = std::isnan(p) || std::isinf(p) || std::isnan(q) || std::isinf(q)
                                      ? (std::isnan(p) && std::isnan(q)) || p == q
                                      : std::fabs(p - q) <= 1e-9 * std::max(1.0, std::fabs(p));
                CHECK_MESSAGE(same, "CPU ", p, " vs CUDA ", q);
              }
            }
            ++checked;
          }
    }
    CHECK(checked > 50);
  }

  TEST_CASE("gradient graphs run the same in CPU and CUDA sessions" * doctest::skip(!has_gpu())) {
    int checked = 0;
    for (const OpDef* op : registered_ops()) {
      if (kNotFromExamples.count(op->name) || !op->examples || !op->grad) continue;
      for (const OpExample& ex : op->examples(37)) {
        if (!ex.check_grad) continue;
        CAPTURE(op->name);
        CAPTURE(ex.label);
        const std::vector<NDArray> cpu = run_gradient_graph(*op, ex, {.seed = 5});
        // Folding would compute constant subgraphs on the CPU: keep every node on the GPU.
        for (Executor e : {Executor::serial, Executor::parallel}) {
          CAPTURE(int(e));
          const std::vector<NDArray> gpu =
              run_gradient_graph(*op, ex, {.device = kGpu, .executor = e, .seed = 5, .constant_folding = false});
          REQUIRE(gpu.size() == cpu.size());
          for (size_t i = 0; i < cpu.size(); ++i) {
            const std::string m = mismatch(cpu[i], gpu[i], 1e-6);
            CHECK_MESSAGE(m.empty(), "fetch ", i, ": ", m);
          }
        }
        ++checked;
      }
    }
    CHECK(checked > 30);
  }

  TEST_CASE("Philox streams are the same on CPU and CUDA" * doctest::skip(!has_gpu())) {
    for (std::string name : {"random_uniform", "random_normal"})
      for (DType t : {float32, float64})
        for (uint64_t seed : {0ull, 12345ull})
          for (uint64_t run : {0ull, 7ull}) {
            CAPTURE(name);
            CAPTURE(dtype_name(t));
            CAPTURE(seed);
            CAPTURE(run);
            const OpDef& op = find_op(name);
            Attrs attrs{{"shape", Shape{37, 129}}, {"a", -0.5}, {"b", 2.0}, {"dtype", t}};
            InvokeOptions opt{.seed = seed, .run_counter = run, .node_key = 1000 + seed};
            NDArray cpu = run_eager(op, {}, attrs, Device::cpu(), opt)[0];
            NDArray gpu = run_eager(op, {}, attrs, kGpu, opt)[0].to(Device::cpu());
            if (name == "random_uniform") {
              CHECK(identical(cpu, gpu));  // the same integer words and the same rounding
            } else {
              // The device's log/sin/cos may differ from libm in the last ulp of the double: in float64 about
              // 1 value in 10 differs that way on an H200 (the same stream, at most 4 ulp apart); rounded to
              // float32 nearly all are the same bits.
              NDArray x = cpu.astype(float64), y = gpu.astype(float64);
              const double ulp = t == float32 ? 1.2e-7 : 4.5e-16;
              double worst = 0;
              int64_t equal = 0;
              for (int64_t i = 0; i < x.numel(); ++i) {
                const double p = x.data<double>()[i], q = y.data<double>()[i];
                worst = std::max(worst, std::fabs(p - q) / std::max(1.0, std::fabs(p)));
                equal += p == q;
              }
              CHECK(worst <= 4 * ulp);
              if (t == float32) CHECK(equal >= x.numel() * 99 / 100);
            }
          }
  }

  TEST_CASE("a session's random streams advance per run identically on both devices" * doctest::skip(!has_gpu())) {
    Graph g;
    Tensor u = random_uniform(g, {16, 9}, -1.0, 1.0);
    Tensor d = dropout(g.constant(test::rand({16, 9}, 3)), 0.5);
    Session cpu(g, {.seed = 9}), gpu(g, {.device = kGpu, .seed = 9});
    for (int run = 0; run < 3; ++run) {
      auto a = cpu.run({u, d}), b = gpu.run({u, d});
      CHECK(identical(a[0], b[0]));
      CHECK(identical(a[1], b[1]));
    }
  }

  TEST_CASE("device-side checks raise the CPU's errors" * doctest::skip(!has_gpu())) {
    NDArray table = test::rand({5, 3}, 1);
    struct Bad {
      const char* op;
      std::vector<NDArray> in;
      Attrs attrs;
    };
    const Attrs probabilities{{"low", 0.0}, {"high", 1.0}, {"expected", std::string("probabilities")}};
    const Attrs variances{
        {"low", 0.0}, {"high", INFINITY}, {"allow_nan", true}, {"expected", std::string("variances")}};
    std::vector<Bad> cases = {
        {"gather", {table, NDArray::from<int64_t>({1, 7, 0, 9})}, {}},
        {"gather", {table, NDArray::from<int32_t>({-1})}, {}},
        {"gather_grad", {test::rand({2, 3}, 2), NDArray::from<int32_t>({0, 5}), table}, {}},
        {"one_hot", {NDArray::from<uint8_t>({3, 4, 1})}, {{"depth", int64_t(4)}, {"dtype", float32}}},
        {"one_hot", {NDArray::from<int64_t>({-2})}, {{"depth", int64_t(4)}, {"dtype", boolean}}},
        {"div", {NDArray::from<int32_t>({4, 5, 6}), NDArray::from<int32_t>({1, 0, 2})}, {}},
        {"div", {NDArray::from<uint8_t>({4, 5}), NDArray::from<uint8_t>({0})}, {}},
        {"check_range", {NDArray::from<float>({0.5f, 1.5f, NAN, -1.0f})}, probabilities},
        {"check_range", {NDArray::from<double>({0.0, 1.0, -1e-300})}, probabilities},
        {"check_range", {NDArray::from<float>({0.5f, NAN, INFINITY, -1.0f})}, variances},
    };
    for (const Bad& b : cases) {
      CAPTURE(b.op);
      const std::string want = error_of([&] { invoke(b.op, b.in, b.attrs); });
      std::vector<NDArray> gin;
      for (const NDArray& a : b.in) gin.push_back(a.to(kGpu));
      const std::string got = error_of([&] { invoke(b.op, gin, b.attrs); });
      CHECK(!want.empty());
      CHECK(got == want);
    }
    // The device stays usable after a reported error.
    NDArray ok = invoke("gather", {table.to(kGpu), NDArray::from<int64_t>({4, 0}).to(kGpu)})[0];
    CHECK(identical(ok.to(Device::cpu()), invoke("gather", {table, NDArray::from<int64_t>({4, 0})})[0]));
  }

  // By dtype, two cases: under the emulator they take half a minute each, side by side in CI.
  TEST_CASE("reductions on large and strided inputs: float32, float64" * doctest::skip(!has_gpu())) {
    check_large_reductions({float32, float64});
  }

  TEST_CASE("reductions on large and strided inputs: int32, uint8; empty axes, ties and NaN" *
            doctest::skip(!has_gpu())) {
    using V = std::vector<int64_t>;
    check_large_reductions({int32, uint8});
    // An empty reduced axis: sums are 0, means NaN.
    for (Shape shape : {Shape{0, 5}, Shape{5, 0}}) {
      const Attrs attrs{{"axes", V{shape[0] == 0 ? 0 : 1}}, {"keepdims", false}};
      const NDArray x = NDArray::empty(shape, float32, kGpu);
      const NDArray s = invoke("sum", {x}, attrs)[0].to(Device::cpu()), m = invoke("mean", {x}, attrs)[0].to(Device::cpu());
      REQUIRE(s.numel() == 5);
      for (int64_t i = 0; i < 5; ++i) {
        CHECK(s.data<float>()[i] == 0.0f);
        CHECK(std::isnan(m.data<float>()[i]));
      }
    }
    // Ties and NaN: the first extreme element, the first NaN.
    NDArray ties = NDArray::from<float>({1, 3, 3, -2, 3, NAN, 0, NAN}, {2, 4});
    for (std::string op : {"argmax", "argmin"})
      for (Attrs a : {Attrs{}, Attrs{{"axis", int64_t(1)}}, Attrs{{"axis", int64_t(0)}}}) {
        CAPTURE(op);
        CHECK(identical(invoke(op, {ties}, a)[0], invoke(op, {ties.to(kGpu)}, a)[0].to(Device::cpu())));
      }
    // sum_to over the dims a broadcast added.
    NDArray g = test::rand({40, 7, 300}, 4);
    for (Shape to : {Shape{7, 300}, Shape{7, 1}, Shape{40, 1, 300}, Shape{1}}) {
      CAPTURE(shape_str(to));
      NDArray like = NDArray::empty(to);
      CHECK(mismatch(invoke("sum_to", {g, like})[0], invoke("sum_to", {on_gpu(g, 1), like.to(kGpu)})[0], 1e-12).empty());
    }
  }

  TEST_CASE("matmul over transposed, broadcast and irregular batches" * doctest::skip(!has_gpu())) {
    using View = std::function<NDArray(const NDArray&)>;
    const View same = [](const NDArray& x) { return x; };
    const View tr = [](const NDArray& x) { return x.transpose(); };
    struct Case {
      const char* label;
      Shape a, b;
      View va, vb;
    };
    const std::vector<Case> cases = {
        {"plain", {64, 48}, {48, 32}, same, same},
        {"a transposed", {48, 64}, {48, 32}, tr, same},
        {"b transposed", {64, 48}, {32, 48}, same, tr},
        {"both transposed", {48, 64}, {32, 48}, tr, tr},
        {"batched", {3, 20, 30}, {3, 30, 10}, same, same},
        {"batched, b transposed", {3, 20, 30}, {3, 10, 30}, same, tr},
        {"shared weight", {4, 5, 20, 30}, {30, 10}, same, same},
        {"shared weight, a transposed", {4, 5, 30, 20}, {30, 10}, tr, same},
        {"broadcast a", {5, 8}, {3, 8, 6}, same, same},
        {"irregular batch", {2, 1, 8, 9}, {1, 3, 9, 4}, same, same},
        {"permuted batch", {7, 3, 9}, {3, 9, 5}, [](const NDArray& x) { return x.permute({1, 0, 2}); }, same},
        {"flipped a", {16, 12}, {12, 5}, [](const NDArray& x) { return x.flip({0, 1}); }, same},
        {"strided columns", {6, 20}, {10, 4}, [](const NDArray& x) { return x.slice({Slice::all(), {0, 20, 2}}); }, same},
        {"row vector", {1, 30}, {30, 7}, same, same},
        {"column result", {9, 30}, {30, 1}, same, same},
        {"empty inner", {3, 0}, {0, 4}, same, same},
        {"empty batch", {0, 3, 4}, {4, 2}, same, same},
    };
    for (DType t : {float32, float64})
      for (const Case& k : cases) {
        CAPTURE(k.label);
        CAPTURE(dtype_name(t));
        const NDArray a = test::rand(k.a, 21, t), b = test::rand(k.b, 22, t);
        const NDArray cpu = invoke("matmul", {k.va(a), k.vb(b)})[0];
        const NDArray gpu = invoke("matmul", {k.va(a.to(kGpu)), k.vb(b.to(kGpu))})[0];
        const std::string m = mismatch(cpu, gpu, t == float32 ? 1e-10 : 1e-20);
        CHECK_MESSAGE(m.empty(), m);
      }
  }

  TEST_CASE("gather_grad is deterministic and adds in the CPU's order" * doctest::skip(!has_gpu())) {
    const int64_t rows = 50, width = 33, n = 5000;
    std::vector<int64_t> idx(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) idx[size_t(i)] = int64_t(philox::uniform_f64(3, 0, uint64_t(i)) * 7) * 7 % rows;
    const NDArray ix = NDArray::from(idx, {n}), dy = test::rand({n, width}, 8), like = NDArray::empty({rows, width});
    const NDArray cpu = invoke("gather_grad", {dy, ix, like})[0];
    const NDArray g1 = invoke("gather_grad", {dy.to(kGpu), ix.to(kGpu), like.to(kGpu)})[0].to(Device::cpu());
    const NDArray g2 = invoke("gather_grad", {dy.to(kGpu), ix.to(kGpu), like.to(kGpu)})[0].to(Device::cpu());
    CHECK(identical(g1, g2));
    CHECK(identical(g1, cpu));
    // gather of the same table, wide rows of every element size.
    for (DType t : {float64, int32, uint8, boolean}) {
      CAPTURE(dtype_name(t));
      const NDArray table = test::rand({rows, 3, 11}, 9, t, 0, 3);
      CHECK(identical(invoke("gather", {table, ix})[0], invoke("gather", {table.to(kGpu), ix.to(kGpu)})[0].to(Device::cpu())));
    }
  }

  TEST_CASE("copies convert every dtype pair over strided views" * doctest::skip(!has_gpu())) {
    const NDArray src = NDArray::from<double>({0, 1, -1, 2.5, -2.5, 300, -300, 1e10, -1e10, NAN, 0.25, 255}, {3, 4});
    for (DType from : kAllDTypes)
      for (DType to : kAllDTypes) {
        CAPTURE(dtype_name(from));
        CAPTURE(dtype_name(to));
        const NDArray x = src.astype(from);
        for (int layout = 0; layout < 3; ++layout) {
          CAPTURE(layout);
          CHECK(identical(on_gpu(x, layout).astype(to).to(Device::cpu()), x.astype(to)));
        }
        const Attrs attrs{{"dtype", to}};
        CHECK(identical(invoke("cast", {x.to(kGpu).transpose()}, attrs)[0].to(Device::cpu()),
                        invoke("cast", {x.transpose()}, attrs)[0]));
      }
    // More non-mergeable dims than a kernel resolves: the outer ones loop on the host.
    const NDArray big = test::rand(Shape(12, 2), 5);
    std::vector<int64_t> rev(12);
    for (int64_t i = 0; i < 12; ++i) rev[size_t(i)] = 11 - i;
    CHECK(identical(big.to(kGpu).permute(rev).compact().to(Device::cpu()), big.permute(rev).compact()));
    // Set-item into a strided device view, broadcasting a row.
    NDArray dst = NDArray::zeros({4, 6}, float32, kGpu), host = NDArray::zeros({4, 6});
    const NDArray row = NDArray::from<float>({1, 2, 3});
    dst.slice({{1, 4, 2}, {0, 6, 2}}).assign(row);
    host.slice({{1, 4, 2}, {0, 6, 2}}).assign(row);
    CHECK(identical(dst.to(Device::cpu()), host));
    // A view overlapping its own source reads everything before writing.
    const NDArray sq = test::rand({5, 5}, 6);
    NDArray gsq = sq.to(kGpu);
    gsq.assign(gsq.transpose());
    CHECK(identical(gsq.to(Device::cpu()), sq.transpose().compact()));
    NDArray filled = NDArray::full({3, 5}, 2.75, float64, kGpu);
    CHECK(identical(filled.to(Device::cpu()), NDArray::full({3, 5}, 2.75, float64)));
  }

  TEST_CASE("fused programs of any length and with several outputs" * doctest::skip(!has_gpu())) {
    const int64_t none = -1000000;
    for (int length : {3, 40}) {
      CAPTURE(length);
      // t0 = x + y; t(k) = t(k-1) * y or + x alternately; outputs: the last, t(1) and (t(2) > x).
      std::string ops = "add";
      std::vector<int64_t> args = {0, 1, none}, bools = {0};
      for (int k = 1; k < length; ++k) {
        ops += k % 2 ? ";mul" : ";add";
        args.insert(args.end(), {-k, k % 2 ? 1 : 0, none});
        bools.push_back(0);
      }
      ops += ";gt;where";
      args.insert(args.end(), {-3, 0, none, -(length + 1), -int64_t(length), 1});
      bools.insert(bools.end(), {1, 0});
      const Attrs attrs{{"ops", ops}, {"args", args}, {"bools", bools}, {"outs", std::vector<int64_t>{1, length}}};
      const NDArray x = test::rand({4, 5}, 51, float32, 0.5, 1.0), y = test::rand({5}, 52, float32, 0.5, 1.0);
      const std::vector<NDArray> cpu = invoke("fused", {x, y}, attrs);
      const std::vector<NDArray> gpu = invoke("fused", {on_gpu(x, 1), y.to(kGpu)}, attrs);
      REQUIRE(cpu.size() == 3);
      REQUIRE(gpu.size() == 3);
      for (size_t i = 0; i < 3; ++i) CHECK(mismatch(cpu[i], gpu[i], 1e-12).empty());
    }
  }

  TEST_CASE("CUDA plans fuse like CPU plans: same groups, same steps, same results" * doctest::skip(!has_gpu())) {
    Graph g;
    Tensor x = g.placeholder("x", {64, 33});
    Tensor b = g.placeholder("b", {33});
    Tensor y = relu(x * 2.0 + b);
    Tensor z = where(y > 0.5, exp(-y), y * 0.25);
    Tensor w = gelu(y, "tanh") * softplus(z) - transpose(gelu(transpose(x)) + erf(transpose(x)));
    const std::vector<Tensor> fetches{y, z, w};
    Feeds f{{x, test::rand({64, 33}, 1)}, {b, test::rand({33}, 2)}};
    Session cpu(g), gpu(g, {.device = kGpu});
    auto a = cpu.run(fetches, f), d = gpu.run(fetches, f);
    const PlanStats pc = cpu.stats().last_plan, pg = gpu.stats().last_plan;
    CHECK(pc.fused >= 8);
    CHECK(pg.fused == pc.fused);
    CHECK(pg.steps == pc.steps);
    CHECK(pg.nodes_after_passes == pc.nodes_after_passes);
    for (size_t i = 0; i < a.size(); ++i) CHECK(mismatch(a[i], d[i], 1e-5).empty());
    // And the fused CUDA plan computes what the unfused one does, bit for bit.
    Session plain(g, {.device = kGpu, .fusion = false});
    auto u = plain.run(fetches, f);
    for (size_t i = 0; i < a.size(); ++i) CHECK(identical(d[i], u[i]));
  }

  TEST_CASE("an op without a CUDA kernel runs on the host inside a CUDA session" * doctest::skip(!has_gpu())) {
    Graph g;
    Tensor x = g.placeholder("x", {4, 6});
    // A strided input (transpose) and device work on both sides of the host node.
    Tensor y = exp(g.add(kHostOnly, {transpose(x * 0.5)})[0]) + 1.0;
    const NDArray xs = test::rand({4, 6}, 41);
    Session cpu(g), gpu(g, {.device = kGpu});
    const NDArray a = cpu.run({y}, {{x, xs}})[0], b = gpu.run({y}, {{x, xs}})[0];
    CHECK(mismatch(a, b, 1e-12).empty());
    CHECK(gpu.stats().last_plan.host_copies == 1);
    CHECK(cpu.stats().last_plan.host_copies == 0);
    CHECK(b.shape() == Shape{6, 4});
  }

  TEST_CASE("a session reports a bad index or label when the run next waits for the GPU, before any update" *
            doctest::skip(!has_gpu())) {
    // The GPU checks indices and labels behind its kernels (kernels/cuda/device_check.cu); the session
    // verifies the checks before the run's first update, or at its end: the CPU session's error, and the
    // variable as it was.
    Graph g;
    Tensor idx = g.placeholder("idx", {4}, int64);
    Tensor lab = g.placeholder("labels", {4}, int64);
    Tensor emb = g.variable("emb", {6, 3}, [](const NDArray& v, uint64_t) { v.fill(0.0); });
    Tensor rows = gather(emb, idx);
    Tensor loss = softmax_cross_entropy(rows, lab);
    Tensor step = assign_sub(emb, gradients(loss, {emb})[0] * 0.5);
    const NDArray e0 = test::rand({6, 3}, 8);
    const NDArray good_idx = NDArray::from<int64_t>({0, 5, 2, 5}, {4}),
                  good_lab = NDArray::from<int64_t>({1, 0, 2, 2}, {4});
    const NDArray bad_idx = NDArray::from<int64_t>({0, 6, 2, -1}, {4}),
                  bad_lab = NDArray::from<int64_t>({1, 0, 3, 2}, {4});
    for (Executor e : {Executor::serial, Executor::parallel}) {
      CAPTURE(int(e));
      Session cpu(g, {.executor = e}), gpu(g, {.device = kGpu, .executor = e});
      cpu.set(emb, e0);
      gpu.set(emb, e0);
      for (const auto& [i, l] :
           {std::pair{bad_idx, good_lab}, std::pair{good_idx, bad_lab}, std::pair{bad_idx, bad_lab}}) {
        const Feeds feeds = {{idx, i}, {lab, l}};
        for (bool update : {true, false}) {
          CAPTURE(update);
          const std::vector<Tensor> targets = update ? std::vector<Tensor>{step} : std::vector<Tensor>{};
          const std::string want = error_of([&] { cpu.run({loss}, feeds, targets); });
          const std::string got = error_of([&] { gpu.run({loss}, feeds, targets); });
          CHECK(!want.empty());
          CHECK(got == want);
          CHECK(identical(gpu.get(emb), e0));
        }
      }
      // The session goes on: good steps match the CPU's.
      for (int it = 0; it < 3; ++it) {
        const Feeds feeds = {{idx, good_idx}, {lab, good_lab}};
        const double lc = cpu.run({loss}, feeds, {step})[0].item(), lg = gpu.run({loss}, feeds, {step})[0].item();
        CHECK(std::fabs(lc - lg) <= 1e-5 * std::max(1.0, std::fabs(lc)));
      }
      CHECK(mismatch(cpu.get(emb), gpu.get(emb), 1e-10).empty());
    }
  }

  TEST_CASE("a training step gives the same losses and weights on CPU and CUDA" * doctest::skip(!has_gpu())) {
    auto init = [](double scale) {
      return [scale](const NDArray& v, uint64_t seed) {
        NDArray r = test::rand(v.shape(), seed, v.dtype(), -scale, scale);
        v.assign(r);
      };
    };
    Graph g;
    Tensor x = g.placeholder("x", {-1, 20});
    Tensor y = g.placeholder("y", {-1}, int64);
    Tensor w1 = g.variable("w1", {20, 32}, init(0.3)), b1 = g.variable("b1", {32}, init(0.1));
    Tensor w2 = g.variable("w2", {32, 5}, init(0.3)), b2 = g.variable("b2", {5}, init(0.1));
    Tensor h = relu(matmul(x, w1) + b1);
    Tensor loss = softmax_cross_entropy(matmul(h, w2) + b2, y);
    std::vector<Tensor> params = {w1, b1, w2, b2};
    std::vector<Tensor> grads = gradients(loss, params);
    std::vector<Tensor> updates;
    for (size_t i = 0; i < params.size(); ++i) updates.push_back(assign_sub(params[i], grads[i] * 0.1));
    Tensor step = group(updates);
    const NDArray xs = test::rand({64, 20}, 30);
    std::vector<int64_t> labels(64);
    for (int64_t i = 0; i < 64; ++i) labels[size_t(i)] = i % 5;
    const NDArray ys = NDArray::from(labels, {64});
    for (Executor e : {Executor::serial, Executor::parallel}) {
      CAPTURE(int(e));
      Session cpu(g, {.executor = e, .seed = 3}), gpu(g, {.device = kGpu, .executor = e, .seed = 3});
      for (int it = 0; it < 4; ++it) {
        double lc = cpu.run({loss}, {{x, xs}, {y, ys}}, {step})[0].item();
        double lg = gpu.run({loss}, {{x, xs}, {y, ys}}, {step})[0].item();
        CHECK(std::fabs(lc - lg) <= 1e-5 * std::max(1.0, std::fabs(lc)));
      }
      for (const Tensor& p : params) CHECK(mismatch(cpu.get(p), gpu.get(p), 1e-10).empty());
    }
  }
}
