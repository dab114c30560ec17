// Volumetric layers composed of the 2-D ops (see conv3d.hpp for why each
// composition is exact).

#include "frontend/conv3d.hpp"

#include <sstream>

#include "ops/window.hpp"

namespace loom::nn {

namespace {

/// 1 value -> (d, h, w) all equal; 3 -> as given.
std::vector<int64_t> triple(const std::vector<int64_t>& v, const char* who, const char* name) {
  LOOM_CHECK(v.size() == 1 || v.size() == 3, who, ": ", name, " needs 1 or 3 values (d, h, w), got ", attr_str(v));
  return v.size() == 1 ? std::vector<int64_t>{v[0], v[0], v[0]} : v;
}

/// x is [N, C, D, H, W] with C, D, H, W known and floating.
void check_volume(const std::string& who, const Tensor& x) {
  LOOM_CHECK(x.valid(), who, ": the input is an empty Tensor handle");
  const Shape& s = x.shape();
  LOOM_CHECK(s.size() == 5 && s[1] >= 0 && s[2] >= 0 && s[3] >= 0 && s[4] >= 0, who,
             ": expected [N, C, D, H, W] with C, D, H, W known, got ", S(s),
             s.size() == 4 ? " (a single volume needs a batch dim)" : "");
  LOOM_CHECK(is_floating(x.dtype()), who, ": expected a floating input, got ", dtype_name(x.dtype()));
}

/// [N, C, D, H, W] -> [N, C * D, H, W] and back (views).
Tensor planes(const Tensor& x) {
  const Shape& s = x.shape();
  return reshape(x, {-1, s[1] * s[2], s[3], s[4]});
}

}  // namespace

// ---------------------------------------------------------------- Conv3d

Tensor conv3d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv3dOptions& o) {
  check_volume("conv3d", x);
  LOOM_CHECK(w.valid(), "conv3d: the weight is an empty Tensor handle");
  const Shape& ws = w.shape();
  LOOM_CHECK(ws.size() == 5 && is_static(ws), "conv3d: expected a weight [out, in / groups, kd, kh, kw], got ", S(ws));
  LOOM_CHECK(o.groups > 0 && x.shape()[1] == ws[1] * o.groups && ws[0] % o.groups == 0, "conv3d: input ", S(x.shape()),
             " and weight ", S(ws), " do not match ", o.groups, " group(s)");
  const std::vector<int64_t> st = triple(o.stride, "conv3d", "stride"), pd = triple(o.padding, "conv3d", "padding"),
                             dl = triple(o.dilation, "conv3d", "dilation");
  for (size_t a = 0; a < 3; ++a)
    LOOM_CHECK(st[a] > 0 && dl[a] > 0 && pd[a] >= 0 && pd[a] <= (int64_t(1) << 30), "conv3d: stride and dilation ",
               "must be positive and padding in [0, 2^30], got ", attr_str(st), ", ", attr_str(dl), ", ", attr_str(pd));
  // Depth padding here (zeros, or every axis in another padding_mode); H and W padding in conv2d.
  const bool copying = o.padding_mode != PadMode::constant;
  const Tensor in = copying     ? pad(x, {pd[2], pd[2], pd[1], pd[1], pd[0], pd[0]}, o.padding_mode)
                    : pd[0] > 0 ? pad(x, {0, 0, 0, 0, pd[0], pd[0]})
                                : x;
  const int64_t C = in.shape()[1], depth = in.shape()[2], H = in.shape()[3], W = in.shape()[4], kd = ws[2];
  const int64_t reach = dl[0] * (kd - 1) + 1;
  LOOM_CHECK(reach <= depth, "conv3d: kernel depth ", kd, " with dilation ", dl[0], " does not fit the padded depth ",
             depth);
  const int64_t OD = (depth - reach) / st[0] + 1;
  const Tensor depth_major = permute(in, {0, 2, 1, 3, 4});  // [N, D, C, H, W]
  // Tap i reads depth slices i * dilation + od * stride of every output depth od. The kd taps' slices
  // become channels, group-major ([g, kd, C / g]), so that one 2-D convolution with the weight
  // [out, kd * C / g, kh, kw] sums over the depth taps inside its GEMM.
  std::vector<Tensor> taps;
  for (int64_t i = 0; i < kd; ++i)
    taps.push_back(slice(depth_major, {Slice::all(), detail::strided(i * dl[0], OD, st[0])}));
  const int64_t g = o.groups;
  Tensor stacked = stack(taps, 2);  // [N, OD, kd, C, H, W]
  if (g > 1 && kd > 1) stacked = permute(reshape(stacked, {-1, OD, kd, g, C / g, H, W}), {0, 1, 3, 2, 4, 5, 6});
  const Tensor planes_in = reshape(stacked, {-1, kd * C, H, W});  // [N * OD, kd * C, H, W]
  const Tensor weight = reshape(permute(w, {0, 2, 1, 3, 4}), {ws[0], kd * ws[1], ws[3], ws[4]});
  const loom::Conv2dOptions plane{.stride = {st[1], st[2]},
                                  .padding = {copying ? 0 : pd[1], copying ? 0 : pd[2]},
                                  .dilation = {dl[1], dl[2]},
                                  .groups = g};
  const Tensor y = conv2d(planes_in, weight, bias, plane);  // [N * OD, out, OH, OW]
  const Shape& ys = y.shape();
  return permute(reshape(y, {-1, OD, ys[1], ys[2], ys[3]}), {0, 2, 1, 3, 4});
}

