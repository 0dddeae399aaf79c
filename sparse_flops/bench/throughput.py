"""Training-throughput benchmark: examples/s and step time per backbone, with and without the
regulariser, so its overhead is visible; achieved FLOP/s and, given the device's peak, the
fraction of peak.

    python launch.py --mode=throughput --config=experiments/throughput.py --workdir=runs/tp \\
        --config.throughput.backbones=small_convnet,cifar_convnet,resnet50 \\
        --config.throughput.batch_size=512

Step time is the median over timed steps after warm-up (compilation excluded), each step
synchronised with ``block_until_ready``; the regulariser's overhead is a ratio of medians
measured in the same run.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Sequence

import jax
import numpy as np
from absl import logging

from sparse_flops import data, io_utils, train
from sparse_flops.bench import report, timing
from sparse_flops.config import as_tuple, base_config, require_positive

# Input shape and classes each backbone is benchmarked on.
INPUTS = {
    "mlp": ((512,), 1000),
    "small_convnet": ((28, 28, 1), 10),
    "cifar_convnet": ((32, 32, 3), 100),
    "resnet18": ((32, 32, 3), 100),
    "resnet50": ((224, 224, 3), 1000),
}
PENALTIES = ("none", "flops", "l1")


def _config(backbone: str, penalty: str, batch_size: int, dim: int, compute_dtype: str):
    c = base_config()
    c.data.source = "synthetic"
    c.model.backbone = backbone
    if backbone == "resnet18":
        c.model.backbone_kwargs.small_images = True
    c.model.dim = dim
    c.regularizer.name = penalty
    c.regularizer.weight = 1.0 if penalty != "none" else 0.0
    c.regularizer.schedule = "constant"
    c.train.batch_size = batch_size
    c.train.compute_dtype = compute_dtype
    return c


def step_flops(setup: train.Setup, state, batch) -> float | None:
    """FLOPs of one compiled step from XLA's cost analysis (None where unavailable)."""
    try:
        cost = setup.step_fn.lower(state, batch).compile().cost_analysis()
    except Exception:  # noqa: BLE001 - cost analysis is optional on some backends
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def measure(
    backbone: str,
    penalty: str,
    *,
    batch_size: int,
    steps: int = 20,
    warmup: int = 3,
    dim: int = 1024,
    compute_dtype: str = "float32",
    peak_tflops: float | None = None,
) -> dict:
    """Median step time and examples/s of one (backbone, penalty) on random inputs."""
    if backbone not in INPUTS:
        raise ValueError(f"unknown backbone {backbone!r}; choose from {sorted(INPUTS)}")
    shape, classes = INPUTS[backbone]
    rng = np.random.default_rng(0)
    x = rng.random((batch_size, *shape), dtype=np.float32)
    y = rng.integers(0, classes, batch_size).astype(np.int32)
    split = data.ArraySplit(x, y)
    config = _config(backbone, penalty, batch_size, dim, compute_dtype)
    setup = train.build(config, {"train": split, "test": split})
    state = setup.init_fn(x[:1])
    batch = setup.put_batch((x, y))
    flops = step_flops(setup, state, batch)
    for _ in range(warmup):
        state, m = setup.step_fn(state, batch)
    jax.block_until_ready(m)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, m = setup.step_fn(state, batch)
        jax.block_until_ready((state, m))
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    row = {
        "backbone": backbone,
        "penalty": penalty,
        "batch_size": batch_size,
        "dim": dim,
        "compute_dtype": compute_dtype,
        "devices": setup.mesh.size,
        "device_kind": jax.devices()[0].device_kind,
        "step_ms": 1e3 * step_s,
        "examples_per_s": batch_size / step_s,
        "step_flops": flops,
    }
    if flops:
        row["achieved_tflops"] = flops / step_s / 1e12
        if peak_tflops:
            row["fraction_of_peak"] = row["achieved_tflops"] / peak_tflops
    return row


