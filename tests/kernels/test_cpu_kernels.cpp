// CPU kernels against plain reference loops on odd shapes, strided and
// broadcast operands, and thread counts.

#include <oneapi/tbb/task_arena.h>

#include <cstdlib>
#include <string>

#include "kernels/cpu/openblas.hpp"
#include "tests/util.hpp"

using namespace loom;
using test::contains;
using test::error_of;
using test::rand;

namespace {

NDArray ref_matmul(const NDArray& a_in, const NDArray& b_in) {
  NDArray a = a_in.astype(float64), b = b_in.astype(float64);
  int64_t M = a.dim(-2), K = a.dim(-1), N = b.dim(-1);
  NDArray c = NDArray::zeros({M, N}, float64);
  const double *pa = a.data<double>(), *pb = b.data<double>();
  double* pc = c.data<double>();
  for (int64_t i = 0; i < M; ++i)
    for (int64_t k = 0; k < K; ++k) {
      double x = pa[i * K + k];
      for (int64_t j = 0; j < N; ++j) pc[i * N + j] += x * pb[k * N + j];
    }
  return c;
}

template <class F>
auto with_threads(int n, F&& f) {
  tbb::task_arena arena(n);
  return arena.execute(std::forward<F>(f));
}

}  // namespace

TEST_SUITE("kernels/cpu") {
  TEST_CASE("OpenBLAS runs kernels for this CPU's instruction sets, not a pre-AVX2 fallback") {
    __builtin_cpu_init();
    if (std::getenv("OPENBLAS_CORETYPE") || !__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return;
    const std::string core = cpu::openblas::core_name();
    INFO("OpenBLAS core ", core);
    for (const char* old : {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom", "Sandybridge"})
      CHECK(core != old);
  }

  TEST_CASE("matmul on odd, tiny and large shapes") {
    for (auto [m, k, n] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{72, 73, 74}, {1, 1, 1}, {512, 1024, 256}, {3, 0, 4}}) {
      const int64_t rows = m, inner = k;  // CAPTURE's lambda cannot capture a structured binding in clang 14
      CAPTURE(rows);
      CAPTURE(inner);
      NDArray a = rand({m, k}, 1), b = rand({k, n}, 2);
      for (int threads : {1, 2}) {
        NDArray c = with_threads(threads, [&] { return invoke("matmul", {a, b})[0]; });
        CHECK(test::max_abs_diff(c, ref_matmul(a, b)) <= 1e-4 * std::sqrt(double(std::max<int64_t>(k, 1))));
      }
    }
  }

  TEST_CASE("matmul with transposed and sliced operands, batched and broadcast") {
    NDArray at = rand({37, 29}, 3), bt = rand({41, 37}, 4);
    NDArray a = at.transpose(), b = bt.transpose();  // [29,37] x [37,41], both transposed views
    CHECK_FALSE(a.is_compact());
    CHECK(test::max_abs_diff(invoke("matmul", {a, b})[0], ref_matmul(a.compact(), b.compact())) < 1e-4);
    NDArray s = rand({40, 60}, 5).slice({Slice::range(0, 40, 2), Slice::range(59, Slice::kNone, -2)});  // [20,30]
    NDArray w = rand({30, 7}, 6);
    CHECK(test::max_abs_diff(invoke("matmul", {s, w})[0], ref_matmul(s.compact(), w)) < 1e-4);
    // [6,6,5,4] @ [4,3]: one tall GEMM; [2,1,3,4] @ [1,5,4,2]: broadcast on both sides.
    NDArray x = rand({6, 6, 5, 4}, 7), y = rand({4, 3}, 8);
    NDArray z = invoke("matmul", {x, y})[0];
    CHECK(z.shape() == Shape{6, 6, 5, 3});
    CHECK(test::max_abs_diff(z.select(0, 4).select(0, 2), ref_matmul(x.select(0, 4).select(0, 2), y)) < 1e-5);
    NDArray p = rand({2, 1, 3, 4}, 9), q = rand({1, 5, 4, 2}, 10);
    NDArray r = invoke("matmul", {p, q})[0];
    CHECK(r.shape() == Shape{2, 5, 3, 2});
    CHECK(test::max_abs_diff(r.select(0, 1).select(0, 3), ref_matmul(p.select(0, 1).select(0, 0), q.select(0, 0).select(0, 3))) < 1e-5);
    CHECK(contains(error_of([&] { invoke("matmul", {rand({2, 3}, 1), rand({4, 2}, 1)}); }), "inner dimensions differ: [2,3] x [4,2]"));
  }

  TEST_CASE("binary ops broadcast over odd and strided shapes") {
    NDArray a = rand({7, 1, 13}, 11), b = rand({5, 13}, 12);
    NDArray c = invoke("sub", {a, b})[0];
    REQUIRE(c.shape() == Shape{7, 5, 13});
    bool ok = true;
    for (int64_t i = 0; i < 7; ++i)
      for (int64_t j = 0; j < 5; ++j)
        for (int64_t k = 0; k < 13; ++k) ok &= c.at({i, j, k}) == float(a.at({i, 0, k})) - float(b.at({j, k}));
    CHECK(ok);
    // Strided (transposed, reversed) operands and a scalar.
    NDArray t = rand({300, 257}, 13).transpose(), u = rand({257, 300}, 14).flip({0});
    NDArray m = invoke("maximum", {t, u})[0];
    NDArray s = invoke("mul", {t, NDArray::scalar(3)})[0];
    ok = true;
    for (int64_t i = 0; i < 257; i += 17)
      for (int64_t j = 0; j < 300; j += 7) {
        ok &= m.at({i, j}) == std::max(t.at({i, j}), u.at({i, j}));
        ok &= s.at({i, j}) == float(3 * float(t.at({i, j})));
      }
    CHECK(ok);
    NDArray big = rand({1 << 20}, 15);
    NDArray e = invoke("exp", {big.slice({Slice::range(1, Slice::kNone, 3)})})[0];
    CHECK(e.at({1000}) == doctest::Approx(std::exp(big.at({3001}))));
    NDArray lt = invoke("lt", {a, b})[0];
    CHECK(lt.dtype() == boolean);
    CHECK(lt.at({3, 2, 4}) == double(a.at({3, 0, 4}) < b.at({2, 4})));
    NDArray w = invoke("where", {lt, a, NDArray::scalar(0)})[0];
    CHECK(w.at({3, 2, 4}) == (lt.at({3, 2, 4}) ? a.at({3, 0, 4}) : 0.0));
  }

  TEST_CASE("integer arithmetic: wraps, divides by zero with an error") {
    NDArray a = NDArray::from<int32_t>({INT32_MAX, -7, 9}), b = NDArray::from<int32_t>({1, 2, -1});
    CHECK(invoke("add", {a, b})[0].to_vector<int32_t>() == std::vector<int32_t>{INT32_MIN, -5, 8});
    CHECK(invoke("div", {a, b})[0].to_vector<int32_t>() == std::vector<int32_t>{INT32_MAX, -3, -9});
    CHECK(contains(error_of([&] { invoke("div", {a, NDArray::from<int32_t>({1, 0, 1})}); }), "integer division by zero"));
  }

  TEST_CASE("integer sums wrap as PyTorch's do; a count too large for its integer type saturates, as casts do") {
    // Long enough for the vectorized loop and its tail, over one and over both axes.
    std::vector<int64_t> v(19, INT64_MAX);
    NDArray a = NDArray::from<int64_t>(v);
    CHECK(invoke("sum", {a}, {{"axes", std::vector<int64_t>{}}})[0].to_vector<int64_t>() == std::vector<int64_t>{INT64_MAX - 18});  // 19 * MAX mod 2^64
    NDArray b = NDArray::from<int32_t>({INT32_MAX, 1, INT32_MIN, -1}).reshape({2, 2});
    CHECK(invoke("sum", {b}, {{"axes", std::vector<int64_t>{1}}})[0].to_vector<int32_t>() ==
          std::vector<int32_t>{INT32_MIN, INT32_MAX});
    NDArray big = NDArray::zeros({300}, float32);
    CHECK(invoke("size", {big}, {{"axes", std::vector<int64_t>{}}, {"dtype", uint8}})[0].to_vector<uint8_t>() ==
          std::vector<uint8_t>{255});
  }

  TEST_CASE("reductions over single, multiple and all axes, keepdims, strided input") {
    NDArray x = rand({37, 1031, 3}, 16);
    using V = std::vector<int64_t>;
    for (V axes : {V{0}, V{1}, V{2}, V{0, 2}, V{1, 2}, V{0, 1}, V{}}) {
      for (bool keep : {false, true}) {
        CAPTURE(attr_str(axes));
        NDArray s = invoke("sum", {x}, {{"axes", axes}, {"keepdims", keep}})[0];
        NDArray mx = invoke("max", {x}, {{"axes", axes}, {"keepdims", keep}})[0];
        // Reference: accumulate every element into its output cell.
        Shape ks = x.shape();
        for (int64_t d = 0; d < 3; ++d)
          if (axes.empty() || std::count(axes.begin(), axes.end(), d)) ks[size_t(d)] = 1;
        NDArray ref = NDArray::zeros(ks, float64), refmax = NDArray::full(ks, -INFINITY, float64);
        NDArray xd = x.astype(float64);
        const double* px = xd.data<double>();
        for (int64_t i = 0; i < 37; ++i)
          for (int64_t j = 0; j < 1031; ++j)
            for (int64_t k = 0; k < 3; ++k) {
              std::vector<int64_t> o{ks[0] == 1 ? 0 : i, ks[1] == 1 ? 0 : j, ks[2] == 1 ? 0 : k};
              int64_t off = (o[0] * ks[1] + o[1]) * ks[2] + o[2];
              double v = px[(i * 1031 + j) * 3 + k];
              ref.data<double>()[off] += v;
              refmax.data<double>()[off] = std::max(refmax.data<double>()[off], v);
            }
        CHECK(s.numel() == ref.numel());
        CHECK(test::max_abs_diff(s.reshape(ks), ref) < 1e-3);
        CHECK(test::max_abs_diff(mx.reshape(ks), refmax) == 0);
      }
    }
    // A transposed input and mean/argmax.
    NDArray t = x.permute({2, 0, 1});
    NDArray m = invoke("mean", {t}, {{"axes", V{2}}, {"keepdims", false}})[0];
    CHECK(m.shape() == Shape{3, 37});
    double acc = 0;
    for (int64_t j = 0; j < 1031; ++j) acc += x.at({5, j, 1});
    CHECK(m.at({1, 5}) == doctest::Approx(acc / 1031).epsilon(1e-5));
    NDArray am = invoke("argmax", {t}, {{"axis", int64_t(2)}})[0];
    int64_t best = 0;
    for (int64_t j = 1; j < 1031; ++j)
      if (x.at({5, j, 1}) > x.at({5, best, 1})) best = j;
    CHECK(am.at({1, 5}) == double(best));
  }

  TEST_CASE("max and min: every dtype, every lane and tail position, NaN propagates") {
    using V = std::vector<int64_t>;
    const Attrs all{{"axes", V{}}, {"keepdims", false}};
    for (DType t : {float32, float64, int32, int64, uint8}) {
      for (int64_t n : {1, 7, 16, 33, 64, 71}) {
        for (int64_t pos = 0; pos < n; ++pos) {
          INFO(dtype_name(t), " n=", n, " pos=", pos);
          // Values 1..n except one extreme at `pos`: max/min must find it in any lane or the tail.
          NDArray x = NDArray::empty({n}, float64);
          for (int64_t i = 0; i < n; ++i) x.data<double>()[i] = double(2 + i % 5);
          x.data<double>()[pos] = 100;
          CHECK(invoke("max", {x.astype(t)}, all)[0].item() == 100);
          x.data<double>()[pos] = 1;
          CHECK(invoke("min", {x.astype(t)}, all)[0].item() == 1);
          if (is_floating(t)) {
            x.data<double>()[pos] = NAN;
            CHECK(std::isnan(invoke("max", {x.astype(t)}, all)[0].item()));
            CHECK(std::isnan(invoke("min", {x.astype(t)}, all)[0].item()));
          }
        }
      }
    }
  }

  TEST_CASE("float32 sums accumulate accurately and identically for any thread count") {
    NDArray x = NDArray::full({3000000}, 0.1);
    using V = std::vector<int64_t>;
    NDArray one = with_threads(1, [&] { return invoke("sum", {x}, {{"axes", V{}}, {"keepdims", false}})[0]; });
    NDArray two = with_threads(2, [&] { return invoke("sum", {x}, {{"axes", V{}}, {"keepdims", false}})[0]; });
    CHECK(test::identical(one, two));
    CHECK(one.item() == doctest::Approx(3000000.0 * double(0.1f)).epsilon(1e-7));
    NDArray y = rand({4096, 700}, 17);
    NDArray c1 = with_threads(1, [&] { return invoke("sum", {y}, {{"axes", V{0}}, {"keepdims", false}})[0]; });
    NDArray c2 = with_threads(2, [&] { return invoke("sum", {y}, {{"axes", V{0}}, {"keepdims", false}})[0]; });
    CHECK(test::identical(c1, c2));
  }

  TEST_CASE("copy and cast between every dtype pair, into strided views") {
    NDArray src = NDArray::from<double>({0, 1, 2, 3, 4, 5}, {2, 3});
    for (DType from : kAllDTypes)
      for (DType to : kAllDTypes) {
        CAPTURE(dtype_name(from));
        CAPTURE(dtype_name(to));
        NDArray s = src.astype(from);
        NDArray d = NDArray::zeros({3, 2}, to);
        d.assign(s.transpose());
        double want = from == boolean || to == boolean ? 1.0 : 5.0;
        CHECK(d.at({2, 1}) == want);
        CHECK(d.at({0, 0}) == 0.0);
      }
  }
}
