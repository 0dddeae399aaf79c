"""Metric-learning losses on L2-normalised embeddings (pure jnp).

Classifier losses (ArcFace, CosFace, normalised softmax) take the cosine matrix between the
embeddings and L2-normalised class weights, ``cosine = z @ normalize(W).T`` of shape
``(batch, num_classes)``; the weights live in the model
(:class:`sparse_flops.models.CosineClassifier`).
Pair losses (triplet semi-hard, NT-Xent) take the embeddings themselves.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import optax


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """``x / max(||x||, eps)`` along ``axis``; a zero vector stays zero."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    return x / jnp.maximum(norm, eps)


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def norm_softmax_loss(cosine: jax.Array, labels: jax.Array, *, scale: float) -> jax.Array:
    """Normalised softmax: cross-entropy of ``scale * cosine``.

    Args:
      cosine: ``(batch, num_classes)`` cosines between embeddings and class weights.
      labels: ``(batch,)`` integer class ids.
      scale: the logit scale ``s``.
    """
    return _cross_entropy(scale * cosine, labels)


def cosface_loss(cosine: jax.Array, labels: jax.Array, *, scale: float, margin: float) -> jax.Array:
    """CosFace (large-margin cosine loss): the target logit is ``s * (cos - m)``."""
    onehot = jax.nn.one_hot(labels, cosine.shape[-1], dtype=cosine.dtype)
    return _cross_entropy(scale * (cosine - margin * onehot), labels)


def arcface_loss(cosine: jax.Array, labels: jax.Array, *, scale: float, margin: float) -> jax.Array:
    """ArcFace (additive angular margin): the target logit is ``s * cos(theta + m)``.

    Where ``theta + m`` would pass ``pi`` (``cos <= cos(pi - m)``) the target logit falls back to
    ``cos - m sin(m)``, which keeps it monotone in ``theta`` (as in the reference implementation).
    """
    cos_m, sin_m = math.cos(margin), math.sin(margin)
    threshold = math.cos(math.pi - margin)
    cosine = jnp.clip(cosine, -1.0, 1.0)
    # The tiny floor keeps the gradient of sqrt finite at |cos| = 1.
    sine = jnp.sqrt(jnp.maximum(1.0 - jnp.square(cosine), 1e-12))
    phi = cosine * cos_m - sine * sin_m
    phi = jnp.where(cosine > threshold, phi, cosine - margin * sin_m)
    onehot = jax.nn.one_hot(labels, cosine.shape[-1], dtype=bool)
    return _cross_entropy(scale * jnp.where(onehot, phi, cosine), labels)


def pairwise_squared_distances(z: jax.Array) -> jax.Array:
    """``||z_i - z_j||^2`` for all pairs of rows of ``z`` ``(batch, dim)``; ``(batch, batch)``."""
    sq = jnp.sum(jnp.square(z), axis=1)
    d = sq[:, None] - 2.0 * z @ z.T + sq[None, :]
    d = jnp.maximum(d, 0.0)
    return d * (1.0 - jnp.eye(z.shape[0], dtype=z.dtype))


def triplet_semihard_loss(z: jax.Array, labels: jax.Array, *, margin: float) -> jax.Array:
    """Triplet loss with semi-hard negative mining over the batch (FaceNet; TF's contrib loss).

    For every anchor-positive pair ``(a, p)`` with ``a != p``, the negative is the closest ``n``
    with ``d(a, n) > d(a, p)``; if there is none, the farthest negative of ``a``. The loss is the
    mean over those pairs of ``max(0, margin + d(a, p) - d(a, n))``, with squared distances.

    Args:
      z: ``(batch, dim)`` embeddings.
      labels: ``(batch,)`` integer labels.
      margin: the margin.
    Returns:
      a scalar; zero when the batch has no positive pair.
    """
    d = pairwise_squared_distances(z)
    same = labels[:, None] == labels[None, :]
    eye = jnp.eye(z.shape[0], dtype=bool)
    positive = same & ~eye
    negative = ~same
    big = jnp.max(d) + 1.0
    # d_ap[a, p, 1] against d[a, n]: for each (a, p) the semi-hard candidates n.
    d_ap = d[:, :, None]
    d_an = d[:, None, :]
    semihard = negative[:, None, :] & (d_an > d_ap)
    closest_semihard = jnp.min(jnp.where(semihard, d_an, big), axis=2)
    farthest_negative = jnp.max(jnp.where(negative, d, -1.0), axis=1)
    has_semihard = jnp.any(semihard, axis=2)
    d_neg = jnp.where(has_semihard, closest_semihard, farthest_negative[:, None])
    per_pair = jnp.maximum(margin + d - d_neg, 0.0)
    valid = positive & jnp.any(negative, axis=1)[:, None]
    count = jnp.sum(valid)
    return jnp.sum(jnp.where(valid, per_pair, 0.0)) / jnp.maximum(count, 1)


