// bench_kernels: CPU kernel throughput on this machine, next to its peers:
//  - matmul GFLOP/s (float32, 256..2048) vs one direct OpenBLAS call using
//    all threads;
//  - nn::Linear's GEMMs with the weight in PyTorch's layout [out, in] vs [in, out];
//  - a GEMM with bias and ReLU after it, run as the GEMM's epilogue vs as a
//    fused node of its own (a session with the epilogue pass off);
//  - element-wise add, unary exp and reductions in GB/s (bytes read +
//    written) vs memcpy of the same bytes, at sizes far above the L2 cache;
//  - conv2d and its gradients, layer_norm and sparse_softmax_cross_entropy
//    forward and backward, next to PyTorch's same ops
//    (samples/bench_conv_torch.py, bench_norm_torch.py, bench_loss_torch.py);
//  - nn::interpolate by 2 and its gradient next to F.interpolate's
//    (samples/bench_interp_torch.py).
// Each figure is the median of --reps timed runs after a warm-up.

#include <cblas.h>

#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>
#include <algorithm>
#include <array>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>
#include <tuple>
#include <vector>

#include "core/kernel.hpp"
#include "core/philox.hpp"
#include "frontend/loom.hpp"
#include "ops/ops.hpp"
#include "samples/peers.hpp"

namespace po = boost::program_options;
using namespace loom;

