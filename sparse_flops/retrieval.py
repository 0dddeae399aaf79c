"""Retrieval: a sparse inverted index (numba), dense exact search (BLAS), re-ranking, top-k.

Both indexes answer ``search(queries, k) -> (scores (q, k) float32, ids (q, k) int64)`` with
rows sorted by descending score, ties broken by ascending id; slots past the available results
hold score ``-inf`` and id ``-1``.

:class:`SparseIndex` accumulates scores term at a time over the posting lists of a query's
non-zero dimensions and keeps the top k in a bounded heap, never sorting the database. It works on
blocks of rows whose accumulator stays in cache while all the query's terms add their postings;
in a block the query touches sparsely it tracks the touched rows, in one it touches densely it
scans the accumulator (cheaper than a branch per posting). Rows a query does not touch score 0,
which still ranks above negative scores of signed codes; the search accounts for that.
"""

from __future__ import annotations

import contextlib
import time

import numba
import numpy as np
import scipy.sparse as sp
from numba import prange

from sparse_flops import engine as _engine

_CODE_MAX = _engine.CODE_MAX

# The engine this one was before the compact engine: its own switch to scanning a block.
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
def _search_one(q_idx, q_val, index, k, threshold, scratch, out_s, out_i):
    """Top-k of one query, one row block at a time: the block's accumulator stays in cache
    while every query term adds its postings for that block.

    ``index`` is :meth:`SparseIndex.arrays` ``(block_ptr, post_rows, post_vals, n, block)``;
    ``scratch`` is ``(acc, mark, touched, heap scores, heap ids)`` of one thread. Returns the
    postings walked (the multiply-adds of the query).
    """
    block_ptr, post_rows, post_vals, n, block = index
    acc, mark, touched, hs, hi = scratch
    nb = block_ptr.shape[1] - 1
    size = 0
    total = 0
    zeros_count = threshold < 0.0  # untouched rows score 0, which passes a negative threshold
    for b in range(nb):
        r0 = b * block
        blen = min(block, n - r0)
        postings = 0
        for t in range(q_idx.shape[0]):
            j = q_idx[t]
            postings += block_ptr[j, b + 1] - block_ptr[j, b]
        total += postings
        if postings > _SCAN_FRACTION * blen:
            for t in range(q_idx.shape[0]):
                j = q_idx[t]
                w = q_val[t]
                for p in range(block_ptr[j, b], block_ptr[j, b + 1]):
                    acc[post_rows[p] - r0] += w * post_vals[p]
            # Rows come in ascending id order here, so an equal score never displaces the
            # root; the cheap test inline keeps the heap call off the per-row path.
            for i in range(blen):
                s = acc[i]
                acc[i] = 0.0
                if s > threshold and (size < k or s > hs[0]):
                    size = _heap_push(hs, hi, size, k, s, r0 + i)
            continue
        nt = 0
        for t in range(q_idx.shape[0]):
            j = q_idx[t]
            w = q_val[t]
            for p in range(block_ptr[j, b], block_ptr[j, b + 1]):
                i = post_rows[p] - r0
                if mark[i] == 0:
                    mark[i] = 1
                    touched[nt] = i
                    nt += 1
                acc[i] += w * post_vals[p]
        for t in range(nt):
            i = touched[t]
            s = acc[i]
            if s > threshold and (size < k or s > hs[0] or (s == hs[0] and r0 + i < hi[0])):
                size = _heap_push(hs, hi, size, k, s, r0 + i)
        if zeros_count:
            # Untouched rows of the block, in id order, while a zero can still enter the heap.
            for i in range(blen):
                if size == k and (hs[0] > 0.0 or (hs[0] == 0.0 and r0 + i > hi[0])):
                    break
                if mark[i] == 0:
                    size = _heap_push(hs, hi, size, k, np.float32(0.0), r0 + i)
        for t in range(nt):
            i = touched[t]
            acc[i] = 0.0
            mark[i] = 0
    # Order the kept items by descending score, then ascending id (two stable sorts).
    by_id = np.argsort(hi[:size], kind="mergesort")
    s_by_id = hs[:size][by_id]
    by_score = np.argsort(-s_by_id, kind="mergesort")
    for pos in range(size):
        j = by_id[by_score[pos]]
        out_s[pos] = hs[j]
        out_i[pos] = hi[j]
    return total