def run(
    out_dir: str,
    backbones: Sequence[str] = ("small_convnet", "cifar_convnet", "resnet18"),
    *,
    batch_size: int = 256,
    steps: int = 20,
    penalties: tuple[str, ...] = PENALTIES,
    compute_dtype: str = "float32",
    peak_tflops: float | None = None,
    rounds: int = 3,
    dim: int = 1024,
) -> dict:
    """Measures every (backbone, penalty); the penalties alternate over ``rounds`` rounds, in a
    rotated order, so a drift of the machine's speed or a first-run effect hits them alike, and
    each row keeps the median over rounds.
    Writes ``throughput.json`` and ``throughput.md`` to ``out_dir``."""
    rows = []
    for backbone in backbones:
        per_penalty: dict[str, list[dict]] = {p: [] for p in penalties}
        for r in range(rounds):
            # Rotate the order each round so that no penalty is always measured first.
            for p in penalties[r % len(penalties) :] + penalties[: r % len(penalties)]:
                per_penalty[p].append(
                    measure(
                        backbone,
                        p,
                        batch_size=batch_size,
                        steps=steps,
                        dim=dim,
                        compute_dtype=compute_dtype,
                        peak_tflops=peak_tflops,
                    )
                )
        chosen = {}
        for p, runs in per_penalty.items():
            runs.sort(key=lambda r: r["step_ms"])
            chosen[p] = runs[len(runs) // 2]
        for row in chosen.values():
            if "none" in chosen:
                row["overhead_vs_none"] = row["step_ms"] / chosen["none"]["step_ms"] - 1.0
            logging.info("throughput %s", json.dumps(row))
            rows.append(row)
    result = {"kind": "throughput", "environment": timing.environment(), "rows": rows}
    os.makedirs(out_dir, exist_ok=True)
    io_utils.atomic_write_text(
        os.path.join(out_dir, "throughput.json"), json.dumps(result, indent=2)
    )
    columns = [
        "backbone",
        "penalty",
        "batch_size",
        "devices",
        "device_kind",
        "step_ms",
        "examples_per_s",
        "overhead_vs_none",
        "achieved_tflops",
        "fraction_of_peak",
    ]
    columns = [c for c in columns if any(c in r for r in rows)]
    md = "# Training throughput\n\n" + report.markdown_table(rows, columns) + "\n"
    io_utils.atomic_write_text(os.path.join(out_dir, "throughput.md"), md)
    print(md)
    return result


def validate(config) -> None:
    """Checks a throughput config (``experiments/throughput.py``); raises ``ValueError``."""
    if "throughput" not in config:
        raise ValueError(
            "--mode=throughput needs a throughput config: --config=experiments/throughput.py "
            "(it has no 'throughput' section)"
        )
    tc = config.throughput
    require_positive(tc, ("batch_size", "steps", "rounds", "dim"), "throughput")
    for b in as_tuple(tc.backbones):
        if b not in INPUTS:
            raise ValueError(
                f"config.throughput.backbones holds {b!r}; choose from {sorted(INPUTS)}"
            )
    for p in as_tuple(tc.penalties):
        if p not in PENALTIES:
            raise ValueError(f"config.throughput.penalties holds {p!r}; choose from {PENALTIES}")
    if tc.compute_dtype not in ("float32", "bfloat16"):
        raise ValueError(
            f"config.throughput.compute_dtype={tc.compute_dtype!r}; use float32 or bfloat16"
        )
    if tc.peak_tflops < 0:
        raise ValueError(f"config.throughput.peak_tflops must be >= 0, got {tc.peak_tflops}")


def run_config(config, workdir: str) -> dict:
    """:func:`run` with the settings of ``config.throughput``; reports go to ``workdir``."""
    validate(config)
    tc = config.throughput
    return run(
        workdir,
        as_tuple(tc.backbones),
        batch_size=tc.batch_size,
        steps=tc.steps,
        penalties=as_tuple(tc.penalties),
        compute_dtype=tc.compute_dtype,
        peak_tflops=tc.peak_tflops or None,
        rounds=tc.rounds,
        dim=tc.dim,
    )
