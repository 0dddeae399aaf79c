"""Retrieval methods behind one interface: our sparse index, dense exact search (our BLAS index
and faiss ``IndexFlatIP``), PCA, sign-random-projection LSH, product quantisation (faiss
``IndexPQ`` and ``IndexIVFPQ``), and the paper's two-stage pipeline (sparse candidates re-ranked
with a dense embedding). NumPy side: no JAX.

Every method is built from a database and answers
``search(queries, k, num_threads) -> (scores (q, k) float32, ids (q, k) int64)``, best first,
``-1`` ids past the available results. Each reports its memory (``bytes_per_item``) and its cost
per query in multiply-add equivalents (``ops_per_query``, see each class), so that methods are
compared at equal cost.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import scipy.sparse as sp

from sparse_flops import retrieval


def _dense(x) -> np.ndarray:
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array of embeddings, got shape {x.shape}")
    x = np.ascontiguousarray(x, np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings contain NaN or infinite values")
    return x


def _faiss():
    import faiss  # imported on use: the rest of the retrieval side works without it

    return faiss


def _faiss_result(scores, ids):
    """faiss marks missing results with id -1 (and a huge or -inf score); our contract is
    ``-inf`` and ``-1``, ordered by descending score then ascending id."""
    scores = np.asarray(scores, np.float32).copy()
    ids = np.asarray(ids, np.int64)
    scores[ids < 0] = -np.inf
    order = retrieval.order_rows(scores, np.where(ids < 0, np.iinfo(np.int64).max, ids))
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


class Method:
    """The interface. Subclasses set ``family`` (the plot's marker), ``label`` (the parameter
    values shown), and implement :meth:`search`, :meth:`bytes_per_item`, :meth:`ops_per_query`.
    ``build_s`` is the wall time of the constructor's index build."""

    family = "method"
    label = ""
    build_s = 0.0

    def search(self, queries, k: int, num_threads: int = 1):
        raise NotImplementedError

    def bytes_per_item(self) -> float:
        raise NotImplementedError

    def ops_per_query(self, queries) -> float:
        raise NotImplementedError

    def params(self) -> dict:
        return {}


class SparseMethod(Method):
    """Our numba inverted index on sparse codes (optional score threshold). Cost: the postings
    each query walks, measured (one multiply-add each); memory: 8 bytes per posting.
    ``database`` may be an already built :class:`~sparse_flops.retrieval.SparseIndex`, so that
    several methods over one database share one index (and report its build time)."""

    family = "sparse index (ours)"

    def __init__(self, database, threshold: float | None = None):
        self.index = (
            database
            if isinstance(database, retrieval.SparseIndex)
            else retrieval.SparseIndex(database)
        )
        self.build_s = self.index.build_s
        self.threshold = threshold
        self.label = "" if threshold is None else f"t={threshold:g}"
        self._postings = None

    def search(self, queries, k, num_threads=1):
        s, i, self._postings = self.index.search(
            queries, k, threshold=self.threshold, num_threads=num_threads, return_costs=True
        )
        return s, i

    def bytes_per_item(self) -> float:
        return self.index.nbytes / max(1, self.index.n)

    def ops_per_query(self, queries) -> float:
        if self._postings is None:
            self.search(queries, 1)
        return float(np.mean(self._postings)) if len(self._postings) else 0.0

    def params(self):
        return {} if self.threshold is None else {"threshold": self.threshold}


class ScipyMethod(Method):
    """scipy's sparse product ``Q @ D.T`` then ``argpartition`` (the straightforward baseline
    of the sparse index); single-threaded. Cost and memory as :class:`SparseMethod` (``index``:
    an already built index of ``database`` to measure them on)."""

    family = "scipy Q@D.T + argpartition"

    def __init__(self, database, index: retrieval.SparseIndex | None = None):
        self.sparse = SparseMethod(database if index is None else index)
        self._csr = retrieval.as_database_csr(database)

    def search(self, queries, k, num_threads=1):
        return retrieval.scipy_search(self._csr, queries, k)

    def bytes_per_item(self):
        return self.sparse.bytes_per_item()

    def ops_per_query(self, queries):
        return self.sparse.ops_per_query(queries)


