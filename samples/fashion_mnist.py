"""Fashion-MNIST's IDX files as normalized numpy arrays, for the benchmark peers
(bench_train_torch.py, bench_train_jax.py): the same reading and the same input
normalization as loom's trainer."""

import gzip
import os

import numpy as np

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST pixel mean and standard deviation (as loom's trainer)


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise SystemExit(f"{path}: not a ubyte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise SystemExit(f"{path}: truncated IDX file")
    return arr.reshape(dims)


def load_numpy(directory, split):
    """(images [n, 784] float32 normalized, labels [n] int64) of split 'train' or 'test'."""
    prefix = "train" if split == "train" else "t10k"

    def find(base):
        for name in (base + ".gz", base):
            p = os.path.join(directory, name)
            if os.path.exists(p):
                return p
        raise SystemExit(f"no {base}[.gz] in {directory}")

    x = read_idx(find(f"{prefix}-images-idx3-ubyte")).reshape(-1, 784).astype(np.float32)
    y = read_idx(find(f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    return ((x / 255.0 - MEAN) / STD).astype(np.float32), y
