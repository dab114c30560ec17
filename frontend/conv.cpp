// Convolutional modules and the CNN / ResNet9 models.

#include "frontend/conv.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <optional>
#include <sstream>

#include "frontend/conv3d.hpp"
#include "ops/window.hpp"

namespace loom::nn {

std::string ints_str(const std::vector<int64_t>& v) {
  std::ostringstream os;
  if (v.size() != 1) os << "(";
  for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << v[i];
  if (v.size() != 1) os << ")";
  return os.str();
}

namespace {

loom::Pool2dOptions pool_options(std::vector<int64_t> kernel, const Pool2dOptions& o, const char* what) {
  LOOM_CHECK((kernel.size() == 1 || kernel.size() == 2) &&
                 std::all_of(kernel.begin(), kernel.end(), [](int64_t k) { return k > 0; }),
             what, ": kernel needs 1 or 2 positive values, got ", attr_str(kernel));
  return {std::move(kernel), o.stride, o.padding, o.count_include_pad, o.ceil_mode};
}

/// Max pooling with dilated windows (PyTorch's MaxPool2d dilation), composed: the
/// -inf-padded input's kh * kw taps as strided slices, stacked, and their maximum, or
/// (`indices`) the first maximum's index h * W + w in its plane, PyTorch's return_indices.
/// The max_pool2d op covers dilation 1.
Tensor dilated_max_pool(const std::string& who, const Tensor& x, const loom::Pool2dOptions& o,
                        const std::vector<int64_t>& dilation, bool indices) {
  const Shape& s = x.shape();
  LOOM_CHECK(s.size() == 4 && s[2] >= 0 && s[3] >= 0, who, ": expected [N, C, H, W] with H and W known, got ", S(s));
  const std::vector<int64_t> k = detail::pair_attr(o.kernel, who.c_str(), "kernel"),
                             st = detail::pair_attr(o.stride.empty() ? o.kernel : o.stride, who.c_str(), "stride"),
                             pd = detail::padding4(o.padding, who.c_str());
  std::array<int64_t, 2> out{}, extra{};
  for (size_t a = 0; a < 2; ++a) {
    const int64_t in = s[2 + a], lo = pd[2 * a], hi = pd[2 * a + 1], reach = dilation[a] * (k[a] - 1) + 1;
    LOOM_CHECK(st[a] > 0 && lo >= 0 && hi >= 0 && 2 * lo <= k[a] && 2 * hi <= k[a], who,
               ": stride must be positive and padding at most half the kernel (PyTorch's rule), got stride ",
               attr_str(st), ", padding ", attr_str(pd), ", kernel ", attr_str(k));
    const int64_t span = in + lo + hi - reach;
    LOOM_CHECK(span >= 0, who, ": the dilated kernel ", reach, " is larger than the padded input ", in + lo + hi);
    int64_t n = (o.ceil_mode ? (span + st[a] - 1) / st[a] : span / st[a]) + 1;
    if (o.ceil_mode && (n - 1) * st[a] >= in + lo) --n;  // the last window must start inside
    out[a] = n;
    extra[a] = std::max<int64_t>(0, (n - 1) * st[a] + reach - (in + lo + hi));  // ceil_mode's window past the padding
  }
  const Tensor padded = loom::pad(x, {{0, 0}, {0, 0}, {pd[0], pd[1] + extra[0]}, {pd[2], pd[3] + extra[1]}}, -INFINITY);
  std::vector<Tensor> taps;
  std::vector<int64_t> offsets;  // each tap's place in its plane relative to the window's corner
  for (int64_t i = 0; i < k[0]; ++i)
    for (int64_t j = 0; j < k[1]; ++j) {
      taps.push_back(slice(padded, {Slice::all(), Slice::all(), detail::strided(i * dilation[0], out[0], st[0]),
                                    detail::strided(j * dilation[1], out[1], st[1])}));
      offsets.push_back(i * dilation[0] * s[3] + j * dilation[1]);
    }
  const Tensor stacked = stack(taps, 2);  // [N, C, kh * kw, OH, OW]
  if (!indices) return max(stacked, {2});
  std::vector<int64_t> corner;  // [OH, OW]: the window's top-left position h * W + w
  for (int64_t oh = 0; oh < out[0]; ++oh)
    for (int64_t ow = 0; ow < out[1]; ++ow) corner.push_back((oh * st[0] - pd[0]) * s[3] + ow * st[1] - pd[2]);
  Graph& g = x.graph();
  const Tensor tap = argmax(stacked, 2);  // the first maximum in the window's scan order, PyTorch's
  return gather(g.constant(NDArray::from<int64_t>(offsets, {int64_t(offsets.size())})), tap) +
         g.constant(NDArray::from<int64_t>(corner, {out[0], out[1]}));
}

void check_image(const std::string& where, const Tensor& x, int64_t channels, DType dtype) {
  const Shape& s = x.shape();
  LOOM_CHECK(s.size() == 4 && (s[1] == channels || s[1] < 0), where, ": expected input [N, ", channels, ", H, W], got ",
             S(s), s.size() == 3 ? " (a single image needs a batch dim)" : "");
  LOOM_CHECK(x.dtype() == dtype, where, ": expected ", dtype_name(dtype), " input, got ", dtype_name(x.dtype()));
}

}  // namespace

}  // namespace loom::nn

namespace loom::detail {

void configure_conv(const char* who, int64_t in, int64_t out, const std::vector<int64_t>& kernel, int64_t groups,
                    bool transposed, DType dtype, Initializer& weight_init, Initializer& bias_init) {
  LOOM_CHECK(in > 0 && out > 0, who, ": channels must be positive, got (", in, ", ", out, ")");
  LOOM_CHECK(groups > 0 && in % groups == 0 && out % groups == 0, who, ": groups ", groups,
             " must divide both in_channels ", in, " and out_channels ", out);
  LOOM_CHECK(is_floating(dtype), who, ": dtype must be floating, got ", dtype_name(dtype));
  Shape weight = transposed ? Shape{in, out / groups} : Shape{out, in / groups};
  weight.insert(weight.end(), kernel.begin(), kernel.end());
  std::ostringstream dims;
  for (size_t i = 0; i < weight.size(); ++i) dims << (i ? ", " : "") << weight[i];
  LOOM_CHECK(valid_shape(weight, dtype_size(dtype)), who, ": a weight [", dims.str(), "] is too large");
  double fan_in = double(weight[1]);
  for (int64_t k : kernel) fan_in *= double(k);
  const double bound = 1.0 / std::sqrt(fan_in);
  if (!weight_init) weight_init = init::uniform(-bound, bound);
  if (!bias_init) bias_init = init::uniform(-bound, bound);
}

std::string describe_conv(const ConvSummary& c) {
  std::ostringstream os;
  os << c.type << "(" << c.in << ", " << c.out << ", kernel=" << nn::ints_str(c.kernel)
     << ", stride=" << nn::ints_str(c.stride) << ", padding=" << nn::ints_str(c.padding);
  if (c.output_padding != std::vector<int64_t>{0}) os << ", output_padding=" << nn::ints_str(c.output_padding);
  if (c.dilation != std::vector<int64_t>{1}) os << ", dilation=" << nn::ints_str(c.dilation);
  if (c.groups != 1) os << ", groups=" << c.groups;
  if (c.padding_mode != PadMode::constant) os << ", padding_mode=" << pad_mode_name(c.padding_mode);
  os << (c.bias ? ", bias)" : ", no bias)");
  return os.str();
}

}  // namespace loom::detail

