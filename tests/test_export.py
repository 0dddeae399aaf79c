"""Augmented views and the chunked distractor export (no model: a stand-in embedding)."""

import jax
import ml_collections
import numpy as np
import pytest
import scipy.sparse as sp

from sparse_flops import data, export
from sparse_flops.config import base_config

AUG = dict(shift=1, flip=False, contrast=0.2, noise=0.05)


def _split(n=700):
    rng = np.random.default_rng(0)
    x = rng.random((n, 8, 8, 1)).astype(np.float32)
    return data.ArraySplit(x, np.arange(n) % 10)


def test_views_do_not_depend_on_the_chunk_that_asks_for_them():
    split = _split()
    whole = export.augmented_views(split, 0, 3500, 3500, AUG, seed=3)
    parts = [
        export.augmented_views(split, a, b, 3500, AUG, 3) for a, b in ((0, 1000), (1000, 3500))
    ]
    np.testing.assert_array_equal(whole.inputs, np.concatenate([p.inputs for p in parts]))
    # View v is item v % 700, augmented: labels cycle and views of one item differ.
    np.testing.assert_array_equal(whole.labels, np.arange(3500) % 700)
    assert not np.allclose(whole.inputs[5], whole.inputs[705])
    assert not np.allclose(whole.inputs[5], split.inputs[5])
    with pytest.raises(ValueError, match="multiple of 1000"):
        export.augmented_views(split, 500, 1000, 3500, AUG, 3)


def test_instance_queries_are_the_seeded_blocks_they_always_were():
    split = _split(2500)
    views = export.augment_split(split, 1500, AUG, seed=1)
    key = jax.random.key(1)
    expected = np.concatenate(
        [
            np.asarray(data.augment(jax.random.fold_in(key, s), split.inputs[s : s + 1000], **AUG))
            for s in (0, 1000)
        ]
    )[:1500]
    np.testing.assert_array_equal(views.inputs, expected[:1500])
    np.testing.assert_array_equal(views.labels, np.arange(1500))


@pytest.mark.parametrize("sparse", [True, False])
def test_distractors_are_embedded_in_chunks_alike(sparse):
    split = _split()
    seen = []

    def embed(views):  # stand-in model: ReLU of a fixed projection of the image
        seen.append(len(views))
        z = np.maximum(views.inputs.reshape(len(views), -1)[:, :16] - 0.5, 0)
        return sp.csr_matrix(z) if sparse else z

    ec = ml_collections.ConfigDict(
        dict(distractors=2300, distractor_seed=4, distractor_chunk=2000, instance_augment=AUG)
    )
    big = export.embed_distractors(embed, split, ec)
    assert seen == [2000, 300]  # never more than a chunk of images at once
    ec.distractor_chunk = 1500  # rounded down to whole 1000-image blocks
    small = export.embed_distractors(embed, split, ec)
    assert seen[2:] == [1000, 1000, 300]
    a, b = (big.codes.toarray(), small.codes.toarray()) if sparse else (big.codes, small.codes)
    assert a.shape == (2300, 16) and sp.issparse(big.codes) == sparse
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(big.labels, np.arange(2300) % 700)


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("distractors", -1, "config.export.distractors"),
        ("distractor_chunk", 10, "config.export.distractor_chunk"),
        ("instance_queries", 0, "needs config.export.instance_queries"),
    ],
)
def test_bad_distractor_settings_are_named(key, value, match):
    from sparse_flops import config

    c = base_config()
    c.export.distractors = 100
    c.export[key] = value
    with pytest.raises(ValueError, match=match):
        config.validate(c)
