#pragma once
/// Convolutional modules and models (loom::nn), on the ops of ops/conv.cpp,
/// ops/pool.cpp and ops/batch_norm.cpp. Layouts are PyTorch's: images
/// [N, C, H, W], conv weights [out, in / groups, kh, kw].
///
///     nn::Sequential net{nn::Conv2d(3, 16, 3, {.padding = {1}}), nn::BatchNorm2d(16), nn::ReLU(),
///                        nn::MaxPool2d(2), nn::Flatten(), nn::Linear(16 * 16 * 16, 10)};
///     Tensor logits = net(g.placeholder("x", {-1, 3, 32, 32}));
///
/// Fusions happen in the modules, where the structure is known:
/// - nn::ConvBN (Conv -> BatchNorm2d -> ReLU) normalizes and applies the ReLU
///   in one op in training mode (batch_norm with relu), and its backward is
///   one op too;
/// - in eval mode a BatchNorm2d applied directly to a conv2d output folds
///   itself into that convolution: weight * scale, and (bias - running_mean)
///   * scale + shift as a fused bias (with ConvBN's ReLU as the conv's
///   epilogue), computed in the graph from the current variables, so a
///   ConvBN costs one conv pass at inference.

#include <cstdint>
#include <vector>

#include "frontend/nn.hpp"

namespace loom::nn {

struct Conv2dOptions {
  std::vector<int64_t> stride = {1};    ///< 1 value or 2 (h, w)
  std::vector<int64_t> padding = {0};   ///< 1, 2 (h, w) or 4 (top, bottom, left, right)
  std::vector<int64_t> dilation = {1};  ///< 1 or 2 values
  int64_t groups = 1;
  bool bias = true;
  /// PyTorch's padding_mode: constant is 'zeros'; reflect, replicate and circular pad the input
  /// (nn::pad) by `padding` before a convolution without padding.
  PadMode padding_mode = PadMode::constant;
  /// Default: PyTorch's, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = in / groups * kh * kw, for both.
  Initializer weight_init = {};
  Initializer bias_init = {};
  DType dtype = float32;
};

/// Sizes as a module's description prints them, PyTorch's way: "(2, 3)", or "2" for one value.
std::string ints_str(const std::vector<int64_t>& v);

}  // namespace loom::nn

namespace loom::detail {
/// The convolution modules' shared checks (channels, groups, dtype, weight
/// size) and PyTorch's default initialization, U(-1/sqrt(fan_in),
/// 1/sqrt(fan_in)) for weight and bias with fan_in = weight.size(1) * kernel
/// volume, set where the options leave them empty. The weight is
/// [out, in / groups, k...], or [in, out / groups, k...] when transposed.
void configure_conv(const char* who, int64_t in, int64_t out, const std::vector<int64_t>& kernel, int64_t groups,
                    bool transposed, DType dtype, Initializer& weight_init, Initializer& bias_init);

/// What a convolution module's description shows, in PyTorch's order
/// ("Conv3d(4, 6, kernel=(3, 2, 3), stride=1, padding=1, groups=2, bias)");
/// output_padding, dilation, groups and padding_mode only when not the default.
struct ConvSummary {
  std::string type;
  int64_t in, out;
  std::vector<int64_t> kernel, stride, padding, output_padding, dilation;
  int64_t groups;
  bool bias;
  PadMode padding_mode;
};
std::string describe_conv(const ConvSummary& summary);
}  // namespace loom::detail

namespace loom::nn {

/// The padding of PyTorch's padding="same" for a kernel (1 or 2 values) and
/// dilation, as Conv2dOptions' 4 values (top, bottom, left, right): the output
/// keeps the input's size at stride 1; an even total puts the extra row and
/// column at the bottom and right, as PyTorch.
std::vector<int64_t> same_padding(std::vector<int64_t> kernel, std::vector<int64_t> dilation = {1});

/// 2-D convolution: [N, in, H, W] -> [N, out, OH, OW]; variables "weight"
/// [out, in / groups, kh, kw] and "bias" [out].
class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, std::vector<int64_t> kernel, Conv2dOptions options = {});
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, Conv2dOptions options = {})
      : Conv2d(in_channels, out_channels, std::vector<int64_t>{kernel}, std::move(options)) {}
  std::string type_name() const override { return "Conv2d"; }
  std::string describe() const override;
  int64_t in_channels() const { return in_; }
  int64_t out_channels() const { return out_; }
  const Conv2dOptions& options() const { return options_; }
  /// The variables (invalid before the first call; bias also without a bias).
  Tensor weight() const { return weight_; }
  Tensor bias() const { return bias_; }

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  int64_t in_, out_;
  std::vector<int64_t> kernel_;
  Conv2dOptions options_;
  Tensor weight_, bias_;
};

