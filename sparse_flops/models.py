"""Flax Linen backbones, the sparse embedding head, and a name-keyed registry.

``EmbeddingModel`` = backbone -> :class:`SparseHead` (Dense -> BatchNorm -> activation -> L2
normalisation), plus an optional :class:`CosineClassifier` that holds the class weights of the
classifier losses. Every module takes ``train`` to switch BatchNorm and dropout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sparse_flops.losses import l2_normalize

ACTIVATIONS = ("relu", "soft_threshold", "none")
ACTIVATIONS_KEY = "activations"  # the head's sown pre-normalisation activations
Dtype = Any


def soft_threshold(x: jax.Array, threshold: float) -> jax.Array:
    """``relu(x - t) - relu(-x - t)``: signed codes, exact zeros on ``[-t, t]``."""
    return jax.nn.relu(x - threshold) - jax.nn.relu(-x - threshold)


def activation(name: str, x: jax.Array, threshold: float = 0.0) -> jax.Array:
    """The code activation ``name`` (one of :data:`ACTIVATIONS`) applied to ``x``."""
    if name == "relu":
        return jax.nn.relu(x)
    if name == "soft_threshold":
        return soft_threshold(x, threshold)
    if name == "none":
        return x
    raise ValueError(f"unknown activation {name!r}; choose one of {ACTIVATIONS}")


# ---------------------------------------------------------------------------------------------
# Backbones. Each maps a batch of inputs to a batch of feature vectors ``(batch, features)``.


class MLP(nn.Module):
    """An MLP over feature vectors ``(batch, in_features)``."""

    hidden: Sequence[int] = (512, 512)
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = x.reshape(x.shape[0], -1).astype(self.dtype)
        for width in self.hidden:
            # No bias before BatchNorm: it would be cancelled by the normalisation.
            x = nn.Dense(width, use_bias=False, dtype=self.dtype)(x)
            x = nn.BatchNorm(use_running_average=not train, dtype=self.dtype)(x)
            x = nn.relu(x)
            if self.dropout:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return x


class SmallConvNet(nn.Module):
    """A small ConvNet for 28x28 grayscale images ``(batch, 28, 28, 1)``.

    conv32 -> pool -> conv64 -> pool -> conv128 -> global average -> dense; BatchNorm after
    each convolution. Cheap enough to train in minutes on two CPU cores.
    """

    channels: Sequence[int] = (32, 64, 128)
    features: int = 256
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = x.astype(self.dtype)
        for i, c in enumerate(self.channels):
            x = nn.Conv(c, (3, 3), use_bias=False, dtype=self.dtype)(x)
            x = nn.BatchNorm(use_running_average=not train, dtype=self.dtype)(x)
            x = nn.relu(x)
            if i < len(self.channels) - 1:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.features, dtype=self.dtype)(x)
        return nn.relu(x)


class CifarConvNet(nn.Module):
    """The paper's CIFAR-100 network: Network-in-Network style, 192 channels, dropout 0.5.

    Three blocks of (kxk conv, 1x1 conv, 1x1 conv); max-pool and dropout after the first,
    average-pool and dropout after the second, global average after the third.
    """

    channels: int = 192
    dropout: float = 0.5
    # The original network: no BatchNorm (convolutions with bias), and its last 1x1 convolution
    # linear, the ReLU applied after the global average.
    batch_norm: bool = True
    last_linear: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = x.astype(self.dtype)
        c = self.channels

        def block(x, first_kernel, widths, last=False):
            for i, w in enumerate(widths):
                k = first_kernel if i == 0 else 1
                x = nn.Conv(w, (k, k), use_bias=not self.batch_norm, dtype=self.dtype)(x)
                if self.batch_norm:
                    x = nn.BatchNorm(use_running_average=not train, dtype=self.dtype)(x)
                if not (last and self.last_linear and i == len(widths) - 1):
                    x = nn.relu(x)
            return x

        x = block(x, 5, (c, 160, 96))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = block(x, 5, (c, c, c))
        x = nn.avg_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = block(x, 3, (c, c, c), last=True)
        x = jnp.mean(x, axis=(1, 2))
        return nn.relu(x) if self.last_linear else x


class _BasicBlock(nn.Module):
    filters: int
    strides: int
    dtype: Dtype

    @nn.compact
    def __call__(self, x, train):
        norm = lambda **kw: nn.BatchNorm(use_running_average=not train, dtype=self.dtype, **kw)
        y = nn.Conv(self.filters, (3, 3), self.strides, use_bias=False, dtype=self.dtype)(x)
        y = nn.relu(norm()(y))
        y = nn.Conv(self.filters, (3, 3), use_bias=False, dtype=self.dtype)(y)
        y = norm(scale_init=nn.initializers.zeros)(y)
        if x.shape != y.shape:
            x = nn.Conv(self.filters, (1, 1), self.strides, use_bias=False, dtype=self.dtype)(x)
            x = norm()(x)
        return nn.relu(x + y)


class _Bottleneck(nn.Module):
    filters: int
    strides: int
    dtype: Dtype

    @nn.compact
    def __call__(self, x, train):
        norm = lambda **kw: nn.BatchNorm(use_running_average=not train, dtype=self.dtype, **kw)
        y = nn.Conv(self.filters, (1, 1), use_bias=False, dtype=self.dtype)(x)
        y = nn.relu(norm()(y))
        y = nn.Conv(self.filters, (3, 3), self.strides, use_bias=False, dtype=self.dtype)(y)
        y = nn.relu(norm()(y))
        y = nn.Conv(4 * self.filters, (1, 1), use_bias=False, dtype=self.dtype)(y)
        y = norm(scale_init=nn.initializers.zeros)(y)
        if x.shape != y.shape:
            x = nn.Conv(4 * self.filters, (1, 1), self.strides, use_bias=False, dtype=self.dtype)(x)
            x = norm()(x)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """ResNet v1.5 for images ``(batch, H, W, C)``; a 3x3 stem without max-pool for small images."""

    stage_sizes: Sequence[int]
    bottleneck: bool
    width: int = 64
    small_images: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = x.astype(self.dtype)
        if self.small_images:
            x = nn.Conv(self.width, (3, 3), use_bias=False, dtype=self.dtype)(x)
        else:
            x = nn.Conv(self.width, (7, 7), (2, 2), use_bias=False, dtype=self.dtype)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, dtype=self.dtype)(x))
        if not self.small_images:
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        block = _Bottleneck if self.bottleneck else _BasicBlock
        for i, n in enumerate(self.stage_sizes):
            for j in range(n):
                strides = 2 if i > 0 and j == 0 else 1
                x = block(self.width * 2**i, strides, self.dtype)(x, train)
        return jnp.mean(x, axis=(1, 2))


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "small_convnet": SmallConvNet,
    "cifar_convnet": CifarConvNet,
    "resnet18": lambda **kw: ResNet(stage_sizes=(2, 2, 2, 2), bottleneck=False, **kw),
    "resnet50": lambda **kw: ResNet(stage_sizes=(3, 4, 6, 3), bottleneck=True, **kw),
}


def make_backbone(name: str, **kwargs) -> nn.Module:
    """The backbone registered as ``name``, built with ``kwargs``."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](**kwargs)


