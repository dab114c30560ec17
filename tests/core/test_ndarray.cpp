// NDArray: views share storage, compact() against an independent reference
// loop up to 7-D, set-item into strided views, and errors.

#include <numeric>

#include "tests/util.hpp"

using namespace loom;
using loom::test::rand;

namespace {

// Reference: element at a multi-index read through explicit strides.
double ref_at(const NDArray& a, const std::vector<int64_t>& idx) {
  int64_t off = a.offset();
  for (size_t i = 0; i < idx.size(); ++i) off += idx[i] * a.strides()[i];
  return dispatch(a.dtype(), [&]<class T>() { return double(static_cast<const T*>(a.buffer()->data())[off]); });
}

// Walks every index of `a` in row-major order and checks compact(a) holds the same values.
void check_compact(const NDArray& a) {
  NDArray c = a.compact();
  CHECK(c.is_compact());
  CHECK(c.shape() == a.shape());
  std::vector<int64_t> idx(size_t(a.ndim()), 0);
  const float* p = c.data<float>();
  for (int64_t k = 0; k < a.numel(); ++k) {
    REQUIRE(p[k] == float(ref_at(a, idx)));
    for (size_t d = idx.size(); d-- > 0;) {
      if (++idx[d] < a.shape()[d]) break;
      idx[d] = 0;
    }
  }
}

}  // namespace