Conv3d::Conv3d(int64_t in, int64_t out, std::vector<int64_t> kernel, Conv3dOptions options)
    : in_(in), out_(out), kernel_(triple(kernel, "Conv3d", "kernel")), options_(std::move(options)) {
  for (int64_t k : kernel_) LOOM_CHECK(k > 0, "Conv3d: kernel sizes must be positive, got ", attr_str(kernel_));
  detail::configure_conv("Conv3d", in_, out_, kernel_, options_.groups, false, options_.dtype, options_.weight_init,
                         options_.bias_init);
  triple(options_.stride, "Conv3d", "stride"), triple(options_.padding, "Conv3d", "padding");
  triple(options_.dilation, "Conv3d", "dilation");
}

std::string Conv3d::describe() const {
  const Conv3dOptions& o = options_;
  return detail::describe_conv(
      {"Conv3d", in_, out_, kernel_, o.stride, o.padding, {0}, o.dilation, o.groups, o.bias, o.padding_mode});
}

Tensor Conv3d::forward(const Tensor& x) {
  check_volume(where(x), x);
  LOOM_CHECK(x.shape()[1] == in_, where(x), ": expected input [N, ", in_, ", D, H, W], got ", S(x.shape()));
  LOOM_CHECK(x.dtype() == options_.dtype, where(x), ": expected ", dtype_name(options_.dtype), " input, got ",
             dtype_name(x.dtype()));
  weight_ = parameter(x, "weight", {out_, in_ / options_.groups, kernel_[0], kernel_[1], kernel_[2]},
                      options_.weight_init, options_.dtype);
  if (options_.bias) bias_ = parameter(x, "bias", {out_}, options_.bias_init, options_.dtype);
  return conv3d(x, weight_, bias_, options_);
}

// ---------------------------------------------------------------- ConvTranspose3d