namespace loom::nn {

// ---------------------------------------------------------------- Conv2d

std::vector<int64_t> same_padding(std::vector<int64_t> kernel, std::vector<int64_t> dilation) {
  LOOM_CHECK((kernel.size() == 1 || kernel.size() == 2) && (dilation.size() == 1 || dilation.size() == 2),
             "same_padding: kernel and dilation need 1 or 2 values, got ", attr_str(kernel), " and ",
             attr_str(dilation));
  std::vector<int64_t> pad(4);
  for (size_t i = 0; i < 2; ++i) {
    const int64_t k = kernel[std::min(i, kernel.size() - 1)], d = dilation[std::min(i, dilation.size() - 1)];
    LOOM_CHECK(k > 0 && d > 0 && k <= (int64_t(1) << 31) && d <= (int64_t(1) << 31),
               "same_padding: kernel and dilation must be positive (and below 2^31), got ", k, " and ", d);
    const int64_t total = d * (k - 1);
    pad[2 * i] = total / 2;
    pad[2 * i + 1] = total - total / 2;
  }
  return pad;
}

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, std::vector<int64_t> kernel, Conv2dOptions options)
    : in_(in_channels), out_(out_channels), kernel_(std::move(kernel)), options_(std::move(options)) {
  LOOM_CHECK(kernel_.size() == 1 || kernel_.size() == 2, "Conv2d: kernel needs 1 or 2 values, got ", attr_str(kernel_));
  if (kernel_.size() == 1) kernel_.push_back(kernel_[0]);
  LOOM_CHECK(kernel_[0] > 0 && kernel_[1] > 0, "Conv2d: kernel sizes must be positive, got ", attr_str(kernel_));
  detail::configure_conv("Conv2d", in_, out_, kernel_, options_.groups, false, options_.dtype, options_.weight_init,
                         options_.bias_init);
  conv2d_attrs({options_.stride, options_.padding, options_.dilation, options_.groups});  // validates the counts
}

std::string Conv2d::describe() const {
  return detail::describe_conv({"Conv2d",
                                in_,
                                out_,
                                kernel_,
                                options_.stride,
                                options_.padding,
                                {0},
                                options_.dilation,
                                options_.groups,
                                options_.bias,
                                options_.padding_mode});
}

Tensor Conv2d::forward(const Tensor& x) {
  check_image(where(x), x, in_, options_.dtype);
  weight_ = parameter(x, "weight", {out_, in_ / options_.groups, kernel_[0], kernel_[1]}, options_.weight_init,
                      options_.dtype);
  if (options_.bias) bias_ = parameter(x, "bias", {out_}, options_.bias_init, options_.dtype);
  if (options_.padding_mode == PadMode::constant)
    return loom::conv2d(x, weight_, bias_, {options_.stride, options_.padding, options_.dilation, options_.groups});
  const std::vector<int64_t> p = detail::padding4(options_.padding, "Conv2d");
  const Tensor padded = loom::pad(x, {{0, 0}, {0, 0}, {p[0], p[1]}, {p[2], p[3]}}, options_.padding_mode);
  return loom::conv2d(padded, weight_, bias_, {options_.stride, {0}, options_.dilation, options_.groups});
}

// ---------------------------------------------------------------- Conv1d and 1-D pooling

namespace {

/// [N, C, L] as [N, C, 1, L] (a view), after checking it is one.
Tensor as_image(const std::string& where, const Tensor& x) {
  LOOM_CHECK(x.valid(), where, ": the input is an empty Tensor handle");
  LOOM_CHECK(x.shape().size() == 3, where, ": expected input [N, C, L], got ", S(x.shape()),
             x.shape().size() == 2 ? " (a single sequence needs a batch dim)" : "");
  return expand_dims(x, {2});
}

}  // namespace

Tensor conv1d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv1dOptions& o) {
  LOOM_CHECK(w.valid(), "conv1d: the weight is an empty Tensor handle");
  LOOM_CHECK(w.shape().size() == 3, "conv1d: expected a weight [out, in / groups, k], got ", S(w.shape()));
  const bool copying = o.padding_mode != PadMode::constant;
  LOOM_CHECK(o.padding >= 0, "conv1d: padding must be >= 0, got ", o.padding);
  const Tensor in =
      copying ? loom::pad(as_image("conv1d", x), {{0, 0}, {0, 0}, {0, 0}, {o.padding, o.padding}}, o.padding_mode)
              : as_image("conv1d", x);
  Tensor y =
      conv2d(in, expand_dims(w, {2}), bias, {{1, o.stride}, {0, copying ? 0 : o.padding}, {1, o.dilation}, o.groups});
  return squeeze(y, {2});
}

Conv1d::Conv1d(int64_t in_channels, int64_t out_channels, int64_t kernel, Conv1dOptions options)
    : in_(in_channels), out_(out_channels), kernel_(kernel), options_(std::move(options)) {
  LOOM_CHECK(kernel_ > 0, "Conv1d: kernel must be positive, got ", kernel_);
  detail::configure_conv("Conv1d", in_, out_, {kernel_}, options_.groups, false, options_.dtype, options_.weight_init,
                         options_.bias_init);
}

std::string Conv1d::describe() const {
  const Conv1dOptions& o = options_;
  return detail::describe_conv(
      {"Conv1d", in_, out_, {kernel_}, {o.stride}, {o.padding}, {0}, {o.dilation}, o.groups, o.bias, o.padding_mode});
}

Tensor Conv1d::forward(const Tensor& x) {
  const Shape& s = x.shape();
  LOOM_CHECK(s.size() == 3 && (s[1] == in_ || s[1] < 0), where(x), ": expected input [N, ", in_, ", L], got ", S(s),
             s.size() == 2 ? " (a single sequence needs a batch dim)" : "");
  LOOM_CHECK(x.dtype() == options_.dtype, where(x), ": expected ", dtype_name(options_.dtype), " input, got ",
             dtype_name(x.dtype()));
  weight_ = parameter(x, "weight", {out_, in_ / options_.groups, kernel_}, options_.weight_init, options_.dtype);
  if (options_.bias) bias_ = parameter(x, "bias", {out_}, options_.bias_init, options_.dtype);
  return conv1d(x, weight_, bias_, options_);
}

namespace {

loom::Pool2dOptions pool1d(int64_t kernel, int64_t stride, int64_t padding, bool ceil_mode, const char* who) {
  LOOM_CHECK(kernel > 0 && stride >= 0 && padding >= 0, who, ": kernel must be positive, stride and padding >= 0, got ",
             kernel, ", ", stride, ", ", padding);
  return {
      .kernel = {1, kernel}, .stride = {1, stride ? stride : kernel}, .padding = {0, padding}, .ceil_mode = ceil_mode};
}

std::string pool1d_describe(const char* type, int64_t kernel, int64_t stride, int64_t padding, bool ceil_mode) {
  std::ostringstream os;
  os << type << "(kernel=" << kernel << ", stride=" << (stride ? stride : kernel) << ", padding=" << padding;
  if (ceil_mode) os << ", ceil_mode=true";
  os << ")";
  return os.str();
}

}  // namespace

