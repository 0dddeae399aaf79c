import json
import os

import pytest

from sparse_flops.bench import throughput


def test_measure_reports_step_time_and_flops():
    row = throughput.measure("mlp", "flops", batch_size=16, steps=2, warmup=1, dim=64)
    assert row["step_ms"] > 0 and row["examples_per_s"] == pytest.approx(
        16 / (row["step_ms"] / 1e3)
    )
    assert row["devices"] >= 1
    if row["step_flops"]:
        assert row["achieved_tflops"] > 0


def test_run_writes_reports_with_overhead(tmp_path):
    report = throughput.run(str(tmp_path), ["mlp"], batch_size=16, steps=2, rounds=1)
    rows = {r["penalty"]: r for r in report["rows"]}
    assert set(rows) == {"none", "flops", "l1"}
    assert rows["none"]["overhead_vs_none"] == 0.0
    saved = json.load(open(os.path.join(tmp_path, "throughput.json")))
    assert len(saved["rows"]) == 3
    assert "examples_per_s" in open(os.path.join(tmp_path, "throughput.md")).read()
    with pytest.raises(ValueError, match="unknown backbone"):
        throughput.measure("vgg", "none", batch_size=4)
