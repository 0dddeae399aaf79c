"""The trade-off benchmark of exported codes (``--mode=benchmark``): per regime, every method's
accuracy against memory, multiply-adds and milliseconds per query (one thread and all threads).

    python launch.py --mode=benchmark --workdir=runs/fmnist_flops \\
        --compare=runs/fmnist_l1,runs/fmnist_dense

Rows, per regime (class, instance):

- every sparse export: our sparse index (and at each ``sparse_thresholds``), scipy's
  ``Q @ D.T``, dense BLAS on the same codes (the reference of its speed-up), and the paper's
  two-stage pipeline (sparse candidates re-ranked by the dense export named ``rerank_workdir``,
  by default the dense export of largest dimension) for each ``two_stage_candidates``;
- every dense export: our BLAS index and faiss ``IndexFlatIP``;
- the compact-code baselines, fitted on the database of one dense export (``baseline_workdir``,
  by default the dense export of largest dimension): PCA to each of ``pca_dims``, LSH at each of
  ``lsh_bits``, PQ with each of ``pq_m`` sub-quantisers, IVF-PQ at each ``ivf_nprobe``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from absl import logging

from sparse_flops import baselines, codes, logs, metrics, retrieval
from sparse_flops.bench import regimes, timing
from sparse_flops.bench import report as report_lib
from sparse_flops.config import as_tuple

METHODS = ("sparse", "scipy", "dense", "faiss", "pca", "lsh", "pq", "ivfpq", "two_stage")

DEFAULTS = dict(
    k=100,
    ks=(1, 10, 100),
    num_queries=1000,
    timing_queries=0,  # > 0: time on the first N queries (accuracy always on all of them)
    regimes=(),  # () = every regime the exports hold (class, instance, open_set); or "probe"
    repeats=5,
    threads=0,  # 0 = all
    methods=METHODS,
    sparse_thresholds=(),
    pca_dims=(16, 32, 64),
    lsh_bits=(64, 256, 1024),
    lsh_rerank=0,
    pq_m=(8, 16, 32),
    pq_bits=8,
    ivf_nlist=256,
    ivf_m=16,
    ivf_nprobe=(4, 16),
    two_stage_candidates=(100, 1000),
    two_stage_threshold=-1.0,  # < 0: no threshold
    rerank_workdir="",
    baseline_workdir="",
)


def distinct_labels(workdirs: Sequence[str]) -> list[str]:
    """Short names of the workdirs, distinct even when two share a folder name: the shortest
    tail of each path that no other path shares (then a numeric suffix)."""
    parts = [os.path.normpath(os.path.abspath(w)).split(os.sep) for w in workdirs]
    labels = []
    for i, p in enumerate(parts):
        for depth in range(1, len(p) + 1):
            tail = "/".join(p[-depth:])
            if all("/".join(q[-depth:]) != tail for j, q in enumerate(parts) if j != i):
                break
        labels.append(tail)
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return out


class _Export:
    """A workdir's exported codes: label, metadata, sets and regimes."""

    def __init__(self, workdir: str, label: str, num_queries: int, wanted: tuple[str, ...]):
        self.workdir, self.label = workdir, label
        self.meta, self.sets = codes.load_codes(os.path.join(workdir, codes.CODES_DIR))
        self.sparse = self.meta["kind"] == "sparse"
        self.dim = int(self.meta["dim"])
        self.regimes = regimes.regimes(self.sets, num_queries, wanted)


def _pick_dense(exports: list[_Export], workdir: str, what: str) -> _Export | None:
    dense = [e for e in exports if not e.sparse]
    if workdir:
        chosen = [e for e in exports if os.path.abspath(e.workdir) == os.path.abspath(workdir)]
        if not chosen or chosen[0].sparse:
            raise ValueError(
                f"config.benchmark.{what}={workdir!r} must be one of the benchmarked dense "
                "workdirs (--workdir or --compare)"
            )
        return chosen[0]
    return max(dense, key=lambda e: e.dim) if dense else None


