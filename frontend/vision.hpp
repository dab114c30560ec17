#pragma once
/// Image layers beyond convolution and pooling, PyTorch's names and rules:
/// ChannelShuffle, Unfold and Fold (im2col and its adjoint), LocalResponseNorm
/// and power-average pooling (LPPool1d, LPPool2d). Each is a composition of
/// graph ops (slices, pads, pooling), so gradients, CUDA and ONNX export come
/// with them.

#include <cstdint>
#include <string>
#include <vector>

#include "frontend/conv.hpp"

namespace loom::nn {

/// [N, C, ...] with its channels regrouped: [N, g, C/g, ...] read as
/// [N, C/g, g, ...] (ShuffleNet's shuffle; PyTorch's ChannelShuffle). C known.
Tensor channel_shuffle(const Tensor& x, int64_t groups);

struct ChannelShuffle : Lambda {
  explicit ChannelShuffle(int64_t groups);
  std::string describe() const override { return "ChannelShuffle(groups=" + std::to_string(groups_) + ")"; }
  int64_t groups_;
};

/// Unfold's and Fold's block geometry: 1 or 2 values (h, w) each, as PyTorch's.
struct UnfoldOptions {
  std::vector<int64_t> dilation = {1};
  std::vector<int64_t> padding = {0};  ///< zeros on both sides of each axis
  std::vector<int64_t> stride = {1};
};

/// PyTorch's F.unfold (im2col): the kernel-sized blocks of [N, C, H, W]
/// (C, H, W known; zero-padded) as the columns of [N, C kh kw, L], L blocks
/// in row-major order; a row is (c, i, j), the channel slowest. One strided
/// slice per kernel tap, so values are copied exactly.
Tensor unfold(const Tensor& x, std::vector<int64_t> kernel, const UnfoldOptions& options = {});

/// PyTorch's F.fold (col2im), unfold's adjoint: the L columns of
/// [N, C kh kw, L] added back into [N, C, H, W] (output_size {H, W}) at their
/// blocks, where overlapping blocks sum; the padding is cut off.
Tensor fold(const Tensor& x, std::vector<int64_t> output_size, std::vector<int64_t> kernel,
            const UnfoldOptions& options = {});

class Unfold : public Module {
 public:
  explicit Unfold(std::vector<int64_t> kernel, UnfoldOptions options = {});
  std::string type_name() const override { return "Unfold"; }
  std::string describe() const override;

 protected:
  Tensor forward(const Tensor& x) override { return unfold(x, kernel_, options_); }

 private:
  std::vector<int64_t> kernel_;
  UnfoldOptions options_;
};

class Fold : public Module {
 public:
  Fold(std::vector<int64_t> output_size, std::vector<int64_t> kernel, UnfoldOptions options = {});
  std::string type_name() const override { return "Fold"; }
  std::string describe() const override;

 protected:
  Tensor forward(const Tensor& x) override { return fold(x, output_size_, kernel_, options_); }

 private:
  std::vector<int64_t> output_size_, kernel_;
  UnfoldOptions options_;
};

/// PyTorch's local response normalization (AlexNet's) of [N, C, ...] (3 or
/// more dims, all but N known): x / (k + alpha * mean of x^2 over the `size`
/// channels around each, zeros past the ends)^beta; the window reaches size/2
/// channels back and (size - 1)/2 forward.
Tensor local_response_norm(const Tensor& x, int64_t size, double alpha = 1e-4, double beta = 0.75, double k = 1.0);

class LocalResponseNorm : public Module {
 public:
  explicit LocalResponseNorm(int64_t size, double alpha = 1e-4, double beta = 0.75, double k = 1.0);
  std::string type_name() const override { return "LocalResponseNorm"; }
  std::string describe() const override;

 protected:
  Tensor forward(const Tensor& x) override { return local_response_norm(x, size_, alpha_, beta_, k_); }

 private:
  int64_t size_;
  double alpha_, beta_, k_;
};

/// Power-average pooling (PyTorch's LPPool2d): (sum of x^p over each window)^(1/p),
/// computed as PyTorch does, (avg_pool2d(x^p) * kh kw)^(1/p), so a ceil_mode
/// window cut by the input's end is scaled to the full kernel. p finite and
/// positive (p = 1 is sum pooling; large p nears max pooling); no padding.
Tensor lp_pool2d(const Tensor& x, double p, std::vector<int64_t> kernel, std::vector<int64_t> stride = {},
                 bool ceil_mode = false);
/// The same over [N, C, L] (PyTorch's LPPool1d); stride 0: the kernel.
Tensor lp_pool1d(const Tensor& x, double p, int64_t kernel, int64_t stride = 0, bool ceil_mode = false);

class LPPool2d : public Module {
 public:
  LPPool2d(double p, std::vector<int64_t> kernel, std::vector<int64_t> stride = {}, bool ceil_mode = false);
  std::string type_name() const override { return "LPPool2d"; }
  std::string describe() const override;

 protected:
  Tensor forward(const Tensor& x) override { return lp_pool2d(x, p_, kernel_, stride_, ceil_mode_); }

 private:
  double p_;
  std::vector<int64_t> kernel_, stride_;
  bool ceil_mode_;
};

class LPPool1d : public Module {
 public:
  LPPool1d(double p, int64_t kernel, int64_t stride = 0, bool ceil_mode = false);
  std::string type_name() const override { return "LPPool1d"; }
  std::string describe() const override;

 protected:
  Tensor forward(const Tensor& x) override { return lp_pool1d(x, p_, kernel_, stride_, ceil_mode_); }

 private:
  double p_;
  int64_t kernel_, stride_;
  bool ceil_mode_;
};

}  // namespace loom::nn
