import numpy as np
import pytest
import scipy.sparse as sp

from sparse_flops import retrieval


def random_codes(rng, n, d, density, signed):
    m = sp.random(n, d, density=density, format="csr", dtype=np.float32, random_state=rng)
    if signed:
        m.data = m.data - 0.5
        m.eliminate_zeros()
    m = m.tolil()
    if n > 3:
        m[3] = 0  # an empty database row
    return m.tocsr()


def assert_same_results(a, b, atol=1e-5):
    """Same scores everywhere; same ids wherever the score is not tied with a neighbour."""
    (s1, i1), (s2, i2) = a, b
    np.testing.assert_allclose(s1, s2, atol=atol)
    for r in range(len(s1)):
        for c in range(s1.shape[1]):
            if not np.isfinite(s2[r, c]):
                assert i1[r, c] == i2[r, c] == -1
                continue
            row = s2[r]
            tied = np.sum(np.abs(row[np.isfinite(row)] - row[c]) <= atol) > 1
            if not tied:
                assert i1[r, c] == i2[r, c], (r, c)


@pytest.mark.parametrize(
    "n,d,density,signed,k",
    [
        (300, 40, 0.08, False, 10),
        (300, 40, 0.08, True, 10),
        (50, 12, 0.3, True, 80),  # k larger than the database
        (2000, 64, 0.01, False, 5),  # sparse enough to use the touched-row path
        (400, 16, 0.5, False, 20),  # dense enough to use the scan path
        (1, 5, 1.0, False, 3),
    ],
)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("block_size", [65536, 7])  # one block; many blocks, last one partial
@pytest.mark.parametrize("engine,batch", [("compact", 1), ("compact", 4), ("reference", 1)])
def test_sparse_index_equals_dense_exact(
    n, d, density, signed, k, threads, block_size, engine, batch
):
    rng = np.random.default_rng(n + d + k)
    db = random_codes(rng, n, d, density, signed)
    q = random_codes(rng, 25, d, min(1.0, 2 * density), signed).tolil()
    q[0] = 0  # an empty query
    q = q.tocsr()
    index = retrieval.SparseIndex(db, block_size=block_size, engine=engine)
    got = index.search(q, k, num_threads=threads, batch_size=batch)
    ref = retrieval.DenseIndex(db).search(q.toarray(), k)
    assert got[0].shape == got[1].shape == (25, k)
    assert_same_results(got, ref)
    assert_same_results(retrieval.scipy_search(db, q, k), ref)
    if k > n:
        assert np.all(got[1][:, n:] == -1) and np.all(np.isneginf(got[0][:, n:]))


@pytest.mark.parametrize("block_size", [1, 2, 3, 4])
@pytest.mark.parametrize("batch", [1, 2])
def test_empty_query_on_signed_codes_ranks_untouched_rows_above_negative_scores(block_size, batch):
    db = sp.csr_matrix(np.array([[-1.0, 0], [0, 0], [0, 2.0], [0, 0]], np.float32))
    q = sp.csr_matrix(np.array([[1.0, 0]], np.float32))
    s, i = retrieval.SparseIndex(db, block_size=block_size).search(q, 4, batch_size=batch)
    # rows 1, 2, 3 score 0 (untouched), row 0 scores -1
    np.testing.assert_array_equal(i[0], [1, 2, 3, 0])
    np.testing.assert_allclose(s[0], [0, 0, 0, -1])


def test_threshold_keeps_only_scores_above_it():
    rng = np.random.default_rng(0)
    db = random_codes(rng, 200, 20, 0.2, False)
    q = random_codes(rng, 10, 20, 0.3, False)
    s, i = retrieval.SparseIndex(db, block_size=16).search(q, 30, threshold=0.25)
    ds, di = retrieval.DenseIndex(db).search(q, 30, threshold=0.25)
    assert_same_results((s, i), (ds, di))
    finite = np.isfinite(s)
    assert np.all(s[finite] > 0.25) and np.all(i[~finite] == -1)


