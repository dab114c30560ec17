// bench_attention: the fused attention op against the composite (matmul ->
// mask -> softmax -> matmul) and against PyTorch's scaled_dot_product_attention
// (and JAX's dot_product_attention) at T = 128, 512, 2048: forward, and
// forward + backward (gradients w.r.t. q, k, v), with the plans' arenas.
//
//   bench_attention                     # heads 4, head dim 64 (d_model 256), B*T = 4096 tokens
//   bench_attention --causal --lengths 128 512 2048 --batch 8 --no-torch
//
// Shapes are [B, H, T, D] with H = 4 and D = 64 (the Transformer:
// d_model 256, 4 heads) and B = tokens / T (default 4096 tokens: batch 32 at
// T = 128), so that every length does the same number of token rows. loom
// runs with --threads (default 2) and the serial executor; PyTorch with the
// fastest of 1 and 2 threads. Figures are medians over repetitions lasting at
// least --min-seconds. The attention FLOPs (4 B H T^2 D forward, 2.5 times
// that backward; half with --causal) are set against loom's matmul rate at
// 1024^3 measured here (OpenBLAS, whose kernel set the header names: on a
// virtual CPU it does not recognize it falls back to SSE3 "Prescott"
// kernels, and OPENBLAS_CORETYPE=SkylakeX restores the AVX-512 ones).

#include <cblas.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/philox.hpp"
#include "frontend/loom.hpp"
#include "samples/peers.hpp"

namespace po = boost::program_options;
namespace fs = std::filesystem;
using namespace loom;

