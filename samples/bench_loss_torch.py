#!/usr/bin/python3
"""PyTorch peer of bench_kernels' cross-entropy rows: times cross_entropy as
PyTorch's eager kernels run it on [rows, cols] float32 logits and int64
labels (reduction none): forward aten._log_softmax and aten.nll_loss_forward,
backward aten.nll_loss_backward and aten._log_softmax_backward_data, each
into preallocated outputs (their out= forms: the kernels alone, as
bench_kernels times loom's; allocated per call, the forward took 1.2-12x
as long here, page faults varying with the allocator's state); prints one JSON object per (shape, pass) with the median
seconds.

  python samples/bench_loss_torch.py --threads 2 --reps 7 --shapes '[{"name": "700x11235", "rows": 700, "cols": 11235}]'
"""

import json

import torch

from bench_conv_torch import peer_args, print_medians


def main():
    a = peer_args(__doc__, "JSON list of {name, rows, cols}")
    aten = torch.ops.aten
    none, ignore = 0, -100  # reduction "none"; ignore_index
    for s in json.loads(a.shapes):
        n, c = s["rows"], s["cols"]
        x = torch.rand(n, c) - 0.5
        y = (torch.arange(n) * 7919) % c
        dloss = torch.rand(n) - 0.5
        logp, g, dx = torch.empty(n, c), torch.empty(n, c), torch.empty(n, c)
        loss, total = torch.empty(n), torch.empty(())

        def forward():
            aten._log_softmax.out(x, 1, False, out=logp)
            aten.nll_loss_forward.output(logp, y, None, none, ignore, output=loss, total_weight=total)

        def backward():
            aten.nll_loss_backward.grad_input(dloss, logp, y, None, none, ignore, total, grad_input=g)
            aten._log_softmax_backward_data.out(g, logp, 1, torch.float32, out=dx)

        print_medians(s["name"], {"forward": forward, "backward": backward}, a.reps)


if __name__ == "__main__":
    main()
