"""The benchmark's regimes over exported code sets.

- ``class``: the held-out query split against the database split; relevant = same class.
- ``instance``: augmented views of held-out items against the database followed by the held-out
  items themselves; exactly one relevant item per query (its source), all others distractors.
- ``open_set``: the same queries against the exported distractors (augmented views of the
  database split's images, e.g. a million) followed by the held-out items (the paper's
  MegaFace-style protocol).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from sparse_flops.codes import CodeSet

REGIMES = ("class", "instance", "open_set")


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


def regimes(sets: dict[str, CodeSet], num_queries: int) -> dict[str, tuple[CodeSet, CodeSet]]:
    """``{regime: (database, queries)}``: ``class`` always, ``instance`` when the export has
    instance queries, ``open_set`` when it also has distractors; at most ``num_queries`` queries
    each (``<= 0``: all)."""
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
    return out
