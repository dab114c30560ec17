#pragma once
// What train_lm and bench_lm share: the language-model training run (graphs
// built per mode and sequence length over shared variables, the state carried
// across batches in variables or fed back), one pass over a split, sampling,
// and the corpus (a PTB directory, or the fortunes converted into one).

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <map>
#include <memory>
#include <ostream>
#include <random>
#include <string>

#include "frontend/loom.hpp"
#include "samples/progress.hpp"

namespace loom::samples {

/// The settings of a training run (train_lm's options). For the transformer,
/// bptt is the sequence length (--seq-len) and embed/hidden are unused.
struct LMConfig {
  std::string model = "lstm", opt = "sgd", device = "cpu", carry = "variable", executor = "serial";
  int64_t layers = 2, embed = 200, hidden = 200, bptt = 35, batch = 20, eval_batch = 10;
  int64_t heads = 4, d_model = 256, ffn = 1024;
  double lr = 20.0, clip = 0.25, dropout = 0.2;
  int threads = 0;
  uint64_t seed = 0;
  bool profile = false, composite = false, tied = false;
};

inline std::string default_corpus_dir() {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const char* home = std::getenv("HOME");
  std::filesystem::path base = xdg && *xdg ? xdg : home && *home ? std::filesystem::path(home) / ".cache" : "/tmp";
  return (base / "loom" / "fortunes-ptb").string();
}

/// A causal Transformer language model, sequence-first like the recurrent
/// one: ids [T, N] -> logits [T, N, vocab]. Embedding "encoder" (U(-0.1, 0.1),
/// scaled by sqrt(d)) plus learned positions "pos", dropout, a pre-norm
/// nn::Transformer "transformer" (causal, ReLU feed-forward, final LayerNorm),
/// Linear "decoder" (U(-0.1, 0.1), bias zeros). samples/lm_torch.py builds
/// the same model from nn.TransformerEncoder with a causal mask.
class TransformerLM : public nn::Module {
 public:
  TransformerLM(int64_t vocab, const LMConfig& a)
      : vocab_(vocab),
        d_(a.d_model),
        max_len_(a.bptt),
        dropout_(a.dropout),
        encoder_(register_module("encoder", nn::Embedding(vocab, a.d_model, {.init = init::uniform(-0.1, 0.1)}))),
        pos_(register_module("pos", nn::PositionalEmbedding(a.bptt, a.d_model))),
        transformer_(register_module("transformer", nn::Transformer(a.layers, a.d_model, a.heads,
                                                                    {.ffn = a.ffn,
                                                                     .dropout = a.dropout,
                                                                     .causal = true,
                                                                     .norm_first = true}))),
        decoder_(register_module("decoder", nn::Linear(a.d_model, vocab, {.weight_init = init::uniform(-0.1, 0.1),
                                                                          .bias_init = init::zeros()}))) {}
  std::string type_name() const override { return "TransformerLM"; }
  int64_t vocab() const { return vocab_; }
  int64_t d_model() const { return d_; }
  int64_t max_len() const { return max_len_; }

 protected:
  Tensor forward(const Tensor& ids) override {
    LOOM_CHECK(ids.ndim() == 2, where(ids), ": expected ids [T, N], got ", S(ids.shape()));
    Tensor x = pos_(encoder_(transpose(ids)) * std::sqrt(double(d_)));  // [N, T, d]
    x = dropout(x, dropout_, training());
    Tensor h = permute(transformer_(x), {1, 0, 2});  // [T, N, d]: the decoder's rows in the targets' order
    return decoder_(h);
  }

