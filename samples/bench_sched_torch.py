#!/usr/bin/python3
"""PyTorch eager peer of loom's bench_sched (called by it; prints "key value" lines).

  torch.chain.<n>.us_per_op    a chain of n tiny element-wise ops (alternating
                               y + 0.5 and y * 1.0001 on 4 floats), per op
  torch.mlp.ms_per_step        MLP 784-512-10 training step, Adam, batch 128
  torch.mlpresnet.ms_per_step  MLPResNet(784, 100, 3 blocks) step, Adam wd 1e-3, batch 100
  torch.resnet9.ms_per_step    ResNet9 step on 1x28x28 images, Adam, batch 128

With --checkpoint (bench_sched --memory-sweep), for mlpresnet, resnet9 and
transformer, without and with torch.utils.checkpoint on every block:
  torch.<family>.ms_per_step, torch.<family>.ckpt.ms_per_step
  torch.<family>.peak_bytes, torch.<family>.ckpt.peak_bytes   (heap in use
                               during the step above before it: glibc's
                               mallinfo2 after every op, through a dispatch mode)

PyTorch runs with one thread (its fastest setting on a 2-core machine for
these sizes). Needs Debian's python3-torch: call /usr/bin/python3.
"""

import argparse
import ctypes
import gc
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

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


# ---- --checkpoint: the memory sweep's peer (bench_sched --memory-sweep)

def transformer(d=128, heads=4):
    """loom's bench_sched transformer family: one pre-norm encoder layer, FFN 4d, no dropout."""
    return nn.Sequential(nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True))


class Checkpointed(nn.Module):
    """Runs each child of a Sequential under torch.utils.checkpoint (its activations recomputed in backward)."""
    def __init__(self, seq):
        super().__init__()
        self.seq = seq

    def forward(self, x):
        for block in self.seq:
            x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
        return x


class CheckpointedLayer(nn.Module):
    """A pre-norm encoder layer with its two blocks (attention, feed-forward) under checkpoint."""
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        lay = self.layer
        x = x + torch.utils.checkpoint.checkpoint(lambda t: lay._sa_block(lay.norm1(t), None, None), x,
                                                  use_reentrant=False)
        return x + torch.utils.checkpoint.checkpoint(lambda t: lay._ff_block(lay.norm2(t)), x, use_reentrant=False)


def sweep_step(family, ckpt):
    torch.manual_seed(0)
    if family == "transformer":
        model = transformer()
        x = torch.randn(8, 64, 128)
        m = CheckpointedLayer(model[0]) if ckpt else model

        def run():
            for p in model.parameters():
                p.grad = None
            y = m(x)
            (y * y).mean().backward()
        return run
    model, batch, shape, wd = {"mlpresnet": (mlpresnet(), 100, (784,), 1e-3),
                               "resnet9": (resnet9(), 128, (1, 28, 28), 0.0)}[family]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=wd)
    m = Checkpointed(model) if ckpt else model
    x = torch.randn(batch, *shape)
    y = torch.randint(0, 10, (batch,))

    def run():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(m(x), y).backward()
        opt.step()
    return run


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def heap_in_use():
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _Mallinfo2
    m = libc.mallinfo2()
    return m.uordblks + m.hblkhd


def peak_bytes(step):
    """The most heap bytes in use during one step above the bytes in use before it."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Peak(TorchDispatchMode):
        peak = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            Peak.peak = max(Peak.peak, heap_in_use())
            return out

    # The warm-up step runs under the mode too: PyTorch 2.15 allocates 26 MB once, at the first
    # layer norm dispatched through a mode, which would count in the first family's peak.
    with Peak():
        step()
    gc.collect()
    base = heap_in_use()
    Peak.peak = base
    with Peak():
        step()
    return Peak.peak - base


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chain", type=int, nargs="*", default=[1000, 10000])
    ap.add_argument("--min-seconds", type=float, default=0.3)
    ap.add_argument("--checkpoint", nargs="*", help="memory-sweep families (mlpresnet resnet9 transformer)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if a.checkpoint is not None:
        for fam in a.checkpoint:
            for ckpt in (False, True):
                key = f"torch.{fam}" + (".ckpt" if ckpt else "")
                print(f"{key}.ms_per_step {timed(sweep_step(fam, ckpt), a.min_seconds) * 1e3:.6g}", flush=True)
                print(f"{key}.peak_bytes {peak_bytes(sweep_step(fam, ckpt))}", flush=True)
        return
    for n in a.chain:
        print(f"torch.chain.{n}.us_per_op {timed(chain(n), a.min_seconds) / n * 1e6:.6g}", flush=True)
    print(f"torch.mlp.ms_per_step {timed(train_step(mlp(), 128, 0.0), a.min_seconds) * 1e3:.6g}", flush=True)
    print(f"torch.mlpresnet.ms_per_step {timed(train_step(mlpresnet(), 100, 1e-3), a.min_seconds) * 1e3:.6g}",
          flush=True)
    print(f"torch.resnet9.ms_per_step {timed(train_step(resnet9(), 128, 0.0, (1, 28, 28)), a.min_seconds) * 1e3:.6g}",
          flush=True)


if __name__ == "__main__":
    main()