struct Conv1dOptions {
  int64_t stride = 1;
  int64_t padding = 0;  ///< on both ends, zeros unless padding_mode says otherwise
  int64_t dilation = 1;
  int64_t groups = 1;
  bool bias = true;
  PadMode padding_mode = PadMode::constant;  ///< as Conv2dOptions'

  /// Default: PyTorch's, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = in / groups * k, for both.
  Initializer weight_init = {};
  Initializer bias_init = {};
  DType dtype = float32;
};

/// 1-D convolution (PyTorch's F.conv1d): x [N, C, L], w [out, C / groups, k],
/// bias [out] optional -> [N, out, OL]; conv2d on a height of 1 (views, no copy).
Tensor conv1d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv1dOptions& options = {});

/// PyTorch's Conv1d: variables "weight" [out, in / groups, k] and "bias" [out].
class Conv1d : public Module {
 public:
  Conv1d(int64_t in_channels, int64_t out_channels, int64_t kernel, Conv1dOptions options = {});
  std::string type_name() const override { return "Conv1d"; }
  std::string describe() const override;
  Tensor weight() const { return weight_; }
  Tensor bias() const { return bias_; }

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  int64_t in_, out_, kernel_;
  Conv1dOptions options_;
  Tensor weight_, bias_;
};

struct ConvTranspose2dOptions {
  std::vector<int64_t> stride = {1};          ///< 1 value or 2 (h, w)
  std::vector<int64_t> padding = {0};         ///< 1 or 2 values, removed from both sides of the output
  std::vector<int64_t> output_padding = {0};  ///< 1 or 2 values, added to one side; each below its stride or dilation
  int64_t groups = 1;
  std::vector<int64_t> dilation = {1};  ///< 1 or 2 values
  bool bias = true;
  /// Default: PyTorch's, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = out / groups * kh * kw, for both.
  Initializer weight_init = {};
  Initializer bias_init = {};
  DType dtype = float32;
};

/// The transposed convolution (PyTorch's F.conv_transpose2d): x [N, Cin, H, W]
/// and w [Cin, Cout / groups, kh, kw] -> [N, Cout, OH, OW] with
/// OH = (H - 1) * stride - 2 * padding + dilation * (kh - 1) + output_padding + 1;
/// bias [Cout] optional. It is conv2d's gradient op conv2d_backward_data, so
/// its own gradients are convolutions; H and W must be known.
Tensor conv_transpose2d(const Tensor& x, const Tensor& w, const Tensor& bias,
                        const ConvTranspose2dOptions& options = {});

/// PyTorch's ConvTranspose2d (a "deconvolution", as in DCGAN generators and
/// U-Nets): variables "weight" [in, out / groups, kh, kw] and "bias" [out].
class ConvTranspose2d : public Module {
 public:
  ConvTranspose2d(int64_t in_channels, int64_t out_channels, std::vector<int64_t> kernel,
                  ConvTranspose2dOptions options = {});
  ConvTranspose2d(int64_t in_channels, int64_t out_channels, int64_t kernel, ConvTranspose2dOptions options = {})
      : ConvTranspose2d(in_channels, out_channels, std::vector<int64_t>{kernel}, std::move(options)) {}
  std::string type_name() const override { return "ConvTranspose2d"; }
  std::string describe() const override;
  Tensor weight() const { return weight_; }
  Tensor bias() const { return bias_; }

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  int64_t in_, out_;
  std::vector<int64_t> kernel_;
  ConvTranspose2dOptions options_;
  Tensor weight_, bias_;
};

struct ConvTranspose1dOptions {
  int64_t stride = 1;
  int64_t padding = 0;         ///< removed from both ends of the output
  int64_t output_padding = 0;  ///< added to the end; below the stride or the dilation
  int64_t groups = 1;
  int64_t dilation = 1;
  bool bias = true;
  /// Default: PyTorch's, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = out / groups * k, for both.
  Initializer weight_init = {};
  Initializer bias_init = {};
  DType dtype = float32;
};

