#pragma once
// Helpers shared by the test suites.

#include <doctest/doctest.h>

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>

#include "core/invoke.hpp"
#include "core/philox.hpp"
#include "core/session.hpp"
#include "ops/ops.hpp"

namespace loom::test {

/// Uniform [lo, hi) host array from a seeded Philox stream.
inline NDArray rand(const Shape& shape, uint64_t seed, DType dtype = float32, double lo = -1, double hi = 1) {
  NDArray a = NDArray::empty(shape, float64);
  double* p = a.data<double>();
  for (int64_t i = 0; i < a.numel(); ++i) p[i] = lo + (hi - lo) * philox::uniform_f64(seed, 7, uint64_t(i));
  return dtype == float64 ? a : a.astype(dtype);
}

/// Largest |a - b| over all elements (shapes must match).
inline double max_abs_diff(const NDArray& a, const NDArray& b) {
  REQUIRE(a.shape() == b.shape());
  NDArray x = a.astype(float64), y = b.astype(float64);
  const double *p = x.data<double>(), *q = y.data<double>();
  double m = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    if (std::isnan(p[i]) != std::isnan(q[i])) return INFINITY;
    if (!std::isnan(p[i])) m = std::max(m, std::fabs(p[i] - q[i]));
  }
  return m;
}

/// True when |a - b| <= atol + rtol * |b| everywhere.
inline bool allclose(const NDArray& a, const NDArray& b, double rtol = 1e-5, double atol = 1e-6) {
  if (a.shape() != b.shape()) return false;
  NDArray x = a.astype(float64), y = b.astype(float64);
  const double *p = x.data<double>(), *q = y.data<double>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    if (std::isnan(p[i]) && std::isnan(q[i])) continue;
    if (!(std::fabs(p[i] - q[i]) <= atol + rtol * std::fabs(q[i]))) return false;
  }
  return true;
}

/// Bitwise equality of contents (shape, dtype and bytes).
inline bool identical(const NDArray& a, const NDArray& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  NDArray x = a.compact(), y = b.compact();
  return std::memcmp(x.raw(), y.raw(), x.nbytes()) == 0;
}

/// Runs `f` and returns the loom::Error message it throws ("" if none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

/// A fresh temporary directory, removed with its contents at scope exit.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static std::atomic<int> n{0};
    path = std::filesystem::temp_directory_path() /
           ("loom_test_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

}  // namespace loom::test