class DenseMethod(Method):
    """Exact inner-product search with our BLAS index (``engine='blas'``) or faiss
    ``IndexFlatIP`` (``engine='faiss'``). Cost ``n d``; memory ``4 d`` bytes per item."""

    def __init__(self, database, engine: str = "blas"):
        db = _dense(database)
        self.n, self.dim = db.shape
        self.engine = engine
        t0 = time.perf_counter()
        if engine == "blas":
            self.index = retrieval.DenseIndex(db)
            self.family = "dense exact (BLAS)"
        elif engine == "faiss":
            faiss = _faiss()
            self.index = faiss.IndexFlatIP(self.dim)
            self.index.add(db)
            self.family = "dense exact (faiss flat)"
        else:
            raise ValueError(f"unknown dense engine {engine!r}; use blas or faiss")
        self.build_s = time.perf_counter() - t0
        self.label = f"d={self.dim}"

    def search(self, queries, k, num_threads=1):
        q = _dense(queries)
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {q.shape[1]}; the index has {self.dim}")
        if self.engine == "blas":
            return self.index.search(q, k)
        faiss = _faiss()
        faiss.omp_set_num_threads(num_threads)
        s, i = self.index.search(q, k)
        return _faiss_result(s, i)

    def bytes_per_item(self):
        return 4.0 * self.dim

    def ops_per_query(self, queries):
        return float(self.n * self.dim)

    def params(self):
        return {"dim": self.dim}


class PCAMethod(Method):
    """Projection onto the top ``k`` principal directions of the database's second-moment matrix
    (uncentred, so inner products are approximated, not distances), fitted on the database only,
    then exact BLAS search. Cost ``d k`` (projecting the query) ``+ n k``; memory ``4 k``."""

    family = "PCA + exact"

    def __init__(self, database, dims: int):
        db = _dense(database)
        self.n, self.dim = db.shape
        if not 0 < dims <= self.dim:
            raise ValueError(f"PCA dimension must be in (0, {self.dim}], got {dims}")
        self.k = int(dims)
        t0 = time.perf_counter()
        # eigh of the (d, d) second-moment matrix: the top eigenvectors span the best rank-k
        # approximation of the database's inner products.
        gram = (db.T.astype(np.float64) @ db.astype(np.float64)) / max(1, self.n)
        _, vecs = np.linalg.eigh(gram)
        self.components = np.ascontiguousarray(vecs[:, ::-1][:, : self.k], np.float32)
        self.index = retrieval.DenseIndex(db @ self.components)
        self.build_s = time.perf_counter() - t0
        self.label = f"k={self.k}"

    def project(self, x) -> np.ndarray:
        """``(q, d) -> (q, k)``."""
        return _dense(x) @ self.components

    def search(self, queries, k, num_threads=1):
        return self.index.search(self.project(queries), k)

    def bytes_per_item(self):
        return 4.0 * self.k

    def ops_per_query(self, queries):
        return float(self.dim * self.k + self.n * self.k)

    def params(self):
        return {"pca_dim": self.k}


class LSHMethod(Method):
    """Sign random projections to ``bits`` bits (a seeded Gaussian matrix), packed, ranked by
    Hamming distance with faiss ``IndexBinaryFlat`` (XOR + popcount); optionally the top
    ``rerank`` candidates re-scored exactly with the dense vectors. Scores are ``-Hamming``
    (or the exact inner products after re-ranking).

    Cost ``d bits`` (projection) ``+ n bits / 64`` (one XOR-popcount per 64-bit word)
    ``+ rerank d``; memory ``bits / 8`` bytes per item (plus the dense vectors when re-ranking).
    """

    family = "LSH (Hamming)"

    def __init__(self, database, bits: int, *, rerank: int = 0, seed: int = 0):
        db = _dense(database)
        self.n, self.dim = db.shape
        if bits <= 0 or bits % 8:
            raise ValueError(f"LSH bits must be a positive multiple of 8, got {bits}")
        self.bits, self.rerank_k = int(bits), int(rerank)
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed)
        self.projection = rng.standard_normal((self.dim, self.bits)).astype(np.float32)
        faiss = _faiss()
        self.index = faiss.IndexBinaryFlat(self.bits)
        self.index.add(self.encode(db))
        self.db = db if self.rerank_k else None
        self.build_s = time.perf_counter() - t0
        self.label = f"b={self.bits}" + (f", rerank {self.rerank_k}" if self.rerank_k else "")

    def encode(self, x) -> np.ndarray:
        """Packed sign bits ``(q, bits / 8)`` uint8 of ``x @ projection > 0``."""
        return np.packbits(_dense(x) @ self.projection > 0, axis=1)

    def search(self, queries, k, num_threads=1):
        faiss = _faiss()
        faiss.omp_set_num_threads(num_threads)
        q = _dense(queries)
        depth = max(k, self.rerank_k)
        dist, ids = self.index.search(self.encode(q), min(depth, self.n))
        ids = np.asarray(ids, np.int64)
        if self.rerank_k:
            return retrieval.rerank(ids, q, self.db, k, num_threads=num_threads)
        scores = -np.asarray(dist, np.float32)
        s, i = _faiss_result(scores, ids)
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_i = np.full((len(q), k), -1, np.int64)
        kk = min(k, s.shape[1])
        out_s[:, :kk], out_i[:, :kk] = s[:, :kk], i[:, :kk]
        return out_s, out_i

    def bytes_per_item(self):
        return self.bits / 8 + (4.0 * self.dim if self.rerank_k else 0.0)

    def ops_per_query(self, queries):
        return float(self.dim * self.bits + self.n * self.bits / 64 + self.rerank_k * self.dim)

    def params(self):
        return {"bits": self.bits, "rerank": self.rerank_k}