namespace {

double median_seconds(double min_seconds, const std::function<void()>& f) {
  f();  // warm-up: plan compile, page faults
  std::vector<double> t;
  const auto start = std::chrono::steady_clock::now();
  while (t.size() < 3 || std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < min_seconds) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (t.size() >= 500) break;
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

NDArray uniform(const Shape& s, uint64_t seed) {
  NDArray a = NDArray::empty(s, float32);
  for (int64_t i = 0; i < a.numel(); ++i) a.data<float>()[i] = philox::uniform_f32(seed, 0, uint64_t(i)) - 0.5f;
  return a;
}

struct Side {
  double fwd_s = 0, fwdbwd_s = 0;
  size_t fwd_arena = 0, fwdbwd_arena = 0;
};

/// One implementation (fused or composite) at one shape: times and arenas.
Side measure(bool fused, const Shape& shape, bool causal, int threads, double min_seconds) {
  Graph g;
  Tensor q = g.placeholder("q", shape), k = g.placeholder("k", shape), v = g.placeholder("v", shape);
  AttentionOptions o{.causal = causal};
  Tensor y = fused ? scaled_dot_product_attention(q, k, v, o) : composite::scaled_dot_product_attention(q, k, v, o);
  Tensor w = g.constant(uniform(shape, 4));
  std::vector<Tensor> grads = gradients(sum(y * w), {q, k, v});
  Feeds feeds{{q, uniform(shape, 1)}, {k, uniform(shape, 2)}, {v, uniform(shape, 3)}};
  Session s(g, {.threads = threads});
  Side r;
  r.fwd_s = median_seconds(min_seconds, [&] { s.run({y}, feeds); });
  r.fwd_arena = s.stats().last_plan.arena_bytes;
  r.fwdbwd_s = median_seconds(min_seconds, [&] { s.run(grads, feeds); });
  r.fwdbwd_arena = s.stats().last_plan.arena_bytes;
  return r;
}

/// sgemm GFLOP/s of loom's matmul at 1024^3 with `threads` threads (the GEMM limit).
double sgemm_rate(int threads) {
  Graph g;
  Tensor a = g.placeholder("a", {1024, 1024}), b = g.placeholder("b", {1024, 1024});
  Tensor c = matmul(a, b);
  Session s(g, {.threads = threads});
  Feeds f{{a, uniform({1024, 1024}, 5)}, {b, uniform({1024, 1024}, 6)}};
  return 2.0 * 1024 * 1024 * 1024 / median_seconds(0.5, [&] { s.run({c}, f); }) / 1e9;
}

std::map<std::string, double> run_peers(const std::vector<Shape>& shapes, bool causal, double min_seconds, bool jax) {
  std::map<std::string, double> out;
  fs::path script = fs::path(LOOM_SAMPLES_DIR) / "bench_attention_torch.py";
  std::ostringstream cmd;
  cmd << samples::peer_shell(samples::peer_python()) << " '" << script.string() << "' --min-seconds " << min_seconds
      << " --shapes '";
  for (const Shape& s : shapes) cmd << s[0] << ',' << s[1] << ',' << s[2] << ',' << s[3] << ';';
  cmd << "'" << (causal ? " --causal" : "") << (jax ? "" : " --no-jax") << " 2>&1";
  FILE* p = popen(cmd.str().c_str(), "r");
  if (!p) return out;
  char line[512];
  while (std::fgets(line, sizeof line, p)) {
    std::istringstream is(line);
    std::string key;
    double v;
    if (is >> key >> v && (key.rfind("torch.", 0) == 0 || key.rfind("jax.", 0) == 0)) out[key] = v;
    else std::fprintf(stderr, "bench_attention_torch: %s", line);
  }
  pclose(p);
  return out;
}

std::string mib(size_t b) {
  char s[32];
  std::snprintf(s, sizeof s, "%.1fM", double(b) / (1 << 20));
  return s;
}

}  // namespace

int main(int argc, char** argv) try {
  std::vector<int64_t> lengths{128, 512, 2048};
  int64_t heads = 4, dim = 64, tokens = 4096, batch = 0;
  int threads = 2;
  double min_seconds = 1.0;
  po::options_description desc("bench_attention: fused attention vs the composite vs PyTorch");
  desc.add_options()("help,h", "this help")(
      "lengths", po::value(&lengths)->multitoken()->default_value(lengths, "128 512 2048"), "sequence lengths T")(
      "heads", po::value(&heads)->default_value(heads), "heads H")(
      "dim", po::value(&dim)->default_value(dim), "head dim D")(
      "tokens", po::value(&tokens)->default_value(tokens), "B = tokens / T (at least 1)")(
      "batch", po::value(&batch)->default_value(batch), "fixed batch B (0: from --tokens)")(
      "causal", "causal masks")("threads", po::value(&threads)->default_value(threads), "loom's threads")(
      "min-seconds", po::value(&min_seconds)->default_value(min_seconds), "time per measurement")(
      "no-torch", "skip PyTorch and JAX")("no-jax", "skip JAX")("json", "one JSON document on stdout");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_attention: %s\n%s", e.what(), (std::ostringstream() << desc).str().c_str());
    return 2;
  }
  if (vm.count("help")) {
    std::printf("%s", (std::ostringstream() << desc).str().c_str());
    return 0;
  }
  bool positive = !lengths.empty();
  for (int64_t t : lengths) positive = positive && t > 0;
  if (!positive || heads < 1 || dim < 1 || tokens < 1 || batch < 0 || threads < 1 ||
      threads > SessionOptions::kMaxThreads || !(min_seconds > 0 && min_seconds < 1e6)) {
    std::fprintf(stderr,
                 "bench_attention: --lengths, --heads, --dim and --tokens must be positive, --batch >= 0, "
                 "--threads in [1, 4096], --min-seconds in (0, 10^6)\n");
    return 2;
  }
  const bool causal = vm.count("causal") > 0, json = vm.count("json") > 0;
  openblas_set_num_threads(1);
  std::vector<Shape> shapes;
  for (int64_t t : lengths) shapes.push_back({batch > 0 ? batch : std::max<int64_t>(1, tokens / t), heads, t, dim});