@numba.njit(cache=True, parallel=True)
def _search_batch(queries, index, k, threshold, n_chunks, out):
    """Searches every query of ``queries`` = ``(indptr, indices, values)`` (CSR) on ``index``,
    ``n_chunks`` chunks of queries in parallel; writes ``out`` = ``(scores (q, k), ids (q, k),
    postings (q,))``."""
    q_ptr, q_idx, q_val = queries
    out_s, out_i, out_postings = out
    block = index[4]
    nq = q_ptr.shape[0] - 1
    for c in prange(n_chunks):
        scratch = (
            np.zeros(block, np.float32),
            np.zeros(block, np.uint8),
            np.empty(block, np.int64),
            np.empty(k, np.float32),
            np.empty(k, np.int64),
        )
        for q in range(c * nq // n_chunks, (c + 1) * nq // n_chunks):
            lo, hi_ = q_ptr[q], q_ptr[q + 1]
            out_postings[q] = _search_one(
                q_idx[lo:hi_], q_val[lo:hi_], index, k, threshold, scratch, out_s[q], out_i[q]
            )


def _checked_csr(x, what: str) -> sp.csr_matrix:
    """``x`` as a float32 CSR copy (the clean-up after must not change the caller's matrix) whose
    structure is valid and values finite: a malformed CSR (index out of range, bad ``indptr``)
    or NaN raises ``ValueError`` here, before any numba kernel could read it."""
    if sp.issparse(x):
        try:
            x.check_format(full_check=True)
        except (ValueError, IndexError, TypeError) as e:
            raise ValueError(f"{what} are a malformed sparse matrix: {e}") from e
    try:
        m = sp.csr_matrix(x, dtype=np.float32, copy=True)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"{what} must be a 2-D array or scipy sparse matrix of numbers: {e}"
        ) from e
    if m.nnz and not np.all(np.isfinite(m.data)):
        raise ValueError(f"{what} contain NaN or infinite values")
    return m


def _as_csr(x, d: int, what: str) -> sp.csr_matrix:
    m = _checked_csr(x, what)
    if m.ndim != 2 or m.shape[1] != d:
        raise ValueError(f"{what} have shape {m.shape}; the index has dimension {d}")
    m.sum_duplicates()
    # Stored zeros would be walked and counted as multiply-adds for nothing.
    m.eliminate_zeros()
    m.sort_indices()
    return m


def as_database_csr(database) -> sp.csr_matrix:
    """A database ``(n, d)`` as validated float32 CSR without stored zeros."""
    db = _checked_csr(database, "database codes")
    db.eliminate_zeros()
    return db


def _check_k(k) -> int:
    """``k`` as an int; anything but a positive integer (bool, float, string, None, array) gets
    the same ``ValueError``."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


@contextlib.contextmanager
def _numba_threads(num_threads: int | None):
    """numba's thread count inside the block: ``num_threads`` (None or 0 = all)."""
    previous = numba.get_num_threads()
    numba.set_num_threads(
        min(num_threads or numba.config.NUMBA_NUM_THREADS, numba.config.NUMBA_NUM_THREADS)
    )
    try:
        yield
    finally:
        numba.set_num_threads(previous)


ENGINES = ("compact", "reference")