namespace {

double median_seconds(int reps, const std::function<void()>& f) {
  f();  // warm-up: page faults, BLAS buffers
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

NDArray filled(const Shape& s, uint64_t seed) {
  NDArray a = NDArray::empty(s, float32);
  float* p = a.data<float>();
  for (int64_t i = 0; i < a.numel(); ++i) p[i] = philox::uniform_f32(seed, 0, uint64_t(i)) - 0.5f;
  return a;
}

/// Runs the registered CPU kernel of `op` on preallocated arrays.
struct KernelRun {
  const KernelInfo* k;
  std::vector<NDArray> in, out;
  Attrs attrs;
  std::string op;
  void operator()() const {
    KernelContext ctx{};
    KernelCall call{ctx, in, out, attrs, op, op};
    k->fn(call);
  }
};

KernelRun kernel(const std::string& op, std::vector<NDArray> in, NDArray out, Attrs attrs = {}) {
  const KernelInfo* k = find_kernel(op, DeviceKind::cpu, out.dtype());
  if (!k) fail("bench_kernels: no kernel ", op);
  return {k, std::move(in), {std::move(out)}, std::move(attrs), op};
}

/// Medians of a and b timed alternately (a, b, a, b, ...), so both see the same machine.
std::pair<double, double> alternating_medians(int reps, const std::function<void()>& a, const std::function<void()>& b) {
  a(), b();  // warm-up
  std::vector<double> ta, tb;
  for (int i = 0; i < reps; ++i)
    for (int k = 0; k < 2; ++k) {
      auto t0 = std::chrono::steady_clock::now();
      (k ? b : a)();
      (k ? tb : ta).push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  std::sort(ta.begin(), ta.end());
  std::sort(tb.begin(), tb.end());
  return {ta[ta.size() / 2], tb[tb.size() / 2]};
}

/// nn::Linear keeps PyTorch's weight layout [out, in] and multiplies by its
/// transpose, a strided view that OpenBLAS reads through its transpose flag.
/// Its three GEMMs (forward, input gradient, weight gradient) against the
/// same GEMMs with a weight stored [in, out], on train_mnist's layer shapes.
void linear_layouts(tbb::task_arena& arena, int reps) {
  std::printf("\nnn::Linear GEMMs, weight [out, in] (PyTorch's) vs [in, out]: ms (median, alternating), ratio\n");
  std::printf("  %-22s %-28s %9s %9s %7s\n", "layer (batch x in x out)", "GEMM", "[out,in]", "[in,out]", "ratio");
  struct Layer {
    int64_t batch, in, out;
  };
  for (Layer l : {Layer{128, 784, 512}, Layer{128, 512, 10}, Layer{100, 784, 100}, Layer{100, 100, 50}}) {
    NDArray x = filled({l.batch, l.in}, 5), dy = filled({l.batch, l.out}, 6);
    NDArray w_oi = filled({l.out, l.in}, 7), w_io = w_oi.transpose().compact();
    NDArray y = NDArray::empty({l.batch, l.out}), dx = NDArray::empty({l.batch, l.in});
    NDArray dw_oi = NDArray::empty({l.out, l.in}), dw_io = NDArray::empty({l.in, l.out});
    struct Case {
      const char* name;
      KernelRun pytorch, loom01;
    } cases[] = {
        {"forward x W^T | x W", kernel("matmul", {x, w_oi.transpose()}, y), kernel("matmul", {x, w_io}, y)},
        {"input grad dy W | dy W^T", kernel("matmul", {dy, w_oi}, dx), kernel("matmul", {dy, w_io.transpose()}, dx)},
        {"weight grad dy^T x | x^T dy", kernel("matmul", {dy.transpose(), x}, dw_oi),
         kernel("matmul", {x.transpose(), dy}, dw_io)},
    };
    const std::string label = std::to_string(l.batch) + "x" + std::to_string(l.in) + "x" + std::to_string(l.out);
    for (const Case& c : cases) {
      auto [ta, tb] = arena.execute([&] { return alternating_medians(4 * reps, c.pytorch, c.loom01); });
      std::printf("  %-22s %-28s %9.4f %9.4f %7.3f\n", label.c_str(), c.name, ta * 1e3, tb * 1e3, ta / tb);
    }
  }
}

/// relu(x w + b) as a session runs it, with the bias and ReLU as the GEMM's
/// epilogue and (epilogue pass off) as a fused node after the GEMM.
void epilogue_rows(int threads, int reps) {
  std::printf("\nrelu(x w + b), %d threads: ms (median, alternating), the epilogue pass on and off\n", threads);
  std::printf("  %-20s %9s %9s %7s\n", "m x k x n", "on", "off", "on/off");
  for (auto [m, k, n] : {std::array<int64_t, 3>{128, 784, 512}, {4000, 40, 300}, {4096, 256, 1024}, {2048, 256, 4096}}) {
    Graph g;
    Tensor x = g.placeholder("x", {m, k});
    Tensor w = g.variable("w", {k, n}, init::normal(0, 0.05)), b = g.variable("b", {n}, init::normal(0, 0.05));
    Tensor y = sum(relu(matmul(x, w) + b));
    const Feeds feeds{{x, filled({m, k}, 8)}};
    Session on(g, {.threads = threads}), off(g, {.threads = threads, .disable_passes = {"epilogue"}});
    on.initialize(), off.initialize();
    auto [t_on, t_off] = alternating_medians(4 * reps, [&] { on.run({y}, feeds); }, [&] { off.run({y}, feeds); });
    const std::string label = std::to_string(m) + "x" + std::to_string(k) + "x" + std::to_string(n);
    std::printf("  %-20s %9.3f %9.3f %7.3f\n", label.c_str(), t_on * 1e3, t_off * 1e3, t_on / t_off);
  }
}

void matmul_rows(tbb::task_arena& arena, int threads, int reps) {
  std::printf("matmul float32     loom GFLOP/s   OpenBLAS GFLOP/s   loom/BLAS\n");
  for (int64_t n : {256, 512, 1024, 2048}) {
    NDArray a = filled({n, n}, 1), b = filled({n, n}, 2), c = NDArray::empty({n, n});
    KernelRun mm = kernel("matmul", {a, b}, c);
    double flops = 2.0 * double(n) * double(n) * double(n);
    int r = n >= 2048 ? std::max(3, reps / 2) : reps;
    double tl = arena.execute([&] { return median_seconds(r, [&] { mm(); }); });
    openblas_set_num_threads(threads);
    double tb = median_seconds(r, [&] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(n), int(n), int(n), 1.0f, a.data<float>(), int(n),
                  b.data<float>(), int(n), 0.0f, c.data<float>(), int(n));
    });
    openblas_set_num_threads(1);
    std::printf("  %4lld^3         %10.1f   %16.1f   %9.2f\n", (long long)n, flops / tl / 1e9, flops / tb / 1e9, tb / tl);
  }

}

void bandwidth_rows(tbb::task_arena& arena, int threads, int reps, int64_t mb) {
  const int64_t n = mb * (1 << 20) / 4;
  NDArray x = filled({n}, 3), y = filled({n}, 4), z = NDArray::empty({n});
  std::vector<char> src(size_t(n) * 4), dst(size_t(n) * 4);
  std::memset(src.data(), 1, src.size());
  auto memcpy_gbs = [&](size_t bytes) {
    double t = median_seconds(reps, [&] { std::memcpy(dst.data(), src.data(), bytes); });
    return 2.0 * double(bytes) / t / 1e9;  // read + write
  };
  auto memcpy_par_gbs = [&](size_t bytes) {
    double t = arena.execute([&] {
      return median_seconds(reps, [&] {
        tbb::parallel_for(tbb::blocked_range<size_t>(0, bytes, 1 << 20), [&](const tbb::blocked_range<size_t>& r) {
          std::memcpy(dst.data() + r.begin(), src.data() + r.begin(), r.size());
        });
      });
    });
    return 2.0 * double(bytes) / t / 1e9;
  };
  const double mc = memcpy_gbs(size_t(n) * 4), mcp = memcpy_par_gbs(size_t(n) * 4);
  std::printf("\nbandwidth (%lld MiB operands)   loom GB/s   memcpy GB/s (1 thread)   loom/memcpy   memcpy GB/s (%d threads)\n",
              (long long)mb, threads);
  auto row = [&](const char* name, const KernelRun& k, double bytes) {
    double t = arena.execute([&] { return median_seconds(reps, [&] { k(); }); });
    double gbs = bytes / t / 1e9;
    std::printf("  %-28s %9.1f   %22.1f   %11.2f   %21.1f\n", name, gbs, mc, gbs / mc, mcp);
  };
  const double b4 = double(n) * 4;
  row("add (2 reads, 1 write)", kernel("add", {x, y}, z), 3 * b4);
  row("mul by scalar", kernel("mul", {x, NDArray::scalar(2)}, z), 2 * b4);
  row("exp", kernel("exp", {x}, z), 2 * b4);
  row("relu", kernel("relu", {x}, z), 2 * b4);
  using V = std::vector<int64_t>;
  row("sum, all axes", kernel("sum", {x}, NDArray::empty({}), {{"axes", V{}}, {"keepdims", false}}), b4);
  NDArray m = x.view({n / 1024, 1024});
  row("sum, axis 1 of [n/1024,1024]", kernel("sum", {m}, NDArray::empty({n / 1024}), {{"axes", V{1}}, {"keepdims", false}}), b4);
  row("sum, axis 0 of [n/1024,1024]", kernel("sum", {m}, NDArray::empty({1024}), {{"axes", V{0}}, {"keepdims", false}}), b4);
  row("max, all axes", kernel("max", {x}, NDArray::empty({}), {{"axes", V{}}, {"keepdims", false}}), b4);
}

// ---------------------------------------------------------------- convolution

/// A conv layer at batch 128 (square input and kernel, symmetric padding).
struct ConvShape {
  std::string name;
  int64_t c, h, k, r, stride, pad;
  int64_t out() const { return (h + 2 * pad - r) / stride + 1; }
  double flops() const { return 2.0 * 128 * double(k * c * r * r) * double(out() * out()); }
};

std::vector<ConvShape> conv_shapes() {
  return {{"cnn conv1", 1, 28, 32, 3, 1, 1},       {"cnn conv2", 32, 14, 64, 3, 1, 1},
          {"resnet9 conv1", 1, 28, 16, 7, 4, 3},   {"resnet9 conv2", 16, 7, 32, 3, 2, 1},
          {"resnet9 res1", 32, 4, 32, 3, 1, 1},    {"resnet9 conv3", 32, 4, 64, 3, 2, 1},
          {"resnet9 conv4", 64, 2, 128, 3, 2, 1},  {"resnet9 res2", 128, 1, 128, 3, 1, 1}};
}

/// The registered CPU kernel of an op on preallocated arrays, with its
/// workspace and prepared state, as a plan binds it.
struct BoundRun {
  KernelRun run;
  std::shared_ptr<Buffer> workspace;
  std::shared_ptr<const void> state;
  KernelCall call(const KernelContext& ctx) const {
    KernelCall c{ctx, run.in, run.out, run.attrs, run.op, run.op, 0, state.get()};
    if (workspace) c.workspace = workspace->data(), c.workspace_bytes = workspace->bytes();
    return c;
  }
  void operator()() const {
    KernelContext ctx{};
    run.k->fn(call(ctx));
  }
};

BoundRun bound_run(const std::string& op, std::vector<NDArray> in, NDArray out, const Attrs& attrs) {
  BoundRun r{kernel(op, std::move(in), std::move(out), attrs), nullptr, nullptr};
  KernelContext ctx{};
  r.workspace = allocate_workspace(*r.run.k, r.call(ctx));  // sized for the calling arena's threads
  if (r.run.k->prepare) r.state = r.run.k->prepare(r.call(ctx));
  return r;
}

/// PyTorch's median seconds per (name, pass) from a peer script of samples/ that prints one JSON
/// object per line ({"name", "pass", "seconds"}), given the shapes as JSON.
using PeerSeconds = std::map<std::pair<std::string, std::string>, double>;
PeerSeconds torch_seconds(const std::string& python, const std::string& script, int threads, int reps,
                          const nlohmann::json& shapes) {
  std::string cmd = samples::peer_shell(python) + " " + std::string(LOOM_SAMPLES_DIR) + "/" + script + " --threads " +
                    std::to_string(threads) + " --reps " + std::to_string(reps) + " --shapes '" + shapes.dump() + "'";
  PeerSeconds out;
  FILE* f = ::popen(cmd.c_str(), "r");
  if (!f) return out;
  char line[4096];
  while (std::fgets(line, sizeof line, f)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("seconds")) out[{j["name"], j["pass"]}] = j["seconds"].get<double>();
  }
  ::pclose(f);
  return out;
}

