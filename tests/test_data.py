import gzip
import os

import jax
import ml_collections
import numpy as np
import pytest
from helpers import write_fake_cifar100, write_fake_fashion_mnist, write_idx

from sparse_flops import data
from sparse_flops.config import base_config
from sparse_flops.data import augmentation as augment
from sparse_flops.data import cifar100, fashion_mnist, features, synthetic


def test_read_idx_roundtrip(tmp_path):
    a = np.random.default_rng(0).integers(0, 255, (3, 4, 5)).astype(np.uint8)
    write_idx(str(tmp_path / "a.gz"), a)
    np.testing.assert_array_equal(fashion_mnist.read_idx(str(tmp_path / "a.gz")), a)
    b = np.arange(6, dtype=np.int32).reshape(2, 3)
    write_idx(str(tmp_path / "b"), b, compress=False)
    np.testing.assert_array_equal(fashion_mnist.read_idx(str(tmp_path / "b")), b)


def test_fashion_mnist_loads_fake_files(tmp_path):
    folder = write_fake_fashion_mnist(str(tmp_path / "fm"))
    splits = fashion_mnist.load(folder)
    assert splits["train"].inputs.shape == (120, 28, 28, 1)
    assert splits["test"].inputs.shape == (40, 28, 28, 1)
    assert splits["train"].inputs.dtype == np.float32
    assert 0.0 <= splits["train"].inputs.min() and splits["train"].inputs.max() <= 1.0
    assert splits["train"].labels.dtype == np.int32 and set(splits["test"].labels) == set(range(10))


def test_missing_folder_names_path_fix_and_config_key(tmp_path):
    with pytest.raises(data.DataError) as e:
        fashion_mnist.load(str(tmp_path / "nowhere"))
    msg = str(e.value)
    assert "nowhere" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert "--config.data.dir" in msg