def test_measured_macs_is_sum_of_touched_posting_lengths():
    rng = np.random.default_rng(1)
    db = random_codes(rng, 500, 30, 0.1, False)
    q = random_codes(rng, 12, 30, 0.2, False)
    index = retrieval.SparseIndex(db, block_size=64)
    s, i, postings = index.search(q, 5, return_costs=True)
    lengths = np.asarray((db != 0).sum(axis=0)).ravel()
    ref = [lengths[q[r].indices].sum() for r in range(q.shape[0])]
    np.testing.assert_array_equal(postings, ref)
    assert_same_results((s, i), index.search(q, 5))
    # stored zeros in the queries are neither walked nor counted, and the caller's matrix stays
    with_zeros = q.copy()
    with_zeros.data[::2] = 0.0
    stored = with_zeros.nnz
    _, _, postings0 = index.search(with_zeros, 5, return_costs=True)
    live = with_zeros.copy()
    live.eliminate_zeros()
    ref0 = [lengths[live[r].indices].sum() for r in range(q.shape[0])]
    np.testing.assert_array_equal(postings0, ref0)
    assert with_zeros.nnz == stored


def test_rerank_orders_candidates_by_dense_score():
    rng = np.random.default_rng(2)
    dense_db = rng.standard_normal((100, 8)).astype(np.float32)
    dense_q = rng.standard_normal((5, 8)).astype(np.float32)
    cand = np.stack([rng.choice(100, 20, replace=False) for _ in range(5)])
    cand[0, 10:] = -1  # fewer candidates for the first query
    s, i = retrieval.rerank(cand, dense_q, dense_db, 15)
    for r in range(5):
        valid = cand[r][cand[r] >= 0]
        scores = dense_db[valid] @ dense_q[r]
        order = valid[np.argsort(-scores, kind="stable")][:15]
        np.testing.assert_array_equal(i[r, : len(order)], order)
    assert np.all(i[0, 10:] == -1)


def test_search_with_rerank_recovers_dense_top_k_with_enough_candidates():
    rng = np.random.default_rng(3)
    db = random_codes(rng, 300, 24, 0.3, False)
    q = random_codes(rng, 8, 24, 0.3, False)
    dense_db = db.toarray()
    index = retrieval.SparseIndex(db)
    s, i = retrieval.search_with_rerank(
        index, q, 5, rerank_candidates=300, query_dense=q.toarray(), database_dense=dense_db
    )
    assert_same_results((s, i), retrieval.DenseIndex(db).search(q, 5))


def test_bad_inputs_are_named():
    index = retrieval.SparseIndex(sp.eye(5, format="csr", dtype=np.float32))
    with pytest.raises(ValueError, match="dimension 5"):
        index.search(np.zeros((2, 4)), 1)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search(np.zeros((2, 5)), 0)
    with pytest.raises(ValueError, match="NaN"):
        index.search(np.full((1, 5), np.nan), 1)
    with pytest.raises(ValueError, match="NaN"):
        retrieval.SparseIndex(np.full((2, 2), np.inf))
    with pytest.raises(ValueError, match="block_size"):
        retrieval.SparseIndex(np.eye(2), block_size=0)
    with pytest.raises(ValueError, match="dimension 5"):
        retrieval.DenseIndex(np.eye(5)).search(np.zeros((1, 3)), 1)


def test_topk_dense_breaks_ties_by_smallest_id():
    scores = np.array([[1.0, 2.0, 2.0, 2.0, 0.0]], np.float32)
    s, i = retrieval.topk_dense(scores, 2)
    np.testing.assert_array_equal(i, [[1, 2]])
    np.testing.assert_array_equal(s, [[2.0, 2.0]])


@pytest.mark.parametrize("k", [0, -1, 2.5, 3.0, "3", None, True, np.array([3])])
def test_any_non_integer_or_non_positive_k_gets_the_same_error(k):
    index = retrieval.SparseIndex(sp.eye(5, format="csr", dtype=np.float32))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search(np.ones((1, 5)), k)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        retrieval.DenseIndex(np.eye(5)).search(np.ones((1, 5)), k)
    assert index.search(np.ones((1, 5)), np.int64(2))[1].shape == (1, 2)


