// Collective ops have no ONNX form: an ONNX model is one process's computation.

#include "frontend/onnx/exporter.hpp"

namespace loom::onnx {
namespace {

const bool registered = [] {
  const char* why =
      "it exchanges data between the processes of a data-parallel job (export the single-process eval-mode graph)";
  for (const char* op : {"allreduce", "broadcast", "reduce_to_root", "allgather", "reduce_scatter"})
    register_unexportable(op, why);
  return true;
}();

}  // namespace
}  // namespace loom::onnx