def test_missing_file(tmp_path):
    folder = write_fake_fashion_mnist(str(tmp_path / "fm"))
    os.remove(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"))
    with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte.gz is missing"):
        fashion_mnist.load(folder)


def test_truncated_and_corrupt_files(tmp_path):
    folder = write_fake_fashion_mnist(str(tmp_path / "fm"))
    path = os.path.join(folder, "train-images-idx3-ubyte.gz")
    raw = gzip.decompress(open(path, "rb").read())
    with gzip.open(path, "wb") as f:  # a valid gzip of a truncated IDX payload
        f.write(raw[:-100])
    with pytest.raises(data.DataError, match="truncated or corrupt.*apt-get"):
        fashion_mnist.load(folder)
    blob = open(os.path.join(folder, "t10k-images-idx3-ubyte.gz"), "rb").read()
    with open(path, "wb") as f:  # a cut-off gzip stream
        f.write(blob[: len(blob) // 2])
    with pytest.raises(data.DataError, match="corrupt or truncated"):
        fashion_mnist.load(folder)
    with open(path, "wb") as f:
        f.write(b"not a gzip file at all")
    with pytest.raises(data.DataError, match=path.replace(".", r"\.")):
        fashion_mnist.load(folder)


def test_label_count_mismatch(tmp_path):
    folder = write_fake_fashion_mnist(str(tmp_path / "fm"))
    write_idx(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"), np.zeros(7, np.uint8))
    with pytest.raises(data.DataError, match="7 labels for 40 images"):
        fashion_mnist.load(folder)


def test_real_fashion_mnist_if_installed():
    if not os.path.isdir(fashion_mnist.DEFAULT_DIR):
        pytest.skip("dataset-fashion-mnist is not installed")
    splits = fashion_mnist.load()
    assert len(splits["train"]) == 60000 and len(splits["test"]) == 10000
    assert np.bincount(splits["test"].labels).tolist() == [1000] * 10


def test_cifar100_fake_pickles(tmp_path):
    folder = write_fake_cifar100(str(tmp_path / "c"))
    splits = cifar100.load(folder)
    assert splits["train"].inputs.shape == (30, 32, 32, 3)
    with open(os.path.join(folder, "test"), "wb") as f:
        f.write(b"\x80\x04garbage")
    with pytest.raises(data.DataError, match="corrupt"):
        cifar100.load(folder)
    with pytest.raises(data.DataError, match="does not exist"):
        cifar100.load(str(tmp_path / "none"))


def test_features_npz(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("train", "test"):
        np.savez(tmp_path / f"{name}.npz", inputs=rng.random((10, 4)), labels=np.arange(10))
    splits = features.load(str(tmp_path))
    assert splits["train"].inputs.dtype == np.float32 and splits["test"].labels.dtype == np.int32
    np.savez(tmp_path / "test.npz", inputs=np.full((3, 4), np.nan), labels=np.arange(3))
    with pytest.raises(data.DataError, match="NaN"):
        features.load(str(tmp_path))
    np.savez(tmp_path / "test.npz", x=np.zeros(3))
    with pytest.raises(data.DataError, match="lacks the arrays"):
        features.load(str(tmp_path))
    (tmp_path / "test.npz").write_bytes(b"junk")
    with pytest.raises(data.DataError, match="corrupt"):
        features.load(str(tmp_path))
    np.savez(tmp_path / "test.npz", inputs=rng.random((3, 5)), labels=np.arange(3))
    with pytest.raises(data.DataError, match="different input shapes"):
        features.load(str(tmp_path))
    np.savez(tmp_path / "test.npz", inputs=rng.random((3, 4)), labels=np.array([0, -1, 2]))
    with pytest.raises(data.DataError, match=r"test.npz: labels must be in \[0"):
        features.load(str(tmp_path))


def test_synthetic_is_seeded_and_class_structured():
    a = synthetic.make_splits(
        num_classes=5, features=8, train_per_class=20, test_per_class=4, noise=0.1, seed=3
    )
    b = synthetic.make_splits(
        num_classes=5, features=8, train_per_class=20, test_per_class=4, noise=0.1, seed=3
    )
    np.testing.assert_array_equal(a["train"].inputs, b["train"].inputs)
    assert len(a["train"]) == 100 and len(a["test"]) == 20
    x, y = a["train"].inputs, a["train"].labels
    centroids = np.stack([x[y == c].mean(0) for c in range(5)])
    nearest = np.argmax(x @ centroids.T, axis=1)
    assert np.mean(nearest == y) > 0.95
    with pytest.raises(data.DataError, match="num_classes"):
        synthetic.make_splits(num_classes=0)


def data_config(**kw):
    c = base_config().data
    c.source = "synthetic"
    c.synthetic.num_classes = 4
    c.synthetic.train_per_class = 10
    c.update(kw)
    return c


def test_load_splits_validation_and_limits():
    splits = data.load_splits(data_config(validation_size=8))
    assert len(splits["validation"]) == 8 and len(splits["train"]) == 32
    splits = data.load_splits(data_config(train_limit=5, eval_limit=3))
    assert len(splits["train"]) == 5 and len(splits["test"]) == 3
    with pytest.raises(data.DataError, match="validation_size"):
        data.load_splits(data_config(validation_size=40))
    with pytest.raises(data.DataError, match="eval_split='validation'"):
        data.load_splits(data_config(eval_split="validation"))
    with pytest.raises(data.DataError, match="unknown data source"):
        data.load_splits(data_config(source="imagenet"))


def test_batcher_epochs_and_determinism():
    split = data.ArraySplit(np.arange(10, dtype=np.float32)[:, None], np.arange(10))
    b = data.Batcher(split, 3, seed=7)
    assert b.steps_per_epoch == 3
    epoch0 = np.concatenate([b.indices(s) for s in range(3)])
    assert len(set(epoch0)) == 9  # no repeats within an epoch
    assert not np.array_equal(b.indices(3), b.indices(0))  # reshuffled next epoch
    fresh = data.Batcher(split, 3, seed=7)
    np.testing.assert_array_equal(fresh.indices(4), b.indices(4))  # any step on its own
    hosts = [data.Batcher(split, 4, 7, process_index=i, process_count=2) for i in range(2)]
    whole = data.Batcher(split, 4, 7)
    np.testing.assert_array_equal(np.concatenate([h.indices(5) for h in hosts]), whole.indices(5))
    with pytest.raises(data.DataError, match="exceeds"):
        data.Batcher(split, 11, 0)


def test_augment_is_seeded_and_shape_preserving():
    x = np.random.default_rng(0).random((6, 28, 28, 1)).astype(np.float32)
    kw = dict(shift=2, flip=True, contrast=0.3, noise=0.05)
    a = augment.augment(jax.random.key(1), x, **kw)
    b = augment.augment(jax.random.key(1), x, **kw)
    c = augment.augment(jax.random.key(2), x, **kw)
    assert a.shape == x.shape
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    np.testing.assert_array_equal(augment.augment(jax.random.key(1), x), x)  # all off: identity


def test_shift_and_flip_semantics():
    x = np.zeros((1, 5, 5, 1), np.float32)
    x[0, 2, 2, 0] = 1.0
    for seed in range(10):
        y = np.asarray(augment.random_shift(jax.random.key(seed), x, 1))
        r, c = np.argwhere(y[0, :, :, 0] == 1.0)[0]
        assert abs(r - 2) <= 1 and abs(c - 2) <= 1 and y.sum() == 1.0
    x2 = np.arange(6, dtype=np.float32).reshape(1, 2, 3, 1)
    flips = {
        tuple(np.asarray(augment.random_flip(jax.random.key(s), x2)).ravel()) for s in range(20)
    }
    assert flips == {tuple(x2.ravel()), tuple(x2[:, :, ::-1].ravel())}


def test_contrast_keeps_mean():
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype(np.float32)
    y = np.asarray(augment.random_contrast(jax.random.key(0), x, 0.5))
    np.testing.assert_allclose(y.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3)), rtol=1e-5)


def test_config_dict_is_ml_collections():
    assert isinstance(data_config(), ml_collections.ConfigDict)


def test_mean_subtraction_and_scale_use_the_training_split(tmp_path):
    c = base_config().data
    c.source = "cifar100"
    c.dir = write_fake_cifar100(str(tmp_path / "c"), n_train=40, n_test=12)
    raw = data.load_splits(c)
    c.subtract_mean, c.input_scale = True, 255.0 / 128.0
    out = data.load_splits(c)
    mean = raw["train"].inputs.mean(axis=0)
    np.testing.assert_allclose(out["train"].inputs.mean(axis=0), 0.0, atol=1e-5)
    # The test split is shifted by the training mean, not its own: (255 x - 255 mean) / 128.
    np.testing.assert_allclose(
        out["test"].inputs, (raw["test"].inputs - mean) * 255.0 / 128.0, rtol=1e-5, atol=1e-5
    )
    c.input_scale = 0.0
    with pytest.raises(data.DataError, match="config.data.input_scale"):
        data.load_splits(c)


def test_image_folder_reads_identities_and_offsets_distractor_labels(tmp_path):
    from helpers import write_fake_faces

    from sparse_flops.data import image_folder

    root = write_fake_faces(str(tmp_path / "faces"), identities=(4, 3, 2), per_identity=3)
    splits = image_folder.load(root, image_size=8)
    assert splits["train"].inputs.shape == (12, 8, 8, 3)
    assert 0.0 <= splits["train"].inputs.min() and splits["train"].inputs.max() <= 1.0
    np.testing.assert_array_equal(splits["test"].labels, np.repeat(np.arange(3), 3))
    np.testing.assert_array_equal(splits["distractors"].labels, 3 + np.repeat(np.arange(2), 3))
    c = base_config().data
    c.source, c.dir, c.image_size = "image_folder", root, 8
    assert set(data.load_splits(c)) == {"train", "test", "distractors"}
    # Bad input is named with its fix.
    os.makedirs(os.path.join(root, "test", "id999"))
    with pytest.raises(data.DataError, match="id999 holds no image"):
        image_folder.load(root, 8)
    with open(os.path.join(root, "test", "id999", "broken.png"), "wb") as f:
        f.write(b"not a png")
    with pytest.raises(data.DataError, match="broken.png is not a readable image"):
        image_folder.load(root, 8)
    with pytest.raises(data.DataError, match="does not exist"):
        image_folder.load(str(tmp_path / "none"), 8)
    os.rename(os.path.join(root, "train"), os.path.join(root, "elsewhere"))
    with pytest.raises(data.DataError, match="train is missing"):
        image_folder.load(root, 8)


def test_features_folder_with_distractors_feeds_the_faces_config(tmp_path):
    from experiments import faces
    from sparse_flops import config as config_lib

    rng = np.random.default_rng(0)
    for name, n in (("train", 40), ("test", 12), ("distractors", 30)):
        x = rng.standard_normal((n, 24)).astype(np.float32)
        np.savez(tmp_path / f"{name}.npz", inputs=x, labels=np.arange(n) % 4)
    c = faces.get_config("features")
    config_lib.validate(c)
    c.data.dir = str(tmp_path)
    splits = data.load_splits(c.data)
    assert set(splits) == {"train", "test", "distractors"}
    assert c.export.database_split == "distractors" and c.benchmark.regimes == ("probe",)
