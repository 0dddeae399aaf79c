"""The benchmark's regimes over exported code sets.

- ``class``: the held-out query split against the database split; relevant = same class.
- ``instance``: augmented views of held-out items against the database followed by the held-out
  items themselves; exactly one relevant item per query (its source), all others distractors.
- ``open_set``: the same queries against the exported distractors (augmented views of the
  database split's images, e.g. a million) followed by the held-out items.
- ``probe``: the MegaFace protocol (identification among distractors): the first image of each
  probe identity (the query split) joins the database split (the distractors, whose labels
  never match a probe); every other probe image queries for that one mate, no image in both.
  Asked for by name only (``benchmark.regimes``): face exports use it.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from sparse_flops.codes import CodeSet

REGIMES = ("class", "instance", "open_set", "probe")
DEFAULT_REGIMES = ("class", "instance", "open_set")  # those an export holds; probe by name


def instance_regime(
    database: CodeSet, heldout: CodeSet, instance_queries: CodeSet
) -> tuple[CodeSet, CodeSet]:
    """Instance retrieval: the database followed by the held-out items, each row labelled by its
    own row number; the queries labelled by the row of their source item. Exactly one relevant
    item per query, all the others distractors."""
    n = database.codes.shape[0]
    stack = sp.vstack if database.is_sparse else np.vstack
    codes = stack([database.codes, heldout.codes])
    if database.is_sparse:
        codes = codes.tocsr()
    db = CodeSet(codes, np.arange(codes.shape[0], dtype=np.int64))
    return db, CodeSet(instance_queries.codes, n + instance_queries.labels)


def probe_regime(distractors: CodeSet, probe: CodeSet) -> tuple[CodeSet, CodeSet]:
    """The MegaFace protocol: the distractors followed by each probe identity's first image (its
    mate), every row labelled by its own row number; the other probe images as queries, each
    labelled by its identity's mate row. Identities with one image give no query."""
    labels = np.asarray(probe.labels)
    _, first = np.unique(labels, return_index=True)
    first = np.sort(first)
    mate_row = {int(labels[i]): distractors.codes.shape[0] + j for j, i in enumerate(first)}
    rest = np.setdiff1d(np.arange(len(labels)), first)
    stack = sp.vstack if distractors.is_sparse else np.vstack
    codes = stack([distractors.codes, probe.codes[first]])
    if distractors.is_sparse:
        codes = codes.tocsr()
    db = CodeSet(codes, np.arange(codes.shape[0], dtype=np.int64))
    q_labels = np.array([mate_row[int(y)] for y in labels[rest]], np.int64)
    return db, CodeSet(probe.codes[rest], q_labels)


def regimes(
    sets: dict[str, CodeSet], num_queries: int, wanted: tuple[str, ...] = ()
) -> dict[str, tuple[CodeSet, CodeSet]]:
    """``{regime: (database, queries)}``: ``class`` always, ``instance`` when the export has
    instance queries, ``open_set`` when it also has distractors, ``probe`` when ``wanted`` names
    it (the database set then holds the distractors); at most ``num_queries`` queries each
    (``<= 0``: all)."""
    q = sets["queries"]
    nq = min(num_queries, q.codes.shape[0]) if num_queries > 0 else q.codes.shape[0]
    out = {"class": (sets["database"], CodeSet(q.codes[:nq], q.labels[:nq]))}
    if "instance_queries" in sets:
        db, iq = instance_regime(sets["database"], q, sets["instance_queries"])
        n_iq = min(nq, iq.codes.shape[0])
        out["instance"] = (db, CodeSet(iq.codes[:n_iq], iq.labels[:n_iq]))
        if "distractors" in sets:
            db, iq = instance_regime(sets["distractors"], q, sets["instance_queries"])
            out["open_set"] = (db, CodeSet(iq.codes[:n_iq], iq.labels[:n_iq]))
    if "probe" in wanted:
        db, pq = probe_regime(sets["database"], q)
        n_pq = min(nq, pq.codes.shape[0]) if num_queries > 0 else pq.codes.shape[0]
        out["probe"] = (db, CodeSet(pq.codes[:n_pq], pq.labels[:n_pq]))
    return out
