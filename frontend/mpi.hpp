#pragma once
/// MPI for data-parallel jobs, in libloom_mpi (CMake: loom::mpi; pkg-config:
/// loom-mpi), so that libloom itself has no MPI dependency. Open MPI from
/// Debian (libopenmpi-dev, openmpi-bin):
///
///     int main(int argc, char** argv) {
///       loom::mpi::Environment mpi(argc, argv);  // MPI_Init; installs the communicator
///       ... build the graph, dist::DataParallel, train ...
///     }                                          // MPI_Finalize
///
///     mpirun -np 2 ./train                       # ranks 0 and 1 on this host
///
/// The environment installs an MPI communicator (core/comm.hpp) over
/// MPI_COMM_WORLD: collective ops then meet the other ranks, and libloom_cuda's
/// NCCL kernels bootstrap from it. Every collective waits at most `timeout`
/// seconds: a rank that died or hangs becomes a loom::Error naming the op and
/// the ranks, never a hang (LOOM_COLLECTIVE_TIMEOUT, seconds, overrides it).
/// After such an error the environment aborts the job when destroyed instead
/// of finalizing (the other ranks cannot finish their collectives).

#include <string>

namespace loom::mpi {

struct Options {
  /// Seconds one collective may wait for the other ranks (0: wait forever).
  double timeout = 300;
};

class Environment {
 public:
  Environment(int& argc, char**& argv, Options options = {});
  ~Environment();
  Environment(const Environment&) = delete;
  Environment& operator=(const Environment&) = delete;
  int rank() const;
  int size() const;
  /// Ends the job now on every rank (MPI_Abort) with this exit code.
  [[noreturn]] void abort(int code) const;
};

/// Whether this process was started by an MPI launcher (mpirun/mpiexec, from its environment).
bool launched_by_mpirun();

}  // namespace loom::mpi
