import json
import os

import ml_collections
import pytest
from helpers import write_fake_fashion_mnist

from experiments import study_fashion_mnist
from sparse_flops import sweep


def shrink(c, tmp_path, n_train, n_test, steps):
    """A sweep config ``c`` on fake Fashion-MNIST files, each member ``steps`` steps long."""
    c.data.dir = write_fake_fashion_mnist(str(tmp_path / "data"), n_train=n_train, n_test=n_test)
    c.data.validation_size = 100
    c.train.num_steps = c.train.eval_every = c.train.checkpoint_every = steps
    return c


def test_parse_family_splits_fixed_words_from_grid_axes():
    fixed, grid = sweep.parse_family("regularizer.name=l1 regularizer.weight=0.1|1 model.dim=64")
    assert fixed == {"regularizer.name": "l1", "model.dim": 64}
    assert grid == {"regularizer.weight": [0.1, 1]}
    with pytest.raises(ValueError, match="not key=value"):
        sweep.parse_family("regularizer.weight")


def test_set_key_refuses_unknown_keys_and_wrong_types():
    c = study_fashion_mnist.get_config("smoke")
    sweep.set_key(c, "model.dim", 32)
    assert c.model.dim == 32
    with pytest.raises(ValueError, match="no key 'model.dimm'"):
        sweep.set_key(c, "model.dimm", 3)
    with pytest.raises(ValueError, match="no section 'modle'"):
        sweep.set_key(c, "modle.dim", 3)
    with pytest.raises(ValueError, match="model.dim"):
        sweep.set_key(c, "model.dim", "wide")


def test_members_are_seed_major_with_the_reference_first():
    c = study_fashion_mnist.get_config("smoke")
    ms = sweep.members(c)
    names = [m.name for m in ms]
    assert names[0] == "dense-dim64-seed0"
    assert names[len(names) // 2] == "dense-dim64-seed1"
    assert [m.seed for m in ms] == sorted(m.seed for m in ms)
    flops = [m for m in ms if m.family == "flops" and m.seed == 1]
    assert [m.config.regularizer.weight for m in flops] == [0.5, 5.0]
    assert all(m.config.seed == 1 for m in flops)
    assert not any(m.sparse for m in ms if m.family == "dense")
    assert len(names) == len(set(names)) == 2 * (2 + 2 + 1)
    # Members are locked: a misspelt key in later code fails instead of adding a key.
    with pytest.raises(AttributeError):
        ms[0].config.model.dimm = 3


def test_bad_sweep_sections_are_refused_with_the_key_named():
    c = study_fashion_mnist.get_config("smoke")
    c.sweep.only = ("flop",)
    with pytest.raises(ValueError, match="sweep.only"):
        sweep.validate(c)
    c = study_fashion_mnist.get_config("smoke")
    c.sweep.families.l1 = "regularizer.name=l2"
    with pytest.raises(ValueError, match="sweep member l1-seed0: config.regularizer.name"):
        sweep.validate(c)
    c = study_fashion_mnist.get_config("smoke")
    c.sweep.reference = "flops-weight0.5"
    with pytest.raises(ValueError, match="must name a dense member"):
        sweep.validate(c)
    c.sweep.reference = "dense-dim65"
    with pytest.raises(ValueError, match="is no member of the sweep"):
        sweep.validate(c)
    with pytest.raises(ValueError, match="needs a sweep config"):
        sweep.validate(ml_collections.ConfigDict({"seed": 0}))


@pytest.mark.slow
def test_sweep_runs_skips_finished_members_and_refuses_a_changed_one(tmp_path):
    c = shrink(study_fashion_mnist.get_config("smoke"), tmp_path, 400, 120, steps=4)
    c.sweep.families = ml_collections.ConfigDict(
        dict(
            dense="model.activation=none regularizer.name=none regularizer.weight=0.0 "
            "model.dim=64",  # one value: no grid axis, the name is the family's
            flops="regularizer.name=flops regularizer.weight=0.5|5.0",
        )
    )
    c.sweep.seeds = (0,)
    c.sweep.reference = "dense"
    c.sweep.record_dir = str(tmp_path / "records")
    workdir = str(tmp_path / "sweep")
    out = sweep.run(c, workdir)
    assert [m["name"] for m in out["members"]] == [
        "dense-seed0",
        "flops-weight0.5-seed0",
        "flops-weight5.0-seed0",
    ]
    assert out["missing"] == []
    ref, flops = out["members"][0], out["members"][1]
    # The reference carries the compact-code baselines, the sparse members the two-stage rows
    # re-ranked by the reference; all rows are on the test split, validation is separate.
    assert {r["method"] for r in ref["rows"]} == {
        "dense exact (BLAS)",
        "PCA + exact",
        "LSH (Hamming)",
        "PQ (faiss)",
        "IVF-PQ (faiss)",
    }
    two_stage = [r for r in flops["rows"] if r["method"].startswith("two-stage")]
    assert two_stage and all("dense-seed0" in r["setting"] for r in two_stage)
    assert flops["reference"] == "dense-seed0"
    assert flops["eval_split"] == "validation" and "precision@1" in flops["validation"]
    assert {r["regime"] for r in flops["rows"]} == {"class", "instance"}
    assert sorted(os.listdir(tmp_path / "records")) == sorted(
        [f"{m['name']}.json" for m in out["members"]] + ["sweep.json"]
    )
    # A second run finds every member finished (here or in the records) and trains nothing.
    stamp = os.path.getmtime(os.path.join(workdir, "flops-weight5.0-seed0", "member.json"))
    again = sweep.run(c, workdir)
    assert [m["name"] for m in again["members"]] == [m["name"] for m in out["members"]]
    assert os.path.getmtime(os.path.join(workdir, "flops-weight5.0-seed0", "member.json")) == stamp
    # A record survives its run folder: the member still counts as finished.
    os.remove(os.path.join(workdir, "flops-weight5.0-seed0", "member.json"))
    assert sweep.collect(c, workdir)["missing"] == []
    # Collecting over more seeds than this part ran (what --mode=collect does after a sweep
    # run one seed at a time) keeps every finished member and lists the rest as missing.
    c.sweep.seeds = (0, 1)
    both = sweep.collect(c, workdir)
    assert len(both["members"]) == 3 and both["seeds"] == [0, 1]
    assert both["missing"] == ["dense-seed1", "flops-weight0.5-seed1", "flops-weight5.0-seed1"]
    c.sweep.seeds = (0,)
    # Changing a finished member's config is refused, naming the member.
    c.train.num_steps = 6
    with pytest.raises(ValueError, match="another config than sweep member dense-seed0"):
        sweep.run(c, workdir)
    with open(os.path.join(workdir, "sweep.json")) as f:
        assert len(json.load(f)["members"]) == 3


def test_a_tuning_sweep_trains_and_records_validation_only(tmp_path):
    from experiments import tune_fashion_mnist

    c = shrink(tune_fashion_mnist.get_config("smoke"), tmp_path, 300, 60, steps=2)
    c.sweep.families = ml_collections.ConfigDict(
        dict(
            act="regularizer.on=activations model.batch_norm_scale=False "
            "regularizer.name=flops regularizer.weight=0.1|1.0"
        )
    )
    c.sweep.record_dir = str(tmp_path / "records")
    out = sweep.run(c, str(tmp_path / "tune"))
    assert [m["name"] for m in out["members"]] == ["act-weight0.1-seed0", "act-weight1.0-seed0"]
    for m in out["members"]:
        assert m["rows"] == [] and m["seconds"]["benchmark"] < 1.0
        assert m["eval_split"] == "validation" and 0 <= m["validation"]["precision@1"] <= 1
        assert m["config"]["regularizer"]["on"] == "activations"
        # Nothing was exported: no test-split codes exist for a tuning member.
        assert not os.path.exists(tmp_path / "tune" / m["name"] / "codes")
    # A train-only record does not depend on the benchmark settings it never used; it does on
    # training's.
    c.benchmark.timing_queries = 50
    assert len(sweep.collect(c, str(tmp_path / "tune"))["members"]) == 2
    # A record made before a key joined the schema (the key's default keeps the old
    # behaviour) still counts; a record with a key the schema no longer has does not.
    path = tmp_path / "tune" / "act-weight0.1-seed0" / "member.json"
    record = json.loads(path.read_text())
    del record["config"]["eval"]["regime"]
    path.write_text(json.dumps(record))
    assert len(sweep.collect(c, str(tmp_path / "tune"))["members"]) == 2
    record["config"]["eval"]["gone"] = 1
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="another config than sweep member act-weight0.1"):
        sweep.collect(c, str(tmp_path / "tune"))
    del record["config"]["eval"]["gone"]
    path.write_text(json.dumps(record))
    c.optimizer.learning_rate = 0.01
    with pytest.raises(ValueError, match="another config"):
        sweep.collect(c, str(tmp_path / "tune"))
    c.sweep.stages = ("train", "benchmark")
    with pytest.raises(ValueError, match="config.sweep.stages"):
        sweep.validate(c)