def _check_pair(sparse: _Export, dense: _Export, regime: str) -> None:
    baselines.check_rows_correspond(
        sparse.meta, dense.meta, sparse.sets["database"].labels, dense.sets["database"].labels
    )
    (_, qs), (_, qd) = sparse.regimes[regime], dense.regimes[regime]
    if not np.array_equal(qs.labels, qd.labels):
        raise ValueError(
            f"two-stage: the {regime} queries of {sparse.label} and {dense.label} differ"
        )
    if regime in ("instance", "open_set"):
        keys = ("instance_seed", "instance_augment")
        keys += ("distractors", "distractor_seed") if regime == "open_set" else ()
        for key in keys:
            if sparse.meta.get(key) != dense.meta.get(key):
                raise ValueError(
                    f"two-stage: {sparse.label} and {dense.label} were exported with different "
                    f"{key} ({sparse.meta.get(key)!r} vs {dense.meta.get(key)!r}): their instance "
                    "queries or distractors are not the same views; export both with one "
                    "config.export"
                )


def _first(queries, n: int):
    """The first ``n`` queries (``n <= 0``: all); a two-stage pair is cut alike."""
    if n <= 0:
        return queries
    if isinstance(queries, tuple):
        return tuple(q[:n] for q in queries)
    return queries[:n]


def _row(
    base, method, queries, q_labels, db_labels, *, k, ks, repeats, threads, timing_queries, **extra
):
    """One table row: accuracy (every query), cost and ms/query (one thread, and ``threads``;
    over the first ``timing_queries`` queries when > 0) of a method."""
    _, ids = method.search(queries, k, threads)
    timed_queries = _first(queries, timing_queries)
    nq = min(len(q_labels), timing_queries) if timing_queries > 0 else len(q_labels)

    def run(t):
        return method.search(timed_queries, k, t)

    row = {
        **base,
        "method": method.family,
        "setting": method.label,
        "params": method.params(),  # machine-readable parameter values (report.json)
        **metrics.topk_metrics(ids, q_labels, db_labels, ks=ks),
        "bytes_per_item": method.bytes_per_item(),
        "macs_per_query": method.ops_per_query(queries),
        "build_s": method.build_s,
        **extra,
        "ms_per_query_1t": timing.timed(run, nq, repeats, 1),
    }
    if threads > 1:
        row["ms_per_query_all"] = timing.timed(run, nq, repeats, threads)
    logging.info(
        "%s %s %s %s: %.4g ms/query",
        base["codes"],
        base["regime"],
        method.family,
        method.label,
        row["ms_per_query_1t"],
    )
    return row


