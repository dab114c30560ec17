// 2-D convolution: conv2d and its two gradient ops, conv2d_backward_data and
// conv2d_backward_filter. Each is a primitive with kernels of its own and a
// gradient rule written with the other two, so the family is closed under
// differentiation: second-order gradients are ordinary graph ops.
//
// Layouts are PyTorch's and cuDNN's: input [N, C, H, W], weight
// [Cout, C / groups, KH, KW], output [N, Cout, OH, OW]. Attributes (all
// normalized by the frontend functions): stride [sh, sw], padding
// [top, bottom, left, right], dilation [dh, dw], groups. conv2d takes an
// optional bias [Cout] as a third input and a "relu" flag: the epilogue
// y = relu(conv + bias) runs inside the kernel, on data still in cache.

#include "ops/common.hpp"
#include "ops/ops.hpp"
#include "ops/window.hpp"

namespace loom {

using detail::rand_array;
using V = std::vector<int64_t>;

namespace {

/// Validated geometry attributes of a conv node.
struct ConvAttrs {
  int64_t sh, sw, pt, pb, pl, pr, dh, dw, groups;
};

ConvAttrs conv_attrs(const InferContext& c) {
  const V &st = c.attrs.ints("stride"), &pd = c.attrs.ints("padding"), &dl = c.attrs.ints("dilation");
  c.check(st.size() == 2 && st[0] > 0 && st[1] > 0, "stride must be 2 positive values, got ", attr_str(st));
  c.check(dl.size() == 2 && dl[0] > 0 && dl[1] > 0, "dilation must be 2 positive values, got ", attr_str(dl));
  c.check(pd.size() == 4 && pd[0] >= 0 && pd[1] >= 0 && pd[2] >= 0 && pd[3] >= 0,
          "padding must be 4 values >= 0 (top, bottom, left, right), got ", attr_str(pd));
  const int64_t g = c.attrs.i("groups");
  c.check(g > 0, "groups must be positive, got ", g);
  return {st[0], st[1], pd[0], pd[1], pd[2], pd[3], dl[0], dl[1], g};
}

/// Output size along one axis (-1 when the input size is dynamic), for the
/// padded input's size and the dilated kernel's extent (checked: in_padded >= extent).
int64_t out_size(int64_t in_padded, int64_t extent, int64_t stride) {
  return in_padded < 0 ? -1 : (in_padded - extent) / stride + 1;
}

/// The output type of conv2d(x, w) with the node's attributes; every check a
/// user mistake can trip, with the shapes in the message.
TensorType conv_output(const InferContext& c, const TensorType& x, const TensorType& w) {
  const ConvAttrs a = conv_attrs(c);
  c.check(x.dtype == w.dtype, "input and weight dtypes differ: ", dtype_name(x.dtype), " vs ", dtype_name(w.dtype));
  c.check(is_floating(x.dtype), "dtype ", dtype_name(x.dtype), " not supported (float32, float64)");
  c.check(x.shape.size() == 4, "expected a 4-D input [N, C, H, W], got ", S(x.shape),
          x.shape.size() == 3 ? " (add a batch dim: a 3-D input to a 2-D conv)" : "");
  c.check(w.shape.size() == 4, "expected a 4-D weight [Cout, C/groups, KH, KW], got ", S(w.shape));
  c.check(is_static(w.shape), "the weight shape ", S(w.shape), " must be known");
  const int64_t C = x.shape[1], K = w.shape[0], KH = w.shape[2], KW = w.shape[3];
  c.check(C < 0 || C % a.groups == 0, "input channels ", C, " (input ", S(x.shape), ") are not divisible by groups ",
          a.groups);
  c.check(K > 0 && w.shape[1] > 0 && KH > 0 && KW > 0, "weight ", S(w.shape), " has an empty dim");
  c.check(K % a.groups == 0, "output channels ", K, " (weight ", S(w.shape), ") are not divisible by groups ",
          a.groups);
  const int64_t expected_c = c.mul(w.shape[1], a.groups);
  c.check(C < 0 || C == expected_c, "input ", S(x.shape), " has ", C, " channels; weight ", S(w.shape),
          " with groups ", a.groups, " expects ", expected_c);
  // Checked arithmetic: padding and dilation are the user's numbers.
  const int64_t eh = c.add(c.mul(a.dh, KH - 1), 1), ew = c.add(c.mul(a.dw, KW - 1), 1);
  const int64_t H = x.shape[2] < 0 ? -1 : c.add(x.shape[2], c.add(a.pt, a.pb));
  const int64_t W = x.shape[3] < 0 ? -1 : c.add(x.shape[3], c.add(a.pl, a.pr));
  c.check((H < 0 || H >= eh) && (W < 0 || W >= ew), "kernel ", KH, "x", KW, " (dilation ", a.dh, "x", a.dw,
          ", extent ", eh, "x", ew, ") is larger than the padded input: input ", S(x.shape), ", padding ",
          attr_str(c.attrs.ints("padding")));
  return {x.dtype, {x.shape[0], K, out_size(H, eh, a.sh), out_size(W, ew, a.sw)}};
}

/// Checks that dy matches the output conv2d(x, w) would produce.
void check_dy(const InferContext& c, const TensorType& x, const TensorType& w, const TensorType& dy) {
  const TensorType y = conv_output(c, x, w);
  c.check(dy.dtype == x.dtype, "gradient dtype ", dtype_name(dy.dtype), " differs from ", dtype_name(x.dtype));
  bool ok = dy.shape.size() == 4;
  for (size_t i = 0; ok && i < 4; ++i) ok = dy.shape[i] == y.shape[i] || dy.shape[i] < 0 || y.shape[i] < 0;
  c.check(ok, "output gradient ", S(dy.shape), " does not match the conv output ", S(y.shape), " of input ", S(x.shape),
          " and weight ", S(w.shape));
}

/// The geometry attributes alone (no epilogue), for the gradient ops.
Attrs geometry_of(const Attrs& a) {
  return {{"stride", a.ints("stride")},
          {"padding", a.ints("padding")},
          {"dilation", a.ints("dilation")},
          {"groups", a.i("groups")}};
}

// ---------------------------------------------------------------- reference

/// Host geometry for the reference loops.
struct Geo {
  int64_t N, C, H, W, K, KH, KW, OH, OW;
  ConvAttrs a;
};

Geo geo_of(const Shape& x, const Shape& w, const Attrs& at) {
  const V &st = at.ints("stride"), &pd = at.ints("padding"), &dl = at.ints("dilation");
  ConvAttrs a{st[0], st[1], pd[0], pd[1], pd[2], pd[3], dl[0], dl[1], at.i("groups")};
  return {x[0],
          x[1],
          x[2],
          x[3],
          w[0],
          w[2],
          w[3],
          out_size(x[2] + a.pt + a.pb, a.dh * (w[2] - 1) + 1, a.sh),  // a node's shapes: checked when it was built
          out_size(x[3] + a.pl + a.pr, a.dw * (w[3] - 1) + 1, a.sw),
          a};
}

/// Calls f(x_index, w_index, y_index) (flat, compact NCHW / KCRS / NKHW) for
/// every product x * w that contributes to an output: the definition of the
/// convolution, shared by the three reference implementations. A tap on the
/// padding has x_index -1: padding is zeros that are multiplied, as in
/// PyTorch's kernels, so a NaN or inf weight reaches the outputs whose
/// window covers padding too.
template <class F>
void for_each_tap(const Geo& g, F&& f) {
  const int64_t Cg = g.C / g.a.groups, Kg = g.K / g.a.groups;
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t k = 0; k < g.K; ++k)
      for (int64_t oh = 0; oh < g.OH; ++oh)
        for (int64_t ow = 0; ow < g.OW; ++ow)
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t r = 0; r < g.KH; ++r)
              for (int64_t s = 0; s < g.KW; ++s) {
                const int64_t ih = oh * g.a.sh - g.a.pt + r * g.a.dh, iw = ow * g.a.sw - g.a.pl + s * g.a.dw;
                const bool pad = ih < 0 || ih >= g.H || iw < 0 || iw >= g.W;
                const int64_t ci = (k / Kg) * Cg + c;
                f(pad ? -1 : ((n * g.C + ci) * g.H + ih) * g.W + iw, ((k * Cg + c) * g.KH + r) * g.KW + s,
                  ((n * g.K + k) * g.OH + oh) * g.OW + ow);
              }
}

