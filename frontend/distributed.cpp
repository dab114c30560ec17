#include "frontend/distributed.hpp"

#include "core/comm.hpp"
#include "frontend/nn.hpp"
#include "frontend/optim.hpp"
#include "ops/ops.hpp"

namespace loom::dist {

int rank() { return communicator()->rank(); }
int size() { return communicator()->size(); }

namespace {

Tensor row_count(const Tensor& batch) {
  LOOM_CHECK(batch.valid() && !batch.shape().empty(), "dist: the batch tensor must have a batch dimension (dim 0)");
  return size(batch, {0}, float32);
}

/// sum_r n_r * mean_r / sum_r n_r; a rank without rows adds 0 (its mean of nothing is NaN).
Tensor weighted_mean(const Tensor& local_mean, const Tensor& rows, const Tensor& total_rows) {
  LOOM_CHECK(local_mean.valid() && local_mean.shape().empty() && is_floating(local_mean.dtype()),
             "dist::global_mean: expected a floating scalar, got ", local_mean.valid() ? S(local_mean.shape()) : S({}));
  Tensor n = cast(rows, local_mean.dtype());
  Tensor part = where(n > 0.0, local_mean * n, 0.0);
  return allreduce(part) / cast(total_rows, local_mean.dtype());
}

Tensor graph_group(const std::vector<Tensor>& ops, const char* name) {
  LOOM_CHECK(!ops.empty(), "dist::", name, ": no variables");
  return group(ops, name);
}

}  // namespace

Tensor global_mean(const Tensor& local_mean, const Tensor& batch) {
  Tensor n = row_count(batch);
  return weighted_mean(local_mean, n, allreduce(n));
}

Tensor global_sum(const Tensor& x) { return allreduce(x, Reduction::sum); }

Tensor broadcast_target(const std::vector<Tensor>& variables) {
  std::vector<Tensor> ops;
  for (const Tensor& v : variables) ops.push_back(assign(v, broadcast(v, 0)));
  return graph_group(ops, "broadcast_variables");
}

Tensor average_target(const std::vector<Tensor>& variables) {
  std::vector<Tensor> floats;
  for (const Tensor& v : variables)
    if (is_floating(v.dtype())) floats.push_back(v);
  if (floats.empty()) return graph_group({}, "average_variables");
  std::vector<Tensor> means = allreduce(floats, Reduction::mean), ops;
  for (size_t i = 0; i < floats.size(); ++i) ops.push_back(assign(floats[i], means[i]));
  return graph_group(ops, "average_variables");
}

DataParallel::DataParallel(optim::Optimizer& optimizer, Options options) : opt_(optimizer), options_(options) {
  LOOM_CHECK(options_.bucket_bytes > 0, "DataParallel: bucket_bytes must be positive");
}

std::pair<Tensor, Tensor> DataParallel::rows(const Tensor& batch) {
  if (!batch_.valid() || !batch_.is(batch)) {
    batch_ = batch;
    rows_ = row_count(batch);
    total_rows_ = allreduce(rows_);
  }
  return {rows_, total_rows_};
}

Tensor DataParallel::minimize(const Tensor& loss, const Tensor& batch) {
  const std::string& name = opt_.name();
  LOOM_CHECK(loss.valid() && loss.shape().empty() && is_floating(loss.dtype()), name,
             ": DataParallel.minimize needs a floating scalar loss");
  auto [n, total] = rows(batch);
  std::vector<Tensor> grads;
  {
    auto scope = loss.graph().scope(name);
    // The average over ranks of (R * n_r / N) * grad_r is the gradient of the global mean.
    Tensor w = stop_gradient(cast(n * double(size()) / total, loss.dtype()));
    grads = gradients(where(n > 0.0, loss * w, 0.0), opt_.parameters(), {}, {.unreachable_as_zero = false});
  }
  return opt_.apply_gradients(allreduce_gradients(grads));
}

std::vector<Tensor> DataParallel::allreduce_gradients(const std::vector<Tensor>& grads) {
  const std::vector<Tensor>& params = opt_.parameters();
  LOOM_CHECK(grads.size() == params.size(), opt_.name(), ": DataParallel: ", grads.size(), " gradients for ",
             params.size(), " parameters");
  buckets_.clear();
  std::vector<Tensor> out(grads.size());
  std::vector<size_t> bucket;
  size_t bytes = 0;
  auto flush = [&] {
    if (bucket.empty()) return;
    std::vector<Tensor> xs;
    for (size_t i : bucket) xs.push_back(grads[i]);
    std::vector<Tensor> ys = allreduce(xs, Reduction::mean);
    for (size_t k = 0; k < bucket.size(); ++k) out[bucket[k]] = ys[k];
    buckets_.push_back(bucket);
    bucket.clear();
    bytes = 0;
  };
  if (params.empty()) return out;
  auto scope = params[0].graph().scope(opt_.name());
  for (size_t k = params.size(); k-- > 0;) {  // the backward pass makes the last layers' gradients first
    const Tensor& g = grads[k];
    if (!g.valid()) continue;  // no gradient on any rank (the graphs are the same): nothing to reduce
    LOOM_CHECK(is_static(g.shape()), opt_.name(), ": DataParallel: the gradient of '", params[k].name(),
               "' has a dynamic shape");
    if (!bucket.empty() && grads[bucket[0]].dtype() != g.dtype()) flush();
    bucket.push_back(k);
    bytes += size_t(numel(g.shape())) * dtype_size(g.dtype());
    if (bytes >= options_.bucket_bytes) flush();
  }
  flush();
  return out;
}

Tensor DataParallel::global_mean(const Tensor& local_mean, const Tensor& batch) {
  auto [n, total] = rows(batch);
  return weighted_mean(local_mean, n, total);
}

Tensor DataParallel::broadcast_target(const nn::Module* module) {
  std::vector<Tensor> vars = opt_.parameters();
  for (const Tensor& v : opt_.state()) vars.push_back(v);
  if (module)
    for (const auto& [name, b] : module->named_buffers()) vars.push_back(b);
  return dist::broadcast_target(vars);
}

}  // namespace loom::dist
