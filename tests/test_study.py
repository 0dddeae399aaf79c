import json
import os

import pytest

from sparse_flops.bench import study


def _member(name, family, seed, grid, sparse, rows, nnz=10.0):
    return {
        "name": name,
        "family": family,
        "seed": seed,
        "grid": grid,
        "sparse": sparse,
        "validation": {
            "precision@1": 0.8 - 0.01 * seed,
            "map": 0.6,
            "mean_nonzeros": nnz,
            "sum_p_squared": nnz / 3,
            "r_sub": 1.5,
        },
        "rows": rows,
    }


def _row(method, setting, acc, ms, macs, regime="class"):
    key = "precision@1" if regime == "class" else "recall@1"
    return {
        "regime": regime,
        "method": method,
        "setting": setting,
        key: acc,
        "ms_per_query_1t": ms,
        "macs_per_query": macs,
    }


def fake_sweep():
    members = []
    for seed in (0, 1):
        d = 0.01 * seed
        members.append(
            _member(
                f"dense-dim64-seed{seed}",
                "dense",
                seed,
                {"model.dim": 64},
                False,
                [
                    _row("dense exact (BLAS)", "d=64", 0.90 + d, 1.0, 1e6),
                    _row("PCA + exact", "k=8", 0.70 + d, 0.2, 1e5),
                    _row("dense exact (BLAS)", "d=64", 0.05 + d, 1.0, 1e6, "instance"),
                ],
            )  # fmt: skip
        )
        for w, acc, ms in ((1.0, 0.88, 0.5), (10.0, 0.80, 0.1)):
            members.append(
                _member(
                    f"flops-weight{w}-seed{seed}",
                    "flops",
                    seed,
                    {"regularizer.weight": w},
                    True,
                    [
                        _row("sparse index (ours)", "", acc + d, ms, 1e4 / w),
                        _row(
                            "two-stage: sparse + dense re-rank",
                            "K=50, re-rank dense",
                            0.92 + d,
                            ms + 0.3,
                            2e4,
                        ),
                        _row("sparse index (ours)", "", 0.03 + d, ms, 1e4 / w, "instance"),
                    ],
                    nnz=100 / w,
                )  # fmt: skip
            )
        members.append(
            _member(
                f"l1-weight0.1-seed{seed}",
                "l1",
                seed,
                {"regularizer.weight": 0.1},
                True,
                [_row("sparse index (ours)", "", 0.85 + d, 0.3, 5e3)],
                nnz=20,
            )  # fmt: skip
        )
    return {"members": members, "missing": ["l1-weight1.0-seed0"]}


def test_points_are_means_over_seeds_with_their_spread():
    curves = study.curve_points(fake_sweep(), "class")
    flops = {p["setting"]: p for p in curves["FLOPs"]}
    p = flops["weight=1.0"]
    assert p["seeds"] == 2
    assert p["acc"] == pytest.approx(0.885) and (p["acc_min"], p["acc_max"]) == (0.88, 0.89)
    assert {q["setting"] for q in curves["two-stage FLOPs"]} == {
        "weight=1.0; K=50",
        "weight=10.0; K=50",
    }
    # the sparse members' BLAS rows are not the dense curve; only dense members are
    assert [q["setting"] for q in curves["dense exact"]] == ["dim=64; d=64"]


def test_costs_are_medians_over_seeds_so_one_slowed_run_does_not_move_them():
    sweep = fake_sweep()
    members = [
        m
        for m in sweep["members"]
        if m["family"] == "flops" and m["grid"] == {"regularizer.weight": 1.0}
    ]
    base = members[0]
    slow = json.loads(json.dumps(base))
    slow["seed"] = 7
    for row in slow["rows"]:
        row["ms_per_query_1t"] *= 10  # a run under load
    sweep["members"].append(slow)
    p = {q["setting"]: q for q in study.curve_points(sweep, "class")["FLOPs"]}["weight=1.0"]
    times = [
        r["ms_per_query_1t"]
        for m in members + [slow]
        for r in m["rows"]
        if r["method"].startswith("sparse index") and r["regime"] == "class"
    ]  # 0.5 ms in both seeds, 5 ms in the slowed run
    assert p["seeds"] == 3 and sorted(times) == pytest.approx([0.5, 0.5, 5.0])
    assert p["ms"] == pytest.approx(0.5) and p["ms_max"] == pytest.approx(5.0)
    assert p["acc"] == pytest.approx((0.88 + 0.89 + 0.88) / 3)  # accuracy stays a mean


def test_pareto_and_budgets():
    pts = [
        {"acc": 0.5, "ms": 1.0},
        {"acc": 0.4, "ms": 2.0},  # dominated
        {"acc": 0.7, "ms": 3.0},
    ]
    assert [p["acc"] for p in study.pareto(pts, "ms")] == [0.5, 0.7]
    assert study.best_within(pts, "ms", 2.5)["acc"] == 0.5
    assert study.best_within(pts, "ms", 0.5) is None


