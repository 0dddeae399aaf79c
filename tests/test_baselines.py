import numpy as np
import pytest
import scipy.sparse as sp

from sparse_flops import baselines, retrieval
from sparse_flops.bench import tradeoff


def dense_data(rng, n=400, d=32, q=25):
    return (
        rng.standard_normal((n, d)).astype(np.float32),
        rng.standard_normal((q, d)).astype(np.float32),
    )


def exact_topk(q, db, k):
    s = q.astype(np.float64) @ db.astype(np.float64).T
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, ids, axis=1), ids


def test_faiss_flat_and_our_blas_index_agree():
    db, q = dense_data(np.random.default_rng(0))
    ours = baselines.DenseMethod(db, "blas")
    peer = baselines.DenseMethod(db, "faiss")
    s1, i1 = ours.search(q, 10)
    s2, i2 = peer.search(q, 10, num_threads=2)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, rtol=1e-5, atol=1e-5)
    ref_s, ref_i = exact_topk(q, db, 10)
    np.testing.assert_array_equal(i1, ref_i)
    assert ours.ops_per_query(q) == 400 * 32 and peer.bytes_per_item() == 128
    # k past the database pads like our engine does
    s, i = peer.search(q[:2], 450)
    assert np.all(i[:, 400:] == -1) and np.all(np.isneginf(s[:, 400:]))


def test_pca_matches_numpy_reference():
    rng = np.random.default_rng(1)
    # low-rank data plus noise: the top directions carry most of the inner products
    basis = rng.standard_normal((6, 32)).astype(np.float32)
    db = rng.standard_normal((300, 6)).astype(np.float32) @ basis
    db += 0.01 * rng.standard_normal(db.shape).astype(np.float32)
    q = rng.standard_normal((20, 6)).astype(np.float32) @ basis
    pca = baselines.PCAMethod(db, 6)
    _, _, vt = np.linalg.svd(db.astype(np.float64), full_matrices=False)
    w = vt[:6].T  # (d, k): right singular vectors = eigenvectors of D^T D
    ref_s, ref_i = exact_topk(q @ w, db @ w, 10)
    s, i = pca.search(q, 10)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_allclose(s, ref_s, rtol=1e-4, atol=1e-4)
    # rank-6 data: projecting to 6 dimensions keeps the exact ranking
    np.testing.assert_array_equal(i, exact_topk(q, db, 10)[1])
    assert pca.ops_per_query(q) == 32 * 6 + 300 * 6 and pca.bytes_per_item() == 24
    with pytest.raises(ValueError, match="PCA dimension"):
        baselines.PCAMethod(db, 33)


def hamming_reference(q_bits, db_bits):
    qb = np.unpackbits(q_bits, axis=1).astype(np.int64)
    dbb = np.unpackbits(db_bits, axis=1).astype(np.int64)
    return (qb[:, None, :] != dbb[None, :, :]).sum(axis=2)


def test_lsh_hamming_ranking_matches_brute_force():
    db, q = dense_data(np.random.default_rng(2), n=300)
    lsh = baselines.LSHMethod(db, 64, seed=3)
    ref_bits = np.packbits((db @ lsh.projection) > 0, axis=1)
    np.testing.assert_array_equal(lsh.encode(db), ref_bits)
    dist = hamming_reference(lsh.encode(q), ref_bits)
    s, i = lsh.search(q, 15)
    # scores are -Hamming, sorted; ids hold exactly those distances
    np.testing.assert_array_equal(-s, np.sort(dist, axis=1)[:, :15])
    np.testing.assert_array_equal(np.take_along_axis(dist, i, axis=1), -s)
    assert lsh.bytes_per_item() == 8 and lsh.ops_per_query(q) == 32 * 64 + 300 + 0
    # with exact re-ranking, the results are the Hamming candidates re-scored exactly
    lsh_r = baselines.LSHMethod(db, 64, rerank=50, seed=3)
    s_r, i_r = lsh_r.search(q, 5)
    for row in range(len(q)):
        ref = np.sort(q[row] @ db[i_r[row]].T)[::-1]
        np.testing.assert_allclose(s_r[row], ref, rtol=1e-5)
        # every result has a Hamming distance within the 50 nearest
        assert np.all(dist[row, i_r[row]] <= np.sort(dist[row])[49])
    with pytest.raises(ValueError, match="multiple of 8"):
        baselines.LSHMethod(db, 12)


