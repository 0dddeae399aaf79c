"""The synthetic scale benchmark: random codes with a chosen activation profile at up to millions
of items; build time, ms/query, multiply-adds, index memory and peak RSS, against scipy.

    python launch.py --config=experiments/scale.py --workdir=runs/scale
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from absl import logging

from sparse_flops import logs, metrics, retrieval
from sparse_flops.bench import report, timing
from sparse_flops.config import as_tuple, require_positive

PROFILES = ("uniform", "zipf")


def activation_profile(d: int, mean_nnz: float, kind: str, zipf_exponent: float = 1.0):
    """Per-dimension activation probabilities ``p`` ``(d,)`` with ``sum p = mean_nnz``:
    ``uniform`` (all equal) or ``zipf`` (``p_j`` proportional to ``(j + 1)^-a``, capped at 1)."""
    if not 0 < mean_nnz <= d:
        raise ValueError(f"mean non-zeros must be in (0, {d}], got {mean_nnz}")
    if kind == "uniform":
        return np.full(d, mean_nnz / d)
    if kind != "zipf":
        raise ValueError(f"unknown activation profile {kind!r}; choose from {PROFILES}")
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
    jobs = [(profile, nnz) for profile in profiles for nnz in mean_nnz]
    for profile, nnz in logs.progress(jobs, desc="scale benchmark", unit="row"):
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
    result = {"kind": "scale", "environment": timing.environment(), "rows": rows}
    report.write_report(result, out_dir)
    return result


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
    scores, _, postings = index.search(q, k, return_costs=True)
    macs = float(np.mean(postings))
    threads = timing.all_threads()
    ms_1t = timing.timed(lambda t: index.search(q, k, num_threads=t), num_queries, repeats, 1)
    ms_all = timing.timed(
        lambda t: index.search(q, k, num_threads=t), num_queries, repeats, threads
    )
    nsq = min(scipy_queries, num_queries)
    q_small = q[:nsq]
    s_scipy, _ = retrieval.scipy_search(db, q_small, k)
    agree = bool(np.allclose(s_scipy, scores[:nsq], rtol=1e-4, atol=1e-5))
    ms_scipy = timing.timed(
        lambda t: retrieval.scipy_search(db, q_small, k), nsq, max(1, repeats - 1), 1
    )
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
        "peak_rss_mib": timing.peak_rss_mib(),
    }


def _csr_mib(m: sp.csr_matrix) -> float:
    return (m.data.nbytes + m.indices.nbytes + m.indptr.nbytes) / 2**20


def validate(config) -> None:
    """Checks a scale config (``experiments/scale.py``); raises ``ValueError`` naming the key."""
    if "scale" not in config:
        raise ValueError(
            "--mode=scale needs a scale config: --config=experiments/scale.py (it has no "
            "'scale' section)"
        )
    sc = config.scale
    nonzeros, profiles = as_tuple(sc.nonzeros, int), as_tuple(sc.profiles)
    require_positive(
        sc, ("num_items", "dim", "num_queries", "k", "repeats", "scipy_queries"), "scale"
    )
    for nnz in nonzeros:
        if not 0 < nnz <= sc.dim:
            raise ValueError(f"config.scale.nonzeros holds {nnz}; each must be in (0, {sc.dim}]")
    for profile in profiles:
        if profile not in PROFILES:
            raise ValueError(f"config.scale.profiles holds {profile!r}; choose from {PROFILES}")


def run(config, workdir: str) -> dict:
    """:func:`scale_benchmark` with the settings of ``config.scale``; reports go to ``workdir``."""
    validate(config)
    sc = config.scale
    return scale_benchmark(
        workdir,
        n=sc.num_items,
        d=sc.dim,
        mean_nnz=as_tuple(sc.nonzeros, int),
        profiles=as_tuple(sc.profiles),
        num_queries=sc.num_queries,
        k=sc.k,
        repeats=sc.repeats,
        scipy_queries=sc.scipy_queries,
        seed=sc.seed,
    )