def ntxent_loss(z_a: jax.Array, z_b: jax.Array, *, temperature: float) -> jax.Array:
    """NT-Xent / InfoNCE over two views (SimCLR): each of the ``2B`` embeddings must pick its
    other view among the ``2B - 1`` others, with logits ``cos / temperature``.

    Args:
      z_a, z_b: ``(batch, dim)`` L2-normalised embeddings of two views of the same items.
      temperature: softmax temperature.
    """
    b = z_a.shape[0]
    z = jnp.concatenate([z_a, z_b], axis=0)
    logits = (z @ z.T) / temperature
    logits = jnp.where(jnp.eye(2 * b, dtype=bool), -jnp.inf, logits)
    targets = jnp.concatenate([jnp.arange(b, 2 * b), jnp.arange(b)])
    return _cross_entropy(logits, targets)


# ---------------------------------------------------------------------------------------------
# Registry: each name resolves once, in ``train.build``, to a callable with its settings bound.


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """A registered loss: the function, what it reads, and its hyper-parameters' config keys.

    ``inputs`` is ``cosine`` (``fn(cosine (B, C), labels (B,))``, classifier losses),
    ``embeddings`` (``fn(z (B, d), labels (B,))``) or ``two_views`` (``fn(z_a, z_b)``, two
    augmented views of each item).
    """

    fn: Callable[..., jax.Array]
    inputs: str
    hparams: tuple[str, ...]


LOSSES: dict[str, LossSpec] = {
    "arcface": LossSpec(arcface_loss, "cosine", ("scale", "margin")),
    "cosface": LossSpec(cosface_loss, "cosine", ("scale", "margin")),
    "norm_softmax": LossSpec(norm_softmax_loss, "cosine", ("scale",)),
    "triplet": LossSpec(triplet_semihard_loss, "embeddings", ("margin",)),
    "ntxent": LossSpec(ntxent_loss, "two_views", ("temperature",)),
}
CLASSIFIER_LOSSES = tuple(n for n, s in LOSSES.items() if s.inputs == "cosine")
TWO_VIEW_LOSSES = tuple(n for n, s in LOSSES.items() if s.inputs == "two_views")

View = tuple[jax.Array, jax.Array | None]  # (embeddings (B, d), cosines (B, C) or None)


def _on_cosine(views: Sequence[View], labels: jax.Array, *, loss) -> jax.Array:
    return loss(views[0][1], labels)


def _on_embeddings(views: Sequence[View], labels: jax.Array, *, loss) -> jax.Array:
    return loss(views[0][0], labels)


def _on_two_views(views: Sequence[View], labels: jax.Array, *, loss) -> jax.Array:
    del labels
    return loss(views[0][0], views[1][0])


# inputs -> (adapter from views to the loss's arguments, number of augmented views)
_ADAPTERS = {
    "cosine": (_on_cosine, 1),
    "embeddings": (_on_embeddings, 1),
    "two_views": (_on_two_views, 2),
}


@dataclasses.dataclass(frozen=True)
class Objective:
    """The task loss of a training step, its hyper-parameters bound.

    ``fn(views, labels)`` takes one ``(z, cosine)`` pair per augmented view of the batch
    (``num_views`` of them; for two views the first is the query side, the second the database
    side) and returns a scalar.
    """

    name: str
    num_views: int
    fn: Callable[[Sequence[View], jax.Array], jax.Array]


def get_loss(name: str) -> LossSpec:
    """The registered loss ``name``; a clear error names the choices."""
    if name not in LOSSES:
        raise ValueError(f"config.loss.name={name!r}; choose one of {tuple(LOSSES)}")
    return LOSSES[name]


def make_objective(loss_config) -> Objective:
    """The :class:`Objective` of ``config.loss``: the registered function with the
    hyper-parameters it takes (``scale``, ``margin``, ``temperature``) read from the config."""
    spec = get_loss(loss_config.name)
    loss = functools.partial(spec.fn, **{h: loss_config[h] for h in spec.hparams})
    adapter, num_views = _ADAPTERS[spec.inputs]
    return Objective(loss_config.name, num_views, functools.partial(adapter, loss=loss))
