// Graph building: inference, names and scopes, build-time errors, operators,
// symbolic gradients (fan-in, broadcasting, stop_gradient, higher order), and
// the composite nn functions with numeric gradient checks.

#include "core/invoke.hpp"
#include "core/philox.hpp"
#include "ops/check.hpp"
#include "tests/util.hpp"

using namespace loom;
using test::contains;
using test::error_of;
using test::rand;

TEST_SUITE("ops/graph") {
  TEST_CASE("shapes and dtypes are inferred when nodes are added; -1 stays dynamic") {
    Graph g;
    Tensor x = g.placeholder("x", {-1, 784});
    Tensor w = g.variable("w", {784, 10}, [](const NDArray& a, uint64_t) { a.fill(0); });
    Tensor y = matmul(x, w) + 1.0;
    CHECK(y.shape() == Shape{-1, 10});
    CHECK(y.dtype() == float32);
    CHECK(sum(y, {1}).shape() == Shape{-1});
    CHECK(mean(y, {0}, true).shape() == Shape{1, 10});
    CHECK(reshape(x, {-1, 28, 28}).shape() == Shape{-1, 28, 28});
    CHECK(argmax(y, 1).dtype() == int64);
    CHECK((y > 0.0).dtype() == boolean);
    CHECK(transpose(y).shape() == Shape{10, -1});
    CHECK(concat({y, y}, 1).shape() == Shape{-1, 20});
    CHECK(stack({y, y}, 0).shape() == Shape{2, -1, 10});
    CHECK(one_hot(cast(argmax(y, 1), int32), 10).shape() == Shape{-1, 10});
    auto parts = split(w, {4, 780}, 0);
    CHECK(parts.size() == 2);
    CHECK(parts[1].shape() == Shape{780, 10});
  }

  TEST_CASE("attributes are checked against the op's schema when a node is added") {
    Graph g;
    Tensor x = g.placeholder("x", {3, 4});
    // Missing, unknown and mistyped attributes name op, node and attribute.
    CHECK(error_of([&] { g.add1("sum", {x}, {{"keepdims", true}}, "s"); }) == "sum 's': missing attribute 'axes' (axis list)");
    CHECK(contains(error_of([&] { g.add1("sum", {x}, {{"axes", std::vector<int64_t>{0}}, {"keep", true}}, "s"); }),
                   "sum 's': unknown attribute 'keep' (sum takes axes: axis list, keepdims: boolean = false)"));
    CHECK(error_of([&] { g.add1("sum", {x}, {{"axes", std::vector<int64_t>{0}}, {"keepdims", int64_t(1)}}, "s"); }) ==
          "sum 's': attribute 'keepdims' must be a boolean, got integer 1");
    CHECK(error_of([&] { g.add1("cast", {x}, {{"dtype", std::string("int32")}}, "c"); }) ==
          "cast 'c': attribute 'dtype' must be a dtype, got string int32");
    CHECK(contains(error_of([&] { g.add1("full", {x}, {{"value", std::string("1")}}); }), "attribute 'value' must be a real"));
    // An integer where a real is expected is converted; defaults are filled in.
    Tensor f = g.add1("full", {x}, {{"value", int64_t(2)}});
    CHECK(f.node().attrs.f("value") == 2.0);
    CHECK(sum(x, {0}).node().attrs.b("keepdims") == false);
    // Axes are resolved against the input's rank once, here: kernels see no negative axis.
    CHECK(sum(x, {-1}).node().attrs.ints("axes") == std::vector<int64_t>{1});
    CHECK(argmax(x, -1).node().attrs.i("axis") == 1);
    CHECK(concat({x, x}, -2).node().attrs.i("axis") == 0);
    CHECK(expand_dims(x, {-1}).shape() == Shape{3, 4, 1});
    CHECK(expand_dims(x, {-1}).node().attrs.ints("axes") == std::vector<int64_t>{2});
    CHECK(permute(x, {-1, 0}).node().attrs.ints("axes") == std::vector<int64_t>{1, 0});
    CHECK(error_of([&] { argmax(x, 2); }) == "argmax 'argmax': axis 2 out of range for a 2-d tensor (attribute 'axis')");
    CHECK(contains(error_of([&] { argmax(x, -3); }), "axis -3 out of range for a 2-d tensor"));
    CHECK(contains(error_of([&] { sum(x, {1, -1}); }), "sum 'sum': repeated axis in [1,-1] (attribute 'axes')"));
    // Every registered op declares its schema (an op without one fails the registry sweep).
    for (const OpDef* op : registered_ops()) CHECK_MESSAGE(op->attrs.declared(), op->name);
  }

  TEST_CASE("argmax and argmin with negative axes match the positive axis (issue 14, item 2)") {
    Graph g;
    Tensor a = g.placeholder("a", {3, 4}), b = g.placeholder("b", {2, 3, 4});
    NDArray av = rand({3, 4}, 3), bv = rand({2, 3, 4}, 4);
    Session s(g);
    Feeds f{{a, av}, {b, bv}};
    auto r = s.run({argmax(a, -1), argmax(a, 1), argmin(b, -1), argmin(b, 2), argmax(b, -2), argmax(b, 1)}, f);
    CHECK(test::identical(r[0], r[1]));
    CHECK(test::identical(r[2], r[3]));
    CHECK(test::identical(r[4], r[5]));
    CHECK(r[0].shape() == Shape{3});
    for (int64_t v : r[0].to_vector<int64_t>()) CHECK((v >= 0 && v < 4));
    // Eager calls resolve axes the same way.
    CHECK(test::identical(invoke("argmax", {bv}, {{"axis", int64_t(-1)}})[0], invoke("argmax", {bv}, {{"axis", int64_t(2)}})[0]));
  }

  TEST_CASE("names and scopes") {
    Graph g;
    Tensor x = g.placeholder("x", {2, 3});
    Tensor a, b, c;
    {
      auto s = g.scope("layer1");
      a = exp(x);
      b = exp(x);
      {
        auto t = g.scope("inner");
        c = relu(x);
      }
    }
    CHECK(a.name() == "layer1/exp");
    CHECK(b.name() == "layer1/exp_1");
    CHECK(c.name() == "layer1/inner/relu");
    CHECK(g.find("layer1/exp_1").is(b));
    CHECK_FALSE(g.find("nope").valid());
    CHECK(contains(error_of([&] { g.placeholder("x", {1}); }), "placeholder 'x': name already used"));
    CHECK(contains(error_of([&] { g.variable("v", {-1}, [](const NDArray&, uint64_t) {}); }), "must be fully known"));
  }

  TEST_CASE("build-time errors name the op, the node and the shapes") {
    Graph g;
    Tensor a = g.placeholder("a", {128, 256});
    Tensor b = g.placeholder("b", {512, 10});
    {
      auto s = g.scope("layer2");
      CHECK(error_of([&] { matmul(a, b); }) == "matmul 'layer2/matmul': inner dimensions differ: [128,256] x [512,10]");
    }
    Tensor c = g.placeholder("c", {3, 4}), d = g.placeholder("d", {2, 5});
    CHECK(error_of([&] { c + d; }) == "add 'add': cannot broadcast [3,4] with [2,5]");
    CHECK(contains(error_of([&] { reshape(c, {5, 3}); }), "reshape 'reshape': cannot reshape [3,4] to [5,3]"));
    Tensor i = g.placeholder("i", {3, 4}, int64);
    CHECK(contains(error_of([&] { c * i; }), "mul 'mul': dtypes differ: float32 vs int64"));
    CHECK(contains(error_of([&] { exp(i); }), "exp 'exp': dtype int64 not supported"));
    CHECK(contains(error_of([&] { sum(c, {2}); }), "sum 'sum': axis 2 out of range for a 2-d tensor"));
    CHECK(contains(error_of([&] { broadcast_to(c, {3, 5}); }), "cannot broadcast [3,4] to [3,5]"));
    CHECK(contains(error_of([&] { where(c, c, c); }), "condition must be bool"));
    CHECK(contains(error_of([&] { gather(c, c); }), "indices must be int32 or int64"));
    CHECK(contains(error_of([&] { concat({c, d}, 0); }), "incompatible"));
    CHECK(contains(error_of([&] { flip(c, {0, -2}); }), "flip: axis -2 is given twice in [0,-2]"));
    CHECK(contains(error_of([&] { undilate(c, {1}, INT64_MAX); }), "dilation must be in [0, 2^63 - 1)"));
    CHECK(contains(error_of([&] { with_dependencies({Tensor()}, c); }), "a control input is an empty Tensor handle"));
    Graph other;
    Tensor o = other.placeholder("o", {3, 4});
    CHECK(contains(error_of([&] { c + o; }), "belongs to another graph"));
  }

  TEST_CASE("floating scalars on either side take a floating tensor's dtype") {
    Graph g;
    Tensor x = g.placeholder("x", {3}, float64);
    Tensor y = 2.0 * x - 1.0 / (x + 1.0);
    CHECK(y.dtype() == float64);
    Session s(g);
    NDArray out = s.run1(y, {{x, NDArray::from<double>({0, 1, 3})}});
    CHECK(out.to_vector<double>() == std::vector<double>{-1, 1.5, 5.75});
    // Comparisons with a scalar the tensor's dtype cannot hold are made in float64, as PyTorch promotes them.
    Tensor i = g.placeholder("i", {4}, int64);
    auto r = s.run({i == 2.5, i<2.5, i >= 2.5, i != 2.5, i> 1e30, i == 2.0, i < NAN},
                   {{i, NDArray::from<int64_t>({1, 2, 3, -5})}});
    CHECK(r[0].to_vector<bool>() == std::vector<bool>{false, false, false, false});
    CHECK(r[1].to_vector<bool>() == std::vector<bool>{true, true, false, true});
    CHECK(r[2].to_vector<bool>() == std::vector<bool>{false, false, true, false});
    CHECK(r[3].to_vector<bool>() == std::vector<bool>{true, true, true, true});
    CHECK(r[4].to_vector<bool>() == std::vector<bool>{false, false, false, false});
    CHECK(r[5].to_vector<bool>() == std::vector<bool>{false, true, false, false});
    CHECK(r[6].to_vector<bool>() == std::vector<bool>{false, false, false, false});
  }

  TEST_CASE("arithmetic with a scalar types its result as PyTorch; / divides truly") {
    Graph g;
    Tensor i = g.placeholder("i", {3}, int64), b = g.placeholder("b", {3}, boolean);
    Tensor x = g.placeholder("x", {3}, float64);
    // An integral scalar keeps an integer tensor's dtype; a floating one makes it float32.
    const std::vector<Tensor> ys{i + 2, 3 * i, i - 1, i + 2.5, 0.5 * i, i / 2, 7 / i, i / i, trunc_divide(i, i + 1),
                                 b + 1, b * 0.5, x * 2, x / 4};
    const std::vector<DType> types{int64, int64,   int64,   float32, float32, float32, float32,
                                   float32, int64, int64, float32, float64, float64};
    for (size_t k = 0; k < ys.size(); ++k) {
      CAPTURE(k);
      CHECK(ys[k].dtype() == types[k]);
    }
    Session s(g);
    const auto r = s.run(ys, {{i, NDArray::from<int64_t>({1, 2, -3})},
                              {b, NDArray::from<bool>({true, false, true})},
                              {x, NDArray::from<double>({1, 2, 3})}});
    CHECK(r[0].to_vector<int64_t>() == std::vector<int64_t>{3, 4, -1});
    CHECK(r[3].to_vector<float>() == std::vector<float>{3.5f, 4.5f, -0.5f});
    CHECK(r[5].to_vector<float>() == std::vector<float>{0.5f, 1, -1.5f});
    CHECK(r[6].to_vector<float>() == std::vector<float>{7, 3.5f, -7.0f / 3});
    CHECK(r[8].to_vector<int64_t>() == std::vector<int64_t>{0, 0, 1});  // -3 / -2 toward zero
    CHECK(r[9].to_vector<int64_t>() == std::vector<int64_t>{2, 1, 2});
    CHECK(r[12].to_vector<double>() == std::vector<double>{0.25, 0.5, 0.75});
    // An integer the dtype cannot hold is refused (PyTorch: "cannot be converted ... without overflow").
    Tensor small = g.placeholder("small", {2}, int32);
    CHECK(error_of([&] { small + (int64_t(1) << 40); }) ==
          "add: the integer 1099511627776 does not fit the tensor's dtype int32 (cast the tensor)");
    CHECK(contains(error_of([&] { trunc_divide(x, x); }), "trunc_divide: expected integer operands, got float64"));
  }

  TEST_CASE("where with a scalar branch types its result as arithmetic does (PyTorch)") {
    Graph g;
    Tensor c = g.placeholder("c", {2}, boolean), i = g.placeholder("i", {2}, int64);
    Tensor u = g.placeholder("u", {2}, uint8), x = g.placeholder("x", {2}, float32);
    Tensor frac = where(c, i, 2.5), first = where(c, -1.5, u), same = where(c, i, 7), fx = where(c, x, 0);
    CHECK(frac.dtype() == float32);
    CHECK(first.dtype() == float32);
    CHECK(same.dtype() == int64);
    CHECK(fx.dtype() == float32);
    Session s(g);
    const auto r = s.run({frac, first, same}, {{c, NDArray::from<bool>({true, false})},
                                               {i, NDArray::from<int64_t>({1, 2})},
                                               {u, NDArray::from<uint8_t>({3, 4})}});
    CHECK(r[0].to_vector<float>() == std::vector<float>{1, 2.5f});  // was 2: the 2.5 truncated
    CHECK(r[1].to_vector<float>() == std::vector<float>{-1.5f, 4});
    CHECK(r[2].to_vector<int64_t>() == std::vector<int64_t>{1, 7});
    CHECK(error_of([&] { where(c, u, -1); }) ==
          "where: the integer -1 does not fit the tensor's dtype uint8 (cast the tensor)");
  }

  TEST_CASE("sum of integers and bools is int64, as PyTorch: a uint8 or int32 sum does not wrap") {
    Graph g;
    Tensor u = g.constant(NDArray::from<uint8_t>({200, 200}));
    Tensor i = g.constant(NDArray::from<int32_t>({2147483647, 1}));
    Tensor b = g.constant(NDArray::from<bool>({true, false, true}));
    const std::vector<Tensor> ys{sum(u), sum(i), sum(b)};
    for (const Tensor& y : ys) CHECK(y.dtype() == int64);
    Session s(g);
    const auto r = s.run(ys);
    CHECK(r[0].item() == 400);
    CHECK(r[1].item() == 2147483648.0);
    CHECK(r[2].item() == 2);
  }

  TEST_CASE("the gradient of max over a slice with a NaN is NaN, as PyTorch's amax") {
    Graph g;
    Tensor x = g.placeholder("x", {2, 2}, float64);
    Tensor dx = gradients(sum(max(x, {1})), {x})[0];
    Session s(g);
    const auto v = s.run({dx}, {{x, NDArray::from<double>({1, NAN, 3, 3}, {2, 2})}})[0].to_vector<double>();
    CHECK(std::isnan(v[0]));
    CHECK(std::isnan(v[1]));
    CHECK(v[2] == 0.5);  // a tie shares the gradient
    CHECK(v[3] == 0.5);
  }

  TEST_CASE("var, stddev and clamp as PyTorch's: values, gradients, edge cases") {
    Graph g;
    Tensor x = g.placeholder("x", {2, 4}, float64);
    Tensor i = g.placeholder("i", {3}, int64);
    const std::vector<Tensor> ys{var(x),
                                 var(x, {1}, 0),
                                 stddev(x, {-1}, 1, true),
                                 var(slice(x, {{}, Slice::range(0, 1)}), {1}),
                                 clamp(x, -1.5, 2.0),
                                 clamp(x, 3, 1),
                                 clamp(i, {}, 1),
                                 clamp(i, 0.5)};
    CHECK(ys[2].shape() == Shape{2, 1});
    CHECK(ys[6].dtype() == int64);
    CHECK(ys[7].dtype() == float32);
    Session s(g);
    const auto r = s.run(
        ys, {{x, NDArray::from<double>({1, 2, 3, 4, -2, NAN, 2, 5}, {2, 4})}, {i, NDArray::from<int64_t>({-1, 0, 3})}});
    // torch.var(torch.tensor([1., 2, 3, 4])) = 1.6667, unbiased=False: 1.25
    CHECK(std::isnan(r[0].item()));  // a NaN in x
    CHECK(r[1].at({0}) == 1.25);
    CHECK(r[2].at({0, 0}) == doctest::Approx(std::sqrt(5.0 / 3)).epsilon(1e-14));
    CHECK(std::isnan(r[3].at({0})));  // one value, correction 1: 0 / 0, as torch.var
    CHECK(r[4].to_vector<double>()[4] == -1.5);
    CHECK(std::isnan(r[4].to_vector<double>()[5]));  // NaN stays NaN
    CHECK(r[4].to_vector<double>()[7] == 2.0);
    CHECK(r[5].to_vector<double>()[0] == 1.0);  // lo > hi: hi
    CHECK(r[6].to_vector<int64_t>() == std::vector<int64_t>{-1, 0, 1});
    CHECK(r[7].to_vector<float>() == std::vector<float>{0.5f, 0.5f, 3});
    CHECK(contains(error_of([&] { var(i); }), "var: expected a floating tensor, got int64"));
    auto f = [](const std::vector<Tensor>& in) {
      return std::vector<Tensor>{var(in[0], {0}), stddev(in[0], {1}, 0), clamp(in[0], -0.5, 0.5)};
    };
    CheckResult c = check_gradient_fn(f, {test::rand({3, 5}, 11, float64, -1, 1)}, {0});
    CHECK_MESSAGE(c.ok, c.detail);
  }

  TEST_CASE("logical and, or, not of bool tensors, broadcasting") {
    Graph g;
    Tensor a = g.placeholder("a", {2, 2}, boolean), b = g.placeholder("b", {2}, boolean);
    Tensor i = g.placeholder("i", {2}, int64);
    const std::vector<Tensor> ys{a & b, a | b, ~a, logical_and(b, a)};
    CHECK(ys[0].shape() == Shape{2, 2});
    CHECK(ys[3].shape() == Shape{2, 2});
    Session s(g);
    const auto r = s.run(ys, {{a, NDArray::from<bool>({true, true, false, false}, {2, 2})},
                              {b, NDArray::from<bool>({true, false})}});
    CHECK(r[0].to_vector<bool>() == std::vector<bool>{true, false, false, false});
    CHECK(r[1].to_vector<bool>() == std::vector<bool>{true, true, true, false});
    CHECK(r[2].to_vector<bool>() == std::vector<bool>{false, false, true, true});
    CHECK(r[3].to_vector<bool>() == r[0].to_vector<bool>());
    CHECK(contains(error_of([&] { a & i; }), "logical_and: expected bool operands, got int64 'i'"));
  }

  TEST_CASE("dropout of an integer tensor is an error (it returned float32 silently)") {
    Graph g;
    CHECK(contains(error_of([&] { dropout(g.placeholder("ids", {8}, int64), 0.5); }),
                   "dropout: expected a floating tensor, got int64 'ids'"));
  }

  TEST_CASE("squeeze without axes drops the dims of size 1 (PyTorch's squeeze())") {
    Graph g;
    Tensor x = g.placeholder("x", {1, 3, 1}, float32), y = g.placeholder("y", {2, 3}, float32);
    CHECK(squeeze(x, {}).shape() == Shape{3});
    CHECK(squeeze(y, {}).is(y));
    CHECK(contains(error_of([&] { squeeze(g.placeholder("z", {-1, 1}), {}); }), "dim 0 of [?,1] of 'z' is unknown"));
    CHECK(contains(error_of([&] { squeeze(y, {0}); }), "axis 0 of [2,3] is not 1"));
    CHECK(contains(error_of([&] { undilate(y, {1, -1}, 1); }), "undilate: axis -1 is given twice"));
    Session s(g);
    CHECK(s.run({argmin(y)}, {{y, NDArray::from<float>({3, 1, 2, 0, 5, 0}, {2, 3})}})[0].item() == 3);
  }

  TEST_CASE("broadcast_to: -1 keeps the input's dim, also a dynamic one, as PyTorch's expand") {
    Graph g;
    Tensor x = g.placeholder("x", {-1, 1, 3}, float64);
    Tensor y = broadcast_to(x, {2, -1, 4, -1});
    CHECK(y.shape() == Shape{2, -1, 4, 3});
    Tensor dx = gradients(sum(y * y), {x})[0];
    Session s(g);
    const NDArray v = NDArray::from<double>({1, 2, 3, 4, 5, 6}, {2, 1, 3});
    const auto r = s.run({y, dx}, {{x, v}});
    CHECK(r[0].shape() == Shape{2, 2, 4, 3});
    CHECK(r[0].to_vector<double>() == v.broadcast_to({2, 2, 4, 3}).clone().to_vector<double>());
    CHECK(r[1].to_vector<double>() == std::vector<double>{16, 32, 48, 64, 80, 96});  // 2 x over 2 * 4 copies
    CHECK(contains(error_of([&] {
                     broadcast_to(x, {-1, -1, 1, 3});
                   }),
                   "-1 keeps an input dim, but dim 0 is a new leading one"));
    CHECK(contains(error_of([&] { broadcast_to(x, {2, -2, 4, 3}); }), "a dim must be >= 0, or -1"));
  }

  TEST_CASE("split into equal parts of a dynamic dim: sizes and divisibility checked when run") {
    Graph g;
    Tensor x = g.placeholder("x", {-1, 2}, float64);
    std::vector<Tensor> halves = split(x, 2, 0);
    REQUIRE(halves.size() == 2);
    CHECK(halves[0].shape() == Shape{-1, 2});
    Tensor dx = gradients(sum(halves[0]) + 3.0 * sum(halves[1]), {x})[0];
    Session s(g);
    const auto r = s.run({halves[0], halves[1], dx}, {{x, NDArray::from<double>({1, 2, 3, 4, 5, 6, 7, 8}, {4, 2})}});
    CHECK(r[0].to_vector<double>() == std::vector<double>{1, 2, 3, 4});
    CHECK(r[1].to_vector<double>() == std::vector<double>{5, 6, 7, 8});
    CHECK(r[2].to_vector<double>() == std::vector<double>{1, 1, 1, 1, 3, 3, 3, 3});
    CHECK(contains(error_of([&] {
                     s.run({halves[0]}, {{x, NDArray::zeros({3, 2}, float64)}});
                   }),
                   "dim 0 of [3,2] does not split into 2 equal parts"));
    CHECK(s.run({halves[1]}, {{x, NDArray::zeros({6, 2}, float64)}})[0].shape() == Shape{3, 2});  // usable after
    CHECK(contains(error_of([&] { split(g.placeholder("y", {5}), 2, 0); }), "dim 0 of [5] does not split into 2"));
    CHECK(contains(error_of([&] { split(x, 0, 0); }), "parts must be in [1, 65536], got 0"));
  }

  TEST_CASE("logsumexp is stable on extreme values") {
    Graph g;
    Tensor x = g.constant(NDArray::from<double>({1e10, 1e9, 1e8, -10, 1e-10, 1e9, 1e8, -10}, {2, 4}));
    Session s(g);
    auto v = s.run1(logsumexp(x, {0})).to_vector<double>();
    std::vector<double> want{1e10, 1e9, 1.00000001e8, -9.30685282};  // the expected values, to 9 digits
    for (size_t i = 0; i < 4; ++i) CHECK(v[i] == doctest::Approx(want[i]).epsilon(5e-9));
    CHECK(v[1] == doctest::Approx(1e9 + std::log(2.0)).epsilon(1e-15));
    // float32 as well: nothing overflows.
    Tensor y = g.constant(NDArray::from<float>({1000, 1000, -1000}));
    CHECK(s.run1(logsumexp(y)).item() == doctest::Approx(1000 + std::log(2.0)));
  }

  TEST_CASE("gradients: fan-in, broadcasting, stop_gradient, unreachable inputs") {
    Graph g;
    Tensor x = g.placeholder("x", {2, 3}, float64);
    Tensor b = g.placeholder("b", {3}, float64);
    Tensor u = g.placeholder("u", {3}, float64);
    Tensor y = sum((x + b) * (x + b) + stop_gradient(x) * b);
    auto gr = gradients(y, {x, b, u});
    REQUIRE(gr.size() == 3);
    CHECK(gr[1].shape() == Shape{3});
    auto none = gradients(y, {u}, {}, {.unreachable_as_zero = false});
    CHECK_FALSE(none[0].valid());
    Session s(g);
    NDArray xv = NDArray::from<double>({1, 2, 3, 4, 5, 6}, {2, 3}), bv = NDArray::from<double>({1, -1, 0.5});
    auto r = s.run(gr, {{x, xv}, {b, bv}, {u, NDArray::zeros({3}, float64)}});
    // dy/dx = 2(x+b) (the stop_gradient term contributes nothing)
    CHECK(r[0].to_vector<double>() == std::vector<double>{4, 2, 7, 10, 8, 13});
    // dy/db = sum over rows of 2(x+b) + sum of x
    CHECK(r[1].to_vector<double>() == std::vector<double>{14 + 5, 10 + 7, 20 + 9});
    CHECK(r[2].to_vector<double>() == std::vector<double>{0, 0, 0});
  }

  TEST_CASE("second-order gradients") {
    Graph g;
    Tensor x = g.placeholder("x", {}, float64), z = g.placeholder("z", {}, float64);
    Tensor y = x * x + x * z;
    auto d = gradients(y, {x, z});
    auto dd = gradients(d[0], {x, z});
    Session s(g);
    auto r = s.run({d[0], d[1], dd[0], dd[1]}, {{x, NDArray::scalar(6, float64)}, {z, NDArray::scalar(0, float64)}});
    CHECK(r[0].item() == 12);
    CHECK(r[1].item() == 6);
    CHECK(r[2].item() == 2);
    CHECK(r[3].item() == 1);
  }

  TEST_CASE("gradient of a gradient through tanh matches central differences") {
    auto f = [](const std::vector<Tensor>& xs) {
      Tensor y = sum(tanh(xs[0] * xs[0]));
      return std::vector<Tensor>{gradients(y, {xs[0]})[0]};
    };
    CheckResult r = check_gradient_fn(f, {rand({5}, 3, float64)}, {0});
    CHECK_MESSAGE(r.ok, r.detail);
  }

  TEST_CASE("composite functions pass numeric gradient checks") {
    using Fn = std::function<Tensor(const std::vector<Tensor>&)>;
    NDArray labels = NDArray::from<int64_t>({2, 0, 1, 2});
    std::vector<std::tuple<const char*, Fn, std::vector<NDArray>>> cases = {
        {"softmax", [](auto& x) { return softmax(x[0], 1); }, {rand({3, 4}, 1, float64, -3, 3)}},
        {"log_softmax", [](auto& x) { return log_softmax(x[0]); }, {rand({3, 4}, 2, float64, -3, 3)}},
        {"logsumexp", [](auto& x) { return logsumexp(x[0], {0, 2}); }, {rand({2, 3, 2}, 3, float64, -3, 3)}},
        {"cross entropy", [&](auto& x) { return softmax_cross_entropy(x[0], x[0].graph().constant(labels)); },
         {rand({4, 3}, 4, float64, -2, 2)}},
        {"flip", [](auto& x) { return flip(x[0], {0, 1}); }, {rand({3, 4}, 5, float64)}},
        {"stack", [](auto& x) { return stack({x[0], exp(x[0])}, 1); }, {rand({3, 2}, 6, float64)}},
        {"undilate", [](auto& x) { return undilate(x[0], {1}, 1); }, {rand({2, 6}, 7, float64)}},
        {"transpose", [](auto& x) { return transpose(x[0], 0, 2); }, {rand({2, 3, 4}, 8, float64)}},
        {"matmul vector", [](auto& x) { return matmul(x[0], x[1]); }, {rand({3, 4}, 9, float64), rand({4}, 10, float64)}},
        {"split equal", [](auto& x) { return split(x[0], 3, 1)[1] * 2.0; }, {rand({2, 6}, 11, float64)}},
        {"pow scalar", [](auto& x) { return pow(x[0], 3.0); }, {rand({4}, 12, float64, 0.5, 2)}},
        {"mean then broadcast", [](auto& x) { return x[0] - mean(x[0], {1}, true); }, {rand({3, 5}, 13, float64)}},
    };
    for (auto& c : cases) {  // not a structured binding: clang 14 cannot capture one in a lambda
      const char* name = std::get<0>(c);
      const Fn& fn = std::get<1>(c);
      const std::vector<NDArray>& inputs = std::get<2>(c);
      CAPTURE(name);
      std::vector<int> wrt;
      for (size_t i = 0; i < inputs.size(); ++i) wrt.push_back(int(i));
      CheckResult r = check_gradient_fn([&](const std::vector<Tensor>& xs) { return std::vector<Tensor>{fn(xs)}; }, inputs, wrt);
      CHECK_MESSAGE(r.ok, r.detail);
    }
  }

  TEST_CASE("softmax and cross entropy values") {
    Graph g;
    Tensor z = g.constant(NDArray::from<float>({1, 2, 3, 1000, 1000, 1000}, {2, 3}));
    Tensor y = g.constant(NDArray::from<int32_t>({2, 0}));
    Session s(g);
    auto r = s.run({softmax(z), softmax_cross_entropy(z, y)});
    auto p = r[0].to_vector<float>();
    double e1 = std::exp(1.0), e2 = std::exp(2.0), e3 = std::exp(3.0);
    CHECK(p[2] == doctest::Approx(e3 / (e1 + e2 + e3)));
    CHECK(p[4] == doctest::Approx(1.0 / 3));
    double want = (-(std::log(e3 / (e1 + e2 + e3))) + std::log(3.0)) / 2;
    CHECK(r[1].item() == doctest::Approx(want));
    CHECK(contains(error_of([&] { softmax_cross_entropy(z, z); }), "must be [N]"));
  }

  TEST_CASE("dropout: mask, scaling, gradient through the same mask; identity in eval") {
    Graph g;
    Tensor x = g.placeholder("x", {1000}, float64);
    Tensor y = dropout(x, 0.25);
    Tensor dx = gradients(sum(y), {x})[0];
    Session s(g, {.seed = 5});
    NDArray xv = NDArray::full({1000}, 2.0, float64);
    auto r = s.run({y, dx}, {{x, xv}});
    auto yv = r[0].to_vector<double>(), gv = r[1].to_vector<double>();
    int zeros = 0;
    for (size_t i = 0; i < yv.size(); ++i) {
      bool dropped = yv[i] == 0;
      zeros += dropped;
      CHECK((dropped ? yv[i] == 0 : yv[i] == doctest::Approx(2.0 / 0.75)));
      CHECK(gv[i] == doctest::Approx(dropped ? 0.0 : 1.0 / 0.75));
    }
    CHECK(zeros > 200);
    CHECK(zeros < 300);
    // A new run draws a new mask.
    auto r2 = s.run({y}, {{x, xv}});
    CHECK_FALSE(test::identical(r[0], r2[0]));
    CHECK(dropout(x, 0.5, false).is(x));
    CHECK(contains(error_of([&] { dropout(x, 1.5); }), "p must be in [0, 1], got 1.5"));
    CHECK(contains(error_of([&] { dropout(x, -0.1); }), "p must be in [0, 1], got -0.1"));
  }

  TEST_CASE("dropout with p = 1 drops everything, as PyTorch's: zeros and a zero gradient, no NaN") {
    Graph g;
    Tensor x = g.placeholder("x", {64}, float64);
    Tensor y = dropout(x, 1.0);
    Tensor dx = gradients(sum(y * x), {x})[0];
    Session s(g);
    auto r = s.run({y, dx}, {{x, NDArray::full({64}, 3.0, float64)}});
    for (double v : r[0].to_vector<double>()) CHECK(v == 0.0);
    for (double v : r[1].to_vector<double>()) CHECK(v == 0.0);
    CHECK(dropout(x, 1.0, false).is(x));
  }

  TEST_CASE("running a graph does not happen while building it") {
    Graph g;
    Tensor t = g.constant(NDArray::from<float>({1, 2, 3}));
    Tensor bad = gather(t, g.constant(NDArray::from<int64_t>({5})));  // out of range, but nothing runs yet
    CHECK(bad.shape() == Shape{1});
    Session s(g, {.constant_folding = false});
    CHECK(contains(error_of([&] { s.run({bad}); }), "gather 'gather': index 5 out of range [0, 3)"));
  }

  TEST_CASE("resample: tables checked when built and when run; the session runs on after a bad source") {
    Graph g;
    Tensor x = g.placeholder("x", {2, 3, 4});
    const NDArray w = NDArray::from<float>({0.5f, 0.5f, 1.0f, 0.0f}, {2, 2});
    Tensor src = g.placeholder("src", {2, 2}, int64);
    Tensor y = resample(x, -1, src, g.constant(w));
    CHECK(y.shape() == Shape{2, 3, 2});
    CHECK(contains(error_of([&] { resample(x, 1, src, g.constant(w.astype(float64))); }),
                   "weights must be float32 [2,2] like sources, got float64 [2,2]"));
    CHECK(contains(error_of([&] { resample(x, 1, g.placeholder("s1", {4}, int64), g.constant(w)); }),
                   "sources must be a known [out, K]"));
    Session s(g);
    const NDArray xv = NDArray::from<float>(
        std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23},
        {2, 3, 4});
    CHECK(contains(error_of([&] {
                     s.run({y}, {{x, xv}, {src, NDArray::from<int64_t>({0, 1, 4, 0}, {2, 2})}});
                   }),
                   "resample 'resample': source 4 out of range [0, 4)"));
    const NDArray r = s.run({y}, {{x, xv}, {src, NDArray::from<int64_t>({0, 1, 3, 0}, {2, 2})}})[0];
    CHECK(r.to_vector<float>() == std::vector<float>{0.5f, 3, 4.5f, 7, 8.5f, 11, 12.5f, 15, 16.5f, 19, 20.5f, 23});
  }
}

