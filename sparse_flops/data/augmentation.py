"""Seeded, pure input augmentations (jnp), applied inside the jitted train step.

Images are ``(batch, H, W, C)`` floats in ``[0, 1]``; each function draws per-example randomness
from ``key``, so the same key gives the same batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


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
