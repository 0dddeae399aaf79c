"""Pre-computed feature vectors from ``.npz`` files (one file per split).

Each file holds ``inputs`` (``(n, ...)`` floats) and ``labels`` (``(n,)`` integers).
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from sparse_flops.data.base import ArraySplit, DataError


def load_split(path: str) -> ArraySplit:
    """Reads and validates one ``.npz`` split."""
    if not os.path.isfile(path):
        raise DataError(f"feature file {path} is missing; set --config.data.dir to its folder")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = {"inputs", "labels"} - set(f.files)
            if missing:
                raise DataError(f"{path} lacks the arrays {sorted(missing)} (has {f.files})")
            inputs, labels = f["inputs"], f["labels"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"feature file {path} is corrupt or not an .npz file ({e})") from e
    if not np.issubdtype(inputs.dtype, np.floating):
        raise DataError(f"{path}: inputs have dtype {inputs.dtype}, expected floats")
    if not np.issubdtype(labels.dtype, np.integer) or labels.ndim != 1:
        raise DataError(
            f"{path}: labels must be a 1-D integer array, got {labels.dtype} {labels.shape}"
        )
    if len(inputs) != len(labels):
        raise DataError(f"{path}: {len(inputs)} inputs but {len(labels)} labels")
    if inputs.ndim < 2:
        raise DataError(f"{path}: inputs must be (n, ...) with a feature axis, got {inputs.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.int32).max):
        raise DataError(
            f"{path}: labels must be in [0, 2^31), got [{labels.min()}, {labels.max()}]"
        )
    if not np.all(np.isfinite(inputs)):
        raise DataError(f"{path}: inputs contain NaN or infinite values")
    return ArraySplit(inputs.astype(np.float32), labels.astype(np.int32))


def load(data_dir: str, splits=("train", "test")) -> dict[str, ArraySplit]:
    """``{name: split}`` from ``data_dir/<name>.npz`` for each name in ``splits``, plus
    ``distractors`` when ``distractors.npz`` exists (face data: the probe set is ``test``)."""
    if not os.path.isdir(data_dir):
        raise DataError(f"feature folder {data_dir} does not exist; set --config.data.dir")
    if os.path.isfile(os.path.join(data_dir, "distractors.npz")):
        splits = (*splits, "distractors")
    out = {name: load_split(os.path.join(data_dir, f"{name}.npz")) for name in splits}
    shapes = {name: s.inputs.shape[1:] for name, s in out.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(
            f"the splits in {data_dir} have different input shapes {shapes}; every split's "
            "inputs must have one shape per item"
        )
    return out
