#!/usr/bin/python3
"""PyTorch peer of bench_kernels' layer norm rows: times aten.native_layer_norm
(weight and bias) and aten.native_layer_norm_backward (all three gradients) on
[rows, cols] float32, and prints one JSON object per (shape, pass) with the
median seconds.

  python samples/bench_norm_torch.py --threads 2 --reps 7 --shapes '[{"name": "4096x256", "rows": 4096, "cols": 256}]'
"""

import json

import torch

from bench_conv_torch import peer_args, print_medians


def main():
    a = peer_args(__doc__, "JSON list of {name, rows, cols}")
    aten = torch.ops.aten
    for s in json.loads(a.shapes):
        x, dy = torch.randn(s["rows"], s["cols"]), torch.randn(s["rows"], s["cols"])
        w, b = torch.randn(s["cols"]), torch.randn(s["cols"])
        shape, eps = [s["cols"]], 1e-5
        _, mean, rstd = aten.native_layer_norm(x, shape, w, b, eps)
        passes = {"forward": lambda: aten.native_layer_norm(x, shape, w, b, eps),
                  "backward": lambda: aten.native_layer_norm_backward(dy, x, shape, mean, rstd, w, b,
                                                                     [True, True, True])}
        print_medians(s["name"], passes, a.reps)


if __name__ == "__main__":
    main()