/// PyTorch's conv seconds per (shape, pass), from samples/bench_conv_torch.py.
PeerSeconds torch_conv_seconds(const std::string& python, int threads, int reps) {
  nlohmann::json shapes = nlohmann::json::array();
  for (const ConvShape& s : conv_shapes())
    shapes.push_back({{"name", s.name}, {"n", 128}, {"c", s.c}, {"h", s.h}, {"w", s.h}, {"k", s.k}, {"r", s.r},
                      {"s", s.r}, {"stride", s.stride}, {"pad", s.pad}});
  return torch_seconds(python, "bench_conv_torch.py", threads, reps, shapes);
}

void conv_rows(tbb::task_arena& arena, int threads, int reps, const std::string& python) {
  std::printf("\nconv2d float32, batch 128    (GFLOP/s; FLOPs as 2*N*K*C*R*S*OH*OW, also where padding makes taps idle;\n"
              "  PyTorch: the faster of 1 and %d threads per row)\n", threads);
  std::printf("  %-16s %-16s %10s %10s %10s\n", "layer", "pass", "loom", "PyTorch", "loom/PT");
  PeerSeconds torch;
  for (int t : threads > 1 ? std::vector<int>{1, threads} : std::vector<int>{1})
    for (const auto& [key, sec] : python.empty() ? decltype(torch){} : torch_conv_seconds(python, t, reps))
      torch[key] = torch.count(key) ? std::min(torch[key], sec) : sec;
  for (const ConvShape& s : conv_shapes()) {
    const int64_t o = s.out();
    NDArray x = filled({128, s.c, s.h, s.h}, 5), w = filled({s.k, s.c, s.r, s.r}, 6), dy = filled({128, s.k, o, o}, 7);
    const Attrs a = conv2d_attrs({.stride = {s.stride}, .padding = {s.pad}});
    arena.execute([&] {
      const std::pair<const char*, BoundRun> passes[] = {
          {"forward", bound_run("conv2d", {x, w}, NDArray::empty(dy.shape()), a)},
          {"backward_data", bound_run("conv2d_backward_data", {dy, w, x}, NDArray::empty(x.shape()), a)},
          {"backward_filter", bound_run("conv2d_backward_filter", {x, dy, w}, NDArray::empty(w.shape()), a)}};
      for (const auto& [pass, run] : passes) {
        const double tl = median_seconds(reps, [&] { run(); });
        auto it = torch.find({s.name, pass});
        const double tt = it == torch.end() ? NAN : it->second;
        std::printf("  %-16s %-16s %10.1f %10.1f %10.2f\n", s.name.c_str(), pass, s.flops() / tl / 1e9,
                    s.flops() / tt / 1e9, tt / tl);
      }
    });
  }
  if (!python.empty() && torch.empty()) std::printf("  (PyTorch not found with '%s': see --python)\n", python.c_str());
}

