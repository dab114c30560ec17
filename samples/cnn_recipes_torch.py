"""Training recipes for the CNN models in PyTorch, to tell the model's limit from the recipe's.

Trains samples/torch_models.py's resnet9 (or cnn) on real Fashion-MNIST with
train_cnn's default recipe (SGD, Nesterov momentum 0.9, lr 0.2, weight decay
5e-4, 200 warmup steps then cosine, batch 128, the same normalization) and
prints the test accuracy after every epoch. The options change one thing at a
time: label smoothing, flips, shifts, padding or resizing the input, an EMA of
the weights, flip test-time augmentation, more epochs.

    build/venv/bin/python samples/cnn_recipes_torch.py --epochs 20

build/venv is the venv the bench commands create (./build.sh bench-train, or
LOOM_VENV); PyTorch is never a dependency of loom or its tests.
"""
import argparse
import copy
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fashion_mnist import load_numpy  # noqa: E402
import torch_models  # noqa: E402

BACKGROUND = float((0 - 0.2860) / 0.3530)  # a black pixel after normalization


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet9", choices=["resnet9", "cnn"])
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--opt", default="sgd", choices=["sgd", "adam", "adamw"])
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--wd", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=200, help="linear warmup steps before the cosine decay")
    p.add_argument("--zero-init-residual", action="store_true",
                   help="start each residual block's last BatchNorm at weight 0 (the block starts as the identity)")
    p.add_argument("--no-decay-norm", action="store_true", help="no weight decay on BatchNorm parameters and biases")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--flip", action="store_true", help="random horizontal flips while training")
    p.add_argument("--shift", type=int, default=0, help="random shifts of up to this many pixels (pad and crop)")
    p.add_argument("--pad", type=int, default=0, help="pad every image by this many background pixels per side")
    p.add_argument("--resize", type=int, default=0, help="resize every image to this size (bilinear)")
    p.add_argument("--ema", type=float, default=0.0, help="also evaluate an exponential moving average of the weights")
    p.add_argument("--tta", action="store_true", help="average the predictions for each test image and its flip")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    size = a.resize or 28 + 2 * a.pad
    if a.model == "resnet9" and size > 32:
        p.error(f"resnet9's Linear(128 -> 128) needs a 1x1 final map: inputs of at most 32 pixels, not {size}")
    if a.model == "cnn" and size != 28:
        p.error("cnn's Linear(64*7*7 -> 128) needs 28x28 inputs")
    return a


def main():
    a = parse()
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    torch.set_num_threads(a.threads)
    xtr, ytr = (torch.from_numpy(v) for v in load_numpy(a.data, "train"))
    xte, yte = (torch.from_numpy(v) for v in load_numpy(a.data, "test"))
    xtr, xte = xtr.view(-1, 1, 28, 28), xte.view(-1, 1, 28, 28)

    def prep(x):
        if a.pad:
            x = F.pad(x, (a.pad,) * 4, value=BACKGROUND)
        if a.resize:
            x = F.interpolate(x, size=(a.resize, a.resize), mode="bilinear", align_corners=False)
        return x

    model = getattr(torch_models, a.model)(1, 10)
    if a.zero_init_residual:
        for block in model.modules():
            if isinstance(block, torch_models.Residual):
                norms = [m for m in block.modules() if isinstance(m, torch.nn.BatchNorm2d)]
                torch.nn.init.zeros_(norms[-1].weight)
    decayed = [q for q in model.parameters() if q.dim() > 1 or not a.no_decay_norm]
    groups = [{"params": decayed, "weight_decay": a.wd},
              {"params": [q for q in model.parameters() if q.dim() <= 1 and a.no_decay_norm], "weight_decay": 0.0}]
    steps = a.epochs * math.ceil(len(xtr) / a.batch)
    if a.opt == "sgd":
        opt = torch.optim.SGD(groups, lr=a.lr, momentum=0.9, nesterov=True)
    else:
        opt = getattr(torch.optim, {"adam": "Adam", "adamw": "AdamW"}[a.opt])(groups, lr=a.lr)

    def lr_factor(s):
        if s < a.warmup:
            return (s + 1) / a.warmup
        return 0.5 * (1 + math.cos(math.pi * (s - a.warmup) / max(1, steps - a.warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    ema = copy.deepcopy(model) if a.ema else None

    def evaluate(m):
        m.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(xte), 1000):
                x = prep(xte[i:i + 1000])
                p = m(x).softmax(1)
                if a.tta:
                    p = p + m(x.flip(3)).softmax(1)
                correct += (p.argmax(1) == yte[i:i + 1000]).sum().item()
        m.train()
        return correct / len(xte)

    start = time.time()
    for epoch in range(a.epochs):
        perm = torch.randperm(len(xtr))
        loss_sum, right = 0.0, 0
        for i in range(0, len(xtr), a.batch):
            idx = perm[i:i + a.batch]
            x, y = xtr[idx], ytr[idx]
            if a.flip:
                x = torch.where((torch.rand(len(x)) < 0.5).view(-1, 1, 1, 1), x.flip(3), x)
            if a.shift:
                s = a.shift
                dx, dy = np.random.randint(0, 2 * s + 1, 2)
                x = F.pad(x, (s,) * 4, value=BACKGROUND)[:, :, dy:dy + 28, dx:dx + 28]
            out = model(prep(x))
            loss = F.cross_entropy(out, y, label_smoothing=a.label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                with torch.no_grad():
                    for e, m in zip(ema.state_dict().values(), model.state_dict().values()):
                        if e.dtype.is_floating_point:
                            e.mul_(a.ema).add_(m, alpha=1 - a.ema)
                        else:
                            e.copy_(m)
            loss_sum += loss.item() * len(x)
            right += (out.argmax(1) == y).sum().item()
        line = (f"epoch {epoch + 1} loss {loss_sum / len(xtr):.4f} train_acc {right / len(xtr):.4f} "
                f"test_acc {evaluate(model):.4f}")
        if ema is not None:
            line += f" ema_test_acc {evaluate(ema):.4f}"
        print(line + f" {time.time() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