 private:
  int64_t vocab_, d_, max_len_;
  double dropout_;
  nn::Embedding& encoder_;
  nn::PositionalEmbedding& pos_;
  nn::Transformer& transformer_;
  nn::Linear& decoder_;
};

/// Incremental decoding of a TransformerLM with a KV cache: a second graph
/// over the same variables that takes one token and its position per run,
/// appends that token's keys and values to per-layer cache variables
/// [heads, max_len, head dim] and attends the cached prefix, which is never
/// recomputed. The position arrives as a placeholder: a one-hot row selects
/// the cache slot written (a masked blend), and an additive mask hides the
/// slots not yet written.
class KVDecoder {
 public:
  KVDecoder(Graph& g, const TransformerLM& m, const LMConfig& a)
      : max_len_(m.max_len()), heads_(a.heads), d_(m.d_model()) {
    std::map<std::string, Tensor> w;
    for (const auto& [name, t] : m.named_parameters()) w[name] = t;
    auto param = [&](const std::string& name) {
      auto it = w.find(name);
      LOOM_CHECK(it != w.end(), "KVDecoder: the model has no parameter '", name, "'");
      return it->second;
    };
    const int64_t hd = d_ / heads_;
    id_ = g.placeholder("kv/id", {1}, int64);
    pos_ = g.placeholder("kv/pos", {1}, int64);
    slot_ = g.placeholder("kv/slot", {max_len_, 1});
    mask_ = g.placeholder("kv/mask", {1, max_len_});
    Tensor x = gather(param("encoder/weight"), id_) * std::sqrt(double(d_)) + gather(param("pos/weight"), pos_);  // [1, d]
    std::vector<Tensor> writes;
    auto norm = [&](const Tensor& v, const std::string& p) {
      return loom::layer_norm(v, param(p + "/weight"), param(p + "/bias"), 1, 1e-5).y;
    };
    auto linear = [&](const Tensor& v, const std::string& p) {
      return matmul(v, transpose(param(p + "/weight"))) + param(p + "/bias");
    };
    for (int64_t l = 0; l < a.layers; ++l) {
      const std::string p = "transformer/layers/" + std::to_string(l);
      Tensor h = norm(x, p + "/norm1");
      Tensor qkv = matmul(h, transpose(param(p + "/self_attn/in_proj_weight"))) + param(p + "/self_attn/in_proj_bias");
      std::vector<Tensor> parts = split(reshape(qkv, {3, heads_, 1, hd}), 3, 0);  // q, k, v [1, heads, 1, hd]
      const Tensor keep = 1.0 - slot_;
      std::vector<Tensor> kv;
      for (int i = 1; i <= 2; ++i) {
        Tensor cache = g.variable("kv/" + std::to_string(l) + (i == 1 ? "/k" : "/v"), {heads_, max_len_, hd}, init::zeros());
        Tensor next = cache * keep + reshape(parts[size_t(i)], {heads_, 1, hd}) * slot_;  // written at the slot
        writes.push_back(assign(cache, next));
        kv.push_back(next);
      }
      Tensor y = scaled_dot_product_attention(reshape(parts[0], {heads_, 1, hd}), kv[0], kv[1], {.mask = mask_});
      x = x + linear(reshape(y, {1, d_}), p + "/self_attn/out_proj");  // [heads, 1, hd] -> [1, d]
      Tensor f = linear(relu(linear(norm(x, p + "/norm2"), p + "/linear1")), p + "/linear2");
      x = x + f;
    }
    logits_ = linear(norm(x, "transformer/norm"), "decoder");
    update_ = group(writes);
  }

  /// Logits [vocab] after appending `id` at the next position. When the
  /// cache is full, the last half of the context is fed again (positions are
  /// absolute, so the window moves in halves, not token by token).
  std::vector<float> next(Session& s, int64_t id) {
    if (int64_t(context_.size()) == max_len_) {
      std::vector<int64_t> keep(context_.end() - max_len_ / 2, context_.end());
      reset();
      for (int64_t k : keep) run(s, k);
    }
    return run(s, id);
  }

  /// Starts a new text: the slots past the position are masked, so nothing needs clearing.
  void reset() { context_.clear(); }