def test_malformed_csr_is_refused_before_the_kernel():
    good = sp.random(6, 5, density=0.5, format="csr", dtype=np.float32, random_state=0)
    index = retrieval.SparseIndex(good)
    bad_index = good.copy()
    bad_index.indices[0] = 99  # column out of range
    bad_ptr = good.copy()
    bad_ptr.indptr[2] = bad_ptr.indptr[3] + 5  # decreasing, past the data
    for bad in (bad_index, bad_ptr):
        with pytest.raises(ValueError, match="malformed"):
            index.search(bad, 2)
        with pytest.raises(ValueError, match="malformed"):
            retrieval.SparseIndex(bad)
    with pytest.raises(ValueError, match="2-D array"):
        index.search([["a"] * 5], 1)


def test_rerank_matches_a_numpy_reference_and_checks_its_inputs():
    rng = np.random.default_rng(9)
    db = rng.standard_normal((50, 7)).astype(np.float32)
    q = rng.standard_normal((4, 7)).astype(np.float32)
    cand = np.stack([rng.choice(50, 12, replace=False) for _ in range(4)])
    cand[1, 3:] = -1  # fewer candidates than slots
    for threads in (1, 2):
        s, i = retrieval.rerank(cand, q, db, 5, num_threads=threads)
        for r in range(4):
            live = cand[r][cand[r] >= 0]
            ref = live[np.argsort(-(db[live] @ q[r]), kind="stable")][:5]
            np.testing.assert_array_equal(i[r, : len(ref)], ref)
            np.testing.assert_allclose(s[r, : len(ref)], db[ref] @ q[r], rtol=1e-5)
        assert np.all(i[1, 3:] == -1) and np.all(np.isneginf(s[1, 3:]))
    with pytest.raises(ValueError, match="do not fit"):
        retrieval.rerank(np.full((4, 2), 50), q, db, 1)
    with pytest.raises(ValueError, match="do not match"):
        retrieval.rerank(cand, q[:, :3], db, 1)


def _engines_agree(db, q, k, block_size, **kw):
    """The compact engine (batch sizes 1, 3 and 16) returns exactly, bit for bit, what the
    reference engine returns: the same float32 scores and the same ids."""
    ref = retrieval.SparseIndex(db, engine="reference").search(q, k, **kw)
    index = retrieval.SparseIndex(db, block_size=block_size)
    for batch in (1, 3, 16):
        got = index.search(q, k, batch_size=batch, **kw)
        np.testing.assert_array_equal(got[1], ref[1])
        np.testing.assert_array_equal(got[0], ref[0])
    return index


@pytest.mark.parametrize("block_size", [1, 8, 9, 64, 65536])
def test_compact_layout_rows_at_block_edges(block_size):
    """Rows on both sides of every block edge, the last block partial or full, a dimension
    whose postings all sit at block edges."""
    n, d = 8 * 64 + 1, 6
    rng = np.random.default_rng(block_size)
    dense = np.zeros((n, d), np.float32)
    edges = np.arange(0, n, 8)
    for r in np.concatenate([edges, edges - 1, edges + 1]):
        if 0 <= r < n:
            dense[r, rng.integers(0, d - 1)] = rng.random() + 0.1
    dense[edges, d - 1] = np.linspace(1.0, 2.0, len(edges))  # only edge rows in this column
    dense[-1] = 3.0  # the very last row, alone in a partial block
    db = sp.csr_matrix(dense)
    q = sp.csr_matrix(rng.random((20, d)).astype(np.float32) * (rng.random((20, d)) < 0.6))
    index = _engines_agree(db, q, 30, block_size)
    assert index.rows.dtype == np.uint16 and index.codes.dtype == np.int16
    assert int(index.rows.max()) < min(block_size, n)