@pytest.mark.slow
def test_open_set_sweep_smoke_trains_ntxent_and_benchmarks_among_distractors(tmp_path):
    from experiments import open_set_fashion_mnist

    c = shrink(open_set_fashion_mnist.get_config("smoke"), tmp_path, 400, 100, steps=4)
    out = sweep.run(c, str(tmp_path / "open"))
    assert [m["name"] for m in out["members"]] == ["dense-seed0", "flops-seed0"]
    for m in out["members"]:
        assert m["config"]["loss"]["name"] == "ntxent"
        assert "recall@1" in m["validation"]  # instance validation
        assert {r["regime"] for r in m["rows"]} == {"open_set"}
        # 2,000 distractors followed by the 100 test originals; 32 queries
        assert {(r["n"], r["queries"]) for r in m["rows"]} == {(2100, 32)}
    flops = out["members"][1]
    assert any(r["method"].startswith("two-stage") for r in flops["rows"])


def test_open_set_sweep_reports_class_trained_models_beside_the_ntxent_ones():
    from experiments import open_set_fashion_mnist

    by = {m.name: m.config for m in sweep.members(open_set_fashion_mnist.get_config())}
    assert by["flops-weight0.1-seed0"].loss.name == "ntxent"
    cls = by["cls_flops-seed0"]
    assert (cls.loss.name, cls.augment.flip, cls.augment.contrast) == ("norm_softmax", True, 0.0)
    assert (
        by["cls_dense-seed0"].model.dim == 128 and by["cls_dense-seed0"].model.activation == "none"
    )
    assert {m.seed for m in sweep.members(open_set_fashion_mnist.get_config())} == {0, 1, 2}
