"""Seeded, pure input augmentations (jnp), applied inside the jitted train step.

Images are ``(batch, H, W, C)`` floats in ``[0, 1]``; each function draws per-example randomness
from ``key``, so the same key gives the same batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sparse_flops.config import AUGMENT_BLOCK as BLOCK
from sparse_flops.data.base import ArraySplit


def random_shift(key: jax.Array, x: jax.Array, max_shift: int) -> jax.Array:
    """Translates each image by up to ``max_shift`` pixels each way (zero padding, then crop)."""
    if max_shift <= 0:
        return x
    b, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
    offsets = jax.random.randint(key, (b, 2), 0, 2 * max_shift + 1)

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))

    return jax.vmap(crop)(padded, offsets)


def random_flip(key: jax.Array, x: jax.Array) -> jax.Array:
    """Flips each image left-right with probability 1/2."""
    flip = jax.random.bernoulli(key, 0.5, (x.shape[0], 1, 1, 1))
    return jnp.where(flip, x[:, :, ::-1, :], x)


def random_contrast(key: jax.Array, x: jax.Array, strength: float) -> jax.Array:
    """Scales each image's deviation from its mean by a factor in ``[1 - s, 1 + s]``."""
    if strength <= 0:
        return x
    factor = jax.random.uniform(
        key, (x.shape[0],) + (1,) * (x.ndim - 1), minval=1 - strength, maxval=1 + strength
    )
    mean = jnp.mean(x, axis=tuple(range(1, x.ndim)), keepdims=True)
    return mean + (x - mean) * factor


def gaussian_noise(key: jax.Array, x: jax.Array, std: float) -> jax.Array:
    """Adds i.i.d. Gaussian noise of standard deviation ``std``."""
    if std <= 0:
        return x
    return x + std * jax.random.normal(key, x.shape, x.dtype)


def augment(
    key: jax.Array,
    x: jax.Array,
    *,
    shift: int = 0,
    flip: bool = False,
    contrast: float = 0.0,
    noise: float = 0.0,
) -> jax.Array:
    """Applies the enabled augmentations in order shift, flip, contrast, noise.

    Spatial ones (shift, flip, contrast) apply to images ``(batch, H, W, C)`` only; noise to any.
    """
    k_shift, k_flip, k_contrast, k_noise = jax.random.split(key, 4)
    if x.ndim == 4:
        x = random_shift(k_shift, x, shift)
        if flip:
            x = random_flip(k_flip, x)
        x = random_contrast(k_contrast, x, contrast)
    return gaussian_noise(k_noise, x, noise)


def augmented_views(
    split: ArraySplit, start: int, stop: int, total: int, augment_kwargs: dict, seed: int
) -> ArraySplit:
    """Views ``start .. stop - 1`` of a seeded sequence of ``total`` augmented views: view ``v``
    is item ``v % len(split)`` augmented, labelled by that item's row. Views are augmented in
    blocks of ``BLOCK`` (1000) keyed by the block's first view, so a view does not depend on
    which chunk asks for it (``start`` a multiple of the block)."""
    if start % BLOCK or not 0 <= start <= stop <= total:
        raise ValueError(f"views {start}..{stop} of {total}: start must be a multiple of {BLOCK}")
    key = jax.random.key(seed)
    out, rows = [], []
    for b in range(start, stop, BLOCK):
        idx = np.arange(b, min(b + BLOCK, total)) % len(split)
        k = jax.random.fold_in(key, b)
        out.append(np.asarray(augment(k, split.inputs[idx], **augment_kwargs)))
        rows.append(idx)
    n = stop - start
    if not out:
        return ArraySplit(split.inputs[:0].astype(np.float32), np.zeros(0, np.int64))
    return ArraySplit(
        np.concatenate(out)[:n].astype(np.float32), np.concatenate(rows)[:n].astype(np.int64)
    )


def augment_split(split: ArraySplit, n: int, augment_kwargs: dict, seed: int):
    """Seeded augmented views of the first ``n`` items of ``split``, each labelled by the row of
    its source item (the instance queries)."""
    n = min(n, len(split))
    return augmented_views(split, 0, n, n, augment_kwargs, seed)
