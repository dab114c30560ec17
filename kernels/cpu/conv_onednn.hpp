#pragma once
// The oneDNN engine of the CPU convolution kernels (kernels/cpu/conv.cpp
// chooses between it and im2col per node). Internal to kernels/cpu.

#include <memory>

#include "core/kernel.hpp"
#include "kernels/conv_geometry.hpp"

namespace loom::cpu::onednn {

enum class Pass { forward, backward_data, backward_filter };

/// One node's oneDNN primitives: the batch split into one chunk per thread,
/// each chunk a single-threaded oneDNN call in a TBB task, with reorders
/// between PyTorch's layouts and oneDNN's blocked ones.
struct Conv;

/// The primitives for a float32 node, or null when oneDNN has no JIT kernel
/// for it on this CPU (then im2col runs it). `build` false only sizes them
/// (for the workspace query); true also generates the code.
std::shared_ptr<const Conv> make(const conv::Geometry& g, Pass pass, bool bias, bool relu, int threads, bool build);

/// Scratch bytes a call needs: reordered operands, oneDNN's scratchpad, partial weight gradients.
size_t workspace_bytes(const Conv& c);

/// Runs the node (the call's arrays are compact; its workspace holds workspace_bytes()).
void run(const Conv& c, const KernelCall& call);

/// The JIT implementation oneDNN chose ("jit:avx512_core", ...), for benchmarks and tests.
const char* implementation(const Conv& c);

}  // namespace loom::cpu::onednn
