// Image layers and the dropout family against PyTorch: ChannelShuffle,
// Unfold/Fold, LocalResponseNorm, LPPool1d/2d, InstanceNorm1d (literal
// PyTorch 2.15 outputs in float64, tests/frontend/vision_tables.inc), their
// gradients by central differences, Dropout1d/2d/3d and the alpha dropouts
// by their defining rules, and the errors users see.

#include <cmath>

#include "frontend/loom.hpp"
#include "ops/check.hpp"
#include "tests/util.hpp"

using namespace loom;
using loom::test::contains;
using loom::test::error_of;

namespace {

// clang-format off
#include "tests/frontend/vision_tables.inc"
// clang-format on

/// PyTorch's test inputs: element i is f(i).
NDArray arr(const Shape& s, double (*f)(double)) {
  std::vector<double> v(size_t(numel(s)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = f(double(i));
  return NDArray::from<double>(v, s);
}
double mixed(double i) { return std::fmod(i * 7, 11) / 3 - 1; }
double positive(double i) { return 0.3 + std::fmod(i * 5, 7) / 4; }

/// fn applied to a float64 placeholder fed `in`, checked against PyTorch's values.
void check_values(const NDArray& in, const std::function<Tensor(const Tensor&)>& fn, const std::vector<double>& want,
                  const Shape& shape) {
  Graph g;
  Tensor x = g.placeholder("x", in.shape(), float64);
  Tensor y = fn(x);
  REQUIRE(y.shape() == shape);
  const std::vector<double> got = Session(g).run({y}, {{x, in}})[0].to_vector<double>();
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-13));
  }
}

void check_gradients(const std::function<std::vector<Tensor>(const std::vector<Tensor>&)>& f, const NDArray& in) {
  const CheckResult r = check_gradient_fn(f, {in}, {0});
  CHECK_MESSAGE(r.ok, r.detail);
}

}  // namespace

