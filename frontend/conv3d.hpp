#pragma once
/// Volumetric (3-D) layers on [N, C, D, H, W], PyTorch's conventions:
/// Conv3d, MaxPool3d, AvgPool3d, AdaptiveAvgPool3d, AdaptiveMaxPool3d,
/// BatchNorm3d and InstanceNorm3d. Each is composed of the 2-D ops, so
/// gradients, the CUDA kernels and ONNX export come with them:
/// - a 3-D convolution is one 2-D convolution whose input channels are the
///   kd depth slices each output depth reads ([N * OD, kd * C, H, W]): the
///   same multiply-adds as a direct 3-D convolution, summed inside one GEMM;
/// - pooling over a box is separable: pooling over (H, W), then over D (a
///   maximum of maxima; an average of averages, as each axis's divisor is
///   its own part of the box's);
/// - BatchNorm3d is BatchNorm2d's op on the view [N, C, D, H * W].
/// C, D, H and W must be known (N may be dynamic).

#include <cstdint>
#include <string>
#include <vector>

#include "frontend/conv.hpp"

namespace loom::nn {

struct Conv3dOptions {
  std::vector<int64_t> stride = {1};    ///< 1 value or 3 (d, h, w)
  std::vector<int64_t> padding = {0};   ///< 1 or 3 values, on both sides of each axis
  std::vector<int64_t> dilation = {1};  ///< 1 or 3 values
  int64_t groups = 1;
  bool bias = true;
  /// As Conv2dOptions': constant is 'zeros'; reflect, replicate and circular pad the input first.
  PadMode padding_mode = PadMode::constant;
  /// Default: PyTorch's, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = in / groups * kd * kh * kw.
  Initializer weight_init = {};
  Initializer bias_init = {};
  DType dtype = float32;
};

/// PyTorch's F.conv3d: x [N, C, D, H, W], w [out, C / groups, kd, kh, kw],
/// bias [out] optional -> [N, out, OD, OH, OW].
Tensor conv3d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv3dOptions& options = {});

/// PyTorch's Conv3d: variables "weight" [out, in / groups, kd, kh, kw] and "bias" [out].
class Conv3d : public Module {
 public:
  Conv3d(int64_t in_channels, int64_t out_channels, std::vector<int64_t> kernel, Conv3dOptions options = {});
  Conv3d(int64_t in_channels, int64_t out_channels, int64_t kernel, Conv3dOptions options = {})
      : Conv3d(in_channels, out_channels, std::vector<int64_t>{kernel}, std::move(options)) {}
  std::string type_name() const override { return "Conv3d"; }
  std::string describe() const override;
  Tensor weight() const { return weight_; }
  Tensor bias() const { return bias_; }

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  int64_t in_, out_;
  std::vector<int64_t> kernel_;  // 3 values
  Conv3dOptions options_;
  Tensor weight_, bias_;
};

struct ConvTranspose3dOptions {
  std::vector<int64_t> stride = {1};          ///< 1 value or 3 (d, h, w)
  std::vector<int64_t> padding = {0};         ///< 1 or 3 values, removed from both sides of the output
  std::vector<int64_t> output_padding = {0};  ///< 1 or 3 values, added to one side; each below its stride or dilation
  int64_t groups = 1;
  std::vector<int64_t> dilation = {1};  ///< 1 or 3 values
  bool bias = true;
  /// Default: PyTorch's, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = out / groups * kd * kh * kw.
  Initializer weight_init = {};
  Initializer bias_init = {};
  DType dtype = float32;
};

/// PyTorch's F.conv_transpose3d: x [N, C, D, H, W], w [C, out / groups, kd,
/// kh, kw], bias [out] optional -> [N, out, OD, OH, OW], each output size
/// (in - 1) stride - 2 padding + dilation (k - 1) + output_padding + 1. Per
/// kernel depth tap one conv_transpose2d of every depth slice, placed at its
/// depths (spread by the stride, offset by the tap) and summed.
Tensor conv_transpose3d(const Tensor& x, const Tensor& w, const Tensor& bias,
                        const ConvTranspose3dOptions& options = {});

