// train_lm's Transformer language model (samples/lm.hpp): the KV-cache
// decoder that --generate runs gives, token by token, the logits of the full
// causal model over the same context (also after the window moves), and the
// training step learns.

#include "samples/lm.hpp"
#include "tests/util.hpp"

using namespace loom;
using loom::samples::LM;
using loom::test::allclose;

namespace {

samples::LMConfig small_transformer() {
  samples::LMConfig a;
  a.model = "transformer";
  a.layers = 2, a.d_model = 16, a.heads = 2, a.ffn = 24, a.bptt = 8, a.batch = 2, a.eval_batch = 1;
  a.dropout = 0, a.opt = "adam", a.lr = 1e-2, a.clip = 0, a.seed = 5;
  return a;
}

/// The full model's logits [T, vocab] over `ids` (one sequence, eval mode).
NDArray full_logits(LM& lm, const std::vector<int64_t>& ids) {
  const int64_t T = int64_t(ids.size());
  LM::Step& st = lm.step(LM::Mode::eval, T);
  NDArray x = NDArray::from<int64_t>(ids, {T, 1}), y = NDArray::zeros({T}, int64);
  NDArray logits = lm.session().run({st.logits}, {{st.ids, x}, {st.target, y}})[0];
  return logits.reshape({T, logits.shape().back()});
}

NDArray row(const NDArray& m, int64_t i) {
  const int64_t V = m.shape()[1];
  std::vector<float> r(m.data<float>() + i * V, m.data<float>() + (i + 1) * V);
  return NDArray::from<float>(r, {V});
}

}  // namespace

TEST_SUITE("samples/lm") {
  TEST_CASE("the KV-cache decoder gives the full model's logits at every position, and after the window moves") {
    const samples::LMConfig a = small_transformer();
    const int64_t V = 11;
    LM lm(a, V);
    lm.session();
    const std::vector<int64_t> ids = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3};
    NDArray full = full_logits(lm, {ids.begin(), ids.begin() + 8});
    lm.reset(LM::Mode::generate);
    for (int64_t t = 0; t < 8; ++t) {
      INFO("position ", t);
      NDArray step = NDArray::from<float>(lm.next_logits(ids[size_t(t)]), {V});
      CHECK(allclose(step, row(full, t), 1e-4, 1e-5));
    }
    // The cache (8 positions) is full: the last 4 tokens are fed again at positions 0..3, then ids[8] at 4.
    NDArray moved = full_logits(lm, {ids.begin() + 4, ids.begin() + 9});
    NDArray step = NDArray::from<float>(lm.next_logits(ids[8]), {V});
    CHECK(allclose(step, row(moved, 4), 1e-4, 1e-5));
    // A new text starts at position 0 again.
    lm.reset(LM::Mode::generate);
    NDArray first = NDArray::from<float>(lm.next_logits(ids[0]), {V});
    CHECK(allclose(first, row(full, 0), 1e-4, 1e-5));
  }

  TEST_CASE("the Transformer LM's training step learns a repeated text") {
    const samples::LMConfig a = small_transformer();
    const int64_t V = 11;
    LM lm(a, V);
    std::vector<int64_t> text;
    for (int i = 0; i < 40; ++i) text.push_back(i % 7);
    const NDArray source = data::batchify(text, a.batch);
    const double first = samples::pass(lm, LM::Mode::train, source, a.bptt, "train", nullptr).loss;
    double last = first;
    for (int e = 0; e < 30; ++e) last = samples::pass(lm, LM::Mode::train, source, a.bptt, "train", nullptr).loss;
    CHECK(first > 1.5);
    CHECK(last < 0.5 * first);
  }
}