class SparseIndex:
    """An inverted index over a CSR database ``(n, d)``.

    Args:
      database: scipy sparse or dense ``(n, d)``.
      block_size: rows per block: the accumulators of one block (``batch_size`` of them) should
        stay in the core's cache. Default: 8,192 for the compact engine (at most 65,536, the
        reach of its 16-bit row offsets; at 1M items and uniform 32 non-zeros the scale
        benchmark's ``block_size`` setting gave 0.626 ms/query against 0.677 at 4,096 and 0.714
        at 16,384, reports in ``results/scale/block_size/``), 65,536 for the reference engine.
      engine: ``compact`` (default; :mod:`sparse_flops.engine`: 4-byte postings, query batching,
        exact re-score from a float32 forward store) or ``reference`` (the term-at-a-time engine
        with float32 postings and int32 row ids, 8 bytes per posting, one query at a time; kept
        to measure the compact engine against).
    """

    def __init__(self, database, block_size: int | None = None, *, engine: str = "compact"):
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        if block_size is None:
            block_size = _engine.DEFAULT_BLOCK if engine == "compact" else 65536
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        if engine == "compact" and block_size > 65536:
            raise ValueError(
                f"block_size={block_size}: the compact engine's 16-bit row offsets reach "
                "65,536 rows per block at most"
            )
        t0 = time.perf_counter()
        db = as_database_csr(database)
        db.sort_indices()
        self.engine = engine
        self.n, self.dim = db.shape
        self.block_size = int(min(block_size, max(1, self.n)))
        self.posting_lengths = np.bincount(db.indices, minlength=self.dim).astype(np.int64)
        csc = db.tocsc()
        csc.sort_indices()
        if engine == "reference":
            self.post_ptr = csc.indptr.astype(np.int64)
            self.post_rows = csc.indices.astype(np.int32)
            self.post_vals = csc.data.astype(np.float32)
            self.block_ptr = _engine.block_pointers(
                self.post_ptr, self.post_rows, self.n, self.block_size
            )
        else:
            colmax = np.zeros(self.dim, np.float32)
            if db.nnz:
                colmax = np.asarray(abs(csc).max(axis=0).todense(), np.float32).ravel()
            self.scale = (colmax / _CODE_MAX).astype(np.float32)
            inv = np.zeros(self.dim, np.float64)
            nz = colmax > 0
            inv[nz] = _CODE_MAX / colmax[nz].astype(np.float64)
            self.ptr, self.rows, self.codes = _engine.build_layout(
                csc.indptr.astype(np.int64), csc.indices, csc.data, self.n, self.block_size, inv
            )
            indptr = db.indptr.astype(np.int64)
            index_type = np.uint16 if self.dim <= 65536 else np.int32
            self.forward = (indptr, db.indices.astype(index_type), db.data.astype(np.float32))
        self.build_s = time.perf_counter() - t0  # wall time of this build

    def arrays(self) -> tuple:
        """The structure the reference kernel takes: ``(block_ptr (d, nb + 1), post_rows,
        post_vals, n, block_size)``."""
        return (self.block_ptr, self.post_rows, self.post_vals, self.n, self.block_size)

    def layout(self) -> tuple:
        """The compact engine's index: ``(ptr (d, nb + 1), rows, codes, scale, n, d,
        block_size)``."""
        return (self.ptr, self.rows, self.codes, self.scale, self.n, self.dim, self.block_size)

    @property
    def num_postings(self) -> int:
        return int(self.posting_lengths.sum())

    @property
    def nbytes(self) -> int:
        """Bytes of the inverted index every query streams (postings, offsets, scales)."""
        if self.engine == "reference":
            return (
                self.post_ptr.nbytes
                + self.post_rows.nbytes
                + self.post_vals.nbytes
                + self.block_ptr.nbytes
            )
        return self.ptr.nbytes + self.rows.nbytes + self.codes.nbytes + self.scale.nbytes

    @property
    def forward_nbytes(self) -> int:
        """Bytes of the float32 forward store the compact engine re-scores candidates from
        (read only for the few candidates of each query); 0 for the reference engine."""
        if self.engine == "reference":
            return 0
        return sum(a.nbytes for a in self.forward)

    def search(
        self,
        queries,
        k: int,
        *,
        threshold: float | None = None,
        num_threads: int | None = None,
        return_costs: bool = False,
        batch_size: int = 1,
    ):
        """Top-k inner products of each query row ``(q, d)``.

        Args:
          queries: scipy sparse or dense ``(q, d)``.
          k: results per query; more than the database holds pads with ``-1`` ids.
          threshold: keep only scores strictly above it (None: no threshold).
          num_threads: numba threads (default: all).
          return_costs: also return the multiply-adds of each query.
          batch_size: queries a thread searches together (compact engine), sharing each
            posting read among them. The default, 1, is the fastest where the index fits in the
            last-level cache (the scale benchmark measures both).
        Returns:
          ``(scores (q, k) float32, ids (q, k) int64)``, and with ``return_costs`` a third array
          ``(q,)`` int64: the postings each query walked (its multiply-adds; the summed lengths
          of the posting lists of its non-zero dimensions).
        """
        k = _check_k(k)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        q = _as_csr(queries, self.dim, "queries")
        nq = q.shape[0]
        kk = min(k, self.n)
        scores = np.full((nq, k), -np.inf, np.float32)
        ids = np.full((nq, k), -1, np.int64)
        postings = np.zeros(nq, np.int64)
        if nq and kk:
            thr = np.float32(-np.inf if threshold is None else threshold)
            q_arrays = (q.indptr.astype(np.int64), q.indices.astype(np.int64), q.data)
            s, i = scores[:, :kk].copy(), ids[:, :kk].copy()
            with _numba_threads(num_threads):
                threads = numba.get_num_threads()
                if self.engine == "reference":
                    chunks = max(1, min(nq, 4 * threads))
                    _search_batch(q_arrays, self.arrays(), kk, thr, chunks, (s, i, postings))
                else:
                    # Contiguous chunks, one or a few per thread, so batches stay full.
                    chunks = max(1, min(nq, threads * max(1, nq // (threads * batch_size * 8))))
                    batch = max(1, min(batch_size, -(-nq // chunks)))
                    _engine.search_all(
                        q_arrays,
                        self.layout(),
                        self.forward,
                        kk,
                        thr,
                        batch,
                        chunks,
                        (s, i, postings),
                    )
            scores[:, :kk], ids[:, :kk] = s, i
        if return_costs:
            return scores, ids, postings
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
    order = order_rows(part_s, part)
    out_s[:, :kk] = np.take_along_axis(part_s, order, axis=1)
    out_i[:, :kk] = np.take_along_axis(part, order, axis=1) + offset
    return out_s, out_i


def order_rows(s: np.ndarray, i: np.ndarray) -> np.ndarray:
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


@numba.njit(cache=True, parallel=True)
def _candidate_scores(q, db, ids, out):
    """``out[r, c] = q[r] . db[ids[r, c]]`` (``-inf`` where ``ids`` is ``-1``), one query per
    thread, without gathering the candidates' vectors into a ``(q, c, e)`` array."""
    for r in prange(q.shape[0]):
        for c in range(ids.shape[1]):
            i = ids[r, c]
            if i < 0:
                out[r, c] = -np.inf
                continue
            acc = np.float32(0.0)
            for e in range(q.shape[1]):
                acc += q[r, e] * db[i, e]
            out[r, c] = acc


def rerank(
    candidate_ids: np.ndarray,
    query_dense: np.ndarray,
    database_dense: np.ndarray,
    k: int,
    *,
    num_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Re-scores each query's candidates ``(q, c)`` (``-1`` = none) with dense embeddings
    (``(q, e)`` and ``(n, e)``) and keeps the best ``k`` by dense inner product (ties: smaller
    id first). Memory stays ``O(q c)`` whatever ``e``."""
    k = _check_k(k)
    q = np.ascontiguousarray(query_dense, np.float32)
    db = np.ascontiguousarray(database_dense, np.float32)
    ids_in = np.ascontiguousarray(candidate_ids, np.int64)
    if q.ndim != 2 or db.ndim != 2 or q.shape[1] != db.shape[1]:
        raise ValueError(f"dense queries {q.shape} and database {db.shape} do not match")
    if ids_in.shape[0] != q.shape[0] or (ids_in.size and ids_in.max() >= db.shape[0]):
        raise ValueError(
            f"candidates {ids_in.shape} do not fit {q.shape[0]} queries and {db.shape[0]} items"
        )
    valid = ids_in >= 0
    scores = np.empty(ids_in.shape, np.float32)
    with _numba_threads(num_threads):
        _candidate_scores(q, db, ids_in, scores)
    out_s = np.full((len(q), k), -np.inf, np.float32)
    out_i = np.full((len(q), k), -1, np.int64)
    kk = min(k, ids_in.shape[1])
    order = order_rows(scores, np.where(valid, ids_in, np.iinfo(np.int64).max))[:, :kk]
    out_s[:, :kk] = np.take_along_axis(scores, order, axis=1)
    ids = np.take_along_axis(ids_in, order, axis=1)
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
    return rerank(cand, query_dense, database_dense, k, num_threads=num_threads)
