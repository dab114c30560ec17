#!/usr/bin/env python3
"""loom <-> PyTorch <-> ONNX interoperability check (./build.sh interop).

For each model (--models: train_mnist's softmax, mlp, mlpresnet; train_cnn's
cnn and resnet9 on Fashion-MNIST):
  1. loom trains it (train_mnist or train_cnn --save) and loom_export writes model.onnx and
     loom's logits on the Fashion-MNIST test set (the inputs as loom feeds them);
  2. PyTorch loads loom's checkpoint as a state_dict (strict) into the same
     architecture (samples/torch_models.py: mnist, cnn, resnet9) and must reach loom's test
     accuracy exactly;
  3. onnx.checker (full check) accepts model.onnx, and onnxruntime's logits
     match loom's to 1e-5 with the same accuracy;
  4. the reverse: PyTorch trains the model, saves its state_dict with
     safetensors, and loom loads it (the trainer's --load-weights) and must
     reach PyTorch's test accuracy exactly.
Then every exportable op's examples (loom_export --op-examples) run in
onnxruntime against loom's outputs.

Needs torch, onnx, onnxruntime, safetensors and numpy (build.sh's peers venv).
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import torch
from safetensors.numpy import load_file as load_numpy
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_models import cnn, mnist, resnet9  # noqa: E402

CONV_MODELS = {"cnn": cnn, "resnet9": resnet9}  # train_cnn's, on Fashion-MNIST [N, 1, 28, 28]


def trainer(name):
    return "train_cnn" if name in CONV_MODELS else "train_mnist"


def torch_model(name):
    return CONV_MODELS[name]() if name in CONV_MODELS else mnist(name)

MEAN, STD = 0.2860, 0.3530  # train_mnist's normalization
LOGIT_TOL = 1e-5


def run(cmd):
    print("  $ " + " ".join(cmd), flush=True)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return out


def last_json(text):
    lines = [line for line in text.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def accuracy(logits, y):
    return float((np.argmax(logits, axis=1) == y).mean())


def torch_logits(model, x):
    model.eval()
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[i:i + 1000])).numpy() for i in range(0, len(x), 1000)])


def onnx_logits(path, x):
    onnx.checker.check_model(path, full_check=True)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + 1000]})[0] for i in range(0, len(x), 1000)])


def read_idx(path):
    import gzip
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(data[3])]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * data[3]).reshape(dims)


def train_torch(model, data_dir, epochs, seed, shape=None):
    """Adam 1e-3, batch 128, train_mnist's normalization: a PyTorch-trained model."""
    find = lambda base: next(p for p in (os.path.join(data_dir, base + ".gz"), os.path.join(data_dir, base))
                             if os.path.exists(p))
    x = (read_idx(find("train-images-idx3-ubyte")).astype(np.float32) / 255.0 - MEAN) / STD
    y = read_idx(find("train-labels-idx1-ubyte")).astype(np.int64)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    if shape is not None:
        x = x.view(-1, *shape)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model


class Report:
    def __init__(self):
        self.rows, self.failed = [], 0

    def check(self, what, ok, detail):
        self.rows.append((what, "ok" if ok else "FAILED", detail))
        self.failed += not ok
        print(f"  {'ok    ' if ok else 'FAILED'} {what}: {detail}", flush=True)