# ---------------------------------------------------------------------------------------------
# Head and full model.


class SparseHead(nn.Module):
    """Dense(dim) -> BatchNorm (optional) -> activation -> L2 normalisation.

    Returns ``(batch, dim)`` float32 embeddings; exact zeros where the activation is zero. The
    activations before the normalisation are sown as ``intermediates/activations`` (what the
    penalty sees with ``regularizer.on = "activations"``).

    ``batch_norm_scale = False`` drops BatchNorm's learned scale, so the pre-activations keep
    unit variance and a penalty on the activations can only be lowered by shifting units off
    (sparsity), not by shrinking every unit alike (the loss is blind to that scale).
    """

    dim: int = 1024
    activation: str = "relu"
    threshold: float = 0.0
    batch_norm: bool = True
    batch_norm_scale: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.Dense(self.dim, use_bias=not self.batch_norm, dtype=self.dtype)(x)
        if self.batch_norm:
            x = nn.BatchNorm(
                use_running_average=not train, use_scale=self.batch_norm_scale, dtype=self.dtype
            )(x)
        # Codes and their normalisation stay in float32 whatever the compute dtype.
        x = activation(self.activation, x.astype(jnp.float32), self.threshold)
        self.sow("intermediates", ACTIVATIONS_KEY, x)
        return l2_normalize(x)


class CosineClassifier(nn.Module):
    """Class weights ``W`` ``(num_classes, dim)``; returns ``z @ normalize(W).T`` ``(batch, C)``."""

    num_classes: int

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        w = self.param(
            "weights", nn.initializers.normal(stddev=0.01), (self.num_classes, z.shape[-1])
        )
        return z @ l2_normalize(w.astype(jnp.float32)).T


class EmbeddingModel(nn.Module):
    """Backbone + sparse head (+ cosine classifier when ``num_classes`` > 0).

    ``__call__`` returns ``(embeddings, cosine)``; ``cosine`` is None without a classifier.
    ``embed`` returns only the embeddings.
    """

    backbone: nn.Module
    head: SparseHead
    num_classes: int = 0

    def setup(self):
        if self.num_classes:
            self.classifier = CosineClassifier(self.num_classes)

    def embed(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.head(self.backbone(x, train), train)

    def __call__(self, x: jax.Array, train: bool = False):
        z = self.embed(x, train)
        cosine = self.classifier(z) if self.num_classes else None
        return z, cosine


def build_model(model_config, num_classes: int, dtype: Dtype = jnp.float32) -> EmbeddingModel:
    """An :class:`EmbeddingModel` from the ``config.model`` section.

    Args:
      model_config: has ``backbone`` (a name), ``backbone_kwargs`` (dict), ``dim``, ``activation``,
        ``threshold``, ``batch_norm``, ``batch_norm_scale``.
      num_classes: classes of the classifier head; 0 for pair losses.
      dtype: compute dtype of the backbone and the head's dense layer.
    """
    if model_config.activation not in ACTIVATIONS:
        raise ValueError(
            f"config.model.activation={model_config.activation!r}; choose one of {ACTIVATIONS}"
        )
    if model_config.dim <= 0:
        raise ValueError(f"config.model.dim must be positive, got {model_config.dim}")
    kwargs = dict(model_config.backbone_kwargs)
    backbone = make_backbone(model_config.backbone, dtype=dtype, **kwargs)
    head = SparseHead(
        dim=model_config.dim,
        activation=model_config.activation,
        threshold=model_config.threshold,
        batch_norm=model_config.batch_norm,
        batch_norm_scale=model_config.batch_norm_scale,
        dtype=dtype,
    )
    return EmbeddingModel(backbone=backbone, head=head, num_classes=num_classes)
