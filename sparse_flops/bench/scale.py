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
    batch_size: int = 16,
    seed: int = 0,
    block_size: int | None = None,
    stream_mib: int = 256,
    scatter_updates: int = 1 << 24,
) -> dict:
    """Synthetic codes at scale: build time, ms/query (one thread, all threads) of the compact
    engine, of the same engine with queries in batches of ``batch_size``, of the reference
    engine (8-byte postings) and of scipy's ``Q @ D.T`` + ``argpartition`` (timed on
    ``scipy_queries`` queries), all checked against each other; measured and expected
    multiply-adds, index memory and peak RSS; and each row's bound from this core's stream
    bandwidth (over ``stream_mib``) and scatter rate (``scatter_updates``), timed in turn with
    that row's one-thread search (:func:`sparse_flops.bench.timing.timed_beside_limits`).
    ``block_size``: rows per block of the compact engine (None: its default). Writes the report
    files to ``out_dir``."""
    probes = timing.LimitProbes(stream_mib, scatter_updates)
    limits = timing.machine_limits(probes)
    logging.info("machine limits at the start: %s", json.dumps(limits))
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
            batch_size=batch_size,
            seed=seed,
            probes=probes,
            block_size=block_size,
        )
        logging.info("scale %s", json.dumps(row))
        rows.append(row)
    result = {
        "kind": "scale",
        "environment": timing.environment(),
        "machine_limits": limits,
        "rows": rows,
    }
    report.write_report(result, out_dir)
    return result


def _scale_row(
    profile,
    nnz,
    *,
    n,
    d,
    num_queries,
    k,
    repeats,
    scipy_queries,
    batch_size,
    seed,
    probes,
    block_size=None,
) -> dict:
    rng = np.random.default_rng([seed, nnz, len(profile)])
    p = activation_profile(d, nnz, profile)
    t0 = time.perf_counter()
    db = random_codes(n, p, rng)
    q = random_codes(num_queries, p, rng)
    gen_s = time.perf_counter() - t0
    index = retrieval.SparseIndex(db, block_size=block_size)
    reference = retrieval.SparseIndex(db, engine="reference")
    scores, ids, postings = index.search(q, k, return_costs=True)
    ref_scores, ref_ids = reference.search(q, k)
    batched = index.search(q, k, batch_size=batch_size)
    engines_agree = bool(
        np.array_equal(ids, ref_ids)
        and np.array_equal(scores, ref_scores)
        and np.array_equal(batched[1], ids)
    )
    macs = float(np.mean(postings))
    threads = timing.all_threads()

    def ms(idx, t, **kw):
        return timing.timed(
            lambda th: idx.search(q, k, num_threads=th, **kw), num_queries, repeats, t
        )

    ms_1t, limits = timing.timed_beside_limits(
        lambda: index.search(q, k, num_threads=1), num_queries, repeats, probes
    )
    ms_all = ms(index, threads)
    ms_batched = ms(index, 1, batch_size=batch_size)
    ms_ref = ms(reference, 1)
    nsq = min(scipy_queries, num_queries)
    q_small = q[:nsq]
    s_scipy, _ = retrieval.scipy_search(db, q_small, k)
    agree = bool(np.allclose(s_scipy, scores[:nsq], rtol=1e-4, atol=1e-5))
    ms_scipy = timing.timed(
        lambda t: retrieval.scipy_search(db, q_small, k), nsq, max(1, repeats - 1), 1
    )
    cost = metrics.cost_summary(db, q)
    bytes_per_posting = index.nbytes / max(1, index.num_postings)

    # A query streams its postings once and scatters each into the accumulator; the two
    # overlap, so the slower one bounds it (rates timed in turn with ms_1t).
    def bound(rates):
        stream_ms = 1e3 * macs * bytes_per_posting / (rates["stream_gbs"] * 1e9)
        return stream_ms, 1e3 * macs / (rates["scatter_gups"] * 1e9)

    stream_ms, scatter_ms = bound(limits)
    bound_ms = max(stream_ms, scatter_ms)
    # Each repeat's time over the bound from the rates timed beside it: how far the ratio moves
    # with the machine's state within the run (the ratio of the medians lies in this range).
    per_repeat = [(r["ms"], max(bound(r))) for r in limits["repeats"]]
    ratios = [ms / b if b > 0 else float("nan") for ms, b in per_repeat]
    return {
        "profile": profile,
        "target_nonzeros": nnz,
        "n": n,
        "dim": d,
        "queries": num_queries,
        "k": k,
        "block_size": index.block_size,
        "mean_nonzeros": cost["mean_nonzeros"],
        "r_sub": cost["r_sub"],
        "macs_per_query": macs,
        "expected_macs_per_query": cost["expected_macs_per_query"],
        "dense_macs_per_query": float(n * d),
        "generate_s": gen_s,
        "build_s": index.build_s,
        "ms_per_query_1t": ms_1t,
        "ms_per_query_all": ms_all,
        "threads": threads,
        "thread_speedup": ms_1t / ms_all,
        "ms_per_query_batched_1t": ms_batched,
        "batch_size": batch_size,
        "ms_per_query_reference_1t": ms_ref,
        "speedup_vs_reference_1t": ms_ref / ms_1t,
        "engines_agree": engines_agree,
        "stream_gbs": limits["stream_gbs"],
        "scatter_gups": limits["scatter_gups"],
        "bound_ms_stream": stream_ms,
        "bound_ms_scatter": scatter_ms,
        "bound_ms": bound_ms,
        "ms_over_bound": ms_1t / bound_ms if bound_ms > 0 else float("nan"),
        "ms_over_bound_min": min(ratios),
        "ms_over_bound_max": max(ratios),
        "ms_per_query_scipy_1t": ms_scipy,
        "speedup_vs_scipy_1t": ms_scipy / ms_1t,
        "scipy_results_agree": agree,
        "index_mib": index.nbytes / 2**20,
        "index_bytes_per_posting": bytes_per_posting,
        "forward_store_mib": index.forward_nbytes / 2**20,
        "reference_index_mib": reference.nbytes / 2**20,
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
        sc,
        ("num_items", "dim", "num_queries", "k", "repeats", "scipy_queries", "batch_size"),
        "scale",
    )
    for nnz in nonzeros:
        if not 0 < nnz <= sc.dim:
            raise ValueError(f"config.scale.nonzeros holds {nnz}; each must be in (0, {sc.dim}]")
    for profile in profiles:
        if profile not in PROFILES:
            raise ValueError(f"config.scale.profiles holds {profile!r}; choose from {PROFILES}")
    if not 0 <= sc.block_size <= 65536:
        raise ValueError(
            f"config.scale.block_size={sc.block_size}: give rows per block in [1, 65536] (the "
            "compact engine's 16-bit row offsets), or 0 for the engine's default"
        )


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
        batch_size=sc.batch_size,
        seed=sc.seed,
        block_size=sc.block_size or None,
    )