/// PyTorch's F.conv_transpose1d: x [N, C, L], w [C, out / groups, k], bias
/// [out] optional -> [N, out, (L - 1) stride - 2 padding + dilation (k - 1) +
/// output_padding + 1]; conv_transpose2d on a height of 1.
Tensor conv_transpose1d(const Tensor& x, const Tensor& w, const Tensor& bias,
                        const ConvTranspose1dOptions& options = {});

/// PyTorch's ConvTranspose1d: variables "weight" [in, out / groups, k] and "bias" [out].
class ConvTranspose1d : public Module {
 public:
  ConvTranspose1d(int64_t in_channels, int64_t out_channels, int64_t kernel, ConvTranspose1dOptions options = {});
  std::string type_name() const override { return "ConvTranspose1d"; }
  std::string describe() const override;
  Tensor weight() const { return weight_; }
  Tensor bias() const { return bias_; }

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  int64_t in_, out_, kernel_;
  ConvTranspose1dOptions options_;
  Tensor weight_, bias_;
};

/// Batch normalization of [N, C, H, W] per channel, as PyTorch's BatchNorm2d
/// (see BatchNorm): eval mode uses the running statistics, folded into the
/// preceding conv2d when there is one.
class BatchNorm2d : public BatchNorm {
 public:
  explicit BatchNorm2d(int64_t features, NormOptions options = {});
  std::string type_name() const override { return "BatchNorm2d"; }
  std::string describe() const override;
  /// Applies a ReLU to the output inside the same op (what ConvBN uses).
  BatchNorm2d& fuse_relu(bool on = true) {
    relu_ = on;
    return *this;
  }

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  Tensor folded(const Tensor& x, const Tensor& scale, const Tensor& shift) const;
  bool relu_ = false;
};

/// Max and average pooling of [N, C, L] (PyTorch's MaxPool1d, AvgPool1d):
/// kernel, stride (0: the kernel), padding (at most half the kernel),
/// ceil_mode (see Pool2dOptions); the 2-D ops on a height of 1.
class MaxPool1d : public Module {
 public:
  explicit MaxPool1d(int64_t kernel, int64_t stride = 0, int64_t padding = 0, bool ceil_mode = false,
                     int64_t dilation = 1);
  std::string type_name() const override { return "MaxPool1d"; }
  std::string describe() const override;

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  int64_t kernel_, stride_, padding_;
  bool ceil_mode_;
  int64_t dilation_;
};

class AvgPool1d : public Module {
 public:
  explicit AvgPool1d(int64_t kernel, int64_t stride = 0, int64_t padding = 0, bool count_include_pad = true,
                     bool ceil_mode = false);
  std::string type_name() const override { return "AvgPool1d"; }
  std::string describe() const override;

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  int64_t kernel_, stride_, padding_;
  bool count_include_pad_, ceil_mode_;
};

/// Pooling of [N, C, L] to `output_size` positions (PyTorch's
/// AdaptiveAvgPool1d and AdaptiveMaxPool1d): windows [floor(i L / out),
/// ceil((i + 1) L / out)).
class AdaptivePool1d : public Module {
 public:
  AdaptivePool1d(int64_t output_size, bool max);
  std::string type_name() const override { return max_ ? "AdaptiveMaxPool1d" : "AdaptiveAvgPool1d"; }
  std::string describe() const override { return type_name() + "(" + std::to_string(output_size_) + ")"; }

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  int64_t output_size_;
  bool max_;
};
struct AdaptiveAvgPool1d : AdaptivePool1d {
  explicit AdaptiveAvgPool1d(int64_t output_size) : AdaptivePool1d(output_size, false) {}
};
struct AdaptiveMaxPool1d : AdaptivePool1d {
  explicit AdaptiveMaxPool1d(int64_t output_size) : AdaptivePool1d(output_size, true) {}
};

/// Group normalization (PyTorch's GroupNorm): the C channels of [N, C, ...]
/// in `groups` groups, each normalized over its channels and the spatial
/// dims (biased variance), then a per-channel "weight" (ones) and "bias"
/// (zeros) with affine. The same in training and eval (no running statistics).
class GroupNorm : public Module {
 public:
  GroupNorm(int64_t groups, int64_t channels, double eps = 1e-5, bool affine = true);
  std::string type_name() const override { return "GroupNorm"; }
  std::string describe() const override;