/// Times a forward and a backward kernel and prints a row for each: microseconds, GB/s of the given
/// bytes, PyTorch's microseconds for (name, pass) and the ratio.
void pass_rows(const std::string& name, const BoundRun& fwd, const BoundRun& bwd, double fwd_bytes, double bwd_bytes,
               const PeerSeconds& torch, int reps) {
  const std::tuple<const char*, const BoundRun*, double> passes[] = {{"forward", &fwd, fwd_bytes},
                                                                     {"backward", &bwd, bwd_bytes}};
  for (const auto& [pass, run, bytes] : passes) {
    const double tl = median_seconds(reps, [&] { (*run)(); });
    auto it = torch.find({name, pass});
    const double tt = it == torch.end() ? NAN : it->second;
    std::printf("  %-12s %-9s %10.1f %10.1f %10.1f %10.2f\n", name.c_str(), pass, tl * 1e6, bytes / tl / 1e9, tt * 1e6,
                tl / tt);
  }
}

// ---------------------------------------------------------------- layer norm

/// layer_norm forward and backward (with weight and bias) in GB/s of the arrays read and written,
/// next to PyTorch's native_layer_norm and native_layer_norm_backward on the same rows.
void norm_rows(tbb::task_arena& arena, int threads, int reps, const std::string& python) {
  const std::vector<std::array<int64_t, 2>> shapes = {{512, 128}, {4096, 256}, {4096, 1024}, {16384, 64}};
  nlohmann::json js = nlohmann::json::array();
  for (auto [r, d] : shapes) js.push_back({{"name", std::to_string(r) + "x" + std::to_string(d)}, {"rows", r}, {"cols", d}});
  // PyTorch's native_layer_norm and its backward (samples/bench_norm_torch.py).
  const PeerSeconds torch = python.empty() ? PeerSeconds{} : torch_seconds(python, "bench_norm_torch.py", threads, reps, js);
  std::printf("\nlayer_norm float32, %d threads   (GB/s of the arrays read and written: forward x, y; backward x, dy, dx)\n",
              threads);
  std::printf("  %-12s %-9s %10s %10s %10s %10s\n", "rows x cols", "pass", "loom us", "loom GB/s", "PyTorch us",
              "loom/PT");
  for (auto [r, d] : shapes) {
    const std::string name = std::to_string(r) + "x" + std::to_string(d);
    NDArray x = filled({r, d}, 5), w = filled({d}, 6), b = filled({d}, 7), dy = filled({r, d}, 8);
    NDArray y = NDArray::empty({r, d}), mean = NDArray::empty({r}), rstd = NDArray::empty({r});
    const Attrs a{{"dims", int64_t(1)}, {"eps", 1e-5}};
    arena.execute([&] {
      BoundRun fwd = bound_run("layer_norm", {x, w, b}, y, a);
      fwd.run.out.insert(fwd.run.out.end(), {mean, rstd});
      fwd();  // mean and rstd for the backward
      BoundRun bwd = bound_run("layer_norm_grad", {x, dy, mean, rstd, w}, NDArray::empty({r, d}), a);
      bwd.run.out.insert(bwd.run.out.end(), {NDArray::empty({d}), NDArray::empty({d})});
      pass_rows(name, fwd, bwd, double(r * d) * 4 * 2, double(r * d) * 4 * 3, torch, reps);
    });
  }
  if (!python.empty() && torch.empty()) std::printf("  (PyTorch not found with '%s': see --python)\n", python.c_str());
}