class PQMethod(Method):
    """Product quantisation with asymmetric distance computation (faiss, inner product):
    ``IndexPQ`` (``nlist = 0``: every code scanned) or ``IndexIVFPQ`` (a coarse k-means of
    ``nlist`` cells, ``nprobe`` of them scanned). ``m`` sub-quantisers of ``nbits`` bits.

    Cost: the look-up tables ``d 2^nbits`` + one add per sub-quantiser of each scanned code
    (``n m``, or about ``n m nprobe / nlist``) + the coarse search ``nlist d``;
    memory ``m nbits / 8`` bytes per item (IVF: plus an 8-byte id).
    """

    def __init__(self, database, m: int, nbits: int = 8, nlist: int = 0, nprobe: int = 1):
        db = _dense(database)
        self.n, self.dim = db.shape
        if m <= 0 or self.dim % m:
            raise ValueError(f"PQ needs m dividing the dimension {self.dim}, got m={m}")
        if not 1 <= nbits <= 16:
            raise ValueError(f"PQ bits per sub-quantiser must be in [1, 16], got {nbits}")
        if nlist < 0 or (nlist and not 1 <= nprobe <= nlist):
            raise ValueError(f"IVF needs 1 <= nprobe <= nlist, got nprobe={nprobe}, nlist={nlist}")
        self.m, self.nbits, self.nlist, self.nprobe = int(m), int(nbits), int(nlist), int(nprobe)
        faiss = _faiss()
        t0 = time.perf_counter()
        if self.nlist:
            self.quantizer = faiss.IndexFlatIP(self.dim)
            self.index = faiss.IndexIVFPQ(
                self.quantizer, self.dim, self.nlist, self.m, self.nbits, faiss.METRIC_INNER_PRODUCT
            )
            self.family = "IVF-PQ (faiss)"
        else:
            self.index = faiss.IndexPQ(self.dim, self.m, self.nbits, faiss.METRIC_INNER_PRODUCT)
            self.family = "PQ (faiss)"
        self.label = self._label()
        self.index.train(db)
        self.index.add(db)
        self.build_s = time.perf_counter() - t0

    def _label(self) -> str:
        label = f"m={self.m}"
        if self.nlist:
            label += f", nlist={self.nlist}, nprobe={self.nprobe}"
        return label + (f", {self.nbits} bits" if self.nbits != 8 else "")

    def with_nprobe(self, nprobe: int) -> PQMethod:
        """The same trained and filled IVF index searched with another ``nprobe`` (no rebuild;
        ``build_s`` stays the one build's)."""
        if not self.nlist or not 1 <= nprobe <= self.nlist:
            raise ValueError(f"IVF needs 1 <= nprobe <= nlist={self.nlist}, got {nprobe}")
        other = copy.copy(self)
        other.nprobe = int(nprobe)
        other.label = other._label()
        return other

    def search(self, queries, k, num_threads=1):
        faiss = _faiss()
        faiss.omp_set_num_threads(num_threads)
        if self.nlist:
            self.index.nprobe = self.nprobe  # the index may be shared (with_nprobe)
        q = _dense(queries)
        s, i = self.index.search(q, k)
        return _faiss_result(s, i)

    def bytes_per_item(self):
        return self.m * self.nbits / 8 + (8.0 if self.nlist else 0.0)

    def ops_per_query(self, queries):
        tables = self.dim * 2**self.nbits
        if not self.nlist:
            return float(tables + self.n * self.m)
        scanned = self.n * min(1.0, self.nprobe / self.nlist)
        return float(self.nlist * self.dim + self.nprobe * tables + scanned * self.m)

    def params(self):
        return {"m": self.m, "nbits": self.nbits, "nlist": self.nlist, "nprobe": self.nprobe}