NDArray host64(const NDArray& a) { return a.astype(float64).compact(); }

std::vector<NDArray> ref_conv(std::span<const NDArray> in, const Attrs& at) {
  const Geo g = geo_of(in[0].shape(), in[1].shape(), at);
  NDArray x = host64(in[0]), w = host64(in[1]), y = NDArray::zeros({g.N, g.K, g.OH, g.OW}, float64);
  const double *px = x.data<double>(), *pw = w.data<double>();
  double* py = y.data<double>();
  for_each_tap(g, [&](int64_t xi, int64_t wi, int64_t yi) { py[yi] += (xi < 0 ? 0.0 : px[xi]) * pw[wi]; });
  if (in.size() > 2 || at.get_or("relu", false)) {
    NDArray b = in.size() > 2 ? host64(in[2]) : NDArray::zeros({g.K}, float64);
    const int64_t plane = g.OH * g.OW;
    for (int64_t i = 0; i < y.numel(); ++i) {
      double v = py[i] + b.data<double>()[(i / plane) % g.K];
      py[i] = at.get_or("relu", false) && v < 0 ? 0 : v;
    }
  }
  return {y.astype(in[0].dtype())};
}

std::vector<NDArray> ref_backward_data(std::span<const NDArray> in, const Attrs& at) {
  const Geo g = geo_of(in[2].shape(), in[1].shape(), at);
  NDArray dy = host64(in[0]), w = host64(in[1]), dx = NDArray::zeros(in[2].shape(), float64);
  const double *pdy = dy.data<double>(), *pw = w.data<double>();
  double* pdx = dx.data<double>();
  for_each_tap(g, [&](int64_t xi, int64_t wi, int64_t yi) {
    if (xi >= 0) pdx[xi] += pdy[yi] * pw[wi];
  });
  return {dx.astype(in[0].dtype())};
}

