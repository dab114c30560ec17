// train_lm: trains a word-level language model (RNN, LSTM, GRU with
// truncated back-propagation through time, or a causal Transformer) and
// reports perplexity.
//
//   train_lm                                  # 2-layer LSTM 200/200 on the fortunes corpus, 6 epochs
//   train_lm --model transformer              # 4 layers, d_model 256, 4 heads, seq 128, batch 32, Adam
//   train_lm --model gru --epochs 2 --json    # one JSON object per epoch
//   train_lm --data data/ptb                  # a PTB-format directory (train.txt, valid.txt, test.txt)
//   train_lm --save lm.safetensors --generate 50 --prompt "the meaning of life"
//   train_lm --load lm.safetensors --epochs 0 --generate 50 --temperature 0.8
//
// Without --data the corpus is made from Debian's fortunes package
// (data::fortunes_to_ptb: lower-cased, punctuation split off, words seen fewer
// than --min-count times in training -> <unk>, 90/5/5 split by fortune).
//
// Each training step is one Session::run over a graph unrolled --bptt steps:
// forward, backward, clipping, the SGD (or Adam) update and the carry of the
// final recurrent state into variables that the next step starts from (no
// gradient flows into the previous batch). The batches of an epoch follow
// the course's get_batch: the last one may be shorter, and gets a graph of its
// own length (the variables are shared).

#include <unistd.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "core/file.hpp"
#include "frontend/loom.hpp"
#include "samples/cli.hpp"
#include "samples/lm.hpp"
#include "samples/models.hpp"
#include "samples/profile.hpp"
#include "samples/progress.hpp"

namespace po = boost::program_options;
using namespace loom;
using json = nlohmann::json;
using samples::fmt;
using samples::Progress;

