#pragma once
/// The kernel registry. Kernels are registered per (op, device kind, dtype)
/// by static objects in kernels/<device>/<family>.cpp; no central switch.
/// The dtype a kernel is looked up by is that of the node's first output
/// (a kernel registered for several dtypes dispatches internally).

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/attrs.hpp"
#include "core/device.hpp"
#include "core/ndarray.hpp"

namespace loom {

/// Checks a device kernel leaves for later, so that it need not wait for its
/// stream in mid-run (a GPU kernel's bad index is known on the device only).
/// Session::run verifies them once it has waited for the device anyway:
/// before the first step that writes a variable (a failed run leaves the
/// variables unchanged) and at the end of the run. Eager calls have none:
/// their kernels wait and check at once. Thread-safe.
class DeferredChecks {
 public:
  /// What a backend keeps for the checks' results (device and pinned slots).
  struct Slots {
    virtual ~Slots() = default;
    virtual void reuse() = 0;  // a new run starts: no slot is in use
  };
  /// `verify` reads what its kernel recorded and throws the op's error; it runs after the device finished.
  void add(std::function<void()> verify);
  bool empty() const;
  /// Runs and removes the checks added so far (the caller waited for the device); throws the first failure.
  void verify();
  /// Starts a run: drops the checks of a run that failed before verifying them, frees every slot. Slots are
  /// reused only here, where no kernel of the plan can be between taking a slot and adding its check.
  void clear();
  /// The backend's slots, made by `make` on first use.
  Slots& slots(const std::function<std::unique_ptr<Slots>()>& make);