 protected:
  Tensor forward(const Tensor& x) override;

  int64_t groups_, channels_;
  double eps_;
  bool affine_;
};

/// PyTorch's InstanceNorm2d (its defaults: no affine, no running statistics):
/// each channel of each sample normalized over H and W, GroupNorm with one
/// channel per group.
class InstanceNorm2d : public GroupNorm {
 public:
  explicit InstanceNorm2d(int64_t channels, double eps = 1e-5, bool affine = false);
  std::string type_name() const override {
    return rank_ == 3 ? "InstanceNorm1d" : rank_ == 5 ? "InstanceNorm3d" : "InstanceNorm2d";
  }
  std::string describe() const override;

 protected:
  InstanceNorm2d(int64_t channels, double eps, bool affine, int64_t rank);
  Tensor forward(const Tensor& x) override;

 private:
  int64_t rank_ = 4;
};

/// PyTorch's InstanceNorm1d: each channel of [N, C, L] normalized over L.
struct InstanceNorm1d : InstanceNorm2d {
  explicit InstanceNorm1d(int64_t channels, double eps = 1e-5, bool affine = false)
      : InstanceNorm2d(channels, eps, affine, 3) {}
};

/// [N, C r^2, H, W] -> [N, C, H r, W r] (PyTorch's PixelShuffle, sub-pixel
/// upsampling); pixel_unshuffle is its inverse. A reshape, a permute and a copy.
Tensor pixel_shuffle(const Tensor& x, int64_t upscale_factor);
Tensor pixel_unshuffle(const Tensor& x, int64_t downscale_factor);

struct PixelShuffle : Lambda {
  explicit PixelShuffle(int64_t upscale_factor);
  std::string describe() const override { return "PixelShuffle(" + std::to_string(r_) + ")"; }
  int64_t r_;
};

/// PyTorch's F.pad: `padding` holds (before, after) pairs from the last axis
/// backwards, {left, right} for the last axis, {left, right, top, bottom} for
/// the last two, and so on; modes as loom::pad (reflect, replicate and
/// circular on known sizes). A negative pad crops that side first, as PyTorch's.
Tensor pad(const Tensor& x, const std::vector<int64_t>& padding, PadMode mode = PadMode::constant, double value = 0);

/// PyTorch's padding layers on the last `dims` axes of any input (batched or
/// not): `padding` is 1 value (every side) or 2 * dims in F.pad's order. Use
/// the named forms below (ReflectionPad2d, ...).
class Pad : public Module {
 public:
  Pad(int64_t dims, std::vector<int64_t> padding, PadMode mode, double value = 0, std::string type = {});
  std::string type_name() const override { return type_; }
  std::string describe() const override;

 protected:
  Tensor forward(const Tensor& x) override { return pad(x, padding_, mode_, value_); }

 private:
  std::vector<int64_t> padding_;  // 2 * dims values
  PadMode mode_;
  double value_;
  std::string type_;
};

template <int64_t Dims, PadMode Mode>
struct PaddingLayer : Pad {
  explicit PaddingLayer(std::vector<int64_t> padding, double value = 0) : Pad(Dims, std::move(padding), Mode, value) {}
  explicit PaddingLayer(int64_t padding, double value = 0) : PaddingLayer(std::vector<int64_t>{padding}, value) {}
};
using ConstantPad1d = PaddingLayer<1, PadMode::constant>;  ///< (padding, value)
using ConstantPad2d = PaddingLayer<2, PadMode::constant>;
using ReflectionPad1d = PaddingLayer<1, PadMode::reflect>;
using ReflectionPad2d = PaddingLayer<2, PadMode::reflect>;
using ReplicationPad1d = PaddingLayer<1, PadMode::replicate>;
using ReplicationPad2d = PaddingLayer<2, PadMode::replicate>;
using CircularPad1d = PaddingLayer<1, PadMode::circular>;
using CircularPad2d = PaddingLayer<2, PadMode::circular>;
struct ZeroPad1d : Pad {
  explicit ZeroPad1d(std::vector<int64_t> padding) : Pad(1, std::move(padding), PadMode::constant, 0, "ZeroPad1d") {}
  explicit ZeroPad1d(int64_t padding) : ZeroPad1d(std::vector<int64_t>{padding}) {}
};
struct ZeroPad2d : Pad {
  explicit ZeroPad2d(std::vector<int64_t> padding) : Pad(2, std::move(padding), PadMode::constant, 0, "ZeroPad2d") {}
  explicit ZeroPad2d(int64_t padding) : ZeroPad2d(std::vector<int64_t>{padding}) {}
};

