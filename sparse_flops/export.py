"""A trained workdir's splits embedded and handed to :mod:`sparse_flops.codes` (the JAX side).

    python launch.py --mode=export --workdir=runs/fmnist

Writes ``<workdir>/codes/``: the database split, the query split (class retrieval), with
``config.export.instance_queries > 0`` augmented views of held-out items (instance retrieval),
and with ``config.export.distractors > 0`` that many augmented views of the database split's
images, embedded in chunks (open-set retrieval: distractors followed by the held-out originals).
Sparse models give scipy CSR codes, dense models (``model.activation = none``) ``.npy`` arrays.
"""

from __future__ import annotations

import json
import os

import numpy as np

from sparse_flops import codes, data, evaluation, logs, train
from sparse_flops.config import AUGMENT_BLOCK as BLOCK
from sparse_flops.data import augment_split, augmented_views

__all__ = ["augment_split", "augmented_views", "embed_distractors", "export_workdir"]

CODES_DIR = codes.CODES_DIR


def embed_distractors(embed, split: data.ArraySplit, ec) -> codes.CodeSet:
    """``ec.distractors`` seeded augmented views of ``split`` embedded ``ec.distractor_chunk``
    at a time (rounded down to whole augmentation blocks): only one chunk of images is held at
    once. ``embed`` maps a split to its codes (CSR or dense)."""
    import scipy.sparse as sp

    total = int(ec.distractors)
    chunk = max(BLOCK, int(ec.distractor_chunk) // BLOCK * BLOCK)
    parts, labels = [], []
    for start in logs.progress(range(0, total, chunk), desc="distractors", unit="chunk"):
        views = augmented_views(
            split,
            start,
            min(start + chunk, total),
            total,
            dict(ec.instance_augment),
            ec.distractor_seed,
        )
        parts.append(embed(views))
        labels.append(views.labels)
    stacked = sp.vstack(parts, format="csr") if sp.issparse(parts[0]) else np.concatenate(parts)
    return codes.CodeSet(stacked, np.concatenate(labels))


def export_workdir(config, workdir: str) -> dict:
    """Embeds the database, query and instance-query sets of a trained ``workdir`` and writes
    them to ``<workdir>/codes``. Returns the metadata written."""
    ec = config.export
    state, embed_fn, splits = train.load_trained_state(config, workdir)
    for key in ("database_split", "query_split"):
        if ec[key] not in splits:
            raise codes.CodesError(
                f"config.export.{key}={ec[key]!r} is not a split: {sorted(splits)}"
            )
    sparse = config.model.activation != "none"
    if ec.jsonl and not sparse:
        raise codes.CodesError("config.export.jsonl needs sparse codes (model.activation != none)")
    bs = config.eval.batch_size

    def embed(split):
        z = evaluation.embed_split(embed_fn, state, split, bs)
        return codes.to_csr(z) if sparse else z

    db_split, q_split = splits[ec.database_split], splits[ec.query_split]
    sets = {
        "database": codes.CodeSet(embed(db_split), db_split.labels),
        "queries": codes.CodeSet(embed(q_split), q_split.labels),
    }
    if ec.instance_queries > 0:
        views = augment_split(
            q_split, ec.instance_queries, dict(ec.instance_augment), ec.instance_seed
        )
        sets["instance_queries"] = codes.CodeSet(embed(views), views.labels)
    if ec.distractors > 0:
        sets["distractors"] = embed_distractors(embed, db_split, ec)
    meta = {
        "workdir": os.path.abspath(workdir),
        "step": int(state.step),
        "database_split": ec.database_split,
        "query_split": ec.query_split,
        "activation": config.model.activation,
        "regularizer": config.regularizer.name,
        "instance_seed": ec.instance_seed,
        "instance_augment": dict(ec.instance_augment),
        "distractors": int(ec.distractors),
        "distractor_seed": ec.distractor_seed,
        "config": json.loads(config.to_json_best_effort()),
    }

    def write_jsonl(tmp_folder):
        for name, s in sets.items():
            codes.to_jsonl(
                os.path.join(tmp_folder, f"{name}.jsonl"),
                s.codes,
                quantize=ec.jsonl_quantize or None,
            )

    folder = os.path.join(workdir, CODES_DIR)
    codes.save_codes(folder, sets, meta, extra=write_jsonl if ec.jsonl else None)
    return codes.load_metadata(folder)
