#pragma once
/// The process group that collective ops (allreduce, broadcast, allgather,
/// ops/collective.cpp) run over. Every process of a data-parallel job builds
/// the same graph and runs the same plans; a collective node of a plan then
/// meets its counterparts on the other ranks. Plans run collective nodes one
/// at a time in schedule order (the hazards pass chains them), so every rank
/// issues them in the same order whichever thread the executor uses.
///
/// The core knows only this interface: libloom_mpi (frontend/mpi/) provides
/// an MPI communicator, libloom_cuda's NCCL kernels bootstrap from it. By
/// default a process is a group of one, where collectives are identities.

#include <cstddef>
#include <memory>
#include <string>

#include "core/dtype.hpp"

namespace loom {

class Communicator {
 public:
  virtual ~Communicator();
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// "single", "mpi", ...: for messages.
  virtual std::string name() const = 0;
  /// Host memory, blocking. Failures (a rank that died, a timeout) throw loom::Error.
  /// data[0, count) = the sum over ranks of data[0, count) (float32/64, int32/64).
  virtual void allreduce_sum(void* data, size_t count, DType dtype) = 0;
  /// data[0, bytes) = root's data[0, bytes) on every rank.
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  /// out[r * bytes, (r + 1) * bytes) = rank r's in[0, bytes).
  virtual void allgather(const void* in, void* out, size_t bytes) = 0;
  /// Returns when every rank has called it.
  virtual void barrier() = 0;
};

/// A group of one process: every collective is an identity.
class SingleCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "single"; }
  void allreduce_sum(void*, size_t, DType) override {}
  void broadcast(void*, size_t, int) override {}
  void allgather(const void* in, void* out, size_t bytes) override;
  void barrier() override {}
};

/// The process's communicator (never null: a SingleCommunicator until one is set).
std::shared_ptr<Communicator> communicator();
/// Installs `c` (null restores the single-process default). Graphs with
/// collectives record the group size they were built for: set it first.
void set_communicator(std::shared_ptr<Communicator> c);

}  // namespace loom
