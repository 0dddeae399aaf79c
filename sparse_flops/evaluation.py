"""Embedding a split with a trained state, and the in-training retrieval evaluation."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from sparse_flops import data, logs, metrics, sharding


def embed_step(state: Any, x: jax.Array, *, model) -> jax.Array:
    """Inference embeddings ``(B, dim)`` of inputs ``x`` ``(B, ...)`` with the BatchNorm running
    statistics of ``state`` (a :class:`sparse_flops.train.TrainState`)."""
    return model.apply(
        {"params": state.params, "batch_stats": state.batch_stats},
        x,
        train=False,
        method=model.embed,
    )


def embed_split(embed_fn, state: Any, split: data.ArraySplit, batch_size: int) -> np.ndarray:
    """Embeds a whole split in fixed-size batches (the last one padded, so one compilation);
    returns float32 ``(n, dim)``."""
    out = []
    batches = data.batches_in_order(split, batch_size)
    total = -(-len(split) // batch_size)
    for x, _ in logs.progress(batches, total=total, desc="embedding", unit="batch"):
        n = len(x)
        if n < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - n,) + x.shape[1:], x.dtype)])
        out.append(sharding.to_host(embed_fn(state, x))[:n])
    return np.concatenate(out).astype(np.float32)


def evaluate(
    embed_fn, state: Any, split: data.ArraySplit, eval_config, views_config=None
) -> dict[str, float]:
    """Retrieval on a held-out split, ``eval_config.regime``:

    - ``class``: the first ``num_queries`` items query the whole split (each query excluded
      from its own ranking); relevant = same class.
    - ``instance``: seeded augmented views of the first ``num_queries`` items
      (``views_config``: ``instance_augment`` and ``instance_seed``, the export's) query the
      split's originals; the one relevant item is each view's own original.

    Returns precision@k, recall@k, mAP and the cost statistics of the split's codes (mean
    non-zeros, ``sum_j p_j^2``, ``R_sub``, expected multiply-adds per query)."""
    z = embed_split(embed_fn, state, split, eval_config.batch_size)
    nq = min(eval_config.num_queries, len(split)) if eval_config.num_queries > 0 else len(split)
    if eval_config.regime == "instance":
        views = data.augment_split(
            split, nq, dict(views_config.instance_augment), views_config.instance_seed
        )
        out = metrics.evaluate_embeddings(
            embed_split(embed_fn, state, views, eval_config.batch_size),
            views.labels,
            z,
            np.arange(len(split)),
            ks=tuple(eval_config.ks),
        )
    else:
        out = metrics.evaluate_embeddings(
            z[:nq],
            split.labels[:nq],
            z,
            split.labels,
            ks=tuple(eval_config.ks),
            self_index=np.arange(nq),
        )
    out.update(metrics.cost_summary(z))
    return out
