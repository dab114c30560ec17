// Shape ops. reshape, permute, broadcast, expand_dims/squeeze, slice and split
// are views: the planner gives them no memory and no kernel (a reshape of a
// non-compact layout copies its input first). concat, pad, dilate, gather,
// one_hot and the gradient helpers slice_grad/gather_grad have kernels.

#include <algorithm>
#include <numeric>

#include "ops/common.hpp"
#include "ops/ops.hpp"

namespace loom {

using detail::fits;
using detail::for_each_index;
using detail::rand_array;
using detail::set_at;
using V = std::vector<int64_t>;

namespace {

constexpr int64_t kMaxSplitParts = 1 << 16;  // one output each: a bound on the node's size

/// The sizes along the split axis of length `dim` (-1: known when run) that a
/// split's `sizes` or `parts` attribute gives.
V split_sizes(const Attrs& a, int64_t dim) {
  if (!a.has("parts")) return a.ints("sizes");
  const int64_t parts = a.i("parts");
  return V(size_t(parts), dim < 0 ? -1 : dim / parts);
}

Graph& G(const Tensor& t) { return t.graph(); }

std::vector<Slice> slices_of(const Attrs& a) {
  const V &st = a.ints("starts"), &sp = a.ints("stops"), &sk = a.ints("steps");
  LOOM_CHECK(st.size() == sp.size() && sp.size() == sk.size(), "slice: starts ", attr_str(st), ", stops ",
             attr_str(sp), " and steps ", attr_str(sk), " must have the same length");
  std::vector<Slice> r;
  for (size_t i = 0; i < st.size(); ++i) r.push_back({st[i], sp[i], sk[i]});
  return r;
}

const AttrSchema kSliceAttrs = {attr::required("starts", AttrKind::integers), attr::required("stops", AttrKind::integers),
                                attr::required("steps", AttrKind::integers)};

Attrs slice_attrs(const std::vector<Slice>& s) {
  V st, sp, sk;
  for (const Slice& x : s) st.push_back(x.start), sp.push_back(x.stop), sk.push_back(x.step);
  return {{"starts", st}, {"stops", sp}, {"steps", sk}};
}

/// Shape after slicing; dynamic dims stay dynamic.
Shape sliced_shape(const InferContext& c, const Shape& in, const std::vector<Slice>& s) {
  c.check(s.size() <= in.size(), s.size(), " slices for a ", in.size(), "-d tensor ", S(in));
  Shape out = in;
  for (size_t i = 0; i < s.size(); ++i) {
    c.check(s[i].step != 0, "slice step cannot be zero (axis ", i, ")");
    if (in[i] < 0) continue;
    Layout l = layout_slice(Layout::compact({in[i]}), {s[i]});
    out[i] = l.shape[0];
  }
  return out;
}

OpDef view_op(const char* name, int nin) {
  OpDef d;
  d.name = name;
  d.min_inputs = d.max_inputs = nin;
  return d;
}

NDArray ref_copy_view(const NDArray& v) {
  // Reference materialization by explicit indexing (independent of the copy kernel).
  NDArray out = NDArray::empty(v.shape(), v.dtype());
  for_each_index(v.shape(), [&](const std::vector<int64_t>& i) { set_at(out, i, v.at(i)); });
  return out;
}

const bool registered = [] {
  {
    OpDef d = view_op("reshape", 1);
    d.attrs = {attr::required("shape", AttrKind::integers)};
    d.infer = [](const InferContext& c) {
      Shape to = c.attrs.ints("shape");
      const Shape& from = c.in[0].shape;
      if (is_static(from)) {
        try {
          to = resolve_reshape(from, to, "reshape");
        } catch (const Error&) {
          c.fail("cannot reshape ", S(from), " to ", S(c.attrs.ints("shape")));
        }
      }
      return std::vector<TensorType>{{c.in[0].dtype, to}};
    };
    d.view = [](const Layout& in, const Attrs&, size_t, std::span<const Shape> outs) { return layout_reshape(in, outs[0]); };
    d.grad = [](const GradContext& c) { return std::vector<Tensor>{reshape_like(c.dout(0), c.inputs[0])}; };
    d.reference = [](std::span<const NDArray> in, const Attrs& a) {
      NDArray x = ref_copy_view(in[0]);
      return std::vector<NDArray>{x.view(a.ints("shape"))};
    };
    d.examples = [](uint64_t seed) {
      return std::vector<OpExample>{{"2x6 to 3x4", {rand_array({2, 6}, -1, 1, seed)}, {{"shape", V{3, 4}}}},
                                    {"infer", {rand_array({2, 3, 4}, -1, 1, seed)}, {{"shape", V{-1, 4}}}}};
    };
    register_op(std::move(d));
  }
  {
    OpDef d = view_op("reshape_like", 2);
    d.attrs = AttrSchema::none();
    d.shape_only_inputs = {1};
    d.infer = [](const InferContext& c) {
      const Shape &a = c.in[0].shape, &b = c.in[1].shape;
      if (is_static(a) && is_static(b))
        c.check(numel(a) == numel(b), "cannot reshape ", S(a), " to ", S(b));
      return std::vector<TensorType>{{c.in[0].dtype, b}};
    };
    d.view = [](const Layout& in, const Attrs&, size_t, std::span<const Shape> outs) { return layout_reshape(in, outs[0]); };
    d.grad = [](const GradContext& c) { return std::vector<Tensor>{reshape_like(c.dout(0), c.inputs[0]), Tensor()}; };
    d.reference = [](std::span<const NDArray> in, const Attrs&) {
      return std::vector<NDArray>{ref_copy_view(in[0]).view(in[1].shape())};
    };
    d.examples = [](uint64_t seed) {
      return std::vector<OpExample>{{"6 to 2x3", {rand_array({6}, -1, 1, seed), rand_array({2, 3}, 0, 1, seed)}, {}, {0}}};
    };
    register_op(std::move(d));
  }
  {
    OpDef d = view_op("permute", 1);
    d.attrs = {attr::axes()};
    d.infer = [](const InferContext& c) {
      Layout l;
      try {
        l = layout_permute(Layout::compact(Shape(c.in[0].shape.size(), 1)), c.attrs.ints("axes"), "permute");
      } catch (const Error& e) {
        c.fail("bad axes ", attr_str(c.attrs.ints("axes")), " for shape ", S(c.in[0].shape));
      }
      Shape s;
      for (int64_t a : c.attrs.ints("axes")) s.push_back(c.in[0].shape[size_t(a < 0 ? a + int64_t(c.in[0].shape.size()) : a)]);
      return std::vector<TensorType>{{c.in[0].dtype, s}};
    };
    d.view = [](const Layout& in, const Attrs& a, size_t, std::span<const Shape>) {
      return std::optional<Layout>(layout_permute(in, a.ints("axes")));
    };
    d.grad = [](const GradContext& c) {
      const V& ax = c.attrs.ints("axes");
      V inv(ax.size());
      for (size_t i = 0; i < ax.size(); ++i) inv[size_t(ax[i] < 0 ? ax[i] + int64_t(ax.size()) : ax[i])] = int64_t(i);
      return std::vector<Tensor>{permute(c.dout(0), inv)};
    };
    d.reference = [](std::span<const NDArray> in, const Attrs& a) {
      const NDArray& x = in[0];
      const V& ax = a.ints("axes");
      Shape s;
      for (int64_t v : ax) s.push_back(x.shape()[size_t(v)]);
      NDArray out = NDArray::empty(s, x.dtype());
      for_each_index(s, [&](const std::vector<int64_t>& o) {
        std::vector<int64_t> i(o.size());
        for (size_t k = 0; k < ax.size(); ++k) i[size_t(ax[k])] = o[k];
        set_at(out, o, x.at(i));
      });
      return std::vector<NDArray>{out};
    };
    d.examples = [](uint64_t seed) {
      return std::vector<OpExample>{{"2-d", {rand_array({3, 4}, -1, 1, seed)}, {{"axes", V{1, 0}}}},
                                    {"3-d", {rand_array({2, 3, 4}, -1, 1, seed)}, {{"axes", V{2, 0, 1}}}}};
    };
    register_op(std::move(d));
  }
  for (bool like : {false, true}) {
    OpDef d = view_op(like ? "broadcast_like" : "broadcast_to", like ? 2 : 1);
    d.attrs = like ? AttrSchema::none() : AttrSchema{attr::required("shape", AttrKind::integers)};
    if (like) d.shape_only_inputs = {1};
    d.infer = [like](const InferContext& c) {
      const Shape& from = c.in[0].shape;
      Shape to = like ? c.in[1].shape : Shape(c.attrs.ints("shape"));
      if (!like) {  // -1 keeps the input's dim there, as PyTorch's expand
        const size_t lead = to.size() - std::min(to.size(), from.size());
        for (size_t i = 0; i < to.size(); ++i) {
          c.check(to[i] >= -1, "shape ", S(to), ": a dim must be >= 0, or -1 to keep the input's");
          c.check(to[i] != -1 || i >= lead, "shape ", S(to), ": -1 keeps an input dim, but dim ", i,
                  " is a new leading one (input ", S(from), ")");
          if (to[i] == -1) to[i] = from[i - lead];
        }
      }
      bool ok = from.size() <= to.size();
      for (size_t i = 0; ok && i < from.size(); ++i) {
        int64_t a = from[i], b = to[to.size() - from.size() + i];
        ok = a == b || a == 1 || a < 0 || b < 0;
      }
      c.check(ok, "cannot broadcast ", S(from), " to ", S(to));
      return std::vector<TensorType>{{c.in[0].dtype, to}};
    };
    d.view = [](const Layout& in, const Attrs&, size_t, std::span<const Shape> outs) {
      return std::optional<Layout>(layout_broadcast(in, outs[0]));
    };
    d.grad = [like](const GradContext& c) {
      std::vector<Tensor> r{c.dout(0)};  // gradients() sums it back to the input's shape
      if (like) r.emplace_back();
      return r;
    };
    d.reference = [like](std::span<const NDArray> in, const Attrs& a) {
      Shape to = like ? in[1].shape() : Shape(a.ints("shape"));
      const size_t lead = to.size() - in[0].shape().size();
      for (size_t i = lead; i < to.size(); ++i)
        if (to[i] == -1) to[i] = in[0].shape()[i - lead];
      return std::vector<NDArray>{detail::ref_elementwise(std::span(in.data(), 1), in[0].dtype(),
                                                          [](const std::vector<double>& v) { return v[0]; })
                                      .broadcast_to(to)
                                      .clone()};
    };
    d.examples = [like](uint64_t seed) {
      NDArray x = rand_array({3, 1}, -1, 1, seed);
      if (like) return std::vector<OpExample>{{"3x1 to 2x3x4", {x, rand_array({2, 3, 4}, 0, 1, seed)}, {}, {0}}};
      return std::vector<OpExample>{{"3x1 to 2x3x4", {x}, {{"shape", V{2, 3, 4}}}},
                                    {"row", {rand_array({4}, -1, 1, seed)}, {{"shape", V{3, 4}}}},
                                    {"-1 keeps a dim", {x}, {{"shape", V{2, -1, 4}}}}};
    };
    register_op(std::move(d));
  }
  for (bool expand : {true, false}) {
    OpDef d = view_op(expand ? "expand_dims" : "squeeze", 1);
    AttrSpec axes = attr::axes();
    axes.inserted = expand;  // expand_dims: positions in the output
    d.attrs = {axes};
    d.infer = [expand](const InferContext& c) {
      Shape s = c.in[0].shape;
      V axes = c.attrs.ints("axes");
      if (expand) {
        int64_t nd = int64_t(s.size() + axes.size());
        auto ax = detail::normalize_axes(axes, nd, c);
        for (int64_t a : ax) s.insert(s.begin() + a, 1);
      } else {
        auto ax = detail::normalize_axes(axes, int64_t(s.size()), c);
        for (size_t k = ax.size(); k-- > 0;) {
          c.check(s[size_t(ax[k])] == 1 || s[size_t(ax[k])] < 0, "axis ", ax[k], " of ", S(c.in[0].shape),
                  " is not 1");
          s.erase(s.begin() + ax[k]);
        }
      }
      return std::vector<TensorType>{{c.in[0].dtype, s}};
    };
    d.view = [](const Layout& in, const Attrs&, size_t, std::span<const Shape> outs) { return layout_reshape(in, outs[0]); };
    d.grad = [](const GradContext& c) { return std::vector<Tensor>{reshape_like(c.dout(0), c.inputs[0])}; };
    d.reference = [expand](std::span<const NDArray> in, const Attrs& a) {
      Shape s = in[0].shape();
      V ax = a.ints("axes");
      std::sort(ax.begin(), ax.end());
      if (expand)
        for (int64_t v : ax) s.insert(s.begin() + v, 1);
      else
        for (size_t k = ax.size(); k-- > 0;) s.erase(s.begin() + ax[k]);
      return std::vector<NDArray>{ref_copy_view(in[0]).view(s)};
    };
    d.examples = [expand](uint64_t seed) {
      if (expand) return std::vector<OpExample>{{"axes 0,2", {rand_array({3, 4}, -1, 1, seed)}, {{"axes", V{0, 2}}}}};
      return std::vector<OpExample>{{"axes 1", {rand_array({3, 1, 4}, -1, 1, seed)}, {{"axes", V{1}}}}};
    };
    register_op(std::move(d));
  }
  {
    OpDef d = view_op("slice", 1);
    d.attrs = kSliceAttrs;
    d.infer = [](const InferContext& c) {
      return std::vector<TensorType>{{c.in[0].dtype, sliced_shape(c, c.in[0].shape, slices_of(c.attrs))}};
    };
    d.view = [](const Layout& in, const Attrs& a, size_t, std::span<const Shape>) {
      return std::optional<Layout>(layout_slice(in, slices_of(a)));
    };
    d.grad = [](const GradContext& c) {
      return std::vector<Tensor>{G(c.inputs[0]).add1("slice_grad", {c.dout(0), c.inputs[0]}, c.attrs)};
    };
    d.reference = [](std::span<const NDArray> in, const Attrs& a) {
      // Explicit python-slice index arithmetic, independent of layout_slice.
      const NDArray& x = in[0];
      auto sl = slices_of(a);
      sl.resize(size_t(x.ndim()));
      std::vector<std::vector<int64_t>> picks(size_t(x.ndim()));
      Shape s;
      for (size_t d = 0; d < sl.size(); ++d) {
        int64_t n = x.shape()[d];
        int64_t st = sl[d].step;
        int64_t b = sl[d].start == Slice::kNone ? (st > 0 ? 0 : n - 1) : (sl[d].start < 0 ? sl[d].start + n : sl[d].start);
        int64_t e = sl[d].stop == Slice::kNone ? (st > 0 ? n : -1) : (sl[d].stop < 0 ? sl[d].stop + n : sl[d].stop);
        for (int64_t i = b; st > 0 ? i < e : i > e; i += st)
          if (i >= 0 && i < n) picks[d].push_back(i);
        s.push_back(int64_t(picks[d].size()));
      }
      NDArray out = NDArray::empty(s, x.dtype());
      for_each_index(s, [&](const std::vector<int64_t>& o) {
        std::vector<int64_t> i(o.size());
        for (size_t k = 0; k < o.size(); ++k) i[k] = picks[k][size_t(o[k])];
        set_at(out, o, x.at(i));
      });
      return std::vector<NDArray>{out};
    };
    d.examples = [](uint64_t seed) {
      NDArray x = rand_array({5, 6}, -1, 1, seed);
      auto N = Slice::kNone;
      return std::vector<OpExample>{
          {"rows 1:4, cols ::2", {x}, slice_attrs({{1, 4, 1}, {N, N, 2}})},
          {"flip", {x}, slice_attrs({{N, N, -1}, {N, N, -1}})},
          {"negative", {x}, slice_attrs({{-2, N, 1}, {4, 0, -2}})}};
    };
    register_op(std::move(d));
  }
  {
    // Zeros shaped like input 1 with dy written at the slice: the gradient of slice.
    OpDef d;
    d.name = "slice_grad";
    d.min_inputs = d.max_inputs = 2;
    d.attrs = kSliceAttrs;
    d.shape_only_inputs = {1};
    d.infer = [](const InferContext& c) {
      // dy must have the shape of the slice it is the gradient of.
      const Shape want = sliced_shape(c, c.in[1].shape, slices_of(c.attrs));
      c.check(fits(c.in[0].shape, want), "gradient ", S(c.in[0].shape), " does not match the slice's shape ", S(want));
      return std::vector<TensorType>{{c.in[0].dtype, c.in[1].shape}};
    };
    d.grad = [](const GradContext& c) {
      return std::vector<Tensor>{G(c.inputs[0]).add1("slice", {c.dout(0)}, c.attrs), Tensor()};
    };
    d.reference = [](std::span<const NDArray> in, const Attrs& a) {
      NDArray out = NDArray::zeros(in[1].shape(), in[0].dtype());
      NDArray v = out.slice(slices_of(a));
      for_each_index(v.shape(), [&](const std::vector<int64_t>& i) { set_at(v, i, in[0].at(i)); });
      return std::vector<NDArray>{out};
    };
    d.examples = [](uint64_t seed) {
      auto N = Slice::kNone;
      return std::vector<OpExample>{{"rows 1:4 step 2", {rand_array({2, 6}, -1, 1, seed), rand_array({5, 6}, 0, 1, seed)},
                                     slice_attrs({{1, 4, 2}, {N, N, 1}}), {0}}};
    };
    register_op(std::move(d));
  }
  {
    OpDef d;
    d.name = "concat";
    d.min_inputs = 1;
    d.max_inputs = -1;
    d.attrs = {attr::axis()};
    d.infer = [](const InferContext& c) {
      const Shape& s0 = c.in[0].shape;
      int64_t nd = int64_t(s0.size());
      int64_t ax = c.attrs.i("axis");
      c.check(nd > 0 && ax >= -nd && ax < nd, "axis ", ax, " out of range for ", S(s0));
      if (ax < 0) ax += nd;
      Shape out = s0;
      for (size_t k = 1; k < c.in.size(); ++k) {
        const Shape& s = c.in[k].shape;
        c.check(c.in[k].dtype == c.in[0].dtype, "dtypes differ: ", dtype_name(c.in[0].dtype), " vs ",
                dtype_name(c.in[k].dtype));
        c.check(s.size() == s0.size(), "input ", k, " has shape ", S(s), ", expected rank ", s0.size());
        for (int64_t d = 0; d < nd; ++d)
          if (d != ax)
            c.check(s[size_t(d)] == s0[size_t(d)] || s[size_t(d)] < 0 || s0[size_t(d)] < 0, "input ", k, " has shape ",
                    S(s), ", incompatible with ", S(s0), " outside axis ", ax);
        out[size_t(ax)] = (out[size_t(ax)] < 0 || s[size_t(ax)] < 0) ? -1 : c.add(out[size_t(ax)], s[size_t(ax)]);
      }
      return std::vector<TensorType>{{c.in[0].dtype, out}};
    };
    d.grad = [](const GradContext& c) {
      std::vector<Tensor> likes(c.inputs.begin(), c.inputs.end());
      std::vector<Tensor> in{c.dout(0)};
      in.insert(in.end(), likes.begin(), likes.end());
      return G(c.inputs[0]).add("split", in, {{"axis", c.attrs.i("axis")}});
    };
    d.reference = [](std::span<const NDArray> in, const Attrs& a) {
      int64_t ax = a.i("axis");
      if (ax < 0) ax += in[0].ndim();
      Shape s = in[0].shape();
      s[size_t(ax)] = 0;
      for (const NDArray& x : in) s[size_t(ax)] += x.shape()[size_t(ax)];
      NDArray out = NDArray::empty(s, in[0].dtype());
      int64_t off = 0;
      for (const NDArray& x : in) {
        for_each_index(x.shape(), [&](const std::vector<int64_t>& i) {
          auto o = i;
          o[size_t(ax)] += off;
          set_at(out, o, x.at(i));
        });
        off += x.shape()[size_t(ax)];
      }
      return std::vector<NDArray>{out};
    };
    d.examples = [](uint64_t seed) {
      return std::vector<OpExample>{
          {"axis 0", {rand_array({2, 3}, -1, 1, seed), rand_array({1, 3}, -1, 1, seed + 1)}, {{"axis", int64_t(0)}}},
          {"axis -1, three", {rand_array({2, 1}, -1, 1, seed), rand_array({2, 2}, -1, 1, seed + 1), rand_array({2, 3}, -1, 1, seed + 2)},
           {{"axis", int64_t(-1)}}}};
    };
    register_op(std::move(d));
  }
  {
    // split: pieces along "axis" sized by attribute "sizes", or by the shapes of
    // inputs 1.. (shape-only; used by concat's gradient, works with dynamic dims).
    OpDef d;
    d.name = "split";
    d.min_inputs = 1;
    d.max_inputs = -1;
    // sizes, or `parts` equal ones (of a dim known only when run), or none: inputs 1.. give them.
    d.attrs = {attr::axis(), attr::optional("sizes", AttrKind::integers), attr::optional("parts", AttrKind::integer)};
    for (int i = 1; i < 64; ++i) d.shape_only_inputs.push_back(i);
    d.infer = [](const InferContext& c) {
      const Shape& s = c.in[0].shape;
      int64_t nd = int64_t(s.size());
      int64_t ax = c.attrs.i("axis");
      c.check(nd > 0 && ax >= -nd && ax < nd, "axis ", ax, " out of range for ", S(s));
      if (ax < 0) ax += nd;
      V sizes;
      if (c.in.size() > 1) {
        for (size_t k = 1; k < c.in.size(); ++k) {
          c.check(c.in[k].shape.size() == s.size(), "input ", k, " has shape ", S(c.in[k].shape), ", expected rank ",
                  s.size());
          sizes.push_back(c.in[k].shape[size_t(ax)]);
        }
      } else if (c.attrs.has("parts")) {
        const int64_t parts = c.attrs.i("parts"), n = s[size_t(ax)];
        c.check(parts > 0 && parts <= kMaxSplitParts, "parts must be in [1, ", kMaxSplitParts, "], got ", parts);
        c.check(n < 0 || n % parts == 0, "dim ", ax, " of ", S(s), " does not split into ", parts, " equal parts");
        sizes = split_sizes(c.attrs, n);
      } else {
        c.check(c.attrs.has("sizes"), "needs sizes, parts, or inputs giving the sizes");
        sizes = c.attrs.ints("sizes");
        for (int64_t z : sizes) c.check(z >= 0, "sizes ", attr_str(sizes), " must be >= 0");
      }
      int64_t total = 0;
      bool dynamic = s[size_t(ax)] < 0;
      for (int64_t z : sizes) {
        if (z < 0) dynamic = true;
        else c.check(!__builtin_add_overflow(total, z, &total), "sizes ", attr_str(sizes), " overflow");
      }
      c.check(dynamic || total == s[size_t(ax)], "sizes ", attr_str(sizes), " do not add up to dim ", ax, " of ", S(s));
      std::vector<TensorType> out;
      for (int64_t z : sizes) {
        Shape o = s;
        o[size_t(ax)] = z;
        out.push_back({c.in[0].dtype, o});
      }
      return out;
    };
    d.view = [](const Layout& in, const Attrs& a, size_t index, std::span<const Shape> outs) {
      int64_t ax = a.i("axis");
      if (ax < 0) ax += int64_t(in.shape.size());
      int64_t start = 0;
      for (size_t j = 0; j < index; ++j) start += outs[j][size_t(ax)];
      Layout l = in;
      l.offset += start * in.strides[size_t(ax)];
      l.shape = outs[index];
      return std::optional<Layout>(l);
    };
    d.grad = [](const GradContext& c) {
      std::vector<Tensor> parts;
      for (size_t i = 0; i < c.outputs.size(); ++i) parts.push_back(c.dout(i));
      std::vector<Tensor> r{concat(parts, c.attrs.i("axis"))};
      r.resize(c.inputs.size());
      return r;
    };
    d.reference = [](std::span<const NDArray> in, const Attrs& a) {
      int64_t ax = a.i("axis");
      if (ax < 0) ax += in[0].ndim();
      V sizes;
      if (in.size() > 1)
        for (size_t k = 1; k < in.size(); ++k) sizes.push_back(in[k].shape()[size_t(ax)]);
      else
        sizes = split_sizes(a, in[0].shape()[size_t(ax)]);
      std::vector<NDArray> out;
      int64_t off = 0;
      for (int64_t z : sizes) {
        Shape s = in[0].shape();
        s[size_t(ax)] = z;
        NDArray o = NDArray::empty(s, in[0].dtype());
        for_each_index(s, [&](const std::vector<int64_t>& i) {
          auto j = i;
          j[size_t(ax)] += off;
          set_at(o, i, in[0].at(j));
        });
        out.push_back(o);
        off += z;
      }
      return out;
    };
    d.examples = [](uint64_t seed) {
      return std::vector<OpExample>{
          {"sizes 1,3", {rand_array({4, 2}, -1, 1, seed)}, {{"axis", int64_t(0)}, {"sizes", V{1, 3}}}},
          {"3 parts", {rand_array({2, 6}, -1, 1, seed)}, {{"axis", int64_t(1)}, {"parts", int64_t(3)}}},
          {"like",
           {rand_array({2, 5}, -1, 1, seed), rand_array({2, 2}, 0, 1, seed), rand_array({2, 3}, 0, 1, seed)},
           {{"axis", int64_t(1)}},
           {0}}};
    };
    register_op(std::move(d));
  }
  {
    OpDef d;
    d.name = "pad";
    d.min_inputs = d.max_inputs = 1;
    d.attrs = {attr::required("pads", AttrKind::integers), attr::defaulted("value", 0.0)};
    d.infer = [](const InferContext& c) {
      const V& p = c.attrs.ints("pads");
      Shape s = c.in[0].shape;
      c.check(p.size() % 2 == 0 && p.size() / 2 <= s.size(), "pads ", attr_str(p), " must be (before, after) pairs for at most ",
              s.size(), " axes");
      for (size_t i = 0; i < p.size() / 2; ++i) {
        c.check(p[2 * i] >= 0 && p[2 * i + 1] >= 0, "negative padding ", attr_str(p));
        if (s[i] >= 0) s[i] = c.add(s[i], c.add(p[2 * i], p[2 * i + 1]));
      }
      return std::vector<TensorType>{{c.in[0].dtype, s}};
    };
    d.grad = [](const GradContext& c) {
      const V& p = c.attrs.ints("pads");
      std::vector<Slice> sl;
      for (size_t i = 0; i < p.size() / 2; ++i) sl.push_back({p[2 * i], p[2 * i + 1] > 0 ? -p[2 * i + 1] : Slice::kNone, 1});
      return std::vector<Tensor>{slice(c.dout(0), sl)};
    };
    d.reference = [](std::span<const NDArray> in, const Attrs& a) {
      const V& p = a.ints("pads");
      Shape s = in[0].shape();
      for (size_t i = 0; i < p.size() / 2; ++i) s[i] += p[2 * i] + p[2 * i + 1];
      NDArray out = NDArray::full(s, a.f("value"), in[0].dtype());
      for_each_index(in[0].shape(), [&](const std::vector<int64_t>& i) {
        auto o = i;
        for (size_t k = 0; k < p.size() / 2; ++k) o[k] += p[2 * k];
        set_at(out, o, in[0].at(i));
      });
      return std::vector<NDArray>{out};
    };
    d.examples = [](uint64_t seed) {
      return std::vector<OpExample>{{"2-d", {rand_array({2, 3}, -1, 1, seed)}, {{"pads", V{1, 0, 2, 1}}, {"value", 0.5}}}};
    };
    register_op(std::move(d));
  }
  {
    OpDef d;
    d.name = "dilate";
    d.min_inputs = d.max_inputs = 1;
    d.attrs = {attr::axes(), attr::required("dilation", AttrKind::integer)};
    d.infer = [](const InferContext& c) {
      Shape s = c.in[0].shape;
      int64_t k = c.attrs.i("dilation");
      c.check(k >= 0, "dilation must be >= 0, got ", k);
      const V& axes = c.attrs.ints("axes");  // only those given: no axes, no dilation (as the kernels)
      if (!axes.empty())
        for (int64_t a : detail::normalize_axes(axes, int64_t(s.size()), c))
          if (s[size_t(a)] >= 0) s[size_t(a)] = c.mul(s[size_t(a)], c.add(k, 1));
      return std::vector<TensorType>{{c.in[0].dtype, s}};
    };
    d.grad = [](const GradContext& c) {
      return std::vector<Tensor>{undilate(c.dout(0), c.attrs.ints("axes"), c.attrs.i("dilation"))};
    };
    d.reference = [](std::span<const NDArray> in, const Attrs& a) {
      int64_t k = a.i("dilation");
      Shape s = in[0].shape();
      V ax = a.ints("axes");
      for (auto& v : ax) v = v < 0 ? v + in[0].ndim() : v;
      for (int64_t v : ax) s[size_t(v)] *= k + 1;
      NDArray out = NDArray::zeros(s, in[0].dtype());
      for_each_index(in[0].shape(), [&](const std::vector<int64_t>& i) {
        auto o = i;
        for (int64_t v : ax) o[size_t(v)] *= k + 1;
        set_at(out, o, in[0].at(i));
      });
      return std::vector<NDArray>{out};
    };
    d.examples = [](uint64_t seed) {
      return std::vector<OpExample>{{"axes 0,1 by 1", {rand_array({2, 3}, -1, 1, seed)}, {{"axes", V{0, 1}}, {"dilation", int64_t(1)}}},
                                    {"axis 1 by 2", {rand_array({2, 2}, -1, 1, seed)}, {{"axes", V{1}}, {"dilation", int64_t(2)}}}};
    };
    register_op(std::move(d));
  }
  {
    OpDef d;
    d.name = "gather";
    d.min_inputs = d.max_inputs = 2;
    d.attrs = AttrSchema::none();
    d.infer = [](const InferContext& c) {
      c.check(!c.in[0].shape.empty(), "table must have at least 1 dim, got ", S(c.in[0].shape));
      c.check(c.in[1].dtype == int32 || c.in[1].dtype == int64, "indices must be int32 or int64, got ",
              dtype_name(c.in[1].dtype));
      Shape s = c.in[1].shape;
      s.insert(s.end(), c.in[0].shape.begin() + 1, c.in[0].shape.end());
      return std::vector<TensorType>{{c.in[0].dtype, s}};
    };
    d.grad = [](const GradContext& c) {
      return std::vector<Tensor>{G(c.inputs[0]).add1("gather_grad", {c.dout(0), c.inputs[1], c.inputs[0]}), Tensor()};
    };
    d.reference = [](std::span<const NDArray> in, const Attrs&) {
      const NDArray &t = in[0], &idx = in[1];
      Shape s = idx.shape();
      s.insert(s.end(), t.shape().begin() + 1, t.shape().end());
      NDArray out = NDArray::empty(s, t.dtype());
      for_each_index(s, [&](const std::vector<int64_t>& o) {
        std::vector<int64_t> ii(o.begin(), o.begin() + idx.ndim());
        std::vector<int64_t> ti{int64_t(idx.at(ii))};
        ti.insert(ti.end(), o.begin() + idx.ndim(), o.end());
        set_at(out, o, t.at(ti));
      });
      return std::vector<NDArray>{out};
    };
    d.examples = [](uint64_t seed) {
      return std::vector<OpExample>{
          {"embedding", {rand_array({5, 3}, -1, 1, seed), NDArray::from<int64_t>({4, 0, 2, 2, 1, 4}, {2, 3})}, {}, {0}},
          {"int32 vector table", {rand_array({4}, -1, 1, seed), NDArray::from<int32_t>({3, 3, 0})}, {}, {0}}};
    };
    register_op(std::move(d));
  }
  {
    // Zeros shaped like input 2 with rows of dy added at the indices: the gradient of gather.
    OpDef d;
    d.name = "gather_grad";
    d.min_inputs = d.max_inputs = 3;
    d.attrs = AttrSchema::none();
    d.shape_only_inputs = {2};
    d.infer = [](const InferContext& c) {
      // dy must have gather's output shape for these indices and this table.
      const Shape& like = c.in[2].shape;
      c.check(is_floating(c.in[0].dtype), "gradient must be floating, got ", dtype_name(c.in[0].dtype));
      c.check(c.in[1].dtype == int32 || c.in[1].dtype == int64, "indices must be int32 or int64, got ",
              dtype_name(c.in[1].dtype));
      c.check(!like.empty(), "table must have at least 1 dim, got ", S(like));
      Shape want = c.in[1].shape;
      want.insert(want.end(), like.begin() + 1, like.end());
      c.check(fits(c.in[0].shape, want), "gradient ", S(c.in[0].shape), " does not match gather's output ", S(want));
      return std::vector<TensorType>{{c.in[0].dtype, like}};
    };
    d.grad = [](const GradContext& c) { return std::vector<Tensor>{gather(c.dout(0), c.inputs[1]), Tensor(), Tensor()}; };
    d.reference = [](std::span<const NDArray> in, const Attrs&) {
      const NDArray &dy = in[0], &idx = in[1];
      NDArray out = NDArray::zeros(in[2].shape(), dy.dtype());
      for_each_index(dy.shape(), [&](const std::vector<int64_t>& o) {
        std::vector<int64_t> ii(o.begin(), o.begin() + idx.ndim());
        std::vector<int64_t> ti{int64_t(idx.at(ii))};
        ti.insert(ti.end(), o.begin() + idx.ndim(), o.end());
        set_at(out, ti, out.at(ti) + dy.at(o));
      });
      return std::vector<NDArray>{out};
    };
    d.examples = [](uint64_t seed) {
      return std::vector<OpExample>{{"repeated rows", {rand_array({2, 3, 3}, -1, 1, seed), NDArray::from<int64_t>({4, 0, 2, 2, 1, 4}, {2, 3}),
                                                       rand_array({5, 3}, 0, 1, seed)},
                                     {}, {0}}};
    };
    register_op(std::move(d));
  }
  {
    OpDef d;
    d.name = "one_hot";
    d.attrs = {attr::required("depth", AttrKind::integer), attr::required("dtype", AttrKind::dtype)};
    d.min_inputs = d.max_inputs = 1;
    d.infer = [](const InferContext& c) {
      c.check(c.in[0].dtype == int32 || c.in[0].dtype == int64 || c.in[0].dtype == uint8,
              "indices must be an integer dtype, got ", dtype_name(c.in[0].dtype));
      int64_t depth = c.attrs.i("depth");
      c.check(depth > 0, "depth must be positive, got ", depth);
      Shape s = c.in[0].shape;
      s.push_back(depth);
      return std::vector<TensorType>{{c.attrs.get<DType>("dtype"), s}};
    };
    d.reference = [](std::span<const NDArray> in, const Attrs& a) {
      Shape s = in[0].shape();
      s.push_back(a.i("depth"));
      NDArray out = NDArray::zeros(s, a.get<DType>("dtype"));
      for_each_index(in[0].shape(), [&](const std::vector<int64_t>& i) {
        auto o = i;
        o.push_back(int64_t(in[0].at(i)));
        set_at(out, o, 1.0);
      });
      return std::vector<NDArray>{out};
    };
    d.examples = [](uint64_t) {
      return std::vector<OpExample>{
          {"labels", {NDArray::from<int64_t>({3, 0, 2, 1})}, {{"depth", int64_t(4)}, {"dtype", float32}}, {}, false}};
    };
    register_op(std::move(d));
  }
  {
    // The positions along one axis, known only when run for a dynamic dim (torch.arange(x.size(axis))).
    OpDef d;
    d.name = "arange_like";
    d.attrs = {attr::required("axis", AttrKind::integer)};
    d.min_inputs = d.max_inputs = 1;
    d.shape_only_inputs = {0};
    d.infer = [](const InferContext& c) {
      const int64_t axis = c.attrs.i("axis"), rank = int64_t(c.in[0].shape.size());
      c.check(axis >= 0 && axis < rank, "axis ", axis, " out of range for ", S(c.in[0].shape));
      return std::vector<TensorType>{{int64, {c.in[0].shape[size_t(axis)]}}};
    };
    d.reference = [](std::span<const NDArray> in, const Attrs& a) {
      std::vector<int64_t> v(size_t(in[0].shape()[size_t(a.i("axis"))]));
      std::iota(v.begin(), v.end(), 0);
      return std::vector<NDArray>{NDArray::from<int64_t>(v, {int64_t(v.size())})};
    };
    d.examples = [](uint64_t seed) {
      return std::vector<OpExample>{
          {"axis 1 of [2, 5]", {rand_array({2, 5}, -1, 1, seed)}, {{"axis", int64_t(1)}}, {}, false},
          {"an empty axis", {rand_array({0, 3}, -1, 1, seed)}, {{"axis", int64_t(0)}}, {}, false}};
    };
    d.doc = "0, 1, ..., n - 1 (int64) for n = x.shape[axis], x read for its shape only: positions along a dynamic axis";
    register_op(std::move(d));
  }
  return true;
}();

}  // namespace

Tensor reshape(const Tensor& x, const Shape& shape) { return G(x).add1("reshape", {x}, {{"shape", shape}}); }
Tensor reshape_like(const Tensor& x, const Tensor& like) {
  if (x.shape() == like.shape() && is_static(x.shape())) return x;
  return G(x).add1("reshape_like", {x, like});
}
Tensor permute(const Tensor& x, const std::vector<int64_t>& axes) {
  // A permute of a permute is one permute, and none when they cancel: a
  // gradient flowing back through a transpose (nn::Linear's weight) then keeps
  // the layout its producer wrote, and its reader needs no copy.
  const int64_t n = x.ndim();
  V norm(axes);
  for (int64_t& a : norm) a = a < 0 ? a + n : a;
  V sorted(norm);
  std::sort(sorted.begin(), sorted.end());
  V identity_axes(static_cast<size_t>(n));
  std::iota(identity_axes.begin(), identity_axes.end(), 0);
  if (x.op() == "permute" && sorted == identity_axes) {
    const V& inner = x.node().attrs.ints("axes");
    V composed(norm.size());
    for (size_t k = 0; k < norm.size(); ++k) {
      int64_t a = inner[size_t(norm[k])];
      composed[k] = a < 0 ? a + n : a;
    }
    const Edge src = x.node().inputs[0];
    Tensor base(&x.graph(), src.node, src.index);
    return composed == identity_axes ? base : permute(base, composed);
  }
  return G(x).add1("permute", {x}, {{"axes", axes}});
}
Tensor transpose(const Tensor& x) {
  LOOM_CHECK(x.ndim() >= 2, "transpose of '", x.name(), "': needs at least 2 dims, got ", S(x.shape()));
  return transpose(x, -2, -1);
}
Tensor transpose(const Tensor& x, int64_t a, int64_t b) {
  V axes(size_t(x.ndim()));
  std::iota(axes.begin(), axes.end(), 0);
  int ia = normalize_axis(a, x.ndim(), "transpose"), ib = normalize_axis(b, x.ndim(), "transpose");
  std::swap(axes[size_t(ia)], axes[size_t(ib)]);
  return permute(x, axes);
}
Tensor broadcast_to(const Tensor& x, const Shape& shape) {
  return G(x).add1("broadcast_to", {x}, {{"shape", shape}});
}
Tensor broadcast_like(const Tensor& x, const Tensor& like) {
  if (x.shape() == like.shape() && is_static(x.shape())) return x;
  return G(x).add1("broadcast_like", {x, like});
}
Tensor expand_dims(const Tensor& x, const std::vector<int64_t>& axes) {
  return G(x).add1("expand_dims", {x}, {{"axes", axes}});
}
Tensor squeeze(const Tensor& x, const std::vector<int64_t>& axes) {
  if (!axes.empty()) return G(x).add1("squeeze", {x}, {{"axes", axes}});
  std::vector<int64_t> ones;  // the op's empty axes would mean all of them
  for (int64_t d = 0; d < x.ndim(); ++d) {
    const int64_t n = x.shape()[size_t(d)];
    LOOM_CHECK(n >= 0, "squeeze: dim ", d, " of ", S(x.shape()), " of '", x.name(),
               "' is unknown until run, so whether it is 1 is too: name the axes to squeeze");
    if (n == 1) ones.push_back(d);
  }
  return ones.empty() ? x : G(x).add1("squeeze", {x}, {{"axes", ones}});
}
Tensor slice(const Tensor& x, const std::vector<Slice>& slices) { return G(x).add1("slice", {x}, slice_attrs(slices)); }
Tensor flip(const Tensor& x, const std::vector<int64_t>& axes) {
  std::vector<Slice> s(size_t(x.ndim()));
  for (int64_t a : axes) {
    Slice& axis = s[size_t(normalize_axis(a, x.ndim(), "flip"))];
    LOOM_CHECK(axis.step != -1, "flip: axis ", a, " is given twice in ", S(axes), " (PyTorch: dims has duplicates)");
    axis.step = -1;
  }
  return slice(x, s);
}
Tensor concat(const std::vector<Tensor>& xs, int64_t axis) {
  LOOM_CHECK(!xs.empty(), "concat: no inputs");
  return G(xs[0]).add1("concat", xs, {{"axis", axis}});
}
Tensor stack(const std::vector<Tensor>& xs, int64_t axis) {
  LOOM_CHECK(!xs.empty(), "stack: no inputs");
  int64_t nd = xs[0].ndim() + 1;
  int64_t ax = normalize_axis(axis, nd, "stack");
  std::vector<Tensor> parts;
  for (const Tensor& x : xs) parts.push_back(expand_dims(x, {ax}));
  return concat(parts, ax);
}
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t axis) {
  return G(x).add("split", {x}, {{"axis", axis}, {"sizes", sizes}});
}
std::vector<Tensor> split(const Tensor& x, int64_t parts, int64_t axis) {
  return G(x).add("split", {x}, {{"axis", axis}, {"parts", parts}});
}
Tensor pad(const Tensor& x, const std::vector<std::pair<int64_t, int64_t>>& pads, double value) {
  V p;
  for (auto [a, b] : pads) p.push_back(a), p.push_back(b);
  return G(x).add1("pad", {x}, {{"pads", p}, {"value", value}});
}
const char* pad_mode_name(PadMode mode) {
  switch (mode) {
    case PadMode::constant:
      return "constant";
    case PadMode::reflect:
      return "reflect";
    case PadMode::replicate:
      return "replicate";
    case PadMode::circular:
      return "circular";
  }
  return "?";
}