/// Nearest-neighbour upsampling of [N, C, H, W] by integer factors (PyTorch's
/// Upsample(scale_factor, mode='nearest') and F.interpolate for them): each
/// pixel repeated scale_h x scale_w times; a view broadcast, then one copy.
Tensor upsample_nearest2d(const Tensor& x, std::vector<int64_t> scale);

enum class InterpolationMode { nearest, nearest_exact, linear, bilinear, bicubic, trilinear, area };
const char* interpolation_mode_name(InterpolationMode mode);

/// PyTorch's F.interpolate: the output size, or the scale factors (output
/// size floor(in * scale)), 1 value or one per spatial axis.
struct InterpolateOptions {
  std::vector<int64_t> size = {};
  std::vector<double> scale_factor = {};
  InterpolationMode mode = InterpolationMode::nearest;
  /// linear, bilinear, bicubic and trilinear only: the corner pixels' centres align (PyTorch's align_corners=True).
  bool align_corners = false;
  /// bilinear and bicubic only: when downsampling, the filter widens by the
  /// scale so that every input pixel counts (PyTorch's antialias=True, PIL's
  /// resize; bicubic then uses A = -0.5).
  bool antialias = false;
};

/// Resamples [N, C, L] (nearest, nearest_exact, linear, area),
/// [N, C, H, W] (nearest, nearest_exact, bilinear, bicubic, area) or
/// [N, C, D, H, W] (nearest, nearest_exact, trilinear, area) as
/// PyTorch's F.interpolate (source positions, half-pixel rule, clamping, the
/// bicubic A = -0.75, the scale 1 / scale_factor when one is given). Each
/// axis is one resample op (the weighted sum of one, two or four source
/// rows; its gradient is its transpose); area is adaptive average pooling;
/// nearest by integer factors is upsample_nearest2d.
Tensor interpolate(const Tensor& x, const InterpolateOptions& options);

/// PyTorch's nn.Upsample (F.interpolate as a module); Upsample(2) is nearest by 2.
class Upsample : public Module {
 public:
  explicit Upsample(InterpolateOptions options);
  explicit Upsample(int64_t scale_factor) : Upsample(InterpolateOptions{.scale_factor = {double(scale_factor)}}) {}
  std::string type_name() const override { return "Upsample"; }
  std::string describe() const override;

 protected:
  Tensor forward(const Tensor& x) override { return interpolate(x, options_); }

 private:
  InterpolateOptions options_;
};

struct Pool2dOptions {
  std::vector<int64_t> stride = {};    ///< empty: the kernel size
  std::vector<int64_t> padding = {0};  ///< at most half the kernel
  bool count_include_pad = true;       ///< AvgPool2d only
  /// Output sizes rounded up (PyTorch's ceil_mode): a last, partial window
  /// covers the input's end (it starts inside the input or leading padding;
  /// an average divides by its part inside the padded input). Default: down.
  bool ceil_mode = false;
  /// MaxPool2d only, 1 or 2 values: the window's taps are this far apart
  /// (PyTorch's dilation).
  std::vector<int64_t> dilation = {1};
};

class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(std::vector<int64_t> kernel, Pool2dOptions options = {});
  explicit MaxPool2d(int64_t kernel, Pool2dOptions options = {})
      : MaxPool2d(std::vector<int64_t>{kernel}, std::move(options)) {}
  std::string type_name() const override { return "MaxPool2d"; }
  std::string describe() const override;
  /// PyTorch's return_indices: each maximum's index h * W + w in its plane (int64), for MaxUnpool2d.
  Tensor indices(const Tensor& x) const;

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  loom::Pool2dOptions options_;
  std::vector<int64_t> dilation_;  // (h, w)
};

