// Convolution, pooling and batch norm ops beyond the registry sweep (which
// checks every example forward and through first-order gradients): errors at
// build time, second-order gradients, the CPU kernels' chunked and
// tap-skipping paths against the references on larger shapes at 1 and 2
// threads, and plans with their workspaces.

#include <oneapi/tbb/task_arena.h>

#include <cmath>

#include "core/autodiff.hpp"
#include "ops/check.hpp"
#include "tests/core/graphs.hpp"

using namespace loom;
using test::contains;
using test::error_of;

namespace {

/// Runs op eagerly inside an arena of `threads` and compares with its reference (float64, tight).
void check_against_reference(const std::string& op, const std::vector<NDArray>& in, const Attrs& attrs, int threads,
                             DType dtype = float64) {
  std::vector<NDArray> cast;
  for (const NDArray& a : in) cast.push_back(a.astype(dtype));
  tbb::task_arena arena(threads);
  std::vector<NDArray> got = arena.execute([&] { return invoke(op, cast, attrs); });
  std::vector<NDArray> want = find_op(op).reference(in, attrs);
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    const double tol = dtype == float64 ? 1e-10 : 1e-4;
    CAPTURE(test::max_abs_diff(got[i], want[i]));
    CHECK(test::allclose(got[i], want[i], tol, tol));
  }
}

Attrs conv_attrs(Conv2dOptions o) { return conv2d_attrs(o); }

struct Geometry {
  const char* label;
  Shape x, w;
  Conv2dOptions options;
};

/// Batches large enough for several chunks per task, groups, dilation,
/// feature maps where some kernel taps only see padding (1x1 and 2x2 maps),
/// one output position whose taps read the whole image (no lowering).
std::vector<Geometry> kernel_geometries() {
  return {{"3x3 pad 1, many images per chunk", {37, 5, 6, 5}, {7, 5, 3, 3}, {.padding = {1}}},
          {"3x3 on 1x1: only the centre tap lives", {20, 6, 1, 1}, {4, 6, 3, 3}, {.padding = {1}}},
          {"3x3 stride 2 on 2x2", {9, 4, 2, 2}, {5, 4, 3, 3}, {.stride = {2}, .padding = {1}}},
          {"3x3 on 1x1, groups 3", {11, 6, 1, 1}, {9, 2, 3, 3}, {.padding = {1}, .groups = 3}},
          {"3x3 on 3x3 without padding: one position, every tap", {7, 3, 3, 3}, {4, 3, 3, 3}, {}},
          {"3x3 on 1x1, 1100 images: several chunks per task", {1100, 3, 1, 1}, {5, 3, 3, 3}, {.padding = {1}}},
          {"7x7 stride 4 pad 3", {5, 2, 13, 11}, {3, 2, 7, 7}, {.stride = {4}, .padding = {3}}},
          {"groups 3, dilation 2, asymmetric padding",
           {6, 6, 9, 10},
           {9, 2, 3, 3},
           {.stride = {1, 2}, .padding = {2, 0, 1, 3}, .dilation = {2}, .groups = 3}},
          {"1x1 on a large map (one image per chunk)", {3, 4, 30, 31}, {6, 4, 1, 1}, {}},
          {"5x5 pad 2 on a large map", {2, 3, 25, 27}, {4, 3, 5, 5}, {.padding = {2}}},
          {"a stride beyond oneDNN's int range (im2col runs it)",
           {2, 3, 5, 6},
           {4, 3, 3, 3},
           {.stride = {int64_t(1) << 40, 2}}}};
}

/// True when a and b agree as the edge sweep compares: NaN where the other has NaN, equal
/// infinities, finite values within 1e-9 (relative above 1).
bool same_or_both_nonfinite(const NDArray& a, const NDArray& b) {
  if (a.shape() != b.shape()) return false;
  NDArray x = a.astype(float64).compact(), y = b.astype(float64).compact();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double p = x.data<double>()[i], q = y.data<double>()[i];
    if (std::isnan(p) || std::isnan(q) || std::isinf(p) || std::isinf(q)) {
      if (!(std::isnan(p) && std::isnan(q)) && p != q) return false;
    } else if (!(std::fabs(p - q) <= 1e-9 * std::max(1.0, std::fabs(q)))) {
      return false;
    }
  }
  return true;
}

