"""A trained workdir's splits embedded and handed to :mod:`sparse_flops.codes` (the JAX side).

    python launch.py --mode=export --workdir=runs/fmnist

Writes ``<workdir>/codes/``: the database split, the query split (class retrieval) and, with
``config.export.instance_queries > 0``, augmented views of held-out items (instance retrieval).
Sparse models give scipy CSR codes, dense models (``model.activation = none``) ``.npy`` arrays.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from sparse_flops import codes, data, evaluation, train

CODES_DIR = codes.CODES_DIR


def augment_split(split: data.ArraySplit, n: int, augment_kwargs: dict, seed: int):
    """Seeded augmented views of the first ``n`` items of ``split``, each labelled by the row of
    its source item; in chunks so the augmentation never holds more than 1000 images at once."""
    x = split.inputs[:n]
    out = []
    key = jax.random.key(seed)
    for start in range(0, len(x), 1000):
        k = jax.random.fold_in(key, start)
        out.append(np.asarray(data.augment(k, x[start : start + 1000], **augment_kwargs)))
    return data.ArraySplit(np.concatenate(out).astype(np.float32), np.arange(len(x)))


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
    meta = {
        "workdir": os.path.abspath(workdir),
        "step": int(state.step),
        "database_split": ec.database_split,
        "query_split": ec.query_split,
        "activation": config.model.activation,
        "regularizer": config.regularizer.name,
        "instance_seed": ec.instance_seed,
        "instance_augment": dict(ec.instance_augment),
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
