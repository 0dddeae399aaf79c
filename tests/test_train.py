import json
import os

import jax
import numpy as np
import pytest
from helpers import assert_trees_equal, params_of, smoke_config

from sparse_flops import checkpoint, config, io_utils, optim, train
from sparse_flops.config import base_config


def test_train_writes_workdir_and_reports_eval(tmp_path):
    c = smoke_config()
    result = train.train_and_evaluate(c, str(tmp_path))
    for key in (
        "precision@1",
        "map",
        "mean_nonzeros",
        "sum_p_squared",
        "r_sub",
        "expected_macs_per_query",
    ):
        assert key in result and np.isfinite(result[key])
    assert json.load(open(tmp_path / "config.json"))["model"]["dim"] == c.model.dim
    records = io_utils.read_jsonl(str(tmp_path / "metrics.jsonl"))
    train_steps = [r["step"] for r in records if "train/loss" in r]
    assert train_steps == [4, 6, 8, 12]  # log points and checkpoint points
    assert [r["step"] for r in records if "eval/map" in r] == [6, 12]
    assert all("steps_per_sec" in r for r in records if "train/loss" in r)
    manager = checkpoint.make_manager(str(tmp_path))
    assert manager.latest_step() == 12
    checkpoint.close(manager)


def test_resume_continues_bit_for_bit(tmp_path):
    full = smoke_config()
    train.train_and_evaluate(full, str(tmp_path / "a"))
    first_half = smoke_config(**{"train.num_steps": 6})
    train.train_and_evaluate(first_half, str(tmp_path / "b"))
    train.train_and_evaluate(full, str(tmp_path / "b"))
    assert_trees_equal(params_of(full, str(tmp_path / "a")), params_of(full, str(tmp_path / "b")))
    records = io_utils.read_jsonl(str(tmp_path / "b" / "metrics.jsonl"))
    assert [r["step"] for r in records if "train/loss" in r] == [4, 6, 8, 12]


def test_finished_run_does_not_train_again(tmp_path):
    c = smoke_config()
    first = train.train_and_evaluate(c, str(tmp_path))
    before = (tmp_path / "metrics.jsonl").read_text()
    ckpts = sorted(os.listdir(tmp_path / "checkpoints"))
    again = train.train_and_evaluate(c, str(tmp_path))
    assert (tmp_path / "metrics.jsonl").read_text() == before
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ckpts
    assert again["map"] == pytest.approx(first["map"])


def test_nonfinite_loss_stops_naming_the_step_and_keeps_last_checkpoint(tmp_path):
    c = smoke_config(**{"train.num_steps": 4, "train.checkpoint_every": 4})
    train.train_and_evaluate(c, str(tmp_path))
    good = params_of(c, str(tmp_path))
    bad = smoke_config(**{"train.num_steps": 12, "optimizer.learning_rate": 1e30})
    with pytest.raises(FloatingPointError, match=r"at step (6|7|8)\b"):
        train.train_and_evaluate(bad, str(tmp_path))
    manager = checkpoint.make_manager(str(tmp_path))
    assert manager.latest_step() == 4
    checkpoint.close(manager)
    assert_trees_equal(params_of(c, str(tmp_path)), good)


@pytest.mark.parametrize("loss", ["arcface", "cosface", "norm_softmax", "triplet", "ntxent"])
def test_every_loss_trains(tmp_path, loss):
    c = smoke_config(
        **{
            "loss.name": loss,
            "loss.margin": 0.2,
            "train.num_steps": 4,
            "train.eval_every": 4,
            "train.checkpoint_every": 4,
            "augment.noise": 0.05,
        }
    )
    if loss == "ntxent":
        c.regularizer.query_weight = 0.5
    result = train.train_and_evaluate(c, str(tmp_path))
    rec = [r for r in io_utils.read_jsonl(str(tmp_path / "metrics.jsonl")) if "train/loss" in r]
    assert np.isfinite(rec[-1]["train/loss"]) and np.isfinite(result["map"])


def test_flops_penalty_makes_codes_sparser_than_no_penalty(tmp_path):
    kw = {
        "train.num_steps": 60,
        "train.eval_every": 60,
        "train.checkpoint_every": 60,
        "train.log_every": 60,
        "regularizer.warmup_steps": 10,
        "optimizer.learning_rate": 3e-3,
    }
    dense = train.train_and_evaluate(
        smoke_config(**kw, **{"regularizer.name": "none"}), str(tmp_path / "none")
    )
    sparse = train.train_and_evaluate(
        smoke_config(**kw, **{"regularizer.weight": 30.0}), str(tmp_path / "flops")
    )
    assert sparse["mean_nonzeros"] < 0.5 * dense["mean_nonzeros"]