// ---------------------------------------------------------------- cross-entropy

/// sparse_softmax_cross_entropy forward and backward in GB/s of the [N, C] arrays read and written,
/// next to PyTorch's cross_entropy as its eager kernels run it (log_softmax and nll_loss, and their
/// backwards), on the same rows.
void loss_rows(tbb::task_arena& arena, int threads, int reps, const std::string& python) {
  // A language model's output (train_lm's LSTM and Transformer), an ImageNet-sized and an MNIST batch.
  const std::vector<std::array<int64_t, 2>> shapes = {{700, 11235}, {4096, 11235}, {8192, 1000}, {128, 10}};
  nlohmann::json js = nlohmann::json::array();
  for (auto [n, c] : shapes)
    js.push_back({{"name", std::to_string(n) + "x" + std::to_string(c)}, {"rows", n}, {"cols", c}});
  const PeerSeconds torch =
      python.empty() ? PeerSeconds{} : torch_seconds(python, "bench_loss_torch.py", threads, reps, js);
  std::printf(
      "\nsparse_softmax_cross_entropy float32, %d threads   (GB/s of the [N, C] arrays: forward reads the logits;\n"
      "  backward reads them and writes dlogits)\n",
      threads);
  std::printf("  %-12s %-9s %10s %10s %10s %10s\n", "N x C", "pass", "loom us", "loom GB/s", "PyTorch us", "loom/PT");
  for (auto [n, c] : shapes) {
    const std::string name = std::to_string(n) + "x" + std::to_string(c);
    NDArray x = filled({n, c}, 5), labels = NDArray::empty({n}, int64), dloss = filled({n}, 6);
    for (int64_t i = 0; i < n; ++i) labels.data<int64_t>()[i] = (i * 7919) % c;
    NDArray lse = NDArray::empty({n});
    arena.execute([&] {
      BoundRun fwd = bound_run("sparse_softmax_cross_entropy", {x, labels}, NDArray::empty({n}), {});
      fwd.run.out.push_back(lse);
      fwd();  // lse for the backward
      BoundRun bwd =
          bound_run("sparse_softmax_cross_entropy_grad", {x, labels, lse, dloss}, NDArray::empty({n, c}), {});
      pass_rows(name, fwd, bwd, double(n * c) * 4, double(n * c) * 4 * 2, torch, reps);
    });
  }
  if (!python.empty() && torch.empty()) std::printf("  (PyTorch not found with '%s': see --python)\n", python.c_str());
}