std::vector<NDArray> ref_backward_filter(std::span<const NDArray> in, const Attrs& at) {
  const Geo g = geo_of(in[0].shape(), in[2].shape(), at);
  NDArray x = host64(in[0]), dy = host64(in[1]), dw = NDArray::zeros(in[2].shape(), float64);
  const double *px = x.data<double>(), *pdy = dy.data<double>();
  double* pdw = dw.data<double>();
  for_each_tap(g, [&](int64_t xi, int64_t wi, int64_t yi) { pdw[wi] += (xi < 0 ? 0.0 : px[xi]) * pdy[yi]; });
  return {dw.astype(in[0].dtype())};
}

// ---------------------------------------------------------------- examples

Attrs conv_example_attrs(V stride, V padding, V dilation, int64_t groups) {
  return {{"stride", stride}, {"padding", padding}, {"dilation", dilation}, {"groups", groups}};
}

/// (x shape, w shape, attrs, label) of the examples: strides 1/2, padding
/// 0/1/2 and asymmetric, dilation 1/2, groups 1/2, kernels 1/3/5/7, odd
/// sizes, batch 1, and a kernel exactly as large as the padded input.
struct ConvCase {
  const char* label;
  Shape x, w;
  Attrs attrs;
};
std::vector<ConvCase> conv_cases() {
  return {
      {"3x3 pad 1", {2, 3, 5, 6}, {4, 3, 3, 3}, conv_example_attrs({1, 1}, {1, 1, 1, 1}, {1, 1}, 1)},
      {"stride 2, odd size, batch 1", {1, 2, 7, 7}, {3, 2, 3, 3}, conv_example_attrs({2, 2}, {0, 0, 0, 0}, {1, 1}, 1)},
      {"5x5 pad 2 dilation 2", {1, 2, 9, 8}, {2, 2, 5, 5}, conv_example_attrs({1, 1}, {2, 2, 2, 2}, {2, 2}, 1)},
      {"1x1 groups 2", {2, 4, 3, 5}, {6, 2, 1, 1}, conv_example_attrs({1, 1}, {0, 0, 0, 0}, {1, 1}, 2)},
      {"7x7 stride 2 pad 3", {1, 1, 9, 9}, {2, 1, 7, 7}, conv_example_attrs({2, 2}, {3, 3, 3, 3}, {1, 1}, 1)},
      {"asymmetric padding, stride 1x2, groups 2",
       {1, 4, 6, 5},
       {2, 2, 3, 2},
       conv_example_attrs({1, 2}, {0, 1, 2, 1}, {1, 1}, 2)},
      {"kernel = padded input", {1, 1, 3, 3}, {1, 1, 5, 5}, conv_example_attrs({1, 1}, {1, 1, 1, 1}, {1, 1}, 1)}};
}