Tensor conv_transpose3d(const Tensor& x, const Tensor& w, const Tensor& bias, const ConvTranspose3dOptions& o) {
  const char* who = "conv_transpose3d";
  check_volume(who, x);
  LOOM_CHECK(w.valid(), who, ": the weight is an empty Tensor handle");
  const Shape &xs = x.shape(), &ws = w.shape();
  LOOM_CHECK(ws.size() == 5 && is_static(ws) && xs[1] == ws[0], who, ": expected a weight [", xs[1],
             ", out / groups, kd, kh, kw] for input ", S(xs), ", got ", S(ws));
  const std::vector<int64_t> st = triple(o.stride, who, "stride"), pd = triple(o.padding, who, "padding"),
                             dl = triple(o.dilation, who, "dilation"),
                             extra = triple(o.output_padding, who, "output_padding");
  LOOM_CHECK(
      st[0] > 0 && dl[0] > 0 && pd[0] >= 0 && (extra[0] < st[0] || extra[0] < dl[0]) && extra[0] >= 0, who,
      ": stride and dilation must be positive, padding >= 0 and output_padding below the stride or the dilation, "
      "got ",
      attr_str(st), ", ", attr_str(dl), ", ", attr_str(pd), ", ", attr_str(extra));
  const int64_t N_D = xs[2], kd = ws[2], C = xs[1], H = xs[3], W = xs[4];
  const int64_t spread = (N_D - 1) * st[0] + 1, full = spread + dl[0] * (kd - 1), OD = full - 2 * pd[0] + extra[0];
  LOOM_CHECK(OD > 0, who, ": the output of ", S(xs), " would be ", OD, " deep");
  const int64_t length = std::max(full, pd[0] + OD);  // output_padding past the taps reads zeros
  const Tensor slices = reshape(permute(x, {0, 2, 1, 3, 4}), {-1, C, H, W});  // [N * D, C, H, W]
  const ConvTranspose2dOptions plane{.stride = {st[1], st[2]},
                                     .padding = {pd[1], pd[2]},
                                     .output_padding = {extra[1], extra[2]},
                                     .groups = o.groups,
                                     .dilation = {dl[1], dl[2]}};
  Tensor sum;  // [N, length, out, OH, OW]
  for (int64_t i = 0; i < kd; ++i) {
    const Tensor tap =
        reshape(slice(w, {Slice::all(), Slice::all(), Slice::range(i, i + 1)}), {ws[0], ws[1], ws[3], ws[4]});
    const Tensor y = conv_transpose2d(slices, tap, {}, plane);  // [N * D, out, OH, OW]
    Tensor t = reshape(y, {-1, N_D, y.shape()[1], y.shape()[2], y.shape()[3]});
    // Input depth d lands at d * stride + i * dilation: spread by the stride, then moved to the tap's offset.
    if (st[0] > 1) t = slice(dilate(t, {1}, st[0] - 1), {Slice::all(), Slice::range(0, spread)});
    t = pad(t, {0, 0, 0, 0, 0, 0, i * dl[0], length - i * dl[0] - spread});
    sum = sum.valid() ? sum + t : t;
  }
  Tensor y = permute(slice(sum, {Slice::all(), Slice::range(pd[0], pd[0] + OD)}), {0, 2, 1, 3, 4});
  if (!bias.valid()) return y;
  const int64_t out = y.shape()[1];
  LOOM_CHECK(bias.shape() == Shape{out}, who, ": bias must be [", out, "], got ", S(bias.shape()));
  return y + reshape(bias, {out, 1, 1, 1});
}

ConvTranspose3d::ConvTranspose3d(int64_t in, int64_t out, std::vector<int64_t> kernel, ConvTranspose3dOptions options)
    : in_(in), out_(out), kernel_(triple(kernel, "ConvTranspose3d", "kernel")), options_(std::move(options)) {
  for (int64_t k : kernel_)
    LOOM_CHECK(k > 0, "ConvTranspose3d: kernel sizes must be positive, got ", attr_str(kernel_));
  detail::configure_conv("ConvTranspose3d", in_, out_, kernel_, options_.groups, true, options_.dtype,
                         options_.weight_init, options_.bias_init);
}