TEST_SUITE("core/ndarray") {
  TEST_CASE("views share the buffer and copy nothing") {
    NDArray a = NDArray::arange(24).view({2, 3, 4});
    NDArray t = a.permute({2, 0, 1});
    NDArray b = NDArray::arange(4).view({1, 4}).broadcast_to({3, 4});
    NDArray s = a.slice({Slice::all(), Slice::range(0, 3, 2), Slice::range(3, Slice::kNone, -1)});
    NDArray r = a.reshape({6, 4});
    CHECK(t.same_storage(a));
    CHECK(s.same_storage(a));
    CHECK(r.same_storage(a));
    CHECK(b.strides()[0] == 0);
    CHECK_FALSE(t.is_compact());
    CHECK(t.shape() == Shape{4, 2, 3});
    CHECK(s.shape() == Shape{2, 2, 4});
    CHECK(s.at({1, 1, 0}) == a.at({1, 2, 3}));
    // Writing through a view changes the base.
    s.select(0, 0).select(0, 0).fill(-5);
    CHECK(a.at({0, 0, 3}) == -5);
    CHECK(a.at({0, 0, 0}) == -5);
  }

  TEST_CASE("compact copies only when needed") {
    NDArray a = NDArray::arange(12).view({3, 4});
    CHECK(a.compact().buffer() == a.buffer());
    CHECK(a.transpose().compact().buffer() != a.buffer());
    CHECK(a.slice({Slice::range(1, 2)}).compact().buffer() == a.buffer());  // one row: still compact
  }

  TEST_CASE("compact of transposed, broadcast and sliced arrays up to 7-D") {
    for (int nd = 1; nd <= 7; ++nd) {
      Shape s;
      for (int d = 0; d < nd; ++d) s.push_back(2 + (d * 5 + nd) % 3);
      NDArray base = rand(s, uint64_t(nd));
      std::vector<int64_t> perm(static_cast<size_t>(nd));
      std::iota(perm.rbegin(), perm.rend(), 0);
      check_compact(base.permute(perm));
      std::vector<Slice> sl;
      for (int d = 0; d < nd; ++d) sl.push_back(d % 2 ? Slice::range(Slice::kNone, Slice::kNone, -1) : Slice::range(1, Slice::kNone, 2));
      check_compact(base.slice(sl));
      check_compact(base.slice(sl).permute(perm));
      Shape bs = s;
      bs.insert(bs.begin(), 3);
      if (nd < 7) check_compact(base.select(0, 1).reshape({-1}).view({1, -1}).broadcast_to({4, base.numel() / s[0]}));
      if (nd < 7) check_compact(base.broadcast_to(bs));
    }
  }

  TEST_CASE("reshape views when the layout allows it, copies otherwise") {
    NDArray a = NDArray::arange(24).view({2, 3, 4});
    NDArray t = a.permute({1, 0, 2});  // [3,2,4]: last dim still contiguous
    NDArray v = t.reshape({3, 8});
    CHECK_FALSE(v.same_storage(a));  // merging 2 and 4 across a permuted axis needs a copy
    NDArray w = t.reshape({3, 2, 2, 2});
    CHECK(w.same_storage(a));  // splitting the contiguous last dim is a view
    CHECK(w.at({2, 1, 1, 0}) == a.at({1, 2, 2}));
    CHECK(a.reshape({-1, 6}).shape() == Shape{4, 6});
    CHECK(test::contains(test::error_of([&] { a.reshape({5, -1}); }), "cannot reshape [2,3,4]"));
    CHECK(test::contains(test::error_of([&] { t.view({3, 8}); }), "without a copy"));
  }

  TEST_CASE("set-item into strided views") {
    NDArray a = NDArray::zeros({4, 5});
    a.slice({Slice::range(0, 4, 2), Slice::range(4, Slice::kNone, -2)}).assign(NDArray::from<float>({1, 2, 3, 4, 5, 6}, {2, 3}));
    CHECK(a.at({0, 4}) == 1);
    CHECK(a.at({0, 2}) == 2);
    CHECK(a.at({0, 0}) == 3);
    CHECK(a.at({2, 0}) == 6);
    CHECK(a.at({1, 4}) == 0);
    // Scalar into a transposed view, broadcast row into a column slice.
    a.transpose().slice({Slice::range(1, 2)}).fill(9);
    for (int64_t i = 0; i < 4; ++i) CHECK(a.at({i, 1}) == 9);
    a.slice({Slice::all(), Slice::range(3, 4)}).assign(NDArray::from<float>({7, 8, 9, 10}, {4, 1}));
    CHECK(a.at({3, 3}) == 10);
    // dtype conversion on assign
    NDArray b = NDArray::zeros({3}, int32);
    b.assign(NDArray::from<double>({1.7, -2.2, 3.0}));
    CHECK(b.to_vector<int32_t>() == std::vector<int32_t>{1, -2, 3});
    // A source overlapping its destination is read before it is written (NumPy's result).
    NDArray m = NDArray::arange(9).reshape({3, 3});
    m.assign(m.transpose());
    CHECK(m.to_vector<float>() == std::vector<float>{0, 3, 6, 1, 4, 7, 2, 5, 8});
    NDArray r = NDArray::arange(6).reshape({2, 3});
    r.slice({Slice::all(), Slice::range(1, 3)}).assign(r.slice({Slice::all(), Slice::range(0, 2)}));
    CHECK(r.to_vector<float>() == std::vector<float>{0, 0, 1, 3, 3, 4});
    NDArray f = NDArray::arange(5);
    f.assign(f.flip({0}));
    CHECK(f.to_vector<float>() == std::vector<float>{4, 3, 2, 1, 0});
    // A broadcast destination would write one element many times.
    NDArray row = NDArray::zeros({1, 3});
    CHECK(test::contains(test::error_of([&] {
                           row.broadcast_to({2, 3}).assign(NDArray::arange(6).reshape({2, 3}));
                         }),
                         "is a broadcast view (stride 0 on axis 0)"));
  }

  TEST_CASE("errors name the operation and shapes") {
    NDArray a = NDArray::zeros({3, 4});
    CHECK(test::error_of([&] { a.broadcast_to({2, 5}); }) == "broadcast_to: cannot broadcast [3,4] to [2,5]");
    CHECK(test::contains(test::error_of([&] { a.permute({0, 0}); }), "repeated"));
    CHECK(test::contains(test::error_of([&] { a.slice({Slice::range(0, 1, 0)}); }), "step cannot be zero"));
    CHECK(test::contains(test::error_of([&] { a.data<double>(); }), "data<float64>() on a float32 array"));
    CHECK(test::contains(test::error_of([&] { a.select(1, 4); }), "out of range"));
    CHECK(test::contains(test::error_of([&] { a.item(); }), "12 elements"));
    CHECK(test::contains(test::error_of([&] { a.broadcast_to({-1, 4}); }), "dims must be known"));
    CHECK(test::contains(test::error_of([&] { a.flip({1, -1}); }), "flip: axis -1 is given twice"));
    CHECK(test::contains(test::error_of([&] { (void)NDArray::arange(10).str(1); }), "max_per_axis must be >= 2"));
    CHECK(test::contains(NDArray::arange(10).str(2), "0, ..., 9"));
    // Integers print every digit, also from a strided view (as a double, 123456789 was 1.23457e+08).
    CHECK(NDArray::from<int64_t>({123456789, 7, int64_t(1) << 60, -5}).reshape({2, 2}).transpose().str() ==
          "[[123456789, 1152921504606846976],\n [7, -5]] (int64[2,2])");
    CHECK(NDArray::from<int32_t>({2147483647}).str() == "[2147483647] (int32[1])");
    // A layout of the user's: errors, not assertions.
    CHECK(test::contains(test::error_of([&] {
                           NDArray(a.buffer(), Layout{{3, 40}, {40, 1}, 0}, float32);
                         }),
                         "reaches outside its buffer"));
    CHECK(test::contains(test::error_of([&] {
                           NDArray(a.buffer(), Layout{{3, -4}, {4, 1}, 0}, float32);
                         }),
                         "has a negative dim"));
    CHECK(test::contains(test::error_of([&] {
                           NDArray(a.buffer(), Layout{{12}, {1, 1}, 0}, float32);
                         }),
                         "differ in rank"));
  }

  TEST_CASE("dtypes round-trip through casts") {
    NDArray f = NDArray::from<float>({-1.5f, 0.f, 2.5f, 300.f});
    CHECK(f.astype(int64).to_vector<int64_t>() == std::vector<int64_t>{-1, 0, 2, 300});
    CHECK(f.astype(uint8).to_vector<uint8_t>() == std::vector<uint8_t>{0, 0, 2, 255});  // saturating
    CHECK(f.astype(boolean).to_vector<bool>() == std::vector<bool>{true, false, true, true});
    CHECK(NDArray::from<bool>({true, false}).astype(float64).to_vector<double>() == std::vector<double>{1, 0});
    CHECK(parse_dtype("f32") == float32);
    CHECK(test::contains(test::error_of([] { parse_dtype("half"); }), "unknown dtype 'half'"));
  }
}
