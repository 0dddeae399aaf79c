"""A seeded synthetic source of class-structured feature vectors.

Class centres are drawn on the unit sphere of ``R^features``; each item is its class centre plus
isotropic Gaussian noise of standard deviation ``noise / sqrt(features)`` per coordinate, so
``noise`` is the expected distance of an item from its centre relative to the centre's norm.
"""

from __future__ import annotations

import numpy as np

from sparse_flops.data.base import ArraySplit, DataError


def make_splits(
    *,
    num_classes: int = 100,
    features: int = 64,
    train_per_class: int = 50,
    test_per_class: int = 10,
    noise: float = 0.5,
    seed: int = 0,
) -> dict[str, ArraySplit]:
    """``train`` and ``test`` splits over the same classes; inputs ``(n, features)`` float32."""
    for key, value in [
        ("num_classes", num_classes),
        ("features", features),
        ("train_per_class", train_per_class),
        ("test_per_class", test_per_class),
    ]:
        if value <= 0:
            raise DataError(f"config.data.synthetic.{key} must be positive, got {value}")
    if noise < 0:
        raise DataError(f"config.data.synthetic.noise must be >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_classes, features))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def draw(per_class):
        labels = np.repeat(np.arange(num_classes, dtype=np.int32), per_class)
        x = centres[labels] + rng.standard_normal((len(labels), features)) * (
            noise / np.sqrt(features)
        )
        order = rng.permutation(len(labels))
        return ArraySplit(x[order].astype(np.float32), labels[order])

    return {"train": draw(train_per_class), "test": draw(test_per_class)}