namespace {

using samples::LM;
using samples::LMConfig;

struct Args : LMConfig {
  std::string data, fortunes = data::kFortunesDir, corpus_dir, save, load, prompt;
  int64_t epochs = 6, min_count = 3, generate = 0, max_lines = 0, max_batches = 0, seq_len = 0;
  double anneal = 4.0, temperature = 1.0;
  bool json = false;
};

/// Where a loaded checkpoint resumes: the epoch after its last, and its learning-rate factor.
struct Resumed {
  int64_t first_epoch = 1;
  double lr_factor = 1.0;
};

/// --load: the checkpoint must hold this model and vocabulary. Weights PyTorch
/// trained (samples/lm_torch.py --save-loom) come without loom's optimizer state.
Resumed load_checkpoint(const Args& a, LM& lm, int64_t V, const std::vector<Tensor>& saved, std::ostream& info) {
  Session& s = lm.session();
  checkpoint::Metadata meta = checkpoint::read_metadata(a.load);
  auto check = [&](const char* key, const std::string& want, const char* option) {
    auto it = meta.find(key);
    if (it != meta.end() && it->second != want)
      fail("'", a.load, "' holds a model with ", key, " ", it->second, ", not ", want, " (", option, ")");
  };
  check("model", a.model, "--model");
  check("vocab", std::to_string(V), "the same --data/--min-count as when it was saved");
  auto format = meta.find("format");
  if (format != meta.end() && format->second == "torch")
    checkpoint::load(s, lm.model(), a.load);  // its state_dict: a tied weight under both names
  else
    checkpoint::load(s, a.load, saved);
  Resumed r;
  r.first_epoch = samples::first_epoch_after(meta, a.load, a.epochs);
  r.lr_factor = s.get(lm.lr_factor()).item();
  info << "loaded " << a.load << " (after epoch " << r.first_epoch - 1 << ")\n";
  return r;
}

/// --generate N: samples N words and prints them (or their rate, with --json).
void report_generation(const Args& a, LM& lm, const data::Dictionary& dictionary) {
  samples::Generated gen = samples::generate(lm, dictionary, a.prompt, a.generate, a.temperature, a.seed);
  const double rate = double(a.generate) / gen.seconds;
  if (a.json)
    std::cout << json{{"generated", gen.text}, {"generate_tokens", a.generate}, {"generate_seconds", gen.seconds},
                      {"generate_tokens_per_s", rate}, {"generate_tokens_per_cpu_s", double(a.generate) / gen.cpu_seconds},
                      {"prompt_seconds", gen.prompt_seconds}}
                     .dump()
              << std::endl;
  else
    std::cout << "--- " << a.generate << " words sampled at temperature " << a.temperature
              << samples::fmt(" (%.1f tokens/s", rate) << (lm.transformer() ? ", KV cache" : ", recurrent state")
              << "):\n"
              << gen.text << "\n";
}

/// The corpus in columns: --batch of them for training, --eval-batch for validation and test.
struct Splits {
  NDArray train, valid, test;
};

/// Fails now, with the split named, when bptt does not fit.
Splits batchify_splits(const data::Corpus& corpus, const Args& a) {
  Splits splits{data::batchify(corpus.train, a.batch), data::batchify(corpus.valid, a.eval_batch),
                data::batchify(corpus.test, a.eval_batch)};
  data::batch_starts(splits.train, a.bptt, "train split");
  data::batch_starts(splits.valid, a.bptt, "valid split");
  data::batch_starts(splits.test, a.bptt, "test split");
  return splits;
}

/// The line that says what is trained, how and where.
void print_setup(const Args& a, LM& lm, int64_t V, std::ostream& info) {
  const Session& s = lm.session();
  if (lm.transformer())
    info << "model transformer " << a.layers << " layers, d_model " << a.d_model << ", " << a.heads << " heads, ffn "
         << a.ffn << " (";
  else
    info << "model " << a.model << " " << a.layers << "x" << a.hidden << " (embed " << a.embed
         << (a.tied ? ", tied" : "") << ", ";
  info << lm.model().num_parameters() << " parameters, vocabulary " << V << "), " << a.opt << " lr " << a.lr
       << ", clip " << a.clip << ", dropout " << a.dropout << (lm.transformer() ? ", seq-len " : ", bptt ") << a.bptt
       << ", batch " << a.batch << ", "
       << (a.device == "cpu" ? std::to_string(s.options().threads) + " threads" : s.options().device.str()) << "\n";
}

/// An epoch's pass over the training split and the validation pass after it.
struct EpochPasses {
  samples::EpochResult train, valid;
};

/// Epoch e (of those up to `last`): training with a progress bar on a terminal, then validation.
EpochPasses train_epoch(const Args& a, LM& lm, const Splits& splits, int64_t e, int64_t last) {
  const bool tty = !a.json && ::isatty(STDOUT_FILENO);
  int64_t batches = int64_t(data::batch_starts(splits.train, a.bptt).size());
  if (a.max_batches > 0) batches = std::min(batches, a.max_batches);
  Progress bar(tty, e, last, batches, {"ppl", "%.1f", "tok"});
  EpochPasses r;
  r.train = samples::pass(lm, LM::Mode::train, splits.train, a.bptt, "train split", &bar, a.max_batches);
  bar.clear();
  r.valid = samples::pass(lm, LM::Mode::eval, splits.valid, a.bptt, "valid split", nullptr, a.max_batches);
  return r;
}

/// Epoch e's line (trained with learning rate `lr`): one JSON object or text.
void print_epoch(const Args& a, int64_t e, int64_t last, const EpochPasses& r, double lr) {
  const double train_ppl = std::exp(r.train.loss), valid_ppl = std::exp(r.valid.loss);
  const double tokens_per_s = double(r.train.tokens) / r.train.seconds;
  if (a.json) {
    std::cout << json{{"epoch", e},
                      {"train_ppl", train_ppl},
                      {"valid_ppl", valid_ppl},
                      {"seconds", r.train.seconds},
                      {"tokens_per_s", tokens_per_s},
                      {"lr", lr}}
                     .dump()
              << std::endl;
  } else {
    std::printf("epoch %lld/%lld  train ppl %.2f  valid ppl %.2f  lr %g  %.1f s  %.0f tok/s\n", (long long)e,
                (long long)last, train_ppl, valid_ppl, lr, r.train.seconds, tokens_per_s);
    std::fflush(stdout);
  }
}

int run(const Args& a) {
  std::ostream& info = a.json ? std::cerr : std::cout;
  const std::string dir = samples::prepare_corpus(a.data, a.fortunes, a.corpus_dir, a.min_count, info);
  data::Corpus corpus(dir, {.max_lines = a.max_lines});
  const int64_t V = corpus.dictionary.size();
  const Splits splits = batchify_splits(corpus, a);

  if (!a.save.empty()) io::check_writable(a.save);  // before the first epoch, not after it
  LM lm(a, V);
  Session& s = lm.session();
  const std::vector<Tensor> saved = lm.checkpoint_variables();
  const Resumed resumed = a.load.empty() ? Resumed{} : load_checkpoint(a, lm, V, saved, info);
  double lr_factor = resumed.lr_factor;
  if (!a.json) print_setup(a, lm, V, info);

  auto save = [&](int64_t epoch) {
    checkpoint::save(
        s, a.save, saved,
        {{"model", a.model}, {"vocab", std::to_string(V)}, {"epoch", std::to_string(epoch)}, {"trainer", "train_lm"}});
  };
  double best = INFINITY;
  const int64_t last = resumed.first_epoch + a.epochs - 1;
  for (int64_t e = resumed.first_epoch; e <= last; ++e) {
    const EpochPasses r = train_epoch(a, lm, splits, e, last);
    print_epoch(a, e, last, r, a.lr * lr_factor);
    // PyTorch's word_language_model: divide the rate when validation stops improving.
    if (r.valid.loss < best) {
      best = r.valid.loss;
    } else if (a.anneal > 1) {
      lr_factor /= a.anneal;
      s.set(lm.lr_factor(), NDArray::scalar(lr_factor));
    }
    if (!a.save.empty()) save(e);
  }
  if (a.epochs == 0 && !a.save.empty()) save(last);  // what was loaded (or initialized)
  const double test_ppl =
      std::exp(samples::pass(lm, LM::Mode::eval, splits.test, a.bptt, "test split", nullptr, a.max_batches).loss);
  if (a.json)
    std::cout << json{{"test_ppl", test_ppl}}.dump() << std::endl;
  else
    std::printf("test perplexity %.2f\n", test_ppl);
  if (!a.save.empty() && !a.json) info << "saved " << a.save << "\n";

  if (a.generate > 0) report_generation(a, lm, corpus.dictionary);
  if (a.profile) samples::print_profile(s, info);
  return 0;
}

/// The command line's options, read into `a`.
po::options_description describe_options(Args& a) {
  po::options_description desc(
      "train_lm: train a word-level language model (RNN, LSTM, GRU, Transformer) with loom\n\n"
      "Usage: train_lm [options]\n\nOptions");
  // clang-format off
  desc.add_options()
    ("help,h", "show this help")
    ("model", po::value(&a.model)->default_value(a.model), "rnn | lstm | gru | transformer")
    ("layers", po::value(&a.layers)->default_value(a.layers), "recurrent or Transformer layers (transformer default: 4)")
    ("heads", po::value(&a.heads)->default_value(a.heads), "transformer: attention heads (must divide --d-model)")
    ("d-model", po::value(&a.d_model)->default_value(a.d_model), "transformer: model width")
    ("ffn", po::value(&a.ffn)->default_value(a.ffn), "transformer: feed-forward width")
    ("seq-len", po::value(&a.seq_len), "transformer: sequence length, the positional table's size (the --bptt; default 128)")
    ("embed", po::value(&a.embed)->default_value(a.embed), "embedding size")
    ("hidden", po::value(&a.hidden)->default_value(a.hidden), "hidden size")
    ("bptt", po::value(&a.bptt)->default_value(a.bptt), "sequence length (steps unrolled in the graph)")
    ("batch", po::value(&a.batch)->default_value(a.batch), "training batch size (columns of the text; transformer default: 32)")
    ("eval-batch", po::value(&a.eval_batch)->default_value(a.eval_batch), "batch size for validation and test")
    ("epochs", po::value(&a.epochs)->default_value(a.epochs), "epochs to train (0: only evaluate or generate, e.g. with --load)")
    ("lr", po::value(&a.lr), "learning rate (default: 20 for sgd, 1e-3 for adam)")
    ("opt", po::value(&a.opt), "sgd | adam (default: sgd; adam for the transformer)")
    ("clip", po::value(&a.clip)->default_value(a.clip), "clip gradients to this global norm (0: off)")
    ("dropout", po::value(&a.dropout)->default_value(a.dropout), "dropout on embeddings, between layers and on the output")
    ("anneal", po::value(&a.anneal)->default_value(a.anneal), "divide the learning rate by this when validation perplexity does not improve (1: never)")
    ("data", po::value(&a.data), "a PTB-format directory (train.txt, valid.txt, test.txt); default: the fortunes corpus")
    ("fortunes", po::value(&a.fortunes)->default_value(a.fortunes), "where Debian's fortunes package put its files")
    ("corpus-dir", po::value(&a.corpus_dir), "where to write the fortunes corpus (default: ~/.cache/loom/fortunes-ptb)")
    ("min-count", po::value(&a.min_count)->default_value(a.min_count), "fortunes corpus: words seen fewer times in training become <unk>")
    ("max-lines", po::value(&a.max_lines)->default_value(a.max_lines), "read at most this many lines of each file (0: all)")
    ("max-batches", po::value(&a.max_batches)->default_value(a.max_batches), "at most this many batches per epoch and evaluation (0: all; for quick trials)")
    ("threads", po::value(&a.threads)->default_value(a.threads), "threads (0: all cores)")
    ("device", po::value(&a.device)->default_value(a.device), "cpu, cuda or cuda:i (the whole graph runs there)")
    ("seed", po::value(&a.seed)->default_value(a.seed), "seed for initialization, dropout and sampling")
    ("save", po::value(&a.save), "save a checkpoint (safetensors) after every epoch")
    ("load", po::value(&a.load), "resume from a checkpoint (model, optimizer state, learning rate)")
    ("generate", po::value(&a.generate)->default_value(a.generate), "after training, sample this many words (one run per word: the recurrent state, or the transformer's KV cache)")
    ("prompt", po::value(&a.prompt), "text the sample continues")
    ("temperature", po::value(&a.temperature)->default_value(a.temperature), "sampling temperature (> 0; lower is more conservative)")
    ("executor", po::value(&a.executor)->default_value(a.executor), "serial or parallel (TBB tasks: independent nodes, e.g. two layers' steps, run at once)")
    ("carry", po::value(&a.carry)->default_value(a.carry), "how the state crosses batches: variable (assigned in the graph) or feed (fetched and fed back)")
    ("composite-cell", po::bool_switch(&a.composite), "LSTM: element-wise ops instead of the fused lstm_cell op")
    ("tied", po::bool_switch(&a.tied), "recurrent models: the decoder's weight is the embedding table (needs --embed = --hidden)")
    ("json", po::bool_switch(&a.json), "print one JSON object per epoch (epoch, train_ppl, valid_ppl, seconds, tokens_per_s, lr)")
    ("profile", po::bool_switch(&a.profile), "print the most expensive graph nodes at the end");
  // clang-format on
  return desc;
}

/// The transformer's defaults and those that depend on other options, then the checks (an exception: a usage error).
void complete_args(const po::variables_map& vm, Args& a) {
  auto given = [&](const char* name) { return vm.count(name) && !vm[name].defaulted(); };
  if (a.model == "transformer") {
    if (!given("layers")) a.layers = 4;
    if (given("seq-len"))
      a.bptt = a.seq_len;
    else if (!given("bptt"))
      a.bptt = 128;
    if (!given("batch")) a.batch = 32;
    if (!given("opt")) a.opt = "adam";
    if (a.tied) throw po::error("--tied is the recurrent models' option");
    if (a.heads <= 0 || a.d_model <= 0 || a.ffn <= 0 || a.d_model % a.heads)
      throw po::error("--heads, --d-model and --ffn must be positive, and --heads must divide --d-model");
  } else {
    if (given("seq-len")) throw po::error("--seq-len is the transformer's; recurrent models take --bptt");
    nn::parse_cell_kind(a.model);
  }
  if (!vm.count("lr")) a.lr = a.opt == "adam" ? 1e-3 : 20.0;
  if (a.epochs < 0 || a.epochs > (int64_t(1) << 30)) throw po::error("--epochs must be in [0, 2^30]");
  if (a.batch <= 0 || a.eval_batch <= 0 || a.bptt <= 0)
    throw po::error("--batch, --eval-batch and --bptt must be positive");
  if (a.layers <= 0 || a.embed <= 0 || a.hidden <= 0)
    throw po::error("--layers, --embed and --hidden must be positive");
  if (a.tied && a.embed != a.hidden) throw po::error("--tied needs --embed equal to --hidden");
  if (!(a.dropout >= 0 && a.dropout < 1)) throw po::error("--dropout must be in [0, 1)");
  if (!(a.temperature > 0)) throw po::error("--temperature must be > 0");
  if (!(a.anneal >= 1 && a.anneal < 1e300)) throw po::error("--anneal must be >= 1 (1: never anneal)");
  if (a.threads < 0 || a.generate < 0 || a.min_count < 1 || a.max_lines < 0 || a.max_batches < 0)
    throw po::error("--threads, --generate and --max-lines must be >= 0, --min-count >= 1");
  if (a.carry != "variable" && a.carry != "feed") throw po::error("--carry must be variable or feed");
  if (a.executor != "serial" && a.executor != "parallel") throw po::error("--executor must be serial or parallel");
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  const po::options_description desc = describe_options(a);
  if (auto stop = samples::parse_command_line("train_lm", argc, argv, desc, [&](const po::variables_map& vm) {
        complete_args(vm, a);
      }))
    return *stop;
  return samples::run_reporting_errors("train_lm", [&] { return run(a); });
}
