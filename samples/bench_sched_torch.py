#!/usr/bin/python3
"""PyTorch eager peer of loom's bench_sched (called by it; prints "key value" lines).

  torch.chain.<n>.us_per_op    a chain of n tiny element-wise ops (alternating
                               y + 0.5 and y * 1.0001 on 4 floats), per op
  torch.mlp.ms_per_step        MLP 784-512-10 training step, Adam, batch 128
  torch.mlpresnet.ms_per_step  MLPResNet(784, 100, 3 blocks) step, Adam wd 1e-3, batch 100
  torch.resnet9.ms_per_step    ResNet9 step on 1x28x28 images, Adam, batch 128

PyTorch runs with one thread (its fastest setting on a 2-core machine for
these sizes). Needs Debian's python3-torch: call /usr/bin/python3.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from torch_models import mlp, mlpresnet, resnet9


def timed(fn, min_seconds, min_reps=5):
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 2000:
            break
    return statistics.median(times)


def chain(n):
    x = torch.rand(4)

    def run():
        y = x
        with torch.no_grad():
            for i in range(n):
                y = y * 1.0001 if i % 2 else y + 0.5
        return y

    return run


def train_step(model, batch, wd, shape=(784,)):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=wd)
    x = torch.randn(batch, *shape)
    y = torch.randint(0, 10, (batch,))

    def run():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chain", type=int, nargs="*", default=[1000, 10000])
    ap.add_argument("--min-seconds", type=float, default=0.3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    for n in a.chain:
        print(f"torch.chain.{n}.us_per_op {timed(chain(n), a.min_seconds) / n * 1e6:.6g}", flush=True)
    print(f"torch.mlp.ms_per_step {timed(train_step(mlp(), 128, 0.0), a.min_seconds) * 1e3:.6g}", flush=True)
    print(f"torch.mlpresnet.ms_per_step {timed(train_step(mlpresnet(), 100, 1e-3), a.min_seconds) * 1e3:.6g}",
          flush=True)
    print(f"torch.resnet9.ms_per_step {timed(train_step(resnet9(), 128, 0.0, (1, 28, 28)), a.min_seconds) * 1e3:.6g}",
          flush=True)


if __name__ == "__main__":
    main()