TEST_SUITE("frontend/vision") {
  TEST_CASE("Unfold and Fold equal PyTorch's F.unfold and F.fold (of the unfolded input); gradients") {
    const nn::UnfoldOptions o{.dilation = {1, 2}, .padding = {1, 0}, .stride = {2, 1}};
    const NDArray x = arr({2, 3, 5, 7}, mixed);
    check_values(x, [&](const Tensor& t) { return nn::unfold(t, {2, 3}, o); }, kUnfold, {2, 18, 9});
    check_values(x,
                 [&](const Tensor& t) {
                   return nn::fold(nn::unfold(t, {2, 3}, o), {5, 7}, {2, 3}, o);
                 },
                 kFold, {2, 3, 5, 7});
    nn::Unfold unfold({2, 3}, o);
    nn::Fold fold({5, 7}, {2, 3}, o);
    CHECK(unfold.describe() == "Unfold(kernel_size=(2, 3), dilation=(1, 2), padding=(1, 0), stride=(2, 1))");
    CHECK(fold.describe() ==
          "Fold(output_size=(5, 7), kernel_size=(2, 3), dilation=(1, 2), padding=(1, 0), "
          "stride=(2, 1))");
    check_gradients(
        [&](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{
              nn::unfold(in[0], {2, 2}, {.padding = {1}, .stride = {2}}),
              nn::fold(nn::unfold(in[0], {3}, {.dilation = {2}}), {5, 5}, {3}, {.dilation = {2}})};
        },
        test::rand({1, 2, 5, 5}, 3, float64));
    // Errors name the function and what was expected.
    Graph g;
    Tensor img = g.placeholder("img", {1, 2, 4, 4});
    CHECK(contains(error_of([&] { nn::unfold(img, {5}); }), "does not fit the padded input 4 x 4"));
    CHECK(contains(error_of([&] { nn::unfold(g.placeholder("v", {2, 4, 4}), {2}); }), "unfold: expected [N, C, H, W]"));
    CHECK(contains(error_of([&] { nn::unfold(img, {2}, {.stride = {0}}); }), "must be positive"));
    CHECK(contains(error_of([&] {
                     nn::fold(g.placeholder("c", {1, 8, 5}), {4, 4}, {2});
                   }),
                   "fold: expected [N, C * 4, 9]"));
    CHECK(contains(error_of([&] { nn::fold(g.placeholder("c3", {1, 6, 9}), {4, 4}, {2}); }), "got [1,6,9]"));
  }

  TEST_CASE("LocalResponseNorm equals PyTorch's (odd and even windows, 3-D and 4-D); gradients") {
    check_values(arr({2, 5, 3, 3}, mixed), [](const Tensor& t) { return nn::LocalResponseNorm(3, 1e-2, 0.75, 1.0)(t); },
                 kLrn3, {2, 5, 3, 3});
    check_values(arr({1, 6, 2, 3}, mixed), [](const Tensor& t) { return nn::local_response_norm(t, 4, 0.5, 0.6, 2.0); },
                 kLrn4, {1, 6, 2, 3});
    check_values(arr({2, 4, 5}, mixed), [](const Tensor& t) { return nn::local_response_norm(t, 2); }, kLrn3d,
                 {2, 4, 5});
    CHECK(nn::LocalResponseNorm(5).describe() == "LocalResponseNorm(5, alpha=0.0001, beta=0.75, k=1)");
    check_gradients(
        [](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{nn::local_response_norm(in[0], 3, 0.3, 0.7, 1.5)};
        },
        test::rand({2, 4, 2, 3}, 4, float64));
    Graph g;
    CHECK(contains(error_of([&] { nn::local_response_norm(g.placeholder("x", {2, 4}), 3); }), "3 or more dims"));
    CHECK(contains(error_of([&] { nn::local_response_norm(g.placeholder("x3", {2, 4, 5}), 0); }), "size must be in"));
  }

  TEST_CASE("LPPool2d and LPPool1d equal PyTorch's (ceil_mode scales a cut window as PyTorch does); gradients") {
    check_values(arr({1, 2, 4, 5}, mixed),
                 [](const Tensor& t) {
                   return nn::LPPool2d(2.0, {2}, {2, 1})(t);
                 },
                 kLp2, {1, 2, 2, 4});
    check_values(arr({1, 2, 7}, positive), [](const Tensor& t) { return nn::LPPool1d(3.0, 3, 2)(t); }, kLp1, {1, 2, 3});
    check_values(arr({1, 1, 5, 5}, positive), [](const Tensor& t) { return nn::lp_pool2d(t, 1.5, {2}, {}, true); },
                 kLp2ceil, {1, 1, 3, 3});
    CHECK(nn::LPPool2d(2.0, {3, 2}).describe() == "LPPool2d(norm_type=2, kernel_size=(3, 2), stride=(3, 2))");
    CHECK(nn::LPPool1d(1.5, 3, 2, true).describe() ==
          "LPPool1d(norm_type=1.5, kernel_size=3, stride=2, ceil_mode=true)");
    check_gradients(
        [](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{nn::lp_pool2d(in[0], 2.5, {2, 3}, {1, 2})};
        },
        test::rand({1, 2, 4, 5}, 5, float64, 0.2, 1.5));
    CHECK(contains(error_of([] { nn::LPPool2d(0.0, {2}); }), "p must be finite and positive"));
    CHECK(contains(error_of([] { nn::LPPool1d(INFINITY, 2); }), "p must be finite and positive"));
  }

  TEST_CASE("MaxPool2d and MaxPool1d with dilation (values, ceil_mode, return_indices) equal PyTorch's; gradients") {
    // clang-format off
#include "tests/frontend/dilated_pool_tables.inc"
    // clang-format on
    auto wave = [](double i) { return std::sin(0.731 * i + 0.2); };
    nn::MaxPool2d pool({2, 3}, {.stride = {1, 2}, .padding = {1, 1}, .dilation = {2}});
    nn::MaxPool2d ceil(3, {.stride = {2}, .padding = {1}, .ceil_mode = true, .dilation = {2}});
    CHECK(pool.describe() == "MaxPool2d(kernel=(2, 3), stride=(1, 2), padding=(1, 1), dilation=(2, 2))");
    Graph g;
    Tensor x = g.placeholder("x", {1, 2, 7, 9}, float64), x2 = g.placeholder("x2", {1, 1, 8, 8}, float64),
           x3 = g.placeholder("x3", {2, 2, 9}, float64);
    nn::MaxPool1d pool1(3, 2, 1, false, 3);
    CHECK(pool1.describe() == "MaxPool1d(kernel=3, stride=2, padding=1, dilation=3)");
    const std::vector<NDArray> out =
        Session(g).run({pool(x), pool.indices(x), ceil(x2), ceil.indices(x2), pool1(x3)},
                       {{x, arr({1, 2, 7, 9}, wave)}, {x2, arr({1, 1, 8, 8}, wave)}, {x3, arr({2, 2, 9}, wave)}});
    const std::vector<const std::vector<double>*> want{&kDilPool, &kDilIdx, &kDilCeil, &kDilCeilIdx, &kDil1d};
    for (size_t k = 0; k < out.size(); ++k) {
      CAPTURE(k);
      const std::vector<double> v = out[k].astype(float64).to_vector<double>();
      REQUIRE(v.size() == want[k]->size());
      for (size_t i = 0; i < v.size(); ++i) CHECK(v[i] == doctest::Approx((*want[k])[i]).epsilon(1e-15));
    }
    check_gradients(
        [](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{
              nn::MaxPool2d(2, {.stride = {1}, .padding = {1}, .ceil_mode = true, .dilation = {2, 3}})(in[0])};
        },
        test::rand({1, 2, 5, 6}, 7, float64));
    CHECK(contains(error_of([] { nn::MaxPool2d(2, {.dilation = {0}}); }), "dilation must be positive"));
    CHECK(contains(error_of([] { nn::AvgPool2d(2, {.dilation = {2}}); }), "AvgPool2d: no dilation"));
    CHECK(contains(error_of([&] { nn::MaxPool2d(3, {.padding = {2}, .dilation = {2}})(x); }),
                   "padding at most half the kernel"));
  }

  TEST_CASE("InstanceNorm1d equals PyTorch's; ChannelShuffle regroups the channels") {
    check_values(arr({2, 3, 5}, mixed), [](const Tensor& t) { return nn::InstanceNorm1d(3)(t); }, kIn1d, {2, 3, 5});
    CHECK(nn::InstanceNorm1d(3).describe() == "InstanceNorm1d(3, eps=1e-05)");
    Graph g;
    CHECK(contains(error_of([&] {
                     nn::InstanceNorm1d(3)(g.placeholder("x", {2, 3, 4, 4}));
                   }),
                   "expected input [N, 3, L]"));
    // Channel c of the output is channel (c % g) * (C/g) + c / g of the input: [0, 2, 4, 1, 3, 5], PyTorch's.
    Tensor x = g.placeholder("s", {2, 6, 2, 3}, float64);
    nn::ChannelShuffle shuffle(3);
    Tensor y = shuffle(x);
    CHECK(shuffle.describe() == "ChannelShuffle(groups=3)");
    const NDArray in = test::rand({2, 6, 2, 3}, 6, float64), out = Session(g).run({y}, {{x, in}})[0];
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t c = 0; c < 6; ++c)
        for (int64_t i = 0; i < 6; ++i) {
          const int64_t src = (c % 3) * 2 + c / 3;
          CHECK(out.at({n, c, i / 3, i % 3}) == in.at({n, src, i / 3, i % 3}));
        }
    CHECK(contains(error_of([&] { nn::channel_shuffle(x, 4); }), "the 6 channels must split into 4 groups"));
  }

  TEST_CASE("the dropout family: whole channels (1d, 2d, 3d), alpha dropout's two values, eval is the identity") {
    Graph g;
    Tensor x1 = g.placeholder("x1", {4, 8, 5}), x2 = g.placeholder("x2", {4, 8, 3, 3}),
           x3 = g.placeholder("x3", {4, 8, 2, 2, 2}), xa = g.placeholder("xa", {64, 64});
    nn::Dropout1d d1(0.5);
    nn::Dropout2d d2(0.5);
    nn::Dropout3d d3(0.5);
    nn::AlphaDropout alpha(0.2);
    nn::FeatureAlphaDropout feature(0.3);
    const std::vector<Tensor> ys{d1(x1), d2(x2), d3(x3), alpha(xa), feature(x2)};
    CHECK(d3.describe() == "Dropout3d(p=0.5)");
    CHECK(feature.describe() == "FeatureAlphaDropout(p=0.3)");
    Session s(g, {.seed = 3});
    const NDArray v1 = test::rand({4, 8, 5}, 1, float32, 0.5, 1.5), v2 = test::rand({4, 8, 3, 3}, 2, float32, 0.5, 1.5),
                  v3 = test::rand({4, 8, 2, 2, 2}, 3, float32, 0.5, 1.5), va = test::rand({64, 64}, 4);
    const std::vector<NDArray> out = s.run(ys, {{x1, v1}, {x2, v2}, {x3, v3}, {xa, va}});
    // A channel is all zeros or all scaled by 2; both kinds occur.
    for (size_t k = 0; k < 3; ++k) {
      const NDArray& in = k == 0 ? v1 : k == 1 ? v2 : v3;
      const int64_t per = in.numel() / 32;
      const float *a = in.data<float>(), *b = out[k].data<float>();
      int dropped = 0;
      for (int64_t c = 0; c < 32; ++c) {
        const bool zero = b[c * per] == 0;
        dropped += zero;
        for (int64_t i = 0; i < per; ++i) CHECK(b[c * per + i] == doctest::Approx(zero ? 0.0 : 2.0 * a[c * per + i]));
      }
      CHECK(dropped > 4);
      CHECK(dropped < 28);
    }
    // Alpha dropout: a x + a alpha' p where kept, a alpha' (p - 1) where dropped (PyTorch's formula).
    auto check_alpha = [](const NDArray& in, const NDArray& y, double p, int64_t per) {
      const double alpha = 1.7580993408473766, a = 1 / std::sqrt((alpha * alpha * p + 1) * (1 - p));
      int64_t dropped = 0;
      for (int64_t c = 0; c < in.numel() / per; ++c) {
        const bool drop = std::fabs(y.data<float>()[c * per] - a * alpha * (p - 1)) < 1e-5;
        dropped += drop;
        for (int64_t i = c * per; i < (c + 1) * per; ++i)
          CHECK(y.data<float>()[i] ==
                doctest::Approx(drop ? a * alpha * (p - 1) : a * in.data<float>()[i] + a * alpha * p).epsilon(1e-5));
      }
      return double(dropped) / double(in.numel() / per);
    };
    CHECK(check_alpha(va, out[3], 0.2, 1) == doctest::Approx(0.2).epsilon(0.25));
    const double channels_dropped = check_alpha(v2, out[4], 0.3, 9);
    CHECK(channels_dropped > 0.05);
    CHECK(channels_dropped < 0.6);
    // Eval: the identity.
    d2.eval(), alpha.eval();
    CHECK(d2(x2).is(x2));
    CHECK(alpha(xa).is(xa));
    // Ranks are checked.
    CHECK(contains(error_of([&] { d1(x2); }), "expected input [N, C, L]"));
    CHECK(contains(error_of([&] { d3(x2); }), "expected input [N, C, D, H, W]"));
    CHECK(contains(error_of([] { nn::AlphaDropout(1.5); }), "p must be in [0, 1]"));
  }
}
