#include "core/comm.hpp"

#include <cstring>
#include <mutex>

namespace loom {

Communicator::~Communicator() = default;

void SingleCommunicator::allgather(const void* in, void* out, size_t bytes) {
  if (in != out && bytes) std::memmove(out, in, bytes);
}

namespace {
std::mutex comm_mu;
std::shared_ptr<Communicator>& current() {
  static std::shared_ptr<Communicator> c = std::make_shared<SingleCommunicator>();
  return c;
}
}  // namespace

std::shared_ptr<Communicator> communicator() {
  std::lock_guard lock(comm_mu);
  return current();
}

void set_communicator(std::shared_ptr<Communicator> c) {
  std::lock_guard lock(comm_mu);
  current() = c ? std::move(c) : std::make_shared<SingleCommunicator>();
}

}  // namespace loom