namespace {

/// x[start:stop] along `axis` (0 <= start <= stop <= its size).
Tensor along(const Tensor& x, int64_t axis, int64_t start, int64_t stop) {
  std::vector<Slice> s(size_t(axis) + 1);
  s.back() = Slice::range(start, stop);
  return slice(x, s);
}

/// One axis of pad() in a copying mode: [lo copies, x, hi copies] concatenated.
Tensor pad_axis(const Tensor& x, int64_t axis, int64_t lo, int64_t hi, PadMode mode) {
  const int64_t n = x.shape()[size_t(axis)];
  const char* m = pad_mode_name(mode);
  LOOM_CHECK(n >= 0, "pad: ", m, " padding needs axis ", axis, "'s size known, got shape ", S(x.shape()));
  LOOM_CHECK(mode != PadMode::reflect || (lo < n && hi < n), "pad: reflect padding (", lo, ", ", hi, ") of axis ", axis,
             " must be less than its size ", n, " (PyTorch's rule), shape ", S(x.shape()));
  LOOM_CHECK(mode != PadMode::circular || (lo <= n && hi <= n), "pad: circular padding (", lo, ", ", hi, ") of axis ",
             axis, " must be at most its size ", n, ", shape ", S(x.shape()));
  LOOM_CHECK(mode != PadMode::replicate || n > 0, "pad: replicate padding of axis ", axis,
             " needs at least one element, shape ", S(x.shape()));
  auto side = [&](int64_t count, bool before) {
    switch (mode) {
      case PadMode::reflect:
        return flip(before ? along(x, axis, 1, count + 1) : along(x, axis, n - 1 - count, n - 1), {axis});
      case PadMode::circular:
        return before ? along(x, axis, n - count, n) : along(x, axis, 0, count);
      default: {
        Shape s(size_t(x.ndim()), -1);
        s[size_t(axis)] = count;
        return broadcast_to(before ? along(x, axis, 0, 1) : along(x, axis, n - 1, n), s);
      }
    }
  };
  std::vector<Tensor> parts;
  if (lo > 0) parts.push_back(side(lo, true));
  parts.push_back(x);
  if (hi > 0) parts.push_back(side(hi, false));
  return parts.size() == 1 ? x : concat(parts, axis);
}

}  // namespace