def benchmark_workdirs(
    workdirs: Sequence[str], out_dir: str, *, rows_for: Sequence[str] | None = None, **settings
) -> dict:
    """Benchmarks the exported codes of each workdir (settings: :data:`DEFAULTS`) and writes
    ``report.json``, ``report.md`` and ``tradeoff.png`` to ``out_dir``. Returns the report.

    ``rows_for`` (default: all) limits the rows to those workdirs; the others then serve only as
    the re-ranker or the baseline export."""
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown benchmark settings {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    s = {**DEFAULTS, **settings}
    k = int(s["k"])
    if k <= 0 or int(s["repeats"]) <= 0:
        raise ValueError(f"benchmark k and repeats must be positive, got {k}, {s['repeats']}")
    methods = set(as_tuple(s["methods"]))
    if methods - set(METHODS):
        raise ValueError(f"unknown benchmark methods {sorted(methods - set(METHODS))}: {METHODS}")
    ks = tuple(x for x in as_tuple(s["ks"], int) if x <= k)
    threads = int(s["threads"]) or timing.all_threads()
    if int(s["timing_queries"]) < 0:
        raise ValueError(f"benchmark timing_queries must be >= 0, got {s['timing_queries']}")
    common = dict(
        k=k,
        ks=ks,
        repeats=int(s["repeats"]),
        threads=threads,
        timing_queries=int(s["timing_queries"]),
    )
    regime_names = as_tuple(s["regimes"]) or regimes.DEFAULT_REGIMES
    if set(regime_names) - set(regimes.REGIMES):
        raise ValueError(
            f"unknown benchmark regimes {sorted(set(regime_names) - set(regimes.REGIMES))}; "
            f"known: {regimes.REGIMES}"
        )
    exports = [
        _Export(w, label, int(s["num_queries"]), regime_names)
        for w, label in zip(workdirs, distinct_labels(workdirs), strict=True)
    ]
    for e in exports:
        logging.info("benchmarking %s (%s codes, d=%d)", e.label, e.meta["kind"], e.dim)
    reranker = _pick_dense(exports, s["rerank_workdir"], "rerank_workdir")
    compact = _pick_dense(exports, s["baseline_workdir"], "baseline_workdir")
    threshold = float(s["two_stage_threshold"])
    threshold = None if threshold < 0 else threshold

    rows: list[dict] = []
    wanted = {os.path.abspath(w) for w in (workdirs if rows_for is None else rows_for)}
    if not wanted <= {os.path.abspath(w) for w in workdirs}:
        raise ValueError(f"rows_for {list(rows_for)} must be among the workdirs {list(workdirs)}")
    jobs = [
        (r, e)
        for r in regime_names
        for e in exports
        if r in e.regimes and os.path.abspath(e.workdir) in wanted
    ]
    for regime, e in logs.progress(jobs, desc="benchmark", unit="code set"):
        db, q = e.regimes[regime]
        base = {
            "codes": e.label,
            "regime": regime,
            "n": db.codes.shape[0],
            "dim": e.dim,
            "queries": q.codes.shape[0],
        }
        first = len(rows)

        def add(method, queries=None, _db=db, _q=q, _base=base, **extra):
            qq = _q.codes if queries is None else queries
            rows.append(_row(_base, method, qq, _q.labels, _db.labels, **common, **extra))

        if e.sparse or "dense" in methods:
            add(baselines.DenseMethod(db.codes, "blas"))
        if not e.sparse:
            if "faiss" in methods:
                add(baselines.DenseMethod(db.codes, "faiss"))
        else:
            cost = metrics.cost_summary(db.codes, q.codes)
            stats = dict(
                expected_macs_per_query=cost["expected_macs_per_query"],
                mean_nonzeros=cost["mean_nonzeros"],
                r_sub=cost["r_sub"],
            )
            index = retrieval.SparseIndex(db.codes)  # one build, shared by the rows below
            if "sparse" in methods:
                add(baselines.SparseMethod(index), **stats)
                for t in as_tuple(s["sparse_thresholds"], float):
                    add(baselines.SparseMethod(index, t), **stats)
            if "scipy" in methods:
                add(baselines.ScipyMethod(db.codes, index), **stats)
            if "two_stage" in methods and reranker is not None and regime in reranker.regimes:
                _check_pair(e, reranker, regime)
                rdb, rq = reranker.regimes[regime]
                for cand in as_tuple(s["two_stage_candidates"], int):
                    method = baselines.TwoStageMethod(index, rdb.codes, cand, threshold)
                    method.label += f", re-rank {reranker.label}"
                    add(method, (q.codes, rq.codes), **stats)
        if e is compact:
            _compact_rows(add, db, s, methods)
        ref = rows[first]["ms_per_query_1t"] if rows[first:] else float("nan")
        for row in rows[first:]:
            row["speedup_vs_dense_1t"] = ref / row["ms_per_query_1t"]
    report = {
        "kind": "codes",
        "environment": timing.environment(),
        "settings": report_lib.jsonable(s),
        "workdirs": {e.label: os.path.abspath(e.workdir) for e in exports},
        "rows": rows,
    }
    report_lib.write_report(report, out_dir)
    return report


def _compact_rows(add, db, s, methods) -> None:
    """PCA, LSH, PQ and IVF-PQ rows over one dense export's database."""
    n, d = db.codes.shape
    if "pca" in methods:
        for dims in as_tuple(s["pca_dims"], int):
            if dims < d:
                add(baselines.PCAMethod(db.codes, dims))
    if "lsh" in methods:
        for bits in as_tuple(s["lsh_bits"], int):
            add(baselines.LSHMethod(db.codes, bits, rerank=int(s["lsh_rerank"])))
    if "pq" in methods:
        for m in as_tuple(s["pq_m"], int):
            if d % m == 0:
                add(baselines.PQMethod(db.codes, m, int(s["pq_bits"])))
    nlist = min(int(s["ivf_nlist"]), max(1, n // 39))  # faiss wants >= 39 points per cell
    nprobes = sorted({min(p, nlist) for p in as_tuple(s["ivf_nprobe"], int)})
    if "ivfpq" in methods and d % int(s["ivf_m"]) == 0 and nprobes:
        ivf = baselines.PQMethod(db.codes, int(s["ivf_m"]), int(s["pq_bits"]), nlist, nprobes[0])
        for nprobe in nprobes:  # one trained index, searched at each nprobe
            add(ivf.with_nprobe(nprobe))


def benchmark_from_config(config, workdir: str, compare: Sequence[str] = ()) -> dict:
    """:func:`benchmark_workdirs` of ``workdir`` and ``compare`` with the settings of
    ``config.benchmark``; the report goes to ``workdir``."""
    settings = {key: config.benchmark[key] for key in DEFAULTS if key in config.benchmark}
    return benchmark_workdirs([workdir, *compare], workdir, **settings)