def test_equal_cost_statements_compare_within_the_same_budget():
    curves = study.curve_points(fake_sweep(), "class")
    lines = study.equal_cost_lines(curves, "FLOPs", "L1", "ms", "ms/query")
    # FLOPs' front: 0.805 at 0.1 ms (L1 has nothing that cheap), 0.885 at 0.5 ms vs L1 0.855
    assert lines[0].endswith("no point this cheap")
    assert "FLOPs 0.885" in lines[1] and "L1 0.855" in lines[1] and lines[1].endswith("above")
    # Seed ranges that overlap are called level, not above or below.
    close = {"acc": 0.80, "acc_min": 0.79, "acc_max": 0.81}
    assert study._verdict(close, {"acc": 0.805, "acc_min": 0.80, "acc_max": 0.81}) == "level"
    assert study._verdict(close, {"acc": 0.75, "acc_min": 0.74, "acc_max": 0.78}) == "above"
    assert study._verdict(close, {"acc": 0.85, "acc_min": 0.82, "acc_max": 0.88}) == "below"
    speed = study.speedup_at_equal_accuracy(curves)
    assert any(x.startswith("- two-stage FLOPs: 0.925") for x in speed)
    assert any(x.startswith("- FLOPs: never reaches it") for x in speed)


def test_write_results_writes_report_and_plot(tmp_path):
    sweep_path = tmp_path / "sweep.json"
    sweep_path.write_text(json.dumps(fake_sweep()))
    out = tmp_path / "results.md"
    text = study.write_results(str(sweep_path), str(out), ["python launch.py --mode=sweep ..."])
    assert out.read_text() == text
    assert os.path.getsize(tmp_path / "results.png") > 1000
    assert "## Class retrieval (precision@1)" in text and "## Instance retrieval (recall@1)" in text
    assert (
        "- class: FLOPs against L1 at equal ms/query: L1 has no point as cheap as FLOPs at 0.1 "
        "ms/query; at the 1 budget where both have a point (0.5 ms/query), FLOPs is above at 1 "
        "(by 0.030)." in text
    )
    assert "not yet run: 1 (l1-weight1.0-seed0)" in text
    assert "python launch.py --mode=sweep ..." in text
    # validation choice: the sparsest FLOPs weight within 0.01 of the best validation precision
    assert "Validation choice for flops: regularizer.weight=10.0" in text


def test_a_tuning_sweep_gets_its_validation_report(tmp_path):
    sweep = fake_sweep()
    for m in sweep["members"]:
        m["rows"] = []  # train-only members: validation figures, no benchmark
    sweep["members"] = [m for m in sweep["members"] if m["sparse"]]
    by_name = {m["name"]: m for m in sweep["members"]}
    by_name["flops-weight10.0-seed1"]["validation"]["precision@1"] = 0.6  # falls behind
    sweep_path = tmp_path / "sweep.json"
    sweep_path.write_text(json.dumps(sweep))
    out = tmp_path / "tuning.md"
    text = study.write_results(str(sweep_path), str(out), ["python launch.py --mode=sweep x"])
    assert text.startswith("# Tuning on the validation split") and out.read_text() == text
    assert "Class retrieval" not in text and os.path.getsize(tmp_path / "tuning.png") > 1000
    # Means over seeds: weight 10 averages 0.8 and 0.6, so weight 1 (0.795) is the choice.
    assert "| flops | regularizer.weight=10.0 | 2 | 0.7 |" in text
    assert (
        "- flops: the sparsest setting within 0.01 precision@1 of the family's best is "
        "regularizer.weight=1.0" in text
    )
    assert "- l1: the sparsest setting" in text


def test_setup_section_reads_the_recorded_configs_and_times():
    sweep = fake_sweep()
    sweep["reference"] = "dense-dim64"
    config = {
        "train": {"num_steps": 800, "batch_size": 256},
        "data": {"source": "fashion_mnist", "validation_size": 10000, "eval_split": "validation"},
        "model": {"backbone": "small_convnet", "dim": 1024, "batch_norm_scale": False},
        "benchmark": {"num_queries": 1000, "timing_queries": 200, "repeats": 3, "threads": 1,
                      "k": 100},
        "regularizer": {"on": "activations", "warmup_steps": 300, "schedule": "quadratic"},
        "loss": {"name": "norm_softmax"},
    }  # fmt: skip
    for i, m in enumerate(sweep["members"]):
        m["config"] = config
        m["seconds"] = {"train": 100.0 + i, "benchmark": 400.0 if "dense" in m["name"] else 30.0}
    text = "\n".join(study.setup_lines(sweep))
    assert "800 steps of 256" in text and "penalty on the activations" in text
    assert "timed on 200 of them, median of 3 repeats" in text
    # the reference members' benchmarks (400 s) are reported apart from the others' (30 s)
    assert "benchmark 30 s; the reference member's benchmark 400 s" in text
    assert "loss norm_softmax." in text
    # Members trained with different losses: each loss with its families.
    for m in sweep["members"]:
        if m["family"] == "dense":
            m["config"] = dict(config, loss={"name": "ntxent"})
    text = "\n".join(study.setup_lines(sweep))
    assert "loss norm_softmax (flops, l1), ntxent (dense)." in text
    assert study.setup_lines({"members": [{"name": "x"}]}) == []