std::string ConvTranspose3d::describe() const {
  const ConvTranspose3dOptions& o = options_;
  return detail::describe_conv({"ConvTranspose3d", in_, out_, kernel_, o.stride, o.padding, o.output_padding,
                                o.dilation, o.groups, o.bias, PadMode::constant});
}

Tensor ConvTranspose3d::forward(const Tensor& x) {
  check_volume(where(x), x);
  LOOM_CHECK(x.shape()[1] == in_, where(x), ": expected input [N, ", in_, ", D, H, W], got ", S(x.shape()));
  LOOM_CHECK(x.dtype() == options_.dtype, where(x), ": expected ", dtype_name(options_.dtype), " input, got ",
             dtype_name(x.dtype()));
  weight_ = parameter(x, "weight", {in_, out_ / options_.groups, kernel_[0], kernel_[1], kernel_[2]},
                      options_.weight_init, options_.dtype);
  if (options_.bias) bias_ = parameter(x, "bias", {out_}, options_.bias_init, options_.dtype);
  return conv_transpose3d(x, weight_, bias_, options_);
}

// ---------------------------------------------------------------- pooling

namespace {

/// Separable pooling: `pool2d` over (H, W) of every depth slice, then over D
/// (a (kd x 1) window on [N, C, D, OH * OW]).
template <class Pool2d>
Tensor separable(const Tensor& x, Pool2d&& pool2d, const loom::Pool2dOptions& hw, const loom::Pool2dOptions& d) {
  const Shape& s = x.shape();
  const Tensor across = pool2d(planes(x), hw);  // [N, C * D, OH, OW]
  const int64_t OH = across.shape()[2], OW = across.shape()[3];
  const Tensor down = pool2d(reshape(across, {-1, s[1], s[2], OH * OW}), d);  // [N, C, OD, OH * OW]
  return reshape(down, {-1, s[1], down.shape()[2], OH, OW});
}

Tensor pool3d(const char* who, bool max, const Tensor& x, const std::vector<int64_t>& kernel, const Pool3dOptions& o) {
  check_volume(who, x);
  const std::vector<int64_t> k = triple(kernel, who, "kernel"),
                             st = o.stride.empty() ? k : triple(o.stride, who, "stride"),
                             pd = triple(o.padding, who, "padding");
  for (size_t a = 0; a < 3; ++a)
    LOOM_CHECK(k[a] > 0 && st[a] > 0 && pd[a] >= 0 && 2 * pd[a] <= k[a], who,
               ": kernel and stride must be positive and padding in [0, kernel / 2], got kernel ", attr_str(k),
               ", stride ", attr_str(st), ", padding ", attr_str(pd));
  const loom::Pool2dOptions hw{{k[1], k[2]}, {st[1], st[2]}, {pd[1], pd[2]}, o.count_include_pad, o.ceil_mode};
  const loom::Pool2dOptions d{{k[0], 1}, {st[0], 1}, {pd[0], 0}, o.count_include_pad, o.ceil_mode};
  if (max)
    return separable(
        x, [](const Tensor& t, const loom::Pool2dOptions& p) { return max_pool2d(t, p); }, hw, d);
  return separable(
      x, [](const Tensor& t, const loom::Pool2dOptions& p) { return avg_pool2d(t, p); }, hw, d);
}

Tensor adaptive3d(const char* who, bool max, const Tensor& x, const std::vector<int64_t>& output_size) {
  check_volume(who, x);
  const std::vector<int64_t> out = triple(output_size, who, "output_size");
  for (int64_t d : out) LOOM_CHECK(d > 0, who, ": output sizes must be positive, got ", attr_str(out));
  auto pool = [max](const Tensor& t, const std::vector<int64_t>& size) {
    return max ? adaptive_max_pool2d(t, size) : adaptive_avg_pool2d(t, size);
  };
  const Shape& s = x.shape();
  const Tensor across = pool(planes(x), {out[1], out[2]});  // [N, C * D, OH, OW]
  const Tensor down = pool(reshape(across, {-1, s[1], s[2], out[1] * out[2]}), {out[0], out[1] * out[2]});
  return reshape(down, {-1, s[1], out[0], out[1], out[2]});
}

}  // namespace