  std::map<std::string, double> peers;
  if (!vm.count("no-torch")) peers = run_peers(shapes, causal, min_seconds, !vm.count("no-jax"));
  const double gemm = sgemm_rate(threads);
  nlohmann::json doc = {{"threads", threads},       {"causal", causal},
                        {"sgemm_gflops", gemm},       {"openblas_core", openblas_get_corename()},
                        {"rows", nlohmann::json::array()}};
  if (!json)
    std::printf("attention [B, H=%lld, T, D=%lld] float32, %s, loom %d threads; loom matmul (OpenBLAS, %s kernels) %.0f GFLOP/s\n\n"
                "    T    B | fwd ms: fused  composite  torch    jax | fwd+bwd ms: fused  composite  torch    jax |"
                " composite/fused  torch/fused | fused %%matmul | arena fwd: fused composite | fwd+bwd: fused composite\n",
                (long long)heads, (long long)dim, causal ? "causal" : "no mask", threads, openblas_get_corename(), gemm);
  for (const Shape& s : shapes) {
    const Side f = measure(true, s, causal, threads, min_seconds);
    const Side c = measure(false, s, causal, threads, min_seconds);
    const std::string t = std::to_string(s[2]);
    auto peer = [&](const std::string& k) { return peers.count(k) ? peers[k] : 0.0; };
    const double tf = peer("torch." + t + ".fwd_ms"), tfb = peer("torch." + t + ".fwdbwd_ms");
    const double jf = peer("jax." + t + ".fwd_ms"), jfb = peer("jax." + t + ".fwdbwd_ms");
    const double flops = 4.0 * double(s[0] * s[1]) * double(s[2] * s[2]) * double(s[3]) * 3.5 * (causal ? 0.5 : 1.0);
    const double pct = flops / f.fwdbwd_s / 1e9 / gemm * 100;
    doc["rows"].push_back({{"T", s[2]}, {"B", s[0]}, {"H", s[1]}, {"D", s[3]},
                           {"fused", {{"fwd_ms", f.fwd_s * 1e3}, {"fwdbwd_ms", f.fwdbwd_s * 1e3},
                                      {"fwd_arena", f.fwd_arena}, {"fwdbwd_arena", f.fwdbwd_arena}}},
                           {"composite", {{"fwd_ms", c.fwd_s * 1e3}, {"fwdbwd_ms", c.fwdbwd_s * 1e3},
                                          {"fwd_arena", c.fwd_arena}, {"fwdbwd_arena", c.fwdbwd_arena}}},
                           {"torch", {{"fwd_ms", tf}, {"fwdbwd_ms", tfb}, {"threads", peer("torch." + t + ".threads")}}},
                           {"jax", {{"fwd_ms", jf}, {"fwdbwd_ms", jfb}}},
                           {"fused_pct_of_matmul_rate", pct}});
    if (!json)
      std::printf("%5lld %4lld | %14.2f %10.2f %6.2f %6.2f | %18.2f %10.2f %6.2f %6.2f | %15.2f %12.2f | %11.0f%% |"
                  " %15s %9s | %14s %9s\n",
                  (long long)s[2], (long long)s[0], f.fwd_s * 1e3, c.fwd_s * 1e3, tf, jf, f.fwdbwd_s * 1e3,
                  c.fwdbwd_s * 1e3, tfb, jfb, c.fwdbwd_s / f.fwdbwd_s, tfb > 0 ? tfb / 1e3 / f.fwdbwd_s : 0.0, pct,
                  mib(f.fwd_arena).c_str(), mib(c.fwd_arena).c_str(), mib(f.fwdbwd_arena).c_str(),
                  mib(c.fwdbwd_arena).c_str());
    std::fflush(stdout);
  }
  if (!json) {
    // Memory per sequence (arena / B): the fused forward's grows linearly in T, the composite's quadratically.
    std::printf("\nforward arena per sequence (arena / B), and its growth from the first length\n");
    const auto& rows = doc["rows"];
    for (const auto& r : rows) {
      const double b = r["B"].get<double>(), b0 = rows[0]["B"].get<double>();
      const double f = r["fused"]["fwd_arena"].get<double>() / b, c = r["composite"]["fwd_arena"].get<double>() / b;
      const double f0 = rows[0]["fused"]["fwd_arena"].get<double>() / b0, c0 = rows[0]["composite"]["fwd_arena"].get<double>() / b0;
      std::printf("  T %5lld: fused %9.2f MiB (x%6.1f)   composite %9.2f MiB (x%7.1f)   T ratio x%.0f\n",
                  (long long)r["T"].get<int64_t>(), f / (1 << 20), f / f0, c / (1 << 20), c / c0,
                  r["T"].get<double>() / rows[0]["T"].get<double>());
    }
  }
  if (json) std::printf("%s\n", doc.dump(2).c_str());
  return 0;
} catch (const std::exception& e) {  // (a size too large for memory, say)
  std::fprintf(stderr, "bench_attention: error: %s\n", e.what());
  return 1;
}
