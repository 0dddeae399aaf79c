import json
import os
import statistics

import numpy as np
import pytest
from helpers import codes_workdir

from sparse_flops import codes, metrics
from sparse_flops.bench import scale, timing, tradeoff


@pytest.mark.parametrize("kind", ["uniform", "zipf"])
def test_activation_profile_sums_to_target_and_is_capped(kind):
    p = scale.activation_profile(1024, 64, kind)
    assert p.shape == (1024,) and p.sum() == pytest.approx(64)
    assert p.max() <= 1.0 and p.min() > 0
    if kind == "zipf":
        assert p[0] == 1.0 and np.all(np.diff(p) <= 1e-12)
    with pytest.raises(ValueError, match="mean non-zeros"):
        scale.activation_profile(8, 9, kind)


def test_random_codes_follow_the_profile():
    rng = np.random.default_rng(0)
    p = scale.activation_profile(64, 8, "zipf")
    codes = scale.random_codes(20000, p, rng)
    assert codes.shape == (20000, 64) and codes.dtype == np.float32
    assert np.all(codes.data > 0) and np.all(codes.data <= 1)
    np.testing.assert_allclose(metrics.activation_probabilities(codes), p, atol=0.01)


def test_search_and_limits_are_timed_in_turn_each_repeat():
    calls = []

    class Probes(timing.LimitProbes):
        def stream(self):
            calls.append("stream")

        def scatter(self):
            calls.append("scatter")

    probes = Probes(stream_mib=1, updates=64)
    ms, limits = timing.timed_beside_limits(lambda: calls.append("search"), 10, 3, probes)
    assert calls == ["search", "stream", "scatter"] * 4  # a warm-up, then 3 repeats
    assert ms > 0 and limits["stream_gbs"] > 0 and limits["scatter_gups"] > 0
    each = limits["repeats"]
    assert len(each) == 3 and all(r["ms"] > 0 and r["scatter_gups"] > 0 for r in each)
    # the medians are those of the repeats (an odd count: the median time gives the median rate)
    for key in ("ms", "stream_gbs", "scatter_gups"):
        got = ms if key == "ms" else limits[key]
        assert got == pytest.approx(statistics.median(r[key] for r in each))
    with pytest.raises(ValueError, match="repeats must be positive"):
        timing.timed_beside_limits(lambda: None, 10, 0, probes)
    with pytest.raises(ValueError, match="stream_mib > 0 and updates >= 64"):
        timing.LimitProbes(stream_mib=0)


def test_median_seconds_rejects_no_repeats():
    with pytest.raises(ValueError, match="repeats"):
        timing.median_seconds(lambda: None, repeats=0)


