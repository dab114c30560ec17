#!/usr/bin/python3
"""PyTorch peer of bench_kernels' interpolate rows: times F.interpolate by 2
and its aten backward (upsample_*2d_backward) on [N, C, H, W] float32, and
prints one JSON object per (mode, pass) with the median seconds.

  python samples/bench_interp_torch.py --threads 2 --reps 7 --shapes '[{"name": "bilinear", "shape": [16, 64, 32, 32]}]'
"""

import json

import torch
import torch.nn.functional as F

from bench_conv_torch import peer_args, print_medians


def backward(mode, dy, size, in_size):
    aten = torch.ops.aten
    if mode == "bilinear":
        return lambda: aten.upsample_bilinear2d_backward(dy, size, in_size, False, 2.0, 2.0)
    if mode == "bicubic":
        return lambda: aten.upsample_bicubic2d_backward(dy, size, in_size, False, 2.0, 2.0)
    return lambda: aten._upsample_nearest_exact2d_backward(dy, size, in_size, 2.0, 2.0)


def main():
    a = peer_args(__doc__, "JSON list of {name (the mode), shape}")
    for s in json.loads(a.shapes):
        x = torch.randn(*s["shape"])
        mode = s["name"]
        y = F.interpolate(x, scale_factor=2.0, mode=mode)
        dy = torch.randn_like(y)
        passes = {"forward": lambda: F.interpolate(x, scale_factor=2.0, mode=mode),
                  "backward": backward(mode, dy, list(y.shape[2:]), list(x.shape))}
        print_medians(s["name"], passes, a.reps)


if __name__ == "__main__":
    main()
