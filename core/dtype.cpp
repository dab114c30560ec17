#include "core/dtype.hpp"

namespace loom {

DType parse_dtype(std::string_view n) {
  if (n == "float32" || n == "f32" || n == "float") return float32;
  if (n == "float64" || n == "f64" || n == "double") return float64;
  if (n == "int32" || n == "i32") return int32;
  if (n == "int64" || n == "i64") return int64;
  if (n == "uint8" || n == "u8") return uint8;
  if (n == "bool" || n == "boolean") return boolean;
  fail("unknown dtype '", n, "' (expected float32, float64, int32, int64, uint8 or bool)");
}

}  // namespace loom
