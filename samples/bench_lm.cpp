// bench_lm: loom against PyTorch training the same word-level language model
// on the same corpus with the same hyperparameters, epochs alternating between
// the two so that both see the same machine conditions.
//
//   bench_lm                                   # 2-layer LSTM 200/200, bptt 35, batch 20, 3 epochs, fortunes
//   bench_lm --epochs 6 --torch-threads 1,2 --json
//   bench_lm --model gru --data data/ptb
//   bench_lm --jax                             # JAX (samples/lm_jax.py) as a third column
//   bench_lm --quick 20                        # training speed only: 5 rounds of 20 steps each
//   bench_lm --model transformer --quick 5     # d_model 256, 4 heads, 4 layers, seq 128, batch 32, Adam
//
// PyTorch runs samples/lm_torch.py (current PyTorch from the venv that
// `./build.sh bench-lm` sets up), kept alive between epochs; it is first
// timed on a few steps at each thread count of --torch-threads and the
// fastest is kept. Reported per epoch: training seconds and tokens/s (the
// evaluation is left out), train and validation perplexity of each; at the
// end the test perplexity of each, the median tokens/s and their ratio, and
// the plan compile time of loom's training step.

#include <boost/program_options.hpp>
#include <csignal>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "samples/cli.hpp"
#include "samples/lm.hpp"
#include "samples/peers.hpp"

namespace po = boost::program_options;
using namespace loom;
using json = nlohmann::json;
using samples::LM;

namespace {

struct Options : samples::LMConfig {
  std::string torch_threads = "1,2", python = samples::peer_python(), script, data, fortunes = data::kFortunesDir,
              corpus_dir;
  int64_t epochs = 3, calibrate = 30, min_count = 3, quick = 0, seq_len = 0;
  int jax_threads = 0;
  double anneal = 4.0;
  bool json = false, jax = false;
};

json request(samples::Peer& p, const std::string& cmd) {
  json j = json::parse(p.request(cmd));
  LOOM_CHECK(!j.contains("error"), "bench_lm: a peer answered '", cmd, "' with ", j.dump());
  return j;
}

/// The command line of a peer script at `threads` threads.
std::vector<std::string> peer_args(const Options& o, const std::string& dir, int threads, const std::string& script) {
  return {o.python, script, "--serve", "--data", dir, "--model", o.model, "--layers",
          std::to_string(o.layers), "--embed", std::to_string(o.embed), "--hidden",
          std::to_string(o.hidden), "--bptt", std::to_string(o.bptt), "--batch",
          std::to_string(o.batch), "--eval-batch", std::to_string(o.eval_batch), "--lr",
          std::to_string(o.lr), "--clip", std::to_string(o.clip), "--dropout",
          std::to_string(o.dropout), "--anneal", std::to_string(o.anneal), "--threads",
          std::to_string(threads), "--seed", std::to_string(o.seed), "--opt", o.opt, "--heads",
          std::to_string(o.heads), "--d-model", std::to_string(o.d_model), "--ffn",
          std::to_string(o.ffn)};
}

/// PyTorch's best thread count on this machine, from a short timed run of each.
int fastest_torch_threads(const Options& o, const std::string& dir, const std::string& script, std::ostream& info) {
  const std::vector<int> counts = samples::thread_counts(o.torch_threads, "--torch-threads");
  int best_t = counts[0];
  if (counts.size() == 1) return best_t;
  double best = INFINITY;
  for (int t : counts) {
    samples::Peer p(peer_args(o, dir, t, script), "PyTorch");
    request(p, "steps 5");  // warm-up
    json r = request(p, "steps " + std::to_string(o.calibrate));
    const double rate = r["tokens"].get<double>() / r["seconds"].get<double>();
    info << "PyTorch " << t << " thread" << (t > 1 ? "s" : "") << ": " << samples::fmt("%.0f", rate) << " tokens/s\n";
    if (1 / rate < best) best = 1 / rate, best_t = t;
  }
  return best_t;
}

/// One benchmark: loom's model and the peers on the same batchified splits.
struct Bench {
  const Options& o;
  std::ostream& info;
  NDArray train, valid, test;
  LM& lm;
  samples::Peer& torch;
  samples::Peer* jax;  // null without --jax
  int torch_threads, jax_threads;

