// The volumetric layers against PyTorch 2.15 (literal float64 outputs in
// tests/frontend/conv3d_tables.inc): Conv3d (stride, padding, dilation,
// groups, bias, reflect padding), MaxPool3d and AvgPool3d (padding,
// ceil_mode, count_include_pad), the adaptive pools, BatchNorm3d (output and
// running statistics) and InstanceNorm3d; gradients by central differences.

#include <cmath>

#include "frontend/loom.hpp"
#include "ops/check.hpp"
#include "tests/util.hpp"

using namespace loom;
using loom::test::contains;
using loom::test::error_of;

namespace {

// clang-format off
#include "tests/frontend/conv3d_tables.inc"
// clang-format on

NDArray arr(const Shape& s, const std::function<double(double)>& f) {
  std::vector<double> v(size_t(numel(s)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = f(double(i));
  return NDArray::from<double>(v, s);
}

/// PyTorch's input [2, 4, 5, 6, 7]: element i is ((7 i) mod 11) / 3 - 1.
NDArray volume() {
  return arr({2, 4, 5, 6, 7}, [](double i) { return std::fmod(7 * i, 11) / 3 - 1; });
}

void check_close(const NDArray& got, const std::vector<double>& want, const Shape& shape) {
  REQUIRE(got.shape() == shape);
  const std::vector<double> v = got.astype(float64).to_vector<double>();
  REQUIRE(v.size() == want.size());
  for (size_t i = 0; i < v.size(); ++i) {
    CAPTURE(i);
    CHECK(v[i] == doctest::Approx(want[i]).epsilon(1e-12));
  }
}

/// fn of a float64 placeholder fed PyTorch's input.
NDArray run_on_volume(const std::function<Tensor(const Tensor&)>& fn) {
  Graph g;
  Tensor x = g.placeholder("x", {-1, 4, 5, 6, 7}, float64);
  Tensor y = fn(x);
  return Session(g).run({y}, {{x, volume()}})[0];
}

}  // namespace

TEST_SUITE("frontend/conv3d") {
  TEST_CASE("conv3d equals PyTorch's F.conv3d (stride, padding, dilation, groups, bias; reflect padding)") {
    const NDArray w = arr({6, 2, 3, 2, 3}, [](double i) { return std::sin(0.3 * i + 0.2) * 0.5; });
    const NDArray b = arr({6}, [](double i) { return 0.1 * i - 0.2; });
    const NDArray w2 = arr({3, 4, 2, 2, 2}, [](double i) { return std::cos(0.2 * i) * 0.4; });
    check_close(run_on_volume([&](const Tensor& x) {
                  Graph& g = x.graph();
                  return nn::conv3d(x, g.constant(w), g.constant(b),
                                    {.stride = {2, 1, 2}, .padding = {1, 0, 1}, .dilation = {1, 2, 1}, .groups = 2});
                }),
                kConv3d, {2, 6, 3, 4, 4});
    check_close(run_on_volume([&](const Tensor& x) {
                  return nn::conv3d(x, x.graph().constant(w2), {},
                                    {.stride = {2}, .padding = {1}, .padding_mode = PadMode::reflect});
                }),
                kConv3dReflect, {2, 3, 3, 4, 4});
  }

  TEST_CASE("Conv3d: PyTorch's parameters and initialization; gradients of input, weight and bias") {
    Graph g;
    nn::Conv3d conv(4, 6, {3, 2, 3}, {.padding = {1}, .groups = 2});
    Tensor y = conv(g.placeholder("x", {-1, 4, 5, 6, 7}));
    CHECK(y.shape() == Shape{-1, 6, 5, 7, 7});
    CHECK(conv.weight().shape() == Shape{6, 2, 3, 2, 3});
    CHECK(conv.describe() == "Conv3d(4, 6, kernel=(3, 2, 3), stride=1, padding=1, groups=2, bias)");
    Session s(g, {.seed = 2});
    const double bound = 1 / std::sqrt(2.0 * 3 * 2 * 3);
    for (float v : s.get(conv.weight()).to_vector<float>()) CHECK(std::fabs(v) <= bound);
    const CheckResult r = check_gradient_fn(
        [](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{nn::conv3d(
              in[0], in[1], in[2], {.stride = {2, 1, 1}, .padding = {1, 0, 1}, .dilation = {1, 1, 2}, .groups = 2})};
        },
        {test::rand({1, 4, 4, 3, 5}, 1, float64), test::rand({2, 2, 2, 2, 2}, 2, float64), test::rand({2}, 3, float64)},
        {0, 1, 2});
    CHECK_MESSAGE(r.ok, r.detail);
    CHECK(contains(error_of([&] { conv(g.placeholder("v", {4, 5, 6, 7})); }), "a single volume needs a batch dim"));
    CHECK(contains(error_of([&] {
                     nn::conv3d(g.placeholder("d", {1, 4, 2, 6, 7}), g.constant(test::rand({6, 2, 3, 2, 3}, 1)), {},
                                {.groups = 2});
                   }),
                   "kernel depth 3 with dilation 1 does not fit the padded depth 2"));
    CHECK(contains(error_of([] { nn::Conv3d(4, 6, {3, 3}); }), "kernel needs 1 or 3 values"));
  }

  TEST_CASE(
      "conv_transpose3d and conv_transpose1d equal PyTorch's (stride, padding, output_padding, groups, dilation)") {
    auto fill = [](const Shape& s, double (*f)(double)) { return arr(s, f); };
    const NDArray xt = arr({2, 4, 3, 4, 3}, [](double i) { return std::fmod(7 * i, 11) / 3 - 1; });
    Graph g;
    Tensor x = g.placeholder("x", {-1, 4, 3, 4, 3}, float64), x1 = g.placeholder("x1", {-1, 4, 7}, float64);
    Tensor a = nn::conv_transpose3d(
        x, g.constant(fill({4, 3, 2, 3, 2}, [](double i) { return std::sin(0.17 * i + 0.3) * 0.5; })),
        g.constant(fill({6}, [](double i) { return 0.05 * i - 0.1; })),
        {.stride = {2, 1, 2}, .padding = {1, 1, 0}, .output_padding = {1, 0, 1}, .groups = 2, .dilation = {1, 2, 1}});
    Tensor b =
        nn::conv_transpose3d(x, g.constant(fill({4, 2, 3, 2, 2}, [](double i) { return std::cos(0.1 * i) * 0.3; })), {},
                             {.stride = {3, 2, 1}, .padding = {2, 0, 0}, .output_padding = {2, 1, 0}});
    Tensor c = nn::conv_transpose1d(x1, g.constant(fill({4, 3, 3}, [](double i) { return std::sin(0.4 * i) * 0.5; })),
                                    g.constant(fill({6}, [](double i) { return 0.1 * i; })),
                                    {.stride = 2, .padding = 1, .output_padding = 1, .groups = 2, .dilation = 2});
    const NDArray x1v = arr({2, 4, 7}, [](double i) { return std::fmod(7 * i, 11) / 3 - 1; });
    const std::vector<NDArray> out = Session(g).run({a, b, c}, {{x, xt}, {x1, x1v}});
    check_close(out[0], kConvT3d, {2, 6, 5, 6, 7});
    check_close(out[1], kConvT3dPlain, {2, 2, 7, 9, 4});
    check_close(out[2], kConvT1d, {2, 6, 16});
    nn::ConvTranspose3d up(4, 2, {2}, {.stride = {2}, .dtype = float64});
    nn::ConvTranspose1d up1(4, 6, 3, {.stride = 2, .groups = 2, .dtype = float64});
    CHECK(up(x).shape() == Shape{-1, 2, 6, 8, 6});
    CHECK(up.weight().shape() == Shape{4, 2, 2, 2, 2});
    CHECK(up.describe() == "ConvTranspose3d(4, 2, kernel=(2, 2, 2), stride=2, padding=0, bias)");
    {
      auto scope = g.scope("up1");
      CHECK(up1(x1).shape() == Shape{-1, 6, 15});
    }
    CHECK(up1.weight().shape() == Shape{4, 3, 3});
    const CheckResult r = check_gradient_fn(
        [](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{nn::conv_transpose3d(
              in[0], in[1], in[2],
              {.stride = {2, 1, 1}, .padding = {1, 0, 0}, .output_padding = {1, 0, 0}, .dilation = {1, 1, 2}})};
        },
        {test::rand({1, 2, 3, 2, 3}, 5, float64), test::rand({2, 2, 2, 2, 2}, 6, float64), test::rand({2}, 7, float64)},
        {0, 1, 2});
    CHECK_MESSAGE(r.ok, r.detail);
    CHECK(contains(error_of([&] {
                     nn::conv_transpose3d(x, g.constant(test::rand({3, 2, 2, 2, 2}, 1)), {});
                   }),
                   "expected a weight [4, out / groups, kd, kh, kw]"));
  }

  TEST_CASE("MaxPool3d, AvgPool3d and the adaptive pools equal PyTorch's; gradients") {
    check_close(run_on_volume([](const Tensor& x) {
                  return nn::MaxPool3d({2, 3, 2}, {.stride = {1, 2, 2}, .padding = {1, 1, 0}})(x);
                }),
                kMaxPool3d, {2, 4, 6, 3, 3});
    check_close(run_on_volume([](const Tensor& x) {
                  return nn::avg_pool3d(x, {3},
                                        {.stride = {2}, .padding = {1}, .count_include_pad = false, .ceil_mode = true});
                }),
                kAvgPool3d, {2, 4, 3, 4, 4});
    check_close(run_on_volume([](const Tensor& x) {
                  return nn::AvgPool3d({2, 2, 3}, {.padding = {1, 0, 1}})(x);
                }),
                kAvgPool3dPad, {2, 4, 3, 3, 3});
    check_close(run_on_volume([](const Tensor& x) {
                  return nn::AdaptiveAvgPool3d({2, 4, 3})(x);
                }),
                kAdaptiveAvg3d, {2, 4, 2, 4, 3});
    check_close(run_on_volume([](const Tensor& x) {
                  return nn::adaptive_max_pool3d(x, {3, 2, 5});
                }),
                kAdaptiveMax3d, {2, 4, 3, 2, 5});
    CHECK(nn::MaxPool3d(2).describe() == "MaxPool3d(kernel=2, stride=2, padding=0)");
    CHECK(nn::AvgPool3d({3}, {.stride = {2}, .count_include_pad = false}).describe() ==
          "AvgPool3d(kernel=3, stride=2, padding=0, count_include_pad=false)");
    const CheckResult r = check_gradient_fn(
        [](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{
              nn::avg_pool3d(
                  in[0], {2, 3, 2},
                  {.stride = {1, 2, 1}, .padding = {1, 1, 0}, .count_include_pad = false, .ceil_mode = true}),
              nn::max_pool3d(in[0], {2}), nn::adaptive_avg_pool3d(in[0], {2, 3, 1})};
        },
        {test::rand({1, 2, 4, 5, 3}, 4, float64)}, {0});
    CHECK_MESSAGE(r.ok, r.detail);
  }

  TEST_CASE("BatchNorm3d (output, running statistics, eval) and InstanceNorm3d equal PyTorch's") {
    Graph g;
    Tensor x = g.placeholder("x", {-1, 4, 5, 6, 7}, float64);
    nn::BatchNorm3d bn(4);
    Tensor y = bn(x);
    bn.eval();
    Tensor y_eval = bn(x);
    nn::InstanceNorm3d in(4);
    Tensor z = in(x);
    CHECK(in.type_name() == "InstanceNorm3d");
    Session s(g);
    const std::vector<NDArray> out = s.run({y, z}, {{x, volume()}}, bn.updates());
    check_close(out[0], kBatchNorm3d, {2, 4, 5, 6, 7});
    check_close(out[1], kInstanceNorm3d, {2, 4, 5, 6, 7});
    check_close(s.get(bn.running_mean()), kBatchNorm3dMean, {4});
    check_close(s.get(bn.running_var()), kBatchNorm3dVar, {4});
    // Eval normalizes with the running statistics.
    const NDArray e = s.run1(y_eval, {{x, volume()}});
    const std::vector<double> xv = volume().to_vector<double>(), ev = e.to_vector<double>();
    for (size_t i = 0; i < xv.size(); i += 97) {
      const size_t c = (i / 210) % 4;
      CHECK(ev[i] == doctest::Approx((xv[i] - kBatchNorm3dMean[c]) / std::sqrt(kBatchNorm3dVar[c] + 1e-5)));
    }
    CHECK(contains(error_of([&] { bn(g.placeholder("img", {2, 4, 5, 6})); }), "expected [N, C, D, H, W]"));
  }
}
