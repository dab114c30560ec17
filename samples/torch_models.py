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


# ---- convolutional networks (loom's samples/train_cnn, nn::cnn and nn::ResNet9)

def conv_bn(cin, cout, k, stride):
    """Conv (padding k // 2, no bias: BatchNorm's mean subtraction cancels one) -> BatchNorm2d -> ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


def cnn(channels=1, classes=10, size=28):
    """Two conv blocks and an MLP head; size 28 (Fashion-MNIST) or 32 (CIFAR-10)."""
    side = size // 4
    return nn.Sequential(conv_bn(channels, 32, 3, 1), nn.MaxPool2d(2), conv_bn(32, 64, 3, 1), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Linear(128, classes))


def resnet9(channels=1, classes=10):
    """The course's ResNet9 (hw4), for 28x28 or 32x32 inputs."""
    return nn.Sequential(conv_bn(channels, 16, 7, 4), conv_bn(16, 32, 3, 2),
                         Residual(nn.Sequential(conv_bn(32, 32, 3, 1), conv_bn(32, 32, 3, 1))),
                         conv_bn(32, 64, 3, 2), conv_bn(64, 128, 3, 2),
                         Residual(nn.Sequential(conv_bn(128, 128, 3, 1), conv_bn(128, 128, 3, 1))),
                         nn.Flatten(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, classes))
