#!/usr/bin/python3
"""JAX peer of loom's train_lm, for samples/bench_lm --jax.

The same language model as samples/lm_torch.py (and loom's
nn::LanguageModel), written functionally: embedding, dropout, LSTM (or GRU,
RNN) layers scanned over time with jax.lax.scan, dropout, decoder; one jitted
step does forward, backward, global-norm clipping and the SGD update, like
loom's one Session::run. Same corpus reader, batchify/get_batch, state carried
across batches (no gradient into the previous batch) and reset each epoch,
learning-rate annealing and initialization scheme as lm_torch.py.
--model transformer: lm_torch.py's TransformerModel (pre-norm, causal,
learned positions, dropout on the attention weights too), with Adam.

  python samples/lm_jax.py --data ~/.cache/loom/fortunes-ptb --epochs 1 --threads 1
  ... --serve     the line protocol of lm_torch.py ("epoch", "steps N", "test", "quit")
"""

import argparse
import json
import math
import os
import sys
import time


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default="lstm", choices=["rnn", "lstm", "gru", "transformer"])
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--ffn", type=int, default=1024)
    ap.add_argument("--opt", default="sgd", choices=["sgd", "adam"])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--embed", type=int, default=200)
    ap.add_argument("--hidden", type=int, default=200)
    ap.add_argument("--bptt", type=int, default=35)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--eval-batch", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--lr", type=float, default=20.0)
    ap.add_argument("--clip", type=float, default=0.25)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--anneal", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--serve", action="store_true")
    return ap.parse_args()


a = parse()
# XLA's CPU thread pool is fixed when JAX starts.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           f" --xla_cpu_multi_thread_eigen={'true' if a.threads > 1 else 'false'}"
                           f" intra_op_parallelism_threads={a.threads}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lm_corpus import Corpus  # noqa: E402  (the same reader as lm_torch.py)

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def init_transformer(key, vocab):
    d, f, L = a.d_model, a.ffn, a.layers
    keys = iter(jax.random.split(key, 3 + 6 * L))
    u = lambda k, shape, b: jax.random.uniform(k, shape, jnp.float32, -b, b)  # noqa: E731
    ones, zeros = (lambda n: jnp.ones((n,), jnp.float32)), (lambda n: jnp.zeros((n,), jnp.float32))  # noqa: E731
    p = {"encoder": u(next(keys), (vocab, d), 0.1), "pos": jax.random.normal(next(keys), (a.bptt, d), jnp.float32),
         "decoder_w": u(next(keys), (d, vocab), 0.1), "decoder_b": zeros(vocab), "norm_w": ones(d), "norm_b": zeros(d),
         "layers": []}
    for _ in range(L):
        p["layers"].append({
            "in_w": u(next(keys), (3 * d, d), math.sqrt(6 / (4 * d))), "in_b": zeros(3 * d),
            "out_w": u(next(keys), (d, d), 1 / math.sqrt(d)), "out_b": zeros(d),
            "w1": u(next(keys), (f, d), 1 / math.sqrt(d)), "b1": u(next(keys), (f,), 1 / math.sqrt(d)),
            "w2": u(next(keys), (d, f), 1 / math.sqrt(f)), "b2": u(next(keys), (d,), 1 / math.sqrt(f)),
            "n1w": ones(d), "n1b": zeros(d), "n2w": ones(d), "n2b": zeros(d)})
    return p


def layer_norm(x, w, b):
    mu = jnp.mean(x, -1, keepdims=True)
    var = jnp.mean(jnp.square(x - mu), -1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + 1e-5) * w + b


