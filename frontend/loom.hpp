#pragma once
/// loom: one include for users. The graph and session (core/), the op library
/// (ops/), and the frontend: nn modules, initializers, optimizers, data
/// loading and checkpoints.
///
///     #include "frontend/loom.hpp"
///     using namespace loom;
///     Graph g;
///     Tensor x = g.placeholder("x", {-1, 784}), y = g.placeholder("y", {-1}, int64);
///     nn::Sequential model{nn::Linear(784, 256), nn::ReLU(), nn::Linear(256, 10)};
///     Tensor loss = nn::cross_entropy(model(x), y);
///     optim::Adam opt(model, {.lr = 1e-3});
///     Tensor step = opt.minimize(loss);
///     Session s(g, {.seed = 1});
///     s.run({loss}, {{x, images}, {y, labels}}, {step});

#include "core/autodiff.hpp"
#include "core/graph.hpp"
#include "core/ndarray.hpp"
#include "core/session.hpp"
#include "frontend/checkpoint.hpp"
#include "frontend/data.hpp"
#include "frontend/init.hpp"
#include "frontend/nn.hpp"
#include "frontend/optim.hpp"
#include "ops/ops.hpp"
// Sequence models and text corpora (issue 12).
#include "frontend/rnn.hpp"
#include "frontend/text.hpp"
