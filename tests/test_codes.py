import json
import os

import numpy as np
import pytest
import scipy.sparse as sp

from sparse_flops import codes, metrics
from sparse_flops.bench import regimes


def make_sets(rng, sparse=True, signed=True):
    def make(n):
        z = rng.standard_normal((n, 16)).astype(np.float32)
        z[rng.random((n, 16)) < 0.7] = 0
        if not signed:
            z = np.abs(z)
        return codes.to_csr(z) if sparse else z

    return {
        "database": codes.CodeSet(make(40), rng.integers(0, 4, 40)),
        "queries": codes.CodeSet(make(10), rng.integers(0, 4, 10)),
        "instance_queries": codes.CodeSet(make(6), np.arange(6)),
    }


@pytest.mark.parametrize("sparse", [True, False])
def test_roundtrip_keeps_negative_entries_and_labels(tmp_path, sparse):
    rng = np.random.default_rng(0)
    sets = make_sets(rng, sparse=sparse)
    codes.save_codes(str(tmp_path), sets, {"step": 7})
    meta, loaded = codes.load_codes(str(tmp_path))
    assert meta["kind"] == ("sparse" if sparse else "dense") and meta["dim"] == 16
    assert meta["step"] == 7
    for name, s in sets.items():
        np.testing.assert_array_equal(loaded[name].dense(), s.dense())
        np.testing.assert_array_equal(loaded[name].labels, s.labels)
        assert loaded[name].is_sparse == sparse
    assert (loaded["database"].dense() < 0).any()
    stats = meta["sets"]["database"]
    ref = metrics.cost_summary(sets["database"].codes)
    assert stats["mean_nonzeros"] == pytest.approx(ref["mean_nonzeros"])
    assert stats["sum_p_squared"] == pytest.approx(ref["sum_p_squared"])
    if sparse:
        assert stats["negative_fraction"] > 0
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_to_csr_keeps_exact_zeros_out_and_negatives_in():
    z = np.array([[0.0, -0.5, 0.25], [0.0, 0.0, 0.0]], np.float32)
    m = codes.to_csr(z)
    assert m.nnz == 2 and m.dtype == np.float32
    np.testing.assert_array_equal(m.toarray(), z)


def test_loader_reports_bad_files(tmp_path):
    rng = np.random.default_rng(1)
    folder = str(tmp_path)
    with pytest.raises(codes.CodesError, match="metadata.json is missing.*--mode=export"):
        codes.load_codes(folder)
    codes.save_codes(folder, make_sets(rng), {})
    # labels that do not match the rows
    np.save(os.path.join(folder, "queries_labels.npy"), np.zeros(3, np.int64))
    with pytest.raises(codes.CodesError, match="3,.*labels for 10 rows"):
        codes.load_set(folder, "queries")
    # a corrupt matrix
    with open(os.path.join(folder, "database.npz"), "wb") as f:
        f.write(b"garbage")
    with pytest.raises(codes.CodesError, match="database.npz is corrupt"):
        codes.load_set(folder, "database")
    # non-finite values
    bad = sp.csr_matrix(np.array([[np.nan] + [0] * 15] * 6, np.float32))
    sp.save_npz(os.path.join(folder, "instance_queries.npz"), bad)
    with pytest.raises(codes.CodesError, match="NaN"):
        codes.load_set(folder, "instance_queries")
    # a dimension that disagrees with the metadata
    meta = json.load(open(os.path.join(folder, "metadata.json")))
    meta["dim"] = 32
    json.dump(meta, open(os.path.join(folder, "metadata.json"), "w"))
    with pytest.raises(codes.CodesError, match=r"metadata says \(n, 32\)"):
        codes.load_set(folder, "instance_queries")
    with pytest.raises(codes.CodesError, match="no set 'train'"):
        codes.load_set(folder, "train")


def test_save_rejects_mismatched_sets(tmp_path):
    a = codes.CodeSet(codes.to_csr(np.eye(3, dtype=np.float32)), np.arange(3))
    b = codes.CodeSet(np.eye(3, 4, dtype=np.float32), np.arange(3))
    with pytest.raises(codes.CodesError, match="different dimensions"):
        codes.save_codes(str(tmp_path), {"database": a, "queries": b}, {})
    with pytest.raises(codes.CodesError, match="3 codes but 2 labels"):
        codes.save_set(str(tmp_path), "database", a.codes, np.arange(2))


def test_instance_regime_labels():
    rng = np.random.default_rng(2)
    sets = make_sets(rng)
    db, q = regimes.instance_regime(sets["database"], sets["queries"], sets["instance_queries"])
    assert db.codes.shape == (50, 16)
    np.testing.assert_array_equal(db.labels, np.arange(50))
    np.testing.assert_array_equal(q.labels, 40 + np.arange(6))
    np.testing.assert_array_equal(db.dense()[40:], sets["queries"].dense())


