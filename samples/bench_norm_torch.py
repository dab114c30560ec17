#!/usr/bin/python3
"""PyTorch peer of bench_kernels' layer norm rows: times aten.native_layer_norm
(weight and bias) and aten.native_layer_norm_backward (all three gradients) on
[rows, cols] float32, and prints one JSON object per (shape, pass) with the
median seconds.

  python samples/bench_norm_torch.py --threads 2 --reps 7 --shapes '[{"name": "4096x256", "rows": 4096, "cols": 256}]'
"""

import argparse
import json

import torch

from bench_conv_torch import median_seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--shapes", required=True, help="JSON list of {name, rows, cols}")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    aten = torch.ops.aten
    for s in json.loads(a.shapes):
        x, dy = torch.randn(s["rows"], s["cols"]), torch.randn(s["rows"], s["cols"])
        w, b = torch.randn(s["cols"]), torch.randn(s["cols"])
        shape, eps = [s["cols"]], 1e-5
        _, mean, rstd = aten.native_layer_norm(x, shape, w, b, eps)
        passes = {"forward": lambda: aten.native_layer_norm(x, shape, w, b, eps),
                  "backward": lambda: aten.native_layer_norm_backward(dy, x, shape, mean, rstd, w, b,
                                                                     [True, True, True])}
        with torch.no_grad():
            for name, f in passes.items():
                print(json.dumps({"name": s["name"], "pass": name, "seconds": median_seconds(f, a.reps)}), flush=True)


if __name__ == "__main__":
    main()
