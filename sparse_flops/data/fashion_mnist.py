"""Fashion-MNIST from the standard IDX ``.gz`` files (as shipped by Debian's package).

Nothing is downloaded: the folder comes from ``config.data.dir``, defaulting to Debian's
``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np

from sparse_flops.data.base import ArraySplit, DataError

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
NUM_CLASSES = 10
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FIX = (
    "install it with `apt-get install dataset-fashion-mnist` (as root), or point "
    "--config.data.dir at a folder holding the four IDX .gz files"
)
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    """Reads one IDX file (gzip-compressed or plain) into an array of its stored shape.

    Raises:
      DataError: the file is missing, not gzip, truncated, or its header is not IDX.
    """
    if not os.path.isfile(path):
        raise DataError(f"Fashion-MNIST file {path} is missing; {_FIX}.")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"Fashion-MNIST file {path} is corrupt or truncated ({e}); {_FIX}.") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number); {_FIX}.")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its IDX header; {_FIX}.")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path} holds {len(raw) - header} bytes of data where its header announces "
            f"{expected} for shape {shape}: the file is truncated or corrupt; {_FIX}."
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape)


def load(data_dir: str = DEFAULT_DIR) -> dict[str, ArraySplit]:
    """The ``train`` (60,000) and ``test`` (10,000) splits.

    Images are float32 in ``[0, 1]``, shape ``(n, 28, 28, 1)``; labels int32 ``(n,)``.
    """
    if not os.path.isdir(data_dir):
        raise DataError(f"Fashion-MNIST folder {data_dir} does not exist; {_FIX}.")
    splits = {}
    for name, (image_file, label_file) in FILES.items():
        images = read_idx(os.path.join(data_dir, image_file))
        labels = read_idx(os.path.join(data_dir, label_file))
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError(f"{image_file} in {data_dir} has shape {images.shape}, not (n, 28, 28)")
        if labels.shape != (images.shape[0],):
            raise DataError(
                f"{label_file} has {labels.shape[0] if labels.ndim else 0} labels for "
                f"{images.shape[0]} images in {data_dir}"
            )
        if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
            raise DataError(f"{label_file} in {data_dir} has labels outside [0, {NUM_CLASSES})")
        splits[name] = ArraySplit(
            (images.astype(np.float32) / 255.0)[..., None], labels.astype(np.int32)
        )
    return splits