MaxPool1d::MaxPool1d(int64_t kernel, int64_t stride, int64_t padding, bool ceil_mode, int64_t dilation)
    : kernel_(kernel), stride_(stride), padding_(padding), ceil_mode_(ceil_mode), dilation_(dilation) {
  pool1d(kernel, stride, padding, ceil_mode, "MaxPool1d");
  LOOM_CHECK(dilation > 0, "MaxPool1d: dilation must be positive, got ", dilation);
}
std::string MaxPool1d::describe() const {
  std::string d = pool1d_describe("MaxPool1d", kernel_, stride_, padding_, ceil_mode_);
  return dilation_ == 1 ? d : d.insert(d.size() - 1, ", dilation=" + std::to_string(dilation_));
}
Tensor MaxPool1d::forward(const Tensor& x) {
  const loom::Pool2dOptions o = pool1d(kernel_, stride_, padding_, ceil_mode_, "MaxPool1d");
  const Tensor image = as_image(where(x), x);
  return squeeze(dilation_ == 1 ? max_pool2d(image, o) : dilated_max_pool(where(x), image, o, {1, dilation_}, false),
                 {2});
}

AvgPool1d::AvgPool1d(int64_t kernel, int64_t stride, int64_t padding, bool count_include_pad, bool ceil_mode)
    : kernel_(kernel),
      stride_(stride),
      padding_(padding),
      count_include_pad_(count_include_pad),
      ceil_mode_(ceil_mode) {
  pool1d(kernel, stride, padding, ceil_mode, "AvgPool1d");
}
std::string AvgPool1d::describe() const {
  std::string d = pool1d_describe("AvgPool1d", kernel_, stride_, padding_, ceil_mode_);
  return count_include_pad_ ? d : d.insert(d.size() - 1, ", count_include_pad=false");
}
Tensor AvgPool1d::forward(const Tensor& x) {
  loom::Pool2dOptions o = pool1d(kernel_, stride_, padding_, ceil_mode_, "AvgPool1d");
  o.count_include_pad = count_include_pad_;
  return squeeze(avg_pool2d(as_image(where(x), x), o), {2});
}

AdaptivePool1d::AdaptivePool1d(int64_t output_size, bool max) : output_size_(output_size), max_(max) {
  LOOM_CHECK(output_size > 0, type_name(), ": output_size must be positive, got ", output_size);
}
Tensor AdaptivePool1d::forward(const Tensor& x) {
  const Tensor image = as_image(where(x), x);
  return squeeze(max_ ? adaptive_max_pool2d(image, {1, output_size_}) : adaptive_avg_pool2d(image, {1, output_size_}),
                 {2});
}

// ---------------------------------------------------------------- ConvTranspose2d

namespace {

/// A per-axis option of 1 or 2 values as 2.
std::vector<int64_t> pair_of(const char* who, const char* what, const std::vector<int64_t>& v, int64_t least) {
  LOOM_CHECK(v.size() == 1 || v.size() == 2, who, ": ", what, " needs 1 or 2 values, got ", attr_str(v));
  std::vector<int64_t> p{v[0], v.back()};
  LOOM_CHECK(p[0] >= least && p[1] >= least, who, ": ", what, " must be >= ", least, ", got ", attr_str(v));
  return p;
}

}  // namespace

