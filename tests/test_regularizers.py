import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparse_flops import metrics
from sparse_flops import regularizers as R


def sparse_batch(rng, b, d, density=0.3, signed=False):
    z = rng.standard_normal((b, d)).astype(np.float32)
    if not signed:
        z = np.abs(z)
    return z * (rng.random((b, d)) < density)


@pytest.mark.parametrize("shape", [(1, 5), (7, 3), (64, 128)])
@pytest.mark.parametrize("signed", [False, True])
def test_flops_and_l1_match_numpy(shape, signed):
    rng = np.random.default_rng(0)
    z = sparse_batch(rng, *shape, signed=signed)
    np.testing.assert_allclose(R.flops(z), np.sum(np.mean(np.abs(z), 0) ** 2), rtol=1e-5)
    np.testing.assert_allclose(R.l1(z), np.mean(np.sum(np.abs(z), 1)), rtol=1e-5)
    np.testing.assert_allclose(R.make_penalty("flops")(z), R.flops(z))
    assert float(R.make_penalty("none")(z)) == 0.0
    with pytest.raises(ValueError, match="config.regularizer.name='l2'"):
        R.make_penalty("l2")


def test_flops_gradient_closed_form():
    # d/dz_ij sum_k (mean_i |z_ik|)^2 = 2 mean_i'|z_i'j| sign(z_ij) / B
    rng = np.random.default_rng(1)
    z = rng.standard_normal((16, 10)).astype(np.float32)
    grad = np.asarray(jax.grad(R.flops)(jnp.asarray(z)))
    expected = 2 * np.mean(np.abs(z), 0)[None, :] * np.sign(z) / z.shape[0]
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)
    grad_l1 = np.asarray(jax.grad(R.l1)(jnp.asarray(z)))
    np.testing.assert_allclose(grad_l1, np.sign(z) / z.shape[0], rtol=1e-6)


def test_diagnostics_match_numpy():
    rng = np.random.default_rng(2)
    z = sparse_batch(rng, 50, 40, density=0.2)
    nz = z != 0
    n = nz.sum(0)
    p = nz.mean(0)
    b = z.shape[0]
    np.testing.assert_allclose(R.unbiased_flops(z), np.sum(n * (n - 1)) / (b * (b - 1)), rtol=1e-5)
    # The jnp diagnostics of a batch (jitted, as in the train step) are metrics' one definition.
    stats = jax.jit(R.sparsity_stats)(jnp.asarray(z))
    assert set(stats) == {
        "nonzero_fraction",
        "mean_nonzeros",
        "flops_unbiased",
        "sum_p_squared",
        "r_sub",
    }
    np.testing.assert_allclose(stats["nonzero_fraction"], nz.mean(), rtol=1e-6)
    np.testing.assert_allclose(stats["mean_nonzeros"], nz.sum(1).mean(), rtol=1e-5)
    np.testing.assert_allclose(stats["sum_p_squared"], np.sum(p**2), rtol=1e-5)
    np.testing.assert_allclose(stats["r_sub"], 40 * np.sum(p**2) / p.sum() ** 2, rtol=1e-5)
    numpy_side = metrics.cost_summary(z)
    for key in ("nonzero_fraction", "mean_nonzeros", "sum_p_squared", "r_sub"):
        np.testing.assert_allclose(stats[key], numpy_side[key], rtol=1e-5)


def test_unbiased_estimate_is_unbiased_and_plugin_is_not():
    rng = np.random.default_rng(3)
    d, b = 20, 8
    p = rng.uniform(0.05, 0.6, d)
    truth = np.sum(p**2)
    unbiased, plugin = [], []
    for _ in range(3000):
        z = (rng.random((b, d)) < p).astype(np.float32)
        unbiased.append(float(R.unbiased_flops(z)))
        plugin.append(float(np.sum(z.mean(0) ** 2)))
    se = np.std(unbiased) / np.sqrt(len(unbiased))
    assert abs(np.mean(unbiased) - truth) < 4 * se
    assert np.mean(plugin) - truth > 10 * se  # the plug-in estimate is biased upward


def test_r_sub_is_one_when_spread_evenly_and_large_when_concentrated():
    d = 16
    even = np.eye(d, dtype=np.float32)  # each dimension used by exactly one row
    np.testing.assert_allclose(R.sparsity_stats(even)["r_sub"], 1.0, rtol=1e-6)
    concentrated = np.zeros((16, d), np.float32)
    concentrated[:, 0] = 1.0
    np.testing.assert_allclose(R.sparsity_stats(concentrated)["r_sub"], d, rtol=1e-6)
    assert np.isnan(R.sparsity_stats(jnp.zeros((4, d)))["r_sub"])


def test_per_device_penalty_is_the_workers_average():
    rng = np.random.default_rng(4)
    z = sparse_batch(rng, 32, 12)
    shards = z.reshape(4, 8, 12)
    ref = np.mean([np.sum(np.mean(np.abs(s), 0) ** 2) for s in shards])
    per_worker = R.make_penalty("flops", num_shards=4)
    np.testing.assert_allclose(per_worker(z), ref, rtol=1e-5)
    np.testing.assert_allclose(R.per_device_penalty(R.flops, z, 4), ref, rtol=1e-5)
    # The per-worker FLOPs estimate is biased upward relative to the global one (Jensen).
    assert float(per_worker(z)) >= float(R.flops(z))
    np.testing.assert_allclose(R.make_penalty("l1", 4)(z), R.l1(z), rtol=1e-5)
    with pytest.raises(ValueError, match="divisible"):
        R.make_penalty("flops", 5)(z)


def test_two_sided_penalty_weights_each_side():
    rng = np.random.default_rng(5)
    zq, zd = sparse_batch(rng, 8, 6), sparse_batch(rng, 8, 6)
    got, pq, pd = R.two_sided_penalty(R.flops, zq, zd, query_weight=0.3, database_weight=2.0)
    np.testing.assert_allclose(got, 0.3 * R.flops(zq) + 2.0 * R.flops(zd), rtol=1e-6)
    np.testing.assert_allclose([pq, pd], [R.flops(zq), R.flops(zd)], rtol=1e-6)
    # the per-worker variant passes through
    per_worker = R.make_penalty("flops", 2)
    got, pq, _ = R.two_sided_penalty(per_worker, zq, zd, query_weight=1.0, database_weight=0.0)
    np.testing.assert_allclose(got, R.per_device_penalty(R.flops, zq, 2), rtol=1e-6)


def test_schedules():
    f = R.weight_schedule("quadratic", 10.0, 100)
    for t in [0, 1, 50, 99, 100, 101, 1000]:
        np.testing.assert_allclose(f(t), 10.0 * min(1.0, (t / 100) ** 2), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(f)(jnp.int32(50)), 2.5, rtol=1e-6)
    np.testing.assert_allclose(R.weight_schedule("quadratic", 3.0, 0)(0), 3.0)
    np.testing.assert_allclose(R.weight_schedule("constant", 3.0)(12345), 3.0)
    with pytest.raises(ValueError, match="config.regularizer.schedule"):
        R.weight_schedule("linear", 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        R.weight_schedule("constant", -1.0)