def transformer_forward(p, x, key, train):
    T, B = x.shape
    d, H = a.d_model, a.heads
    keys = iter(jax.random.split(key, 1 + 4 * a.layers))
    y = dropout(next(keys), p["encoder"][x.T] * math.sqrt(d) + p["pos"][:T], train)  # [B, T, d]
    causal = jnp.tril(jnp.ones((T, T), bool))
    for w in p["layers"]:
        qkv = layer_norm(y, w["n1w"], w["n1b"]) @ w["in_w"].T + w["in_b"]
        q, k, v = (z.reshape(B, T, H, d // H) for z in jnp.split(qkv, 3, axis=-1))
        s = jnp.einsum("bthd,bshd->bhts", q, k) / math.sqrt(d // H)
        att = dropout(next(keys), jax.nn.softmax(jnp.where(causal, s, -jnp.inf), axis=-1), train)
        o = jnp.einsum("bhts,bshd->bthd", att, v).reshape(B, T, d) @ w["out_w"].T + w["out_b"]
        y = y + dropout(next(keys), o, train)
        h = dropout(next(keys), jax.nn.relu(layer_norm(y, w["n2w"], w["n2b"]) @ w["w1"].T + w["b1"]), train)
        y = y + dropout(next(keys), h @ w["w2"].T + w["b2"], train)
    y = layer_norm(y, p["norm_w"], p["norm_b"]).transpose(1, 0, 2)  # [T, B, d]
    return y @ p["decoder_w"] + p["decoder_b"]


def init_params(key, vocab):
    if a.model == "transformer":
        return init_transformer(key, vocab)
    G, H = GATES[a.model], a.hidden
    keys = iter(jax.random.split(key, 3 + 4 * a.layers))
    u = lambda k, shape, b: jax.random.uniform(k, shape, jnp.float32, -b, b)  # noqa: E731
    p = {"encoder": u(next(keys), (vocab, a.embed), 0.1),
         "decoder_w": u(next(keys), (H, vocab), 0.1), "decoder_b": jnp.zeros((vocab,), jnp.float32), "layers": []}
    b = 1 / math.sqrt(H)
    for l in range(a.layers):
        d = a.embed if l == 0 else H
        p["layers"].append({"w_ih": u(next(keys), (G * H, d), b), "w_hh": u(next(keys), (G * H, H), b),
                            "b_ih": u(next(keys), (G * H,), b), "b_hh": u(next(keys), (G * H,), b)})
    return p


def layer(w, x, h, c):
    H = a.hidden
    gi = x @ w["w_ih"].T + w["b_ih"]  # all steps in one GEMM

    def step(carry, g):
        h, c = carry
        gh = h @ w["w_hh"].T + w["b_hh"]
        if a.model == "lstm":
            pre = g + gh
            i, f, gg, o = (pre[:, k * H:(k + 1) * H] for k in range(4))
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(gg)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
        elif a.model == "gru":
            r = jax.nn.sigmoid(g[:, :H] + gh[:, :H])
            z = jax.nn.sigmoid(g[:, H:2 * H] + gh[:, H:2 * H])
            n = jnp.tanh(g[:, 2 * H:] + r * gh[:, 2 * H:])
            h = (1 - z) * n + z * h
        else:
            h = jnp.tanh(g + gh)
        return (h, c), h

    (h, c), ys = jax.lax.scan(step, (h, c), gi)
    return ys, h, c


def dropout(key, x, train):
    if not train or a.dropout == 0:
        return x
    keep = jax.random.bernoulli(key, 1 - a.dropout, x.shape)
    return jnp.where(keep, x / (1 - a.dropout), 0)


def forward(params, x, h0, c0, key, train):
    if a.model == "transformer":
        return transformer_forward(params, x, key, train), h0, c0
    keys = jax.random.split(key, a.layers + 2)
    y = dropout(keys[0], params["encoder"][x], train)
    hs, cs = [], []
    for l, w in enumerate(params["layers"]):
        y, h, c = layer(w, y, h0[l], c0[l])
        if l + 1 < a.layers:
            y = dropout(keys[l + 1], y, train)
        hs.append(h)
        cs.append(c)
    y = dropout(keys[-1], y, train)
    logits = y @ params["decoder_w"] + params["decoder_b"]
    return logits, jnp.stack(hs), jnp.stack(cs)


def loss_fn(params, x, t, h0, c0, key, train):
    logits, h, c = forward(params, x, h0, c0, key, train)
    logp = jax.nn.log_softmax(logits.reshape(-1, logits.shape[-1]))
    return -jnp.mean(jnp.take_along_axis(logp, t[:, None], axis=1)), (h, c)


@jax.jit
def train_step(params, opt, x, t, h0, c0, key, lr):
    (loss, (h, c)), g = jax.value_and_grad(loss_fn, has_aux=True)(params, x, t, h0, c0, key, True)
    leaves = jax.tree_util.tree_leaves(g)
    norm = jnp.sqrt(sum(jnp.sum(x * x) for x in leaves))
    scale = jnp.minimum(1.0, a.clip / (norm + 1e-6)) if a.clip > 0 else 1.0
    g = jax.tree_util.tree_map(lambda d: scale * d, g)
    if a.opt == "sgd":
        return jax.tree_util.tree_map(lambda p, d: p - lr * d, params, g), opt, loss, h, c
    # PyTorch's Adam (betas 0.9, 0.999, eps 1e-8)
    m, v, n = opt
    n = n + 1
    m = jax.tree_util.tree_map(lambda m, d: 0.9 * m + 0.1 * d, m, g)
    v = jax.tree_util.tree_map(lambda v, d: 0.999 * v + 0.001 * d * d, v, g)
    c1, c2 = 1 - 0.9 ** n, 1 - 0.999 ** n
    params = jax.tree_util.tree_map(lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + 1e-8), params, m, v)
    return params, (m, v, n), loss, h, c


@jax.jit
def eval_step(params, x, t, h0, c0):
    loss, (h, c) = loss_fn(params, x, t, h0, c0, jax.random.PRNGKey(0), False)
    return loss, h, c


def batchify(ids, bsz):
    n = len(ids) // bsz
    return np.asarray(ids[: n * bsz], dtype=np.int32).reshape(bsz, n).T.copy()


def main():
    corpus = Corpus(a.data)
    vocab = len(corpus.dictionary.idx2word)
    train, valid, test = batchify(corpus.train, a.batch), batchify(corpus.valid, a.eval_batch), batchify(corpus.test, a.eval_batch)
    key = jax.random.PRNGKey(a.seed)
    key, k0 = jax.random.split(key)
    params = init_params(k0, vocab)
    zero = jax.tree_util.tree_map(jnp.zeros_like, params)
    state = {"params": params, "opt": (zero, zero, jnp.zeros((), jnp.float32)), "key": key, "lr": a.lr,
             "best": math.inf, "epoch": 0}

    def zeros(b):
        z = jnp.zeros((a.layers, b, a.hidden), jnp.float32)
        return z, z

    def run_train(count=None):
        h, c = zeros(a.batch)
        total, tokens, steps = 0.0, 0, 0
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(0, train.shape[0] - 1, a.bptt):
            if count is not None and steps == count:
                break
            n = min(a.bptt, train.shape[0] - 1 - i)
            x, t = train[i:i + n], train[i + 1:i + 1 + n].reshape(-1)
            state["key"], k = jax.random.split(state["key"])
            state["params"], state["opt"], loss, h, c = train_step(state["params"], state["opt"], x, t, h, c, k,
                                                                   state["lr"])
            total += float(loss) * t.size
            tokens += t.size
            steps += 1
        state["cpu"] = time.process_time() - c0
        return total / tokens, tokens, time.perf_counter() - t0

    def evaluate(source):
        h, c = zeros(a.eval_batch)
        total, tokens = 0.0, 0
        for i in range(0, source.shape[0] - 1, a.bptt):
            n = min(a.bptt, source.shape[0] - 1 - i)
            x, t = source[i:i + n], source[i + 1:i + 1 + n].reshape(-1)
            loss, h, c = eval_step(state["params"], x, t, h, c)
            total += float(loss) * t.size
            tokens += t.size
        return total / tokens

    def epoch():
        state["epoch"] += 1
        lr = state["lr"]
        loss, tokens, seconds = run_train()
        val = evaluate(valid)
        if val < state["best"]:
            state["best"] = val
        elif a.anneal > 1:
            state["lr"] /= a.anneal
        return {"epoch": state["epoch"], "train_ppl": math.exp(loss), "valid_ppl": math.exp(val), "seconds": seconds,
                "tokens_per_s": tokens / seconds, "lr": lr, "threads": a.threads}

    if a.serve:
        print(json.dumps({"ready": True, "threads": a.threads, "vocab": vocab}), flush=True)
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "epoch":
                print(json.dumps(epoch()), flush=True)
            elif cmd.startswith("steps "):
                n = int(cmd.split()[1])
                _, tokens, seconds = run_train(n)
                print(json.dumps({"steps": n, "seconds": seconds, "cpu_seconds": state["cpu"], "tokens": tokens,
                                  "threads": a.threads}), flush=True)
            elif cmd == "test":
                print(json.dumps({"test_ppl": math.exp(evaluate(test))}), flush=True)
            elif cmd == "quit":
                break
            else:
                print(json.dumps({"error": f"unknown command {cmd!r}"}), flush=True)
        return
    for _ in range(a.epochs):
        print(json.dumps(epoch()), flush=True)
    print(json.dumps({"test_ppl": math.exp(evaluate(test))}), flush=True)


if __name__ == "__main__":
    main()