Tensor max_pool3d(const Tensor& x, std::vector<int64_t> kernel, const Pool3dOptions& o) {
  return pool3d("max_pool3d", true, x, kernel, o);
}

Tensor avg_pool3d(const Tensor& x, std::vector<int64_t> kernel, const Pool3dOptions& o) {
  return pool3d("avg_pool3d", false, x, kernel, o);
}

Tensor adaptive_avg_pool3d(const Tensor& x, std::vector<int64_t> output_size) {
  return adaptive3d("adaptive_avg_pool3d", false, x, output_size);
}

Tensor adaptive_max_pool3d(const Tensor& x, std::vector<int64_t> output_size) {
  return adaptive3d("adaptive_max_pool3d", true, x, output_size);
}

Pool3d::Pool3d(bool max, std::vector<int64_t> kernel, Pool3dOptions options)
    : max_(max), kernel_(std::move(kernel)), options_(std::move(options)) {
  const std::string who = type_name();
  for (int64_t k : triple(kernel_, who.c_str(), "kernel"))
    LOOM_CHECK(k > 0, who, ": kernel sizes must be positive, got ", attr_str(kernel_));
  if (!options_.stride.empty()) triple(options_.stride, who.c_str(), "stride");
  triple(options_.padding, who.c_str(), "padding");
}

std::string Pool3d::describe() const {
  std::ostringstream os;
  os << type_name() << "(kernel=" << ints_str(kernel_)
     << ", stride=" << ints_str(options_.stride.empty() ? kernel_ : options_.stride)
     << ", padding=" << ints_str(options_.padding);
  if (!max_ && !options_.count_include_pad) os << ", count_include_pad=false";
  if (options_.ceil_mode) os << ", ceil_mode=true";
  os << ")";
  return os.str();
}

Tensor Pool3d::forward(const Tensor& x) {
  return max_ ? pool3d(where(x).c_str(), true, x, kernel_, options_)
              : pool3d(where(x).c_str(), false, x, kernel_, options_);
}

AdaptivePool3d::AdaptivePool3d(bool max, std::vector<int64_t> output_size)
    : max_(max), output_size_(std::move(output_size)) {
  const std::string who = type_name();
  for (int64_t k : triple(output_size_, who.c_str(), "output_size"))
    LOOM_CHECK(k > 0, who, ": output sizes must be positive, got ", attr_str(output_size_));
}

std::string AdaptivePool3d::describe() const { return type_name() + "(" + ints_str(output_size_) + ")"; }

Tensor AdaptivePool3d::forward(const Tensor& x) { return adaptive3d(where(x).c_str(), max_, x, output_size_); }

// ---------------------------------------------------------------- BatchNorm3d

BatchNorm3d::BatchNorm3d(int64_t features, NormOptions options) : BatchNorm("BatchNorm3d", features, options) {}

std::string BatchNorm3d::describe() const { return describe_as("BatchNorm3d"); }

Tensor BatchNorm3d::forward(const Tensor& x) {
  check_volume(where(x), x);
  LOOM_CHECK(x.shape()[1] == features_, where(x), ": expected input [N, ", features_, ", D, H, W], got ", S(x.shape()));
  check_input(x);
  const Shape& s = x.shape();
  if (batch_statistics()) return reshape_like(batch_normalize(reshape(x, {-1, s[1], s[2], s[3] * s[4]})), x);
  auto [w, b] = scale_and_shift(x);
  const Tensor scale = w * pow(running_var_ + options_.eps, -0.5);
  const Tensor shift = b - running_mean_ * scale;
  return x * reshape(scale, {features_, 1, 1, 1}) + reshape(shift, {features_, 1, 1, 1});
}

}  // namespace loom::nn
