"""CIFAR-100 from the official "python version" pickles (``cifar-100-python/{train,test}``).

Nothing is downloaded: point ``config.data.dir`` at the extracted ``cifar-100-python`` folder.
"""

from __future__ import annotations

import os
import pickle

import numpy as np

from sparse_flops.data.base import ArraySplit, DataError

NUM_CLASSES = 100
_FIX = "point --config.data.dir at the extracted cifar-100-python folder (files train, test)"


def load_split(path: str) -> ArraySplit:
    """One pickle: images float32 ``(n, 32, 32, 3)`` in ``[0, 1]``, fine labels int32 ``(n,)``."""
    if not os.path.isfile(path):
        raise DataError(f"CIFAR-100 file {path} is missing; {_FIX}")
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except Exception as e:  # noqa: BLE001 - arbitrary bytes make pickle raise almost anything
        raise DataError(f"CIFAR-100 file {path} is corrupt or truncated ({e!r}); {_FIX}") from e
    if not isinstance(batch, dict) or b"data" not in batch or b"fine_labels" not in batch:
        raise DataError(f"{path} is not a CIFAR-100 pickle (no b'data' / b'fine_labels'); {_FIX}")
    try:
        data = np.asarray(batch[b"data"])
        labels = np.asarray(batch[b"fine_labels"])
    except (ValueError, TypeError) as e:
        raise DataError(f"{path}: data or fine labels are not arrays ({e}); {_FIX}") from e
    if data.dtype != np.uint8 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{path}: data must be uint8 and fine labels integers, got {data.dtype} and "
            f"{labels.dtype}; {_FIX}"
        )
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(
            f"{path}: data has shape {data.shape} with {len(labels)} labels; "
            "expected (n, 3072) with n labels"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"{path}: fine labels outside [0, {NUM_CLASSES})")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float32) / 255.0
    return ArraySplit(images, labels.astype(np.int32))


def load(data_dir: str) -> dict[str, ArraySplit]:
    """The ``train`` (50,000) and ``test`` (10,000) splits."""
    if not os.path.isdir(data_dir):
        raise DataError(f"CIFAR-100 folder {data_dir} does not exist; {_FIX}")
    return {name: load_split(os.path.join(data_dir, name)) for name in ("train", "test")}