 private:
  mutable std::mutex mu_;
  std::vector<std::function<void()>> pending_;
  std::unique_ptr<Slots> slots_;
};

/// What a kernel may know about the run it is part of.
struct KernelContext {
  Device device = Device::cpu();
  void* stream = nullptr;     // the session's device stream (null on CPU)
  uint64_t seed = 0;          // session seed
  uint64_t run_counter = 0;   // advances every Session::run: random ops draw anew
  DeferredChecks* checks = nullptr;  // a device session run's (null: check at once)
};

struct Epilogue;

/// One kernel invocation. Outputs are compact arrays (or, for ops flagged
/// in-place, possibly the same storage as an input); inputs may be strided
/// views unless the kernel asked for compact inputs.
struct KernelCall {
  const KernelContext& ctx;
  std::span<const NDArray> in;
  std::span<const NDArray> out;
  const Attrs& attrs;
  std::string_view op;
  std::string_view node;  // node name, for errors
  uint64_t node_key = 0;  // stable per node: random streams are keyed by it
  const void* state = nullptr;  // what the kernel's prepare() returned for this node
  /// Scratch memory for this call (KernelInfo::workspace bytes; null when none).
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  /// Element-wise nodes to run on the rows of output 0 as they are written
  /// (kernels with KernelInfo::runs_epilogue; see run_epilogue). The call's
  /// inputs and outputs then also hold the epilogue's.
  const Epilogue* epilogue = nullptr;
};



/// What a kernel's scratch memory may depend on: the node's resolved shapes,
/// its attributes and the threads its kernels run with.
struct WorkspaceQuery {
  std::span<const Shape> in, out;
  DType dtype;  // of output 0
  const Attrs& attrs;
  Device device;
  int threads;
};

using KernelFn = void (*)(const KernelCall&);

/// Element-wise nodes the fusion pass attached to a node whose op accepts an
/// epilogue (OpDef::epilogue): its kernel runs them on each block of rows of
/// its output 0 right after writing the block, while it is in cache (a GEMM's
/// bias and activation, or the optimizer update reading a weight gradient).
struct EpilogueStep {
  KernelFn fn = nullptr;
  const Attrs* attrs = nullptr;
  std::string_view op, node;
  uint64_t key = 0;
  /// Operands as references into the call: r >= 0 is the call's input r,
  /// r < 0 its output -r-1 (outputs are read and written by blocks of rows).
  std::vector<int> in, out;
  /// What the step's kernel's prepare() returned for the whole arrays (valid
  /// for every block of rows: element-wise kernels decide per operand layout).
  std::shared_ptr<const void> state;
};
struct Epilogue {
  std::vector<EpilogueStep> steps;  // in order: a step may read an earlier one's outputs
};

/// Runs the call's epilogue (if any) on rows [begin, end) of dim 0 of its
/// output 0, which the kernel has written. Operands of the output's shape are
/// passed as those rows; broadcast ones whole. Blocks may run in any order
/// and in parallel (element-wise steps only read their own rows).
void run_epilogue(const KernelCall& c, int64_t begin, int64_t end);
/// The same for a streamed output 0 (see streamed()): `head_rows` holds the
/// block's rows [begin, end), written where the kernel keeps them.
void run_epilogue(const KernelCall& c, int64_t begin, int64_t end, const NDArray& head_rows);
/// Whether the plan keeps output 0 of this call only block by block (the
/// stream pass: nothing but the epilogue reads it, a weight gradient under its
/// optimizer's update): output 0 then has a shape and no memory, and the
/// kernel writes each block of rows into its workspace, runs the epilogue on
/// it, and reuses the space for a later block. Epilogue outputs without memory
/// (a weight-decayed gradient) are written over the block in place.
inline bool streamed(const KernelCall& c) { return c.epilogue && !c.out.empty() && !c.out[0].buffer(); }
/// Runs once when a plan binds the node (shapes, layouts and attributes are
/// final); the result is handed to every call as KernelCall::state.
using PrepareFn = std::shared_ptr<const void> (*)(const KernelCall&);
/// Bytes of scratch memory a kernel needs per call (im2col buffers, cuDNN
/// workspaces). Plans place it in their arena, live for that one step, so it
/// counts in the lower bound and no kernel allocates while it runs.
using WorkspaceFn = size_t (*)(const WorkspaceQuery&);

/// What a device's fused element-wise kernel (op "fused") can run: the
/// fusion pass forms only programs of ops it supports, within its limits, so
/// every device fuses by the same rules.
struct FusionCaps {
  int max_instrs = 0, max_leaves = 0, max_outputs = 0;
  /// Whether instructions of element-wise op `op` can run inside the kernel.
  bool (*supports)(std::string_view op) = nullptr;
};

struct KernelInfo {
  KernelFn fn = nullptr;
  /// The planner hands this kernel compact inputs (copying views first).
  bool compact_inputs = false;
  PrepareFn prepare = nullptr;
  WorkspaceFn workspace = nullptr;
  /// Set on a device's "fused" kernel: what programs it runs.
  const FusionCaps* fusion = nullptr;
  /// The kernel calls run_epilogue on every block of output 0 it writes, so
  /// the fusion pass may attach an epilogue (OpDef::epilogue) on this device.
  bool runs_epilogue = false;
  /// The workspace it needs to keep output 0 only block by block under its
  /// epilogue (streamed()); 0 where it cannot for these shapes. Kernels with
  /// one must compute the same blocks (the same bits) streamed or not.
  WorkspaceFn streamed_workspace = nullptr;
};

/// The workspace `k` needs for a call with these shapes (0 without a WorkspaceFn).
size_t workspace_bytes(const KernelInfo& k, std::span<const Shape> in, std::span<const Shape> out, DType dtype,
                       const Attrs& attrs, Device device, int threads);

void register_kernel(std::string_view op, DeviceKind device, const std::vector<DType>& dtypes,
                     KernelInfo info);
/// The kernel for (op, device, dtype) or null.
const KernelInfo* find_kernel(std::string_view op, DeviceKind device, DType dtype);

/// Allocates the workspace `k` needs for call `c` (null when none), for eager
/// calls outside plans (invoke, constant folding, the host fallback).
std::shared_ptr<Buffer> allocate_workspace(const KernelInfo& k, const KernelCall& c);

/// A kernel for devices that lack one for an op: the call's inputs are copied
/// to the host, the op's CPU kernel runs there and the outputs are copied
/// back, all ordered on the call's stream. Slow (it synchronizes), but a graph
/// runs whole on a device even with an op only the CPU implements.
const KernelInfo& host_fallback_kernel();

struct KernelEntry {
  std::string op;
  DeviceKind device;
  std::vector<DType> dtypes;
};
/// Every registered (op, device) with its dtypes, sorted by op name.
std::vector<KernelEntry> registered_kernels();

/// A compile-time list of element types: kernels are instantiated for each
/// and registered under the matching dtypes.
template <class... Ts>
struct TypeList {
  static std::vector<DType> dtypes() { return {dtype_of<Ts>()...}; }
};
using FloatTypes = TypeList<float, double>;
using NumericTypes = TypeList<float, double, int32_t, int64_t, uint8_t>;
using AllTypes = TypeList<float, double, int32_t, int64_t, uint8_t, bool>;

/// Calls f.template operator()<T>() for the T among Ts whose dtype is `t`.
template <class... Ts, class F>
void dispatch_among(TypeList<Ts...>, DType t, F&& f) {
  bool done = ((dtype_of<Ts>() == t ? (f.template operator()<Ts>(), true) : false) || ...);
  LOOM_ASSERT(done, "no instantiation for dtype ", dtype_name(t));
}

}  // namespace loom
