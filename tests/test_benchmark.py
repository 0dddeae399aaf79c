import json
import os

import numpy as np
import pytest
import scipy.sparse as sp

from sparse_flops import benchmark, export, metrics


@pytest.mark.parametrize("kind", ["uniform", "zipf"])
def test_activation_profile_sums_to_target_and_is_capped(kind):
    p = benchmark.activation_profile(1024, 64, kind)
    assert p.shape == (1024,) and p.sum() == pytest.approx(64)
    assert p.max() <= 1.0 and p.min() > 0
    if kind == "zipf":
        assert p[0] == 1.0 and np.all(np.diff(p) <= 1e-12)
    with pytest.raises(ValueError, match="mean non-zeros"):
        benchmark.activation_profile(8, 9, kind)


def test_random_codes_follow_the_profile():
    rng = np.random.default_rng(0)
    p = benchmark.activation_profile(64, 8, "zipf")
    codes = benchmark.random_codes(20000, p, rng)
    assert codes.shape == (20000, 64) and codes.dtype == np.float32
    assert np.all(codes.data > 0) and np.all(codes.data <= 1)
    np.testing.assert_allclose(metrics.activation_probabilities(codes), p, atol=0.01)


def test_topk_metrics_against_full_ranking():
    rng = np.random.default_rng(1)
    db = rng.standard_normal((80, 6)).astype(np.float32)
    dbl = rng.integers(0, 3, 80)
    q = rng.standard_normal((12, 6)).astype(np.float32)
    ql = rng.integers(0, 3, 12)
    scores = q @ db.T
    ids = np.argsort(-scores, axis=1, kind="stable")
    full = metrics.ranking_metrics(scores, ql, dbl, ks=(1, 5, 80))
    top = metrics.topk_metrics(ids, ql, dbl, ks=(1, 5, 80))
    assert top["precision@5"] == pytest.approx(np.mean(full["precision@5"]))
    assert top["recall@80"] == pytest.approx(1.0)
    assert top["map@80"] == pytest.approx(np.mean(full["ap"]))  # K = n: mAP@K is mAP
    with pytest.raises(ValueError, match="exceed"):
        metrics.topk_metrics(ids[:, :3], ql, dbl, ks=(5,))


def test_median_seconds_rejects_no_repeats():
    with pytest.raises(ValueError, match="repeats"):
        benchmark.median_seconds(lambda: None, repeats=0)


def codes_workdir(folder, rng, sparse=True):
    def codes(n):
        z = np.abs(rng.standard_normal((n, 32))).astype(np.float32)
        z[rng.random((n, 32)) < 0.8] = 0
        return export.to_csr(z) if sparse else z

    sets = {
        "database": export.CodeSet(codes(300), rng.integers(0, 5, 300)),
        "queries": export.CodeSet(codes(40), rng.integers(0, 5, 40)),
        "instance_queries": export.CodeSet(codes(20), np.arange(20)),
    }
    export.save_codes(os.path.join(folder, "codes"), sets, {})
    return folder


def test_benchmark_workdirs_writes_reports(tmp_path):
    rng = np.random.default_rng(2)
    a = codes_workdir(str(tmp_path / "sparse"), rng)
    b = codes_workdir(str(tmp_path / "dense"), rng, sparse=False)
    out = str(tmp_path / "report")
    report = benchmark.benchmark_workdirs([a, b], out, k=10, ks=(1, 10), num_queries=30, repeats=2)
    rows = report["rows"]
    methods = {(r["codes"], r["regime"], r["method"]) for r in rows}
    assert ("sparse", "class", "sparse index (ours)") in methods
    assert ("sparse", "instance", "scipy Q@D.T + argpartition") in methods
    assert ("dense", "class", "dense exact (BLAS)") in methods
    assert not any(r["codes"] == "dense" and r["method"] != "dense exact (BLAS)" for r in rows)
    for regime in ("class", "instance"):
        sel = {r["method"]: r for r in rows if r["codes"] == "sparse" and r["regime"] == regime}
        # the three methods return the same top-k on the same codes
        acc = {m: r["precision@1"] for m, r in sel.items()}
        assert len(set(acc.values())) == 1, acc
        assert sel["dense exact (BLAS)"]["speedup_vs_dense_1t"] == 1.0
        assert (
            sel["sparse index (ours)"]["macs_per_query"]
            < sel["dense exact (BLAS)"]["macs_per_query"]
        )
        assert sel["sparse index (ours)"]["queries"] == (30 if regime == "class" else 20)
    saved = json.load(open(os.path.join(out, "report.json")))
    assert len(saved["rows"]) == len(rows)
    md = open(os.path.join(out, "report.md")).read()
    assert "sparse index (ours)" in md and "ms_per_query_1t" in md
    assert open(os.path.join(out, "tradeoff.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_scale_benchmark_small(tmp_path):
    report = benchmark.scale_benchmark(
        str(tmp_path),
        n=5000,
        d=64,
        mean_nnz=(4, 16),
        profiles=("uniform", "zipf"),
        num_queries=50,
        k=10,
        repeats=1,
        scipy_queries=20,
    )
    rows = report["rows"]
    assert len(rows) == 4
    for r in rows:
        assert r["scipy_results_agree"]
        assert r["mean_nonzeros"] == pytest.approx(r["target_nonzeros"], rel=0.1)
        assert r["macs_per_query"] == pytest.approx(r["expected_macs_per_query"], rel=0.25)
        assert r["index_mib"] > 0 and r["peak_rss_mib"] > 0
    uniform = [r for r in rows if r["profile"] == "uniform"]
    zipf = [r for r in rows if r["profile"] == "zipf"]
    # skewed activations cost more multiply-adds at the same sparsity (R_sub > 1)
    assert all(
        z["macs_per_query"] > u["macs_per_query"] for u, z in zip(uniform, zipf, strict=True)
    )
    assert os.path.exists(tmp_path / "tradeoff.png")


def test_codes_folder_missing_is_clear(tmp_path):
    with pytest.raises(export.CodesError, match="--mode=export"):
        benchmark.benchmark_workdirs([str(tmp_path)], str(tmp_path / "out"))


def test_sparse_input_to_metrics_cost():
    m = sp.csr_matrix(np.eye(4, dtype=np.float32))
    assert metrics.cost_summary(m)["r_sub"] == pytest.approx(1.0)
