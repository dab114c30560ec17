#pragma once
/// Element types. `boolean` is stored as one byte holding 0 or 1.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.hpp"

namespace loom {

enum class DType : uint8_t { float32, float64, int32, int64, uint8, boolean };

inline constexpr DType float32 = DType::float32;
inline constexpr DType float64 = DType::float64;
inline constexpr DType int32 = DType::int32;
inline constexpr DType int64 = DType::int64;
inline constexpr DType uint8 = DType::uint8;
inline constexpr DType boolean = DType::boolean;

inline constexpr DType kAllDTypes[] = {float32, float64, int32, int64, uint8, boolean};

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::float32: return 4;
    case DType::float64: return 8;
    case DType::int32: return 4;
    case DType::int64: return 8;
    case DType::uint8: return 1;
    case DType::boolean: return 1;
  }
  return 0;
}

constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::float32: return "float32";
    case DType::float64: return "float64";
    case DType::int32: return "int32";
    case DType::int64: return "int64";
    case DType::uint8: return "uint8";
    case DType::boolean: return "bool";
  }
  return "?";
}

/// Parses "float32", "f32", "int64", "bool", ...; throws loom::Error otherwise.
DType parse_dtype(std::string_view name);

constexpr bool is_floating(DType t) { return t == DType::float32 || t == DType::float64; }
constexpr bool is_integral(DType t) { return !is_floating(t); }

inline std::ostream& operator<<(std::ostream& os, DType t) { return os << dtype_name(t); }

template <class T>
constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::float32; }
template <> constexpr DType dtype_of<double>() { return DType::float64; }
template <> constexpr DType dtype_of<int32_t>() { return DType::int32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::int64; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::uint8; }
template <> constexpr DType dtype_of<bool>() { return DType::boolean; }

/// Calls `f.template operator()<T>()` with the C++ type of `t`.
/// Use: dispatch(t, [&]<class T>() { ... });
template <class F>
decltype(auto) dispatch(DType t, F&& f) {
  switch (t) {
    case DType::float32: return f.template operator()<float>();
    case DType::float64: return f.template operator()<double>();
    case DType::int32: return f.template operator()<int32_t>();
    case DType::int64: return f.template operator()<int64_t>();
    case DType::uint8: return f.template operator()<uint8_t>();
    case DType::boolean: return f.template operator()<bool>();
  }
  fail("unknown dtype ", int(t));
}

/// Like dispatch, restricted to float32/float64; other dtypes raise an error naming `what`.
template <class F>
decltype(auto) dispatch_float(DType t, std::string_view what, F&& f) {
  switch (t) {
    case DType::float32: return f.template operator()<float>();
    case DType::float64: return f.template operator()<double>();
    default: fail(what, ": expected a floating dtype, got ", dtype_name(t));
  }
}

}  // namespace loom