def test_open_set_regime_searches_the_distractors_then_the_held_out_items():
    rng = np.random.default_rng(3)
    sets = make_sets(rng)
    assert set(regimes.regimes(sets, 0)) == {"class", "instance"}
    sets["distractors"] = codes.CodeSet(codes.to_csr(np.abs(rng.random((70, 16)))), np.zeros(70))
    out = regimes.regimes(sets, 4)
    db, q = out["open_set"]
    assert db.codes.shape == (80, 16)  # 70 distractors, then the 10 held-out originals
    np.testing.assert_array_equal(db.dense()[70:], sets["queries"].dense())
    np.testing.assert_array_equal(q.labels, 70 + np.arange(4))  # each query's own original
    np.testing.assert_array_equal(out["instance"][1].labels, 40 + np.arange(4))


@pytest.mark.parametrize("quantize", [None, 100])
def test_jsonl_roundtrip(tmp_path, quantize):
    rng = np.random.default_rng(3)
    db = make_sets(rng, signed=False)["database"].codes
    path = str(tmp_path / "docs.jsonl")
    codes.to_jsonl(path, db, ids=[f"doc{i}" for i in range(40)], quantize=quantize)
    lines = open(path).read().splitlines()
    assert len(lines) == 40
    first = json.loads(lines[0])
    assert first["id"] == "doc0" and isinstance(first["vector"], dict)
    ids, back = codes.from_jsonl(path, 16)
    assert ids[5] == "doc5"
    if quantize is None:
        np.testing.assert_allclose(back.toarray(), db.toarray(), rtol=1e-6)
    else:
        assert all(float(v).is_integer() for v in back.data)
        expected = np.rint(db.toarray() * quantize / db.data.max())
        np.testing.assert_array_equal(back.toarray(), expected)
        assert back.data.max() == quantize
    with pytest.raises(codes.CodesError, match="positive integer"):
        codes.to_jsonl(path, db, quantize=0)


def test_a_failed_export_leaves_the_previous_one_whole(tmp_path):
    rng = np.random.default_rng(7)
    folder = str(tmp_path / "codes")
    first = make_sets(rng)
    codes.save_codes(folder, first, {"step": 1})

    def fail(tmp_folder):
        raise KeyboardInterrupt  # killed while writing the new export

    with pytest.raises(KeyboardInterrupt):
        codes.save_codes(folder, make_sets(rng), {"step": 2}, extra=fail)
    meta, loaded = codes.load_codes(folder)
    assert meta["step"] == 1
    np.testing.assert_array_equal(
        loaded["database"].codes.toarray(), first["database"].codes.toarray()
    )
    assert os.listdir(tmp_path) == ["codes"]  # no temporary folder left behind
    # a complete re-export replaces every file at once
    second = make_sets(rng)
    codes.save_codes(folder, second, {"step": 2})
    meta, loaded = codes.load_codes(folder)
    assert meta["step"] == 2
    np.testing.assert_array_equal(loaded["queries"].labels, second["queries"].labels)
    assert os.listdir(tmp_path) == ["codes"]


def test_killed_between_the_swap_renames_reads_as_no_export(tmp_path, monkeypatch):
    rng = np.random.default_rng(8)
    folder = str(tmp_path / "codes")
    codes.save_codes(folder, make_sets(rng), {"step": 1})
    real = os.replace

    def replace(src, dst):
        if dst == os.path.abspath(folder):  # the old folder has moved away, the new one not in
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        codes.save_codes(folder, make_sets(rng), {"step": 2})
    monkeypatch.setattr(os, "replace", real)
    with pytest.raises(codes.CodesError, match="export"):
        codes.load_codes(folder)


def test_probe_regime_puts_each_identitys_first_image_among_the_distractors():
    rng = np.random.default_rng(4)
    distractors = codes.CodeSet(codes.to_csr(np.abs(rng.random((30, 16)))), np.full(30, 99))
    probe_labels = np.array([5, 5, 7, 5, 7, 8])  # identity 8 has one image: no query
    probe = codes.CodeSet(codes.to_csr(np.abs(rng.random((6, 16)))), probe_labels)
    db, q = regimes.probe_regime(distractors, probe)
    assert db.codes.shape == (33, 16)  # 30 distractors + mates of 5, 7, 8 (rows 0, 2, 5)
    np.testing.assert_array_equal(db.dense()[30:], probe.dense()[[0, 2, 5]])
    np.testing.assert_array_equal(q.dense(), probe.dense()[[1, 3, 4]])
    np.testing.assert_array_equal(q.labels, [30, 30, 31])  # each query's mate row
    sets = {"database": distractors, "queries": probe}
    assert "probe" not in regimes.regimes(sets, 0)
    assert regimes.regimes(sets, 2, ("probe",))["probe"][1].labels.tolist() == [30, 30]
