// Image layers composed of graph ops: channel shuffle, unfold/fold, local
// response normalization, power-average pooling.

#include "frontend/vision.hpp"

#include <cmath>
#include <sstream>

#include "ops/window.hpp"

namespace loom::nn {

namespace {

/// x's dims [N, C, H, W] with C, H, W known (N may not be).
void check_image(const char* who, const Tensor& x) {
  LOOM_CHECK(x.valid(), who, ": the input is an empty Tensor handle");
  const Shape& s = x.shape();
  LOOM_CHECK(s.size() == 4 && s[1] >= 0 && s[2] >= 0 && s[3] >= 0, who,
             ": expected [N, C, H, W] with C, H, W known, got ", S(s));
  LOOM_CHECK(is_floating(x.dtype()), who, ": expected a floating input, got ", dtype_name(x.dtype()));
}

/// Unfold's geometry, each attribute as (h, w).
struct Blocks {
  std::vector<int64_t> kernel, dilation, padding, stride;
  /// Blocks along axis a (0: h, 1: w) of an input of `size` (before padding).
  int64_t count(size_t a, int64_t size) const {
    return (size + 2 * padding[a] - dilation[a] * (kernel[a] - 1) - 1) / stride[a] + 1;
  }
};

Blocks blocks(const char* who, const std::vector<int64_t>& kernel, const UnfoldOptions& o) {
  Blocks b{detail::pair_attr(kernel, who, "kernel_size"), detail::pair_attr(o.dilation, who, "dilation"),
           detail::pair_attr(o.padding, who, "padding"), detail::pair_attr(o.stride, who, "stride")};
  for (size_t a = 0; a < 2; ++a)
    LOOM_CHECK(b.kernel[a] > 0 && b.dilation[a] > 0 && b.stride[a] > 0 && b.padding[a] >= 0 &&
                   b.kernel[a] <= (int64_t(1) << 20) && b.dilation[a] <= (int64_t(1) << 20) &&
                   b.padding[a] <= (int64_t(1) << 30),
               who,
               ": kernel_size, dilation and stride must be positive and padding >= 0 (at most 2^20, 2^30), got "
               "kernel_size ",
               attr_str(b.kernel), ", dilation ", attr_str(b.dilation), ", padding ", attr_str(b.padding), ", stride ",
               attr_str(b.stride));
  return b;
}

/// The blocks along both axes of a [.., H, W] image; an error when there are none.
std::array<int64_t, 2> block_counts(const char* who, const Blocks& b, int64_t H, int64_t W) {
  const std::array<int64_t, 2> n{b.count(0, H), b.count(1, W)};
  LOOM_CHECK(n[0] > 0 && n[1] > 0, who, ": kernel_size ", attr_str(b.kernel), " with dilation ", attr_str(b.dilation),
             " does not fit the padded input ", H + 2 * b.padding[0], " x ", W + 2 * b.padding[1]);
  return n;
}

}  // namespace

// ---------------------------------------------------------------- ChannelShuffle

Tensor channel_shuffle(const Tensor& x, int64_t groups) {
  LOOM_CHECK(x.valid(), "channel_shuffle: the input is an empty Tensor handle");
  const Shape& s = x.shape();
  LOOM_CHECK(s.size() >= 3 && s[1] >= 0, "channel_shuffle: expected [N, C, ...] with C known, got ", S(s));
  LOOM_CHECK(groups > 0 && s[1] % groups == 0, "channel_shuffle: the ", s[1], " channels must split into ", groups,
             " groups");
  Shape grouped{-1, groups, s[1] / groups}, back{-1, s[1]};
  for (size_t a = 2; a < s.size(); ++a) {
    LOOM_CHECK(s[a] >= 0, "channel_shuffle: the dims after the channels must be known, got ", S(s));
    grouped.push_back(s[a]), back.push_back(s[a]);
  }
  std::vector<int64_t> order(grouped.size());
  for (size_t a = 0; a < order.size(); ++a) order[a] = int64_t(a);
  std::swap(order[1], order[2]);
  return reshape(permute(reshape(x, grouped), order), back);
}

ChannelShuffle::ChannelShuffle(int64_t groups)
    : Lambda([groups](const Tensor& x) { return channel_shuffle(x, groups); }, "ChannelShuffle"), groups_(groups) {
  LOOM_CHECK(groups > 0, "ChannelShuffle: groups must be positive, got ", groups);
}

// ---------------------------------------------------------------- Unfold, Fold

Tensor unfold(const Tensor& x, std::vector<int64_t> kernel, const UnfoldOptions& options) {
  check_image("unfold", x);
  const Blocks b = blocks("unfold", kernel, options);
  const Shape& s = x.shape();
  const auto [bh, bw] = block_counts("unfold", b, s[2], s[3]);
  LOOM_CHECK(valid_shape({s[1], b.kernel[0] * b.kernel[1], bh, bw}, dtype_size(x.dtype())), "unfold: the columns of ",
             S(s), " are too large");
  const Tensor padded = pad(x, {b.padding[1], b.padding[1], b.padding[0], b.padding[0]});
  std::vector<Tensor> taps;  // [N, C, bh, bw] each, in (i, j) order
  for (int64_t i = 0; i < b.kernel[0]; ++i)
    for (int64_t j = 0; j < b.kernel[1]; ++j)
      taps.push_back(slice(padded, {Slice::all(), Slice::all(), detail::strided(i * b.dilation[0], bh, b.stride[0]),
                                    detail::strided(j * b.dilation[1], bw, b.stride[1])}));
  return reshape(stack(taps, 2), {-1, s[1] * b.kernel[0] * b.kernel[1], bh * bw});
}

Tensor fold(const Tensor& x, std::vector<int64_t> output_size, std::vector<int64_t> kernel,
            const UnfoldOptions& options) {
  LOOM_CHECK(x.valid(), "fold: the input is an empty Tensor handle");
  const Blocks b = blocks("fold", kernel, options);
  const std::vector<int64_t> out = detail::pair_attr(output_size, "fold", "output_size");
  LOOM_CHECK(out[0] > 0 && out[1] > 0 && valid_shape({out[0], out[1]}, 8), "fold: output_size must be positive, got ",
             attr_str(out));
  const auto [bh, bw] = block_counts("fold", b, out[0], out[1]);
  const Shape& s = x.shape();
  const int64_t taps = b.kernel[0] * b.kernel[1];
  LOOM_CHECK(s.size() == 3 && s[1] >= 0 && s[1] % taps == 0 && (s[2] == bh * bw), "fold: expected [N, C * ", taps, ", ",
             bh * bw, "] (kernel ", attr_str(b.kernel), ", ", bh, " x ", bw, " blocks of output ", attr_str(out),
             "), got ", S(s));
  LOOM_CHECK(is_floating(x.dtype()), "fold: expected a floating input, got ", dtype_name(x.dtype()));
  const int64_t C = s[1] / taps, H = out[0] + 2 * b.padding[0], W = out[1] + 2 * b.padding[1];
  const std::vector<Tensor> parts = split(reshape(x, {-1, C, taps, bh, bw}), taps, 2);
  Tensor sum;
  for (int64_t i = 0; i < b.kernel[0]; ++i)
    for (int64_t j = 0; j < b.kernel[1]; ++j) {
      // Block (i, j)'s values, spread by the stride and moved to their tap's offset in the padded image.
      Tensor t = reshape(parts[size_t(i * b.kernel[1] + j)], {-1, C, bh, bw});
      // Spread by the stride (dilate puts stride - 1 zeros after each value; the last ones are cut).
      if (b.stride[0] > 1)
        t = slice(dilate(t, {2}, b.stride[0] - 1),
                  {Slice::all(), Slice::all(), Slice::range(0, b.stride[0] * (bh - 1) + 1)});
      if (b.stride[1] > 1)
        t = slice(dilate(t, {3}, b.stride[1] - 1),
                  {Slice::all(), Slice::all(), Slice::all(), Slice::range(0, b.stride[1] * (bw - 1) + 1)});
      const int64_t top = i * b.dilation[0], left = j * b.dilation[1];
      t = pad(t, {left, W - left - t.shape()[3], top, H - top - t.shape()[2]});
      sum = sum.valid() ? sum + t : t;
    }
  return slice(sum, {Slice::all(), Slice::all(), Slice::range(b.padding[0], b.padding[0] + out[0]),
                     Slice::range(b.padding[1], b.padding[1] + out[1])});
}

namespace {

std::string blocks_describe(const std::vector<int64_t>& kernel, const UnfoldOptions& o) {
  std::ostringstream os;
  os << "kernel_size=" << ints_str(kernel) << ", dilation=" << ints_str(o.dilation)
     << ", padding=" << ints_str(o.padding) << ", stride=" << ints_str(o.stride);
  return os.str();
}

}  // namespace

Unfold::Unfold(std::vector<int64_t> kernel, UnfoldOptions options)
    : kernel_(std::move(kernel)), options_(std::move(options)) {
  blocks("Unfold", kernel_, options_);
}

std::string Unfold::describe() const { return "Unfold(" + blocks_describe(kernel_, options_) + ")"; }

Fold::Fold(std::vector<int64_t> output_size, std::vector<int64_t> kernel, UnfoldOptions options)
    : output_size_(detail::pair_attr(output_size, "Fold", "output_size")),
      kernel_(std::move(kernel)),
      options_(std::move(options)) {
  blocks("Fold", kernel_, options_);
}

std::string Fold::describe() const {
  return "Fold(output_size=" + ints_str(output_size_) + ", " + blocks_describe(kernel_, options_) + ")";
}

// ---------------------------------------------------------------- LocalResponseNorm

Tensor local_response_norm(const Tensor& x, int64_t size, double alpha, double beta, double k) {
  LOOM_CHECK(x.valid(), "local_response_norm: the input is an empty Tensor handle");
  const Shape& s = x.shape();
  LOOM_CHECK(size > 0 && size <= (int64_t(1) << 20), "local_response_norm: size must be in [1, 2^20], got ", size);
  LOOM_CHECK(std::isfinite(alpha) && std::isfinite(beta) && std::isfinite(k),
             "local_response_norm: alpha, beta and k must be finite");
  LOOM_CHECK(s.size() >= 3, "local_response_norm: expected [N, C, ...] (3 or more dims), got ", S(s));
  LOOM_CHECK(is_floating(x.dtype()), "local_response_norm: expected a floating input, got ", dtype_name(x.dtype()));
  int64_t rest = 1;
  for (size_t a = 1; a < s.size(); ++a) {
    LOOM_CHECK(s[a] >= 0, "local_response_norm: the dims after the batch must be known, got ", S(s));
    if (a > 1) rest *= s[a];
  }
  // x^2 as [N, 1, C, rest]: the channel window is a (size x 1) average pool, zeros counted, as PyTorch's.
  const Tensor squares = reshape(x * x, {-1, 1, s[1], rest});
  const Tensor window = avg_pool2d(
      squares,
      {.kernel = {size, 1}, .stride = {1, 1}, .padding = {size / 2, (size - 1) / 2, 0, 0}, .count_include_pad = true});
  return x / pow(reshape_like(window, x) * alpha + k, beta);
}

LocalResponseNorm::LocalResponseNorm(int64_t size, double alpha, double beta, double k)
    : size_(size), alpha_(alpha), beta_(beta), k_(k) {
  LOOM_CHECK(size > 0, "LocalResponseNorm: size must be positive, got ", size);
}

std::string LocalResponseNorm::describe() const {
  std::ostringstream os;
  os << "LocalResponseNorm(" << size_ << ", alpha=" << alpha_ << ", beta=" << beta_ << ", k=" << k_ << ")";
  return os.str();
}

// ---------------------------------------------------------------- LPPool

Tensor lp_pool2d(const Tensor& x, double p, std::vector<int64_t> kernel, std::vector<int64_t> stride, bool ceil_mode) {
  LOOM_CHECK(x.valid(), "lp_pool2d: the input is an empty Tensor handle");
  LOOM_CHECK(std::isfinite(p) && p > 0, "lp_pool2d: the norm's power p must be finite and positive, got ", p);
  const std::vector<int64_t> k = detail::pair_attr(kernel, "lp_pool2d", "kernel");
  const Tensor avg = avg_pool2d(pow(x, p), {.kernel = k, .stride = std::move(stride), .ceil_mode = ceil_mode});
  return pow(avg * double(k[0] * k[1]), 1.0 / p);
}

Tensor lp_pool1d(const Tensor& x, double p, int64_t kernel, int64_t stride, bool ceil_mode) {
  LOOM_CHECK(x.valid(), "lp_pool1d: the input is an empty Tensor handle");
  const Shape& s = x.shape();
  LOOM_CHECK(s.size() == 3, "lp_pool1d: expected [N, C, L], got ", S(s));
  LOOM_CHECK(kernel > 0 && stride >= 0, "lp_pool1d: kernel must be positive and stride >= 0, got ", kernel, ", ",
             stride);
  return squeeze(lp_pool2d(expand_dims(x, {2}), p, {1, kernel}, {1, stride ? stride : kernel}, ceil_mode), {2});
}

LPPool2d::LPPool2d(double p, std::vector<int64_t> kernel, std::vector<int64_t> stride, bool ceil_mode)
    : p_(p), kernel_(std::move(kernel)), stride_(std::move(stride)), ceil_mode_(ceil_mode) {
  LOOM_CHECK(std::isfinite(p) && p > 0, "LPPool2d: the norm's power p must be finite and positive, got ", p);
  detail::pair_attr(kernel_, "LPPool2d", "kernel");
}

std::string LPPool2d::describe() const {
  std::ostringstream os;
  os << "LPPool2d(norm_type=" << p_ << ", kernel_size=" << ints_str(kernel_)
     << ", stride=" << ints_str(stride_.empty() ? kernel_ : stride_) << (ceil_mode_ ? ", ceil_mode=true)" : ")");
  return os.str();
}

LPPool1d::LPPool1d(double p, int64_t kernel, int64_t stride, bool ceil_mode)
    : p_(p), kernel_(kernel), stride_(stride), ceil_mode_(ceil_mode) {
  LOOM_CHECK(std::isfinite(p) && p > 0, "LPPool1d: the norm's power p must be finite and positive, got ", p);
  LOOM_CHECK(kernel > 0 && stride >= 0, "LPPool1d: kernel must be positive and stride >= 0, got ", kernel, ", ",
             stride);
}

std::string LPPool1d::describe() const {
  std::ostringstream os;
  os << "LPPool1d(norm_type=" << p_ << ", kernel_size=" << kernel_ << ", stride=" << (stride_ ? stride_ : kernel_)
     << (ceil_mode_ ? ", ceil_mode=true)" : ")");
  return os.str();
}

}  // namespace loom::nn