Tensor conv_transpose2d(const Tensor& x, const Tensor& w, const Tensor& bias, const ConvTranspose2dOptions& o) {
  const char* who = "conv_transpose2d";
  LOOM_CHECK(x.valid() && w.valid(), who, ": x and w must be given");
  const Shape &xs = x.shape(), &ws = w.shape();
  LOOM_CHECK(xs.size() == 4 && ws.size() == 4, who, ": expected x [N, C, H, W] and w [C, out / groups, kh, kw], got ",
             S(xs), " and ", S(ws));
  LOOM_CHECK(o.groups > 0, who, ": groups must be positive, got ", o.groups);
  LOOM_CHECK(xs[1] < 0 || xs[1] == ws[0], who, ": x has ", xs[1], " channels, the weight ", S(ws), " takes ", ws[0]);
  LOOM_CHECK(ws[0] % o.groups == 0, who, ": groups ", o.groups, " must divide the input channels ", ws[0]);
  LOOM_CHECK(xs[2] >= 0 && xs[3] >= 0, who, ": the input's height and width must be known, got ", S(xs));
  const auto stride = pair_of(who, "stride", o.stride, 1), padding = pair_of(who, "padding", o.padding, 0),
             dilation = pair_of(who, "dilation", o.dilation, 1),
             extra = pair_of(who, "output_padding", o.output_padding, 0);
  Shape out{-1, ws[1] * o.groups, 0, 0};
  for (size_t i = 0; i < 2; ++i) {
    LOOM_CHECK(extra[i] < stride[i] || extra[i] < dilation[i], who, ": output_padding ", extra[i],
               " must be smaller than the stride or the dilation (PyTorch's rule)");
    out[2 + i] = (xs[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (ws[2 + i] - 1) + extra[i] + 1;
    LOOM_CHECK(out[2 + i] > 0, who, ": the output of ", S(xs), " would be ", out[2 + i], " wide on axis ", 2 + i);
  }
  // conv2d_backward_data takes the output's shape from a tensor of it: a view of one of x's values, broadcast.
  Tensor like = broadcast_to(slice(x, {Slice::all(), Slice::range(0, 1), Slice::range(0, 1), Slice::range(0, 1)}), out);
  Tensor y = conv2d_backward_data(x, w, like, {o.stride, o.padding, o.dilation, o.groups});
  if (!bias.valid()) return y;
  LOOM_CHECK(bias.shape() == Shape{out[1]}, who, ": bias must be [", out[1], "], got ", S(bias.shape()));
  return y + reshape(bias, {out[1], 1, 1});
}

ConvTranspose2d::ConvTranspose2d(int64_t in_channels, int64_t out_channels, std::vector<int64_t> kernel,
                                 ConvTranspose2dOptions options)
    : in_(in_channels), out_(out_channels), kernel_(std::move(kernel)), options_(std::move(options)) {
  kernel_ = pair_of("ConvTranspose2d", "kernel", kernel_, 1);
  detail::configure_conv("ConvTranspose2d", in_, out_, kernel_, options_.groups, true, options_.dtype,
                         options_.weight_init, options_.bias_init);
}

std::string ConvTranspose2d::describe() const {
  const ConvTranspose2dOptions& o = options_;
  return detail::describe_conv({"ConvTranspose2d", in_, out_, kernel_, o.stride, o.padding, o.output_padding,
                                o.dilation, o.groups, o.bias, PadMode::constant});
}

Tensor ConvTranspose2d::forward(const Tensor& x) {
  check_image(where(x), x, in_, options_.dtype);
  weight_ = parameter(x, "weight", {in_, out_ / options_.groups, kernel_[0], kernel_[1]}, options_.weight_init,
                      options_.dtype);
  if (options_.bias) bias_ = parameter(x, "bias", {out_}, options_.bias_init, options_.dtype);
  return conv_transpose2d(x, weight_, bias_, options_);
}

Tensor conv_transpose1d(const Tensor& x, const Tensor& w, const Tensor& bias, const ConvTranspose1dOptions& o) {
  LOOM_CHECK(w.valid(), "conv_transpose1d: the weight is an empty Tensor handle");
  LOOM_CHECK(w.shape().size() == 3, "conv_transpose1d: expected a weight [in, out / groups, k], got ", S(w.shape()));
  const Tensor y = conv_transpose2d(as_image("conv_transpose1d", x), expand_dims(w, {2}), bias,
                                    {.stride = {1, o.stride},
                                     .padding = {0, o.padding},
                                     .output_padding = {0, o.output_padding},
                                     .groups = o.groups,
                                     .dilation = {1, o.dilation}});
  return squeeze(y, {2});
}

ConvTranspose1d::ConvTranspose1d(int64_t in, int64_t out, int64_t kernel, ConvTranspose1dOptions options)
    : in_(in), out_(out), kernel_(kernel), options_(std::move(options)) {
  LOOM_CHECK(kernel_ > 0, "ConvTranspose1d: kernel must be positive, got ", kernel_);
  detail::configure_conv("ConvTranspose1d", in_, out_, {kernel_}, options_.groups, true, options_.dtype,
                         options_.weight_init, options_.bias_init);
}

std::string ConvTranspose1d::describe() const {
  const ConvTranspose1dOptions& o = options_;
  return detail::describe_conv({"ConvTranspose1d",
                                in_,
                                out_,
                                {kernel_},
                                {o.stride},
                                {o.padding},
                                {o.output_padding},
                                {o.dilation},
                                o.groups,
                                o.bias,
                                PadMode::constant});
}

Tensor ConvTranspose1d::forward(const Tensor& x) {
  const Shape& s = x.shape();
  LOOM_CHECK(s.size() == 3 && (s[1] == in_ || s[1] < 0), where(x), ": expected input [N, ", in_, ", L], got ", S(s));
  LOOM_CHECK(x.dtype() == options_.dtype, where(x), ": expected ", dtype_name(options_.dtype), " input, got ",
             dtype_name(x.dtype()));
  weight_ = parameter(x, "weight", {in_, out_ / options_.groups, kernel_}, options_.weight_init, options_.dtype);
  if (options_.bias) bias_ = parameter(x, "bias", {out_}, options_.bias_init, options_.dtype);
  return conv_transpose1d(x, weight_, bias_, options_);
}

// ---------------------------------------------------------------- GroupNorm, Upsample

GroupNorm::GroupNorm(int64_t groups, int64_t channels, double eps, bool affine)
    : groups_(groups), channels_(channels), eps_(eps), affine_(affine) {
  LOOM_CHECK(groups > 0 && channels > 0 && channels % groups == 0, "GroupNorm: groups ", groups,
             " must be positive and divide channels ", channels);
  LOOM_CHECK(std::isfinite(eps) && eps > 0, "GroupNorm: eps must be positive, got ", eps);
}

std::string GroupNorm::describe() const {
  std::ostringstream os;
  os << "GroupNorm(" << groups_ << ", " << channels_ << ", eps=" << eps_ << (affine_ ? ", affine)" : ")");
  return os.str();
}

Tensor GroupNorm::forward(const Tensor& x) {
  const Shape& s = x.shape();
  LOOM_CHECK(s.size() >= 2 && (s[1] == channels_ || s[1] < 0), where(x), ": expected input [N, ", channels_,
             ", ...], got ", S(s));
  LOOM_CHECK(is_floating(x.dtype()), where(x), ": expected a floating input, got ", dtype_name(x.dtype()));
  int64_t per_group = channels_ / groups_;
  for (size_t i = 2; i < s.size(); ++i) {
    LOOM_CHECK(s[i] >= 0, where(x), ": the dims after the channels must be known, got ", S(s));
    per_group *= s[i];
  }
  // [N, G, C/G * spatial]: statistics per (sample, group).
  const Tensor grouped = reshape(x, {-1, groups_, per_group});
  const Tensor mu = mean(grouped, {2}, true);
  const Tensor centered = grouped - mu;
  const Tensor var = mean(centered * centered, {2}, true);
  Tensor y = reshape_like(centered / sqrt(var + eps_), x);
  if (!affine_) return y;
  Shape per_channel(s.size() - 1, 1);  // [C, 1, ...] against [N, C, ...]
  per_channel[0] = channels_;
  const Tensor w = parameter(x, "weight", {channels_}, init::ones(), x.dtype());
  const Tensor b = parameter(x, "bias", {channels_}, init::zeros(), x.dtype());
  return y * reshape(w, per_channel) + reshape(b, per_channel);
}

InstanceNorm2d::InstanceNorm2d(int64_t channels, double eps, bool affine)
    : GroupNorm(channels, channels, eps, affine) {}

InstanceNorm2d::InstanceNorm2d(int64_t channels, double eps, bool affine, int64_t rank)
    : GroupNorm(channels, channels, eps, affine), rank_(rank) {}

std::string InstanceNorm2d::describe() const {
  std::ostringstream os;
  os << type_name() << "(" << channels_ << ", eps=" << eps_ << (affine_ ? ", affine)" : ")");
  return os.str();
}

Tensor InstanceNorm2d::forward(const Tensor& x) {
  LOOM_CHECK(int64_t(x.shape().size()) == rank_, where(x), ": expected input [N, ", channels_,
             rank_ == 3   ? ", L], got "
             : rank_ == 5 ? ", D, H, W], got "
                          : ", H, W], got ",
             S(x.shape()));
  return GroupNorm::forward(x);
}

namespace {

/// Checks x is [N, C, H, W] with C, H, W known and r positive; returns {C, H, W}.
std::array<int64_t, 3> shuffle_dims(const char* who, const Tensor& x, int64_t r) {
  LOOM_CHECK(r > 0 && r <= (int64_t(1) << 20), who, ": the factor must be in [1, 2^20], got ", r);
  const Shape& s = x.shape();
  LOOM_CHECK(s.size() == 4 && s[1] >= 0 && s[2] >= 0 && s[3] >= 0, who,
             ": expected [N, C, H, W] with C, H, W known, got ", S(s));
  return {s[1], s[2], s[3]};
}

}  // namespace

Tensor pixel_shuffle(const Tensor& x, int64_t r) {
  const auto [c, h, w] = shuffle_dims("pixel_shuffle", x, r);
  LOOM_CHECK(c % (r * r) == 0, "pixel_shuffle: the channels ", c, " must be divisible by the factor squared ", r * r);
  const int64_t oc = c / (r * r);
  // [N, C, r, r, H, W] -> [N, C, H, r, W, r]: output (y r + i, x r + j) is input channel c r^2 + i r + j at (y, x).
  const Tensor t = permute(reshape(x, {-1, oc, r, r, h, w}), {0, 1, 4, 2, 5, 3});
  return reshape(t, {-1, oc, h * r, w * r});
}

PixelShuffle::PixelShuffle(int64_t r)
    : Lambda([r](const Tensor& x) { return pixel_shuffle(x, r); }, "PixelShuffle"), r_(r) {
  LOOM_CHECK(r > 0 && r <= (int64_t(1) << 20), "PixelShuffle: the factor must be in [1, 2^20], got ", r);
}

// ---------------------------------------------------------------- padding

Tensor pad(const Tensor& x, const std::vector<int64_t>& padding, PadMode mode, double value) {
  LOOM_CHECK(x.valid(), "pad: the input is an empty Tensor handle");
  const int64_t axes = int64_t(padding.size() / 2);
  LOOM_CHECK(padding.size() % 2 == 0 && axes <= x.ndim(), "pad: padding needs (before, after) pairs for at most ",
             x.ndim(), " axes of input ", S(x.shape()), ", got ", attr_str(padding));
  // A negative pad crops that side first (PyTorch's rule, in every mode); the rest pads the cropped input.
  std::vector<std::pair<int64_t, int64_t>> pairs(size_t(x.ndim()), {0, 0});
  std::vector<Slice> crop(size_t(x.ndim()), Slice::all());
  bool cropping = false;
  for (int64_t i = 0; i < axes; ++i) {
    const size_t a = size_t(x.ndim() - 1 - i);
    const int64_t lo = padding[size_t(2 * i)], hi = padding[size_t(2 * i + 1)], n = x.shape()[a];
    LOOM_CHECK(lo > -(int64_t(1) << 62) && hi > -(int64_t(1) << 62), "pad: padding ", attr_str(padding),
               " out of range");
    if (lo >= 0 && hi >= 0) {
      pairs[a] = {lo, hi};
      continue;
    }
    const int64_t cut_lo = std::max<int64_t>(0, -lo), cut_hi = std::max<int64_t>(0, -hi);
    LOOM_CHECK(n < 0 || cut_lo + cut_hi <= n, "pad: cropping ", cut_lo, " + ", cut_hi, " from axis ", a, " of ",
               S(x.shape()), " leaves less than nothing");
    crop[a] = Slice::range(cut_lo, cut_hi > 0 ? -cut_hi : Slice::kNone);
    pairs[a] = {std::max<int64_t>(0, lo), std::max<int64_t>(0, hi)};
    cropping = true;
  }
  return loom::pad(cropping ? slice(x, crop) : x, pairs, mode, value);
}

namespace {

std::string padding_layer_name(int64_t dims, PadMode mode) {
  const char* kind = mode == PadMode::reflect     ? "Reflection"
                     : mode == PadMode::replicate ? "Replication"
                     : mode == PadMode::circular  ? "Circular"
                                                  : "Constant";
  return std::string(kind) + "Pad" + std::to_string(dims) + "d";
}

}  // namespace

Pad::Pad(int64_t dims, std::vector<int64_t> padding, PadMode mode, double value, std::string type)
    : padding_(std::move(padding)),
      mode_(mode),
      value_(value),
      type_(type.empty() ? padding_layer_name(dims, mode) : std::move(type)) {
  LOOM_CHECK(padding_.size() == 1 || padding_.size() == size_t(2 * dims), type_, ": padding needs 1 or ", 2 * dims,
             " values, got ", attr_str(padding_));
  if (padding_.size() == 1) padding_.assign(size_t(2 * dims), padding_[0]);
}

std::string Pad::describe() const {
  std::ostringstream os;
  os << type_ << "(" << ints_str(padding_);
  if (mode_ == PadMode::constant && type_.rfind("Zero", 0) != 0) os << ", value=" << value_;
  os << ")";
  return os.str();
}

Tensor pixel_unshuffle(const Tensor& x, int64_t r) {
  const auto [c, h, w] = shuffle_dims("pixel_unshuffle", x, r);
  LOOM_CHECK(h % r == 0 && w % r == 0, "pixel_unshuffle: height ", h, " and width ", w, " must be divisible by ", r);
  const Tensor t = permute(reshape(x, {-1, c, h / r, r, w / r, r}), {0, 1, 3, 5, 2, 4});
  return reshape(t, {-1, c * r * r, h / r, w / r});
}

Tensor upsample_nearest2d(const Tensor& x, std::vector<int64_t> scale) {
  LOOM_CHECK(scale.size() == 1 || scale.size() == 2, "upsample_nearest2d: scale needs 1 or 2 values, got ",
             attr_str(scale));
  if (scale.size() == 1) scale.push_back(scale[0]);
  LOOM_CHECK(scale[0] > 0 && scale[1] > 0, "upsample_nearest2d: scale factors must be positive, got ", attr_str(scale));
  const Shape& s = x.shape();
  LOOM_CHECK(s.size() == 4, "upsample_nearest2d: expected [N, C, H, W], got ", S(s));
  LOOM_CHECK(s[1] >= 0 && s[2] >= 0 && s[3] >= 0, "upsample_nearest2d: C, H and W must be known, got ", S(s));
  LOOM_CHECK(valid_shape({s[1], s[2] * scale[0], s[3] * scale[1]}, dtype_size(x.dtype())),
             "upsample_nearest2d: the output of ", S(s), " scaled by ", attr_str(scale), " is too large");
  // [N, C, H, 1, W, 1] broadcast to [N, C, H, sh, W, sw]: row-major, that is each pixel repeated.
  const Tensor spread =
      broadcast_to(reshape(x, {-1, s[1], s[2], 1, s[3], 1}), {-1, s[1], s[2], scale[0], s[3], scale[1]});
  return reshape(spread, {-1, s[1], s[2] * scale[0], s[3] * scale[1]});
}

const char* interpolation_mode_name(InterpolationMode mode) {
  switch (mode) {
    case InterpolationMode::nearest:
      return "nearest";
    case InterpolationMode::nearest_exact:
      return "nearest-exact";
    case InterpolationMode::linear:
      return "linear";
    case InterpolationMode::bilinear:
      return "bilinear";
    case InterpolationMode::bicubic:
      return "bicubic";
    case InterpolationMode::trilinear:
      return "trilinear";
    case InterpolationMode::area:
      return "area";
  }
  return "?";
}

namespace {

/// The sources of each output position along one axis: taps[k][o] is the
/// input index and weights[k][o] its weight (none for the nearest modes).
struct Resampling {
  std::vector<std::vector<int64_t>> taps;
  std::vector<std::vector<double>> weights;
};

/// PyTorch's nearest_idx / nearest-exact index (in float, as its kernels).
int64_t nearest_source(int64_t o, int64_t in, int64_t out, std::optional<double> scale, bool exact) {
  if (!exact && out == in) return o;
  if (!exact && out == 2 * in) return o >> 1;
  const float s = scale ? float(1.0 / *scale) : float(in) / float(out);
  const float at = exact ? float((double(o) + 0.5) * double(s)) : float(o) * s;
  return std::min<int64_t>(int64_t(std::floor(at)), in - 1);
}

/// The cubic convolution kernel at |x| < 2 (Keys; PyTorch's cubic_convolution1/2).
double cubic_kernel(double x, double A) {
  x = std::fabs(x);
  if (x <= 1) return ((A + 2) * x - (A + 3)) * x * x + 1;
  return x < 2 ? ((A * x - 5 * A) * x + 8 * A) * x - 4 * A : 0.0;
}

/// PyTorch's cubic convolution weights of the 4 taps around t in [0, 1] (A = -0.75).
std::array<double, 4> cubic_weights(double t) {
  constexpr double A = -0.75;
  return {cubic_kernel(t + 1, A), cubic_kernel(t, A), cubic_kernel(1 - t, A), cubic_kernel(2 - t, A)};
}

/// The source scale of one axis (PyTorch's area_pixel_compute_scale).
double source_scale(int64_t in, int64_t out, std::optional<double> scale, bool align) {
  if (align) return out > 1 ? double(in - 1) / double(out - 1) : 0.0;
  return scale ? 1.0 / *scale : double(in) / double(out);
}

/// PyTorch's antialiased tables (_compute_indices_min_size_weights_aa, PIL's
/// resampling): output o's window is centred on scale * (o + 0.5); when
/// downsampling the filter (triangle, or cubic with A = -0.5) widens by the
/// scale; the weights are normalized over the taps inside the input, and the
/// rows' unused taps weigh 0.
Resampling antialiased(int64_t in, int64_t out, std::optional<double> scale_factor, InterpolationMode mode,
                       bool align) {
  const bool cubic = mode == InterpolationMode::bicubic;
  const double scale = source_scale(in, out, scale_factor, align), half = cubic ? 2.0 : 1.0;
  const double support = scale >= 1 ? half * scale : half, stretch = scale >= 1 ? 1 / scale : 1.0;
  const int64_t K = int64_t(std::ceil(support)) * 2 + 1;
  auto filter = [&](double x) { return cubic ? cubic_kernel(x, -0.5) : std::max(0.0, 1 - std::fabs(x)); };
  Resampling r{std::vector<std::vector<int64_t>>(size_t(K), std::vector<int64_t>(size_t(out))),
               std::vector<std::vector<double>>(size_t(K), std::vector<double>(size_t(out), 0.0))};
  for (int64_t o = 0; o < out; ++o) {
    const size_t i = size_t(o);
    const double center = scale * (double(o) + 0.5);
    const int64_t lo = std::max<int64_t>(int64_t(center - support + 0.5), 0);  // truncation, as PyTorch's cast
    const int64_t taps = std::clamp<int64_t>(std::min<int64_t>(int64_t(center + support + 0.5), in) - lo, 0, K);
    double total = 0;
    for (int64_t k = 0; k < K; ++k) {
      r.taps[size_t(k)][i] = std::min(lo + k, in - 1);
      if (k < taps) total += r.weights[size_t(k)][i] = filter((double(k + lo) - center + 0.5) * stretch);
    }
    if (total != 0)
      for (int64_t k = 0; k < taps; ++k) r.weights[size_t(k)][i] /= total;
  }
  return r;
}

Resampling resampling(int64_t in, int64_t out, std::optional<double> scale, InterpolationMode mode, bool align) {
  Resampling r;
  const bool nearest = mode == InterpolationMode::nearest || mode == InterpolationMode::nearest_exact;
  const size_t count = nearest ? 1 : mode == InterpolationMode::bicubic ? 4 : 2;
  r.taps.assign(count, std::vector<int64_t>(size_t(out)));
  if (!nearest) r.weights.assign(count, std::vector<double>(size_t(out)));
  // area_pixel_compute_scale and _source_index: the half-pixel rule, or corners aligned.
  const double ratio = source_scale(in, out, scale, align);
  for (int64_t o = 0; o < out; ++o) {
    const size_t i = size_t(o);
    if (nearest) {
      r.taps[0][i] = nearest_source(o, in, out, scale, mode == InterpolationMode::nearest_exact);
      continue;
    }
    const bool cubic = mode == InterpolationMode::bicubic;
    double real = align ? ratio * double(o) : ratio * (double(o) + 0.5) - 0.5;
    if (!cubic && real < 0) real = 0;
    // guard_index_and_lambda
    const int64_t base = std::min<int64_t>(int64_t(std::floor(float(real))), in - 1);
    const double t = std::clamp(real - double(base), 0.0, 1.0);
    if (cubic) {
      const std::array<double, 4> w = cubic_weights(t);
      for (size_t k = 0; k < 4; ++k) {
        r.taps[k][i] = std::clamp<int64_t>(base - 1 + int64_t(k), 0, in - 1);
        r.weights[k][i] = w[k];
      }
    } else {
      r.taps[0][i] = base;
      r.taps[1][i] = base + (base < in - 1 ? 1 : 0);
      r.weights[0][i] = 1 - t;
      r.weights[1][i] = t;
    }
  }
  return r;
}

/// x resampled along `axis`: each output the weighted sum of its taps (one op, tables [out, K]).
Tensor resample_axis(const Tensor& x, int64_t axis, const Resampling& r) {
  const size_t K = r.taps.size(), out = r.taps[0].size();
  std::vector<int64_t> sources(out * K);
  std::vector<double> weights(out * K, 1.0);
  for (size_t o = 0; o < out; ++o)
    for (size_t k = 0; k < K; ++k) {
      sources[o * K + k] = r.taps[k][o];
      if (!r.weights.empty()) weights[o * K + k] = r.weights[k][o];
    }
  const Shape table{int64_t(out), int64_t(K)};
  Graph& g = x.graph();
  return resample(x, axis, g.constant(NDArray::from<int64_t>(sources, table)),
                  g.constant(NDArray::from<double>(weights, table).astype(x.dtype())));
}

/// Integer factors when nearest's sources are each input repeated (upsample_nearest2d's case).
std::optional<std::vector<int64_t>> repeat_factors(const std::vector<Resampling>& axes, const Shape& s) {
  std::vector<int64_t> factors;
  for (size_t a = 0; a < axes.size(); ++a) {
    const int64_t in = s[a + 2], out = int64_t(axes[a].taps[0].size());
    if (out % in != 0) return std::nullopt;
    for (int64_t o = 0; o < out; ++o)
      if (axes[a].taps[0][size_t(o)] != o / (out / in)) return std::nullopt;
    factors.push_back(out / in);
  }
  return factors;
}

/// The output sizes of interpolate, and each axis's scale factor when one was given.
std::vector<int64_t> output_size(const Shape& s, const InterpolateOptions& o,
                                 std::vector<std::optional<double>>& scales) {
  const size_t axes = s.size() - 2;
  const bool by_size = !o.size.empty();
  LOOM_CHECK(by_size != !o.scale_factor.empty(), "interpolate: give either size or scale_factor (PyTorch's rule)");
  const size_t given = by_size ? o.size.size() : o.scale_factor.size();
  LOOM_CHECK(given == 1 || given == axes, "interpolate: ", by_size ? "size" : "scale_factor", " needs 1 or ", axes,
             " values for input ", S(s), ", got ", given);
  std::vector<int64_t> out;
  for (size_t a = 0; a < axes; ++a) {
    const int64_t in = s[a + 2];
    LOOM_CHECK(in > 0, "interpolate: spatial sizes must be known and positive, got input ", S(s));
    if (by_size) {
      out.push_back(o.size[std::min(a, given - 1)]);
      scales.push_back(std::nullopt);
    } else {
      const double f = o.scale_factor[std::min(a, given - 1)];
      LOOM_CHECK(std::isfinite(f) && f > 0, "interpolate: scale_factor must be positive and finite, got ", f);
      const double size = std::floor(double(in) * f);
      LOOM_CHECK(size < double(int64_t(1) << 40), "interpolate: ", in, " scaled by ", f, " is too large");
      out.push_back(int64_t(size));
      scales.push_back(f);
    }
    LOOM_CHECK(out.back() > 0 && out.back() <= (int64_t(1) << 40), "interpolate: output sizes must be positive, got ",
               out.back(), " for axis ", a + 2, " of input ", S(s));
  }
  return out;
}

}  // namespace

namespace {

/// The input layouts a mode takes (PyTorch's): linear [N, C, L], bilinear and
/// bicubic [N, C, H, W], trilinear [N, C, D, H, W], the others any of them.
const char* layouts_of(InterpolationMode m) {
  switch (m) {
    case InterpolationMode::linear:
      return "[N, C, L] (bilinear is the 2-D mode, trilinear the 3-D one)";
    case InterpolationMode::bilinear:
    case InterpolationMode::bicubic:
      return "[N, C, H, W]";
    case InterpolationMode::trilinear:
      return "[N, C, D, H, W]";
    default:
      return "[N, C, L], [N, C, H, W] or [N, C, D, H, W]";
  }
}

bool fits_mode(InterpolationMode m, size_t rank) {
  switch (m) {
    case InterpolationMode::linear:
      return rank == 3;
    case InterpolationMode::bilinear:
    case InterpolationMode::bicubic:
      return rank == 4;
    case InterpolationMode::trilinear:
      return rank == 5;
    default:
      return rank >= 3 && rank <= 5;
  }
}

/// Resamples x along each image axis in turn: two axes in the cheaper order
/// (the last axis's pass, strided taps, slower per element, where it writes
/// fewer elements); three with the shrinking axes first.
Tensor resample_axes(const Tensor& x, const std::vector<Resampling>& axes, const std::vector<int64_t>& out) {
  const Shape& s = x.shape();
  if (axes.size() == 1) return resample_axis(x, 2, axes[0]);
  if (axes.size() == 2) {
    const int64_t H = s[2], W = s[3], OH = out[0], OW = out[1];
    const int64_t kh = int64_t(axes[0].taps.size()), kw = int64_t(axes[1].taps.size());
    const bool last_first = kw * 3 * H * OW + kh * OH * OW < kh * OH * W + kw * 3 * OH * OW;
    if (last_first) return resample_axis(resample_axis(x, 3, axes[1]), 2, axes[0]);
    return resample_axis(resample_axis(x, 2, axes[0]), 3, axes[1]);
  }
  std::vector<size_t> order(axes.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return double(out[a]) / double(s[a + 2]) < double(out[b]) / double(s[b + 2]);
  });
  Tensor y = x;
  for (size_t a : order) y = resample_axis(y, int64_t(a) + 2, axes[a]);
  return y;
}

}  // namespace

Tensor interpolate(const Tensor& x, const InterpolateOptions& o) {
  LOOM_CHECK(x.valid(), "interpolate: the input is an empty Tensor handle");
  const Shape& s = x.shape();
  const char* mode = interpolation_mode_name(o.mode);
  LOOM_CHECK(fits_mode(o.mode, s.size()), "interpolate: mode ", mode, " expects ", layouts_of(o.mode), ", got ", S(s));
  const bool smooth = o.mode == InterpolationMode::bilinear || o.mode == InterpolationMode::bicubic;
  const bool interpolating = smooth || o.mode == InterpolationMode::linear || o.mode == InterpolationMode::trilinear;
  LOOM_CHECK(interpolating || !o.align_corners,
             "interpolate: align_corners applies to linear, bilinear, bicubic and trilinear, not ", mode);
  LOOM_CHECK(smooth || !o.antialias, "interpolate: antialias applies to bilinear and bicubic, not ", mode);
  LOOM_CHECK(is_floating(x.dtype()), "interpolate: expected a floating input, got ", dtype_name(x.dtype()));
  std::vector<std::optional<double>> scales;
  const std::vector<int64_t> out = output_size(s, o, scales);
  Shape out_shape{s[1]};
  out_shape.insert(out_shape.end(), out.begin(), out.end());
  LOOM_CHECK(valid_shape(out_shape, dtype_size(x.dtype())), "interpolate: the output of ", S(s), " is too large");
  const size_t image_axes = s.size() - 2;
  if (o.mode == InterpolationMode::area) {
    if (image_axes == 3) return adaptive_avg_pool3d(x, out);
    if (image_axes == 2) return adaptive_avg_pool2d(x, out);
    return squeeze(adaptive_avg_pool2d(expand_dims(x, {2}), {1, out[0]}), {2});
  }
  std::vector<Resampling> axes;
  for (size_t a = 0; a < image_axes; ++a)
    axes.push_back((o.antialias ? antialiased : resampling)(s[a + 2], out[a], scales[a], o.mode, o.align_corners));
  if (o.mode == InterpolationMode::nearest && image_axes == 2)
    if (std::optional<std::vector<int64_t>> f = repeat_factors(axes, s)) return upsample_nearest2d(x, *f);
  return resample_axes(x, axes, out);
}

Upsample::Upsample(InterpolateOptions options) : options_(std::move(options)) {
  LOOM_CHECK(options_.size.empty() != options_.scale_factor.empty(), "Upsample: give either size or scale_factor");
  LOOM_CHECK(options_.size.size() <= 3 && options_.scale_factor.size() <= 3,
             "Upsample: size and scale_factor take 1, 2 or 3 values");
}

std::string Upsample::describe() const {
  std::ostringstream os;
  os << "Upsample(";
  if (!options_.size.empty()) os << "size=" << ints_str(options_.size);
  for (size_t i = 0; i < options_.scale_factor.size(); ++i)
    os << (i                                  ? ", "
           : options_.scale_factor.size() > 1 ? "scale_factor=("
                                              : "scale_factor=")
       << options_.scale_factor[i];
  if (options_.scale_factor.size() > 1) os << ")";
  os << ", mode=" << interpolation_mode_name(options_.mode);
  if (options_.align_corners) os << ", align_corners=true";
  if (options_.antialias) os << ", antialias=true";
  os << ")";
  return os.str();
}

// ---------------------------------------------------------------- BatchNorm2d

BatchNorm2d::BatchNorm2d(int64_t features, NormOptions options) : BatchNorm("BatchNorm2d", features, options) {}

std::string BatchNorm2d::describe() const { return describe_as("BatchNorm2d", relu_ ? ", fused relu" : ""); }

Tensor BatchNorm2d::forward(const Tensor& x) {
  check_image(where(x), x, features_, x.dtype());
  check_input(x);
  if (batch_statistics()) return batch_normalize(x, relu_);
  auto [w, b] = scale_and_shift(x);
  const Tensor scale = w * pow(running_var_ + options_.eps, -0.5);
  const Tensor shift = b - running_mean_ * scale;
  const Node& n = x.node();
  if (n.op->name == "conv2d" && x.index() == 0 && !n.attrs.get_or("relu", false)) return folded(x, scale, shift);
  Tensor y = x * reshape(scale, {features_, 1, 1}) + reshape(shift, {features_, 1, 1});
  return relu_ ? relu(y) : y;
}

Tensor BatchNorm2d::folded(const Tensor& x, const Tensor& scale, const Tensor& shift) const {
  // bn(conv(x, w) + b) = conv(x, w * scale) + (b * scale + shift): one conv with a fused bias (and ReLU).
  const Node& n = x.node();
  Graph& g = x.graph();
  auto input = [&](size_t i) { return Tensor(&g, n.inputs[i].node, n.inputs[i].index); };
  Tensor w = input(1) * reshape(scale, {features_, 1, 1, 1});
  Tensor b = n.inputs.size() > 2 ? input(2) * scale + shift : shift;
  Attrs a = n.attrs;
  a.set("relu", relu_);
  return g.add1("conv2d", {input(0), w, b}, std::move(a), "folded_conv2d");
}

// ---------------------------------------------------------------- pooling

MaxPool2d::MaxPool2d(std::vector<int64_t> kernel, Pool2dOptions options)
    : options_(pool_options(std::move(kernel), options, "MaxPool2d")),
      dilation_(detail::pair_attr(options.dilation, "MaxPool2d", "dilation")) {
  for (int64_t d : dilation_) LOOM_CHECK(d > 0, "MaxPool2d: dilation must be positive, got ", attr_str(dilation_));
}

std::string MaxPool2d::describe() const {
  return "MaxPool2d(kernel=" + ints_str(options_.kernel) +
         (options_.stride.empty() ? "" : ", stride=" + ints_str(options_.stride)) +
         ", padding=" + ints_str(options_.padding) +
         (dilation_ != std::vector<int64_t>{1, 1} ? ", dilation=" + ints_str(dilation_) : "") +
         (options_.ceil_mode ? ", ceil_mode=true)" : ")");
}

Tensor MaxPool2d::forward(const Tensor& x) {
  if (dilation_ != std::vector<int64_t>{1, 1}) return dilated_max_pool(where(x), x, options_, dilation_, false);
  return max_pool2d(x, options_);
}

Tensor MaxPool2d::indices(const Tensor& x) const {
  if (dilation_ != std::vector<int64_t>{1, 1}) return dilated_max_pool("MaxPool2d", x, options_, dilation_, true);
  return max_pool2d_indices(x, options_);
}

MaxUnpool2d::MaxUnpool2d(std::vector<int64_t> kernel, Pool2dOptions options)
    : options_(pool_options(std::move(kernel), options, "MaxUnpool2d")) {
  const std::vector<int64_t> stride = options_.stride.empty() ? options_.kernel : options_.stride;
  kernel_ = detail::pair_attr(options_.kernel, "MaxUnpool2d", "kernel");
  stride_ = detail::pair_attr(stride, "MaxUnpool2d", "stride");
  padding_ = detail::padding4(options_.padding, "MaxUnpool2d");
  for (int64_t v : stride_) LOOM_CHECK(v > 0, "MaxUnpool2d: stride must be positive, got ", attr_str(stride_));
  for (int64_t v : padding_) LOOM_CHECK(v >= 0, "MaxUnpool2d: padding must be >= 0, got ", attr_str(padding_));
}

std::string MaxUnpool2d::describe() const {
  return "MaxUnpool2d(kernel=" + ints_str(options_.kernel) + ", stride=" + ints_str(stride_) +
         ", padding=" + ints_str(options_.padding) + ")";
}

Tensor MaxUnpool2d::operator()(const Tensor& y, const Tensor& indices, std::vector<int64_t> output_size) const {
  LOOM_CHECK(y.valid() && indices.valid(), "MaxUnpool2d: empty Tensor handle");
  const Shape& s = y.shape();
  LOOM_CHECK(s.size() == 4 && s[2] >= 0 && s[3] >= 0, "MaxUnpool2d: expected [N, C, h, w] with known h and w, got ",
             S(s));
  if (output_size.size() == 4) output_size.erase(output_size.begin(), output_size.begin() + 2);  // [N, C, H, W]
  std::vector<int64_t> size(2);
  for (size_t a = 0; a < 2; ++a) {
    // PyTorch's default, and the range it allows a given size in (the sizes pooling could have come from).
    size[a] = (s[a + 2] - 1) * stride_[a] - padding_[2 * a] - padding_[2 * a + 1] + kernel_[a];
    if (output_size.empty()) continue;
    LOOM_CHECK(output_size.size() == 2, "MaxUnpool2d: output_size needs 2 values (H, W) or 4, got ",
               attr_str(output_size));
    LOOM_CHECK(output_size[a] > size[a] - stride_[a] && output_size[a] < size[a] + stride_[a],
               "MaxUnpool2d: output_size ", attr_str(output_size), " must be within (", size[a] - stride_[a], ", ",
               size[a] + stride_[a], ") along axis ", a + 2, " for input ", S(s));
    size[a] = output_size[a];
  }
  return max_unpool2d(y, indices, size);
}

AvgPool2d::AvgPool2d(std::vector<int64_t> kernel, Pool2dOptions options)
    : options_(pool_options(std::move(kernel), options, "AvgPool2d")) {
  LOOM_CHECK(options.dilation == std::vector<int64_t>{1}, "AvgPool2d: no dilation (PyTorch's has none either)");
}

std::string AvgPool2d::describe() const {
  return "AvgPool2d(kernel=" + ints_str(options_.kernel) +
         (options_.stride.empty() ? "" : ", stride=" + ints_str(options_.stride)) +
         ", padding=" + ints_str(options_.padding) + (options_.ceil_mode ? ", ceil_mode=true" : "") +
         (options_.count_include_pad ? ")" : ", count_include_pad=false)");
}

Tensor AvgPool2d::forward(const Tensor& x) { return avg_pool2d(x, options_); }

AdaptivePool2d::AdaptivePool2d(std::vector<int64_t> output_size, bool max)
    : output_size_(std::move(output_size)), max_(max) {
  LOOM_CHECK((output_size_.size() == 1 || output_size_.size() == 2) &&
                 std::all_of(output_size_.begin(), output_size_.end(), [](int64_t v) { return v > 0; }),
             type_name(), ": output_size needs 1 or 2 positive values, got ", attr_str(output_size_));
}

std::string AdaptivePool2d::describe() const { return type_name() + "(" + ints_str(output_size_) + ")"; }

Tensor AdaptivePool2d::forward(const Tensor& x) {
  return max_ ? adaptive_max_pool2d(x, output_size_) : adaptive_avg_pool2d(x, output_size_);
}

// ---------------------------------------------------------------- blocks and models

ConvBN::ConvBN(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride) {
  push_back(Conv2d(in_channels, out_channels, kernel, {.stride = {stride}, .padding = {kernel / 2}, .bias = false}));
  push_back(std::move(BatchNorm2d(out_channels).fuse_relu()));
  push_back(ReLU());
}

Tensor ConvBN::forward(const Tensor& x) {
  // The ReLU ("2") runs inside the batch norm (training) or the folded conv (eval).
  return (*this)[1]((*this)[0](x));
}

CNN::CNN(CNNOptions o) {
  LOOM_CHECK(o.channels > 0 && o.classes > 0 && o.image_size >= 4 && o.image_size % 4 == 0,
             "CNN: need channels > 0, classes > 0 and an image size that is a multiple of 4, got ", o.channels, ", ",
             o.classes, ", ", o.image_size);
  const int64_t side = o.image_size / 4;
  push_back(ConvBN(o.channels, 32, 3));
  push_back(MaxPool2d(2));
  push_back(ConvBN(32, 64, 3));
  push_back(MaxPool2d(2));
  push_back(Flatten());
  push_back(Linear(64 * side * side, 128));
  push_back(ReLU());
  push_back(Linear(128, o.classes));
}

ResNet9::ResNet9(int64_t channels, int64_t classes) {
  LOOM_CHECK(channels > 0 && classes > 0, "ResNet9: channels and classes must be positive, got ", channels, ", ",
             classes);
  push_back(ConvBN(channels, 16, 7, 4));
  push_back(ConvBN(16, 32, 3, 2));
  push_back(Residual(Sequential{ConvBN(32, 32, 3, 1), ConvBN(32, 32, 3, 1)}));
  push_back(ConvBN(32, 64, 3, 2));
  push_back(ConvBN(64, 128, 3, 2));
  push_back(Residual(Sequential{ConvBN(128, 128, 3, 1), ConvBN(128, 128, 3, 1)}));
  push_back(Flatten());
  push_back(Linear(128, 128));
  push_back(ReLU());
  push_back(Linear(128, classes));
}

}  // namespace loom::nn