@pytest.mark.parametrize("block_size", [15, 16, 17, 31, 32, 33, 97])
def test_segments_around_a_cache_line_of_postings(block_size):
    """A term's postings in a block walked in whole 16-posting vector steps, the last one's
    lanes past the segment adding +0 (to rows of the next segments, or of the zeros after the
    last), while the next block's are asked for: segments of 15 to 33 and ~90 postings, in
    every block, the last one partial, give the reference engine's results bit for bit."""
    n, d = 20 * block_size + 5, 3
    rng = np.random.default_rng(block_size)
    dense = (rng.random((n, d)) * (rng.random((n, d)) < 0.95)).astype(np.float32)
    dense[:, 0] = rng.random(n) + 0.5  # every row: full-length segments in column 0
    db = sp.csr_matrix(dense)
    q = sp.csr_matrix(rng.random((12, d)).astype(np.float32) * (rng.random((12, d)) < 0.8))
    _engines_agree(db, q, 40, block_size)


def test_values_of_any_magnitude_in_one_column_stay_exact():
    """A column mixing values 1e-9 and 1e3 (the small ones quantise to code +-1, far from their
    value): the exact re-score still gives the float32 ranking, and near-ties separated by less
    than the quantisation step keep their order."""
    rng = np.random.default_rng(3)
    n, d = 3000, 8
    dense = np.where(rng.random((n, d)) < 0.3, rng.random((n, d)), 0).astype(np.float32)
    dense[::7, 0] = 1e-9
    dense[5, 0] = 1e3
    dense[10:200, 1] = 0.5 + np.arange(190, dtype=np.float32) * 1e-7  # steps far below scale
    dense[10:200, 2:] = 0
    db = sp.csr_matrix(dense)
    q = sp.csr_matrix(np.abs(rng.standard_normal((30, d))).astype(np.float32))
    q[0] = sp.csr_matrix(np.eye(1, d, 1, dtype=np.float32))  # only the near-tie column
    _engines_agree(db, q, 50, 256)
    _engines_agree(db, -q, 50, 256)  # signed: the top are the least negative, zeros first


def test_ties_and_thresholds_through_the_candidate_buffer():
    """Many rows with the same score (binary codes): ties go to the smaller id in every
    batch size, with and without a threshold, k below and above the number tied."""
    rng = np.random.default_rng(4)
    db = sp.csr_matrix((rng.random((5000, 16)) < 0.25).astype(np.float32))
    q = sp.csr_matrix((rng.random((12, 16)) < 0.4).astype(np.float32))
    for k in (5, 200):
        _engines_agree(db, q, k, 512)
        _engines_agree(db, q, k, 512, threshold=1.0)


@pytest.mark.parametrize("n,tied", [(5000, 5000), (40000, 2000)])
def test_more_tied_rows_than_the_candidate_buffer_holds(n, tied):
    """Thousands of rows tied at the top score, k = 3: the gate cannot drop any of them, so a
    query's candidate buffer (2k + 256 rows and one block of 1,024), one query at a time or in
    a batch, must grow, in blocks the query scans (``tied == n``) and in blocks where it tracks
    the rows it touched."""
    rows = np.random.default_rng(n).choice(n, tied, replace=False)
    db = sp.csr_matrix((np.full(tied, 0.5, np.float32), (rows, np.zeros(tied, int))), shape=(n, 3))
    q = sp.csr_matrix(np.array([[2.0, 0, 0], [1.0, 1.0, 0]], np.float32))
    _engines_agree(db, q, 3, 1024)
    s, i = retrieval.SparseIndex(db, block_size=1024).search(q, 3)
    np.testing.assert_array_equal(i, np.sort(rows)[None, :3].repeat(2, 0))
    np.testing.assert_array_equal(s, np.array([[1.0] * 3, [0.5] * 3], np.float32))


def test_compact_index_size_and_settings():
    rng = np.random.default_rng(5)
    db = sp.random(20000, 256, density=0.05, format="csr", dtype=np.float32, random_state=rng)
    index = retrieval.SparseIndex(db)
    assert index.num_postings == db.nnz
    # 2-byte row offset + 2-byte code, plus the block offsets and scales
    assert 4.0 <= index.nbytes / index.num_postings <= 4.5
    ref = retrieval.SparseIndex(db, engine="reference")
    assert ref.nbytes / ref.num_postings >= 8.0 and ref.forward_nbytes == 0
    assert index.forward_nbytes == sum(a.nbytes for a in index.forward)
    with pytest.raises(ValueError, match="65,536 rows per block"):
        retrieval.SparseIndex(db, block_size=65537)
    with pytest.raises(ValueError, match="engine must be one of"):
        retrieval.SparseIndex(db, engine="fast")
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            index.search(db[:2], 3, batch_size=bad)


