#!/usr/bin/python3
"""PyTorch peer of loom's train_mnist, for samples/bench_train.

Trains the same models (softmax, mlp 784-512-10, the course's MLPResNet, and
the convolutional cnn and resnet9 of samples/torch_models.py) on
the same Fashion-MNIST files with the same batch size, optimizer, learning
rate and input normalization, and prints one JSON object per epoch.

  /usr/bin/python3 samples/bench_train_torch.py --model mlp --epochs 2 --threads 1
  ... --serve    read commands from stdin: "epoch" trains one epoch and prints
                 its JSON line, "steps N" times N training steps (for picking
                 the thread count), "quit" ends (bench_train alternates with loom).

Needs Debian's python3-torch and python3-numpy (call /usr/bin/python3).
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fashion_mnist import load_numpy
from torch_models import cnn, mlp, mlpresnet, resnet9


def load(directory, split):
    x, y = load_numpy(directory, split)
    return torch.from_numpy(x), torch.from_numpy(y)


def make_model(name, hidden):
    if name == "softmax":
        return nn.Sequential(nn.Linear(784, 10))
    if name == "mlp":
        return mlp(hidden=hidden)
    if name == "mlpresnet":
        return mlpresnet(hidden=hidden)
    if name == "cnn":
        return cnn()
    if name == "resnet9":
        return resnet9()
    raise SystemExit(f"unknown model {name}")


CONV_MODELS = ("cnn", "resnet9")  # take images [N, 1, 28, 28]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mlp", choices=["softmax", "mlp", "mlpresnet", "cnn", "resnet9"])
    ap.add_argument("--hidden", type=int, default=0, help="hidden width (default: 512 mlp, 100 mlpresnet)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--opt", default="adam", choices=["sgd", "adam"])
    ap.add_argument("--momentum", type=float, default=0.0)
    ap.add_argument("--wd", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the data set is moved to the device once)")
    a = ap.parse_args()
    dev = torch.device(a.device)

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    hidden = a.hidden or (100 if a.model == "mlpresnet" else 512)
    xtr, ytr = load(a.data, "train")
    xte, yte = load(a.data, "test")
    if a.model in CONV_MODELS:
        xtr, xte = xtr.view(-1, 1, 28, 28), xte.view(-1, 1, 28, 28)
    xtr, ytr, xte, yte = xtr.to(dev), ytr.to(dev), xte.to(dev), yte.to(dev)
    model = make_model(a.model, hidden).to(dev)
    if a.opt == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=a.lr, weight_decay=a.wd)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum, weight_decay=a.wd)
    n = xtr.shape[0]
    gen = torch.Generator().manual_seed(a.seed)

    def steps(count):
        model.train()
        perm = torch.randperm(n, generator=gen).to(dev)
        t0 = time.perf_counter()
        for k in range(count):
            i = (k * a.batch) % (n - a.batch + 1)
            idx = perm[i:i + a.batch]
            xb, yb = xtr[idx], ytr[idx]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            loss.item()
        return {"steps": count, "seconds": time.perf_counter() - t0, "threads": a.threads}

    def epoch(e):
        model.train()
        perm = torch.randperm(n, generator=gen).to(dev)
        t0 = time.perf_counter()
        total_loss, correct = 0.0, 0
        for i in range(0, n, a.batch):
            idx = perm[i:i + a.batch]
            xb, yb = xtr[idx], ytr[idx]
            opt.zero_grad(set_to_none=True)
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            loss.backward()
            opt.step()
            total_loss += loss.item() * len(idx)
            correct += (out.argmax(1) == yb).sum().item()
        seconds = time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            test_acc = sum((model(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item()
                           for i in range(0, len(yte), 1000)) / len(yte)
        return {"epoch": e, "train_loss": total_loss / n, "train_acc": correct / n, "test_acc": test_acc,
                "seconds": seconds, "images_per_s": n / seconds, "threads": a.threads}

    if a.serve:
        print(json.dumps({"ready": True, "threads": a.threads}), flush=True)
        e = 0
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "epoch":
                e += 1
                print(json.dumps(epoch(e)), flush=True)
            elif cmd.startswith("steps "):
                print(json.dumps(steps(int(cmd.split()[1]))), flush=True)
            elif cmd == "quit":
                break
            elif cmd:
                print(json.dumps({"error": f"unknown command {cmd}"}), flush=True)
    else:
        for e in range(1, a.epochs + 1):
            print(json.dumps(epoch(e)), flush=True)


if __name__ == "__main__":
    main()
