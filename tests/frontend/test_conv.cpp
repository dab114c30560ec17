// Convolutional modules, the CNN and ResNet9 models, the CIFAR-10 reader and
// the image transforms for any channel count.

#include <cmath>
#include <fstream>
#include <numeric>

#include "core/philox.hpp"
#include "frontend/loom.hpp"
#include "ops/check.hpp"
#include "tests/util.hpp"

using namespace loom;
using test::contains;
using test::error_of;

namespace {

/// Host float values of a fetched tensor.
std::vector<double> values(const NDArray& a) { return a.to_vector<double>(); }

/// Per-channel mean and biased variance of a host [N, C, H, W] array.
std::pair<std::vector<double>, std::vector<double>> channel_stats(const NDArray& x) {
  const Shape& s = x.shape();
  const std::vector<double> v = values(x);
  std::vector<double> mean(static_cast<size_t>(s[1])), var(static_cast<size_t>(s[1]));
  const int64_t inner = s[2] * s[3], m = s[0] * inner;
  for (int64_t i = 0; i < x.numel(); ++i) mean[size_t((i / inner) % s[1])] += v[size_t(i)] / double(m);
  for (int64_t i = 0; i < x.numel(); ++i) {
    const size_t c = size_t((i / inner) % s[1]);
    var[c] += (v[size_t(i)] - mean[c]) * (v[size_t(i)] - mean[c]) / double(m);
  }
  return {mean, var};
}

/// Writes `records` CIFAR-10 records: label i % 10, pixel p of record i = (i + p) % 256.
void write_cifar(const std::string& path, int64_t records, int first_label = 0) {
  std::ofstream f(path, std::ios::binary);
  for (int64_t i = 0; i < records; ++i) {
    f.put(char((first_label + i) % 10));
    for (int64_t p = 0; p < 3072; ++p) f.put(char((i + p) % 256));
  }
}

}  // namespace