TEST_SUITE("ops/random") {
  TEST_CASE("element i of every random kernel is element i of its Philox stream (the CUDA kernels' numbers)") {
    const InvokeOptions opt{.seed = 11, .run_counter = 5, .node_key = 7};
    const uint64_t key = philox::mix_key(opt.seed, opt.node_key);
    for (int64_t n :
         {1, 2, 3, 5, 4099, 70001}) {  // partial last blocks of 4 and of 2; chunks of 256 blocks, 64 at a time
      CAPTURE(n);
      // A range of 4.2, not a power of two: a fused multiply-add would round differently (the CUDA kernels
      // multiply and add with __dmul_rn and __dadd_rn).
      const Attrs uniform{{"shape", std::vector<int64_t>{n}}, {"a", -1.3}, {"b", 2.9}, {"dtype", float32}};
      auto u32 = invoke("random_uniform", {}, uniform, opt)[0].to_vector<float>();
      Attrs u64a = uniform;
      u64a.set("dtype", float64);
      auto u64 = invoke("random_uniform", {}, u64a, opt)[0].to_vector<double>();
      Attrs normal = u64a;
      normal.set("a", 2.0);
      normal.set("b", 0.7);
      auto nd = invoke("random_normal", {}, normal, opt)[0].to_vector<double>();
      auto plus = [](double a, double b, double x) {
        volatile double product = b * x;  // rounded on its own, never fused with the add
        return a + product;
      };
      const double range = 2.9 - -1.3;
      for (int64_t i = 0; i < n; ++i) {
        const auto k = uint64_t(i);
        REQUIRE(u32[size_t(i)] == float(plus(-1.3, range, double(philox::uniform_f32(key, opt.run_counter, k)))));
        REQUIRE(u64[size_t(i)] == plus(-1.3, range, philox::uniform_f64(key, opt.run_counter, k)));
        REQUIRE(nd[size_t(i)] == plus(2.0, 0.7, philox::normal(key, opt.run_counter, k)));
      }
    }
  }

  TEST_CASE("uniform and normal: statistics, seeds, runs and thread counts") {
    Graph g;
    Tensor u = random_uniform(g, {200000}, -1, 3);
    Tensor n = random_normal(g, {200000}, 2, 0.5, float64);
    auto stats = [](const NDArray& a) {
      NDArray d = a.astype(float64);
      double m = 0, v = 0;
      for (double x : d.to_vector<double>()) m += x;
      m /= double(d.numel());
      for (double x : d.to_vector<double>()) v += (x - m) * (x - m);
      return std::pair{m, v / double(d.numel())};
    };
    Session s1(g, {.threads = 1, .seed = 3}), s2(g, {.threads = 2, .seed = 3}), s3(g, {.threads = 2, .seed = 4});
    auto a = s1.run({u, n}), b = s2.run({u, n}), c = s3.run({u, n});
    CHECK(test::identical(a[0], b[0]));  // same seed, other thread count: same numbers
    CHECK(test::identical(a[1], b[1]));
    CHECK_FALSE(test::identical(a[0], c[0]));
    auto [um, uv] = stats(a[0]);
    CHECK(um == doctest::Approx(1.0).epsilon(0.01));
    CHECK(uv == doctest::Approx(16.0 / 12).epsilon(0.02));
    auto [nm, nv] = stats(a[1]);
    CHECK(nm == doctest::Approx(2.0).epsilon(0.01));
    CHECK(nv == doctest::Approx(0.25).epsilon(0.02));
    auto u_min = a[0].to_vector<float>();
    CHECK(*std::min_element(u_min.begin(), u_min.end()) >= -1.0f);
    CHECK(*std::max_element(u_min.begin(), u_min.end()) < 3.0f);
    auto next = s1.run({u});
    CHECK_FALSE(test::identical(a[0], next[0]));  // each run draws anew
  }

  TEST_CASE("bernoulli_like") {
    Graph g;
    Tensor x = g.placeholder("x", {10000});
    Tensor b = bernoulli_like(x, 0.3);
    Session s(g, {.seed = 1});
    auto v = s.run1(b, {{x, NDArray::zeros({10000})}}).to_vector<float>();
    double m = 0;
    for (float f : v) {
      CHECK((f == 0.0f || f == 1.0f));
      m += f;
    }
    CHECK(m / 10000 == doctest::Approx(0.3).epsilon(0.05));
  }
}