def test_resume_with_another_optimizer_fails_clearly(tmp_path):
    c = smoke_config(**{"train.num_steps": 4, "train.checkpoint_every": 4})
    train.train_and_evaluate(c, str(tmp_path))
    other = smoke_config(**{"train.num_steps": 8, "optimizer.name": "sgd"})
    with pytest.raises(ValueError, match="does not fit the model or optimiser"):
        train.train_and_evaluate(other, str(tmp_path))


def test_query_weight_only_for_two_sided_losses(tmp_path):
    c = smoke_config(**{"regularizer.query_weight": 1.0})
    with pytest.raises(ValueError, match="query_weight applies only"):
        train.train_and_evaluate(c, str(tmp_path))


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("loss.name", "softmax", "config.loss.name"),
        ("regularizer.name", "l2", "config.regularizer.name"),
        ("optimizer.name", "lamb", "config.optimizer.name"),
        ("optimizer.lr_schedule", "linear", "config.optimizer.lr_schedule"),
        ("train.batch_size", 0, "config.train.batch_size"),
        ("train.compute_dtype", "float16", "config.train.compute_dtype"),
        ("train.max_checkpoints", 0, "config.train.max_checkpoints"),
        ("seed", -1, "config.seed"),
        ("eval.batch_size", 0, "config.eval.batch_size"),
        ("loss.temperature", 0.0, "config.loss.temperature"),
        ("regularizer.warmup_steps", -5, "config.regularizer.warmup_steps"),
        ("regularizer.on", "logits", "config.regularizer.on"),
        ("mesh.data", 0, "config.mesh.data"),
    ],
)
def test_bad_config_values_are_named(tmp_path, key, value, match):
    with pytest.raises(ValueError, match=match):
        config.validate(smoke_config(**{key: value}))
    with pytest.raises(ValueError, match=match):
        train.train_and_evaluate(smoke_config(**{key: value}), str(tmp_path))
    assert not os.path.exists(tmp_path / "checkpoints")


def test_logged_train_metrics_are_interval_means(tmp_path):
    every = smoke_config(**{"train.log_every": 1, "train.num_steps": 4})
    train.train_and_evaluate(every, str(tmp_path / "every"))
    grouped = smoke_config(**{"train.log_every": 4, "train.num_steps": 4})
    train.train_and_evaluate(grouped, str(tmp_path / "grouped"))
    per_step = [
        r
        for r in io_utils.read_jsonl(str(tmp_path / "every" / "metrics.jsonl"))
        if "train/loss" in r
    ]
    (record,) = [
        r
        for r in io_utils.read_jsonl(str(tmp_path / "grouped" / "metrics.jsonl"))
        if "train/loss" in r
    ]
    assert [r["step"] for r in per_step] == [1, 2, 3, 4] and record["step"] == 4
    for key in ("train/loss", "train/penalty", "train/mean_nonzeros", "train/penalty_weight"):
        assert record[key] == pytest.approx(np.mean([r[key] for r in per_step]), rel=1e-6)
    assert record["train/loss"] != pytest.approx(per_step[-1]["train/loss"])


def test_lr_schedules():
    oc = base_config().optimizer
    oc.learning_rate = 0.1
    oc.lr_schedule = "step"
    oc.decay_boundaries = (10, 20)
    f = optim.make_lr_schedule(oc, 30)
    assert [float(f(s)) for s in (0, 9, 10, 19, 20, 29)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )
    oc.lr_schedule = "cosine"
    oc.warmup_steps = 10
    f = optim.make_lr_schedule(oc, 110)
    assert float(f(0)) == 0.0 and float(f(5)) == pytest.approx(0.05)
    assert float(f(10)) == pytest.approx(0.1) and float(f(110)) == pytest.approx(0.0, abs=1e-7)


def test_bfloat16_compute_keeps_float32_params(tmp_path):
    c = smoke_config(
        **{
            "train.compute_dtype": "bfloat16",
            "train.num_steps": 4,
            "train.eval_every": 4,
            "train.checkpoint_every": 4,
        }
    )
    result = train.train_and_evaluate(c, str(tmp_path))
    assert np.isfinite(result["map"])
    state, _, _ = train.load_trained_state(c, str(tmp_path))
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {np.dtype("float32")}


