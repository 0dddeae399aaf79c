"""The timing harness: medians of repeated warm runs, thread control, the machine's description.

Every timing the project reports is a median over repeats after a warm-up, with numba and BLAS
limited to the same number of threads, and every speed-up is a ratio measured in the same run.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Callable

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from sparse_flops import engine


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


def timed(search: Callable[[int], object], nq: int, repeats: int, threads: int) -> float:
    """ms per query of ``search(num_threads)`` over ``nq`` queries, BLAS limited alike."""
    with threadpool_limits(limits=threads):
        return 1e3 * median_seconds(lambda: search(threads), repeats) / max(nq, 1)


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


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@numba.njit(cache=True, nogil=True)
def _stream(a):
    total = np.uint64(0)  # integer adds: the compiler vectorises them, the reads are the limit
    for i in range(a.shape[0]):
        total += a[i]
    return total


def machine_limits(stream_mib: int = 1024, updates: int = 1 << 24, repeats: int = 5) -> dict:
    """This core's limits for the sparse engine, measured now (one thread, medians):

    - ``stream_gbs``: the rate of reading a ``stream_mib`` array once (beyond the caches);
    - ``scatter_gups``: the rate of the engine's inner loop (``acc[row] += w * code`` with 16-bit
      rows and codes, the engine's own :func:`sparse_flops.engine.scatter`) into an accumulator
      of 4096 float32 rows (16 KiB: in the L1 cache, the fastest size, so the tightest bound),
      its data in cache.
    """
    a = np.ones(stream_mib << 17, np.uint64)
    stream_s = median_seconds(lambda: _stream(a), repeats)
    a = None  # free the buffer before the next measurement
    rng = np.random.default_rng(0)
    block = 4096
    rows = rng.integers(0, block, updates // 64).astype(np.uint16)  # 0.5 MiB: in cache
    codes = rng.integers(1, 32767, updates // 64).astype(np.int16)
    acc = np.zeros(block, np.float32)

    def scatter():
        for _ in range(64):
            engine.scatter(acc, rows, codes, 0, len(rows), np.float32(1e-3))

    scatter_s = median_seconds(scatter, repeats)
    return {
        "stream_gbs": (stream_mib << 20) / stream_s / 1e9,
        "scatter_gups": updates / scatter_s / 1e9,
    }
