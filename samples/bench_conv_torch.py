#!/usr/bin/python3
"""PyTorch peer of bench_kernels' convolution rows: times F.conv2d and its two
gradients (aten.convolution_backward with one output each) on the same shapes,
and prints one JSON object per (shape, pass) with the median seconds.

  python samples/bench_conv_torch.py --threads 2 --reps 7 \
      --shapes '[{"name": "cnn conv2", "n": 128, "c": 32, "h": 14, "w": 14, "k": 64, "r": 3, "s": 3,
                  "stride": 1, "pad": 1}]'
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F


def median_seconds(f, reps):
    f()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2]


def peer_args(doc, shapes_help):
    """The peers' command line (--threads, --reps, --shapes); sets PyTorch's thread count."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--shapes", required=True, help=shapes_help)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    return a


def print_medians(shape_name, passes, reps):
    """One JSON line per pass: {"name", "pass", "seconds"} (the median), without autograd."""
    with torch.no_grad():
        for name, f in passes.items():
            print(json.dumps({"name": shape_name, "pass": name, "seconds": median_seconds(f, reps)}), flush=True)


def main():
    a = peer_args(__doc__, "JSON list of conv shapes (see the example)")
    for s in json.loads(a.shapes):
        x = torch.randn(s["n"], s["c"], s["h"], s["w"])
        w = torch.randn(s["k"], s["c"], s["r"], s["s"])
        stride, pad = [s["stride"]] * 2, [s["pad"]] * 2
        y = F.conv2d(x, w, stride=stride, padding=pad)
        dy = torch.randn_like(y)

        def backward(mask):
            return lambda: torch.ops.aten.convolution_backward(dy, x, w, None, stride, pad, [1, 1], False, [0, 0], 1,
                                                               mask)

        passes = {"forward": lambda: F.conv2d(x, w, stride=stride, padding=pad),
                  "backward_data": backward([True, False, False]),
                  "backward_filter": backward([False, True, False])}
        print_medians(s["name"], passes, a.reps)


if __name__ == "__main__":
    main()
