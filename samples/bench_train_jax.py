#!/usr/bin/python3
"""JAX peer of loom's train_mnist, for samples/bench_train (next to PyTorch's).

Trains the same models as samples/torch_models.py (softmax, mlp 784-512-10,
the course's MLPResNet with batch norm and dropout) on the same Fashion-MNIST
files with the same batch size, input normalization and Adam (PyTorch's: L2
weight decay added to the gradient), PyTorch's default initialization, as one
jax.jit-compiled training step (forward, backward and update: what XLA fuses).
Prints one JSON object per epoch; the protocol is bench_train_torch.py's:

  .../python samples/bench_train_jax.py --model mlp --epochs 2
  ... --serve    read commands from stdin: "epoch" trains one epoch and prints
                 its JSON line, "steps N" times N training steps, "quit" ends.

Needs jax and numpy (./build.sh bench-train installs them into a venv). Both
batch shapes (full and the epoch's last) are compiled before "ready", so no
epoch pays for XLA's compilation.
"""

import argparse
import json
import os
import sys
import time

from fashion_mnist import load_numpy

MOMENTUM, EPS = 0.1, 1e-5  # BatchNorm1d's defaults


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mlp", choices=["softmax", "mlp", "mlpresnet"])
    ap.add_argument("--hidden", type=int, default=0, help="hidden width (default: 512 mlp, 100 mlpresnet)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=0, help="1: XLA single-threaded; 0: all cores (XLA's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu (the only one this peer supports)")
    return ap.parse_args()


a = parse_args()
if a.threads == 1:  # before jax is imported
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def linear(key, fan_in, fan_out):
    """PyTorch's nn.Linear initialization: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias."""
    kw, kb = jax.random.split(key)
    bound = 1.0 / np.sqrt(fan_in)
    return {"w": jax.random.uniform(kw, (fan_in, fan_out), jnp.float32, -bound, bound),
            "b": jax.random.uniform(kb, (fan_out,), jnp.float32, -bound, bound)}


def batch_norm(features):
    return {"gamma": jnp.ones((features,), jnp.float32), "beta": jnp.zeros((features,), jnp.float32)}


def init(key, model, hidden):
    """(parameters, batch-norm running statistics)."""
    keys = iter(jax.random.split(key, 16))
    if model == "softmax":
        return {"out": linear(next(keys), 784, 10)}, {}
    if model == "mlp":
        return {"l1": linear(next(keys), 784, hidden), "l2": linear(next(keys), hidden, 10)}, {}
    params, stats = {"in": linear(next(keys), 784, hidden), "out": linear(next(keys), hidden, 10)}, {}
    half = hidden // 2
    for i in range(3):
        params[f"b{i}"] = {"l1": linear(next(keys), hidden, half), "n1": batch_norm(half),
                           "l2": linear(next(keys), half, hidden), "n2": batch_norm(hidden)}
        stats[f"b{i}"] = {"n1": {"mean": jnp.zeros(half), "var": jnp.ones(half)},
                          "n2": {"mean": jnp.zeros(hidden), "var": jnp.ones(hidden)}}
    return params, stats


def dense(p, x):
    return x @ p["w"] + p["b"]


def norm(p, s, x, train):
    """BatchNorm1d: batch statistics in training (running ones updated, unbiased variance), running ones in eval."""
    if not train:
        return (x - s["mean"]) / jnp.sqrt(s["var"] + EPS) * p["gamma"] + p["beta"], s
    mean, var = x.mean(0), x.var(0)
    n = x.shape[0]
    new = {"mean": (1 - MOMENTUM) * s["mean"] + MOMENTUM * mean,
           "var": (1 - MOMENTUM) * s["var"] + MOMENTUM * var * n / (n - 1)}
    return (x - mean) / jnp.sqrt(var + EPS) * p["gamma"] + p["beta"], new


def forward(model, params, stats, x, key, train):
    """Logits and the updated batch-norm statistics."""
    if model == "softmax":
        return dense(params["out"], x), stats
    if model == "mlp":
        return dense(params["l2"], jax.nn.relu(dense(params["l1"], x))), stats
    h = jax.nn.relu(dense(params["in"], x))
    new_stats = {}
    for i in range(3):
        p, s = params[f"b{i}"], stats[f"b{i}"]
        y, n1 = norm(p["n1"], s["n1"], dense(p["l1"], h), train)
        y = jax.nn.relu(y)
        if train:  # Dropout(0.1), scaled in training
            keep = jax.random.bernoulli(jax.random.fold_in(key, i), 0.9, y.shape)
            y = jnp.where(keep, y / 0.9, 0.0)
        y, n2 = norm(p["n2"], s["n2"], dense(p["l2"], y), train)
        h = jax.nn.relu(y + h)
        new_stats[f"b{i}"] = {"n1": n1, "n2": n2}
    return dense(params["out"], h), new_stats


def make_step(model, lr, wd):
    b1, b2, eps = 0.9, 0.999, 1e-8

    def loss_fn(params, stats, x, y, key):
        logits, new_stats = forward(model, params, stats, x, key, True)
        loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))
        return loss, (logits, new_stats)

    @jax.jit
    def step(params, stats, opt, x, y, key):
        (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, x, y, key)
        t = opt["t"] + 1
        grads = jax.tree_util.tree_map(lambda g, p: g + wd * p, grads, params)  # PyTorch's Adam weight decay
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, opt["m"], grads)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, opt["v"], grads)
        step_size = lr / (1 - b1 ** t)
        c2 = jnp.sqrt(1 - b2 ** t)
        params = jax.tree_util.tree_map(lambda p, m, v: p - step_size * m / (jnp.sqrt(v) / c2 + eps), params, m, v)
        correct = jnp.sum(jnp.argmax(logits, 1) == y)
        return params, new_stats, {"t": t, "m": m, "v": v}, loss, correct

    @jax.jit
    def evaluate(params, stats, x, y):
        logits, _ = forward(model, params, stats, x, None, False)
        return jnp.sum(jnp.argmax(logits, 1) == y)

    return step, evaluate


