// ONNX exporters of the shape ops (ops/shape.cpp).

#include <limits>
#include <numeric>

#include "frontend/onnx/exporter.hpp"

namespace loom::onnx {
namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max(), kMin = std::numeric_limits<int64_t>::min();

/// The shape of input i as an ONNX value (a Shape node).
std::string shape_of(ExportContext& c, size_t i) {
  std::string s = c.temp("shape");
  c.add("Shape", {c.input(i)}, {s});
  return s;
}

/// A constant target shape: needs every dim known but at most one (-1).
std::string static_shape(ExportContext& c, const Shape& s) {
  if (std::count(s.begin(), s.end(), -1) > 1) c.fail("a target shape ", S(s), " with two unknown dims");
  return c.ints(s, "shape");
}

void reshape(ExportContext& c) {
  const std::vector<int64_t>& to = c.attrs().ints("shape");
  auto& n = c.add("Reshape", {c.input(0), static_shape(c, to)}, {c.output(0)});
  // ONNX reads 0 as "copy the input's dim" unless allowzero; loom means a dim of 0.
  if (std::count(to.begin(), to.end(), 0) > 0) attr(n, "allowzero", int64_t(1));
}

/// Python slicing on each leading axis: ONNX Slice has the same clamping rules;
/// an omitted start or stop becomes the extreme value on the step's side.
void slice(ExportContext& c) {
  const auto &st = c.attrs().ints("starts"), &sp = c.attrs().ints("stops"), &sk = c.attrs().ints("steps");
  std::vector<int64_t> starts, ends, axes, steps;
  for (size_t i = 0; i < st.size(); ++i) {
    const bool forward = sk[i] > 0;
    if (st[i] == Slice::kNone && sp[i] == Slice::kNone && sk[i] == 1) continue;  // the whole axis
    starts.push_back(st[i] != Slice::kNone ? st[i] : forward ? 0 : kMax);
    ends.push_back(sp[i] != Slice::kNone ? sp[i] : forward ? kMax : kMin);
    axes.push_back(int64_t(i));
    steps.push_back(sk[i]);
  }
  if (axes.empty()) {
    c.add("Identity", {c.input(0)}, {c.output(0)});
    return;
  }
  c.add("Slice",
        {c.input(0), c.ints(starts, "starts"), c.ints(ends, "ends"), c.ints(axes, "axes"), c.ints(steps, "steps")},
        {c.output(0)});
}

void split(ExportContext& c) {
  const int64_t rank = int64_t(c.input_type(0).shape.size());
  int64_t axis = c.attrs().i("axis");
  axis = axis < 0 ? axis + rank : axis;
  std::vector<int64_t> sizes;
  std::vector<std::string> outs;
  bool known = true;
  for (size_t k = 0; k < c.num_outputs(); ++k) {
    known = known && c.output_type(k).shape[size_t(axis)] >= 0;
    sizes.push_back(c.output_type(k).shape[size_t(axis)]);
    outs.push_back(c.output(k));
  }
  if (!known && !c.attrs().has("parts")) c.fail("the split sizes must be known");
  // Equal parts of a dim known only when run: ONNX's Split without sizes splits equally.
  std::vector<std::string> in{c.input(0)};
  if (known) in.push_back(c.ints(sizes, "split"));
  attr(c.add("Split", in, outs), "axis", axis);
}

/// loom pads leading axes with {before, after} pairs; ONNX wants every axis' befores, then its afters.
void pad(ExportContext& c) {
  const auto& p = c.attrs().ints("pads");
  const size_t rank = c.input_type(0).shape.size();
  std::vector<int64_t> pads(2 * rank, 0);
  for (size_t i = 0; 2 * i + 1 < p.size(); ++i) pads[i] = p[2 * i], pads[rank + i] = p[2 * i + 1];
  const std::string value = c.scalar(c.attrs().f("value"), c.input_type(0).dtype, "value");
  attr(c.add("Pad", {c.input(0), c.ints(pads, "pads"), value}, {c.output(0)}), "mode", std::string("constant"));
}

/// `dilation` zeros after every element along each axis: unsqueeze a new axis
/// after it, pad that axis, and merge the two.
void dilate(ExportContext& c) {
  const int64_t k = c.attrs().i("dilation");
  const Shape& in = c.input_type(0).shape;
  std::vector<int64_t> axes = c.attrs().ints("axes");
  for (int64_t& a : axes) a = a < 0 ? a + int64_t(in.size()) : a;
  std::string x = c.input(0);
  Shape s = in;
  for (int64_t a : axes) {
    if (s[size_t(a)] < 0) c.fail("dilating a dynamic dim");
    std::string up = c.temp("unsqueezed"), padded = c.temp("padded"), merged = c.temp("dilated");
    c.add("Unsqueeze", {x, c.ints({a + 1}, "axis")}, {up});
    std::vector<int64_t> pads(2 * (s.size() + 1), 0);
    pads[s.size() + 1 + size_t(a) + 1] = k;
    c.add("Pad", {up, c.ints(pads, "pads")}, {padded});
    s[size_t(a)] *= k + 1;
    Shape target = s;
    for (size_t d = 0; d < target.size(); ++d)
      if (target[d] < 0) {
        if (int64_t(d) > a) c.fail("dilating axis ", a, " of ", S(in), " with a dynamic dim after it");
        target[d] = 0;  // ONNX: the input's dim at the same index (allowzero off)
      }
    c.add("Reshape", {padded, c.ints(target, "shape")}, {merged});
    x = merged;
  }
  c.add("Identity", {x}, {c.output(0)});
}

/// One-hot as a comparison with 0..depth-1, so that indices outside
/// [0, depth) give zeros, as in loom (ONNX's OneHot counts negative ones from the end).
void one_hot(ExportContext& c) {
  std::string idx = c.input(0);
  if (c.input_type(0).dtype != int64) {
    idx = c.temp("indices");
    attr(c.add("Cast", {c.input(0)}, {idx}), "to", int64_t(onnx_type(int64)));
  }
  std::string col = c.temp("column"), hit = c.temp("hit");
  c.add("Unsqueeze", {idx, c.ints({-1}, "axis")}, {col});
  std::vector<int64_t> range(size_t(c.attrs().i("depth")));
  std::iota(range.begin(), range.end(), 0);
  c.add("Equal", {col, c.ints(range, "classes")}, {hit});
  attr(c.add("Cast", {hit}, {c.output(0)}), "to", int64_t(onnx_type(c.output_type(0).dtype)));
}

/// gather_grad (gather's transpose; nn::EmbeddingBag's segment sum): dy's
/// rows added at their indices into zeros shaped like input 2, ScatterND with
/// reduction add.
void gather_grad(ExportContext& c) {
  std::string idx = c.input(1);
  if (c.input_type(1).dtype != int64) {
    idx = c.temp("indices");
    attr(c.add("Cast", {c.input(1)}, {idx}), "to", int64_t(onnx_type(int64)));
  }
  const std::string zeros = c.temp("zeros"), rows = c.temp("rows");
  attr(c.add("ConstantOfShape", {shape_of(c, 2)}, {zeros}), "value",
       tensor_proto(NDArray::zeros({1}, c.input_type(0).dtype), "value"));
  c.add("Unsqueeze", {idx, c.ints({-1}, "axis")}, {rows});
  attr(c.add("ScatterND", {zeros, rows, c.input(0)}, {c.output(0)}), "reduction", std::string("add"));
}

/// arange_like: Range(0, the axis's size from Shape, 1).
void arange_like(ExportContext& c) {
  const std::string size = c.temp("size");
  attr(c.add("Gather", {shape_of(c, 0), c.scalar(double(c.attrs().i("axis")), int64, "axis")}, {size}), "axis",
       int64_t(0));
  c.add("Range", {c.scalar(0, int64, "start"), size, c.scalar(1, int64, "delta")}, {c.output(0)});
}

/// broadcast_to: Expand broadcasts both ways, so a -1 (keep the input's dim) becomes 1.
void broadcast_to(ExportContext& c) {
  Shape s = c.attrs().ints("shape");
  for (int64_t& d : s) d = d == -1 ? 1 : d;
  c.add("Expand", {c.input(0), c.ints(s, "shape")}, {c.output(0)});
}

/// resample: Gather the taps along the axis ([.., out, K, ..]), weight them
/// (weights reshaped to [out, K, 1, ..]) and ReduceSum over K.
void resample(ExportContext& c) {
  const int64_t axis = c.attrs().i("axis"), rank = int64_t(c.input_type(0).shape.size());
  const Shape& table = c.input_type(1).shape;
  std::vector<int64_t> weight_shape{table[0], table[1]};
  weight_shape.resize(size_t(rank - axis + 1), 1);
  const std::string taps = c.temp("taps"), weights = c.temp("weights"), weighted = c.temp("weighted");
  attr(c.add("Gather", {c.input(0), c.input(1)}, {taps}), "axis", axis);
  c.add("Reshape", {c.input(2), c.ints(weight_shape, "weight_shape")}, {weights});
  c.add("Mul", {taps, weights}, {weighted});
  attr(c.add("ReduceSum", {weighted, c.ints({axis + 1}, "axes")}, {c.output(0)}), "keepdims", int64_t(0));
}

const bool registered = [] {
  register_exporter("reshape", reshape);
  register_exporter("reshape_like", [](ExportContext& c) { c.add("Reshape", {c.input(0), shape_of(c, 1)}, {c.output(0)}); });
  register_exporter("permute", [](ExportContext& c) {
    std::vector<int64_t> perm = c.attrs().ints("axes");
    for (int64_t& a : perm) a = a < 0 ? a + int64_t(perm.size()) : a;
    attr(c.add("Transpose", {c.input(0)}, {c.output(0)}), "perm", perm);
  });
  register_exporter("broadcast_to", broadcast_to);
  register_exporter("broadcast_like", [](ExportContext& c) { c.add("Expand", {c.input(0), shape_of(c, 1)}, {c.output(0)}); });
  register_exporter("expand_dims", [](ExportContext& c) {
    c.add("Unsqueeze", {c.input(0), c.ints(c.attrs().ints("axes"), "axes")}, {c.output(0)});
  });
  register_exporter("squeeze", [](ExportContext& c) {
    c.add("Squeeze", {c.input(0), c.ints(c.attrs().ints("axes"), "axes")}, {c.output(0)});
  });
  register_exporter("slice", slice);
  register_exporter("concat", [](ExportContext& c) {
    std::vector<std::string> in;
    for (size_t i = 0; i < c.num_inputs(); ++i) in.push_back(c.input(i));
    attr(c.add("Concat", in, {c.output(0)}), "axis", c.attrs().i("axis"));
  });
  register_exporter("split", split);
  register_exporter("pad", pad);
  register_exporter("dilate", dilate);
  register_exporter("gather", [](ExportContext& c) {
    attr(c.add("Gather", {c.input(0), c.input(1)}, {c.output(0)}), "axis", int64_t(0));
  });
  register_exporter("one_hot", one_hot);
  register_exporter("arange_like", arange_like);
  register_exporter("gather_grad", gather_grad);
  register_exporter("resample", resample);
  return true;
}();

}  // namespace
}  // namespace loom::onnx