 private:
  std::vector<float> run(Session& s, int64_t id) {
    const int64_t t = int64_t(context_.size());
    NDArray slot = NDArray::zeros({max_len_, 1}), mask = NDArray::full({1, max_len_}, -INFINITY);
    slot.data<float>()[t] = 1;
    for (int64_t j = 0; j <= t; ++j) mask.data<float>()[j] = 0;
    Feeds feeds{{id_, NDArray::from<int64_t>({id}, {1})}, {pos_, NDArray::from<int64_t>({t}, {1})},
                {slot_, slot}, {mask_, mask}};
    NDArray logits = s.run({logits_}, feeds, {update_})[0];
    context_.push_back(id);
    return logits.astype(float32).to_vector<float>();
  }

  int64_t max_len_, heads_, d_;
  Tensor id_, pos_, slot_, mask_, logits_, update_;
  std::vector<int64_t> context_;
};

/// The graph and session of one training run: the model, built lazily for
/// each (mode, sequence length) it is run with, over shared variables.
class LM {
 public:
  enum class Mode { train, eval, generate };

  LM(const LMConfig& a, int64_t vocab) : a_(a), vocab_(vocab) {
    if (transformer())
      tf_ = std::make_unique<TransformerLM>(vocab, a);
    else
      rnn_ = std::make_unique<nn::LanguageModel>(vocab, options(a));
  }
  bool transformer() const { return a_.model == "transformer"; }

  /// The step graph for `mode` and length T (built on first use).
  struct Step {
    Tensor ids, target, loss, logits;
    nn::RNNState in, out;  // initial state (variables or placeholders) and final state
    Tensor carry;          // target: assigns the final state to the variables, and the update when training
    int64_t batch = 0;
    double compile_ms = -1;
  };

  Step& step(Mode mode, int64_t T) {
    auto key = std::make_pair(int(mode), T);
    auto it = steps_.find(key);
    if (it != steps_.end()) return it->second;
    const int64_t B = mode == Mode::train ? a_.batch : mode == Mode::eval ? a_.eval_batch : 1;
    const std::string tag = mode == Mode::train ? "train" : mode == Mode::eval ? "eval" : "generate";
    Step s;
    s.batch = B;
    const std::string name = tag + "_T" + std::to_string(T);
    s.ids = g_.placeholder(name + "/ids", {T, B}, int64);
    s.target = g_.placeholder(name + "/target", {T * B}, int64);
    if (tf_) {
      tf_->train(mode == Mode::train);
      s.logits = (*tf_)(s.ids);
      tf_->train();
      s.loss = nn::cross_entropy(reshape(s.logits, {T * B, vocab_}), s.target);
      if (mode == Mode::train) s.carry = optimizer().minimize(s.loss);
      return steps_.emplace(key, s).first->second;
    }
    const bool lstm = rnn_->options().cell == nn::CellKind::lstm;
    const Shape state{a_.layers, B, a_.hidden};
    State& vars = state_vars(tag, state, lstm);
    if (feed_state(mode)) {
      s.in.h = g_.placeholder(name + "/h0", state);
      if (lstm) s.in.c = g_.placeholder(name + "/c0", state);
    } else {
      s.in = {vars.h, vars.c};
    }
    rnn_->train(mode == Mode::train);
    auto [logits, out] = (*rnn_)(s.ids, s.in);
    rnn_->train();
    s.logits = logits, s.out = out;
    s.loss = nn::cross_entropy(reshape(logits, {T * B, vocab_}), s.target);
    std::vector<Tensor> targets;
    if (!feed_state(mode)) {
      targets.push_back(assign(vars.h, out.h));
      if (lstm) targets.push_back(assign(vars.c, out.c));
    }
    if (mode == Mode::train) targets.push_back(optimizer().minimize(s.loss));
    if (!targets.empty()) s.carry = group(targets);
    return steps_.emplace(key, s).first->second;
  }

