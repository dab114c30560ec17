// remat_example: a training step under a memory budget (the README's
// "Memory budgets: rematerialization"). The plan compiler recomputes
// activations in the backward pass so that the arena fits the budget; the
// losses are bit-identical to the plan without a budget.
//
//   remat_example [budget fraction, default 0.6]

#include <loom/loom.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>

using namespace loom;

int main(int argc, char** argv) {
  char* end = nullptr;
  const double fraction = argc > 1 ? std::strtod(argv[1], &end) : 0.6;
  if (argc > 2 || (argc > 1 && (*end != '\0' || !(fraction > 0 && fraction <= 1)))) {
    std::fprintf(stderr,
                 "usage: remat_example [budget as a fraction of the arena without recomputation, in (0, 1]; "
                 "default 0.6]\n");
    return 2;
  }
  Graph g;
  Tensor x = g.placeholder("x", {-1, 64}), y = g.placeholder("y", {-1}, int64);
  nn::Sequential model;  // 12 hidden layers: activations dominate the arena
  model.push_back(nn::Linear(64, 256));
  for (int i = 0; i < 11; ++i) model.push_back(nn::ReLU()), model.push_back(nn::Linear(256, 256));
  model.push_back(nn::ReLU());
  model.push_back(nn::Linear(256, 10));
  Tensor loss = nn::cross_entropy(model(x), y);
  auto grads = gradients(loss, model.parameters());
  std::vector<Tensor> updates;
  for (size_t i = 0; i < grads.size(); ++i) updates.push_back(assign_sub(model.parameters()[i], grads[i] * 0.05));
  Tensor train = group(updates);
  NDArray xs = NDArray::empty({1024, 64}), ys = NDArray::empty({1024}, int64);
  for (int64_t i = 0; i < xs.numel(); ++i) xs.data<float>()[i] = float((i * 7919) % 1000) / 500 - 1;
  for (int64_t i = 0; i < 1024; ++i) ys.data<int64_t>()[i] = i % 10;
  Feeds feeds{{x, xs}, {y, ys}};

  Session plain(g, {.atomic_updates = false});
  plain.run({loss}, feeds, {train});
  const size_t full = plain.stats().last_plan.arena_bytes;
  const size_t budget = size_t(double(full) * fraction);
  {
    Session s(g, {.atomic_updates = false, .memory_budget = budget, .remat = Remat::automatic});
    try {
      s.run({loss}, feeds, {train});
    } catch (const Error& e) {
      std::fprintf(stderr, "remat_example: %s\n", e.what());
      return 1;
    }
    PlanStats p = s.stats().last_plan;
    std::printf(
        "arena %zu bytes (budget %zu, %zu without remat), strategy %s, %d nodes recomputed, +%.1f%% FLOPs; "
        "compiled in %.1f ms (%.1f ms without a budget); no budget under %zu bytes can be met (%s)\n",
        p.arena_bytes, budget, p.arena_without_remat, p.remat_strategy.c_str(), p.recomputed,
        100 * p.recompute_flops / p.plan_flops, p.compile_ms, plain.stats().last_plan.compile_ms, p.remat_floor,
        p.remat_floor_at.c_str());
  }
  // As the README shows it (a budget in bytes):
  (void)[&] {
    Session s(g, {.memory_budget = 64 << 20, .remat = Remat::automatic});
    s.run({loss}, feeds, {train});
    PlanStats p = s.stats().last_plan;  // arena_bytes <= 64 MiB
    // p.arena_without_remat, p.remat_strategy ("chen" or "greedy"), p.recomputed (nodes),
    // p.recompute_flops / p.plan_flops (the work added), p.remat_floor (no budget below it can be met)
    return p.arena_bytes;
  }
  ();
  return 0;
}
