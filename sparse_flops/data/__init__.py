"""Data sources and batching. ``load_splits(config.data)`` is the single entry point."""

from __future__ import annotations

import numpy as np

from sparse_flops.data import cifar100, fashion_mnist, features, image_folder, synthetic
from sparse_flops.data.augmentation import augment, augment_split, augmented_views
from sparse_flops.data.base import ArraySplit, DataError
from sparse_flops.data.pipeline import Batcher, batches_in_order

SOURCES = ("fashion_mnist", "cifar100", "features", "image_folder", "synthetic")

__all__ = [
    "ArraySplit",
    "Batcher",
    "DataError",
    "SOURCES",
    "augment",
    "augment_split",
    "augmented_views",
    "batches_in_order",
    "load_splits",
    "num_classes",
]


def _load_source(data_config) -> dict[str, ArraySplit]:
    source = data_config.source
    if source == "fashion_mnist":
        return fashion_mnist.load(data_config.dir or fashion_mnist.DEFAULT_DIR)
    if source == "cifar100":
        if not data_config.dir:
            raise DataError("CIFAR-100 needs --config.data.dir=<cifar-100-python folder>")
        return cifar100.load(data_config.dir)
    if source == "features":
        if not data_config.dir:
            raise DataError("the features source needs --config.data.dir=<folder of .npz files>")
        return features.load(data_config.dir)
    if source == "image_folder":
        if not data_config.dir:
            raise DataError("the image_folder source needs --config.data.dir=<root folder>")
        return image_folder.load(data_config.dir, data_config.image_size)
    if source == "synthetic":
        return synthetic.make_splits(**dict(data_config.synthetic))
    raise DataError(f"unknown data source {source!r} (config.data.source); choose one of {SOURCES}")


def load_splits(data_config) -> dict[str, ArraySplit]:
    """Loads ``config.data`` and returns its named splits.

    Always ``train`` and ``test``; with ``validation_size`` > 0 also ``validation``, that many
    examples carved from ``train`` by a seeded permutation (and removed from it). ``train_limit``
    and ``eval_limit`` (> 0) then keep the first examples of ``train`` and of the other splits.
    Last, ``subtract_mean`` removes the per-pixel mean of the (final) training split from every
    split and ``input_scale`` multiplies them (the original CIFAR code: ``(x - mean) / 128`` on
    0-255 pixels, i.e. ``subtract_mean`` and ``input_scale = 255 / 128`` here).
    """
    splits = _load_source(data_config)
    n_val = data_config.validation_size
    if n_val < 0 or n_val >= len(splits["train"]):
        raise DataError(
            f"config.data.validation_size={n_val} must be in [0, {len(splits['train'])})"
        )
    if n_val:
        perm = np.random.default_rng(data_config.split_seed).permutation(len(splits["train"]))
        train = splits["train"]
        splits["validation"] = train.take(np.sort(perm[:n_val]))
        splits["train"] = train.take(np.sort(perm[n_val:]))
    for name, split in list(splits.items()):
        limit = data_config.train_limit if name == "train" else data_config.eval_limit
        if limit < 0:
            raise DataError(f"config.data limits must be >= 0, got {limit}")
        if limit:
            splits[name] = split.take(np.arange(min(limit, len(split))))
    if data_config.input_scale <= 0:
        raise DataError(f"config.data.input_scale must be positive, got {data_config.input_scale}")
    if data_config.subtract_mean or data_config.input_scale != 1.0:
        mean = splits["train"].inputs.mean(axis=0) if data_config.subtract_mean else 0.0
        for name, split in list(splits.items()):
            x = (split.inputs - mean) * np.float32(data_config.input_scale)
            splits[name] = ArraySplit(x.astype(np.float32), split.labels)
    for key in ("train_split", "eval_split"):
        name = data_config[key]
        if name not in splits:
            raise DataError(f"config.data.{key}={name!r} is not a split; have {sorted(splits)}")
    return splits


def num_classes(splits: dict[str, ArraySplit]) -> int:
    """Number of classes seen across the splits (max label + 1)."""
    return int(max(s.labels.max() for s in splits.values() if len(s))) + 1