  Session& session() {
    if (!session_) {
      // The optimizer's variables must exist before the first run initializes the graph.
      optimizer_or_build();
      session_ = std::make_unique<Session>(
          g_, SessionOptions{.device = Device::parse(a_.device),
                             .threads = a_.threads,
                             .executor = a_.executor == "parallel" ? Executor::parallel : Executor::serial,
                             .seed = a_.seed,
                             .profile = a_.profile});
      session_->initialize();  // now, so that the first plan's compile time is only compilation
    }
    return *session_;
  }

  /// Runs one batch; returns its mean loss. Feeds or keeps the state as --carry says.
  double run(Mode mode, const data::TextBatch& b) {
    Step& s = step(mode, b.data.shape()[0]);
    Session& ses = session();
    const int compiled = ses.stats().plans_compiled;
    const double loss = run_step(s, mode, b);
    if (s.compile_ms < 0 && ses.stats().plans_compiled > compiled) s.compile_ms = ses.stats().last_plan.compile_ms;
    return loss;
  }

  /// The plan compile time of the (mode, T) step, once it has run (else -1).
  double compile_ms(Mode mode, int64_t T) const {
    auto it = steps_.find({int(mode), T});
    return it == steps_.end() ? -1 : it->second.compile_ms;
  }

  /// The statistics of the plan that ran last.
  PlanStats plan_stats() const { return session_ ? session_->stats().last_plan : PlanStats{}; }

  /// Zeroes the recurrent state of `mode` (at the start of every epoch and evaluation).
  void reset(Mode mode) {
    if (tf_) {
      if (kv_) kv_->reset();
      return;
    }
    if (feed_state(mode)) {
      fed_.erase(int(mode));
      return;
    }
    const std::string tag = mode == Mode::train ? "train" : mode == Mode::eval ? "eval" : "generate";
    auto it = vars_.find(tag);
    if (it == vars_.end()) return;
    Session& ses = session();
    ses.set(it->second.h, NDArray::zeros(it->second.h.shape()));
    if (it->second.c.valid()) ses.set(it->second.c, NDArray::zeros(it->second.c.shape()));
  }

  /// Logits [vocab] of the next word after feeding `id` (generation, batch 1).
  std::vector<float> next_logits(int64_t id) {
    if (tf_) {
      if (!kv_) kv_ = std::make_unique<KVDecoder>(g_, *tf_, a_);
      return kv_->next(session(), id);
    }
    Step& s = step(Mode::generate, 1);
    NDArray ids = NDArray::from<int64_t>({id}, {1, 1}), target = NDArray::from<int64_t>({0}, {1});
    NDArray logits = session().run({s.logits}, {{s.ids, ids}, {s.target, target}}, {s.carry})[0];
    return logits.astype(float32).to_vector<float>();
  }

  nn::Module& model() { return rnn_ ? static_cast<nn::Module&>(*rnn_) : *tf_; }
  Graph& graph() { return g_; }
  /// The learning-rate factor (a variable, so --anneal survives --save/--load).
  Tensor lr_factor() {
    optimizer_or_build();
    return lr_factor_;
  }
  /// What checkpoints hold: the model, the optimizer's state and the lr factor.
  std::vector<Tensor> checkpoint_variables() {
    std::vector<Tensor> v = model().variables();
    for (const Tensor& t : optimizer().state()) v.push_back(t);
    v.push_back(lr_factor());
    return v;
  }