def test_row_masks_of_the_candidate_scan_match_numpy():
    """The 64-row mask of rows at the gate (vector compare, and its scalar fallback) has bit i
    set exactly where ``acc[start + i] >= g``: ties at the gate, -inf gates, any offset."""
    import numba

    from sparse_flops import engine

    vector = numba.njit(lambda a, s, g: engine._mask_at_least(a, s, g))
    scalar = numba.njit(lambda a, s, g: engine._mask_at_least_loop(a, s, g))
    rng = np.random.default_rng(0)
    a = rng.standard_normal(300).astype(np.float32)
    a[::7] = 0.5  # ties with the gate below
    for start in (0, 1, 63, 64, 236):
        for g in (np.float32(0.5), np.float32(-np.inf), np.float32(2.0), np.float32(9.0)):
            hits = a[start : start + 64] >= g
            want = sum(1 << int(i) for i in np.flatnonzero(hits))
            assert int(vector(a, start, g)) == want
            assert int(scalar(a, start, g)) == want


def test_scatter_adds_sixteen_lanes_as_one_posting_at_a_time():
    """The engine's scatter-add (16 postings per vector step, then one at a time) gives the bits
    of adding ``w * code`` posting by posting, for every start and length around the vector
    width, with repeated rows (later postings must see earlier ones' sums)."""
    from sparse_flops import engine

    rng = np.random.default_rng(0)
    n = 80
    rows = rng.integers(0, 9, n).astype(np.uint16)  # few rows: repeats within a vector step
    codes = rng.integers(-engine.CODE_MAX, engine.CODE_MAX + 1, n).astype(np.int16)
    w = np.float32(0.37)
    for p0 in (0, 1, 15, 16, 17):
        for length in (0, 1, 15, 16, 17, 31, 32, 33, 48, 63):
            p1 = min(n, p0 + length)
            start = rng.standard_normal(9).astype(np.float32)
            got = start.copy()
            engine.scatter(got, rows, codes, p0, p1, w)
            want = start.copy()
            for p in range(p0, p1):
                want[rows[p]] = np.float32(want[rows[p]] + np.float32(w * np.float32(codes[p])))
            assert got.tobytes() == want.tobytes(), (p0, length)


def test_vector_step_past_a_segment_adds_zero_and_the_layout_leaves_room_for_it():
    """A vector step with ``nvalid`` lanes of a segment adds exactly those postings (in lane
    order) and changes no other score's bits, for every ``nvalid`` from 0 past 16; the layout
    keeps 16 zero postings after the last, and a search refuses one without them."""
    import numba

    from sparse_flops import engine

    step = numba.njit(lambda a, r, c, p, w, nv: engine._scatter_lanes(a, r, c, p, w, nv))
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 9, 40).astype(np.uint16)
    codes = rng.integers(-engine.CODE_MAX, engine.CODE_MAX + 1, 40).astype(np.int16)
    w = np.float32(-0.61)
    for p in (0, 3, 24):
        for nvalid in (0, 1, 7, 15, 16, 17, 40):
            start = rng.standard_normal(9).astype(np.float32)
            got = start.copy()
            step(got, rows, codes, np.uint64(p), w, np.uint64(nvalid))
            want = start.copy()
            for q in range(p, p + min(nvalid, 16)):
                want[rows[q]] = np.float32(want[rows[q]] + np.float32(w * np.float32(codes[q])))
            assert got.tobytes() == want.tobytes(), (p, nvalid)

    db = random_codes(np.random.default_rng(2), 50, 7, 0.3, True)
    index = retrieval.SparseIndex(db, block_size=8)
    nnz = index.num_postings
    assert index.rows.shape == index.codes.shape == (nnz + 16,)
    assert not index.rows[nnz:].any() and not index.codes[nnz:].any()
    index.rows, index.codes = index.rows[:nnz], index.codes[:nnz]
    with pytest.raises(ValueError, match="16 zero postings"):
        index.search(db[:3], 2)