def check_model(a, name, report):
    bin_dir, work = a.build, a.work
    ckpt = os.path.join(work, f"loom_{name}.safetensors")
    print(f"\n{name}: loom -> PyTorch, ONNX", flush=True)
    out = run([os.path.join(bin_dir, trainer(name)), "--model", name, "--epochs", str(a.epochs), "--data", a.data,
               "--save", ckpt, "--json", "--seed", str(a.seed)])
    loom_acc_trainer = last_json(out)["test_acc"]
    onnx_path = os.path.join(work, f"loom_{name}.onnx")
    run([os.path.join(bin_dir, "loom_export"), ckpt, "-o", onnx_path, "--test-data", a.data])
    t = load_numpy(onnx_path + ".test.safetensors")
    x, y, loom = t["x"], t["y"], t["logits"]
    loom_acc = accuracy(loom, y)
    report.check(f"{name}: loom's logits give its trainer's accuracy", abs(loom_acc - loom_acc_trainer) < 5e-7,
                 f"{loom_acc:.4f} vs {trainer(name)} {loom_acc_trainer:.4f}")

    model = torch_model(name)
    model.load_state_dict(load_file(ckpt), strict=True)
    tl = torch_logits(model, x)
    report.check(f"{name}: PyTorch with loom's checkpoint, same test accuracy", accuracy(tl, y) == loom_acc,
                 f"PyTorch {accuracy(tl, y):.4f}, loom {loom_acc:.4f}; max |logit diff| {np.abs(tl - loom).max():.2e}")

    ol = onnx_logits(onnx_path, x)
    diff = float(np.abs(ol - loom).max())
    report.check(f"{name}: onnx.checker, onnxruntime logits within {LOGIT_TOL:g} of loom's", diff <= LOGIT_TOL,
                 f"max |diff| {diff:.2e} over {ol.size} logits")
    report.check(f"{name}: onnxruntime's test accuracy is loom's", accuracy(ol, y) == loom_acc,
                 f"{accuracy(ol, y):.4f} vs {loom_acc:.4f}")

    print(f"\n{name}: PyTorch -> loom", flush=True)
    started = time.time()
    torch.set_num_threads(a.torch_threads)
    trained = train_torch(torch_model(name), a.data, a.epochs, a.seed, (1, 28, 28) if name in CONV_MODELS else None)
    tpath = os.path.join(work, f"torch_{name}.safetensors")
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, tpath, metadata={"format": "pt"})
    tacc = accuracy(torch_logits(trained, x), y)
    print(f"  PyTorch trained {name} in {time.time() - started:.1f} s: test accuracy {tacc:.4f}", flush=True)
    out = run([os.path.join(bin_dir, trainer(name)), "--model", name, "--load-weights", tpath, "--epochs", "0",
               "--data", a.data, "--json"])
    lacc = last_json(out)["test_acc"]
    report.check(f"{name}: loom with PyTorch's state_dict (--load-weights), same test accuracy", lacc == tacc,
                 f"loom {lacc:.4f}, PyTorch {tacc:.4f}")


def check_op_examples(a, report):
    print("\nop examples: loom_export --op-examples, onnxruntime against loom's outputs", flush=True)
    d = os.path.join(a.work, "ops")
    run([os.path.join(a.build, "loom_export"), "--op-examples", d])
    bad = []
    models = sorted(glob.glob(os.path.join(d, "*.onnx")))
    for path in models:
        t = load_numpy(path[:-5] + ".safetensors")
        try:
            onnx.checker.check_model(path, full_check=True)
            s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            feeds = {i.name: t[i.name] for i in s.get_inputs()}
            for k, got in enumerate(s.run(None, feeds)):
                want = t[f"output.{k}"]
                if got.shape != want.shape or got.dtype != want.dtype:
                    bad.append(f"{os.path.basename(path)} output {k}: {got.dtype}{list(got.shape)} vs loom's "
                               f"{want.dtype}{list(want.shape)}")
                elif not np.allclose(got, want, rtol=1e-5, atol=1e-6, equal_nan=True):
                    bad.append(f"{os.path.basename(path)} output {k}: max |diff| {np.abs(got - want).max():.2e}")
        except Exception as e:  # onnx/onnxruntime errors: report them all
            bad.append(f"{os.path.basename(path)}: {type(e).__name__}: {str(e).splitlines()[0]}")
    report.check(f"{len(models)} op examples in onnxruntime", not bad, "; ".join(bad) if bad else "all match")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build/release/samples", help="directory of the trainers and loom_export")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--work", default="build/interop", help="where checkpoints and models are written")
    ap.add_argument("--models", default="mlp,mlpresnet,cnn,resnet9")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--torch-threads", type=int, default=2)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    print(f"interop: torch {torch.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__}")
    report = Report()
    for name in a.models.split(","):
        check_model(a, name, report)
    check_op_examples(a, report)
    print(f"\ninterop: {len(report.rows) - report.failed} checks passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
