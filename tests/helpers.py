"""Writers of small fake data files in the exact formats the loaders read."""

import gzip
import os
import pickle
import struct

import numpy as np


def write_idx(path, array, compress=True):
    codes = {np.uint8: 0x08, np.int32: 0x0C}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(payload)


def write_fake_fashion_mnist(folder, n_train=120, n_test=40, seed=0):
    """Class-dependent 28x28 images (a bright band per class) so a model can learn them."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, y in enumerate(labels):
            images[i, 2 * y : 2 * y + 4, :] = 250
        write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz"), images)
        write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte.gz"), labels)
    return folder


def write_fake_cifar100(folder, n_train=30, n_test=10, seed=0):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, n in (("train", n_train), ("test", n_test)):
        batch = {
            b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
            b"fine_labels": list(rng.integers(0, 100, n)),
            b"coarse_labels": list(rng.integers(0, 20, n)),
            b"filenames": [b"x.png"] * n,
        }
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(batch, f)
    return folder
