"""The PyTorch peers of loom's sample models, shared by bench_train_torch.py and
bench_sched_torch.py so both benchmarks compare against the same networks."""

import torch.nn as nn


class Residual(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x) + x


def mlp(dim=784, hidden=512, classes=10):
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def mlpresnet(dim=784, hidden=100, blocks=3, classes=10, drop=0.1):
    """The course's MLPResNet, as loom's nn::MLPResNet."""
    def block(d, h):
        return nn.Sequential(Residual(nn.Sequential(nn.Linear(d, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(drop),
                                                    nn.Linear(h, d), nn.BatchNorm1d(d))), nn.ReLU())
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), *[block(hidden, hidden // 2) for _ in range(blocks)],
                         nn.Linear(hidden, classes))


# ---- interop (issue 17): train_mnist's models module for module, so that a
# loom checkpoint is their state_dict and theirs loads into loom as it is.

def mnist(model="mlp", hidden=None):
    """train_mnist's --model as loom builds it: a Flatten first (input [N, 28, 28])."""
    if model == "softmax":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    if model == "mlp":
        h = hidden or 512
        return nn.Sequential(nn.Flatten(), nn.Linear(784, h), nn.ReLU(), nn.Linear(h, 10))
    if model == "mlpresnet":
        return nn.Sequential(nn.Flatten(), mlpresnet(hidden=hidden or 100))
    raise ValueError(f"unknown model {model!r} (softmax, mlp, mlpresnet)")
