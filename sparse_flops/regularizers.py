"""Sparsity penalties, their diagnostics and weight schedules (pure jnp).

All penalties take a batch of embeddings ``z`` of shape ``(batch, dim)``. They reduce over the
whole batch axis, so a jitted step over a batch sharded across devices computes the penalty of the
*global* batch (the original TF1 code computed it per worker, which biases the FLOPs term upward).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

PENALTIES = ("flops", "l1", "none")
SCHEDULES = ("quadratic", "constant")


def flops(z: jax.Array) -> jax.Array:
    """Continuous relaxation of the retrieval FLOPs: ``sum_j (mean_i |z_ij|)^2``.

    Args:
      z: embeddings, shape ``(batch, dim)``.
    Returns:
      a scalar.
    """
    return jnp.sum(jnp.square(jnp.mean(jnp.abs(z), axis=0)))


def l1(z: jax.Array) -> jax.Array:
    """L1 penalty averaged over the batch: ``mean_i sum_j |z_ij|``; ``z`` is ``(batch, dim)``."""
    return jnp.mean(jnp.sum(jnp.abs(z), axis=1))


def penalty(name: str, z: jax.Array) -> jax.Array:
    """The penalty called ``name`` (one of :data:`PENALTIES`) of ``z`` ``(batch, dim)``."""
    if name == "flops":
        return flops(z)
    if name == "l1":
        return l1(z)
    if name == "none":
        return jnp.zeros((), z.dtype)
    raise ValueError(f"unknown penalty {name!r}; choose one of {PENALTIES}")


def per_device_penalty(name: str, z: jax.Array, num_shards: int) -> jax.Array:
    """The penalty as the original code computed it: on each of ``num_shards`` equal contiguous
    slices of the batch (one per worker), then averaged over workers.

    Args:
      name: penalty name.
      z: embeddings, shape ``(batch, dim)`` with ``batch`` divisible by ``num_shards``.
      num_shards: number of workers.
    """
    batch, dim = z.shape
    if batch % num_shards:
        raise ValueError(f"batch {batch} is not divisible by {num_shards} shards")
    shards = z.reshape(num_shards, batch // num_shards, dim)
    return jnp.mean(jax.vmap(lambda s: penalty(name, s))(shards))


def two_sided_penalty(
    name: str,
    z_query: jax.Array,
    z_database: jax.Array,
    *,
    query_weight: float | jax.Array,
    database_weight: float | jax.Array,
) -> jax.Array:
    """Weighted penalty of a loss that has a query side and a database side.

    ``query_weight * penalty(z_query) + database_weight * penalty(z_database)``; both inputs are
    ``(batch, dim)``.
    """
    return query_weight * penalty(name, z_query) + database_weight * penalty(name, z_database)


# ---------------------------------------------------------------------------------------------
# Diagnostics (not trained).


def nonzero_fraction(z: jax.Array) -> jax.Array:
    """Fraction of exactly non-zero entries of ``z`` ``(batch, dim)``."""
    return jnp.mean((z != 0).astype(jnp.float32))


def mean_nonzeros(z: jax.Array) -> jax.Array:
    """Mean number of non-zero entries per row of ``z`` ``(batch, dim)``."""
    return jnp.mean(jnp.sum((z != 0).astype(jnp.float32), axis=1))


def activation_probabilities(z: jax.Array) -> jax.Array:
    """Empirical ``p_j``: fraction of rows whose dimension ``j`` is non-zero; ``(dim,)``."""
    return jnp.mean((z != 0).astype(jnp.float32), axis=0)


def unbiased_flops(z: jax.Array) -> jax.Array:
    """Unbiased estimate of ``sum_j p_j^2`` from one batch: ``sum_j n_j (n_j - 1) / (B (B - 1))``.

    ``n_j`` counts the rows of ``z`` ``(B, dim)`` whose dimension ``j`` is non-zero.
    """
    b = z.shape[0]
    n = jnp.sum((z != 0).astype(jnp.float32), axis=0)
    return jnp.sum(n * (n - 1.0)) / (b * (b - 1.0))


def suboptimality_ratio(z: jax.Array) -> jax.Array:
    """``R_sub = d * sum_j p_j^2 / (mean nnz)^2 >= 1``; 1 when non-zeros are spread evenly.

    Returns NaN for an all-zero batch, where the ratio is undefined.
    """
    d = z.shape[1]
    p = activation_probabilities(z)
    s = jnp.sum(p)
    return d * jnp.sum(p * p) / (s * s)


def sparsity_stats(z: jax.Array) -> dict[str, jax.Array]:
    """All diagnostics of ``z`` ``(batch, dim)`` as a dict of scalars."""
    p = activation_probabilities(z)
    return {
        "nonzero_fraction": nonzero_fraction(z),
        "mean_nonzeros": jnp.sum(p),
        "flops_unbiased": unbiased_flops(z),
        "sum_p_squared": jnp.sum(p * p),
        "r_sub": suboptimality_ratio(z),
    }


# ---------------------------------------------------------------------------------------------
# Weight schedules.


def quadratic_warmup(step: jax.Array | int, weight: float, warmup_steps: int) -> jax.Array:
    """``weight * min(1, (step / warmup_steps)^2)``; ``warmup_steps <= 0`` means no warm-up."""
    step = jnp.asarray(step, jnp.float32)
    if warmup_steps <= 0:
        return jnp.full((), weight, jnp.float32)
    return weight * jnp.minimum(1.0, jnp.square(step / warmup_steps))


def constant(step: jax.Array | int, weight: float) -> jax.Array:
    """``weight`` at every step."""
    del step
    return jnp.full((), weight, jnp.float32)


def weight_schedule(name: str, weight: float, warmup_steps: int = 0):
    """A function ``step -> weight`` for the schedule ``name`` (one of :data:`SCHEDULES`)."""
    if weight < 0:
        raise ValueError(f"regulariser weight must be >= 0, got {weight}")
    if name == "quadratic":
        return lambda step: quadratic_warmup(step, weight, warmup_steps)
    if name == "constant":
        return lambda step: constant(step, weight)
    raise ValueError(f"unknown weight schedule {name!r}; choose one of {SCHEDULES}")