def test_benchmark_workdirs_writes_reports(tmp_path):
    rng = np.random.default_rng(2)
    a = codes_workdir(str(tmp_path / "sparse"), rng)
    b = codes_workdir(str(tmp_path / "dense"), rng, sparse=False)
    c = codes_workdir(str(tmp_path / "small"), rng, sparse=False, dim=16)
    out = str(tmp_path / "report")
    report = tradeoff.benchmark_workdirs(
        [a, b, c],
        out,
        k=10,
        ks=(1, 10),
        num_queries=30,
        repeats=1,
        pca_dims=(8, 64),
        lsh_bits=(64,),
        pq_m=(8,),
        ivf_m=8,
        ivf_nprobe=(2,),
        two_stage_candidates=(20,),
        sparse_thresholds=(0.1,),
    )
    rows = report["rows"]
    methods = {(r["codes"], r["regime"], r["method"]) for r in rows}
    for regime in ("class", "instance"):
        for expected in (
            ("sparse", "sparse index (ours)"),
            ("sparse", "scipy Q@D.T + argpartition"),
            ("sparse", "dense exact (BLAS)"),
            ("sparse", "two-stage: sparse + dense re-rank"),
            ("dense", "dense exact (BLAS)"),
            ("dense", "dense exact (faiss flat)"),
            ("dense", "PCA + exact"),
            ("dense", "LSH (Hamming)"),
            ("dense", "PQ (faiss)"),
            ("dense", "IVF-PQ (faiss)"),
            ("small", "dense exact (faiss flat)"),
        ):
            assert (expected[0], regime, expected[1]) in methods, (expected, regime)
        # compact baselines come from the largest dense export only; PCA only below its dim
        assert ("small", regime, "PCA + exact") not in methods
        pca = [r for r in rows if r["regime"] == regime and r["method"] == "PCA + exact"]
        assert [r["setting"] for r in pca] == ["k=8"]
        assert pca[0]["params"] == {"pca_dim": 8}
        sel = [r for r in rows if r["codes"] == "sparse" and r["regime"] == regime]
        by = {(r["method"], r["setting"]): r for r in sel}
        exact = [by[("sparse index (ours)", "")], by[("scipy Q@D.T + argpartition", "")]]
        exact.append(by[("dense exact (BLAS)", "d=32")])
        # the three exact methods return the same top-k on the same codes
        assert len({r["precision@1"] for r in exact}) == 1
        assert exact[2]["speedup_vs_dense_1t"] == 1.0
        assert exact[0]["macs_per_query"] < exact[2]["macs_per_query"]
        assert exact[0]["queries"] == (30 if regime == "class" else 20)
        two = [r for r in sel if r["method"].startswith("two-stage")][0]
        assert "re-rank dense" in two["setting"]
        assert two["macs_per_query"] == pytest.approx(exact[0]["macs_per_query"] + 20 * 32)
        for r in rows:
            assert r["bytes_per_item"] > 0 and r["ms_per_query_1t"] > 0
    saved = json.load(open(os.path.join(out, "report.json")))
    assert len(saved["rows"]) == len(rows)
    md = open(os.path.join(out, "report.md")).read()
    assert "## class retrieval" in md and "## instance retrieval" in md and "IVF-PQ" in md
    assert open(os.path.join(out, "tradeoff.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_two_stage_refuses_exports_of_different_items(tmp_path):
    rng = np.random.default_rng(3)
    a = codes_workdir(str(tmp_path / "sparse"), rng)
    b = str(tmp_path / "dense")
    sets = {
        "database": codes.CodeSet(rng.standard_normal((300, 8)).astype(np.float32), np.zeros(300)),
        "queries": codes.CodeSet(rng.standard_normal((40, 8)).astype(np.float32), np.zeros(40)),
    }
    codes.save_codes(os.path.join(b, "codes"), sets, {})
    with pytest.raises(ValueError, match="rows differ"):
        tradeoff.benchmark_workdirs([a, b], str(tmp_path / "out"), k=5, ks=(1,), repeats=1)
    with pytest.raises(ValueError, match="unknown benchmark settings"):
        tradeoff.benchmark_workdirs([a], str(tmp_path / "out"), kk=5)


def test_scale_benchmark_small(tmp_path):
    report = scale.scale_benchmark(
        str(tmp_path),
        n=5000,
        d=64,
        mean_nnz=(4, 16),
        profiles=("uniform", "zipf"),
        num_queries=50,
        k=10,
        repeats=1,
        scipy_queries=20,
        stream_mib=8,
        scatter_updates=1 << 16,
    )
    rows = report["rows"]
    assert len(rows) == 4
    for r in rows:
        assert r["scipy_results_agree"]
        # each row's bound from the rates timed beside its own search
        stream_ms = 1e3 * r["macs_per_query"] * r["index_bytes_per_posting"] / r["stream_gbs"] / 1e9
        scatter_ms = 1e3 * r["macs_per_query"] / r["scatter_gups"] / 1e9
        assert r["bound_ms"] == pytest.approx(max(stream_ms, scatter_ms))
        assert r["ms_over_bound"] == pytest.approx(r["ms_per_query_1t"] / r["bound_ms"])
        # a ratio of medians lies between the least and greatest ratio of the repeats
        assert r["ms_over_bound_min"] <= r["ms_over_bound"] * (1 + 1e-9)
        assert r["ms_over_bound"] <= r["ms_over_bound_max"] * (1 + 1e-9)
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
    with pytest.raises(codes.CodesError, match="--mode=export"):
        tradeoff.benchmark_workdirs([str(tmp_path)], str(tmp_path / "out"))


def test_timing_queries_times_the_first_queries_and_scores_them_all(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    a = codes_workdir(str(tmp_path / "sparse"), rng)
    b = codes_workdir(str(tmp_path / "dense"), rng, sparse=False)
    timed = []
    real = timing.timed

    def spy(search, nq, repeats, threads):
        timed.append(nq)
        return real(search, nq, repeats, threads)

    monkeypatch.setattr(timing, "timed", spy)
    kw = dict(k=10, ks=(1, 10), num_queries=30, repeats=1, threads=1)
    kw.update(methods=("sparse", "dense", "two_stage", "pca"), pca_dims=(8,))
    kw.update(two_stage_candidates=(20,))
    full = tradeoff.benchmark_workdirs([a, b], str(tmp_path / "full"), **kw)["rows"]
    assert set(timed) == {30, 20}  # every query of each regime
    timed.clear()
    part = tradeoff.benchmark_workdirs([a, b], str(tmp_path / "part"), timing_queries=7, **kw)[
        "rows"
    ]
    assert timed and set(timed) == {7}
    assert [(r["method"], r["precision@1"], r["recall@10"]) for r in part] == [
        (r["method"], r["precision@1"], r["recall@10"]) for r in full
    ]
    with pytest.raises(ValueError, match="timing_queries"):
        tradeoff.benchmark_workdirs([a], str(tmp_path / "bad"), timing_queries=-1)


def test_open_set_rows_and_the_regimes_setting(tmp_path):
    rng = np.random.default_rng(5)
    a = codes_workdir(str(tmp_path / "sparse"), rng, distractors=500)
    b = codes_workdir(str(tmp_path / "dense"), rng, sparse=False, distractors=500)
    kw = dict(k=10, ks=(1, 10), num_queries=30, repeats=1, threads=1, methods=("sparse", "dense"))
    rows = tradeoff.benchmark_workdirs([a, b], str(tmp_path / "all"), **kw)["rows"]
    assert {r["regime"] for r in rows} == {"class", "instance", "open_set"}
    open_set = [r for r in rows if r["regime"] == "open_set"]
    assert {r["n"] for r in open_set} == {540} and {r["queries"] for r in open_set} == {20}
    # The sparse index is exact: it finds what dense search over the same codes finds.
    by = {r["method"]: r for r in open_set if r["codes"] == "sparse"}
    assert by["sparse index (ours)"]["recall@10"] == by["dense exact (BLAS)"]["recall@10"]
    only = tradeoff.benchmark_workdirs([a, b], str(tmp_path / "one"), regimes=("open_set",), **kw)[
        "rows"
    ]
    assert {r["regime"] for r in only} == {"open_set"}
    assert "## open-set retrieval (540 items" in open(tmp_path / "one" / "report.md").read()
    with pytest.raises(ValueError, match="unknown benchmark regimes"):
        tradeoff.benchmark_workdirs([a], str(tmp_path / "bad"), regimes=("faces",), **kw)


def test_scale_config_refuses_a_block_the_engine_cannot_address():
    from experiments import scale as scale_config

    c = scale_config.get_config()
    scale.validate(c)  # 0: the engine's default
    for bad in (65537, -1):
        c.scale.block_size = bad
        with pytest.raises(ValueError, match="block_size"):
            scale.validate(c)
