"""Sparsity penalties, their registry and weight schedules (pure jnp).

All penalties take a batch of embeddings ``z`` of shape ``(batch, dim)``. They reduce over the
whole batch axis, so a jitted step over a batch sharded across devices computes the penalty of the
*global* batch (the original TF1 code computed it per worker, which biases the FLOPs term upward).
Names resolve to callables once (:func:`make_penalty`, :func:`weight_schedule`), outside the
traced step. The diagnostics of codes (``p_j``, mean non-zeros, ``sum_j p_j^2``, ``R_sub``) have
one definition, in :mod:`sparse_flops.metrics`, that works on NumPy and jnp arrays alike.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from sparse_flops import metrics

Penalty = Callable[[jax.Array], jax.Array]


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


def no_penalty(z: jax.Array) -> jax.Array:
    """Zero (the unregularised baseline), in ``z``'s dtype."""
    return jnp.zeros((), z.dtype)


PENALTIES: dict[str, Penalty] = {"flops": flops, "l1": l1, "none": no_penalty}

# What a penalty is computed on (config.regularizer.on): the L2-normalised codes the index stores
# (the original code's choice), or the head's activations before that normalisation. On unit-norm
# rows the FLOPs relaxation rewards rows with disjoint supports, not few non-zeros: with C classes
# each on its own block of dimensions it is 1/C whatever the number of non-zeros per row, so with
# d >> C it stalls there (docs/tuning.md); on the activations it keeps paying for every non-zero.
INPUTS = ("codes", "activations")
INPUTS = ("codes", "activations")


def get_penalty(name: str) -> Penalty:
    """The registered penalty ``name``; a clear error names the choices."""
    if name not in PENALTIES:
        raise ValueError(f"config.regularizer.name={name!r}; choose one of {tuple(PENALTIES)}")
    return PENALTIES[name]


def per_device_penalty(penalty_fn: Penalty, z: jax.Array, num_shards: int) -> jax.Array:
    """The penalty as the original code computed it: on each of ``num_shards`` equal contiguous
    slices of the batch (one per worker), then averaged over workers.

    Args:
      penalty_fn: a penalty, e.g. :func:`flops`.
      z: embeddings, shape ``(batch, dim)`` with ``batch`` divisible by ``num_shards``.
      num_shards: number of workers.
    """
    batch, dim = z.shape
    if batch % num_shards:
        raise ValueError(f"batch {batch} is not divisible by {num_shards} shards")
    shards = z.reshape(num_shards, batch // num_shards, dim)
    return jnp.mean(jax.vmap(penalty_fn)(shards))


def make_penalty(name: str, num_shards: int = 1) -> Penalty:
    """``z -> penalty`` for the registered ``name``: of the global batch (``num_shards = 1``) or
    the original code's per-worker mean over ``num_shards`` slices."""
    fn = get_penalty(name)
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if num_shards == 1:
        return fn
    return functools.partial(per_device_penalty, fn, num_shards=num_shards)


def two_sided_penalty(
    penalty_fn: Penalty,
    z_query: jax.Array,
    z_database: jax.Array,
    *,
    query_weight: float | jax.Array,
    database_weight: float | jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Weighted penalty of a loss that has a query side and a database side.

    Both inputs are ``(batch, dim)``. Returns ``(query_weight * p_query + database_weight *
    p_database, p_query, p_database)`` so a caller can log each side.
    """
    p_query, p_db = penalty_fn(z_query), penalty_fn(z_database)
    return query_weight * p_query + database_weight * p_db, p_query, p_db


# ---------------------------------------------------------------------------------------------
# Diagnostics (not trained).


def unbiased_flops(z: jax.Array) -> jax.Array:
    """Unbiased estimate of ``sum_j p_j^2`` from one batch: ``sum_j n_j (n_j - 1) / (B (B - 1))``.

    ``n_j`` counts the rows of ``z`` ``(B, dim)`` whose dimension ``j`` is non-zero. (The plug-in
    ``sum_j (n_j / B)^2`` of :func:`sparse_flops.metrics.code_statistics` is biased upward.)
    """
    b = z.shape[0]
    n = jnp.sum((z != 0).astype(jnp.float32), axis=0)
    return jnp.sum(n * (n - 1.0)) / (b * (b - 1.0))


def sparsity_stats(z: jax.Array) -> dict[str, jax.Array]:
    """Diagnostics of a batch ``z`` ``(batch, dim)``: :func:`sparse_flops.metrics.code_statistics`
    of its ``p_j`` (``mean_nonzeros``, ``nonzero_fraction``, ``sum_p_squared``, ``r_sub``) and
    ``flops_unbiased``. Traceable under ``jit``."""
    return {
        **metrics.code_statistics(metrics.activation_probabilities(z)),
        "flops_unbiased": unbiased_flops(z),
    }


# ---------------------------------------------------------------------------------------------
# Weight schedules.


def quadratic_warmup(step: jax.Array | int, weight: float, warmup_steps: int) -> jax.Array:
    """``weight * min(1, (step / warmup_steps)^2)``; ``warmup_steps <= 0`` means no warm-up."""
    step = jnp.asarray(step, jnp.float32)
    if warmup_steps <= 0:
        return jnp.full((), weight, jnp.float32)
    return weight * jnp.minimum(1.0, jnp.square(step / warmup_steps))


def constant(step: jax.Array | int, weight: float, warmup_steps: int = 0) -> jax.Array:
    """``weight`` at every step (``warmup_steps`` is ignored)."""
    del step, warmup_steps
    return jnp.full((), weight, jnp.float32)


SCHEDULES = {"quadratic": quadratic_warmup, "constant": constant}


def weight_schedule(name: str, weight: float, warmup_steps: int = 0):
    """A function ``step -> weight`` for the schedule ``name`` (one of :data:`SCHEDULES`)."""
    if weight < 0:
        raise ValueError(f"regulariser weight must be >= 0, got {weight}")
    if name not in SCHEDULES:
        raise ValueError(f"config.regularizer.schedule={name!r}; choose one of {tuple(SCHEDULES)}")
    return functools.partial(SCHEDULES[name], weight=weight, warmup_steps=warmup_steps)
