#!/usr/bin/env python3
"""PyTorch (and JAX) peers of loom's bench_attention (called by it; prints "key value" lines).

For each shape B,H,T,D (float32, q = k = v shapes [B, H, T, D]):
  torch.<T>.fwd_ms      F.scaled_dot_product_attention forward
  torch.<T>.fwdbwd_ms   forward + backward (gradients of sum(out * w) w.r.t. q, k, v)
  torch.<T>.threads     the thread count that was fastest (of --threads)
  jax.<T>.fwd_ms / jax.<T>.fwdbwd_ms   jax.nn.dot_product_attention under jit (when JAX imports)
Medians over repetitions lasting at least --min-seconds. The library and its
tests never use this script; ./build.sh bench-* installs the venv it runs in.
"""

import argparse
import statistics
import sys
import time


def timed(fn, min_seconds, min_reps=3):
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 500:
            break
    return statistics.median(times)


def torch_side(shapes, causal, threads, min_seconds):
    import torch
    import torch.nn.functional as F

    for b, h, t, d in shapes:
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.rand(b, h, t, d, generator=gen) - 0.5 for _ in range(3))
        w = torch.rand(b, h, t, d, generator=gen)
        qg, kg, vg = (x.clone().requires_grad_(True) for x in (q, k, v))

        def fwd():
            with torch.no_grad():
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

        def fwdbwd():
            out = F.scaled_dot_product_attention(qg, kg, vg, is_causal=causal)
            return torch.autograd.grad((out * w).sum(), (qg, kg, vg))

        best = None
        for n in threads:
            torch.set_num_threads(n)
            f, fb = timed(fwd, min_seconds), timed(fwdbwd, min_seconds)
            if best is None or fb < best[1]:
                best = (f, fb, n)
        print(f"torch.{t}.fwd_ms {best[0] * 1e3:.4f}")
        print(f"torch.{t}.fwdbwd_ms {best[1] * 1e3:.4f}")
        print(f"torch.{t}.threads {best[2]}")
        sys.stdout.flush()


def jax_side(shapes, causal, min_seconds):
    try:
        import jax
        import jax.numpy as jnp
    except Exception as e:  # JAX is optional
        print(f"# no JAX: {e}", file=sys.stderr)
        return
    for b, h, t, d in shapes:
        key = jax.random.PRNGKey(0)
        kq, kk, kv, kw = jax.random.split(key, 4)
        # jax.nn.dot_product_attention takes [B, T, H, D].
        q, k, v, w = (jax.random.uniform(x, (b, t, h, d)) - 0.5 for x in (kq, kk, kv, kw))
        fwd = jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=causal))
        loss = lambda q, k, v: jnp.sum(jax.nn.dot_product_attention(q, k, v, is_causal=causal) * w)
        fwdbwd = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        f = timed(lambda: fwd(q, k, v).block_until_ready(), min_seconds)
        fb = timed(lambda: [g.block_until_ready() for g in fwdbwd(q, k, v)], min_seconds)
        print(f"jax.{t}.fwd_ms {f * 1e3:.4f}")
        print(f"jax.{t}.fwdbwd_ms {fb * 1e3:.4f}")
        sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", required=True, help="B,H,T,D;B,H,T,D;...")
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--threads", default="1,2", help="PyTorch thread counts to try (fastest kept)")
    ap.add_argument("--min-seconds", type=float, default=1.0)
    ap.add_argument("--no-jax", action="store_true")
    a = ap.parse_args()
    shapes = [tuple(int(x) for x in s.split(",")) for s in a.shapes.split(";") if s]
    torch_side(shapes, a.causal, [int(n) for n in a.threads.split(",")], a.min_seconds)
    if not a.no_jax:
        jax_side(shapes, a.causal, a.min_seconds)


if __name__ == "__main__":
    main()
