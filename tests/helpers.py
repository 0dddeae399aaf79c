"""Shared by several test files: writers of small fake data files in the exact formats the
loaders read, the smoke training config, and tree comparisons."""

import gzip
import os
import pickle
import struct

import jax
import numpy as np

from experiments import synthetic as synthetic_experiment
from sparse_flops import codes, train


def write_idx(path, array, compress=True):
    codes = {np.uint8: 0x08, np.int32: 0x0C}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(payload)


def write_fake_fashion_mnist(folder, n_train=120, n_test=40, seed=0):
    """Class-dependent 28x28 images (a bright band per class) so a model can learn them."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, y in enumerate(labels):
            images[i, 2 * y : 2 * y + 4, :] = 250
        write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz"), images)
        write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte.gz"), labels)
    return folder


def write_fake_cifar100(folder, n_train=30, n_test=10, seed=0):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, n in (("train", n_train), ("test", n_test)):
        batch = {
            b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
            b"fine_labels": list(rng.integers(0, 100, n)),
            b"coarse_labels": list(rng.integers(0, 20, n)),
            b"filenames": [b"x.png"] * n,
        }
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(batch, f)
    return folder


def smoke_config(**overrides):
    c = synthetic_experiment.get_config("smoke")
    c.optimizer.lr_schedule = "constant"
    for key, value in overrides.items():
        node = c
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    return c


def params_of(config, workdir):
    state, _, _ = train.load_trained_state(config, workdir)
    return jax.tree.map(np.asarray, (state.step, state.params, state.batch_stats, state.opt_state))


def assert_trees_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_array_equal(x, y)


def codes_workdir(folder, rng, sparse=True, dim=32, distractors=0):
    """A workdir holding exported codes (300 database items, 40 queries, 20 instance queries,
    and ``distractors`` distractors). Labels come from a fixed seed, so any two such workdirs
    describe the same items."""
    labels = np.random.default_rng(99)

    def make(n):
        z = np.abs(rng.standard_normal((n, dim))).astype(np.float32)
        if sparse:
            z[rng.random((n, dim)) < 0.8] = 0
            return codes.to_csr(z)
        return rng.standard_normal((n, dim)).astype(np.float32)

    sets = {
        "database": codes.CodeSet(make(300), labels.integers(0, 5, 300)),
        "queries": codes.CodeSet(make(40), labels.integers(0, 5, 40)),
        "instance_queries": codes.CodeSet(make(20), np.arange(20)),
    }
    if distractors:
        sets["distractors"] = codes.CodeSet(make(distractors), np.arange(distractors) % 300)
    codes.save_codes(os.path.join(folder, "codes"), sets, {})
    return folder


def read_tensorboard_scalars(folder):
    """``{tag: [(step, value), ...]}`` from every TensorBoard event file in ``folder`` (the
    TFRecord framing: length, its CRC, the serialised Event, its CRC)."""
    import glob
    import struct as st

    from tensorboardX.proto import event_pb2

    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents*"))):
        with open(path, "rb") as f:
            blob = f.read()
        pos = 0
        while pos + 12 <= len(blob):
            (length,) = st.unpack("<Q", blob[pos : pos + 8])
            event = event_pb2.Event.FromString(blob[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def write_fake_faces(folder, identities=(4, 3, 3), per_identity=3, size=20, seed=0):
    """``folder/{train,test,distractors}/<identity>/<k>.png``: ``identities`` folders per split
    (train, probe, distractors), each identity a noisy variant of its own random face."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n_ids in zip(("train", "test", "distractors"), identities, strict=True):
        for i in range(n_ids):
            d = os.path.join(folder, split, f"id{i:03d}")
            os.makedirs(d, exist_ok=True)
            base = rng.integers(0, 256, (size, size, 3))
            for k in range(per_identity):
                img = np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(os.path.join(d, f"{k}.png"))
    return folder
