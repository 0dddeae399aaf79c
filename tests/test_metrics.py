import numpy as np
import pytest
import scipy.sparse as sp

from sparse_flops import metrics


def brute_force(scores, ql, dl, ks, self_index):
    out = {f"precision@{k}": [] for k in ks} | {f"recall@{k}": [] for k in ks} | {"ap": []}
    for i in range(len(scores)):
        keep = [j for j in range(scores.shape[1]) if self_index is None or j != self_index[i]]
        order = sorted(keep, key=lambda j: (-scores[i, j], j))
        rel = np.array([dl[j] == ql[i] for j in order])
        nrel = rel.sum()
        for k in ks:
            out[f"precision@{k}"].append(rel[:k].sum() / min(k, len(rel)))
            out[f"recall@{k}"].append(rel[:k].sum() / nrel if nrel else np.nan)
        precs = [rel[: r + 1].sum() / (r + 1) for r in range(len(rel)) if rel[r]]
        out["ap"].append(np.mean(precs) if nrel else np.nan)
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize("with_self", [False, True])
def test_ranking_metrics_match_brute_force(with_self):
    rng = np.random.default_rng(0)
    q, n = 9, 30
    scores = rng.integers(0, 5, (q, n)).astype(np.float32)  # many ties
    dl = rng.integers(0, 3, n)
    self_index = rng.choice(n, q, replace=False) if with_self else None
    ql = dl[self_index] if with_self else rng.integers(0, 4, q)  # label 3: no relevant item
    got = metrics.ranking_metrics(scores, ql, dl, ks=(1, 5, 100), self_index=self_index)
    ref = brute_force(scores, ql, dl, (1, 5, 100), self_index)
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-6, equal_nan=True)


def test_self_match_is_excluded():
    db = np.eye(4, dtype=np.float32)
    labels = np.array([0, 1, 2, 3])  # every item is alone in its class
    with_self = metrics.evaluate_embeddings(db, labels, db, labels, ks=(1,))
    assert with_self["precision@1"] == 1.0  # the self-match, counted as in the original code
    honest = metrics.evaluate_embeddings(db, labels, db, labels, ks=(1,), self_index=np.arange(4))
    assert honest["precision@1"] == 0.0


def test_evaluate_embeddings_chunks_agree():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 8)).astype(np.float32)
    y = rng.integers(0, 5, 50)
    a = metrics.evaluate_embeddings(x[:20], y[:20], x, y, ks=(1, 3), self_index=np.arange(20))
    b = metrics.evaluate_embeddings(
        x[:20], y[:20], x, y, ks=(1, 3), self_index=np.arange(20), chunk=3
    )
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k])


def test_cost_summary_dense_and_sparse_agree():
    rng = np.random.default_rng(2)
    db = (rng.random((200, 16)) < np.linspace(0.05, 0.5, 16)) * rng.random((200, 16))
    queries = (rng.random((40, 16)) < 0.2) * 1.0
    dense = metrics.cost_summary(db, queries)
    sparse = metrics.cost_summary(sp.csr_matrix(db), sp.csr_matrix(queries))
    for k in dense:
        assert dense[k] == pytest.approx(sparse[k])
    p = (db != 0).mean(0)
    qp = (queries != 0).mean(0)
    assert dense["mean_nonzeros"] == pytest.approx((db != 0).sum(1).mean())
    assert dense["sum_p_squared"] == pytest.approx(np.sum(p**2))
    assert dense["expected_macs_per_query"] == pytest.approx(200 * np.sum(qp * p))
    assert dense["dense_macs_per_query"] == 200 * 16
    assert dense["r_sub"] == pytest.approx(16 * np.sum(p**2) / p.sum() ** 2)


def test_topk_metrics_against_full_ranking():
    rng = np.random.default_rng(1)
    db = rng.standard_normal((80, 6)).astype(np.float32)
    dbl = rng.integers(0, 3, 80)
    q = rng.standard_normal((12, 6)).astype(np.float32)
    ql = rng.integers(0, 3, 12)
    scores = q @ db.T
    ids = np.argsort(-scores, axis=1, kind="stable")
    full = metrics.ranking_metrics(scores, ql, dbl, ks=(1, 5, 80))
    top = metrics.topk_metrics(ids, ql, dbl, ks=(1, 5, 80))
    assert top["precision@5"] == pytest.approx(np.mean(full["precision@5"]))
    assert top["recall@80"] == pytest.approx(1.0)
    assert top["map@80"] == pytest.approx(np.mean(full["ap"]))  # K = n: mAP@K is mAP
    with pytest.raises(ValueError, match="exceed"):
        metrics.topk_metrics(ids[:, :3], ql, dbl, ks=(5,))


def test_sparse_input_to_metrics_cost():
    m = sp.csr_matrix(np.eye(4, dtype=np.float32))
    assert metrics.cost_summary(m)["r_sub"] == pytest.approx(1.0)