def test_class_trained_members_of_the_open_set_sweep_are_curves_of_their_own():
    sweep = fake_sweep()
    sweep["members"].append(
        _member("cls_flops-seed0", "cls_flops", 0, {}, True,
                [_row("sparse index (ours)", "", 0.02, 0.2, 1e4, "open_set")])
    )  # fmt: skip
    curves = study.curve_points(sweep, "open_set")
    assert [p["acc"] for p in curves["FLOPs, class-trained"]] == [0.02]
    assert "FLOPs" not in curves


def test_dominance_lines_compare_each_setting_with_the_best_as_cheap():
    def row(family, setting, acc, cost, spread=0.005):
        return {"family": family, "setting": setting, "precision@1": acc, "sum_p_squared": cost,
                "acc_min": acc - spread, "acc_max": acc + spread}  # fmt: skip

    rows = [
        row("a", "w=1", 0.80, 10.0),
        row("a", "w=2", 0.70, 4.0),
        row("a", "w=3", 0.66, 1.0, spread=0.03),
        row("b", "v=1", 0.75, 12.0),
        row("b", "v=2", 0.72, 5.0),
        row("b", "v=3", 0.64, 2.0),
        row("b", "v=4", 0.60, 0.5),
    ]
    lines = study.dominance_lines(rows, "a", "b")
    assert lines[1].endswith("a has no setting as cheap")  # v=4 is cheaper than all of a
    # v=3 (2.0): w=3 is 0.02 higher on the mean, but its seed range overlaps v=3's.
    assert "a w=3 is level with it within the seeds' spread (+0.020 on the mean)" in lines[2]
    assert "a w=2 is 0.020 below it" in lines[3]  # v=2 (5.0): w=2 (4.0) is the best as cheap
    assert "a w=1 is 0.050 above it" in lines[4]  # v=1 (12.0): w=1 (0.80) is the best
    assert study.dominance_lines(rows, "a", "missing") == []


def _open_set_sweep():
    members = []
    for seed in (0, 1):
        d = 0.01 * seed
        members.append(
            _member(f"dense-dim128-seed{seed}", "dense", seed, {"model.dim": 128}, False,
                    [_row("dense exact (BLAS)", "d=128", 0.10 + d, 4.0, 1e8, "open_set"),
                     _row("LSH (Hamming)", "b=512", 0.05 + d, 0.5, 1e6, "open_set")])
        )  # fmt: skip
        members.append(
            _member(f"flops-weight0.1-seed{seed}", "flops", seed, {"regularizer.weight": 0.1},
                    True, [_row("sparse index (ours)", "", 0.04 + d, 1.0, 1e6, "open_set")])
        )  # fmt: skip
    return {"members": members, "missing": []}


def test_one_report_from_the_study_and_the_open_set_sweep(tmp_path):
    a, b = tmp_path / "study.json", tmp_path / "open.json"
    a.write_text(json.dumps(fake_sweep()))
    b.write_text(json.dumps(_open_set_sweep()))
    out = tmp_path / "results.md"
    text = study.write_results([str(a), str(b)], str(out))
    for title in ("## Class retrieval", "## Instance retrieval", "## Open-set retrieval"):
        assert title in text
    assert f"--sweep={a} --sweep={b}" in text
    # Each sweep's validation section on its own, and no placeholder for the million-item part.
    assert f"## Validation of {a}" in text and f"## Validation of {b}" in text
    assert "precision@1 = recall@1" in text and "not part of this report yet" not in text
    # The open-set curves come from the open-set sweep only: LSH 0.055 at 0.5 ms there.
    assert "- open_set: FLOPs against LSH at equal ms/query" in text
    # Two sweeps with rows of the same regime are refused, naming both.
    with pytest.raises(ValueError, match="regime 'class' has rows in both"):
        study.write_results([str(a), str(a)], str(out))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        study.write_results([str(bad)], str(out))
    with pytest.raises(ValueError, match="no sweep record"):
        study.write_results([str(tmp_path / "none.json")], str(out))
