// Ops without an ONNX form in an inference graph: state updates, optimizer
// steps, random numbers and the gradient helpers. (placeholder, variable and
// constant are the export driver's: graph inputs and initializers.)

#include "frontend/onnx/exporter.hpp"

namespace loom::onnx {
namespace {

const bool registered = [] {
  const char* training = "it updates state during training (export the graph the model builds in eval mode)";
  register_unexportable("assign", training);
  register_unexportable("no_op", training);
  register_unexportable("adam_update", training);
  const char* random = "it draws random numbers (dropout in training mode? export the graph the model builds in eval mode)";
  register_unexportable("random_uniform", random);
  register_unexportable("random_normal", random);
  const char* gradient = "it exists only in gradient graphs";
  register_unexportable("slice_grad", gradient);
  register_unexportable("resample_grad", gradient);
  return true;
}();

}  // namespace
}  // namespace loom::onnx
