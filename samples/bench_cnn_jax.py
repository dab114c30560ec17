#!/usr/bin/python3
"""JAX peer of loom's train_cnn, for samples/bench_train: the same cnn and
resnet9 (samples/torch_models.py, loom's nn::CNN and nn::ResNet9) in plain JAX,
trained with one jit-compiled step (forward, backward, Adam, batch-norm running
statistics) on the same Fashion-MNIST files, batch size, optimizer and
normalization, with PyTorch's default initialization. Activations are NHWC
inside (XLA's preferred layout on CPU), converted once when the data is loaded.

  python samples/bench_cnn_jax.py --model resnet9 --epochs 1
  ... --serve    read commands from stdin: "epoch" trains one epoch and prints
                 its JSON line, "steps N" times N training steps, "quit" ends.

--threads N sets XLA's intra-op thread count (0: XLA's default, all cores).
"""

import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np

MEAN, STD = 0.2860, 0.3530  # as loom's trainers


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:3] != b"\0\0\x08":
        raise SystemExit(f"{path}: not a ubyte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != math.prod(dims):
        raise SystemExit(f"{path}: truncated IDX file")
    return arr.reshape(dims)


def load(directory, split):
    prefix = "train" if split == "train" else "t10k"

    def find(base):
        for name in (base + ".gz", base):
            p = os.path.join(directory, name)
            if os.path.exists(p):
                return p
        raise SystemExit(f"no {base}[.gz] in {directory}")

    x = read_idx(find(f"{prefix}-images-idx3-ubyte")).astype(np.float32)
    y = read_idx(find(f"{prefix}-labels-idx1-ubyte")).astype(np.int32)
    return ((x / 255.0 - MEAN) / STD)[..., None], y  # NHWC


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet9", choices=["cnn", "resnet9"])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--serve", action="store_true")
    a, _ = ap.parse_known_args()
    if a.threads > 0:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_cpu_multi_thread_eigen={'true' if a.threads > 1 else 'false'}"
                                   f" intra_op_parallelism_threads={a.threads}")
    import jax
    import jax.numpy as jnp
    from jax import lax

    jax.config.update("jax_platforms", "cpu")

    # ---- parameters (PyTorch's defaults: U(+-1/sqrt(fan_in)) for conv and linear weights and biases)
    key = jax.random.PRNGKey(a.seed)

    def uniform(shape, fan_in):
        nonlocal key
        key, sub = jax.random.split(key)
        b = 1.0 / math.sqrt(fan_in)
        return jax.random.uniform(sub, shape, jnp.float32, -b, b)

    def conv_bn(cin, cout, k, stride):
        return {"w": uniform((k, k, cin, cout), cin * k * k), "gamma": jnp.ones(cout), "beta": jnp.zeros(cout),
                "stride": stride}

    def linear(fin, fout):
        return {"w": uniform((fin, fout), fin), "b": uniform((fout,), fin)}

    if a.model == "cnn":
        layers = [conv_bn(1, 32, 3, 1), "pool", conv_bn(32, 64, 3, 1), "pool", "flatten", linear(64 * 7 * 7, 128),
                  "relu", linear(128, 10)]
    else:
        layers = [conv_bn(1, 16, 7, 4), conv_bn(16, 32, 3, 2), ("res", [conv_bn(32, 32, 3, 1), conv_bn(32, 32, 3, 1)]),
                  conv_bn(32, 64, 3, 2), conv_bn(64, 128, 3, 2),
                  ("res", [conv_bn(128, 128, 3, 1), conv_bn(128, 128, 3, 1)]), "flatten", linear(128, 128), "relu",
                  linear(128, 10)]

    # Split the structure into trainable params, batch-norm statistics and static strides.
    params, stats, strides = [], [], {}

    def collect(spec, path):
        if isinstance(spec, dict) and "gamma" in spec:
            params.append({"w": spec["w"], "gamma": spec["gamma"], "beta": spec["beta"]})
            stats.append({"mean": jnp.zeros_like(spec["gamma"]), "var": jnp.ones_like(spec["gamma"])})
            strides[len(params) - 1] = spec["stride"]
            return ("convbn", len(params) - 1)
        if isinstance(spec, dict):
            params.append(spec)
            return ("linear", len(params) - 1)
        if isinstance(spec, tuple):
            return ("res", [collect(s, path) for s in spec[1]])
        return (spec, None)

    plan = [collect(s, "") for s in layers]
    stat_index = {}
    for i in strides:
        stat_index[i] = len(stat_index)

    def forward(params, stats, x, train):
        new_stats = list(stats)

        def convbn(i, h):
            p, k = params[i], p_stride(i)
            pad = p["w"].shape[0] // 2
            h = lax.conv_general_dilated(h, p["w"], (k, k), [(pad, pad), (pad, pad)],
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
            s = stat_index[i]
            if train:
                mean = h.mean(axis=(0, 1, 2))
                var = h.var(axis=(0, 1, 2))
                n = h.shape[0] * h.shape[1] * h.shape[2]
                new_stats[s] = {"mean": 0.9 * stats[s]["mean"] + 0.1 * mean,
                                "var": 0.9 * stats[s]["var"] + 0.1 * var * n / (n - 1)}
            else:
                mean, var = stats[s]["mean"], stats[s]["var"]
            h = (h - mean) * lax.rsqrt(var + 1e-5) * p["gamma"] + p["beta"]
            return jax.nn.relu(h)

        def run(steps, h):
            for kind, arg in steps:
                if kind == "convbn":
                    h = convbn(arg, h)
                elif kind == "linear":
                    h = h @ params[arg]["w"] + params[arg]["b"]
                elif kind == "res":
                    h = run(arg, h) + h
                elif kind == "pool":
                    h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
                elif kind == "flatten":
                    h = h.transpose(0, 3, 1, 2).reshape(h.shape[0], -1)  # NCHW order, as PyTorch's Flatten
                elif kind == "relu":
                    h = jax.nn.relu(h)
            return h

        return run(plan, x), new_stats

    def p_stride(i):
        return strides[i]

    def loss_fn(params, stats, x, y):
        logits, new_stats = forward(params, stats, x, True)
        logp = jax.nn.log_softmax(logits)
        loss = -jnp.take_along_axis(logp, y[:, None], axis=1).mean()
        return loss, (new_stats, (logits.argmax(1) == y).sum())

    b1, b2, eps = 0.9, 0.999, 1e-8

    @jax.jit
    def train_step(params, stats, m, v, t, x, y):
        (loss, (new_stats, correct)), g = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, x, y)
        t = t + 1
        g = jax.tree_util.tree_map(lambda gi, p: gi + a.wd * p, g, params)
        m = jax.tree_util.tree_map(lambda mi, gi: b1 * mi + (1 - b1) * gi, m, g)
        v = jax.tree_util.tree_map(lambda vi, gi: b2 * vi + (1 - b2) * gi * gi, v, g)
        step = a.lr / (1 - b1 ** t)
        params = jax.tree_util.tree_map(
            lambda p, mi, vi: p - step * mi / (jnp.sqrt(vi / (1 - b2 ** t)) + eps), params, m, v)
        return params, new_stats, m, v, t, loss, correct

    @jax.jit
    def eval_correct(params, stats, x, y):
        logits, _ = forward(params, stats, x, False)
        return (logits.argmax(1) == y).sum()

    xtr, ytr = load(a.data, "train")
    xte, yte = load(a.data, "test")
    n = xtr.shape[0]
    rng = np.random.default_rng(a.seed)
    m = jax.tree_util.tree_map(jnp.zeros_like, params)
    v = jax.tree_util.tree_map(jnp.zeros_like, params)
    state = {"params": params, "stats": stats, "m": m, "v": v, "t": jnp.zeros((), jnp.float32)}

    def run_steps(batches):
        s = state
        total_loss, correct = 0.0, 0
        for idx in batches:
            s["params"], s["stats"], s["m"], s["v"], s["t"], loss, c = train_step(
                s["params"], s["stats"], s["m"], s["v"], s["t"], xtr[idx], ytr[idx])
            total_loss += float(loss) * len(idx)
            correct += int(c)
        return total_loss, correct

    def batches_of(perm, count=None):
        full = [perm[i:i + a.batch] for i in range(0, n - a.batch + 1, a.batch)]  # whole batches: one compiled shape
        return full if count is None else [full[k % len(full)] for k in range(count)]

    run_steps(batches_of(rng.permutation(n), 2))  # compile before timing

    def steps(count):
        t0 = time.perf_counter()
        run_steps(batches_of(rng.permutation(n), count))
        return {"steps": count, "seconds": time.perf_counter() - t0, "threads": a.threads}

    def epoch(e):
        bs = batches_of(rng.permutation(n))
        t0 = time.perf_counter()
        total_loss, correct = run_steps(bs)
        seconds = time.perf_counter() - t0
        images = sum(len(b) for b in bs)
        right = sum(int(eval_correct(state["params"], state["stats"], xte[i:i + 1000], yte[i:i + 1000]))
                    for i in range(0, len(yte), 1000))
        return {"epoch": e, "train_loss": total_loss / images, "train_acc": correct / images,
                # seconds: the whole epoch (n images) at the measured rate; the last partial batch is dropped
                "test_acc": right / len(yte), "seconds": n * seconds / images, "images_per_s": images / seconds,
                "threads": a.threads}

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