// ---------------------------------------------------------------- interpolation

/// nn::interpolate by 2 (bilinear, bicubic, nearest-exact) on [16, 64, 32, 32], forward and its
/// gradient (dy given), each one session run; PyTorch's F.interpolate and its aten backward on the same.
void interp_rows(int threads, int reps, const std::string& python) {
  const std::vector<std::pair<std::string, nn::InterpolationMode>> modes = {
      {"bilinear", nn::InterpolationMode::bilinear},
      {"bicubic", nn::InterpolationMode::bicubic},
      {"nearest-exact", nn::InterpolationMode::nearest_exact}};
  const Shape in{16, 64, 32, 32}, out{16, 64, 64, 64};
  PeerSeconds loom_seconds;  // timed before PyTorch's process runs, which leaves the first rows slower
  nlohmann::json js = nlohmann::json::array();
  for (const auto& [name, mode] : modes) {
    js.push_back({{"name", name}, {"shape", in}});
    Graph g;
    const Tensor x = g.placeholder("x", in), dy = g.placeholder("dy", out);
    const Tensor y = nn::interpolate(x, {.scale_factor = {2.0}, .mode = mode});
    const Tensor dx = gradients(y, {x}, dy)[0];
    Session s(g, {.threads = threads});
    const NDArray xv = filled(in, 5), dyv = filled(out, 6);
    loom_seconds[{name, "forward"}] = median_seconds(reps, [&] { s.run({y}, {{x, xv}}); });
    loom_seconds[{name, "backward"}] = median_seconds(reps, [&] { s.run({dx}, {{x, xv}, {dy, dyv}}); });
  }
  const PeerSeconds torch =
      python.empty() ? PeerSeconds{} : torch_seconds(python, "bench_interp_torch.py", threads, reps, js);
  std::printf(
      "\ninterpolate by 2, [16, 64, 32, 32] float32, %d threads   (a session run each; GB/s of x and y:\n"
      "  forward reads x, writes y; backward reads dy, writes dx)\n",
      threads);
  std::printf("  %-13s %-9s %10s %10s %10s %10s\n", "mode", "pass", "loom us", "loom GB/s", "PyTorch us", "loom/PT");
  const double bytes = double(numel(in) + numel(out)) * 4;
  for (const auto& [key, tl] : loom_seconds) {
    auto it = torch.find(key);
    const double tt = it == torch.end() ? NAN : it->second;
    std::printf("  %-13s %-9s %10.1f %10.1f %10.1f %10.2f\n", key.first.c_str(), key.second.c_str(), tl * 1e6,
                bytes / tl / 1e9, tt * 1e6, tl / tt);
  }
  if (!python.empty() && torch.empty()) std::printf("  (PyTorch not found with '%s': see --python)\n", python.c_str());
}

}  // namespace

