// The MPI communicator of libloom_mpi (frontend/mpi.hpp). Collectives are
// started non-blocking and polled against a deadline, so that a rank that died
// or hangs is an error on the others, never a hang. One collective at a time
// (a mutex: MPI_THREAD_SERIALIZED), from whichever executor thread runs it.

#include "frontend/mpi.hpp"

#include <mpi.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "core/comm.hpp"
#include "core/error.hpp"

namespace loom::mpi {
namespace {

using Clock = std::chrono::steady_clock;

std::atomic<bool> g_failed{false};  // a collective failed: the job cannot finalize cleanly

std::string mpi_error(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int n = 0;
  MPI_Error_string(code, text, &n);
  return std::string(text, size_t(n));
}

MPI_Datatype mpi_type(DType t) {
  if (t == float32) return MPI_FLOAT;
  if (t == float64) return MPI_DOUBLE;
  if (t == int32) return MPI_INT32_T;
  if (t == int64) return MPI_INT64_T;
  fail("MPI allreduce: cannot sum ", dtype_name(t));
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, double timeout) : comm_(comm), timeout_(timeout) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi"; }

  void allreduce_sum(void* data, size_t count, DType dtype) override {
    char* p = static_cast<char*>(data);
    for (size_t done = 0; done < count;) {  // MPI counts are ints
      const size_t n = std::min<size_t>(count - done, INT_MAX);
      run("allreduce", [&](MPI_Request* r) {
        return MPI_Iallreduce(MPI_IN_PLACE, p + done * dtype_size(dtype), int(n), mpi_type(dtype), MPI_SUM, comm_, r);
      });
      done += n;
    }
  }
  void broadcast(void* data, size_t bytes, int root) override {
    char* p = static_cast<char*>(data);
    for (size_t done = 0; done < bytes;) {
      const size_t n = std::min<size_t>(bytes - done, INT_MAX);
      run("broadcast", [&](MPI_Request* r) { return MPI_Ibcast(p + done, int(n), MPI_BYTE, root, comm_, r); });
      done += n;
    }
  }
  void allgather(const void* in, void* out, size_t bytes) override {
    LOOM_CHECK(bytes <= INT_MAX, "MPI allgather: ", bytes, " bytes per rank is more than one message holds (2 GiB)");
    run("allgather",
        [&](MPI_Request* r) { return MPI_Iallgather(in, int(bytes), MPI_BYTE, out, int(bytes), MPI_BYTE, comm_, r); });
  }
  void barrier() override {
    run("barrier", [&](MPI_Request* r) { return MPI_Ibarrier(comm_, r); });
  }

 private:
  /// Starts a collective and polls it until done or past the deadline.
  template <class Start>
  void run(const char* what, Start start) {
    std::lock_guard lock(mu_);
    LOOM_CHECK(!g_failed, "MPI ", what, " on rank ", rank_, ": an earlier collective failed; the job must end");
    MPI_Request req;
    int rc = start(&req);
    if (rc != MPI_SUCCESS) {
      g_failed = true;
      fail("MPI ", what, " on rank ", rank_, " of ", size_, ": ", mpi_error(rc));
    }
    const auto t0 = Clock::now();
    while (true) {
      int done = 0;
      rc = MPI_Test(&req, &done, MPI_STATUS_IGNORE);
      if (rc != MPI_SUCCESS) {
        g_failed = true;
        fail("MPI ", what, " on rank ", rank_, " of ", size_, ": ", mpi_error(rc));
      }
      if (done) return;
      const double waited = std::chrono::duration<double>(Clock::now() - t0).count();
      if (timeout_ > 0 && waited > timeout_) {
        g_failed = true;
        fail("MPI ", what, " on rank ", rank_, " of ", size_, ": the other ranks did not join within ", timeout_,
             " s (a rank died, hangs, or runs another graph; LOOM_COLLECTIVE_TIMEOUT sets the limit)");
      }
      // Non-blocking collectives progress only while MPI_Test is called: spin
      // for the first 100 us (a small message whose peers are ready completes
      // in a few us; measured: 2 us spinning, 270 us sleeping between polls),
      // then sleep briefly between polls to leave the (often shared) cores to
      // the compute threads and the other ranks; long waits poll less often.
      if (waited > 100e-6) std::this_thread::sleep_for(std::chrono::microseconds(waited < 0.5 ? 20 : 500));
    }
  }

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  double timeout_;
  std::mutex mu_;
};

double timeout_from_env(double fallback) {
  const char* v = std::getenv("LOOM_COLLECTIVE_TIMEOUT");
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const double t = std::strtod(v, &end);
  LOOM_CHECK(end && *end == 0 && t >= 0, "LOOM_COLLECTIVE_TIMEOUT='", v, "' is not a number of seconds");
  return t;
}

}  // namespace

Environment::Environment(int& argc, char**& argv, Options options) {
  const double timeout = timeout_from_env(options.timeout);
  int initialized = 0;
  MPI_Initialized(&initialized);
  LOOM_CHECK(!initialized, "mpi::Environment: MPI is already initialized (one Environment per process)");
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
  if (provided < MPI_THREAD_SERIALIZED) {
    MPI_Finalize();
    fail("mpi::Environment: this MPI library does not support MPI_THREAD_SERIALIZED");
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  set_communicator(std::make_shared<MpiCommunicator>(MPI_COMM_WORLD, timeout));
}

Environment::~Environment() {
  set_communicator(nullptr);
  if (g_failed || std::uncaught_exceptions() > 0) MPI_Abort(MPI_COMM_WORLD, 1);
  MPI_Finalize();
}

int Environment::rank() const {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
int Environment::size() const {
  int s = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

void Environment::abort(int code) const {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; this satisfies [[noreturn]]
}

bool launched_by_mpirun() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(v)) return true;
  return false;
}

}  // namespace loom::mpi
