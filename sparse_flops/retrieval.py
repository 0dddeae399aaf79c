"""Retrieval: a sparse inverted index (numba), dense exact search (BLAS), re-ranking, top-k.

Both indexes answer ``search(queries, k) -> (scores (q, k) float32, ids (q, k) int64)`` with
rows sorted by descending score, ties broken by ascending id; slots past the available results
hold score ``-inf`` and id ``-1``.

:class:`SparseIndex` accumulates scores term at a time over the posting lists of a query's
non-zero dimensions and keeps the top k in a bounded heap, never sorting the database. For a
query touching few rows it tracks the touched rows; for one touching many it scans the
accumulator instead (cheaper than a branch per posting). Rows a query does not touch score 0,
which still ranks above negative scores of signed codes; the search accounts for that.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp
from numba import prange

# A query whose postings exceed this fraction of the database scans the accumulator.
_SCAN_FRACTION = 0.125


@numba.njit(cache=True, nogil=True, inline="always")
def _worse(s1, i1, s2, i2):
    """Whether (s1, i1) ranks below (s2, i2): lower score, or equal score and larger id."""
    return s1 < s2 or (s1 == s2 and i1 > i2)


@numba.njit(cache=True, nogil=True)
def _heap_push(hs, hi, size, k, s, i):
    """Offers (s, i) to a min-heap (root = worst) of capacity k holding ``size`` items."""
    if size < k:
        pos = size
        size += 1
        while pos > 0:
            parent = (pos - 1) // 2
            if _worse(s, i, hs[parent], hi[parent]):
                hs[pos] = hs[parent]
                hi[pos] = hi[parent]
                pos = parent
            else:
                break
        hs[pos] = s
        hi[pos] = i
        return size
    if not _worse(hs[0], hi[0], s, i):
        return size
    pos = 0
    while True:
        left = 2 * pos + 1
        if left >= size:
            break
        child = left
        right = left + 1
        if right < size and _worse(hs[right], hi[right], hs[left], hi[left]):
            child = right
        if _worse(hs[child], hi[child], s, i):
            hs[pos] = hs[child]
            hi[pos] = hi[child]
            pos = child
        else:
            break
    hs[pos] = s
    hi[pos] = i
    return size


@numba.njit(cache=True, nogil=True)
def _search_one(
    q_idx,
    q_val,
    post_ptr,
    post_rows,
    post_vals,
    n,
    k,
    threshold,
    acc,
    mark,
    touched,
    hs,
    hi,
    out_s,
    out_i,
):
    postings = 0
    for t in range(q_idx.shape[0]):
        j = q_idx[t]
        postings += post_ptr[j + 1] - post_ptr[j]
    size = 0
    if postings > _SCAN_FRACTION * n:
        for t in range(q_idx.shape[0]):
            j = q_idx[t]
            w = q_val[t]
            for p in range(post_ptr[j], post_ptr[j + 1]):
                acc[post_rows[p]] += w * post_vals[p]
        for r in range(n):
            s = acc[r]
            if s > threshold:
                size = _heap_push(hs, hi, size, k, s, r)
            acc[r] = 0.0
    else:
        nt = 0
        for t in range(q_idx.shape[0]):
            j = q_idx[t]
            w = q_val[t]
            for p in range(post_ptr[j], post_ptr[j + 1]):
                r = post_rows[p]
                if mark[r] == 0:
                    mark[r] = 1
                    touched[nt] = r
                    nt += 1
                acc[r] += w * post_vals[p]
        for t in range(nt):
            r = touched[t]
            s = acc[r]
            if s > threshold:
                size = _heap_push(hs, hi, size, k, s, r)
        if threshold < 0.0:
            # Untouched rows score 0: they outrank negative scores and tie with zeros.
            for r in range(n):
                if size == k and (hs[0] > 0.0 or (hs[0] == 0.0 and r > hi[0])):
                    break
                if mark[r] == 0:
                    size = _heap_push(hs, hi, size, k, np.float32(0.0), r)
        for t in range(nt):
            r = touched[t]
            acc[r] = 0.0
            mark[r] = 0
    # Order the kept items by descending score, then ascending id (two stable sorts).
    by_id = np.argsort(hi[:size], kind="mergesort")
    s_by_id = hs[:size][by_id]
    by_score = np.argsort(-s_by_id, kind="mergesort")
    for pos in range(size):
        j = by_id[by_score[pos]]
        out_s[pos] = hs[j]
        out_i[pos] = hi[j]
    return postings


@numba.njit(cache=True, parallel=True)
def _search_batch(
    q_ptr,
    q_idx,
    q_val,
    post_ptr,
    post_rows,
    post_vals,
    n,
    k,
    threshold,
    n_chunks,
    out_s,
    out_i,
    out_postings,
):
    nq = q_ptr.shape[0] - 1
    for c in prange(n_chunks):
        acc = np.zeros(n, np.float32)
        mark = np.zeros(n, np.uint8)
        touched = np.empty(n, np.int64)
        hs = np.empty(k, np.float32)
        hi = np.empty(k, np.int64)
        for q in range(c * nq // n_chunks, (c + 1) * nq // n_chunks):
            lo, hi_ = q_ptr[q], q_ptr[q + 1]
            out_postings[q] = _search_one(
                q_idx[lo:hi_],
                q_val[lo:hi_],
                post_ptr,
                post_rows,
                post_vals,
                n,
                k,
                threshold,
                acc,
                mark,
                touched,
                hs,
                hi,
                out_s[q],
                out_i[q],
            )


def _as_csr(x, d: int, what: str) -> sp.csr_matrix:
    m = sp.csr_matrix(x, dtype=np.float32)
    if m.ndim != 2 or m.shape[1] != d:
        raise ValueError(f"{what} have shape {m.shape}; the index has dimension {d}")
    if m.nnz and not np.all(np.isfinite(m.data)):
        raise ValueError(f"{what} contain NaN or infinite values")
    m.sum_duplicates()
    m.sort_indices()
    return m


def _check_k(k: int) -> int:
    if int(k) != k or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k}")
    return int(k)


class SparseIndex:
    """An inverted index over a CSR database ``(n, d)``.

    Args:
      database: scipy sparse or dense ``(n, d)``; converted to float32 posting lists.
    """

    def __init__(self, database):
        db = sp.csr_matrix(database, dtype=np.float32)
        if db.nnz and not np.all(np.isfinite(db.data)):
            raise ValueError("database codes contain NaN or infinite values")
        db.eliminate_zeros()
        csc = db.tocsc()
        csc.sort_indices()
        self.n, self.dim = db.shape
        self.post_ptr = csc.indptr.astype(np.int64)
        self.post_rows = csc.indices.astype(np.int32)
        self.post_vals = csc.data.astype(np.float32)
        self.last_postings: np.ndarray | None = None

    @property
    def posting_lengths(self) -> np.ndarray:
        return np.diff(self.post_ptr)

    @property
    def nbytes(self) -> int:
        return self.post_ptr.nbytes + self.post_rows.nbytes + self.post_vals.nbytes

    def search(
        self, queries, k: int, *, threshold: float | None = None, num_threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k inner products of each query row ``(q, d)``.

        Args:
          queries: scipy sparse or dense ``(q, d)``.
          k: results per query; more than the database holds pads with ``-1`` ids.
          threshold: keep only scores strictly above it (None: no threshold).
          num_threads: numba threads (default: all).
        Returns:
          ``(scores (q, k) float32, ids (q, k) int64)``. ``self.last_postings`` holds the
          multiply-adds each query cost (the summed lengths of the posting lists it touched).
        """
        k = _check_k(k)
        q = _as_csr(queries, self.dim, "queries")
        nq = q.shape[0]
        kk = min(k, self.n)
        scores = np.full((nq, k), -np.inf, np.float32)
        ids = np.full((nq, k), -1, np.int64)
        postings = np.zeros(nq, np.int64)
        if nq and kk:
            threads = num_threads or numba.config.NUMBA_NUM_THREADS
            previous = numba.get_num_threads()
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            try:
                chunks = max(1, min(nq, 4 * numba.get_num_threads()))
                s, i = scores[:, :kk].copy(), ids[:, :kk].copy()
                _search_batch(
                    q.indptr.astype(np.int64),
                    q.indices.astype(np.int64),
                    q.data,
                    self.post_ptr,
                    self.post_rows,
                    self.post_vals,
                    self.n,
                    kk,
                    np.float32(-np.inf if threshold is None else threshold),
                    chunks,
                    s,
                    i,
                    postings,
                )
                scores[:, :kk], ids[:, :kk] = s, i
            finally:
                numba.set_num_threads(previous)
        self.last_postings = postings
        return scores, ids


