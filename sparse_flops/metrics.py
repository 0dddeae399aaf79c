"""Retrieval accuracy (precision@k, recall@k, mAP) and cost accounting (NumPy).

When the queries are drawn from the database, pass ``query_db_index`` (the database row of each
query): that row is removed from the query's ranking, so a query never retrieves itself (the
original TF1 code counted the self-match and inflated recall).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _ranked_relevance(
    scores: np.ndarray,
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    self_index: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Relevance of the database in descending score order, self-matches dropped.

    Returns ``(relevance (q, n - s) bool, number of relevant items per query (q,))``, ``s`` = 1
    when self-matches are dropped, else 0. Ties are broken by database order (stable sort).
    """
    relevant = db_labels[None, :] == query_labels[:, None]
    scores = scores.astype(np.float64, copy=True)
    if self_index is not None:
        rows = np.arange(len(scores))
        scores[rows, self_index] = -np.inf
        relevant[rows, self_index] = False
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked = np.take_along_axis(relevant, order, axis=1)
    if self_index is not None:
        ranked = ranked[:, :-1]  # the self-match sorts last (score -inf)
    return ranked, relevant.sum(axis=1)


def ranking_metrics(
    scores: np.ndarray,
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    *,
    ks: Sequence[int] = (1,),
    self_index: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-query precision@k, recall@k and average precision from a full score matrix.

    Args:
      scores: ``(q, n)`` similarity of each query to each database item.
      query_labels: ``(q,)``; db_labels: ``(n,)``.
      ks: cut-offs.
      self_index: ``(q,)`` database row of each query to exclude, or None.
    Returns:
      ``{'precision@k': (q,), 'recall@k': (q,), 'ap': (q,)}``; AP and recall are NaN for a query
      with no relevant item.
    """
    ranked, num_relevant = _ranked_relevance(scores, query_labels, db_labels, self_index)
    hits = np.cumsum(ranked, axis=1)
    out = {}
    n = ranked.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in ks:
            kk = min(k, n)
            out[f"precision@{k}"] = hits[:, kk - 1] / kk if kk else np.zeros(len(ranked))
            out[f"recall@{k}"] = (
                np.where(num_relevant > 0, hits[:, kk - 1] / num_relevant, np.nan)
                if kk
                else np.zeros(len(ranked))
            )
        precision_at_rank = hits / np.arange(1, n + 1)
        ap = np.sum(precision_at_rank * ranked, axis=1) / num_relevant
        out["ap"] = np.where(num_relevant > 0, ap, np.nan)
    return out


def evaluate_embeddings(
    queries: np.ndarray,
    query_labels: np.ndarray,
    database: np.ndarray,
    db_labels: np.ndarray,
    *,
    ks: Sequence[int] = (1,),
    self_index: np.ndarray | None = None,
    chunk: int = 512,
) -> dict[str, float]:
    """Mean precision@k, recall@k and mAP of exact inner-product retrieval.

    Args:
      queries: ``(q, d)`` embeddings; database: ``(n, d)``.
      self_index: ``(q,)`` database row of each query, when queries come from the database.
      chunk: queries scored at once (bounds memory to ``chunk * n`` floats).
    Returns:
      ``{'precision@k': ..., 'recall@k': ..., 'map': ...}`` averaged over queries (mAP and recall
      over the queries that have at least one relevant item).
    """
    sums: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(queries), chunk):
        sl = slice(start, start + chunk)
        scores = np.asarray(queries[sl], np.float32) @ np.asarray(database, np.float32).T
        per_query = ranking_metrics(
            scores,
            query_labels[sl],
            db_labels,
            ks=ks,
            self_index=None if self_index is None else self_index[sl],
        )
        for key, v in per_query.items():
            sums.setdefault(key, []).append(v)
    out = {}
    for key, parts in sums.items():
        v = np.concatenate(parts)
        out["map" if key == "ap" else key] = float(np.nanmean(v)) if np.any(~np.isnan(v)) else 0.0
    return out


# ---------------------------------------------------------------------------------------------
# Cost accounting.


def activation_probabilities(codes):
    """``p_j``: the fraction of rows of ``codes`` ``(n, d)`` whose dimension ``j`` is non-zero;
    ``(d,)``. Takes scipy sparse (stored zeros are not counted), NumPy or jnp arrays (traceable
    under ``jit``, so the training step logs the same quantity)."""
    if hasattr(codes, "tocsc"):
        csc = codes.tocsc()
        csc.eliminate_zeros()
        return np.diff(csc.indptr).astype(np.float64) / codes.shape[0]
    if not hasattr(codes, "mean"):
        codes = np.asarray(codes)
    return (codes != 0).mean(axis=0)


def code_statistics(p) -> dict:
    """The cost statistics of codes with activation probabilities ``p`` ``(d,)`` (NumPy or
    jnp; the one definition the project uses):

    - ``mean_nonzeros`` = ``sum_j p_j``, and ``nonzero_fraction`` = that over ``d``;
    - ``sum_p_squared`` = ``sum_j p_j^2``, the expected multiply-adds per database item when
      queries follow the database's distribution;
    - ``r_sub`` = ``d sum_j p_j^2 / (sum_j p_j)^2 >= 1``, 1 when non-zeros are spread evenly
      (NaN for all-zero codes, where it is undefined).
    """
    d = p.shape[0]
    s = p.sum()
    s2 = (p * p).sum()
    return {
        "mean_nonzeros": s,
        "nonzero_fraction": s / d,
        "sum_p_squared": s2,
        "r_sub": d * s2 / (s * s),
    }


def cost_summary(database, queries=None) -> dict[str, float]:
    """Retrieval cost of an inverted index over ``database`` ``(n, d)``.

    Returns :func:`code_statistics` of the database, and ``sum_j q_j p_j`` with the expected
    multiply-adds per query ``N * sum_j q_j p_j`` (queries following the database's distribution
    when ``queries`` is None), beside the dense cost ``N * d``.
    """
    n, d = database.shape
    p = np.asarray(activation_probabilities(database), np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {k: float(v) for k, v in code_statistics(p).items()}
    out["dense_macs_per_query"] = float(n * d)
    q = p if queries is None else np.asarray(activation_probabilities(queries), np.float64)
    out["sum_q_p"] = float(np.sum(q * p))
    out["expected_macs_per_query"] = n * out["sum_q_p"]
    return out


def topk_metrics(
    ids: np.ndarray,
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    *,
    ks: Sequence[int] = (1, 10, 100),
) -> dict[str, float]:
    """Mean precision@k, recall@k and mAP@K of top-K result lists.

    Args:
      ids: ``(q, K)`` database rows ranked best first; ``-1`` = no result.
      query_labels: ``(q,)``; db_labels: ``(n,)``. Queries must not be in the database (or the
        caller has removed them from ``ids``).
      ks: cut-offs, each at most ``K``.
    Returns:
      ``precision@k``, ``recall@k`` (over queries with a relevant item) and ``map@K``, where
      ``AP@K = sum_{i <= K} P@i rel_i / min(R, K)`` with ``R`` relevant items.
    """
    nq, kmax = ids.shape
    if any(k > kmax for k in ks):
        raise ValueError(f"cut-offs {tuple(ks)} exceed the {kmax} results per query")
    labels_of = np.where(ids >= 0, db_labels[np.maximum(ids, 0)], np.iinfo(np.int64).min)
    rel = labels_of == np.asarray(query_labels)[:, None]
    uniq, counts = np.unique(db_labels, return_counts=True)
    lookup = dict(zip(uniq.tolist(), counts.tolist(), strict=True))
    num_rel = np.array([lookup.get(int(y), 0) for y in query_labels], np.float64)
    hits = np.cumsum(rel, axis=1)
    has = num_rel > 0
    out = {}
    for k in ks:
        out[f"precision@{k}"] = float(np.mean(hits[:, k - 1] / k)) if nq else 0.0
        out[f"recall@{k}"] = float(np.mean(hits[has, k - 1] / num_rel[has])) if has.any() else 0.0
    prec = hits / np.arange(1, kmax + 1)
    ap = np.sum(prec * rel, axis=1)[has] / np.minimum(num_rel[has], kmax)
    out[f"map@{kmax}"] = float(np.mean(ap)) if has.any() else 0.0
    return out
