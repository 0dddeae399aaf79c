import jax
import ml_collections
import numpy as np
import pytest

from sparse_flops import models


def init_apply(module, x, **kw):
    variables = module.init(
        {"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, train=False, **kw
    )
    out, _ = module.apply(
        variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)}, **kw
    )
    return variables, out


def test_soft_threshold_matches_numpy():
    x = np.linspace(-2, 2, 41).astype(np.float32)
    ref = np.sign(x) * np.maximum(np.abs(x) - 0.5, 0)
    np.testing.assert_allclose(models.soft_threshold(x, 0.5), ref, atol=1e-7)


@pytest.mark.parametrize("act", ["relu", "soft_threshold", "none"])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_sparse_head(act, batch_norm):
    x = np.random.default_rng(0).standard_normal((32, 20)).astype(np.float32)
    head = models.SparseHead(dim=64, activation=act, threshold=0.5, batch_norm=batch_norm)
    variables, z = init_apply(head, x)
    z = np.asarray(z)
    assert z.shape == (32, 64)
    norms = np.linalg.norm(z, axis=1)
    np.testing.assert_allclose(norms[norms > 0], 1.0, rtol=1e-5)
    assert ("batch_stats" in variables) == batch_norm
    if act == "relu":
        assert z.min() >= 0 and (z == 0).any()
    elif act == "soft_threshold":
        assert z.min() < 0 and (z == 0).any()
    else:
        assert (z != 0).all()


@pytest.mark.parametrize(
    "name,shape",
    [
        ("mlp", (4, 10)),
        ("small_convnet", (4, 28, 28, 1)),
        ("cifar_convnet", (2, 32, 32, 3)),
        ("resnet18", (2, 32, 32, 3)),
        ("resnet50", (2, 64, 64, 3)),
    ],
)
def test_backbones_give_feature_vectors(name, shape):
    kwargs = {
        "cifar_convnet": {"channels": 16},
        "resnet18": {"width": 8, "small_images": True},
        "resnet50": {"width": 8},
    }.get(name, {})
    net = models.make_backbone(name, **kwargs)
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    _, y = init_apply(net, x)
    assert y.ndim == 2 and y.shape[0] == shape[0] and np.all(np.isfinite(np.asarray(y)))


def test_unknown_backbone_and_activation():
    with pytest.raises(ValueError, match="unknown backbone"):
        models.make_backbone("vgg")
    with pytest.raises(ValueError, match="unknown activation"):
        models.activation("gelu", np.zeros(3))


def model_config(**kw):
    c = ml_collections.ConfigDict(
        dict(
            backbone="mlp",
            backbone_kwargs={"hidden": (16,)},
            dim=32,
            activation="relu",
            threshold=0.0,
            batch_norm=True,
            batch_norm_scale=True,
        )
    )
    c.update(kw)
    return c


def test_build_model_with_classifier():
    model = models.build_model(model_config(), num_classes=7)
    x = np.random.default_rng(0).random((5, 10)).astype(np.float32)
    variables, (z, cosine) = init_apply(model, x)
    assert z.shape == (5, 32) and cosine.shape == (5, 7)
    assert np.all(np.abs(np.asarray(cosine)) <= 1 + 1e-5)
    emb = model.apply(variables, x, method=model.embed)
    assert emb.shape == (5, 32)


def test_build_model_rejects_bad_config():
    with pytest.raises(ValueError, match="config.model.activation"):
        models.build_model(model_config(activation="tanh"), 0)
    with pytest.raises(ValueError, match="config.model.dim"):
        models.build_model(model_config(dim=0), 0)


def test_head_sows_its_activations_before_normalisation_and_can_drop_the_bn_scale():
    x = np.random.default_rng(0).standard_normal((32, 20)).astype(np.float32)
    head = models.SparseHead(dim=48, batch_norm_scale=False)
    variables = head.init({"params": jax.random.key(0)}, x, train=False)
    bn = variables["params"]["BatchNorm_0"]
    assert set(bn) == {"bias"}  # no learned scale: unit-variance pre-activations
    assert set(
        models.SparseHead(dim=48).init(jax.random.key(0), x, train=False)["params"]["BatchNorm_0"]
    ) == {"bias", "scale"}
    z, state = head.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"])
    (a,) = state["intermediates"][models.ACTIVATIONS_KEY]
    a, z = np.asarray(a), np.asarray(z)
    assert a.min() >= 0 and (a == 0).any()
    # Training-mode BatchNorm without scale: each unit's pre-activation has unit variance, so
    # the activations are not normalised rows.
    assert not np.allclose(np.linalg.norm(a, axis=1), 1.0)
    np.testing.assert_allclose(z, a / np.linalg.norm(a, axis=1, keepdims=True), rtol=1e-5)


def test_cifar_convnet_as_the_authors_built_it():
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    net = models.make_backbone("cifar_convnet", channels=8, batch_norm=False, last_linear=True)
    variables, y = init_apply(net, x)
    assert "batch_stats" not in variables
    convs = [v for k, v in variables["params"].items() if k.startswith("Conv")]
    assert len(convs) == 9 and all("bias" in v for v in convs)
    y = np.asarray(y)
    assert y.shape == (2, 8) and y.min() >= 0 and (y > 0).any()  # ReLU after the average
    default = models.make_backbone("cifar_convnet", channels=8)
    variables, _ = init_apply(default, x)
    assert "batch_stats" in variables
    assert not any("bias" in v for k, v in variables["params"].items() if k.startswith("Conv"))
