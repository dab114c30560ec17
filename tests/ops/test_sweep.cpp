// The registry-driven sweep: every registered op is exercised through its own
// examples; kernels must match the op's reference implementation in float32
// and float64, and every differentiable op must pass a numeric gradient check
// (central differences in float64). A new op without examples fails here.

#include <set>

#include "ops/check.hpp"
#include "tests/util.hpp"

using namespace loom;

namespace {

// Ops the sweep cannot run eagerly, each tested elsewhere.
const std::set<std::string> kTestedElsewhere = {
    "placeholder", "constant", "variable", "no_op",  // structural: tests/core/test_session.cpp
    "assign",                                        // needs a variable: tests/core/test_session.cpp
};

}  // namespace

TEST_SUITE("ops/sweep") {
  TEST_CASE("every op has examples and a CPU kernel (or is a view)") {
    for (const OpDef* op : registered_ops()) {
      CAPTURE(op->name);
      CHECK_MESSAGE(op->attrs.declared(), "op '", op->name, "' declares no attribute schema (OpDef::attrs; ",
                    "AttrSchema::none() for an op without attributes)");
      if (kTestedElsewhere.count(op->name)) continue;
      CHECK_MESSAGE(bool(op->examples), "op '", op->name, "' has no examples: add them next to its definition");
      CHECK_MESSAGE(bool(op->infer), "op '", op->name, "' has no inference");
      if (op->view || op->no_kernel) continue;
      bool any = false;
      for (const KernelEntry& k : registered_kernels()) any |= k.op == op->name && k.device == DeviceKind::cpu;
      CHECK_MESSAGE(any, "op '", op->name, "' has no CPU kernel");
    }
  }

  TEST_CASE("forward matches the reference (float32 and float64)") {
    int checked = 0;
    for (const OpDef* op : registered_ops()) {
      if (kTestedElsewhere.count(op->name) || !op->examples) continue;
      for (const OpExample& ex : op->examples(17)) {
        for (DType t : {float32, float64}) {
          CAPTURE(op->name);
          CAPTURE(ex.label);
          CAPTURE(dtype_name(t));
          CheckResult r = check_forward(*op, ex, t);
          CHECK_MESSAGE(r.ok, r.detail);
          ++checked;
        }
      }
    }
    CHECK(checked > 100);
  }

  TEST_CASE("every differentiable op passes a numeric gradient check") {
    for (const OpDef* op : registered_ops()) {
      if (kTestedElsewhere.count(op->name) || !op->examples || !op->grad) continue;
      int with_grad = 0;
      for (const OpExample& ex : op->examples(23)) {
        if (!ex.check_grad) continue;
        CAPTURE(op->name);
        CAPTURE(ex.label);
        CheckResult r = check_gradient(*op, ex);
        CHECK_MESSAGE(r.ok, r.detail);
        ++with_grad;
      }
      CHECK_MESSAGE(with_grad > 0, "differentiable op '", op->name, "' has no example with a gradient check");
    }
  }
}