def main():
    hidden = a.hidden or (100 if a.model == "mlpresnet" else 512)
    xtr, ytr = load_numpy(a.data, "train")
    xte, yte = load_numpy(a.data, "test")
    key = jax.random.PRNGKey(a.seed)
    params, stats = init(key, a.model, hidden)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    opt = {"t": jnp.zeros((), jnp.float32), "m": zeros, "v": zeros}
    step, evaluate = make_step(a.model, a.lr, a.wd)
    n = xtr.shape[0]
    rng = np.random.default_rng(a.seed)
    state = {"params": params, "stats": stats, "opt": opt, "key": key}

    def train_step(idx):
        s = state
        s["key"], sub = jax.random.split(s["key"])
        s["params"], s["stats"], s["opt"], loss, correct = step(s["params"], s["stats"], s["opt"], xtr[idx], ytr[idx], sub)
        return float(loss), int(correct)

    # Compile both batch shapes now (on copies of the state: training starts from the initial one).
    for size in {a.batch, n % a.batch or a.batch}:
        jax.block_until_ready(step(params, stats, opt, xtr[:size], ytr[:size], key))
    jax.block_until_ready(evaluate(params, stats, xte, yte))

    def steps(count):
        perm = rng.permutation(n)
        t0 = time.perf_counter()
        for k in range(count):
            i = (k * a.batch) % (n - a.batch + 1)
            train_step(perm[i:i + a.batch])
        return {"steps": count, "seconds": time.perf_counter() - t0, "threads": a.threads}

    def epoch(e):
        perm = rng.permutation(n)
        t0 = time.perf_counter()
        total_loss, correct = 0.0, 0
        for i in range(0, n, a.batch):
            idx = perm[i:i + a.batch]
            loss, right = train_step(idx)
            total_loss += loss * len(idx)
            correct += right
        seconds = time.perf_counter() - t0
        test_acc = int(evaluate(state["params"], state["stats"], xte, yte)) / xte.shape[0]
        return {"epoch": e, "train_loss": total_loss / n, "train_acc": correct / n, "test_acc": test_acc,
                "seconds": seconds, "images_per_s": n / seconds, "threads": a.threads}

    if a.serve:
        print(json.dumps({"ready": True, "threads": a.threads}), flush=True)
        e = 0
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "epoch":
                e += 1
                print(json.dumps(epoch(e)), flush=True)
            elif cmd.startswith("steps "):
                print(json.dumps(steps(int(cmd.split()[1]))), flush=True)
            elif cmd == "quit":
                break
            elif cmd:
                print(json.dumps({"error": f"unknown command {cmd}"}), flush=True)
    else:
        for e in range(1, a.epochs + 1):
            print(json.dumps(epoch(e)), flush=True)


if __name__ == "__main__":
    main()