 private:
  double run_step(Step& s, Mode mode, const data::TextBatch& b) {
    Session& ses = session();
    Feeds feeds{{s.ids, b.data}, {s.target, b.target}};
    if (feed_state(mode)) {
      State& held = fed_[int(mode)];
      if (!held.value_h.defined()) reset_fed(held, s.batch);
      feeds.push_back({s.in.h, held.value_h});
      if (s.in.c.valid()) feeds.push_back({s.in.c, held.value_c});
      std::vector<Tensor> fetch{s.loss, s.out.h};
      if (s.out.c.valid()) fetch.push_back(s.out.c);
      std::vector<Tensor> targets;
      if (s.carry.valid()) targets.push_back(s.carry);
      auto out = ses.run(fetch, feeds, targets);
      held.value_h = out[1];
      if (s.out.c.valid()) held.value_c = out[2];
      return out[0].item();
    }
    if (!s.carry.valid()) return ses.run({s.loss}, feeds)[0].item();
    return ses.run({s.loss}, feeds, {s.carry})[0].item();
  }

  struct State {
    Tensor h, c;
    NDArray value_h, value_c;
  };

  static nn::LanguageModelOptions options(const LMConfig& a) {
    return {.cell = nn::parse_cell_kind(a.model),
            .embed = a.embed,
            .hidden = a.hidden,
            .layers = a.layers,
            .dropout = a.dropout,
            .fused = !a.composite,
            .tie_weights = a.tied};
  }

  bool feed_state(Mode mode) const { return !tf_ && a_.carry == "feed" && mode != Mode::generate; }

  State& state_vars(const std::string& tag, const Shape& shape, bool lstm) {
    auto it = vars_.find(tag);
    if (it != vars_.end()) return it->second;
    State s;
    s.h = g_.variable("state/" + tag + "/h", shape, init::zeros());
    if (lstm) s.c = g_.variable("state/" + tag + "/c", shape, init::zeros());
    return vars_.emplace(tag, s).first->second;
  }

  void reset_fed(State& held, int64_t B) {
    held.value_h = NDArray::zeros({a_.layers, B, a_.hidden});
    held.value_c = NDArray::zeros({a_.layers, B, a_.hidden});
  }

  void optimizer_or_build() {
    if (!optimizer_) step(Mode::train, a_.bptt);
  }

  optim::Optimizer& optimizer() {
    if (optimizer_) return *optimizer_;
    lr_factor_ = g_.variable("lr_factor", {}, init::ones());
    Tensor f = lr_factor_;
    optim::Schedule sched = [f](const Tensor&) { return f; };
    if (a_.opt == "sgd")
      optimizer_ = std::make_unique<optim::SGD>(model(), optim::SGDOptions{.lr = a_.lr, .clip_norm = a_.clip, .schedule = sched});
    else if (a_.opt == "adam")
      optimizer_ = std::make_unique<optim::Adam>(model(), optim::AdamOptions{.lr = a_.lr, .clip_norm = a_.clip, .schedule = sched});
    else
      fail("unknown --opt '", a_.opt, "' (sgd, adam)");
    return *optimizer_;
  }

