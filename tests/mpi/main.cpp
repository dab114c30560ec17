// loom_mpi_tests: the collective ops, DataParallel and the failure modes over
// real MPI ranks. Run under mpirun (CI: ./build.sh test-mpi, 2 ranks):
//
//   mpirun --allow-run-as-root --oversubscribe -np 2 build/release/tests/loom_mpi_tests
//
// LOOM_TEST_FAULT=hang|die runs a fault scenario instead of the suites: rank 1
// hangs or dies before a collective, and rank 0 must fail with a clear error
// within LOOM_COLLECTIVE_TIMEOUT (tests/mpi/faults.sh checks it).

#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <string>

#include "core/comm.hpp"
#include "core/session.hpp"
#include "frontend/mpi.hpp"
#include "ops/ops.hpp"

namespace {

int fault(const std::string& mode, loom::mpi::Environment& env) {
  using namespace loom;
  Graph g;
  Tensor x = g.placeholder("x", {4});
  Tensor y = allreduce(x);
  Session s(g);
  if (env.rank() == 1) {
    if (mode == "die") std::_Exit(3);  // a crash: no MPI_Finalize, no message
    ::sleep(600);                      // a hang
  }
  try {
    s.run({y}, {{x, NDArray::full({4}, 1.0)}});
    std::cerr << "fault test: the collective completed without rank 1\n";
    return 2;
  } catch (const Error& e) {
    std::cerr << "rank " << env.rank() << ": " << e.what() << std::endl;
    env.abort(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  loom::mpi::Environment env(argc, argv);
  if (const char* f = std::getenv("LOOM_TEST_FAULT")) return fault(f, env);
  doctest::Context ctx(argc, argv);
  if (env.rank() != 0) ctx.setOption("out", "/dev/null");  // rank 0 reports; every rank asserts
  int rc = ctx.run();
  // Every rank's verdict: the job fails when any rank failed.
  int failed = rc != 0;
  loom::communicator()->allreduce_sum(&failed, 1, loom::int32);
  return ctx.shouldExit() ? rc : failed ? 1 : 0;
}