  int quick();
  int epochs();
  void summarize(const std::vector<double>& lrates, const std::vector<double>& trates,
                 const std::vector<double>& jrates, double lvalid, double tvalid, double jvalid);
};

/// --quick: training speed only, rounds of --quick steps from the start of
/// the data, alternating. Also per CPU-second (process time): on a loaded
/// machine, with 1 thread each, the steadier measure.
int Bench::quick() {
  std::vector<double> lq, tq, lc, tc, jq, jc;
  samples::pass(lm, LM::Mode::train, train, o.bptt, "train split", nullptr, 2);  // compile and warm up
  request(torch, "steps 2");
  if (jax) request(*jax, "steps 2");
  for (int r = 0; r < 5; ++r) {
    const double c0 = samples::cpu_seconds();
    samples::EpochResult l = samples::pass(lm, LM::Mode::train, train, o.bptt, "train split", nullptr, o.quick);
    const double lcpu = samples::cpu_seconds() - c0;
    json t = request(torch, "steps " + std::to_string(o.quick));
    lq.push_back(double(l.tokens) / l.seconds), lc.push_back(double(l.tokens) / lcpu);
    tq.push_back(t["tokens"].get<double>() / t["seconds"].get<double>());
    tc.push_back(t["tokens"].get<double>() / t["cpu_seconds"].get<double>());
    info << "round " << r + 1 << samples::fmt(": loom %.0f tok/s", lq.back()) << samples::fmt(" (%.0f per cpu-s)", lc.back())
         << samples::fmt(", PyTorch %.0f tok/s", tq.back()) << samples::fmt(" (%.0f per cpu-s)", tc.back());
    if (jax) {
      json j = request(*jax, "steps " + std::to_string(o.quick));
      jq.push_back(j["tokens"].get<double>() / j["seconds"].get<double>());
      jc.push_back(j["tokens"].get<double>() / j["cpu_seconds"].get<double>());
      info << samples::fmt(", JAX %.0f tok/s", jq.back()) << samples::fmt(" (%.0f per cpu-s)", jc.back());
    }
    info << samples::fmt(", speedup %.2f\n", lq.back() / tq.back());
  }
  const double lm_med = samples::median(lq), t_med = samples::median(tq);
  const double lc_med = samples::median(lc), tc_med = samples::median(tc);
  json summary{{"loom_median_tokens_per_s", lm_med},     {"torch_median_tokens_per_s", t_med},
               {"speedup", lm_med / t_med},               {"loom_median_tokens_per_cpu_s", lc_med},
               {"torch_median_tokens_per_cpu_s", tc_med}, {"cpu_speedup", lc_med / tc_med},
               {"train_step_compile_ms", lm.compile_ms(LM::Mode::train, o.bptt)}};
  if (jax) {
    summary["jax_median_tokens_per_s"] = samples::median(jq);
    summary["jax_median_tokens_per_cpu_s"] = samples::median(jc);
  }
  if (o.json) std::cout << summary.dump() << std::endl;
  else
    std::printf("median tokens/s  loom %.0f  PyTorch %.0f  speedup %.2f; per cpu-second loom %.0f  PyTorch %.0f  ratio %.2f%s\n",
                lm_med, t_med, lm_med / t_med, lc_med, tc_med, lc_med / tc_med,
                jax ? samples::fmt("; JAX %.0f tok/s", samples::median(jq)).c_str() : "");
  return 0;
}

/// --epochs full epochs on each side, alternating, with validation and annealing.
int Bench::epochs() {
  Session& s = lm.session();
  std::vector<double> lrates, trates, jrates;
  double best = INFINITY, lr_factor = 1.0, lvalid = 0, tvalid = 0, jvalid = NAN;
  for (int64_t e = 1; e <= o.epochs; ++e) {
    samples::EpochResult tr = samples::pass(lm, LM::Mode::train, train, o.bptt, "train split", nullptr);
    samples::EpochResult va = samples::pass(lm, LM::Mode::eval, valid, o.bptt, "valid split", nullptr);
    if (va.loss < best) {
      best = va.loss;
    } else if (o.anneal > 1) {
      lr_factor /= o.anneal;
      s.set(lm.lr_factor(), NDArray::scalar(lr_factor));
    }
    json t = request(torch, "epoch");
    const double lrate = double(tr.tokens) / tr.seconds, trate = t["tokens_per_s"].get<double>();
    lrates.push_back(lrate), trates.push_back(trate);
    lvalid = std::exp(va.loss), tvalid = t["valid_ppl"].get<double>();
    json row{{"epoch", e},
             {"loom_seconds", tr.seconds},
             {"torch_seconds", t["seconds"]},
             {"loom_tokens_per_s", lrate},
             {"torch_tokens_per_s", trate},
             {"speedup", lrate / trate},
             {"loom_train_ppl", std::exp(tr.loss)},
             {"torch_train_ppl", t["train_ppl"]},
             {"loom_valid_ppl", lvalid},
             {"torch_valid_ppl", tvalid}};
    if (jax) {
      json j = request(*jax, "epoch");
      jrates.push_back(j["tokens_per_s"].get<double>());
      jvalid = j["valid_ppl"].get<double>();
      row["jax_tokens_per_s"] = jrates.back(), row["jax_valid_ppl"] = jvalid, row["jax_train_ppl"] = j["train_ppl"];
    }
    if (o.json)
      std::cout << row.dump() << std::endl;
    else
      std::printf("epoch %lld  loom %.1f s %.0f tok/s valid ppl %.2f | PyTorch %.1f s %.0f tok/s valid ppl %.2f | "
                  "speedup %.2f%s\n",
                  (long long)e, tr.seconds, lrate, lvalid, t["seconds"].get<double>(), trate, tvalid, lrate / trate,
                  jax ? samples::fmt(" | JAX %.0f tok/s", jrates.back()).c_str() : "");
    std::fflush(stdout);
  }
  summarize(lrates, trates, jrates, lvalid, tvalid, jvalid);
  return 0;
}

/// After the last epoch: the test split and the medians.
void Bench::summarize(const std::vector<double>& lrates, const std::vector<double>& trates,
                      const std::vector<double>& jrates, double lvalid, double tvalid, double jvalid) {
  Session& s = lm.session();
  const double ltest = std::exp(samples::pass(lm, LM::Mode::eval, test, o.bptt, "test split", nullptr).loss);
  const double ttest = request(torch, "test")["test_ppl"].get<double>();
  const double lm_med = samples::median(lrates), t_med = samples::median(trates);
  json summary{{"model", o.model},
               {"loom_median_tokens_per_s", lm_med},
               {"torch_median_tokens_per_s", t_med},
               {"speedup", lm_med / t_med},
               {"loom_valid_ppl", lvalid},
               {"torch_valid_ppl", tvalid},
               {"valid_ppl_ratio", lvalid / tvalid},
               {"loom_test_ppl", ltest},
               {"torch_test_ppl", ttest},
               {"loom_threads", s.options().threads},
               {"torch_threads", torch_threads},
               {"train_step_compile_ms", lm.compile_ms(LM::Mode::train, o.bptt)}};
  if (jax) {
    summary["jax_median_tokens_per_s"] = samples::median(jrates);
    summary["jax_valid_ppl"] = jvalid;
    summary["jax_test_ppl"] = request(*jax, "test")["test_ppl"];
    summary["jax_threads"] = jax_threads;
  }
  if (o.json) {
    std::cout << summary.dump() << std::endl;
  } else {
    std::printf("median tokens/s  loom %.0f  PyTorch %.0f  speedup %.2f\n", lm_med, t_med, lm_med / t_med);
    std::printf("final valid ppl  loom %.2f  PyTorch %.2f  (ratio %.3f); test ppl loom %.2f  PyTorch %.2f\n", lvalid,
                tvalid, lvalid / tvalid, ltest, ttest);
    if (jax)
      std::printf("JAX (%d threads): median %.0f tok/s (loom / JAX %.2f), valid ppl %.2f, test ppl %.2f\n", jax_threads,
                  summary["jax_median_tokens_per_s"].get<double>(), lm_med / summary["jax_median_tokens_per_s"].get<double>(),
                  jvalid, summary["jax_test_ppl"].get<double>());
    std::printf("loom's training step (T = %lld): plan compiled in %.1f ms\n", (long long)o.bptt,
                lm.compile_ms(LM::Mode::train, o.bptt));
  }
}

int run(const Options& o) {
  std::ostream& info = o.json ? std::cerr : std::cout;
  const std::string dir = samples::prepare_corpus(o.data, o.fortunes, o.corpus_dir, o.min_count, info);
  const std::string script = samples::find_script(o.script, "lm_torch.py");
  data::Corpus corpus(dir);
  const int64_t V = corpus.dictionary.size();
  const NDArray train = data::batchify(corpus.train, o.batch), valid = data::batchify(corpus.valid, o.eval_batch);
  const NDArray test = data::batchify(corpus.test, o.eval_batch);
  data::batch_starts(valid, o.bptt, "valid split");
  data::batch_starts(test, o.bptt, "test split");

  const int best_t = fastest_torch_threads(o, dir, script, info);
  samples::Peer torch(peer_args(o, dir, best_t, script), "PyTorch");
  const int jax_threads = o.jax_threads > 0 ? o.jax_threads : int(std::max(1u, std::thread::hardware_concurrency()));
  std::unique_ptr<samples::Peer> jax;
  if (o.jax) jax = std::make_unique<samples::Peer>(peer_args(o, dir, jax_threads, samples::find_script("", "lm_jax.py")), "JAX");
  LM lm(o, V);
  if (lm.transformer())
    info << "transformer " << o.layers << " layers, d_model " << o.d_model << ", " << o.heads << " heads, ffn " << o.ffn
         << " (vocabulary " << V << "), seq-len ";
  else
    info << o.model << " " << o.layers << "x" << o.hidden << " (embed " << o.embed << ", vocabulary " << V << "), bptt ";
  info << o.bptt << ", batch " << o.batch << ", " << o.opt << " lr " << o.lr << " clip " << o.clip << ", dropout "
       << o.dropout << "; loom " << lm.session().options().threads << " threads, PyTorch " << best_t << "\n";

  Bench b{o, info, train, valid, test, lm, torch, jax.get(), best_t, jax_threads};
  return o.quick > 0 ? b.quick() : b.epochs();
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  po::options_description desc(
      "bench_lm: loom vs PyTorch training a word-level language model, epochs alternating\n\nUsage: bench_lm "
      "[options]\n\nOptions");
  // clang-format off
  desc.add_options()
    ("help,h", "show this help")
    ("model", po::value(&o.model)->default_value(o.model), "rnn | lstm | gru | transformer")
    ("layers", po::value(&o.layers)->default_value(o.layers), "recurrent or Transformer layers (transformer default: 4)")
    ("heads", po::value(&o.heads)->default_value(o.heads), "transformer: attention heads")
    ("d-model", po::value(&o.d_model)->default_value(o.d_model), "transformer: model width")
    ("ffn", po::value(&o.ffn)->default_value(o.ffn), "transformer: feed-forward width")
    ("seq-len", po::value(&o.seq_len), "transformer: sequence length (the --bptt; default 128)")
    ("opt", po::value(&o.opt), "sgd | adam (default: sgd; adam for the transformer)")
    ("embed", po::value(&o.embed)->default_value(o.embed), "embedding size")
    ("hidden", po::value(&o.hidden)->default_value(o.hidden), "hidden size")
    ("bptt", po::value(&o.bptt)->default_value(o.bptt), "sequence length")
    ("batch", po::value(&o.batch)->default_value(o.batch), "training batch size (transformer default: 32)")
    ("eval-batch", po::value(&o.eval_batch)->default_value(o.eval_batch), "batch size for validation and test")
    ("epochs", po::value(&o.epochs)->default_value(o.epochs), "epochs (alternating loom and PyTorch)")
    ("lr", po::value(&o.lr), "learning rate (default: 20 for sgd, 1e-3 for adam)")
    ("clip", po::value(&o.clip)->default_value(o.clip), "gradient clipping (global norm)")
    ("dropout", po::value(&o.dropout)->default_value(o.dropout), "dropout")
    ("anneal", po::value(&o.anneal)->default_value(o.anneal), "divide the rate by this when validation does not improve")
    ("threads", po::value(&o.threads)->default_value(o.threads), "loom threads (0: all cores)")
    ("torch-threads", po::value(&o.torch_threads)->default_value(o.torch_threads), "PyTorch thread counts to try; the fastest is used")
    ("calibrate", po::value(&o.calibrate)->default_value(o.calibrate), "steps timed per PyTorch thread count")
    ("quick", po::value(&o.quick)->default_value(o.quick), "only time training speed: 5 alternating rounds of this many steps (no epochs)")
    ("executor", po::value(&o.executor)->default_value(o.executor), "serial or parallel (TBB tasks: independent nodes, e.g. two layers' steps, run at once)")
    ("carry", po::value(&o.carry)->default_value(o.carry), "loom's state across batches: variable or feed")
    ("composite-cell", po::bool_switch(&o.composite), "loom's LSTM with element-wise ops instead of lstm_cell")
    ("data", po::value(&o.data), "a PTB-format directory (default: the fortunes corpus)")
    ("fortunes", po::value(&o.fortunes)->default_value(o.fortunes), "where Debian's fortunes package put its files")
    ("corpus-dir", po::value(&o.corpus_dir), "where to write the fortunes corpus (default: ~/.cache/loom/fortunes-ptb)")
    ("min-count", po::value(&o.min_count)->default_value(o.min_count), "fortunes corpus: rarer words become <unk>")
    ("python", po::value(&o.python)->default_value(o.python), "Python with torch")
    ("script", po::value(&o.script), "path of lm_torch.py (default: found from the repository)")
    ("seed", po::value(&o.seed)->default_value(o.seed), "seed for both")
    ("jax", po::bool_switch(&o.jax), "also train the JAX peer (samples/lm_jax.py) alongside")
    ("jax-threads", po::value(&o.jax_threads)->default_value(o.jax_threads), "JAX's threads (0: all cores)")
    ("json", po::bool_switch(&o.json), "one JSON object per epoch and a summary");
  // clang-format on
  // The defaults that depend on the model and on what was given, then the checks.
  auto complete = [&](const po::variables_map& vm) {
    auto given = [&](const char* name) { return vm.count(name) && !vm[name].defaulted(); };
    if (o.model == "transformer") {
      if (!given("layers")) o.layers = 4;
      if (given("seq-len")) o.bptt = o.seq_len;
      else if (!given("bptt")) o.bptt = 128;
      if (!given("batch")) o.batch = 32;
      if (!given("opt")) o.opt = "adam";
      if (o.heads <= 0 || o.d_model <= 0 || o.ffn <= 0 || o.d_model % o.heads)
        throw po::error("--heads, --d-model and --ffn must be positive, and --heads must divide --d-model");
    } else {
      nn::parse_cell_kind(o.model);  // an unknown model fails here, before the corpus and the peers
    }
    if (o.opt != "sgd" && o.opt != "adam") throw po::error("--opt must be sgd or adam");
    if (!given("lr")) o.lr = o.opt == "adam" ? 1e-3 : 20.0;
    if (o.epochs <= 0 || o.calibrate <= 0 || o.threads < 0 || o.batch <= 0 || o.bptt <= 0)
      throw po::error("--epochs, --calibrate, --batch and --bptt must be positive, --threads >= 0");
    if (o.quick < 0 || o.layers <= 0 || o.embed <= 0 || o.hidden <= 0)
      throw po::error("--quick must be >= 0, --layers, --embed and --hidden positive");
    if (!(o.dropout >= 0 && o.dropout < 1)) throw po::error("--dropout must be in [0, 1)");
    if (!(o.lr >= 0 && o.lr < 1e6) || !(o.clip >= 0 && o.clip < 1e300))
      throw po::error("--lr must be in [0, 10^6), --clip >= 0 (0: off)");
    if (!(o.anneal >= 1 && o.anneal < 1e300)) throw po::error("--anneal must be >= 1 (1: never anneal)");
    samples::thread_counts(o.torch_threads, "--torch-threads");
    if (o.carry != "variable" && o.carry != "feed") throw po::error("--carry must be variable or feed");
    if (o.executor != "serial" && o.executor != "parallel") throw po::error("--executor must be serial or parallel");
  };
  if (auto stop = samples::parse_command_line("bench_lm", argc, argv, desc, complete)) return *stop;
  std::signal(SIGPIPE, SIG_IGN);  // a PyTorch process that dies must not kill us mid-write
  return samples::run_reporting_errors("bench_lm", [&] { return run(o); });
}
