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


class LimitProbes:
    """This core's limits for the sparse engine, ready to be timed again and again (one thread):

    - ``stream``: reading a ``stream_mib`` array once (far beyond the caches);
    - ``scatter``: the engine's inner loop (``acc[row] += w * code`` with 16-bit rows and codes,
      :func:`sparse_flops.engine.scatter`), ``updates`` of them into an accumulator of 4096
      float32 rows (16 KiB: in the L1 cache, the fastest size, so the tightest bound), its data
      in cache.
    """

    def __init__(self, stream_mib: int = 256, updates: int = 1 << 24):
        if stream_mib <= 0 or updates < 64:
            raise ValueError(
                f"LimitProbes needs stream_mib > 0 and updates >= 64, got {stream_mib}, {updates}"
            )
        self._array = np.ones(stream_mib << 17, np.uint64)
        self._bytes = stream_mib << 20
        rng = np.random.default_rng(0)
        self._rows = rng.integers(0, 4096, updates // 64).astype(np.uint16)  # in cache
        self._codes = rng.integers(1, 32767, updates // 64).astype(np.int16)
        self._acc = np.zeros(4096, np.float32)
        self._updates = 64 * (updates // 64)

    def stream(self) -> None:
        _stream(self._array)

    def scatter(self) -> None:
        for _ in range(64):
            engine.scatter(self._acc, self._rows, self._codes, 0, len(self._rows), np.float32(1e-3))

    def rates(self, stream_s: float, scatter_s: float) -> dict:
        """``{"stream_gbs", "scatter_gups"}`` from times of :meth:`stream`, :meth:`scatter`."""
        return {
            "stream_gbs": self._bytes / stream_s / 1e9,
            "scatter_gups": self._updates / scatter_s / 1e9,
        }


def machine_limits(probes: LimitProbes | None = None, repeats: int = 5) -> dict:
    """This core's stream bandwidth and scatter rate (``probes``, default :class:`LimitProbes`),
    medians now."""
    probes = probes or LimitProbes()
    return probes.rates(
        median_seconds(probes.stream, repeats), median_seconds(probes.scatter, repeats)
    )


def timed_beside_limits(
    search: Callable[[], object], nq: int, repeats: int, probes: LimitProbes
) -> tuple[float, dict]:
    """ms per query of ``search()`` on one thread (BLAS too) and the limits of ``probes``, the
    three timed in turn in every repeat (medians), so that a time and its bound see the same
    state of a shared machine: on one, a single measurement of the scatter rate moved by a
    third between runs minutes apart. The limits also hold ``"repeats"``: each repeat's ms per
    query and rates, ``[{"ms", "stream_gbs", "scatter_gups"}, ...]``."""
    if repeats <= 0:
        raise ValueError(f"repeats must be positive, got {repeats}")
    fns = (search, probes.stream, probes.scatter)
    times: tuple[list, ...] = ([], [], [])
    with threadpool_limits(limits=1):
        for fn in fns:  # warm-up
            fn()
        for _ in range(repeats):
            for fn, out in zip(fns, times, strict=True):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
    search_s, stream_s, scatter_s = (statistics.median(t) for t in times)
    limits = probes.rates(stream_s, scatter_s)
    limits["repeats"] = [
        {"ms": 1e3 * a / max(nq, 1), **probes.rates(b, c)} for a, b, c in zip(*times, strict=True)
    ]
    return 1e3 * search_s / max(nq, 1), limits