/// PyTorch's ConvTranspose3d: variables "weight" [in, out / groups, kd, kh, kw] and "bias" [out].
class ConvTranspose3d : public Module {
 public:
  ConvTranspose3d(int64_t in_channels, int64_t out_channels, std::vector<int64_t> kernel,
                  ConvTranspose3dOptions options = {});
  ConvTranspose3d(int64_t in_channels, int64_t out_channels, int64_t kernel, ConvTranspose3dOptions options = {})
      : ConvTranspose3d(in_channels, out_channels, std::vector<int64_t>{kernel}, std::move(options)) {}
  std::string type_name() const override { return "ConvTranspose3d"; }
  std::string describe() const override;
  Tensor weight() const { return weight_; }
  Tensor bias() const { return bias_; }

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  int64_t in_, out_;
  std::vector<int64_t> kernel_;  // 3 values
  ConvTranspose3dOptions options_;
  Tensor weight_, bias_;
};

struct Pool3dOptions {
  std::vector<int64_t> stride = {};    ///< empty: the kernel size
  std::vector<int64_t> padding = {0};  ///< 1 or 3 values, at most half the kernel
  bool count_include_pad = true;       ///< avg_pool3d only
  bool ceil_mode = false;              ///< as Pool2dOptions'
};

/// PyTorch's F.max_pool3d and F.avg_pool3d over [N, C, D, H, W]; kernel 1 or 3 values.
Tensor max_pool3d(const Tensor& x, std::vector<int64_t> kernel, const Pool3dOptions& options = {});
Tensor avg_pool3d(const Tensor& x, std::vector<int64_t> kernel, const Pool3dOptions& options = {});
/// PyTorch's adaptive pooling to output_size (1 or 3 values) over [N, C, D, H, W].
Tensor adaptive_avg_pool3d(const Tensor& x, std::vector<int64_t> output_size);
Tensor adaptive_max_pool3d(const Tensor& x, std::vector<int64_t> output_size);

/// MaxPool3d and AvgPool3d (the type says which).
class Pool3d : public Module {
 public:
  Pool3d(bool max, std::vector<int64_t> kernel, Pool3dOptions options);
  std::string type_name() const override { return max_ ? "MaxPool3d" : "AvgPool3d"; }
  std::string describe() const override;

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  bool max_;
  std::vector<int64_t> kernel_;
  Pool3dOptions options_;
};

struct MaxPool3d : Pool3d {
  explicit MaxPool3d(std::vector<int64_t> kernel, Pool3dOptions options = {})
      : Pool3d(true, std::move(kernel), options) {}
  explicit MaxPool3d(int64_t kernel, Pool3dOptions options = {}) : MaxPool3d(std::vector<int64_t>{kernel}, options) {}
};

struct AvgPool3d : Pool3d {
  explicit AvgPool3d(std::vector<int64_t> kernel, Pool3dOptions options = {})
      : Pool3d(false, std::move(kernel), options) {}
  explicit AvgPool3d(int64_t kernel, Pool3dOptions options = {}) : AvgPool3d(std::vector<int64_t>{kernel}, options) {}
};

/// AdaptiveAvgPool3d and AdaptiveMaxPool3d.
class AdaptivePool3d : public Module {
 public:
  AdaptivePool3d(bool max, std::vector<int64_t> output_size);
  std::string type_name() const override { return max_ ? "AdaptiveMaxPool3d" : "AdaptiveAvgPool3d"; }
  std::string describe() const override;

 protected:
  Tensor forward(const Tensor& x) override;

 private:
  bool max_;
  std::vector<int64_t> output_size_;
};

struct AdaptiveAvgPool3d : AdaptivePool3d {
  explicit AdaptiveAvgPool3d(std::vector<int64_t> output_size) : AdaptivePool3d(false, std::move(output_size)) {}
};
struct AdaptiveMaxPool3d : AdaptivePool3d {
  explicit AdaptiveMaxPool3d(std::vector<int64_t> output_size) : AdaptivePool3d(true, std::move(output_size)) {}
};

/// PyTorch's BatchNorm3d: statistics over N, D, H, W per channel (see BatchNorm).
class BatchNorm3d : public BatchNorm {
 public:
  explicit BatchNorm3d(int64_t features, NormOptions options = {});
  std::string type_name() const override { return "BatchNorm3d"; }
  std::string describe() const override;

 protected:
  Tensor forward(const Tensor& x) override;
};

/// PyTorch's InstanceNorm3d: each channel of each sample normalized over D, H and W.
struct InstanceNorm3d : InstanceNorm2d {
  explicit InstanceNorm3d(int64_t channels, double eps = 1e-5, bool affine = false)
      : InstanceNorm2d(channels, eps, affine, 5) {}
};

}  // namespace loom::nn