Shape conv_out(const Geometry& g) {
  Graph gr;
  return conv2d(gr.placeholder("x", g.x), gr.placeholder("w", g.w), g.options).shape();
}

}  // namespace

TEST_SUITE("ops/conv") {
  TEST_CASE("build-time errors name the node, the shapes and what was expected") {
    Graph g;
    Tensor x = g.placeholder("x", {2, 3, 5, 5});
    Tensor w = g.placeholder("w", {4, 3, 3, 3});
    std::string e = error_of([&] { conv2d(x, g.placeholder("big", {4, 3, 9, 9}), {.padding = {1}}); });
    CHECK(contains(e, "conv2d '"));
    CHECK(contains(e, "larger than the padded input"));
    CHECK(contains(e, "[2,3,5,5]"));
    e = error_of([&] { conv2d(x, g.placeholder("wg", {4, 1, 3, 3}), {.groups = 2}); });
    CHECK(contains(e, "input channels 3 (input [2,3,5,5]) are not divisible by groups 2"));
    e = error_of([&] { conv2d(g.placeholder("x6", {2, 6, 5, 5}), g.placeholder("wk", {3, 3, 3, 3}), {.groups = 2}); });
    CHECK(contains(e, "output channels 3 (weight [3,3,3,3]) are not divisible by groups 2"));
    e = error_of([&] { conv2d(g.placeholder("x4", {2, 4, 5, 5}), g.placeholder("w4", {6, 1, 3, 3}), {.groups = 2}); });
    CHECK(contains(e, "has 4 channels; weight [6,1,3,3] with groups 2 expects 2"));
    e = error_of([&] { conv2d(g.placeholder("x3", {3, 5, 5}), w); });
    CHECK(contains(e, "expected a 4-D input [N, C, H, W], got [3,5,5]"));
    CHECK(contains(e, "3-D input to a 2-D conv"));
    e = error_of([&] { max_pool2d(g.placeholder("p3", {3, 5, 5})); });
    CHECK(contains(e, "max_pool2d 'max_pool2d"));
    CHECK(contains(e, "expected a 4-D input [N, C, H, W], got [3,5,5]"));
    e = error_of([&] { conv2d(x, g.placeholder("w2", {4, 27})); });
    CHECK(contains(e, "expected a 4-D weight"));
    e = error_of([&] { conv2d(x, w, {.stride = {0}}); });
    CHECK(contains(e, "stride must be 2 positive values"));
    e = error_of([&] { conv2d(x, w, {.padding = {1, 2, 3}}); });
    CHECK(contains(e, "padding needs 1, 2 (h, w) or 4"));
    e = error_of([&] { conv2d(x, g.placeholder("wd", {4, 3, 3, 3}, float64)); });
    CHECK(contains(e, "dtypes differ"));
    e = error_of([&] { conv2d(x, w, g.placeholder("b", {5}), {}); });
    CHECK(contains(e, "bias must be [4]"));
    e = error_of([&] { max_pool2d(x, {.kernel = {2}, .padding = {2}}); });
    CHECK(contains(e, "at most half the kernel"));
    e = error_of([&] { max_pool2d(g.placeholder("small", {1, 1, 2, 2}), {.kernel = {3}}); });
    CHECK(contains(e, "larger than the padded input"));
    // Attribute values whose arithmetic would overflow int64 are errors, not undefined behaviour.
    constexpr int64_t kHuge = INT64_MAX;
    e = error_of([&] { max_pool2d(x, {.kernel = {2}, .padding = {kHuge}}); });
    CHECK(contains(e, "at most half the kernel"));
    e = error_of([&] { conv2d(x, w, {.padding = {kHuge}}); });
    CHECK(contains(e, "overflows"));
    e = error_of([&] { conv2d(x, w, {.dilation = {kHuge}}); });
    CHECK(contains(e, "overflows"));
    e = error_of([&] { conv2d(x, g.placeholder("wgh", {4, 3, 3, 3}), {.groups = kHuge}); });
    CHECK(contains(e, "conv2d '"));
    // A window whose area would overflow (an average's divisor), and an empty image (PyTorch refuses it; a
    // padded window over nothing gave 0 or NaN).
    e = error_of([&] {
      avg_pool2d(g.placeholder("one", {1, 1, 1, 1}),
                 {.kernel = {int64_t(1) << 32}, .stride = {1}, .padding = {int64_t(1) << 31}});
    });
    CHECK(contains(e, "is larger than 2^31"));
    e = error_of([&] { max_pool2d(g.placeholder("empty", {1, 1, 0, 0}), {.kernel = {2}, .padding = {1}}); });
    CHECK(contains(e, "expected a non-empty image, got input [1,1,0,0]"));
    e = error_of([&] { adaptive_avg_pool2d(g.placeholder("flat", {1, 1, 3, 0}), {2}); });
    CHECK(contains(e, "expected a non-empty image, got input [1,1,3,0]"));
    e = error_of([&] { batch_norm(x, g.placeholder("bw", {4}), g.placeholder("bb", {3})); });
    CHECK(contains(e, "weight must be [3]"));
    // The graph is still usable after the errors.
    Session s(g);
    NDArray out = s.run({conv2d(x, w, {.padding = {1}})},
                        {{x, test::rand({2, 3, 5, 5}, 1)}, {w, test::rand({4, 3, 3, 3}, 2)}})[0];
    CHECK(out.shape() == Shape{2, 4, 5, 5});
  }

  TEST_CASE("dynamic batch and spatial sizes are resolved at run time") {
    Graph g;
    Tensor x = g.placeholder("x", {-1, 2, -1, -1});
    Tensor w = g.placeholder("w", {3, 2, 3, 3});
    Tensor y = conv2d(x, w, {.stride = {2}, .padding = {1}});
    CHECK(y.shape() == Shape{-1, 3, -1, -1});
    Tensor dx = gradients(sum(y * y), {x})[0];
    Session s(g);
    NDArray xv = test::rand({3, 2, 7, 6}, 4), wv = test::rand({3, 2, 3, 3}, 5);
    auto out = s.run({y, dx}, {{x, xv}, {w, wv}});
    CHECK(out[0].shape() == Shape{3, 3, 4, 3});
    CHECK(out[1].shape() == xv.shape());
  }

  TEST_CASE("the CPU kernels match the references on chunked, grouped and tap-skipping shapes") {
    for (const Geometry& geo : kernel_geometries()) {
      CAPTURE(geo.label);
      const Attrs a = conv_attrs(geo.options);
      const Shape y = conv_out(geo);
      NDArray x = test::rand(geo.x, 11, float64), w = test::rand(geo.w, 12, float64), dy = test::rand(y, 13, float64);
      NDArray b = test::rand({geo.w[0]}, 14, float64);
      Attrs relu = a;
      relu.set("relu", true);
      for (int threads : {1, 2}) {
        CAPTURE(threads);
        check_against_reference("conv2d", {x, w}, a, threads);
        check_against_reference("conv2d", {x, w, b}, relu, threads);
        check_against_reference("conv2d_backward_data", {dy, w, x}, a, threads);
        check_against_reference("conv2d_backward_filter", {x, dy, w}, a, threads);
      }
      check_against_reference("conv2d", {x, w}, a, 2, float32);
      check_against_reference("conv2d_backward_data", {dy, w, x}, a, 2, float32);
      check_against_reference("conv2d_backward_filter", {x, dy, w}, a, 2, float32);
    }
  }

  TEST_CASE("the FLOPs of the conv family count multiply-adds of input elements, not of padding") {
    for (const Geometry& geo : kernel_geometries()) {
      CAPTURE(geo.label);
      const Attrs a = conv_attrs(geo.options);
      const Shape y = conv_out(geo);
      const std::vector<int64_t>&st = a.ints("stride"), &pd = a.ints("padding"), &dl = a.ints("dilation");
      double macs = 0;  // counted one output position and tap at a time
      for (int64_t oh = 0; oh < y[2]; ++oh)
        for (int64_t ow = 0; ow < y[3]; ++ow)
          for (int64_t r = 0; r < geo.w[2]; ++r)
            for (int64_t s = 0; s < geo.w[3]; ++s) {
              const int64_t ih = oh * st[0] - pd[0] + r * dl[0], iw = ow * st[1] - pd[2] + s * dl[1];
              macs += ih >= 0 && ih < geo.x[2] && iw >= 0 && iw < geo.x[3];
            }
      macs *= double(geo.x[0] * geo.w[0] * geo.w[1]);
      auto flops = [&](const char* op, std::vector<Shape> in, Shape out) {
        std::vector<TensorType> i, o{{float32, out}};
        for (Shape& s : in) i.push_back({float32, s});
        return find_op(op).flops(i, o, a);
      };
      CHECK(flops("conv2d", {geo.x, geo.w}, y) == 2 * macs);
      CHECK(flops("conv2d_backward_data", {y, geo.w, geo.x}, geo.x) == 2 * macs);
      CHECK(flops("conv2d_backward_filter", {geo.x, y, geo.w}, geo.w) == 2 * macs);
    }
  }

  TEST_CASE("non-finite values on tap-skipping shapes: padding is multiplied, as the reference and PyTorch's float64") {
    // The im2col lowering drops taps that only read padding; 0 * inf = NaN must still reach
    // the outputs (forward: a non-finite weight on such a tap; weight gradient: a non-finite
    // dy makes every dropped tap of its channel NaN). PyTorch 2.x float64 (slow_conv2d) agrees.
    for (const Geometry& geo : kernel_geometries()) {
      CAPTURE(geo.label);
      const Attrs a = conv_attrs(geo.options);
      const Shape y = conv_out(geo);
      for (double v : {double(INFINITY), -double(INFINITY), double(NAN)}) {
        CAPTURE(v);
        NDArray x = test::rand(geo.x, 21, float64), w = test::rand(geo.w, 22, float64), dy = test::rand(y, 23, float64);
        w.data<double>()[0] = v;  // tap (0, 0) of output channel 0: only padding on the 1x1 and 2x2 maps
        dy.data<double>()[dy.numel() - 1] = v;
        for (int threads : {1, 2}) {
          CAPTURE(threads);
          tbb::task_arena arena(threads);
          auto run = [&](const char* op, std::vector<NDArray> in) {
            NDArray got = arena.execute([&] { return invoke(op, in, a); })[0];
            NDArray want = find_op(op).reference(in, a)[0];
            CAPTURE(op);
            CHECK_MESSAGE(same_or_both_nonfinite(got, want), got, " vs reference ", want);
          };
          run("conv2d", {x, w});
          run("conv2d_backward_data", {dy, w, x});
          run("conv2d_backward_filter", {x, dy, w});
        }
      }
    }
  }

  TEST_CASE("non-finite values in float32: what every kernel path guarantees") {
    // float32 runs oneDNN's direct kernels where they are faster; like PyTorch's float32
    // (mkldnn) and cuDNN they skip padding, so a non-finite weight on a tap over padding may
    // leave an output finite (README, "Infinities and NaN"). Every output that reads the
    // value through the input itself is non-finite on every path, other channels are exact.
    const Attrs a = conv_attrs({.padding = {1}});
    NDArray x = test::rand({4, 8, 6, 6}, 41, float64), w = test::rand({8, 8, 3, 3}, 42, float64);
    w.data<double>()[0] = NAN;  // w[0, 0, 0, 0]: reads x[., 0, oh - 1, ow - 1]
    NDArray got = invoke("conv2d", {x.astype(float32), w.astype(float32)}, a)[0].astype(float64);
    NDArray want = find_op("conv2d").reference(std::vector<NDArray>{x, w}, a)[0];
    for (int64_t n = 0; n < 4; ++n)
      for (int64_t k = 0; k < 8; ++k)
        for (int64_t oh = 0; oh < 6; ++oh)
          for (int64_t ow = 0; ow < 6; ++ow) {
            const int64_t i = ((n * 8 + k) * 6 + oh) * 6 + ow;
            const double g = got.data<double>()[i], r = want.data<double>()[i];
            CAPTURE(i);
            if (k != 0)
              CHECK(g == doctest::Approx(r).epsilon(1e-4));
            else if (oh > 0 && ow > 0)
              CHECK(std::isnan(g));
          }
  }

  TEST_CASE("second-order gradients of conv2d through its gradient ops") {
    const std::vector<Geometry> cases = {
        {"3x3 pad 1", {2, 2, 4, 5}, {3, 2, 3, 3}, {.padding = {1}}},
        {"stride 2, dilation 2, groups 2",
         {1, 4, 7, 6},
         {2, 2, 3, 2},
         {.stride = {2}, .padding = {1, 2}, .dilation = {2}, .groups = 2}},
        {"5x5 on 1x1 input (dead taps)", {2, 2, 1, 1}, {2, 2, 5, 5}, {.padding = {2}}}};
    for (const Geometry& geo : cases) {
      CAPTURE(geo.label);
      const Conv2dOptions o = geo.options;
      // f(x, w) = d/d(x, w) sum(conv(x, w)^2 * c): its gradient needs the gradients of both gradient ops.
      auto f = [&](const std::vector<Tensor>& in) {
        Tensor y = conv2d(in[0], in[1], o);
        Tensor c = in[0].graph().constant(test::rand(y.shape(), 3, float64, 0.5, 1.5));
        return gradients(sum(y * y * c), {in[0], in[1]});
      };
      CheckResult r = check_gradient_fn(f, {test::rand(geo.x, 1, float64), test::rand(geo.w, 2, float64)}, {0, 1});
      CHECK_MESSAGE(r.ok, r.detail);
    }
  }

  TEST_CASE("second-order gradients of pooling and batch norm") {
    auto check = [](const char* label, const std::function<Tensor(const Tensor&)>& op, const NDArray& x) {
      CAPTURE(label);
      auto f = [&](const std::vector<Tensor>& in) {
        Tensor y = op(in[0]);
        Tensor c = in[0].graph().constant(test::rand(y.shape(), 9, float64, 0.5, 1.5));
        return gradients(sum(y * y * c), {in[0]});
      };
      CheckResult r = check_gradient_fn(f, {x}, {0});
      CHECK_MESSAGE(r.ok, r.detail);
    };
    // Distinct values a safe distance apart: the maxima do not move under the numeric step.
    NDArray x = NDArray::empty({2, 2, 5, 4}, float64);
    for (int64_t i = 0; i < x.numel(); ++i) x.data<double>()[i] = double((i * 37) % 80) / 40.0 - 1.0;
    check(
        "max_pool2d 3x3 stride 2 pad 1",
        [](const Tensor& t) { return max_pool2d(t, {.kernel = {3}, .stride = {2}, .padding = {1}}); }, x);
    check(
        "avg_pool2d 2x2, padding not counted",
        [](const Tensor& t) {
          return avg_pool2d(t, {.kernel = {2}, .stride = {1}, .padding = {1}, .count_include_pad = false});
        },
        x);
    check(
        "adaptive_avg_pool2d 3x2",
        [](const Tensor& t) {
          return adaptive_avg_pool2d(t, {3, 2});
        },
        x);
    auto bn = [](bool relu) {
      return [relu](const Tensor& t) {
        Graph& g = t.graph();
        Tensor w = g.constant(test::rand({2}, 5, float64, 0.5, 1.5)), b = g.constant(test::rand({2}, 6, float64));
        BatchNormOutputs o = batch_norm(t, w, b, 1e-5, relu);
        return o.y + sum(o.mean * o.var);  // the statistics carry gradients too
      };
    };
    check("batch_norm", bn(false), test::rand({3, 2, 2, 3}, 7, float64, -2, 2));
    check("batch_norm with relu", bn(true), test::rand({3, 2, 2, 3}, 8, float64, -2, 2));
  }

  TEST_CASE("pooling kernels on larger maps and PyTorch's conventions") {
    NDArray x = test::rand({3, 4, 17, 15}, 21, float64);
    for (int threads : {1, 2}) {
      check_against_reference("max_pool2d", {x},
                              {{"kernel", std::vector<int64_t>{3, 3}},
                               {"stride", std::vector<int64_t>{2, 2}},
                               {"padding", std::vector<int64_t>{1, 1, 1, 1}}},
                              threads);
      check_against_reference("adaptive_avg_pool2d", {x}, {{"output_size", std::vector<int64_t>{4, 6}}}, threads);
      // 2x2 stride 2 (a fast path) on odd sizes: the last row and column belong to no window.
      const Attrs two{{"kernel", std::vector<int64_t>{2, 2}},
                      {"stride", std::vector<int64_t>{2, 2}},
                      {"padding", std::vector<int64_t>{0, 0, 0, 0}}};
      NDArray g = test::rand({3, 4, 8, 7}, 22, float64), h = test::rand(x.shape(), 23, float64);
      for (DType t : {float32, float64}) {
        check_against_reference("max_pool2d", {x}, two, threads, t);
        check_against_reference("max_pool2d_grad", {x, g}, two, threads, t);
        check_against_reference("max_pool2d_pick", {x, h}, two, threads, t);
      }
    }
    // Ties go to the first maximum; a NaN wins, the last of several (as PyTorch's CPU kernel).
    NDArray t = NDArray::from<float>({1, 3, 3, 2, 0, NAN, NAN, 5}, {1, 2, 2, 2});
    Attrs a{{"kernel", std::vector<int64_t>{2, 2}},
            {"stride", std::vector<int64_t>{2, 2}},
            {"padding", std::vector<int64_t>{0, 0, 0, 0}}};
    NDArray y = invoke("max_pool2d", {t}, a)[0];
    CHECK(y.data<float>()[0] == 3);
    CHECK(std::isnan(y.data<float>()[1]));
    NDArray dx = invoke("max_pool2d_grad", {t, NDArray::from<float>({1, 1}, {1, 2, 1, 1})}, a)[0];
    CHECK(dx.to_vector<float>() == std::vector<float>{0, 1, 0, 0, 0, 0, 1, 0});
    Attrs overlapping = a;
    overlapping.set("stride", std::vector<int64_t>{1, 1});  // the general path, same rule
    NDArray dg = invoke("max_pool2d_grad", {t, NDArray::from<float>({1, 1}, {1, 2, 1, 1})}, overlapping)[0];
    CHECK(dg.to_vector<float>() == std::vector<float>{0, 1, 0, 0, 0, 0, 1, 0});
    // count_include_pad: a 2x2 window over one real value and three padded zeros.
    NDArray ones = NDArray::full({1, 1, 2, 2}, 1.0);
    Attrs p{{"kernel", std::vector<int64_t>{2, 2}},
            {"stride", std::vector<int64_t>{2, 2}},
            {"padding", std::vector<int64_t>{1, 1, 1, 1}}};
    CHECK(invoke("avg_pool2d", {ones}, p)[0].data<float>()[0] == doctest::Approx(0.25));
    p.set("count_include_pad", false);
    CHECK(invoke("avg_pool2d", {ones}, p)[0].data<float>()[0] == doctest::Approx(1.0));
    // Adaptive pooling to more outputs than inputs: overlapping windows, as PyTorch
    // (2 -> 3 along an axis: windows [0,1), [0,2), [1,2)).
    NDArray up = invoke("adaptive_avg_pool2d", {NDArray::from<float>({1, 2, 3, 4}, {1, 1, 2, 2})},
                        {{"output_size", std::vector<int64_t>{3, 3}}})[0];
    CHECK(up.shape() == Shape{1, 1, 3, 3});
    CHECK(up.to_vector<float>() == std::vector<float>{1, 1.5, 2, 2, 2.5, 3, 3, 3.5, 4});
    check_against_reference("adaptive_avg_pool2d", {x}, {{"output_size", std::vector<int64_t>{40, 31}}}, 2);
    check_against_reference("adaptive_avg_pool2d_grad", {test::rand({3, 4, 40, 31}, 24, float64), x},
                            {{"output_size", std::vector<int64_t>{40, 31}}}, 2);
  }

  TEST_CASE("ceil_mode and adaptive max pooling: PyTorch's output sizes and values") {
    auto windowed = [](std::vector<int64_t> k, std::vector<int64_t> s, std::vector<int64_t> p, bool ceil) {
      Attrs a{{"kernel", k}, {"stride", s}, {"padding", p}};
      if (ceil) a.set("ceil_mode", true);
      return a;
    };
    // (7 i) mod 11 on a 6x6 image, and PyTorch 2.15's results in float64.
    std::vector<double> v;
    for (int i = 0; i < 36; ++i) v.push_back(double(7 * i % 11));
    const NDArray x = NDArray::from<double>(v, {1, 1, 6, 6});
    std::vector<double> top_left;  // x[:, :, :5, :5]
    for (int i = 0; i < 36; ++i)
      if (i / 6 < 5 && i % 6 < 5) top_left.push_back(v[size_t(i)]);
    const NDArray x55 = NDArray::from<double>(top_left, {1, 1, 5, 5});
    auto values = [](const NDArray& a) { return a.to_vector<double>(); };
    CHECK(values(invoke("max_pool2d", {x55}, windowed({2, 2}, {2, 2}, {0, 0, 0, 0}, true))[0]) ==
          std::vector<double>{9, 10, 6, 7, 10, 2, 10, 6, 9});
    CHECK(values(invoke("avg_pool2d", {x55}, windowed({2, 2}, {2, 2}, {0, 0, 0, 0}, true))[0]) ==
          std::vector<double>{5.25, 5.5, 5, 4, 7, 1, 6.5, 4, 9});
    // k3 s2 p1 on 6: a fourth window [5, 8) whose divisor counts the padded column 6 but not column 7.
    Attrs a = windowed({3, 3}, {2, 2}, {1, 1, 1, 1}, true);
    NDArray y = invoke("avg_pool2d", {x}, a)[0];
    CHECK(y.shape() == Shape{1, 1, 4, 4});
    const std::vector<double> included{7 / 3.,  34 / 9., 10 / 3., 1 / 3., 10 / 3., 46 / 9., 40 / 9., 8 / 3.,
                                       28 / 9., 43 / 9., 37 / 9., 2.5,    1.5,     2,       5 / 3.,  0.75};
    for (size_t i = 0; i < included.size(); ++i) CHECK(values(y)[i] == doctest::Approx(included[i]).epsilon(1e-14));
    a.set("count_include_pad", false);
    y = invoke("avg_pool2d", {x}, a)[0];
    const std::vector<double> excluded{5.25,    17 / 3., 5,       1, 5,   46 / 9., 40 / 9., 16 / 3.,
                                       14 / 3., 43 / 9., 37 / 9., 5, 4.5, 4,       10 / 3., 3};
    for (size_t i = 0; i < excluded.size(); ++i) CHECK(values(y)[i] == doctest::Approx(excluded[i]).epsilon(1e-14));
    // Output sizes, including PyTorch's rule that drops a last window starting past the input and padding.
    auto shape_of = [](Shape in, const Attrs& at) {
      Graph g;
      return g.add1("max_pool2d", {g.placeholder("x", in, float64)}, at).shape();
    };
    CHECK(shape_of({1, 1, 6, 6}, windowed({3, 3}, {2, 2}, {0, 0, 0, 0}, true)) == Shape{1, 1, 3, 3});
    CHECK(shape_of({1, 1, 6, 6}, windowed({3, 3}, {3, 3}, {1, 1, 1, 1}, true)) == Shape{1, 1, 3, 3});
    CHECK(shape_of({1, 1, 6, 5}, windowed({2, 2}, {2, 2}, {1, 1, 1, 1}, true)) == Shape{1, 1, 4, 3});
    CHECK(shape_of({1, 1, 6, 5}, windowed({2, 2}, {2, 2}, {1, 1, 1, 1}, false)) == Shape{1, 1, 4, 3});
    CHECK(shape_of({1, 1, 7, 7}, windowed({2, 2}, {2, 2}, {0, 0, 0, 0}, false)) == Shape{1, 1, 3, 3});
    // Adaptive max pooling 5x6 -> 3x4: windows of 2 and 3 rows, overlapping.
    const NDArray x56 = NDArray::from<double>(std::vector<double>(v.begin(), v.begin() + 30), {1, 1, 5, 6});
    CHECK(values(invoke("adaptive_max_pool2d", {x56}, {{"output_size", std::vector<int64_t>{3, 4}}})[0]) ==
          std::vector<double>{9, 7, 10, 6, 9, 10, 8, 9, 10, 10, 9, 9});
    // Larger maps, every kernel path, against the references (the 2x2 fast path must leave
    // ceil_mode's partial windows to the general one).
    NDArray big = test::rand({3, 4, 17, 15}, 31, float64), h = test::rand(big.shape(), 32, float64);
    for (const Attrs& at : {windowed({2, 2}, {2, 2}, {0, 0, 0, 0}, true), windowed({3, 2}, {2, 3}, {1, 0, 1, 1}, true)})
      for (int threads : {1, 2})
        for (DType t : {float32, float64}) {
          const Shape pooled = shape_of(big.shape(), at);
          check_against_reference("max_pool2d", {big}, at, threads, t);
          check_against_reference("max_pool2d_grad", {big, test::rand(pooled, 33, float64)}, at, threads, t);
          check_against_reference("max_pool2d_pick", {big, h}, at, threads, t);
          check_against_reference("avg_pool2d", {big}, at, threads, t);
          check_against_reference("avg_pool2d_grad", {test::rand(pooled, 34, float64), big}, at, threads, t);
        }
    const Attrs adaptive{{"output_size", std::vector<int64_t>{5, 20}}};
    check_against_reference("adaptive_max_pool2d", {big}, adaptive, 2);
    check_against_reference("adaptive_max_pool2d_grad", {big, test::rand({3, 4, 5, 20}, 35, float64)}, adaptive, 2);
    check_against_reference("adaptive_max_pool2d_pick", {big, h}, adaptive, 2);
  }

  TEST_CASE("batch_norm kernels: statistics without cancellation, large channels") {
    // A large mean and a small spread: a one-pass sum of squares would lose the variance.
    NDArray x = test::rand({16, 3, 9, 7}, 31, float64, -1, 1);
    for (int64_t i = 0; i < x.numel(); ++i) x.data<double>()[i] = 1000.0 + 0.01 * x.data<double>()[i];
    NDArray w = test::rand({3}, 32, float64, 0.5, 1.5), b = test::rand({3}, 33, float64);
    Attrs a{{"eps", 1e-5}, {"relu", false}};
    for (int threads : {1, 2}) check_against_reference("batch_norm", {x, w, b}, a, threads);
    // float32 data (its own rounding of x) against the float64 statistics of that same data.
    NDArray x32 = x.astype(float32);
    std::vector<NDArray> f32 = invoke("batch_norm", {x32, w.astype(float32), b.astype(float32)}, a);
    std::vector<NDArray> ref32 = find_op("batch_norm").reference(std::vector<NDArray>{x32.astype(float64), w, b}, a);
    CHECK(test::allclose(f32[2], ref32[2], 1e-3, 1e-12));  // the variance (~3e-5) to 0.1%
    std::vector<NDArray> ref = find_op("batch_norm").reference(std::vector<NDArray>{x, w, b}, a);
    NDArray dy = test::rand(x.shape(), 34, float64);
    check_against_reference("batch_norm_grad", {x, dy, w, b, ref[1], ref[2]}, {{"eps", 1e-5}, {"relu", true}}, 2);
  }

  TEST_CASE("plans place conv workspaces in the arena; serial and parallel executors agree") {
    Graph g;
    Tensor x = g.placeholder("x", {8, 3, 12, 12});
    Tensor w1 = g.variable("w1", {8, 3, 3, 3}, test::init_normal(0.3));
    Tensor w2 = g.variable("w2", {6, 8, 3, 3}, test::init_normal(0.3));
    Tensor h = max_pool2d(relu(conv2d(x, w1, {.padding = {1}})), {.kernel = {2}});
    Tensor y = avg_pool2d(conv2d(h, w2, {.stride = {2}, .padding = {1}}), {.kernel = {3}});
    Tensor loss = sum(y * y);
    auto grads = gradients(loss, {w1, w2});
    NDArray xv = test::rand({8, 3, 12, 12}, 41);
    std::vector<NDArray> first;
    for (Executor ex : {Executor::serial, Executor::parallel}) {
      Session s(g, {.threads = 2, .executor = ex, .seed = 3});
      PlanInfo info = s.plan_info({loss, grads[0], grads[1]}, {{x, xv}});
      test::verify_plan(info);
      std::vector<NDArray> out = s.run({loss, grads[0], grads[1]}, {{x, xv}});
      const PlanStats st = s.stats().last_plan;
      CHECK(st.arena_bytes >= st.lower_bound_bytes);
      if (first.empty())
        first = out;
      else
        for (size_t i = 0; i < out.size(); ++i) CHECK(test::identical(out[i], first[i]));
    }
  }
}