/// PyTorch's nn.MaxUnpool2d(kernel, stride, padding): values y [N, C, h, w]
/// written at their MaxPool2d indices into zeros [N, C, H, W], by default
/// H = (h - 1) * stride - padding_top - padding_bottom + kernel (output_size,
/// {H, W} or {N, C, H, W}, picks another size pooling could have come from).
class MaxUnpool2d {
 public:
  explicit MaxUnpool2d(std::vector<int64_t> kernel, Pool2dOptions options = {});
  explicit MaxUnpool2d(int64_t kernel, Pool2dOptions options = {})
      : MaxUnpool2d(std::vector<int64_t>{kernel}, std::move(options)) {}
  Tensor operator()(const Tensor& y, const Tensor& indices, std::vector<int64_t> output_size = {}) const;
  std::string describe() const;

 private:
  loom::Pool2dOptions options_;
  std::vector<int64_t> kernel_, stride_, padding_;
};

class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(std::vector<int64_t> kernel, Pool2dOptions options = {});
  explicit AvgPool2d(int64_t kernel, Pool2dOptions options = {})
      : AvgPool2d(std::vector<int64_t>{kernel}, std::move(options)) {}
  std::string type_name() const override { return "AvgPool2d"; }
  std::string describe() const override;

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  loom::Pool2dOptions options_;
};

/// Average or max pooling to a fixed output size ({1} or {1, 1}: global
/// pooling); windows [floor(i H / out), ceil((i + 1) H / out)) per axis, as
/// PyTorch's AdaptiveAvgPool2d and AdaptiveMaxPool2d (without return_indices;
/// a max's gradient goes to each window's first maximum).
class AdaptivePool2d : public Module {
 public:
  AdaptivePool2d(std::vector<int64_t> output_size, bool max);
  std::string type_name() const override { return max_ ? "AdaptiveMaxPool2d" : "AdaptiveAvgPool2d"; }
  std::string describe() const override;
  const std::vector<int64_t>& output_size() const { return output_size_; }

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  std::vector<int64_t> output_size_;
  bool max_;
};
struct AdaptiveAvgPool2d : AdaptivePool2d {
  explicit AdaptiveAvgPool2d(std::vector<int64_t> output_size = {1}) : AdaptivePool2d(std::move(output_size), false) {}
};
struct AdaptiveMaxPool2d : AdaptivePool2d {
  explicit AdaptiveMaxPool2d(std::vector<int64_t> output_size = {1}) : AdaptivePool2d(std::move(output_size), true) {}
  /// PyTorch's return_indices: each maximum's index h * W + w in its plane (int64).
  Tensor indices(const Tensor& x) const { return adaptive_max_pool2d_indices(x, output_size()); }
};

/// Conv (padding kernel / 2, no bias: the batch norm's mean subtraction
/// would cancel it) -> BatchNorm2d -> ReLU, children "0", "1", "2" as in a
/// PyTorch nn.Sequential(conv, bn, relu). Fused as described above.
class ConvBN : public Sequential {
 public:
  ConvBN(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride = 1);
  std::string type_name() const override { return "ConvBN"; }

 protected:
  Tensor forward(const Tensor& x) override;
};

struct CNNOptions {
  int64_t channels = 1;  ///< 1 for Fashion-MNIST, 3 for CIFAR-10
  int64_t classes = 10;
  int64_t image_size = 28;  ///< 28 or 32 (any multiple of 4)
};

/// ConvBN(C -> 32, 3) -> MaxPool 2 -> ConvBN(32 -> 64, 3) -> MaxPool 2 ->
/// Flatten -> Linear(64 * (size/4)^2 -> 128) -> ReLU -> Linear(128 -> classes).
class CNN : public Sequential {
 public:
  explicit CNN(CNNOptions options = {});
  std::string type_name() const override { return "CNN"; }
};

/// The course's ResNet9 (hw4): ConvBN(C -> 16, k7, s4) -> ConvBN(16 -> 32, k3, s2)
/// -> Residual(ConvBN(32 -> 32) -> ConvBN(32 -> 32)) -> ConvBN(32 -> 64, s2) ->
/// ConvBN(64 -> 128, s2) -> Residual(ConvBN(128 -> 128) -> ConvBN(128 -> 128)) ->
/// Flatten -> Linear(128 -> 128) -> ReLU -> Linear(128 -> classes). 28x28 and
/// 32x32 inputs both end at 128 x 1 x 1.
class ResNet9 : public Sequential {
 public:
  explicit ResNet9(int64_t channels = 1, int64_t classes = 10);
  std::string type_name() const override { return "ResNet9"; }
};

}  // namespace loom::nn