Shape conv_out_shape(const ConvCase& e) {
  const Geo g = geo_of(e.x, e.w, e.attrs);
  return {g.N, g.K, g.OH, g.OW};
}

const bool registered = [] {
  {
    OpDef d;
    d.name = "conv2d";
    d.attrs = {attr::required("stride", AttrKind::integers), attr::required("padding", AttrKind::integers),
               attr::required("dilation", AttrKind::integers), attr::required("groups", AttrKind::integer),
               attr::defaulted("relu", false)};
    d.min_inputs = 2;
    d.max_inputs = 3;
    d.doc = "2-D convolution of [N, C, H, W] by [Cout, C/groups, KH, KW], optional bias and ReLU epilogue";
    d.infer = [](const InferContext& c) {
      TensorType y = conv_output(c, c.in[0], c.in[1]);
      if (c.in.size() > 2) {
        c.check(c.in[2].dtype == y.dtype && c.in[2].shape == Shape{c.in[1].shape[0]}, "bias must be [",
                c.in[1].shape[0], "] of ", dtype_name(y.dtype), ", got ", dtype_name(c.in[2].dtype), S(c.in[2].shape));
      }
      return std::vector<TensorType>{y};
    };
    d.grad = [](const GradContext& c) {
      const Tensor &x = c.inputs[0], &w = c.inputs[1];
      Tensor dy = c.dout(0);
      // Only outputs the ReLU clamped (<= 0) stop dy; a NaN one lets it through (PyTorch's threshold_backward).
      if (c.attrs.get_or("relu", false)) dy = where(c.outputs[0] <= 0.0, 0.0, dy);
      const Attrs geo = geometry_of(c.attrs);
      std::vector<Tensor> r{x.graph().add1("conv2d_backward_data", {dy, w, x}, geo),
                            x.graph().add1("conv2d_backward_filter", {x, dy, w}, geo)};
      if (c.inputs.size() > 2) r.push_back(sum(dy, {0, 2, 3}));
      return r;
    };
    d.reference = ref_conv;
    d.examples = [](uint64_t seed) {
      std::vector<OpExample> ex;
      for (const ConvCase& e : conv_cases())
        ex.push_back({e.label, {rand_array(e.x, -1, 1, seed++), rand_array(e.w, -1, 1, seed++)}, e.attrs});
      Attrs relu = conv_example_attrs({2, 1}, {1, 1, 1, 1}, {1, 1}, 1);
      relu.set("relu", true);
      ex.push_back({"bias and relu epilogue",
                    {rand_array({2, 3, 5, 4}, -1, 1, seed), rand_array({4, 3, 3, 3}, -1, 1, seed + 1),
                     rand_array({4}, -0.5, 0.5, seed + 2)},
                    relu});
      return ex;
    };
    d.flops = [](std::span<const TensorType> in, std::span<const TensorType> out, const Attrs& a) {
      return detail::conv_flops(in[0].shape, in[1].shape, out[0].shape, a);
    };
    register_op(std::move(d));
  }
  {
    OpDef d;
    d.name = "conv2d_backward_data";
    d.attrs = {attr::required("stride", AttrKind::integers), attr::required("padding", AttrKind::integers),
               attr::required("dilation", AttrKind::integers), attr::required("groups", AttrKind::integer)};
    d.min_inputs = d.max_inputs = 3;  // dy, w, x (x for its shape only)
    d.shape_only_inputs = {2};
    d.doc = "gradient of conv2d with respect to its input: the transposed convolution of dy by w";
    d.infer = [](const InferContext& c) {
      check_dy(c, c.in[2], c.in[1], c.in[0]);
      return std::vector<TensorType>{{c.in[0].dtype, c.in[2].shape}};
    };
    d.grad = [](const GradContext& c) {
      const Tensor &dy = c.inputs[0], &w = c.inputs[1];
      const Tensor g = c.dout(0);
      return std::vector<Tensor>{dy.graph().add1("conv2d", {g, w}, c.attrs),
                                 dy.graph().add1("conv2d_backward_filter", {g, dy, w}, c.attrs), Tensor()};
    };
    d.reference = ref_backward_data;
    d.examples = [](uint64_t seed) {
      std::vector<OpExample> ex;
      for (const ConvCase& e : conv_cases())
        ex.push_back({e.label,
                      {rand_array(conv_out_shape(e), -1, 1, seed++), rand_array(e.w, -1, 1, seed++),
                       rand_array(e.x, -1, 1, seed++)},
                      e.attrs,
                      {0, 1}});
      return ex;
    };
    d.flops = [](std::span<const TensorType> in, std::span<const TensorType>, const Attrs& a) {
      return detail::conv_flops(in[2].shape, in[1].shape, in[0].shape, a);  // x (shape only), w, dy
    };
    register_op(std::move(d));
  }
  {
    OpDef d;
    d.name = "conv2d_backward_filter";
    d.attrs = {attr::required("stride", AttrKind::integers), attr::required("padding", AttrKind::integers),
               attr::required("dilation", AttrKind::integers), attr::required("groups", AttrKind::integer)};
    d.min_inputs = d.max_inputs = 3;  // x, dy, w (w for its shape only)
    d.shape_only_inputs = {2};
    d.doc = "gradient of conv2d with respect to its weight: the correlation of x with dy";
    d.infer = [](const InferContext& c) {
      check_dy(c, c.in[0], c.in[2], c.in[1]);
      return std::vector<TensorType>{{c.in[0].dtype, c.in[2].shape}};
    };
    d.grad = [](const GradContext& c) {
      const Tensor &x = c.inputs[0], &dy = c.inputs[1];
      const Tensor g = c.dout(0);
      return std::vector<Tensor>{x.graph().add1("conv2d_backward_data", {dy, g, x}, c.attrs),
                                 x.graph().add1("conv2d", {x, g}, c.attrs), Tensor()};
    };
    d.reference = ref_backward_filter;
    d.examples = [](uint64_t seed) {
      std::vector<OpExample> ex;
      for (const ConvCase& e : conv_cases())
        ex.push_back({e.label,
                      {rand_array(e.x, -1, 1, seed++), rand_array(conv_out_shape(e), -1, 1, seed++),
                       rand_array(e.w, -1, 1, seed++)},
                      e.attrs,
                      {0, 1}});
      return ex;
    };
    d.flops = [](std::span<const TensorType> in, std::span<const TensorType>, const Attrs& a) {
      return detail::conv_flops(in[0].shape, in[2].shape, in[1].shape, a);  // x, w (shape only), dy
    };
    register_op(std::move(d));
  }
  return true;
}();

}  // namespace