@pytest.mark.parametrize("nlist", [0, 8])
def test_pq_scores_are_inner_products_with_decoded_vectors(nlist):
    rng = np.random.default_rng(4)
    db, q = dense_data(rng, n=2000, d=32, q=30)
    nprobe = nlist or 1
    pq = baselines.PQMethod(db, m=8, nbits=6, nlist=nlist, nprobe=nprobe)
    decoded = pq.index.reconstruct_n(0, pq.n)
    s, i = pq.search(q, 10)
    ref_s, ref_i = exact_topk(q, decoded, 10)
    np.testing.assert_allclose(s, ref_s, rtol=1e-3, atol=1e-3)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i, ref_i, strict=True)])
    assert overlap > 0.9
    exact = exact_topk(q, db, 10)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i, exact, strict=True)])
    print(f"PQ (nlist={nlist}) recall@10 against exact search: {recall:.2f}")
    assert pq.bytes_per_item() == 6 + (8 if nlist else 0)
    with pytest.raises(ValueError, match="m dividing"):
        baselines.PQMethod(db, m=7)


def test_ivf_with_another_nprobe_shares_the_index_and_equals_a_fresh_one():
    rng = np.random.default_rng(6)
    db, q = dense_data(rng, n=2000, d=32, q=30)
    one = baselines.PQMethod(db, m=8, nbits=6, nlist=16, nprobe=1)
    four = one.with_nprobe(4)
    assert four.index is one.index and four.label == "m=8, nlist=16, nprobe=4, 6 bits"
    fresh = baselines.PQMethod(db, m=8, nbits=6, nlist=16, nprobe=4)  # same data: same training
    s4, i4 = four.search(q, 10)
    s1, i1 = one.search(q, 10)  # searching one after four uses nprobe 1 again
    np.testing.assert_array_equal(i4, fresh.search(q, 10)[1])
    assert not np.array_equal(i1, i4)
    np.testing.assert_array_equal(i1, baselines.PQMethod(db, 8, 6, 16, 1).search(q, 10)[1])
    assert four.ops_per_query(q) > one.ops_per_query(q)
    with pytest.raises(ValueError, match="nprobe"):
        one.with_nprobe(17)
    with pytest.raises(ValueError, match="nprobe"):
        baselines.PQMethod(db, m=8).with_nprobe(2)


def sparse_and_dense(rng, n=300, d=48, e=16, q=20):
    z = np.abs(rng.standard_normal((n + q, d))).astype(np.float32)
    z[rng.random(z.shape) < 0.8] = 0
    dense = rng.standard_normal((n + q, e)).astype(np.float32)
    return sp.csr_matrix(z[:n]), sp.csr_matrix(z[n:]), dense[:n], dense[n:]


def test_two_stage_reranks_the_sparse_candidates_and_counts_both_stages():
    db_s, q_s, db_d, q_d = sparse_and_dense(np.random.default_rng(5))
    method = baselines.TwoStageMethod(db_s, db_d, candidates=30)
    s, i = method.search((q_s, q_d), 10)
    _, cand, postings = retrieval.SparseIndex(db_s).search(q_s, 30, return_costs=True)
    ref = retrieval.rerank(cand, q_d, db_d, 10)
    np.testing.assert_array_equal(i, ref[1])
    np.testing.assert_allclose(s, ref[0])
    assert method.ops_per_query((q_s, q_d)) == pytest.approx(postings.mean() + 30 * 16)
    # with every item a candidate, two-stage is exact dense search
    full = baselines.TwoStageMethod(db_s, db_d, candidates=300)
    _, i_full = full.search((q_s, q_d), 5)
    touched = np.asarray((q_s @ db_s.T).toarray() > 0)
    ref_i = exact_topk(q_d, db_d, 5)[1]
    rows = touched.sum(axis=1) >= 300  # queries whose candidates cover the database
    np.testing.assert_array_equal(i_full[rows], ref_i[rows])
    with pytest.raises(ValueError, match="same items"):
        baselines.TwoStageMethod(db_s, db_d[:-1], candidates=10)


def test_rows_must_correspond_for_two_stage():
    meta = {"config": {"data": {"source": "fashion_mnist", "train_limit": 0}}}
    meta["database_split"] = "train"
    labels = np.arange(10) % 3
    baselines.check_rows_correspond(meta, meta, labels, labels)
    other = {"config": {"data": {"source": "fashion_mnist", "train_limit": 5}}}
    other["database_split"] = "train"
    with pytest.raises(ValueError, match="data.train_limit"):
        baselines.check_rows_correspond(meta, other, labels, labels)
    with pytest.raises(ValueError, match="rows differ"):
        baselines.check_rows_correspond(meta, meta, labels, labels[::-1])


def test_distinct_labels_for_workdirs_sharing_a_folder_name():
    labels = tradeoff.distinct_labels(["/a/x/run", "/b/x/run", "/c/other", "/a/x/run"])
    assert labels[2] == "other"
    assert labels[0] != labels[1] and labels[0].endswith("run") and labels[3] == labels[0] + "#2"