class TwoStageMethod(Method):
    """The paper's pipeline: our sparse index finds the top ``candidates`` (scores above
    ``threshold``, if given), then a separately trained dense embedding re-ranks them.

    The database rows of the sparse codes and of the dense embedding must be the same items in
    the same order (:func:`check_rows_correspond`). Queries are ``(sparse codes, dense
    vectors)`` pairs. Cost: the sparse postings walked + ``candidates x d_dense``; memory: the
    index plus ``4 d_dense`` bytes per item. Timed end to end.
    """

    family = "two-stage: sparse + dense re-rank"

    def __init__(
        self, sparse_database, dense_database, candidates: int, threshold: float | None = None
    ):
        self.sparse = SparseMethod(sparse_database, threshold)
        self.db = _dense(dense_database)
        if self.db.shape[0] != self.sparse.index.n:
            raise ValueError(
                f"two-stage: {self.sparse.index.n} sparse database rows but "
                f"{self.db.shape[0]} dense ones; both must embed the same items in the same order"
            )
        self.candidates = int(candidates)
        if self.candidates <= 0:
            raise ValueError(f"two-stage candidates must be positive, got {candidates}")
        self.threshold = threshold
        self.build_s = self.sparse.build_s
        self.label = f"K={self.candidates}" + ("" if threshold is None else f", t={threshold:g}")

    def search(self, queries, k, num_threads=1):
        q_sparse, q_dense = queries
        q_dense = _dense(q_dense)
        if q_dense.shape[1] != self.db.shape[1]:
            raise ValueError(
                f"dense queries have dimension {q_dense.shape[1]}; the re-ranker has "
                f"{self.db.shape[1]}"
            )
        _, cand = self.sparse.search(q_sparse, max(k, self.candidates), num_threads)
        return retrieval.rerank(cand, q_dense, self.db, k, num_threads=num_threads)

    def bytes_per_item(self):
        return self.sparse.bytes_per_item() + 4.0 * self.db.shape[1]

    def ops_per_query(self, queries):
        return self.sparse.ops_per_query(queries[0]) + self.candidates * self.db.shape[1]

    def params(self):
        return {"candidates": self.candidates, "threshold": self.threshold}


def check_rows_correspond(sparse_meta: dict, dense_meta: dict, sparse_labels, dense_labels):
    """Raises ``ValueError`` unless two exports embed the same database items in the same order:
    same data settings and database split, the same number of rows and equal labels row by row.
    """
    keys = ("source", "dir", "train_limit", "eval_limit", "validation_size", "split_seed")
    a = sparse_meta.get("config", {}).get("data", {})
    b = dense_meta.get("config", {}).get("data", {})
    differ = [k for k in keys if a.get(k) != b.get(k)]
    if differ:
        raise ValueError(
            f"two-stage: the sparse and dense models were trained on different data settings "
            f"({', '.join(f'data.{k}: {a.get(k)!r} vs {b.get(k)!r}' for k in differ)}); "
            "their database rows are not the same items"
        )
    if sparse_meta.get("database_split") != dense_meta.get("database_split"):
        raise ValueError(
            "two-stage: the exports use different database splits "
            f"({sparse_meta.get('database_split')!r} vs {dense_meta.get('database_split')!r})"
        )
    if len(sparse_labels) != len(dense_labels) or not np.array_equal(sparse_labels, dense_labels):
        raise ValueError(
            "two-stage: the sparse and dense database rows differ (row count or labels); "
            "export both models from the same split"
        )