Attrs conv2d_attrs(const Conv2dOptions& o) {
  return {{"stride", detail::pair_attr(o.stride, "conv2d", "stride")},
          {"padding", detail::padding4(o.padding, "conv2d")},
          {"dilation", detail::pair_attr(o.dilation, "conv2d", "dilation")},
          {"groups", o.groups}};
}

Tensor conv2d(const Tensor& x, const Tensor& w, const Conv2dOptions& options) {
  return x.graph().add1("conv2d", {x, w}, conv2d_attrs(options));
}

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dOptions& options, bool relu) {
  Attrs a = conv2d_attrs(options);
  if (relu) a.set("relu", true);
  std::vector<Tensor> in{x, w};
  if (bias.valid()) in.push_back(bias);
  return x.graph().add1("conv2d", in, std::move(a));
}

Tensor conv2d_backward_data(const Tensor& dy, const Tensor& w, const Tensor& x_like, const Conv2dOptions& options) {
  return dy.graph().add1("conv2d_backward_data", {dy, w, x_like}, conv2d_attrs(options));
}

Tensor conv2d_backward_filter(const Tensor& x, const Tensor& dy, const Tensor& w_like, const Conv2dOptions& options) {
  return x.graph().add1("conv2d_backward_filter", {x, dy, w_like}, conv2d_attrs(options));
}

}  // namespace loom