int main(int argc, char** argv) try {
  int threads = int(std::max(1u, std::thread::hardware_concurrency()));
  int reps = 7;
  int64_t mb = 64;
  std::string sections = "matmul,linear,epilogue,bandwidth,conv,norm,loss,interpolate", python = samples::peer_python();
  bool no_torch = false;
  po::options_description desc("bench_kernels: CPU kernel throughput vs OpenBLAS and memcpy");
  desc.add_options()("help,h", "show this help")("threads", po::value(&threads)->default_value(threads),
                                                 "threads for loom and OpenBLAS")(
      "reps", po::value(&reps)->default_value(reps), "timed repetitions (median reported)")(
      "mb", po::value(&mb)->default_value(mb), "MiB per operand for the bandwidth tests")(
      "sections", po::value(&sections)->default_value(sections),
      "comma list of matmul, linear, epilogue, bandwidth, conv, norm, loss, interpolate")(
      "python", po::value(&python)->default_value(python),
      "Python with PyTorch (the conv, norm, loss and interpolate rows' peer)")(
      "no-torch", po::bool_switch(&no_torch), "conv, norm, loss and interpolate rows without PyTorch's");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_kernels: %s\n", e.what());
    return 2;
  }
  if (vm.count("help")) {
    std::printf("%s", (std::ostringstream() << desc).str().c_str());
    return 0;
  }
  const std::string known = ",matmul,linear,epilogue,bandwidth,conv,norm,loss,interpolate,";
  std::string usage;
  if (threads < 1 || threads > SessionOptions::kMaxThreads) usage = "--threads must be in [1, 4096]";
  if (reps < 1 || reps > 1000000) usage = "--reps must be in [1, 10^6]";
  if (mb < 1 || mb > (int64_t(1) << 20)) usage = "--mb must be in [1, 2^20]";
  for (size_t a = 0, b; usage.empty() && a <= sections.size(); a = b + 1) {
    b = std::min(sections.find(',', a), sections.size());
    if (known.find("," + sections.substr(a, b - a) + ",") == std::string::npos)
      usage = "unknown section '" + sections.substr(a, b - a) + "' in --sections (" +
              known.substr(1, known.size() - 2) + ")";
  }
  if (!usage.empty()) {
    std::fprintf(stderr, "bench_kernels: %s\n", usage.c_str());
    return 2;
  }
  tbb::task_arena arena(threads);
  // libloom chose OpenBLAS's kernels for this CPU when it loaded (kernels/cpu/openblas.hpp).
  std::printf("bench_kernels: %d threads, median of %d runs, OpenBLAS kernels: %s\n\n", threads, reps,
              openblas_get_corename());

  auto section = [&](const std::string& name) { return ("," + sections + ",").find("," + name + ",") != std::string::npos; };
  if (section("matmul")) matmul_rows(arena, threads, reps);
  if (section("linear")) linear_layouts(arena, reps);
  if (section("epilogue")) epilogue_rows(threads, reps);
  if (section("bandwidth")) bandwidth_rows(arena, threads, reps, mb);
  if (section("conv")) conv_rows(arena, threads, reps, no_torch ? "" : python);
  if (section("norm")) norm_rows(arena, threads, reps, no_torch ? "" : python);
  if (section("loss")) loss_rows(arena, threads, reps, no_torch ? "" : python);
  if (section("interpolate")) interp_rows(threads, reps, no_torch ? "" : python);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_kernels: error: %s\n", e.what());
  return 1;
}