  const LMConfig& a_;
  int64_t vocab_;
  Graph g_;
  std::unique_ptr<nn::LanguageModel> rnn_;
  std::unique_ptr<TransformerLM> tf_;
  std::unique_ptr<KVDecoder> kv_;
  std::unique_ptr<optim::Optimizer> optimizer_;
  Tensor lr_factor_;
  std::map<std::pair<int, int64_t>, Step> steps_;
  std::map<std::string, State> vars_;
  std::map<int, State> fed_;
  std::unique_ptr<Session> session_;
};

struct EpochResult {
  double loss = 0;  // mean per token
  int64_t tokens = 0;
  double seconds = 0;
};

/// One pass over `source` in bptt chunks: training when mode is train.
/// At most `max_batches` batches when positive (timing runs).
inline EpochResult pass(LM& lm, LM::Mode mode, const NDArray& source, int64_t bptt, const std::string& what, Progress* bar,
                        int64_t max_batches = 0) {
  EpochResult r;
  lm.reset(mode);
  std::vector<int64_t> starts = data::batch_starts(source, bptt, what);
  if (max_batches > 0 && int64_t(starts.size()) > max_batches) starts.resize(size_t(max_batches));
  auto t0 = Clock::now();
  double total = 0;
  int64_t done = 0;
  for (int64_t i : starts) {
    data::TextBatch b = data::get_batch(source, i, bptt);
    const double l = lm.run(mode, b);
    const int64_t n = b.target.numel();
    total += l * double(n);
    r.tokens += n;
    if (mode == LM::Mode::train && !std::isfinite(l))
      fail("the training loss became ", l, " at batch ", done + 1, "; try a smaller --lr or a --clip");
    if (bar) bar->update(++done, r.tokens, total / double(r.tokens), std::exp(total / double(r.tokens)));
  }
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  r.loss = total / double(r.tokens);
  return r;
}

struct Generated {
  std::string text;
  double seconds = 0;  // sampling and feeding back the words, after the prompt was read
  double cpu_seconds = 0;  // the process's CPU time for that (all threads): steadier on a busy machine
  double prompt_seconds = 0;
};

/// Samples `count` words after `prompt` from the model (softmax of the logits / temperature).
inline Generated generate(LM& lm, const data::Dictionary& dict, const std::string& prompt, int64_t count,
                          double temperature, uint64_t seed) {
  lm.reset(LM::Mode::generate);
  std::vector<int64_t> ids;
  const int64_t unk = dict.find("<unk>"), eos = dict.find("<eos>");
  for (const std::string& w : data::tokenize_text(prompt)) {
    int64_t id = dict.find(w);
    if (id < 0) {
      LOOM_CHECK(unk >= 0, "--prompt: '", w, "' is not in the vocabulary (and the corpus has no <unk>)");
      id = unk;
    }
    ids.push_back(id);
  }
  if (ids.empty()) ids.push_back(eos >= 0 ? eos : 0);
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) text += (i ? " " : "") + dict.word(ids[i]);
  std::vector<float> logits;
  auto t0 = Clock::now();
  for (int64_t id : ids) logits = lm.next_logits(id);
  auto t1 = Clock::now();
  const std::clock_t c1 = std::clock();
  std::mt19937_64 rng(seed + 1);
  for (int64_t k = 0; k < count; ++k) {
    // softmax(logits / T), sampled.
    double top = -INFINITY;
    for (float v : logits) top = std::max(top, double(v));
    std::vector<double> p(logits.size());
    for (size_t j = 0; j < p.size(); ++j) p[j] = std::exp((double(logits[j]) - top) / temperature);
    std::discrete_distribution<int64_t> pick(p.begin(), p.end());
    const int64_t id = pick(rng);
    const std::string& w = dict.word(id);
    text += id == eos ? "\n" : (text.empty() || text.back() == '\n' ? "" : " ") + w;
    logits = lm.next_logits(id);  // each sampled word is fed back: one run per word
  }
  const auto t2 = Clock::now();
  return {text, std::chrono::duration<double>(t2 - t1).count(), double(std::clock() - c1) / CLOCKS_PER_SEC,
          std::chrono::duration<double>(t1 - t0).count()};
}

/// The PTB directory to read: `data` when given, else the fortunes in
/// `fortunes` converted into `corpus_dir` (default_corpus_dir() when empty),
/// with a line about it on `info`.
inline std::string prepare_corpus(const std::string& data, const std::string& fortunes, std::string corpus_dir,
                                  int64_t min_count, std::ostream& info) {
  if (!data.empty()) return data;
  if (corpus_dir.empty()) corpus_dir = default_corpus_dir();
  data::FortunesStats st = data::fortunes_to_ptb(fortunes, corpus_dir, {.min_count = min_count});
  info << "corpus: " << st.files << " fortune files from " << fortunes << " -> " << corpus_dir << " ("
       << st.train.entries + st.valid.entries + st.test.entries << " fortunes, vocabulary " << st.vocab << "; train "
       << st.train.tokens << ", valid " << st.valid.tokens << ", test " << st.test.tokens << " tokens)\n";
  return corpus_dir;
}

}  // namespace loom::samples
