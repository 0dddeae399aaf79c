import math

import jax
import numpy as np
import pytest

from sparse_flops import losses as L
from sparse_flops.config import base_config


def np_normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def np_ce(logits, labels):
    logits = logits - logits.max(1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return -np.mean(logp[np.arange(len(labels)), labels])


@pytest.fixture
def cos_batch():
    rng = np.random.default_rng(0)
    z = np_normalize(rng.standard_normal((12, 8)))
    w = np_normalize(rng.standard_normal((5, 8)))
    return (z @ w.T).astype(np.float32), rng.integers(0, 5, 12)


def test_norm_softmax(cos_batch):
    c, y = cos_batch
    np.testing.assert_allclose(L.norm_softmax_loss(c, y, scale=16.0), np_ce(16 * c, y), rtol=1e-5)


def test_cosface(cos_batch):
    c, y = cos_batch
    logits = c.copy()
    logits[np.arange(len(y)), y] -= 0.35
    np.testing.assert_allclose(
        L.cosface_loss(c, y, scale=30.0, margin=0.35), np_ce(30 * logits, y), rtol=1e-5
    )


def test_arcface(cos_batch):
    c, y = cos_batch
    s, m = 64.0, 0.5
    logits = c.astype(np.float64).copy()
    for i, yi in enumerate(y):
        theta = math.acos(c[i, yi])
        if theta + m < math.pi:
            logits[i, yi] = math.cos(theta + m)
        else:
            logits[i, yi] = c[i, yi] - m * math.sin(m)
    np.testing.assert_allclose(
        L.arcface_loss(c, y, scale=s, margin=m), np_ce(s * logits, y), rtol=1e-4
    )


def test_arcface_fallback_branch_and_finite_gradient():
    c = np.array([[-0.99, 0.2], [1.0, -1.0]], np.float32)  # theta + m > pi; |cos| = 1
    y = np.array([0, 0])
    loss = L.arcface_loss(c, y, scale=10.0, margin=0.5)
    target0 = -0.99 - 0.5 * math.sin(0.5)
    target1 = math.cos(0.0 + 0.5)
    ref = np_ce(10 * np.array([[target0, 0.2], [target1, -1.0]]), y)
    np.testing.assert_allclose(loss, ref, rtol=1e-4)
    g = jax.grad(lambda c: L.arcface_loss(c, y, scale=10.0, margin=0.5))(c)
    assert np.all(np.isfinite(np.asarray(g)))


def np_triplet_semihard(z, y, margin):
    d = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    losses = []
    for a in range(len(z)):
        negs = [n for n in range(len(z)) if y[n] != y[a]]
        if not negs:
            continue
        for p in range(len(z)):
            if p == a or y[p] != y[a]:
                continue
            semi = [d[a, n] for n in negs if d[a, n] > d[a, p]]
            dn = min(semi) if semi else max(d[a, n] for n in negs)
            losses.append(max(0.0, margin + d[a, p] - dn))
    return np.mean(losses) if losses else 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triplet_semihard_matches_loops(seed):
    rng = np.random.default_rng(seed)
    z = np_normalize(rng.standard_normal((14, 6))).astype(np.float32)
    y = rng.integers(0, 4, 14)
    np.testing.assert_allclose(
        L.triplet_semihard_loss(z, y, margin=0.1),
        np_triplet_semihard(z.astype(np.float64), y, 0.1),
        rtol=1e-4,
        atol=1e-6,
    )


def test_triplet_without_positive_pairs_is_zero():
    z = np_normalize(np.random.default_rng(0).standard_normal((4, 3))).astype(np.float32)
    assert float(L.triplet_semihard_loss(z, np.arange(4), margin=0.1)) == 0.0


def test_ntxent_matches_numpy():
    rng = np.random.default_rng(3)
    a = np_normalize(rng.standard_normal((6, 5))).astype(np.float32)
    b = np_normalize(rng.standard_normal((6, 5))).astype(np.float32)
    t = 0.2
    z = np.concatenate([a, b]).astype(np.float64)
    sim = z @ z.T / t
    total = 0.0
    for i in range(12):
        j = (i + 6) % 12
        others = [k for k in range(12) if k != i]
        total += -(sim[i, j] - np.log(np.sum(np.exp(sim[i, others]))))
    np.testing.assert_allclose(L.ntxent_loss(a, b, temperature=t), total / 12, rtol=1e-5)


def test_registry_binds_config_hparams_into_objectives(cos_batch):
    c, y = cos_batch
    cfg = base_config().loss
    cfg.name, cfg.scale, cfg.margin = "cosface", 2.0, 0.1
    obj = L.make_objective(cfg)
    assert obj.num_views == 1
    z = np.zeros((len(y), 4), np.float32)
    np.testing.assert_allclose(
        obj.fn([(z, c)], y), L.cosface_loss(c, y, scale=2.0, margin=0.1), rtol=1e-6
    )
    cfg.name, cfg.margin = "triplet", 0.2
    zt = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    yt = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_allclose(
        L.make_objective(cfg).fn([(zt, None)], yt),
        L.triplet_semihard_loss(zt, yt, margin=0.2),
        rtol=1e-6,
    )
    cfg.name, cfg.temperature = "ntxent", 0.5
    obj = L.make_objective(cfg)
    za, zb = L.l2_normalize(zt), L.l2_normalize(zt[::-1])
    assert obj.num_views == 2
    np.testing.assert_allclose(
        obj.fn([(za, None), (zb, None)], yt), L.ntxent_loss(za, zb, temperature=0.5), rtol=1e-6
    )
    assert set(L.CLASSIFIER_LOSSES) == {"arcface", "cosface", "norm_softmax"}
    cfg.name = "softmax"
    with pytest.raises(ValueError, match="config.loss.name='softmax'"):
        L.make_objective(cfg)


def test_l2_normalize_keeps_zero_rows_zero():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
    np.testing.assert_allclose(L.l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]])