def topk_dense(scores: np.ndarray, k: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each row of a dense score matrix ``(q, n)`` by ``argpartition``, sorted by
    descending score then ascending id; ids shifted by ``offset``; padded to ``k``."""
    nq, n = scores.shape
    kk = min(k, n)
    out_s = np.full((nq, k), -np.inf, np.float32)
    out_i = np.full((nq, k), -1, np.int64)
    if kk == 0 or nq == 0:
        return out_s, out_i
    part = (
        np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        if kk < n
        else np.tile(np.arange(n), (nq, 1))
    )
    part_s = np.take_along_axis(scores, part, axis=1)
    # Ties at the k-th score: argpartition may pick any of them; keep the smallest ids.
    if kk < n:
        kth = part_s.min(axis=1)
        for r in np.nonzero(
            np.sum(scores == kth[:, None], axis=1) > np.sum(part_s == kth[:, None], axis=1)
        )[0]:
            above = np.nonzero(scores[r] > kth[r])[0]
            tied = np.nonzero(scores[r] == kth[r])[0][: kk - len(above)]
            part[r] = np.concatenate([above, tied])
            part_s[r] = scores[r, part[r]]
    order = _order_rows(part_s, part)
    out_s[:, :kk] = np.take_along_axis(part_s, order, axis=1)
    out_i[:, :kk] = np.take_along_axis(part, order, axis=1) + offset
    return out_s, out_i


def _order_rows(s: np.ndarray, i: np.ndarray) -> np.ndarray:
    """Per-row order by descending score then ascending id."""
    order = np.argsort(i, axis=1, kind="stable")
    s_sorted = np.take_along_axis(s, order, axis=1)
    order2 = np.argsort(-s_sorted, axis=1, kind="stable")
    return np.take_along_axis(order, order2, axis=1)


class DenseIndex:
    """Exact inner-product search over a dense float32 database ``(n, d)`` with BLAS.

    Args:
      database: dense (or scipy sparse, densified) ``(n, d)``.
      max_chunk_bytes: bound on the score block held at once (queries x database).
    """

    def __init__(self, database, max_chunk_bytes: int = 256 << 20):
        db = database.toarray() if sp.issparse(database) else np.asarray(database)
        if db.ndim != 2:
            raise ValueError(f"database must be 2-D, got shape {db.shape}")
        self.db = np.ascontiguousarray(db, np.float32)
        if not np.all(np.isfinite(self.db)):
            raise ValueError("database contains NaN or infinite values")
        self.n, self.dim = self.db.shape
        self.max_chunk_bytes = max_chunk_bytes

    @property
    def nbytes(self) -> int:
        return self.db.nbytes

    def search(self, queries, k: int, *, threshold: float | None = None):
        """Top-k inner products; same contract as :meth:`SparseIndex.search`."""
        k = _check_k(k)
        q = queries.toarray() if sp.issparse(queries) else np.asarray(queries)
        q = np.ascontiguousarray(q, np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries have shape {q.shape}; the index has dimension {self.dim}")
        chunk = max(1, self.max_chunk_bytes // max(1, 4 * self.n))
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_i = np.full((len(q), k), -1, np.int64)
        for start in range(0, len(q), chunk):
            scores = q[start : start + chunk] @ self.db.T
            if threshold is not None:
                scores[scores <= threshold] = -np.inf
            s, i = topk_dense(scores, k)
            if threshold is not None:
                i[~np.isfinite(s)] = -1
            out_s[start : start + chunk], out_i[start : start + chunk] = s, i
        return out_s, out_i


def scipy_search(database: sp.csr_matrix, queries, k: int, chunk: int = 64):
    """The straightforward scipy baseline: ``Q @ D.T`` (sparse product), densified per chunk of
    queries, then :func:`topk_dense`. Same contract as :meth:`SparseIndex.search`."""
    k = _check_k(k)
    q = sp.csr_matrix(queries, dtype=np.float32)
    dt = sp.csr_matrix(database, dtype=np.float32).T.tocsr()
    out_s = np.full((q.shape[0], k), -np.inf, np.float32)
    out_i = np.full((q.shape[0], k), -1, np.int64)
    for start in range(0, q.shape[0], chunk):
        scores = (q[start : start + chunk] @ dt).toarray()
        out_s[start : start + chunk], out_i[start : start + chunk] = topk_dense(scores, k)
    return out_s, out_i


def rerank(
    candidate_ids: np.ndarray,
    query_dense: np.ndarray,
    database_dense: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Re-scores each query's candidates ``(q, c)`` (``-1`` = none) with dense embeddings
    (``(q, e)`` and ``(n, e)``) and keeps the best ``k`` by dense inner product."""
    k = _check_k(k)
    q = np.asarray(query_dense, np.float32)
    valid = candidate_ids >= 0
    safe = np.where(valid, candidate_ids, 0)
    cand = np.asarray(database_dense, np.float32)[safe]  # (q, c, e)
    scores = np.einsum("qe,qce->qc", q, cand)
    scores = np.where(valid, scores, -np.inf).astype(np.float32)
    out_s = np.full((len(q), k), -np.inf, np.float32)
    out_i = np.full((len(q), k), -1, np.int64)
    kk = min(k, candidate_ids.shape[1])
    order = _order_rows(scores, np.where(valid, candidate_ids, np.iinfo(np.int64).max))[:, :kk]
    out_s[:, :kk] = np.take_along_axis(scores, order, axis=1)
    ids = np.take_along_axis(candidate_ids, order, axis=1)
    out_i[:, :kk] = np.where(np.isfinite(out_s[:, :kk]), ids, -1)
    return out_s, out_i


def search_with_rerank(
    index: SparseIndex,
    queries,
    k: int,
    *,
    rerank_candidates: int,
    query_dense: np.ndarray,
    database_dense: np.ndarray,
    threshold: float | None = None,
    num_threads: int | None = None,
):
    """Sparse search for ``rerank_candidates`` candidates (above ``threshold``), then dense
    re-ranking to the top ``k`` (the paper's two-stage pipeline)."""
    _, cand = index.search(
        queries, max(k, rerank_candidates), threshold=threshold, num_threads=num_threads
    )
    return rerank(cand, query_dense, database_dense, k)


def measured_macs(index: SparseIndex, queries) -> np.ndarray:
    """Multiply-adds each query costs on ``index``: the summed lengths of the posting lists of
    its non-zero dimensions; ``(q,)``."""
    q = _as_csr(queries, index.dim, "queries")
    lengths = index.posting_lengths
    return (q != 0).astype(np.float64) @ lengths.astype(np.float64)