def test_relaunch_that_cannot_restore_changes_nothing(tmp_path):
    c = smoke_config(**{"train.num_steps": 4, "train.checkpoint_every": 4})
    train.train_and_evaluate(c, str(tmp_path))
    before = {p: (tmp_path / p).read_bytes() for p in ("config.json", "metrics.jsonl")}
    other = smoke_config(**{"train.num_steps": 8, "model.dim": 64})
    with pytest.raises(ValueError, match="restores"):
        train.train_and_evaluate(other, str(tmp_path))
    assert {p: (tmp_path / p).read_bytes() for p in before} == before


def test_damaged_latest_checkpoint_falls_back_to_an_older_one(tmp_path, caplog):
    c = smoke_config(**{"train.num_steps": 8, "train.checkpoint_every": 4})
    train.train_and_evaluate(c, str(tmp_path))
    # damage every file of the newest checkpoint (step 8)
    for root, _, files in os.walk(tmp_path / "checkpoints" / "8"):
        for f in files:
            with open(os.path.join(root, f), "wb") as fh:
                fh.write(b"garbage")
    longer = smoke_config(**{"train.num_steps": 12, "train.checkpoint_every": 4})
    with caplog.at_level("WARNING"):
        train.train_and_evaluate(longer, str(tmp_path))
    assert "checkpoint 8" in caplog.text and "resuming from checkpoint 4" in caplog.text
    straight = smoke_config(**{"train.num_steps": 12, "train.checkpoint_every": 4})
    train.train_and_evaluate(straight, str(tmp_path / "straight"))
    assert_trees_equal(
        params_of(longer, str(tmp_path)), params_of(straight, str(tmp_path / "straight"))
    )


def test_one_writer_per_workdir(tmp_path):
    with io_utils.WorkdirLock(str(tmp_path)):
        with pytest.raises(RuntimeError, match="in use by another run"):
            train.train_and_evaluate(smoke_config(), str(tmp_path))
    assert not os.path.exists(tmp_path / "checkpoints")
    # released on exit (and by the kernel when a holder dies): the run goes ahead
    train.train_and_evaluate(smoke_config(**{"train.num_steps": 4}), str(tmp_path))


def test_no_evaluation_or_checkpoint_of_a_diverged_model(tmp_path):
    # evaluation every 3 steps, logs and checkpoints rarely: the pending steps are still
    # checked before each evaluation, so a NaN model is never evaluated or saved
    bad = smoke_config(
        **{
            "train.num_steps": 12,
            "train.log_every": 100,
            "train.checkpoint_every": 100,
            "train.eval_every": 3,
            "optimizer.learning_rate": 1e30,
        }
    )
    with pytest.raises(FloatingPointError, match="non-finite"):
        train.train_and_evaluate(bad, str(tmp_path))
    records = io_utils.read_jsonl(str(tmp_path / "metrics.jsonl"))
    for r in records:
        assert all(np.isfinite(v) for k, v in r.items() if k.startswith("eval/")), r
    assert not os.path.exists(tmp_path / "checkpoints") or not os.listdir(tmp_path / "checkpoints")


def test_penalty_on_activations_sees_the_head_before_normalisation():
    """``regularizer.on``: the same step penalises the unit-norm codes or the raw activations;
    each equals the FLOPs of what the model produced, and the gradients differ."""
    import functools

    import jax.numpy as jnp
    import optax

    from sparse_flops import losses, models, regularizers

    c = smoke_config(**{"model.batch_norm_scale": False})
    model = models.build_model(c.model, num_classes=10)
    tx = optax.adam(1e-3)
    x = np.random.default_rng(0).standard_normal((16, c.data.synthetic.features)).astype(np.float32)
    y = np.arange(16) % 10
    state = train.create_train_state(model, tx, x[:1], seed=0)
    (z, _), inter = model.apply(
        {"params": state.params, "batch_stats": state.batch_stats},
        jnp.asarray(x),
        train=True,
        rngs={"dropout": jax.random.key(0)},
        mutable=["batch_stats", "intermediates"],
    )
    (a,) = inter["intermediates"]["head"][models.ACTIVATIONS_KEY]
    step = functools.partial(
        train.loss_and_grads,
        state.params,
        state,
        (jnp.asarray(x), jnp.asarray(y)),
        model=model,
        objective=losses.make_objective(c.loss),
        penalty_fn=regularizers.flops,
        weight_fn=lambda s: jnp.float32(1.0),
        query_weight_scale=1.0,
        augment_fn=lambda k, v: v,
    )
    (_, (on_codes, _, _)), g_codes = step(penalty_on="codes")
    (_, (on_act, _, _)), g_act = step(penalty_on="activations")
    np.testing.assert_allclose(on_codes["penalty"], regularizers.flops(z), rtol=1e-5)
    np.testing.assert_allclose(on_act["penalty"], regularizers.flops(a), rtol=1e-5)
    assert float(on_act["penalty"]) > 10 * float(on_codes["penalty"])  # unit-variance units
    g1 = g_codes["params"] if "params" in g_codes else g_codes
    g2 = g_act["params"] if "params" in g_act else g_act
    diff = jax.tree_util.tree_map(lambda p, q: float(jnp.max(jnp.abs(p - q))), g1, g2)
    assert max(jax.tree_util.tree_leaves(diff)) > 1e-4


