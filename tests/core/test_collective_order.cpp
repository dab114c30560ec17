// Plans chain their collective nodes in schedule order (core/passes/hazards.cpp),
// so every rank of a data-parallel job issues them in one order whatever
// thread of the parallel executor runs them.

#include "core/plan.hpp"
#include "tests/util.hpp"

using namespace loom;

TEST_CASE("hazards: collective nodes run one after another in schedule order") {
  Graph g;
  Tensor x = g.placeholder("x", {16});
  std::vector<Tensor> fetches;
  for (int k = 0; k < 6; ++k) fetches.push_back(allreduce(x * double(k + 1)));  // independent of each other
  fetches.push_back(broadcast(x + 1.0));
  fetches.push_back(allgather(x - 1.0));
  for (Executor ex : {Executor::serial, Executor::parallel}) {
    SessionOptions opt{.threads = 2, .executor = ex};
    Feeds feeds = {{x, NDArray::zeros({16})}};
    std::vector<Tensor> targets;
    CompileRequest req{&g, &opt, &fetches, &feeds, &targets, [](int) -> NDArray& { throw Error("no variables"); }};
    std::unique_ptr<Plan> p = compile_plan(req);
    int previous = -1, collectives = 0;
    for (size_t i = 0; i < p->order.size(); ++i) {
      const PNode& n = p->nodes[size_t(p->order[i])];
      if (!n.op || !n.op->collective) continue;
      ++collectives;
      if (previous >= 0) {
        const auto& d = p->deps[i];
        CHECK_MESSAGE(std::find(d.begin(), d.end(), previous) != d.end(), n.name,
                      " does not wait for the collective before it");
      }
      previous = int(i);
    }
    CHECK(collectives == 8);
  }
}
