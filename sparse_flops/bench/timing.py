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