def test_instance_evaluation_asks_for_each_views_own_original(tmp_path):
    kw = {"train.num_steps": 4, "train.eval_every": 4, "eval.regime": "instance"}
    kw["eval.num_queries"] = 50
    clean = dict(shift=0, flip=False, contrast=0.0, noise=0.0)
    same = train.train_and_evaluate(
        smoke_config(**kw, **{"export.instance_augment": clean}), str(tmp_path / "a")
    )
    assert same["recall@1"] == 1.0  # an unaugmented view finds its own original first
    noisy = train.train_and_evaluate(
        smoke_config(**kw, **{"export.instance_augment": {**clean, "noise": 3.0}}),
        str(tmp_path / "b"),
    )
    assert 0.0 <= noisy["recall@1"] < 1.0 and noisy["recall@10"] >= noisy["recall@1"]
    with pytest.raises(ValueError, match="config.eval.regime"):
        config.validate(smoke_config(**{"eval.regime": "faces"}))


def test_kernel_decay_reaches_kernels_only_at_each_parts_rate():
    import jax.numpy as jnp

    params = {
        "backbone": {"Conv_0": {"kernel": jnp.ones((3, 3)), "bias": jnp.ones(3)}},
        "head": {"Dense_0": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}},
    }
    masks = optim.kernel_mask(params, head=True), optim.kernel_mask(params, head=False)
    assert masks[0]["head"]["Dense_0"] == {"kernel": True, "bias": False}
    assert masks[0]["backbone"]["Conv_0"] == {"kernel": False, "bias": False}
    assert masks[1]["backbone"]["Conv_0"] == {"kernel": True, "bias": False}
    c = base_config().optimizer
    c.name, c.lr_schedule, c.learning_rate = "sgd", "constant", 1.0
    c.momentum, c.kernel_decay, c.head_kernel_decay = 0.0, 1e-4, 1e-3
    tx = optim.make_optimizer(c, 10)
    zero = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    # With zero gradients the step is the L2 term alone: -rate * w on kernels, 0 on biases.
    np.testing.assert_allclose(updates["backbone"]["Conv_0"]["kernel"], -1e-4)
    np.testing.assert_allclose(updates["head"]["Dense_0"]["kernel"], -1e-3)
    assert not np.any(updates["backbone"]["Conv_0"]["bias"])
    assert not np.any(updates["head"]["Dense_0"]["bias"])
    c.adam_eps = 0.0
    with pytest.raises(ValueError, match="adam_eps"):
        optim.make_optimizer(c, 10)


def test_cifar100_config_as_the_authors_ran_it_trains_on_fake_pickles(tmp_path):
    from helpers import write_fake_cifar100

    from experiments import cifar100

    c = cifar100.get_config("smoke")
    c.data.dir = write_fake_cifar100(str(tmp_path / "data"), n_train=64, n_test=32)
    c.train.num_steps = 2
    c.train.eval_every = 2
    c.eval.num_queries = 0
    out = train.train_and_evaluate(c, str(tmp_path / "w"))
    assert set(out) >= {"precision@1", "precision@4", "precision@16", "mean_nonzeros"}
    state, _, _ = train.load_trained_state(c, str(tmp_path / "w"))
    assert not jax.tree_util.tree_leaves(state.batch_stats)  # no BatchNorm anywhere
