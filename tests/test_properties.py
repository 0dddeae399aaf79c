"""Property-based tests: for arbitrary inputs the engine equals exact search or raises its
documented error, and the loaders either load or raise their documented error type."""

import os
import tempfile

import numpy as np
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparse_flops import codes, retrieval
from sparse_flops.data import DataError, cifar100, fashion_mnist, features

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def coo_matrices(draw, max_rows=12, max_cols=8):
    """Arbitrary small sparse matrices: empty rows, signed values, duplicate entries and
    explicitly stored zeros."""
    n = draw(st.integers(0, max_rows))
    d = draw(st.integers(1, max_cols))
    nnz = draw(st.integers(0, 3 * n * d)) if n else 0
    rows = draw(st.lists(st.integers(0, max(n - 1, 0)), min_size=nnz, max_size=nnz))
    cols = draw(st.lists(st.integers(0, d - 1), min_size=nnz, max_size=nnz))
    vals = draw(
        st.lists(
            st.one_of(st.just(0.0), st.sampled_from([-1.0, 0.5, 1.0, 2.0]), st.floats(-3, 3)),
            min_size=nnz,
            max_size=nnz,
        )
    )
    m = sp.coo_matrix(
        (np.asarray(vals, np.float32), (np.asarray(rows, int), np.asarray(cols, int))),
        shape=(n, d),
    )
    return m.tocsr() if draw(st.booleans()) else sp.csr_matrix(m)


@SETTINGS
@given(data=st.data())
def test_sparse_index_equals_exact_search(data):
    db = data.draw(coo_matrices())
    d = db.shape[1]
    q = data.draw(coo_matrices(max_cols=d).filter(lambda m: m.shape[1] == d))
    k = data.draw(st.integers(1, 15))
    index = retrieval.SparseIndex(db, block_size=data.draw(st.sampled_from([1, 3, 64])))
    s, i = index.search(q, k)
    assert s.shape == (q.shape[0], k) and i.shape == (q.shape[0], k)
    exact = (q.toarray().astype(np.float64) @ db.toarray().astype(np.float64).T).astype(np.float32)
    n = db.shape[0]
    kk = min(k, n)
    for r in range(q.shape[0]):
        want = np.sort(exact[r])[::-1][:kk]
        np.testing.assert_allclose(s[r, :kk], want, rtol=1e-5, atol=1e-5)
        assert np.all(i[r, kk:] == -1)
        ids = i[r, :kk]
        assert len(set(ids.tolist())) == kk and np.all((ids >= 0) & (ids < n))
        np.testing.assert_allclose(exact[r, ids], s[r, :kk], rtol=1e-5, atol=1e-5)


LOADERS = {"x-idx3-ubyte": fashion_mnist.read_idx, "train": cifar100.load_split}


@settings(SETTINGS, max_examples=120)  # two loaders share the draws
@given(blob=st.binary(max_size=400), name=st.sampled_from(sorted(LOADERS)))
def test_idx_and_cifar_loaders_load_or_raise_data_error(blob, name):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, name)
        with open(path, "wb") as f:
            f.write(blob)
        try:
            LOADERS[name](path)
        except DataError:
            pass


@SETTINGS
@given(blob=st.binary(max_size=400), prefix=st.sampled_from([b"", b"PK\x03\x04"]))
def test_features_loader_loads_or_raises_data_error(blob, prefix):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "train.npz")
        with open(path, "wb") as f:
            f.write(prefix + blob)
        try:
            features.load_split(path)
        except DataError:
            pass


@SETTINGS
@given(blob=st.binary(max_size=400), name=st.sampled_from(["database.npz", "database_labels.npy"]))
def test_codes_loader_loads_or_raises_codes_error(blob, name):
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        z = np.abs(rng.standard_normal((5, 4))).astype(np.float32)
        sets = {"database": codes.CodeSet(codes.to_csr(z), np.arange(5))}
        folder = os.path.join(tmp, "codes")
        codes.save_codes(folder, sets, {})
        with open(os.path.join(folder, name), "wb") as f:
            f.write(blob)
        try:
            codes.load_codes(folder)
        except codes.CodesError:
            pass