TEST_SUITE("frontend/conv") {
  TEST_CASE("Conv2d: PyTorch's layout, names and default initialization") {
    Graph g;
    Tensor x = g.placeholder("x", {-1, 6, 9, 9});
    nn::Conv2d conv(6, 8, {3, 5}, {.stride = {2}, .padding = {1, 2}, .groups = 2});
    Tensor y = conv(x);
    CHECK(y.shape() == Shape{-1, 8, 5, 5});
    auto named = conv.named_parameters();
    REQUIRE(named.size() == 2);
    CHECK(named[0].first == "weight");
    CHECK(named[0].second.shape() == Shape{8, 3, 3, 5});
    CHECK(named[1].first == "bias");
    Session s(g, {.seed = 5});
    // U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = 6/2 * 3 * 5 for weight and bias.
    const double bound = 1.0 / std::sqrt(45.0);
    for (const Tensor& p : conv.parameters()) {
      std::vector<double> v = values(s.get(p));
      double lo = *std::min_element(v.begin(), v.end()), hi = *std::max_element(v.begin(), v.end());
      CHECK(lo >= -bound);
      CHECK(hi <= bound);
      if (v.size() > 100) CHECK(hi - lo > 1.5 * bound);
    }
    CHECK(conv.describe() == "Conv2d(6, 8, kernel=(3, 5), stride=2, padding=(1, 2), groups=2, bias)");
    std::string e = error_of([&] { conv(g.placeholder("bad", {2, 5, 9, 9})); });
    CHECK(contains(e, "Conv2d"));
    CHECK(contains(e, "expected input [N, 6, H, W], got [2,5,9,9]"));
    CHECK(contains(error_of([] { nn::Conv2d(6, 7, 3, {.groups = 2}); }), "must divide both"));
    // padding="same": PyTorch puts the odd row and column at the bottom and right.
    CHECK(nn::same_padding({4, 2}) == std::vector<int64_t>{1, 2, 0, 1});
    CHECK(nn::same_padding({4, 3}, {2, 1}) == std::vector<int64_t>{3, 3, 1, 1});
    nn::Conv2d same(6, 2, {4, 2}, {.padding = nn::same_padding({4, 2})});
    auto scope = g.scope("same");
    CHECK(same(x).shape() == Shape{-1, 2, 9, 9});
    CHECK(contains(error_of([] { nn::Conv2d(3, 4, int64_t(1) << 31); }), "Conv2d: a weight [4, 3, 2147483648, "));
  }

  TEST_CASE("MaxPool2d indices and MaxUnpool2d: PyTorch's indices, sizes and last-write rule; gradients") {
    // clang-format off
    const std::vector<double> xs{-2.0, -0.25, 1.5, -1.5, 0.25, 2.0, -1.0, 0.75, 2.5, -0.5, 1.25, -1.75, 0.0, 1.75, -1.25, 0.5, 2.25, -0.75, 1.0, -2.0, -0.25, 1.5, -1.5, 0.25, 2.0, -1.0, 0.75, 2.5, -0.5, 1.25, -1.75, 0.0, 1.75, -1.25, 0.5, 2.25, -0.75, 1.0, -2.0, -0.25};
    // PyTorch 2.15: F.max_pool2d(x, 3, stride=1, padding=1, return_indices=True)'s indices (overlapping windows:
    // repeated), and F.max_unpool2d(values * [1..40], those indices, 3, stride=1, padding=1): the last write wins.
    const std::vector<int64_t> i3{5, 5, 8, 8, 8, 5, 5, 8, 8, 8, 16, 16, 8, 8, 8, 16, 16, 16, 13, 13, 1, 7, 7, 7, 4, 1, 7, 7, 7, 4, 15, 7, 7, 7, 9, 15, 15, 12, 12, 14};
    const std::vector<double> u3{0.0, 0.0, 0.0, 0.0, 0.0, 14.0, 0.0, 0.0, 37.5, 0.0, 0.0, 0.0, 0.0, 35.0, 0.0, 0.0, 40.5, 0.0, 0.0, 0.0, 0.0, 39.0, 0.0, 0.0, 60.0, 0.0, 0.0, 85.0, 0.0, 43.75, 0.0, 0.0, 68.25, 0.0, 20.0, 83.25, 0.0, 0.0, 0.0, 0.0};
    // clang-format on
    Graph g;
    Tensor x = g.placeholder("x", {-1, 2, 4, 5}, float64);
    nn::MaxPool2d pool2(2), pool3(3, {.stride = {1}, .padding = {1}});
    Tensor v2 = pool2(x), ix2 = pool2.indices(x), v3 = pool3(x), ix3 = pool3.indices(x);
    nn::MaxUnpool2d unpool2(2), unpool3(3, {.stride = {1}, .padding = {1}});
    std::vector<double> ramp;
    for (int i = 1; i <= 40; ++i) ramp.push_back(i);
    Tensor u2 = unpool2(v2, ix2, {4, 5});
    Tensor u3t = unpool3(v3 * g.constant(NDArray::from(ramp, {1, 2, 4, 5})), ix3);
    Tensor ia = nn::AdaptiveMaxPool2d({3, 2}).indices(x);
    CHECK(ix2.dtype() == int64);
    CHECK(unpool2(v2, ix2).shape() == Shape{-1, 2, 4, 4});  // PyTorch's default size
    CHECK(u3t.shape() == Shape{-1, 2, 4, 5});
    Session s(g);
    const auto r = s.run({ix2, u2, ix3, u3t, ia}, {{x, NDArray::from(xs, {1, 2, 4, 5})}});
    CHECK(r[0].to_vector<int64_t>() == std::vector<int64_t>{5, 8, 16, 13, 1, 7, 15, 12});
    // Unpooled into the 4x5 planes: each maximum back where it was, zeros elsewhere.
    std::vector<double> want_u2(40, 0.0);
    const std::vector<int64_t> ix2v = r[0].to_vector<int64_t>();
    for (size_t o = 0; o < 8; ++o) want_u2[(o / 4) * 20 + size_t(ix2v[o])] = xs[(o / 4) * 20 + size_t(ix2v[o])];
    CHECK(r[1].to_vector<double>() == want_u2);
    CHECK(r[2].to_vector<int64_t>() == i3);
    CHECK(r[3].to_vector<double>() == u3);
    CHECK(r[4].to_vector<int64_t>() == std::vector<int64_t>{5, 8, 5, 8, 16, 13, 7, 7, 7, 7, 15, 12});
    // An index outside the plane is named when run; the size rule as PyTorch's.
    Tensor bad = g.placeholder("bad", {1, 2, 2, 2}, int64);
    Tensor vals = g.placeholder("vals", {1, 2, 2, 2}, float64);
    CHECK(contains(error_of([&] {
                     s.run({unpool2(vals, bad)},
                           {{vals, NDArray::zeros({1, 2, 2, 2}, float64)},
                            {bad, NDArray::from<int64_t>({0, 1, 2, 16, 0, 1, 2, 3}, {1, 2, 2, 2})}});
                   }),
                   "index 16 out of range [0, 16)"));
    CHECK(contains(error_of([&] {
                     unpool2(vals, bad, {6, 4});
                   }),
                   "output_size [6,4] must be within (2, 6) along axis 2"));
    // Gradients: to the kept values, through both directions.
    CheckResult gr = check_gradient_fn(
        [](const std::vector<Tensor>& in) {
          const Tensor ix = in[0].graph().constant(NDArray::from<int64_t>({5, 8, 16, 13, 1, 7, 15, 12}, {1, 2, 2, 2}));
          const Tensor up = max_unpool2d(in[0], ix, {4, 5});
          return std::vector<Tensor>{up * up, in[1].graph().add1("max_unpool2d_grad", {in[1], ix})};
        },
        {NDArray::from<double>({0.5, -1, 2, 0.25, 1.5, -0.5, 3, 1}, {1, 2, 2, 2}), NDArray::from(xs, {1, 2, 4, 5})},
        {0, 1});
    CHECK_MESSAGE(gr.ok, gr.detail);
  }

  TEST_CASE("ConvTranspose2d: conv2d's adjoint, PyTorch's output sizes, layout and initialization; gradients") {
    struct Case {
      Shape x, w;
      nn::ConvTranspose2dOptions o;
      Shape y;  // F.conv_transpose2d's output shape (PyTorch 2)
    };
    const std::vector<Case> cases{
        {{2, 4, 5, 6}, {4, 3, 3, 3}, {}, {2, 3, 7, 8}},
        {{2, 4, 5, 6}, {4, 3, 3, 2}, {.stride = {2}, .padding = {1}, .output_padding = {1}}, {2, 3, 10, 11}},
        {{1, 6, 4, 3},
         {6, 2, 3, 3},
         {.stride = {2, 3}, .padding = {1, 0}, .output_padding = {0, 2}, .groups = 3, .dilation = {2, 1}},
         {1, 6, 9, 11}},
    };
    for (const Case& c : cases) {
      CAPTURE(c.y);
      Graph g;
      Tensor x = g.placeholder("x", {-1, c.x[1], c.x[2], c.x[3]}, float64);
      Tensor w = g.placeholder("w", c.w, float64), u = g.placeholder("u", c.y, float64);
      Tensor y = nn::conv_transpose2d(x, w, Tensor(), c.o);
      CHECK(y.shape() == Shape{-1, c.y[1], c.y[2], c.y[3]});
      // <conv_transpose2d(x, w), u> = <x, conv2d(u, w)>: the transposed convolution is conv2d's adjoint.
      Tensor back = conv2d(u, w, {c.o.stride, c.o.padding, c.o.dilation, c.o.groups});
      Session s(g, {.threads = 1});
      const NDArray xv = test::rand(c.x, 1, float64), wv = test::rand(c.w, 2, float64),
                    uv = test::rand(c.y, 3, float64);
      auto r = s.run({sum(y * u), sum(x * back)}, {{x, xv}, {w, wv}, {u, uv}});
      CHECK(r[0].item() == doctest::Approx(r[1].item()).epsilon(1e-12));
      CheckResult gr = check_gradient_fn(
          [&](const std::vector<Tensor>& in) {
            return std::vector<Tensor>{nn::conv_transpose2d(in[0], in[1], in[2], c.o)};
          },
          {xv, wv, test::rand({c.y[1]}, 4, float64)}, {0, 1, 2});
      CHECK_MESSAGE(gr.ok, gr.detail);
    }
    // The module: PyTorch's weight layout [in, out / groups, kh, kw], fan_in = out / groups * kh * kw.
    Graph g;
    Tensor x = g.placeholder("x", {-1, 8, 4, 4});
    nn::ConvTranspose2d up(8, 6, 4, {.stride = {2}, .padding = {1}, .groups = 2});
    Tensor y = up(x);
    CHECK(y.shape() == Shape{-1, 6, 8, 8});  // DCGAN's doubling
    CHECK(up.named_parameters()[0].second.shape() == Shape{8, 3, 4, 4});
    CHECK(up.describe() == "ConvTranspose2d(8, 6, kernel=(4, 4), stride=2, padding=1, groups=2, bias)");
    Session s(g, {.seed = 5});
    const double bound = 1.0 / std::sqrt(3.0 * 16);
    for (const Tensor& p : up.parameters()) {
      std::vector<double> v = values(s.get(p));
      CHECK(*std::min_element(v.begin(), v.end()) >= -bound);
      CHECK(*std::max_element(v.begin(), v.end()) <= bound);
    }
    CHECK(contains(error_of([&] { up(g.placeholder("bad", {2, 5, 4, 4})); }), "expected input [N, 8, H, W]"));
    auto scope = g.scope("other");
    CHECK(contains(error_of([&] { nn::ConvTranspose2d(8, 4, 3, {.stride = {2}, .output_padding = {2}})(x); }),
                   "output_padding 2 must be smaller than the stride or the dilation"));
    CHECK(contains(error_of([&] {
                     nn::conv_transpose2d(g.placeholder("d", {1, 8, -1, 4}), up.weight(), Tensor());
                   }),
                   "the input's height and width must be known"));
  }

  TEST_CASE("Conv1d, MaxPool1d and AvgPool1d: PyTorch's layouts and formulas; gradients") {
    Graph g;
    Tensor x = g.placeholder("x", {-1, 6, 11}, float64);
    nn::Conv1d conv(6, 4, 3, {.stride = 2, .padding = 2, .dilation = 2, .groups = 2, .dtype = float64});
    Tensor y = conv(x);
    CHECK(y.shape() == Shape{-1, 4, 6});  // F.conv1d's (11 + 4 - 4 - 1) / 2 + 1
    CHECK(conv.weight().shape() == Shape{4, 3, 3});
    CHECK(conv.describe() == "Conv1d(6, 4, kernel=3, stride=2, padding=2, dilation=2, groups=2, bias)");
    Tensor m = nn::MaxPool1d(3, 2, 1)(x), a = nn::AvgPool1d(4, 0, 2, false)(x);
    CHECK(m.shape() == Shape{-1, 6, 6});
    CHECK(a.shape() == Shape{-1, 6, 3});
    Session s(g, {.seed = 2});
    const NDArray xv = test::rand({2, 6, 11}, 3, float64);
    const auto r = s.run({y, m, a}, {{x, xv}});
    // Output (n, o, t) by the definition: group o / 2 reads channels 3 (o / 2) .. + 2 at 2t - 2 + 2j.
    const NDArray wv = s.get(conv.weight()), bv = s.get(conv.bias());
    for (int64_t o = 0; o < 4; ++o)
      for (int64_t t = 0; t < 6; ++t) {
        double want = bv.at({o});
        for (int64_t c = 0; c < 3; ++c)
          for (int64_t j = 0; j < 3; ++j) {
            const int64_t at = 2 * t - 2 + 2 * j;
            if (at >= 0 && at < 11) want += wv.at({o, c, j}) * xv.at({1, 3 * (o / 2) + c, at});
          }
        CHECK(r[0].at({1, o, t}) == doctest::Approx(want).epsilon(1e-12));
      }
    // Pools: window [2t - 1, 2t + 2) for the max; [4t - 2, 4t + 2) clipped, averaged over the values inside.
    for (int64_t t = 0; t < 6; ++t) {
      double best = -INFINITY;
      for (int64_t i = std::max<int64_t>(0, 2 * t - 1); i < std::min<int64_t>(11, 2 * t + 2); ++i)
        best = std::max(best, xv.at({0, 5, i}));
      CHECK(r[1].at({0, 5, t}) == best);
    }
    for (int64_t t = 0; t < 3; ++t) {
      double total = 0, n = 0;
      for (int64_t i = std::max<int64_t>(0, 4 * t - 2); i < std::min<int64_t>(11, 4 * t + 2); ++i)
        total += xv.at({0, 1, i}), ++n;
      CHECK(r[2].at({0, 1, t}) == doctest::Approx(total / n).epsilon(1e-12));
    }
    CheckResult gr = check_gradient_fn(
        [&](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{nn::conv1d(in[0], in[1], in[2], {.stride = 2, .padding = 1, .groups = 2}),
                                     nn::AvgPool1d(3, 1, 1)(in[0])};
        },
        {xv, test::rand({4, 3, 2}, 4, float64), test::rand({4}, 5, float64)}, {0, 1, 2});
    CHECK_MESSAGE(gr.ok, gr.detail);
    CHECK(contains(error_of([&] {
                     conv(g.placeholder("one", {6, 11}, float64));
                   }),
                   "expected input [N, 6, L], got [6,11] (a single sequence needs a batch dim)"));
    CHECK(contains(error_of([] { nn::Conv1d(6, 4, 3, {.groups = 4}); }), "must divide both"));
    CHECK(contains(error_of([] { nn::MaxPool1d(0); }), "MaxPool1d: kernel must be positive"));
  }

  TEST_CASE("InstanceNorm2d and PixelShuffle as PyTorch's") {
    Graph g;
    Tensor x = g.placeholder("x", {-1, 8, 3, 2}, float64);
    nn::InstanceNorm2d inorm(8);
    Tensor y = inorm(x);
    CHECK(inorm.describe() == "InstanceNorm2d(8, eps=1e-05)");
    CHECK(inorm.parameters().empty());  // PyTorch's default: no affine
    Tensor up = nn::PixelShuffle(2)(x), back = nn::pixel_unshuffle(up, 2);
    CHECK(up.shape() == Shape{-1, 2, 6, 4});
    Session s(g, {.threads = 1});
    const NDArray xv = test::rand({2, 8, 3, 2}, 5, float64);
    const auto r = s.run({y, up, back}, {{x, xv}});
    // Channel 5 of sample 1 over its 6 values.
    double mu = 0, var = 0;
    for (int64_t i = 0; i < 6; ++i) mu += xv.at({1, 5, i / 2, i % 2}) / 6;
    for (int64_t i = 0; i < 6; ++i) var += std::pow(xv.at({1, 5, i / 2, i % 2}) - mu, 2) / 6;
    CHECK(r[0].at({1, 5, 2, 1}) == doctest::Approx((xv.at({1, 5, 2, 1}) - mu) / std::sqrt(var + 1e-5)).epsilon(1e-12));
    // PyTorch's layout: output (c, y r + i, x r + j) is input (c r^2 + i r + j, y, x).
    for (int64_t c = 0; c < 2; ++c)
      for (int64_t yy = 0; yy < 6; ++yy)
        for (int64_t xx = 0; xx < 4; ++xx)
          CHECK(r[1].at({1, c, yy, xx}) == xv.at({1, c * 4 + (yy % 2) * 2 + xx % 2, yy / 2, xx / 2}));
    CHECK(test::allclose(r[2], xv, 0, 0));  // unshuffle inverts it
    CHECK(contains(error_of([&] {
                     nn::pixel_shuffle(g.placeholder("odd", {1, 6, 2, 2}), 2);
                   }),
                   "the channels 6 must be divisible by the factor squared 4"));
  }

  TEST_CASE("GroupNorm, Upsample (nearest) and Dropout2d as PyTorch's") {
    Graph g;
    Tensor x = g.placeholder("x", {-1, 4, 2, 3}, float64);
    nn::GroupNorm gn(2, 4);
    Tensor y = gn(x);
    CHECK(gn.describe() == "GroupNorm(2, 4, eps=1e-05, affine)");
    CHECK(gn.state_dict().size() == 2);
    CHECK(gn.state_dict()[0].first == "weight");
    Tensor up = nn::Upsample({.scale_factor = {2, 3}})(x);
    CHECK(up.shape() == Shape{-1, 4, 4, 9});
    Session s(g, {.threads = 1});
    const NDArray xv = test::rand({3, 4, 2, 3}, 7, float64);
    const auto r = s.run({y, up}, {{x, xv}});
    // Group k of sample n: channels 2k, 2k+1, normalized together (biased variance).
    for (int64_t n = 0; n < 3; ++n)
      for (int64_t k = 0; k < 2; ++k) {
        std::vector<double> v;
        for (int64_t c = 2 * k; c < 2 * k + 2; ++c)
          for (int64_t i = 0; i < 6; ++i) v.push_back(xv.at({n, c, i / 3, i % 3}));
        double mu = 0, var = 0;
        for (double e : v) mu += e / 12;
        for (double e : v) var += (e - mu) * (e - mu) / 12;
        CHECK(r[0].at({n, 2 * k + 1, 1, 2}) == doctest::Approx((v[11] - mu) / std::sqrt(var + 1e-5)).epsilon(1e-12));
      }
    // Nearest: output (i, j) is input (i / 2, j / 3).
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t j = 0; j < 9; ++j) CHECK(r[1].at({2, 3, i, j}) == xv.at({2, 3, i / 2, j / 3}));
    CheckResult gr = check_gradient_fn(
        [&](const std::vector<Tensor>& in) {
          nn::GroupNorm fresh(2, 4);  // a module of check_gradient_fn's own graph
          return std::vector<Tensor>{fresh(in[0]) * 1.5, nn::upsample_nearest2d(in[0], {2})};
        },
        {xv}, {0});
    CHECK_MESSAGE(gr.ok, gr.detail);
    CHECK(contains(error_of([] { nn::GroupNorm(3, 4); }), "groups 3 must be positive and divide channels 4"));
    CHECK(contains(error_of([&] { nn::upsample_nearest2d(x, {0}); }), "scale factors must be positive"));

    // Dropout2d: whole channels zeroed or scaled by 1 / (1 - p); the identity in eval.
    Graph h;
    Tensor z = h.placeholder("z", {8, 16, 3, 3});
    nn::Dropout2d drop(0.25);
    Tensor dz = drop(z);
    drop.eval();
    Tensor ez = drop(z);
    Session t(h, {.seed = 3});
    const NDArray ones = NDArray::full({8, 16, 3, 3}, 1.0);
    const NDArray d = t.run1(dz, {{z, ones}});
    int dropped = 0;
    for (int64_t n = 0; n < 8; ++n)
      for (int64_t c = 0; c < 16; ++c) {
        const double first = d.at({n, c, 0, 0});
        CHECK((first == 0.0 || first == doctest::Approx(1 / 0.75)));
        for (int64_t i = 0; i < 9; ++i) CHECK(d.at({n, c, i / 3, i % 3}) == first);
        dropped += first == 0.0;
      }
    CHECK(dropped > 8);  // about 32 of 128
    CHECK(dropped < 64);
    CHECK(t.run1(ez, {{z, ones}}).to_vector<float>() == ones.to_vector<float>());
  }

  TEST_CASE("BatchNorm2d: batch statistics and PyTorch's running statistics; eval folds into the conv") {
    Graph g;
    Tensor x = g.placeholder("x", {4, 3, 5, 5});
    nn::Sequential net{nn::Conv2d(3, 2, 3, {.padding = {1}}), nn::BatchNorm2d(2, {.momentum = 0.25})};
    net.train();
    Tensor conv_out = net[0](x);  // the same variables as inside net
    Tensor y = net(x);
    net.eval();
    Tensor y_eval = net(x);
    auto& bn = static_cast<nn::BatchNorm2d&>(net[1]);
    Session s(g, {.seed = 2});
    NDArray xv = test::rand({4, 3, 5, 5}, 3);
    auto out = s.run({conv_out, y}, {{x, xv}}, net.updates());
    auto [mean, var] = channel_stats(out[0]);
    auto [ymean, yvar] = channel_stats(out[1]);
    for (size_t c = 0; c < 2; ++c) {
      CHECK(ymean[c] == doctest::Approx(0).epsilon(1e-5).scale(1));
      CHECK(yvar[c] == doctest::Approx(var[c] / (var[c] + 1e-5)).epsilon(1e-4));
    }
    std::vector<double> rm = values(s.get(bn.running_mean())), rv = values(s.get(bn.running_var()));
    const double n = 4 * 5 * 5;
    for (size_t c = 0; c < 2; ++c) {
      CHECK(rm[c] == doctest::Approx(0.25 * mean[c]).epsilon(1e-5));
      CHECK(rv[c] == doctest::Approx(0.75 + 0.25 * var[c] * n / (n - 1)).epsilon(1e-5));
    }
    // Eval mode: (conv - running_mean) / sqrt(running_var + eps), here computed by the folded conv.
    NDArray ye = s.run({y_eval}, {{x, xv}})[0];
    std::vector<double> cv = values(out[0]), got = values(ye);
    bool close = true;
    for (int64_t i = 0; i < ye.numel(); ++i) {
      const size_t c = size_t((i / 25) % 2);
      close &= std::fabs(got[size_t(i)] - (cv[size_t(i)] - rm[c]) / std::sqrt(rv[c] + 1e-5)) < 1e-4;
    }
    CHECK(close);
    bool folded = false;
    for (int id = 0; id < g.size(); ++id) folded |= g.node(id).name.find("folded_conv2d") != std::string::npos;
    CHECK(folded);
    CHECK(contains(error_of([&] {
                     nn::BatchNorm2d(3)(g.placeholder("x2", {4, 3, 5}));
                   }),
                   "expected input [N, 3, H, W]"));
  }

  TEST_CASE("ConvBN fuses the ReLU; eval mode agrees with training-mode statistics once they are the running ones") {
    Graph g;
    Tensor x = g.placeholder("x", {8, 2, 6, 6});
    nn::ConvBN block(2, 4, 3, 2);
    block.train();
    Tensor y = block(x);
    block.eval();
    Tensor y_eval = block(x);
    CHECK(y.shape() == Shape{8, 4, 3, 3});
    auto names = block.named_parameters();
    REQUIRE(names.size() == 3);
    CHECK(names[0].first == "0/weight");
    CHECK(names[1].first == "1/weight");
    CHECK(block.named_buffers()[0].first == "1/running_mean");
    Session s(g);
    NDArray xv = test::rand({8, 2, 6, 6}, 4);
    NDArray yt = s.run({y}, {{x, xv}})[0];
    const std::vector<double> yv = values(yt);
    CHECK(*std::min_element(yv.begin(), yv.end()) >= 0);
    // Momentum 0.1 from (0, 1): after many identical steps the running statistics are the batch's.
    for (int i = 0; i < 200; ++i) s.run({}, {{x, xv}}, block.updates());
    NDArray ye = s.run({y_eval}, {{x, xv}})[0];
    // Eval uses the unbiased variance: a relative difference of sqrt(n/(n-1)) ~ 0.3% at n = 8*3*3.
    CHECK(test::allclose(ye, yt, 1e-2, 1e-3));
  }

  TEST_CASE("eval plans of CNN and ResNet9: each ConvBN is one conv2d with the ReLU as its epilogue") {
    struct Case {
      std::shared_ptr<nn::Module> model;
      int convs;
    };
    for (Case c : {Case{std::make_shared<nn::CNN>(), 2}, Case{std::make_shared<nn::ResNet9>(), 8}}) {
      CAPTURE(c.model->type_name());
      Graph g;
      Tensor x = g.placeholder("x", {-1, 1, 28, 28});
      c.model->eval();
      Tensor y = (*c.model)(x);
      Session s(g);
      PlanInfo plan = s.plan_info({y}, {{x, NDArray::zeros({4, 1, 28, 28})}});
      int convs = 0;
      for (const PlanInfo::Step& st : plan.steps) {
        CAPTURE(st.name);
        if (st.op == "conv2d") {
          ++convs;
          CHECK(contains(st.name, "folded_conv2d"));
        }
        CHECK(st.op != "batch_norm");  // folded into the conv's weight and bias
        CHECK(st.op != "relu");        // the conv's epilogue (or the Linear's GEMM's)
      }
      CHECK(convs == c.convs);
      int folded = 0;
      for (int id = 0; id < g.size(); ++id) {
        const Node& n = g.node(id);
        if (!contains(n.name, "folded_conv2d")) continue;
        ++folded;
        CHECK(n.inputs.size() == 3);  // the folded bias
        CHECK(n.attrs.get_or("relu", false));
      }
      CHECK(folded == c.convs);
    }
  }

  TEST_CASE("ceil_mode and adaptive pooling modules give PyTorch's values") {
    // (5 i) mod 9 as [1, 2, 7], and PyTorch 2.15's results.
    std::vector<double> v;
    for (int i = 0; i < 14; ++i) v.push_back(double(5 * i % 9));
    const NDArray xv = NDArray::from<double>(v, {1, 2, 7});
    auto run = [&](nn::Module&& m) {
      Graph g;
      Tensor x = g.placeholder("x", {1, 2, 7}, float64);
      Tensor y = m(x);
      return Session(g).run({y}, {{x, xv}})[0].to_vector<double>();
    };
    CHECK(run(nn::MaxPool1d(2, 2, 0, true)) == std::vector<double>{5, 6, 7, 3, 8, 5, 6, 2});
    const std::vector<double> avg = run(nn::AvgPool1d(3, 2, 1, false, true));
    const std::vector<double> want{2.5, 4, 5, 5, 6, 3, 4, 4};
    REQUIRE(avg.size() == want.size());
    for (size_t i = 0; i < want.size(); ++i) CHECK(avg[i] == doctest::Approx(want[i]).epsilon(1e-15));
    CHECK(run(nn::AdaptiveAvgPool1d(3)) == std::vector<double>{2, 3, 4, 4, 2, 3});
    CHECK(run(nn::AdaptiveMaxPool1d(3)) == std::vector<double>{5, 6, 7, 8, 5, 6});
    CHECK(run(nn::AdaptiveMaxPool1d(9)) == std::vector<double>{0, 5, 5, 6, 6, 6, 7, 7, 3, 8, 8, 4, 5, 5, 5, 6, 6, 2});
    CHECK_THROWS_WITH_AS(nn::AdaptiveMaxPool1d(0), doctest::Contains("AdaptiveMaxPool1d: output_size must be positive"),
                         Error);
    CHECK_THROWS_WITH_AS(nn::AdaptiveMaxPool2d({2, 0}), doctest::Contains("AdaptiveMaxPool2d: output_size needs"),
                         Error);
    // The 2-D modules: ceil_mode in the description; adaptive max pooling of a 7x5 map to 3x2, checked window by
    // window.
    CHECK(nn::MaxPool2d(3, {.stride = {2}, .ceil_mode = true}).describe() ==
          "MaxPool2d(kernel=3, stride=2, padding=0, ceil_mode=true)");
    CHECK(nn::AvgPool2d(2, {.count_include_pad = false, .ceil_mode = true}).describe() ==
          "AvgPool2d(kernel=2, padding=0, ceil_mode=true, count_include_pad=false)");
    Graph g;
    Tensor x = g.placeholder("x", {2, 3, 7, 5}, float64);
    nn::AdaptiveMaxPool2d pool({3, 2});
    CHECK(pool.describe() == "AdaptiveMaxPool2d((3, 2))");
    Tensor y = pool(x);
    CHECK(y.shape() == Shape{2, 3, 3, 2});
    NDArray in = test::rand({2, 3, 7, 5}, 9, float64), out = Session(g).run({y}, {{x, in}})[0];
    const int64_t rows[3][2] = {{0, 3}, {2, 5}, {4, 7}}, cols[2][2] = {{0, 3}, {2, 5}};
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t i = 0; i < 3; ++i)
          for (int64_t j = 0; j < 2; ++j) {
            double m = -1e300;
            for (int64_t h = rows[i][0]; h < rows[i][1]; ++h)
              for (int64_t w = cols[j][0]; w < cols[j][1]; ++w) m = std::max(m, in.at({n, c, h, w}));
            CHECK(out.at({n, c, i, j}) == m);
          }
    CheckResult gr = check_gradient_fn(
        [](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{nn::AdaptiveMaxPool2d({3, 2})(in[0]), nn::MaxPool2d(2, {.ceil_mode = true})(in[0]),
                                     nn::AvgPool2d(3, {.stride = {2}, .padding = {1}, .ceil_mode = true})(in[0])};
        },
        {test::rand({1, 2, 7, 5}, 3, float64)}, {0});
    CHECK_MESSAGE(gr.ok, gr.detail);
  }

  TEST_CASE("padding modes as PyTorch's F.pad, the padding layers and Conv padding_mode; gradients") {
    // PyTorch 2.15: F.pad(arange(12).reshape(1, 1, 3, 4), (1, 2, 2, 1), mode) as lists.
    const std::vector<std::pair<PadMode, std::vector<double>>> torch_values{
        {PadMode::reflect, {9, 8, 9, 10, 11, 10, 9, 5, 4, 5, 6,  7,  6,  5, 1, 0, 1, 2, 3, 2, 1,
                            5, 4, 5, 6,  7,  6,  5, 9, 8, 9, 10, 11, 10, 9, 5, 4, 5, 6, 7, 6, 5}},
        {PadMode::replicate, {0, 0, 1, 2, 3, 3, 3, 0, 0, 1, 2,  3,  3,  3,  0, 0, 1, 2,  3,  3,  3,
                              4, 4, 5, 6, 7, 7, 7, 8, 8, 9, 10, 11, 11, 11, 8, 8, 9, 10, 11, 11, 11}},
        {PadMode::circular, {7, 4, 5, 6, 7, 4, 5, 11, 8, 9, 10, 11, 8, 9, 3, 0, 1, 2, 3, 0, 1,
                             7, 4, 5, 6, 7, 4, 5, 11, 8, 9, 10, 11, 8, 9, 3, 0, 1, 2, 3, 0, 1}}};
    std::vector<double> seq(12);
    std::iota(seq.begin(), seq.end(), 0.0);
    for (const auto& [mode, want] : torch_values) {
      const std::string mode_name = pad_mode_name(mode);
      CAPTURE(mode_name);
      Graph g;
      Tensor x = g.placeholder("x", {1, 1, 3, 4}, float64);
      Tensor y = nn::pad(x, {1, 2, 2, 1}, mode);
      CHECK(y.shape() == Shape{1, 1, 6, 7});
      CHECK(Session(g).run({y}, {{x, NDArray::from<double>(seq, {1, 1, 3, 4})}})[0].to_vector<double>() == want);
    }
    // Each element against its source index, on a larger unbatched [C, H, W] input, all modes and both layers' forms.
    const NDArray xv = test::rand({2, 5, 6}, 3, float64);
    auto source = [](int64_t i, int64_t n, PadMode m) {
      if (i >= 0 && i < n) return i;
      if (m == PadMode::reflect) return i < 0 ? -i : 2 * (n - 1) - i;
      if (m == PadMode::replicate) return i < 0 ? int64_t(0) : n - 1;
      return (i + n) % n;  // circular
    };
    for (PadMode m : {PadMode::reflect, PadMode::replicate, PadMode::circular}) {
      CAPTURE(std::string(pad_mode_name(m)));
      Graph g;
      Tensor x = g.placeholder("x", {2, 5, 6}, float64);
      nn::Pad layer(2, {3, 1, 4, 2}, m);
      Tensor y = layer(x);
      REQUIRE(y.shape() == Shape{2, 11, 10});
      NDArray got = Session(g).run({y}, {{x, xv}})[0];
      for (int64_t c = 0; c < 2; ++c)
        for (int64_t h = 0; h < 11; ++h)
          for (int64_t w = 0; w < 10; ++w)
            CHECK(got.at({c, h, w}) == xv.at({c, source(h - 4, 5, m), source(w - 3, 6, m)}));
    }
    CHECK(nn::ReflectionPad2d({3, 1, 4, 2}).describe() == "ReflectionPad2d((3, 1, 4, 2))");
    CHECK(nn::ReplicationPad1d(2).describe() == "ReplicationPad1d((2, 2))");
    CHECK(nn::ConstantPad2d(1, 3.5).describe() == "ConstantPad2d((1, 1, 1, 1), value=3.5)");
    CHECK(nn::ZeroPad2d(1).describe() == "ZeroPad2d((1, 1, 1, 1))");
    CHECK(nn::CircularPad2d(1).type_name() == "CircularPad2d");
    {
      Graph g;
      Tensor x = g.placeholder("x", {2, 5, 6}, float64);
      CHECK_THROWS_WITH_AS(nn::ReflectionPad2d(5)(x),
                           doctest::Contains("reflect padding (5, 5) of axis 1 must be less than its size 5"), Error);
      CHECK_THROWS_WITH_AS(nn::CircularPad1d(7)(x), doctest::Contains("must be at most its size 6"), Error);
      CHECK_THROWS_WITH_AS(nn::pad(x, {1, 1, 1}), doctest::Contains("pad: padding needs (before, after) pairs"), Error);
      CHECK_THROWS_WITH_AS(nn::pad(x, {-4, -3}), doctest::Contains("pad: cropping 4 + 3 from axis 2"), Error);
      CHECK_THROWS_WITH_AS(nn::pad(x, {1, 1}, PadMode::reflect, 2.0),
                           doctest::Contains("reflect padding takes no value"), Error);
      CHECK_THROWS_WITH_AS(nn::ReflectionPad2d({1, 2, 3}),
                           doctest::Contains("ReflectionPad2d: padding needs 1 or 4 values"), Error);
      Tensor d = g.placeholder("d", {2, -1, 6}, float64);
      CHECK_THROWS_WITH_AS(nn::ReflectionPad2d(1)(d), doctest::Contains("needs axis 1's size known"), Error);
    }
    // Conv2d and Conv1d with padding_mode: the convolution of the padded input, checked by direct sums.
    for (PadMode m : {PadMode::reflect, PadMode::replicate, PadMode::circular}) {
      CAPTURE(std::string(pad_mode_name(m)));
      Graph g;
      Tensor x = g.placeholder("x", {1, 2, 5, 6}, float64);
      nn::Conv2d conv(2, 3, 3, {.padding = {1, 2}, .padding_mode = m, .dtype = float64});
      Tensor y = conv(x);
      REQUIRE(y.shape() == Shape{1, 3, 5, 8});
      CHECK(conv.describe() == std::string("Conv2d(2, 3, kernel=(3, 3), stride=1, padding=(1, 2), padding_mode=") +
                                   pad_mode_name(m) + ", bias)");
      Session s(g);
      const NDArray in = test::rand({1, 2, 5, 6}, 4, float64), out = s.run({y}, {{x, in}})[0];
      const NDArray w = s.get(conv.weight()), b = s.get(conv.bias());
      for (int64_t o = 0; o < 3; ++o)
        for (int64_t h = 0; h < 5; ++h)
          for (int64_t v = 0; v < 8; ++v) {
            double want = b.at({o});
            for (int64_t c = 0; c < 2; ++c)
              for (int64_t i = 0; i < 3; ++i)
                for (int64_t j = 0; j < 3; ++j)
                  want += w.at({o, c, i, j}) * in.at({0, c, source(h + i - 1, 5, m), source(v + j - 2, 6, m)});
            CHECK(out.at({0, o, h, v}) == doctest::Approx(want).epsilon(1e-12));
          }
      Graph g1;
      Tensor x1 = g1.placeholder("x", {2, 2, 7}, float64);
      nn::Conv1d conv1(2, 2, 3, {.padding = 2, .padding_mode = m, .dtype = float64});
      CHECK(conv1(x1).shape() == Shape{2, 2, 9});
      // A dynamic batch: only the padded axes need known sizes (the batch's used to be required).
      Tensor dyn = g1.placeholder("dyn", {-1, 2, 5, 6}, float64);
      nn::Conv2d conv_dyn(2, 3, 3, {.padding = {1}, .padding_mode = m, .dtype = float64});
      Tensor yd;
      {
        auto scope = g1.scope("dyn");
        yd = conv_dyn(dyn);
      }
      CHECK(yd.shape() == Shape{-1, 3, 5, 6});
      CHECK(Session(g1).run1(yd, {{dyn, test::rand({3, 2, 5, 6}, 5, float64)}}).shape() == Shape{3, 3, 5, 6});
    }
    CheckResult gr = check_gradient_fn(
        [](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{nn::pad(in[0], {2, 1, 1, 3}, PadMode::reflect) * 1.5,
                                     nn::pad(in[0], {3, 0, 0, 2}, PadMode::replicate),
                                     nn::pad(in[0], {4, 1, 2, 1}, PadMode::circular)};
        },
        {test::rand({1, 2, 4, 5}, 6, float64)}, {0});
    CHECK_MESSAGE(gr.ok, gr.detail);
  }

  TEST_CASE("a negative pad crops that side first, in every mode (PyTorch's F.pad)") {
    Graph g;
    Tensor x = g.placeholder("x", {1, 2, 3}, float64), d = g.placeholder("d", {-1, 2, 3}, float64);
    // PyTorch 2.15 on arange(6).reshape(1, 2, 3).
    const std::vector<std::pair<Tensor, std::vector<double>>> cases{
        {nn::pad(x, {-1, 2}, PadMode::constant, 9), {1, 2, 9, 9, 4, 5, 9, 9}},
        {nn::pad(x, {1, -2, -1, 0}), {0, 3}},
        {nn::pad(x, {-1, 1}, PadMode::reflect), {1, 2, 1, 4, 5, 4}},
        {nn::pad(x, {-1, 1}, PadMode::replicate), {1, 2, 2, 4, 5, 5}},
        {nn::pad(x, {-1, 1}, PadMode::circular), {1, 2, 1, 4, 5, 4}},
        {nn::ZeroPad2d({0, 0, -1, 1})(d), {3, 4, 5, 0, 0, 0}}};
    std::vector<Tensor> ys;
    for (const auto& c : cases) ys.push_back(c.first);
    const NDArray in = NDArray::from<double>({0, 1, 2, 3, 4, 5}, {1, 2, 3});
    const std::vector<NDArray> out = Session(g).run(ys, {{x, in}, {d, in}});
    for (size_t k = 0; k < cases.size(); ++k) {
      CAPTURE(k);
      CHECK(out[k].to_vector<double>() == cases[k].second);
    }
    const CheckResult r = check_gradient_fn(
        [](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{nn::pad(in[0], {-1, 2, 1, -1}, PadMode::reflect)};
        },
        {test::rand({1, 3, 4}, 2, float64)}, {0});
    CHECK_MESSAGE(r.ok, r.detail);
  }

  TEST_CASE("interpolate and Upsample give PyTorch's F.interpolate in every mode; gradients") {
    struct Case {
      bool image;  // [1, 1, 3, 4], else [1, 2, 5]
      nn::InterpolateOptions options;
      Shape shape;
      std::vector<double> want;  // PyTorch 2.15, float64
    };
    // PyTorch's values, one case per line.
    // clang-format off
    const std::vector<Case> cases{
      {true, {.size = {5, 7}, .mode = nn::InterpolationMode::bilinear}, {1, 1, 5, 7}, {0.0, 0.8333333333333333, 2.1666666666666665, 1.6666666666666667, 1.166666666666666, 2.5, 3.3333333333333335, 0.7999999999999999, 1.1095238095238094, 1.6047619047619048, 1.7333333333333334, 1.8619047619047617, 2.357142857142857, 2.6666666666666674, 2.0, 1.523809523809524, 0.761904761904762, 1.8333333333333333, 2.904761904761905, 2.1428571428571432, 1.6666666666666667, 1.0000000000000002, 1.3095238095238095, 1.8047619047619043, 1.9333333333333333, 1.9047619047619053, 1.1428571428571432, 0.6666666666666669, 0.3333333333333333, 1.1666666666666665, 2.4999999999999996, 1.9999999999999998, 1.2380952380952384, 0.4761904761904763, 0.0}},
      {true, {.size = {5, 7}, .mode = nn::InterpolationMode::bilinear, .align_corners = true}, {1, 1, 5, 7}, {0.0, 1.1666666666666667, 2.3333333333333335, 1.6666666666666667, 1.0, 2.166666666666667, 3.3333333333333335, 1.0, 1.2500000000000002, 1.5, 1.75, 2.0, 2.25, 2.5, 2.0, 1.3333333333333333, 0.6666666666666666, 1.8333333333333333, 3.0, 2.3333333333333335, 1.6666666666666667, 1.1666666666666667, 1.4166666666666665, 1.6666666666666665, 1.9166666666666665, 2.1666666666666665, 1.5, 0.8333333333333334, 0.3333333333333333, 1.5, 2.6666666666666665, 2.0, 1.3333333333333333, 0.6666666666666666, 0.0}},
      {true, {.scale_factor = {1.7}, .mode = nn::InterpolationMode::bicubic}, {1, 1, 5, 6}, {-0.4567282192844904, 0.9110244044129097, 2.4696947499776565, 1.4802210909785491, 1.0057048865784504, 2.77975469801857, 0.7783195058444862, 1.1022266647276122, 1.5616014549815358, 1.692741009948343, 1.9938505369962867, 2.604850636625296, 2.118394627852682, 1.3430062314249847, 0.6446898129125372, 2.0007767660100355, 3.0197378763054803, 2.131304702909286, 1.1765402319356355, 1.345271756058449, 1.6412278302911287, 2.1828983252876295, 2.0604431369350564, 1.0035033288883992, -0.056258741853677144, 1.2779699716557298, 2.8013355841842924, 2.257949766904883, 0.9024410298579625, 0.12578653367048462}},
      {true, {.size = {2, 3}, .mode = nn::InterpolationMode::bicubic, .align_corners = true}, {1, 1, 2, 3}, {0.0, 1.6666666666666667, 3.3333333333333335, 0.3333333333333333, 2.34375, 0.0}},
      {true, {.size = {5, 7}, .mode = nn::InterpolationMode::nearest}, {1, 1, 5, 7}, {0.0, 0.0, 2.3333333333333335, 2.3333333333333335, 1.0, 1.0, 3.3333333333333335, 0.0, 0.0, 2.3333333333333335, 2.3333333333333335, 1.0, 1.0, 3.3333333333333335, 2.0, 2.0, 0.6666666666666666, 0.6666666666666666, 3.0, 3.0, 1.6666666666666667, 2.0, 2.0, 0.6666666666666666, 0.6666666666666666, 3.0, 3.0, 1.6666666666666667, 0.3333333333333333, 0.3333333333333333, 2.6666666666666665, 2.6666666666666665, 1.3333333333333333, 1.3333333333333333, 0.0}},
      {true, {.scale_factor = {1.5}, .mode = nn::InterpolationMode::nearest_exact}, {1, 1, 4, 6}, {0.0, 2.3333333333333335, 2.3333333333333335, 1.0, 3.3333333333333335, 3.3333333333333335, 2.0, 0.6666666666666666, 0.6666666666666666, 3.0, 1.6666666666666667, 1.6666666666666667, 2.0, 0.6666666666666666, 0.6666666666666666, 3.0, 1.6666666666666667, 1.6666666666666667, 0.3333333333333333, 2.6666666666666665, 2.6666666666666665, 1.3333333333333333, 0.0, 0.0}},
      {true, {.size = {2, 3}, .mode = nn::InterpolationMode::area}, {1, 1, 2, 3}, {1.2500000000000002, 1.75, 2.25, 1.4166666666666665, 1.9166666666666665, 1.5}},
      {true, {.scale_factor = {0.5, 2.5}, .mode = nn::InterpolationMode::bilinear}, {1, 1, 1, 10}, {1.0, 1.05, 1.2500000000000002, 1.4500000000000002, 1.65, 1.85, 2.0500000000000003, 2.25, 2.45, 2.5000000000000004}},
      {true, {.scale_factor = {2.0}, .mode = nn::InterpolationMode::nearest}, {1, 1, 6, 8}, {0.0, 0.0, 2.3333333333333335, 2.3333333333333335, 1.0, 1.0, 3.3333333333333335, 3.3333333333333335, 0.0, 0.0, 2.3333333333333335, 2.3333333333333335, 1.0, 1.0, 3.3333333333333335, 3.3333333333333335, 2.0, 2.0, 0.6666666666666666, 0.6666666666666666, 3.0, 3.0, 1.6666666666666667, 1.6666666666666667, 2.0, 2.0, 0.6666666666666666, 0.6666666666666666, 3.0, 3.0, 1.6666666666666667, 1.6666666666666667, 0.3333333333333333, 0.3333333333333333, 2.6666666666666665, 2.6666666666666665, 1.3333333333333333, 1.3333333333333333, 0.0, 0.0, 0.3333333333333333, 0.3333333333333333, 2.6666666666666665, 2.6666666666666665, 1.3333333333333333, 1.3333333333333333, 0.0, 0.0}},
      {true, {.size = {7, 9}, .mode = nn::InterpolationMode::bicubic}, {1, 1, 7, 9}, {-0.5157789710534413, 0.2038583621279204, 1.6772441989239366, 2.5350657409740314, 1.6484450923226444, 0.7618244436712568, 1.619645985721351, 3.093031822517368, 3.8126691556987287, 0.06372664439085511, 0.5427622107043885, 1.5052519293039583, 2.1328125104147095, 1.6801354470359584, 1.2345850438450912, 1.8821109964659972, 2.8677293668790265, 3.3588963399880805, 1.35470831483681, 1.2891482651261572, 1.0952383868499398, 1.2011113577314136, 1.7097910592808563, 2.2754840423333755, 2.541079985296098, 2.532199321527555, 2.563690526181079, 2.144890260631, 1.7681327160493836, 0.9134230681298581, 0.7224508459076352, 1.8333333333333333, 2.944215820759031, 2.753243598536808, 1.898533950617285, 1.5217764060356653, 1.5296354285394342, 1.464075378828781, 1.270165500552562, 1.3802451805727176, 2.0651117589893095, 2.521925211393592, 1.9931130030887538, 1.059086266781847, 0.6053211996144751, 0.36110273768531603, 0.8401383039988487, 1.802628022598417, 2.4373400092449273, 2.2841806365403294, 1.6535350312474593, 0.9505671267135107, 0.3634371738113217, 0.02966848482485202, -0.14600248903206112, 0.5736348441493007, 2.0470206809453164, 2.913734738702459, 2.399553571428573, 1.282773692712438, 0.46130467055526936, -0.020965495986755702, -0.3271060040712343}},
      {false, {.size = {8}, .mode = nn::InterpolationMode::linear}, {1, 2, 8}, {0.0, 0.65625, 1.59375, 2.53125, 2.375, 1.125, 1.84375, 2.5, 0.5, 1.15625, 1.875, 0.625, 0.46875, 1.40625, 2.34375, 3.0}},
      {false, {.scale_factor = {0.6}, .mode = nn::InterpolationMode::linear, .align_corners = true}, {1, 2, 3}, {0.0, 3.0, 2.5, 0.5, 0.0, 3.0}},
      {false, {.size = {3}, .mode = nn::InterpolationMode::nearest}, {1, 2, 3}, {0.0, 1.5, 1.0, 0.5, 2.0, 1.5}},
      {false, {.size = {3}, .mode = nn::InterpolationMode::area}, {1, 2, 3}, {0.75, 1.8333333333333333, 1.75, 1.25, 1.1666666666666667, 2.25}},
      {false, {.size = {7}, .mode = nn::InterpolationMode::nearest_exact}, {1, 2, 7}, {0.0, 1.5, 1.5, 3.0, 1.0, 1.0, 2.5, 0.5, 2.0, 2.0, 0.0, 1.5, 1.5, 3.0}},
    };
    // clang-format on
    std::vector<double> image, seq;
    for (int i = 0; i < 12; ++i) image.push_back(double(i * 7 % 11) / 3);
    for (int i = 0; i < 10; ++i) seq.push_back(double(i * 3 % 7) / 2);
    for (const Case& c : cases) {
      const std::string mode = nn::interpolation_mode_name(c.options.mode);
      CAPTURE(mode);
      CAPTURE(c.shape);
      Graph g;
      const Shape in_shape = c.image ? Shape{1, 1, 3, 4} : Shape{1, 2, 5};
      Tensor x = g.placeholder("x", in_shape, float64);
      Tensor y = nn::interpolate(x, c.options);
      REQUIRE(y.shape() == c.shape);
      const std::vector<double> got =
          Session(g).run({y}, {{x, NDArray::from<double>(c.image ? image : seq, in_shape)}})[0].to_vector<double>();
      REQUIRE(got.size() == c.want.size());
      for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(c.want[i]).epsilon(1e-13));
    }
    // Errors name the function and what was expected.
    Graph g;
    Tensor x4 = g.placeholder("x", {1, 1, 3, 4}), x3 = g.placeholder("s", {1, 2, 5});
    CHECK_THROWS_WITH_AS(nn::interpolate(x4, {.size = {2}, .scale_factor = {2}}),
                         doctest::Contains("give either size or scale_factor"), Error);
    CHECK_THROWS_WITH_AS(nn::interpolate(x4, {.size = {2, 3}, .mode = nn::InterpolationMode::linear}),
                         doctest::Contains("mode linear expects [N, C, L]"), Error);
    CHECK_THROWS_WITH_AS(nn::interpolate(x3, {.size = {2}, .mode = nn::InterpolationMode::bicubic}),
                         doctest::Contains("mode bicubic expects [N, C, H, W]"), Error);
    CHECK_THROWS_WITH_AS(
        nn::interpolate(x4, {.size = {2}, .align_corners = true}),
        doctest::Contains("align_corners applies to linear, bilinear, bicubic and trilinear, not nearest"), Error);
    CHECK_THROWS_WITH_AS(nn::interpolate(x4, {.scale_factor = {0.1}}),
                         doctest::Contains("output sizes must be positive"), Error);
    CHECK_THROWS_WITH_AS(nn::interpolate(x4, {.size = {1, 2, 3}}), doctest::Contains("size needs 1 or 2 values"),
                         Error);
    // Upsample: the module form, and nearest by integer factors stays one broadcast copy.
    nn::Upsample up({.scale_factor = {2}, .mode = nn::InterpolationMode::bilinear, .align_corners = true});
    CHECK(up.describe() == "Upsample(scale_factor=2, mode=bilinear, align_corners=true)");
    CHECK(up(x4).shape() == Shape{1, 1, 6, 8});
    CHECK(nn::Upsample({.size = {6, 12}}).describe() == "Upsample(size=(6, 12), mode=nearest)");
    CHECK(nn::Upsample({.size = {6, 12}})(x4).node().op->name == "reshape");
    CheckResult gr = check_gradient_fn(
        [](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{
              nn::interpolate(in[0], {.size = {5, 7}, .mode = nn::InterpolationMode::bilinear}),
              nn::interpolate(in[0], {.scale_factor = {1.7}, .mode = nn::InterpolationMode::bicubic}) * 0.5,
              nn::interpolate(in[0], {.size = {2, 5}, .mode = nn::InterpolationMode::nearest_exact}),
              nn::interpolate(in[0], {.size = {2, 3}, .mode = nn::InterpolationMode::bicubic, .align_corners = true})};
        },
        {test::rand({2, 2, 3, 4}, 8, float64)}, {0});
    CHECK_MESSAGE(gr.ok, gr.detail);
  }

  TEST_CASE("interpolate with antialias gives PyTorch's antialiased resampling; gradients") {
    struct Case {
      nn::InterpolateOptions options;
      Shape shape;
      std::vector<double> want;  // PyTorch 2.15, float64, antialias=True
    };
    // clang-format off
    const std::vector<Case> cases{
      {{.size = {4, 5}, .mode = nn::InterpolationMode::bilinear, .antialias = true}, {1, 1, 4, 5}, {1.1904761904761907, 2.2916666666666674, 1.6933333333333334, 1.6388888888888882, 1.7142857142857137, 1.1904761904761907, 2.2916666666666674, 1.6933333333333336, 1.6388888888888884, 1.714285714285714, 1.1904761904761907, 2.2916666666666674, 1.6933333333333336, 1.6388888888888884, 1.714285714285714, 1.1904761904761907, 2.2916666666666674, 1.6933333333333334, 1.6388888888888884, 1.714285714285714}},
      {{.scale_factor = {0.3}, .mode = nn::InterpolationMode::bilinear, .antialias = true}, {1, 1, 2, 3}, {1.615819209039548, 1.9444444444444446, 1.5808080808080804, 1.6158192090395478, 1.9444444444444446, 1.5808080808080807}},
      {{.size = {3, 4}, .mode = nn::InterpolationMode::bicubic, .antialias = true}, {1, 1, 3, 4}, {1.372365411385225, 2.1297547082728263, 1.7156743552508644, 1.5920365975556658, 1.372365411385225, 2.1297547082728263, 1.715674355250864, 1.5920365975556656, 1.3723654113852248, 2.1297547082728263, 1.7156743552508642, 1.5920365975556658}},
      {{.size = {12, 13}, .mode = nn::InterpolationMode::bicubic, .antialias = true}, {1, 1, 12, 13}, {-0.08022922636103093, 1.957329765090693, 1.412683962979821, 2.0418752844788353, 3.193445607646792, 1.7581550599302074, 0.6666666666666667, 2.806250948262782, 2.197086936731907, 0.7033834016082539, 1.1306326809285399, 2.556943205471307, 1.2874880611270298, -0.08022922636103091, 1.9573297650906927, 1.4126839629798207, 2.0418752844788353, 3.1934456076467925, 1.758155059930207, 0.6666666666666666, 2.806250948262782, 2.197086936731907, 0.7033834016082539, 1.1306326809285399, 2.5569432054713066, 1.2874880611270296, -0.08022922636103093, 1.957329765090693, 1.412683962979821, 2.0418752844788353, 3.193445607646792, 1.7581550599302072, 0.6666666666666666, 2.8062509482627824, 2.197086936731907, 0.7033834016082539, 1.1306326809285399, 2.5569432054713066, 1.2874880611270298, -0.08022922636103093, 1.9573297650906927, 1.4126839629798207, 2.0418752844788353, 3.1934456076467925, 1.7581550599302072, 0.6666666666666667, 2.806250948262782, 2.197086936731907, 0.7033834016082539, 1.13063268092854, 2.556943205471306, 1.2874880611270296, -0.08022922636103093, 1.9573297650906927, 1.412683962979821, 2.0418752844788353, 3.1934456076467925, 1.7581550599302072, 0.6666666666666667, 2.806250948262782, 2.197086936731907, 0.7033834016082539, 1.13063268092854, 2.5569432054713066, 1.2874880611270298, -0.08022922636103093, 1.957329765090693, 1.412683962979821, 2.0418752844788353, 3.193445607646792, 1.758155059930207, 0.6666666666666666, 2.806250948262782, 2.1970869367319064, 0.7033834016082537, 1.1306326809285399, 2.5569432054713066, 1.2874880611270298, -0.08022922636103093, 1.957329765090693, 1.412683962979821, 2.0418752844788353, 3.193445607646792, 1.7581550599302072, 0.6666666666666666, 2.8062509482627824, 2.197086936731907, 0.7033834016082539, 1.1306326809285399, 2.5569432054713066, 1.2874880611270298, -0.08022922636103093, 1.9573297650906927, 1.4126839629798207, 2.0418752844788353, 3.1934456076467925, 1.7581550599302072, 0.6666666666666667, 2.806250948262782, 2.197086936731907, 0.7033834016082539, 1.13063268092854, 2.556943205471306, 1.2874880611270296, -0.08022922636103093, 1.9573297650906927, 1.412683962979821, 2.0418752844788353, 3.1934456076467925, 1.7581550599302072, 0.6666666666666667, 2.806250948262782, 2.197086936731907, 0.7033834016082539, 1.13063268092854, 2.5569432054713066, 1.2874880611270298, -0.08022922636103093, 1.957329765090693, 1.412683962979821, 2.0418752844788353, 3.193445607646792, 1.758155059930207, 0.6666666666666666, 2.806250948262782, 2.1970869367319064, 0.7033834016082537, 1.1306326809285399, 2.5569432054713066, 1.2874880611270298, -0.08022922636103093, 1.9573297650906927, 1.4126839629798207, 2.0418752844788353, 3.193445607646792, 1.758155059930207, 0.6666666666666665, 2.8062509482627815, 2.197086936731907, 0.7033834016082539, 1.1306326809285396, 2.556943205471306, 1.2874880611270298, -0.08022922636103093, 1.957329765090693, 1.412683962979821, 2.0418752844788353, 3.193445607646792, 1.7581550599302072, 0.6666666666666666, 2.806250948262782, 2.197086936731907, 0.7033834016082539, 1.1306326809285399, 2.5569432054713066, 1.2874880611270298}},
      {{.size = {4, 5}, .mode = nn::InterpolationMode::bilinear, .align_corners = true, .antialias = true}, {1, 1, 4, 5}, {1.333333333333333, 2.1333333333333333, 1.853333333333333, 1.4799999999999998, 1.7333333333333334, 1.333333333333333, 2.1333333333333333, 1.8533333333333333, 1.4799999999999998, 1.7333333333333332, 1.3333333333333333, 2.1333333333333333, 1.8533333333333335, 1.4799999999999998, 1.7333333333333336, 1.3333333333333333, 2.1333333333333333, 1.8533333333333333, 1.4799999999999998, 1.7333333333333334}},
      {{.size = {5, 20}, .mode = nn::InterpolationMode::bicubic, .antialias = true}, {1, 1, 5, 20}, {-0.19158328428487367, 0.6669091314668396, 2.1862269641125125, 1.833869791666666, 0.9908802083333335, 2.2478593750000013, 3.350981770833333, 2.6611328125, 1.7203463541666655, 0.7683307291666664, 1.1438489583333342, 2.7637135416666663, 2.7685546874999996, 1.7762057291666655, 0.8161692708333327, 0.3492135416666671, 1.7422031250000032, 2.6572906563207237, 1.7665815615218043, 1.2238571708848338, -0.1915832842848737, 0.6669091314668396, 2.186226964112513, 1.8338697916666657, 0.9908802083333336, 2.2478593750000013, 3.350981770833334, 2.6611328125, 1.7203463541666657, 0.7683307291666664, 1.1438489583333342, 2.7637135416666663, 2.7685546874999996, 1.7762057291666655, 0.8161692708333327, 0.3492135416666672, 1.7422031250000036, 2.657290656320724, 1.7665815615218046, 1.2238571708848338, -0.19158328428487367, 0.6669091314668395, 2.1862269641125125, 1.8338697916666655, 0.9908802083333331, 2.2478593750000013, 3.3509817708333336, 2.6611328125, 1.7203463541666653, 0.7683307291666664, 1.143848958333334, 2.763713541666666, 2.768554687499999, 1.7762057291666653, 0.8161692708333325, 0.3492135416666671, 1.7422031250000032, 2.6572906563207237, 1.7665815615218043, 1.2238571708848336, -0.19158328428487367, 0.6669091314668396, 2.1862269641125125, 1.8338697916666655, 0.9908802083333331, 2.247859375000001, 3.3509817708333336, 2.6611328125, 1.7203463541666648, 0.7683307291666664, 1.143848958333334, 2.763713541666666, 2.768554687499999, 1.7762057291666655, 0.8161692708333328, 0.34921354166666707, 1.742203125000003, 2.657290656320724, 1.7665815615218046, 1.2238571708848338, -0.1915832842848737, 0.6669091314668396, 2.1862269641125125, 1.8338697916666657, 0.9908802083333335, 2.2478593750000013, 3.3509817708333336, 2.6611328125, 1.7203463541666655, 0.7683307291666664, 1.1438489583333342, 2.7637135416666663, 2.7685546874999996, 1.7762057291666655, 0.8161692708333327, 0.3492135416666672, 1.7422031250000034, 2.657290656320724, 1.7665815615218046, 1.2238571708848338}},
      {{.size = {2, 3}, .mode = nn::InterpolationMode::bicubic, .align_corners = true, .antialias = true}, {1, 1, 2, 3}, {1.7450980392156858, 1.7367870225013082, 1.5857843137254908, 1.7450980392156863, 1.7367870225013082, 1.5857843137254912}},
    };
    // clang-format on
    const Shape in_shape{1, 1, 9, 11};
    std::vector<double> image;
    for (int i = 0; i < 99; ++i) image.push_back(double(i * 7 % 11) / 3);
    for (const Case& c : cases) {
      CAPTURE(nn::interpolation_mode_name(c.options.mode));
      CAPTURE(c.shape);
      Graph g;
      Tensor x = g.placeholder("x", in_shape, float64);
      Tensor y = nn::interpolate(x, c.options);
      REQUIRE(y.shape() == c.shape);
      const std::vector<double> got =
          Session(g).run({y}, {{x, NDArray::from<double>(image, in_shape)}})[0].to_vector<double>();
      REQUIRE(got.size() == c.want.size());
      for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(c.want[i]).epsilon(1e-13));
    }
    Graph g;
    Tensor x3 = g.placeholder("s", {1, 2, 5});
    CHECK_THROWS_WITH_AS(nn::interpolate(g.placeholder("x", {1, 1, 3, 4}), {.size = {2}, .antialias = true}),
                         doctest::Contains("antialias applies to bilinear and bicubic, not nearest"), Error);
    CHECK_THROWS_WITH_AS(nn::interpolate(x3, {.size = {2}, .mode = nn::InterpolationMode::linear, .antialias = true}),
                         doctest::Contains("antialias applies to bilinear and bicubic, not linear"), Error);
    CheckResult gr = check_gradient_fn(
        [](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{
              nn::interpolate(in[0], {.size = {3, 2}, .mode = nn::InterpolationMode::bilinear, .antialias = true}),
              nn::interpolate(in[0], {.size = {2, 9}, .mode = nn::InterpolationMode::bicubic, .antialias = true})};
        },
        {test::rand({1, 2, 7, 5}, 9, float64)}, {0});
    CHECK_MESSAGE(gr.ok, gr.detail);
  }

  TEST_CASE("pooling modules and Flatten on 4-D") {
    Graph g;
    Tensor x = g.placeholder("x", {2, 3, 8, 6});
    nn::Sequential net{nn::MaxPool2d(2), nn::AvgPool2d(3, {.stride = {1}, .padding = {1}}),
                       nn::AdaptiveAvgPool2d({2, 1}), nn::Flatten()};
    Tensor y = net(x);
    CHECK(y.shape() == Shape{2, 6});
    NDArray xv = test::rand({2, 3, 8, 6}, 5);
    Session s(g);
    NDArray got = s.run({y}, {{x, xv}})[0];
    NDArray want = invoke("max_pool2d", {xv},
                          {{"kernel", std::vector<int64_t>{2, 2}},
                           {"stride", std::vector<int64_t>{2, 2}},
                           {"padding", std::vector<int64_t>{0, 0, 0, 0}}})[0];
    want = invoke("avg_pool2d", {want},
                  {{"kernel", std::vector<int64_t>{3, 3}},
                   {"stride", std::vector<int64_t>{1, 1}},
                   {"padding", std::vector<int64_t>{1, 1, 1, 1}},
                   {"count_include_pad", true}})[0];
    want = invoke("adaptive_avg_pool2d", {want}, {{"output_size", std::vector<int64_t>{2, 1}}})[0];
    CHECK(test::allclose(got, want.reshape({2, 6})));
    CHECK(net.str() ==
          "Sequential\n  (0): MaxPool2d(kernel=2, padding=0)\n  (1): AvgPool2d(kernel=3, stride=1, padding=1)\n"
          "  (2): AdaptiveAvgPool2d((2, 1))\n  (3): Flatten\n");
  }

  TEST_CASE("CNN and ResNet9: shapes, parameter counts and names as the PyTorch peers") {
    struct Case {
      std::shared_ptr<nn::Module> model;
      int64_t channels, size, params;
    };
    // Counts from samples/torch_models.py (cnn(), resnet9(), cnn(3, size=32), resnet9(3)).
    std::vector<Case> cases{{std::make_shared<nn::CNN>(), 1, 28, 421738},
                            {std::make_shared<nn::ResNet9>(), 1, 28, 429818},
                            {std::make_shared<nn::CNN>(nn::CNNOptions{.channels = 3, .image_size = 32}), 3, 32, 545194},
                            {std::make_shared<nn::ResNet9>(3), 3, 32, 431386}};
    for (Case& c : cases) {
      CAPTURE(c.model->type_name());
      CAPTURE(c.size);
      Graph g;
      Tensor x = g.placeholder("x", {-1, c.channels, c.size, c.size});
      Tensor y = (*c.model)(x);
      CHECK(y.shape() == Shape{-1, 10});
      CHECK(c.model->num_parameters() == c.params);
    }
    auto names = cases[1].model->named_parameters();
    CHECK(names[0].first == "0/0/weight");  // PyTorch: 0.0.weight
    bool residual = false;
    for (auto& [n, t] : names) residual |= n == "5/fn/1/0/weight";  // PyTorch: 5.fn.1.0.weight
    CHECK(residual);
    Graph g;
    std::string e = error_of([&] { nn::ResNet9()(g.placeholder("x", {-1, 1, 64, 64})); });
    CHECK(contains(e, "Linear"));
  }

  TEST_CASE("a small CNN learns a toy task (loss falls, accuracy rises)") {
    // Vertical against horizontal stripes in noise.
    const int64_t n = 64;
    NDArray images = NDArray::empty({n, 1, 8, 8}), labels = NDArray::empty({n}, int64);
    NDArray noise = test::rand({n, 1, 8, 8}, 6, float32, -0.5, 0.5);
    for (int64_t i = 0; i < n; ++i) {
      labels.data<int64_t>()[i] = i % 2;
      for (int64_t p = 0; p < 64; ++p) {
        const int64_t coord = i % 2 ? p % 8 : p / 8;
        images.data<float>()[i * 64 + p] = float(coord % 2) + noise.data<float>()[i * 64 + p];
      }
    }
    Graph g;
    Tensor x = g.placeholder("x", {-1, 1, 8, 8});
    Tensor y = g.placeholder("y", {-1}, int64);
    nn::Sequential net{nn::ConvBN(1, 4, 3), nn::MaxPool2d(2), nn::Flatten(), nn::Linear(64, 2)};
    net.train();
    Tensor loss = nn::cross_entropy(net(x), y);
    net.eval();
    Tensor acc = nn::accuracy(net(x), y);
    optim::Adam opt(net, {.lr = 0.05});
    Tensor step = opt.minimize(loss);
    Session s(g, {.seed = 1});
    const double first = s.run({loss}, {{x, images}, {y, labels}})[0].item();
    for (int i = 0; i < 40; ++i) s.run({}, {{x, images}, {y, labels}}, {step});
    const double last = s.run({loss}, {{x, images}, {y, labels}})[0].item();
    CHECK(last < 0.3 * first);
    CHECK(s.run({acc}, {{x, images}, {y, labels}})[0].item() >= 0.95);
  }

  TEST_CASE("CIFAR-10: the binary format, read back; errors name the file") {
    test::TempDir dir;
    for (int i = 1; i <= 5; ++i) write_cifar(dir / ("data_batch_" + std::to_string(i) + ".bin"), 3, i);
    write_cifar(dir / "test_batch.bin", 4);
    auto train = data::load_cifar10(dir.path.string(), data::Split::train);
    auto test_set = data::load_cifar10(dir.path.string(), data::Split::test);
    CHECK(train->size() == 15);
    CHECK(test_set->size() == 4);
    CHECK(train->fields()[0].shape == Shape{3, 32, 32});
    CHECK(train->fields()[0].dtype == uint8);
    CHECK(train->fields()[1].dtype == int64);
    const NDArray& img = train->array(0);
    const NDArray& lab = train->array(1);
    // Record 1 of data_batch_2 is example 4: label (2 + 1) % 10; red (0, 0) = byte 0, green (0, 0) = byte 1024,
    // blue (31, 31) = byte 3071, each (record + byte) % 256.
    CHECK(lab.data<int64_t>()[4] == 3);
    CHECK(img.at({4, 0, 0, 0}) == 1);
    CHECK(img.at({4, 1, 0, 0}) == double((1 + 1024) % 256));
    CHECK(img.at({4, 2, 31, 31}) == double((1 + 3071) % 256));
    CHECK(img.at({4, 0, 1, 0}) == double((1 + 32) % 256));

    std::filesystem::remove(dir / "data_batch_4.bin");
    std::string e = error_of([&] { data::load_cifar10(dir.path.string(), data::Split::train); });
    CHECK(contains(e, "data_batch_4.bin"));
    write_cifar(dir / "data_batch_4.bin", 2);
    std::filesystem::resize_file(dir / "data_batch_4.bin", 3073 * 2 - 7);
    e = error_of([&] { data::load_cifar10(dir.path.string(), data::Split::train); });
    CHECK(contains(e, "data_batch_4.bin"));
    CHECK(contains(e, "not a whole number of 3073-byte records"));
    std::filesystem::resize_file(dir / "data_batch_4.bin", 0);
    CHECK(contains(error_of([&] { data::load_cifar10(dir.path.string(), data::Split::train); }),
                   "data_batch_4.bin' is empty (no records)"));
    {
      std::fstream f(dir / "test_batch.bin", std::ios::binary | std::ios::in | std::ios::out);
      f.seekp(3073 * 2);
      f.put(char(17));
    }
    e = error_of([&] { data::load_cifar10(dir.path.string(), data::Split::test); });
    CHECK(contains(e, "test_batch.bin"));
    CHECK(contains(e, "record 2 has label 17"));
    { std::ofstream f(dir / "test_batch.bin", std::ios::binary | std::ios::trunc); }
    CHECK(contains(error_of([&] { data::load_cifar10(dir.path.string(), data::Split::test); }), "test_batch.bin"));
  }

  TEST_CASE("CIFAR-10 reader on random and mutated files: an error naming the file, or the data, never a crash") {
    test::TempDir dir;
    const std::string path = dir / "data_batch_1.bin";
    for (uint64_t trial = 0; trial < 200; ++trial) {
      // Random sizes around whole records, random bytes (labels mostly out of range), or valid records with one byte
      // flipped.
      const double u = philox::uniform_f64(trial, 1, 0);
      const size_t records = size_t(philox::uniform_f64(trial, 1, 1) * 3);
      size_t size = records * 3073;
      if (u < 0.5) size += size_t(philox::uniform_f64(trial, 1, 2) * 3073) % 3073;
      std::string bytes(size, '\0');
      for (size_t i = 0; i < size; ++i)
        bytes[i] =
            u < 0.25 ? char(uint8_t(philox::uniform_f64(trial, 2, i) * 256)) : char(i % 3073 == 0 ? i / 3073 % 10 : i % 251);
      if (u >= 0.75 && size) bytes[size_t(philox::uniform_f64(trial, 1, 3) * double(size))] ^= char(0x5A);
      {
        std::ofstream f(path, std::ios::binary | std::ios::trunc);
        f.write(bytes.data(), std::streamsize(bytes.size()));
      }
      try {
        auto [x, y] = data::read_cifar10_batch(path);
        CHECK(x.shape()[0] * 3073 == int64_t(size));
        for (int64_t i = 0; i < y.numel(); ++i) CHECK(y.data<int64_t>()[i] < 10);
      } catch (const Error& e) {
        CHECK(contains(e.what(), path));
      }
    }
  }

  TEST_CASE("image transforms for any channel count") {
    const int64_t B = 6, C = 3, H = 5, W = 4;
    NDArray batch = NDArray::empty({B, C, H, W}, uint8);
    for (int64_t i = 0; i < batch.numel(); ++i) batch.data<uint8_t>()[i] = uint8_t(1 + i % 250);
    std::vector<int64_t> idx{0, 1, 2, 3, 4, 5};
    data::BatchInfo info{3, idx, 77};
    // Crops shift every channel of an example by the same offset, filling with zeros.
    NDArray cropped = data::transforms::random_crop(2)(batch, info);
    bool shifted_alike = true, some_zero = false;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w) {
          const bool z0 = cropped.at({b, 0, h, w}) == 0;
          some_zero |= z0;
          for (int64_t c = 1; c < C; ++c) shifted_alike &= (cropped.at({b, c, h, w}) == 0) == z0;
        }
    CHECK(shifted_alike);
    CHECK(some_zero);
    NDArray flipped = data::transforms::random_flip_horizontal(1.0)(batch, info);
    CHECK(flipped.at({2, 1, 3, 0}) == batch.at({2, 1, 3, W - 1}));
    NDArray norm = data::transforms::normalize_channels({0.1, 0.2, 0.3}, {0.5, 1.0, 2.0})(batch, info);
    CHECK(norm.dtype() == float32);
    CHECK(norm.at({1, 2, 4, 3}) == doctest::Approx((batch.at({1, 2, 4, 3}) / 255.0 - 0.3) / 2.0));
    CHECK(norm.at({5, 0, 0, 1}) == doctest::Approx((batch.at({5, 0, 0, 1}) / 255.0 - 0.1) / 0.5));
    CHECK(contains(error_of([&] { data::transforms::normalize_channels({0.1}, {0.5})(batch, info); }),
                   "expected [B, 1, ...]"));
    CHECK(contains(error_of([] { data::transforms::normalize_channels({0.1, 0.2}, {0.5, 0.0}); }), "stddev > 0"));
  }
}
