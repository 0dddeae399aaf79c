import functools

import jax
import numpy as np
import pytest
from helpers import assert_trees_equal, params_of, smoke_config
from jax.sharding import NamedSharding

from sparse_flops import data, evaluation, sharding, train


@pytest.fixture(scope="module", autouse=True)
def four_devices():
    if jax.device_count() < 4:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=4 (see conftest)")


def one_step(num_devices, penalty, per_device=False, fsdp=False):
    c = smoke_config(
        **{
            "mesh.data": num_devices,
            "regularizer.name": penalty,
            "regularizer.per_device": per_device,
            "regularizer.schedule": "constant",
            "regularizer.weight": 3.0,
            "train.batch_size": 32,
            "mesh.param_sharding": "fsdp" if fsdp else "replicated",
        }
    )
    splits = data.load_splits(c.data)
    setup = train.build(c, splits)
    state = setup.init_fn(splits["train"].inputs[:1])
    batch = setup.put_batch(data.Batcher(splits["train"], 32, c.seed).batch(0))
    grads_fn = jax.jit(functools.partial(train.loss_and_grads, **setup.step_kwargs))
    (loss, (parts, z, _)), grads = grads_fn(state.params, state, batch)
    task, pen = parts["task_loss"], parts["penalty"]
    out = jax.tree.map(
        np.asarray, {"loss": loss, "task": task, "penalty": pen, "z": z, "grads": grads}
    )
    new_state, metrics = setup.step_fn(state, batch)
    out["params"] = jax.tree.map(np.asarray, new_state.params)
    out["metrics"] = jax.tree.map(np.asarray, metrics)
    out["state"] = new_state
    return out


def assert_close(a, b, rtol=1e-5, scale_atol=3e-5, atol=0.0):
    """float32 agreement: relative, plus an absolute slack scaled by each array's magnitude
    (reductions over the batch run in another order on 4 devices), or ``atol`` if larger."""
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        scaled = scale_atol * float(np.max(np.abs(y))) if np.size(y) else 0.0
        atol = max(atol, scaled)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


@pytest.mark.parametrize("penalty", ["flops", "l1"])
def test_one_step_on_four_devices_equals_one_device(penalty):
    one, four = one_step(1, penalty), one_step(4, penalty)
    assert len(four["state"].params["head"]["Dense_0"]["kernel"].sharding.device_set) == 4
    for key in ("loss", "task", "penalty", "z", "grads", "params", "metrics"):
        assert_close(one[key], four[key])
    assert float(one["penalty"]) > 0


def test_per_device_switch_computes_the_original_estimate():
    glob = one_step(4, "flops")
    local = one_step(4, "flops", per_device=True)
    z = local["z"].astype(np.float64)
    shards = z.reshape(4, 8, -1)  # device i holds rows 8i .. 8i+7 of the global batch
    reference = np.mean([np.sum(np.mean(np.abs(s), axis=0) ** 2) for s in shards])
    np.testing.assert_allclose(local["penalty"], reference, rtol=1e-5)
    np.testing.assert_allclose(glob["penalty"], np.sum(np.mean(np.abs(z), 0) ** 2), rtol=1e-5)
    assert float(local["penalty"]) > float(glob["penalty"])  # biased upward
    assert not np.allclose(
        local["grads"]["head"]["Dense_0"]["kernel"], glob["grads"]["head"]["Dense_0"]["kernel"]
    )
    # on one device the switch changes nothing
    assert_close(one_step(1, "flops", per_device=True)["penalty"], one_step(1, "flops")["penalty"])


def test_fsdp_shards_large_arrays_and_matches_replicated():
    rep, fsdp = one_step(4, "flops"), one_step(4, "flops", fsdp=True)
    kernel = fsdp["state"].params["head"]["Dense_0"]["kernel"]
    assert isinstance(kernel.sharding, NamedSharding)
    assert sharding.DATA in tuple(kernel.sharding.spec)
    assert kernel.addressable_shards[0].data.size == kernel.size // 4
    assert_close(rep["grads"], fsdp["grads"])
    assert_close(rep["loss"], fsdp["loss"])
    # Split matmuls sum in another order; Adam's normalised update m / sqrt(v) turns that
    # rounding on near-zero gradients into up to a few percent of one lr-sized step.
    assert_close(rep["params"], fsdp["params"], scale_atol=1e-4)


def test_sharded_fsdp_run_resumes_bit_for_bit(tmp_path):
    kw = {"mesh.param_sharding": "fsdp", "mesh.data": 4}
    full = smoke_config(**kw)
    train.train_and_evaluate(full, str(tmp_path / "a"))
    train.train_and_evaluate(smoke_config(**kw, **{"train.num_steps": 6}), str(tmp_path / "b"))
    train.train_and_evaluate(full, str(tmp_path / "b"))
    assert_trees_equal(params_of(full, str(tmp_path / "a")), params_of(full, str(tmp_path / "b")))


def test_mesh_and_batch_errors():
    c = smoke_config(**{"mesh.data": 16})
    with pytest.raises(ValueError, match="config.mesh.data=16"):
        sharding.make_mesh(c.mesh)
    c = smoke_config(**{"mesh.data": 4, "train.batch_size": 30})
    with pytest.raises(ValueError, match="batch_size=30 is not divisible by the 4 devices"):
        train.build(c, data.load_splits(c.data))
    c = smoke_config(**{"mesh.param_sharding": "tp"})
    with pytest.raises(ValueError, match="param_sharding"):
        sharding.make_mesh(c.mesh)
    with pytest.raises(ValueError, match="together"):
        sharding.initialize_distributed(coordinator_address="localhost:1234")


def test_fashion_mnist_on_four_devices_matches_one(tmp_path):
    """The Fashion-MNIST experiment (smoke size, IDX files) trained with --config.mesh.data=4
    computes what the 1-device run computes. One step agrees to float32 rounding (tests above);
    over a run, Adam turns rounding on near-zero gradients (parameters that BatchNorm nearly
    cancels) into small parameter differences, so the run is compared by what it computes."""
    from helpers import write_fake_fashion_mnist

    from experiments import fashion_mnist

    folder = write_fake_fashion_mnist(str(tmp_path / "fm"), n_train=600, n_test=200)
    results, codes = {}, {}
    for n in (1, 4):
        c = fashion_mnist.get_config("smoke")
        c.data.dir = folder
        c.mesh.data = n
        results[n] = train.train_and_evaluate(c, str(tmp_path / f"d{n}"))
        state, embed_fn, splits = train.load_trained_state(c, str(tmp_path / f"d{n}"))
        assert int(state.step) == 12
        codes[n] = evaluation.embed_split(embed_fn, state, splits["test"], 128)
    assert np.mean(np.abs(codes[4] - codes[1])) < 0.01
    assert np.mean((codes[4] != 0) == (codes[1] != 0)) > 0.95
    for key in ("precision@1", "map"):
        assert results[4][key] == pytest.approx(results[1][key], abs=0.02)
    assert results[4]["mean_nonzeros"] == pytest.approx(results[1]["mean_nonzeros"], rel=0.02)