Tensor pad(const Tensor& x, const std::vector<std::pair<int64_t, int64_t>>& pads, PadMode mode, double value) {
  if (mode == PadMode::constant) return pad(x, pads, value);
  LOOM_CHECK(x.valid(), "pad: the input is an empty Tensor handle");
  LOOM_CHECK(value == 0, "pad: ", pad_mode_name(mode), " padding takes no value (PyTorch's rule), got ", value);
  LOOM_CHECK(int64_t(pads.size()) <= x.ndim(), "pad: ", pads.size(), " pairs of pads for a ", x.ndim(), "-D input ",
             S(x.shape()));
  Tensor y = x;
  for (size_t a = 0; a < pads.size(); ++a) {
    const auto [lo, hi] = pads[a];
    LOOM_CHECK(lo >= 0 && hi >= 0, "pad: ", pad_mode_name(mode), " padding of axis ", a, " must be >= 0, got (", lo,
               ", ", hi, ")");
    if (lo > 0 || hi > 0) y = pad_axis(y, int64_t(a), lo, hi, mode);  // an unpadded axis may be dynamic
  }
  return y;
}

Tensor dilate(const Tensor& x, const std::vector<int64_t>& axes, int64_t dilation) {
  return G(x).add1("dilate", {x}, {{"axes", axes}, {"dilation", dilation}});
}
Tensor undilate(const Tensor& x, const std::vector<int64_t>& axes, int64_t dilation) {
  // (The step is dilation + 1: INT64_MAX would wrap to a negative step.)
  LOOM_CHECK(dilation >= 0 && dilation < INT64_MAX, "undilate: dilation must be in [0, 2^63 - 1), got ", dilation);
  std::vector<Slice> s(size_t(x.ndim()));
  for (int64_t a : axes) {
    Slice& axis = s[size_t(normalize_axis(a, x.ndim(), "undilate"))];
    LOOM_CHECK(axis.step == 1, "undilate: axis ", a, " is given twice in ", S(axes), " (as dilate refuses)");
    axis.step = dilation + 1;
  }
  return slice(x, s);
}
Tensor gather(const Tensor& table, const Tensor& indices) { return G(table).add1("gather", {table, indices}); }
Tensor one_hot(const Tensor& indices, int64_t depth, DType dtype) {
  return G(indices).add1("one_hot", {indices}, {{"depth", depth}, {"dtype", dtype}});
}

Tensor arange_like(const Tensor& x, int64_t axis) {
  const int64_t rank = x.ndim();
  LOOM_CHECK(axis >= -rank && axis < rank, "arange_like: axis ", axis, " out of range for ", S(x.shape()));
  return G(x).add1("arange_like", {x}, {{"axis", axis < 0 ? axis + rank : axis}});
}

}  // namespace loom
