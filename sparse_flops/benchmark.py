"""Timing harness, trade-off tables and plots, and the synthetic scale benchmark (CPU).

Timings are medians of repeated warm runs, single-thread and with all threads, and every
speed-up is a ratio measured in the same run.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence

import numba
import numpy as np
import scipy.sparse as sp
from absl import logging
from threadpoolctl import threadpool_limits

from sparse_flops import export, io_utils, metrics, retrieval

# ---------------------------------------------------------------------------------------------
# Timing.


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` untimed runs."""
    if repeats <= 0:
        raise ValueError(f"repeats must be positive, got {repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def all_threads() -> int:
    return numba.config.NUMBA_NUM_THREADS


def _timed(search: Callable[[int], object], nq: int, repeats: int, threads: int) -> float:
    """ms per query of ``search(num_threads)`` over ``nq`` queries, BLAS limited alike."""
    with threadpool_limits(limits=threads):
        return 1e3 * median_seconds(lambda: search(threads), repeats) / max(nq, 1)


# ---------------------------------------------------------------------------------------------
# Benchmark of exported codes.


def _regimes(sets: dict[str, export.CodeSet], num_queries: int):
    """``{regime: (database, queries)}``: class retrieval, and instance retrieval when exported."""
    q = sets["queries"]
    nq = min(num_queries, q.codes.shape[0]) if num_queries > 0 else q.codes.shape[0]
    out = {"class": (sets["database"], export.CodeSet(q.codes[:nq], q.labels[:nq]))}
    if "instance_queries" in sets:
        db, iq = export.instance_regime(sets["database"], q, sets["instance_queries"])
        n_iq = min(nq, iq.codes.shape[0])
        out["instance"] = (db, export.CodeSet(iq.codes[:n_iq], iq.labels[:n_iq]))
    return out


def benchmark_codes(
    name: str,
    sets: dict[str, export.CodeSet],
    *,
    k: int = 100,
    ks: Sequence[int] = (1, 10, 100),
    num_queries: int = 1000,
    repeats: int = 5,
    threads: int | None = None,
    with_scipy: bool = True,
) -> list[dict]:
    """Rows of the trade-off table for one export: per regime, our sparse index, scipy's sparse
    product and dense exact search (BLAS) on the same codes (dense exports: dense exact only).

    Each row has the method, regime, accuracy (precision@k, recall@k, mAP@K), multiply-adds per
    query (measured for the index, expected ``N sum_j q_j p_j``, dense ``N d``), ms/query with
    one thread and with all threads, and the speed-up over dense exact in this run.
    """
    threads = threads or all_threads()
    ks = tuple(x for x in ks if x <= k)
    rows = []
    for regime, (db, q) in _regimes(sets, num_queries).items():
        base = {
            "codes": name,
            "regime": regime,
            "n": db.codes.shape[0],
            "dim": db.codes.shape[1],
            "queries": q.codes.shape[0],
        }
        rows += _benchmark_regime(
            base, db, q, k=k, ks=ks, repeats=repeats, threads=threads, with_scipy=with_scipy
        )
    return rows


def _method_row(base, method, search, q, db, *, k, ks, repeats, threads, **extra) -> dict:
    """One table row: accuracy of ``search(num_threads) -> (scores, ids)`` and its ms/query
    with one thread and (when ``threads``) with ``threads`` threads."""
    _, ids = search(threads or 1)
    nq = q.codes.shape[0]
    row = {
        **base,
        "method": method,
        **metrics.topk_metrics(ids, q.labels, db.labels, ks=ks),
        **extra,
        "ms_per_query_1t": _timed(search, nq, repeats, 1),
    }
    if threads:
        row["ms_per_query_all"] = _timed(search, nq, repeats, threads)
    return row


def _benchmark_regime(base, db, q, *, k, ks, repeats, threads, with_scipy) -> list[dict]:
    n, d = db.codes.shape
    dense = retrieval.DenseIndex(db.dense())
    q_dense = q.dense()
    common = dict(k=k, ks=ks, repeats=repeats)
    rows = [
        _method_row(
            base,
            "dense exact (BLAS)",
            lambda t: dense.search(q_dense, k),
            q,
            db,
            threads=threads,
            macs_per_query=float(n * d),
            expected_macs_per_query=float(n * d),
            **common,
        )
    ]
    if db.is_sparse:
        cost = metrics.cost_summary(db.codes, q.codes)
        t0 = time.perf_counter()
        index = retrieval.SparseIndex(db.codes)
        build_s = time.perf_counter() - t0
        ours = _method_row(
            base,
            "sparse index (ours)",
            lambda t: index.search(q.codes, k, num_threads=t),
            q,
            db,
            threads=threads,
            expected_macs_per_query=cost["expected_macs_per_query"],
            mean_nonzeros=cost["mean_nonzeros"],
            r_sub=cost["r_sub"],
            build_s=build_s,
            **common,
        )
        ours["macs_per_query"] = float(np.mean(index.last_postings))
        rows.append(ours)
        if with_scipy:
            rows.append(
                _method_row(
                    base,
                    "scipy Q@D.T + argpartition",
                    lambda t: retrieval.scipy_search(db.codes, q.codes, k),
                    q,
                    db,
                    threads=None,
                    macs_per_query=ours["macs_per_query"],
                    expected_macs_per_query=cost["expected_macs_per_query"],
                    **common,
                )
            )
    for row in rows:
        row["speedup_vs_dense_1t"] = rows[0]["ms_per_query_1t"] / row["ms_per_query_1t"]
    return rows


def benchmark_workdirs(
    workdirs: Sequence[str],
    out_dir: str,
    **kwargs,
) -> dict:
    """Benchmarks the exported codes of each workdir and writes ``report.json``, ``report.md``
    and ``tradeoff.png`` to ``out_dir``. Returns the report."""
    rows = []
    for w in workdirs:
        folder = os.path.join(w, export.CODES_DIR)
        meta, sets = export.load_codes(folder)
        name = os.path.basename(os.path.normpath(w))
        logging.info("benchmarking %s (%s codes, d=%d)", name, meta["kind"], meta["dim"])
        rows += benchmark_codes(name, sets, **kwargs)
    report = {
        "kind": "codes",
        "environment": environment(),
        "settings": _jsonable(kwargs),
        "rows": rows,
    }
    write_report(report, out_dir)
    return report


# ---------------------------------------------------------------------------------------------
# Synthetic scale benchmark.


def activation_profile(d: int, mean_nnz: float, kind: str, zipf_exponent: float = 1.0):
    """Per-dimension activation probabilities ``p`` ``(d,)`` with ``sum p = mean_nnz``:
    ``uniform`` (all equal) or ``zipf`` (``p_j`` proportional to ``(j + 1)^-a``, capped at 1)."""
    if not 0 < mean_nnz <= d:
        raise ValueError(f"mean non-zeros must be in (0, {d}], got {mean_nnz}")
    if kind == "uniform":
        return np.full(d, mean_nnz / d)
    if kind != "zipf":
        raise ValueError(f"unknown activation profile {kind!r}; use uniform or zipf")
    w = 1.0 / np.arange(1, d + 1) ** zipf_exponent
    p = np.zeros(d)
    free = np.ones(d, bool)
    while True:  # rescale the uncapped part until no probability exceeds 1
        p[free] = w[free] * (mean_nnz - np.sum(~free)) / w[free].sum()
        over = free & (p > 1)
        if not over.any():
            return p
        p[over] = 1.0
        free &= ~over


def random_codes(n: int, p: np.ndarray, rng: np.random.Generator) -> sp.csr_matrix:
    """Non-negative CSR codes ``(n, len(p))``: dimension ``j`` of each row is non-zero with
    probability ``p_j`` independently, values uniform in ``(0, 1]``."""
    rows, cols = [], []
    for j, pj in enumerate(p):
        m = rng.binomial(n, pj)
        if m == 0:
            continue
        r = rng.choice(n, m, replace=False) if m < n // 8 else np.flatnonzero(rng.random(n) < pj)
        rows.append(r.astype(np.int32))
        cols.append(np.full(len(r), j, np.int32))
    rows_a = np.concatenate(rows) if rows else np.zeros(0, np.int32)
    cols_a = np.concatenate(cols) if cols else np.zeros(0, np.int32)
    vals = (1.0 - rng.random(len(rows_a), dtype=np.float32)).astype(np.float32)
    m = sp.csr_matrix((vals, (rows_a, cols_a)), shape=(n, len(p)), dtype=np.float32)
    m.sort_indices()
    return m


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def scale_benchmark(
    out_dir: str,
    *,
    n: int = 1_000_000,
    d: int = 1024,
    mean_nnz: Sequence[int] = (8, 32, 64),
    profiles: Sequence[str] = ("uniform", "zipf"),
    num_queries: int = 1000,
    k: int = 100,
    repeats: int = 3,
    scipy_queries: int = 200,
    seed: int = 0,
) -> dict:
    """Synthetic codes at scale: build time, ms/query (one thread, all threads), measured and
    expected multiply-adds, index memory and peak RSS, and the speed-up over scipy's
    ``Q @ D.T`` + ``argpartition`` on the same codes (timed on ``scipy_queries`` queries, whose
    results are checked against ours). Writes the report files to ``out_dir``."""
    rows = []
    for profile in profiles:
        for nnz in mean_nnz:
            row = _scale_row(
                profile,
                nnz,
                n=n,
                d=d,
                num_queries=num_queries,
                k=k,
                repeats=repeats,
                scipy_queries=scipy_queries,
                seed=seed,
            )
            logging.info("scale %s", json.dumps(row))
            rows.append(row)
    report = {"kind": "scale", "environment": environment(), "rows": rows}
    write_report(report, out_dir)
    return report


def _scale_row(profile, nnz, *, n, d, num_queries, k, repeats, scipy_queries, seed) -> dict:
    rng = np.random.default_rng([seed, nnz, len(profile)])
    p = activation_profile(d, nnz, profile)
    t0 = time.perf_counter()
    db = random_codes(n, p, rng)
    q = random_codes(num_queries, p, rng)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = retrieval.SparseIndex(db)
    build_s = time.perf_counter() - t0
    scores, _ = index.search(q, k)
    macs = float(np.mean(index.last_postings))
    threads = all_threads()
    ms_1t = _timed(lambda t: index.search(q, k, num_threads=t), num_queries, repeats, 1)
    ms_all = _timed(lambda t: index.search(q, k, num_threads=t), num_queries, repeats, threads)
    nsq = min(scipy_queries, num_queries)
    q_small = q[:nsq]
    s_scipy, _ = retrieval.scipy_search(db, q_small, k)
    agree = bool(np.allclose(s_scipy, scores[:nsq], rtol=1e-4, atol=1e-5))
    ms_scipy = _timed(lambda t: retrieval.scipy_search(db, q_small, k), nsq, max(1, repeats - 1), 1)
    cost = metrics.cost_summary(db, q)
    return {
        "profile": profile,
        "target_nonzeros": nnz,
        "n": n,
        "dim": d,
        "queries": num_queries,
        "k": k,
        "mean_nonzeros": cost["mean_nonzeros"],
        "r_sub": cost["r_sub"],
        "macs_per_query": macs,
        "expected_macs_per_query": cost["expected_macs_per_query"],
        "dense_macs_per_query": float(n * d),
        "generate_s": gen_s,
        "build_s": build_s,
        "ms_per_query_1t": ms_1t,
        "ms_per_query_all": ms_all,
        "threads": threads,
        "thread_speedup": ms_1t / ms_all,
        "ms_per_query_scipy_1t": ms_scipy,
        "speedup_vs_scipy_1t": ms_scipy / ms_1t,
        "scipy_results_agree": agree,
        "index_mib": index.nbytes / 2**20,
        "database_csr_mib": _csr_mib(db),
        "peak_rss_mib": peak_rss_mib(),
    }


def _csr_mib(m: sp.csr_matrix) -> float:
    return (m.data.nbytes + m.indices.nbytes + m.indptr.nbytes) / 2**20


# ---------------------------------------------------------------------------------------------
# Reports.


def environment() -> dict:
    return {
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "numba_threads": all_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
    }


def _jsonable(x):
    return json.loads(
        json.dumps(x, default=lambda o: list(o) if hasattr(o, "__iter__") else str(o))
    )


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:
            return "nan"
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    return str(v)


def markdown_table(rows: list[dict], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


CODES_COLUMNS = (
    "codes",
    "regime",
    "method",
    "precision@1",
    "precision@10",
    "recall@100",
    "map@100",
    "mean_nonzeros",
    "macs_per_query",
    "expected_macs_per_query",
    "ms_per_query_1t",
    "ms_per_query_all",
    "speedup_vs_dense_1t",
)
SCALE_COLUMNS = (
    "profile",
    "target_nonzeros",
    "mean_nonzeros",
    "r_sub",
    "macs_per_query",
    "expected_macs_per_query",
    "build_s",
    "ms_per_query_1t",
    "ms_per_query_all",
    "thread_speedup",
    "ms_per_query_scipy_1t",
    "speedup_vs_scipy_1t",
    "index_mib",
    "peak_rss_mib",
)


def write_report(report: dict, out_dir: str) -> None:
    """Writes ``report.json``, ``report.md`` and ``tradeoff.png`` atomically to ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    rows = report["rows"]
    columns = SCALE_COLUMNS if report["kind"] == "scale" else CODES_COLUMNS
    columns = [c for c in columns if any(c in r for r in rows)]
    title = (
        "Scale benchmark (synthetic codes)"
        if report["kind"] == "scale"
        else ("Retrieval trade-off")
    )
    md = (
        f"# {title}\n\n{markdown_table(rows, columns)}\n\nEnvironment: "
        + ", ".join(f"{k}={v}" for k, v in report["environment"].items())
        + "\n"
    )
    io_utils.atomic_write_text(
        os.path.join(out_dir, "report.json"), json.dumps(report, indent=2, default=str)
    )
    io_utils.atomic_write_text(os.path.join(out_dir, "report.md"), md)
    plot_tradeoff(report, os.path.join(out_dir, "tradeoff.png"))
    print(md)


_MARKERS = {
    "dense exact (BLAS)": "s",
    "sparse index (ours)": "o",
    "scipy Q@D.T + argpartition": "x",
}


def _accuracy_key(rows: list[dict], regime: str) -> str:
    """precision@1 for class retrieval; the deepest recall@k for instance retrieval."""
    if regime == "class":
        return "precision@1"
    recalls = sorted(int(k.split("@")[1]) for k in rows[0] if k.startswith("recall@"))
    return f"recall@{recalls[-1]}"


def plot_tradeoff(report: dict, path: str) -> None:
    """Accuracy against ms/query (one panel per regime), or, for the scale report, multiply-adds
    against ms/query per activation profile. Written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    if report["kind"] == "scale":
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for profile in sorted({r["profile"] for r in rows}):
            sel = [r for r in rows if r["profile"] == profile]
            macs = [r["macs_per_query"] for r in sel]
            ax.plot([r["ms_per_query_1t"] for r in sel], macs, "o-", label=f"ours, {profile}")
            ax.plot(
                [r["ms_per_query_scipy_1t"] for r in sel], macs, "x--", label=f"scipy, {profile}"
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel("multiply-adds per query")
        ax.set_xlabel("ms per query (one thread, log scale)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        axes = [ax]
    else:
        regimes = [g for g in ("class", "instance") if any(r["regime"] == g for r in rows)]
        fig, axes = plt.subplots(1, len(regimes), figsize=(6 * len(regimes), 4.5), squeeze=False)
        axes = list(axes[0])
        codes = sorted({r["codes"] for r in rows})
        colors = {c: f"C{i}" for i, c in enumerate(codes)}
        for ax, regime in zip(axes, regimes, strict=True):
            sel = [r for r in rows if r["regime"] == regime]
            key = _accuracy_key(sel, regime)
            for r in sel:
                ax.scatter(
                    r["ms_per_query_1t"],
                    r[key],
                    color=colors[r["codes"]],
                    marker=_MARKERS.get(r["method"], "^"),
                    s=50,
                    label=f"{r['codes']}: {r['method']}",
                )
            ax.set_xscale("log")
            ax.set_xlabel("ms per query (one thread, log scale)")
            ax.set_ylabel(key)
            ax.set_title(f"{regime} retrieval")
            ax.grid(True, which="both", alpha=0.3)
        axes[-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    io_utils.atomic_write_file(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
