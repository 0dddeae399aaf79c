"""Code files: scipy CSR (sparse codes) or dense arrays, with labels and ``metadata.json``; a
JSON-lines form for learned-sparse retrieval engines; a validating loader. NumPy and scipy only:
the retrieval side reads codes without importing JAX (the JAX side, :mod:`sparse_flops.export`,
embeds a trained workdir and calls :func:`save_codes`).

Layout of ``<workdir>/codes/``::

    metadata.json                 config, step, dimension, kind, per-set statistics
    <set>.npz                     scipy.sparse.save_npz CSR (kind 'sparse') or
    <set>.npy                     float32 (n, d) array (kind 'dense')
    <set>_labels.npy              int64 (n,) labels

Sets: ``database`` (the database split), ``queries`` (the held-out query split, class retrieval),
``instance_queries`` (augmented views of held-out items, instance retrieval against the
database followed by the held-out items; see
:func:`sparse_flops.bench.regimes.instance_regime`) and ``distractors`` (augmented views of the
database split's images: open-set retrieval searches them followed by the held-out items).
Exact zeros stay zeros and signed codes keep their negative entries (the original code dropped
them). Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from sparse_flops import io_utils, metrics

SETS = ("database", "queries", "instance_queries", "distractors")
CODES_DIR = "codes"
FORMAT_VERSION = 1


class CodesError(ValueError):
    """A codes folder or file is missing, corrupt, or inconsistent."""


@dataclass
class CodeSet:
    """One exported set: ``codes`` (CSR or dense ``(n, d)``) and ``labels`` ``(n,)``."""

    codes: sp.csr_matrix | np.ndarray
    labels: np.ndarray

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.codes)

    def dense(self) -> np.ndarray:
        return self.codes.toarray() if self.is_sparse else np.asarray(self.codes)


def to_csr(z: np.ndarray) -> sp.csr_matrix:
    """CSR float32 of ``z`` ``(n, d)`` keeping every non-zero (negative ones included)."""
    m = sp.csr_matrix(np.asarray(z, np.float32))
    m.eliminate_zeros()
    m.sort_indices()
    return m


def _set_stats(codes) -> dict:
    stats = metrics.cost_summary(codes)
    p = metrics.activation_probabilities(codes)
    out = {
        "n": int(codes.shape[0]),
        "mean_nonzeros": stats["mean_nonzeros"],
        "nonzero_fraction": stats["nonzero_fraction"],
        "sum_p_squared": stats["sum_p_squared"],
        "r_sub": stats["r_sub"],
        "p_summary": {
            "max": float(p.max()),
            "mean": float(p.mean()),
            "median": float(np.median(p)),
            "dead_dimensions": int(np.sum(p == 0)),
        },
    }
    if sp.issparse(codes):
        out["negative_fraction"] = float(np.mean(codes.data < 0)) if codes.nnz else 0.0
        out["empty_rows"] = int(np.sum(np.diff(codes.indptr) == 0))
    return out


def save_set(folder: str, name: str, codes, labels: np.ndarray) -> None:
    """Writes one set atomically (CSR via ``save_npz`` or dense ``.npy``) and its labels."""
    labels = np.asarray(labels, np.int64)
    if codes.shape[0] != len(labels):
        raise CodesError(f"{name}: {codes.shape[0]} codes but {len(labels)} labels")
    if sp.issparse(codes):
        csr = sp.csr_matrix(codes, dtype=np.float32)
        io_utils.atomic_write_file(
            os.path.join(folder, f"{name}.npz"), lambda f: sp.save_npz(f, csr)
        )
    else:
        arr = np.asarray(codes, np.float32)
        io_utils.atomic_write_file(os.path.join(folder, f"{name}.npy"), lambda f: np.save(f, arr))
    io_utils.atomic_write_file(
        os.path.join(folder, f"{name}_labels.npy"), lambda f: np.save(f, labels)
    )


def save_codes(
    folder: str,
    sets: dict[str, CodeSet],
    metadata: dict,
    extra: Callable[[str], None] | None = None,
) -> None:
    """Writes ``sets`` and ``metadata.json`` (with per-set statistics added) as one unit.

    Everything goes to a fresh folder beside ``folder`` (``extra(tmp_folder)`` may add files
    there, e.g. JSON lines), which then replaces ``folder``: a killed or failed export leaves the
    previous export whole, or (killed between the two renames) no ``folder`` at all, which the
    loader reports; never files of two exports side by side.
    """
    folder = os.path.abspath(folder)
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.new-", dir=parent)
    try:
        _write_codes(tmp, sets, metadata)
        if extra is not None:
            extra(tmp)
        old = None
        if os.path.exists(folder):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.old-", dir=parent)
            os.replace(folder, os.path.join(old, "codes"))
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_codes(folder: str, sets: dict[str, CodeSet], metadata: dict) -> None:
    dims = {s.codes.shape[1] for s in sets.values()}
    if len(dims) != 1:
        raise CodesError(f"sets have different dimensions {sorted(dims)}")
    kinds = {s.is_sparse for s in sets.values()}
    if len(kinds) != 1:
        raise CodesError("mixing sparse and dense sets in one codes folder")
    meta = dict(metadata)
    meta.update(
        format_version=FORMAT_VERSION,
        dim=dims.pop(),
        kind="sparse" if kinds.pop() else "dense",
        sets={name: _set_stats(s.codes) for name, s in sets.items()},
    )
    for name, s in sets.items():
        save_set(folder, name, s.codes, s.labels)
    # metadata last: a folder with metadata.json is complete.
    io_utils.atomic_write_text(os.path.join(folder, "metadata.json"), json.dumps(meta, indent=2))


def load_metadata(folder: str) -> dict:
    path = os.path.join(folder, "metadata.json")
    if not os.path.isfile(path):
        raise CodesError(
            f"{path} is missing: {folder} holds no complete export; run "
            "`python launch.py --mode=export --config=... --workdir=...` first"
        )
    try:
        with open(path) as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise CodesError(f"{path} is not valid JSON ({e}); export again") from e
    for key in ("dim", "kind", "sets"):
        if key not in meta:
            raise CodesError(f"{path} lacks '{key}'; export again")
    return meta


def load_set(folder: str, name: str, meta: dict | None = None) -> CodeSet:
    """Loads and validates one set: shape, dtype, finite values, labels matching the rows."""
    meta = meta if meta is not None else load_metadata(folder)
    if name not in meta["sets"]:
        raise CodesError(f"{folder} has no set {name!r}; it has {sorted(meta['sets'])}")
    sparse = meta["kind"] == "sparse"
    path = os.path.join(folder, f"{name}.npz" if sparse else f"{name}.npy")
    label_path = os.path.join(folder, f"{name}_labels.npy")
    for p in (path, label_path):
        if not os.path.isfile(p):
            raise CodesError(f"{p} is missing; export again")
    try:
        codes = sp.load_npz(path).tocsr() if sparse else np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise CodesError(f"{path} is corrupt or not a {meta['kind']} code file ({e})") from e
    try:
        labels = np.load(label_path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise CodesError(f"{label_path} is corrupt ({e})") from e
    values = codes.data if sparse else codes
    expected = meta["sets"][name]["n"]
    if codes.ndim != 2 or codes.shape[1] != meta["dim"]:
        raise CodesError(f"{path} has shape {codes.shape}; metadata says (n, {meta['dim']})")
    if codes.shape[0] != expected:
        raise CodesError(f"{path} has {codes.shape[0]} rows; metadata says {expected}")
    if values.dtype != np.float32:
        raise CodesError(f"{path} has dtype {values.dtype}, expected float32")
    if not np.all(np.isfinite(values)):
        raise CodesError(f"{path} contains NaN or infinite values")
    if labels.ndim != 1 or len(labels) != codes.shape[0]:
        raise CodesError(
            f"{label_path} holds {labels.shape} labels for {codes.shape[0]} rows of {path}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise CodesError(f"{label_path} has dtype {labels.dtype}, expected integers")
    if sparse:
        codes.sort_indices()
    return CodeSet(codes, labels.astype(np.int64))


def load_codes(folder: str, names=None) -> tuple[dict, dict[str, CodeSet]]:
    """``(metadata, {name: CodeSet})`` for ``names`` (default: every set in the metadata)."""
    meta = load_metadata(folder)
    names = list(meta["sets"]) if names is None else names
    return meta, {n: load_set(folder, n, meta) for n in names}


# ---------------------------------------------------------------------------------------------
# JSON lines for learned-sparse retrieval engines.


def to_jsonl(
    path: str,
    codes: sp.csr_matrix,
    ids=None,
    *,
    quantize: int | None = None,
    field: str = "vector",
) -> None:
    """Writes one JSON object per row: ``{"id": ..., "<field>": {"<dim>": weight, ...}}``.

    Args:
      path: output file (written atomically).
      codes: CSR ``(n, d)``; non-negative codes are what such engines expect.
      ids: ``(n,)`` ids (default: row numbers).
      quantize: if given, weights become integers ``round(w * quantize / max|w|)`` (the
        impact-score form of learned-sparse engines); zeros after rounding are dropped.
      field: name of the map from dimension to weight.
    """
    if not sp.issparse(codes):
        raise CodesError("to_jsonl takes sparse codes (scipy CSR)")
    codes = sp.csr_matrix(codes)
    ids = np.arange(codes.shape[0]) if ids is None else np.asarray(ids)
    if len(ids) != codes.shape[0]:
        raise CodesError(f"{len(ids)} ids for {codes.shape[0]} rows")
    scale = None
    if quantize is not None:
        if quantize <= 0:
            raise CodesError(f"quantize must be a positive integer, got {quantize}")
        peak = float(np.max(np.abs(codes.data))) if codes.nnz else 1.0
        scale = quantize / peak if peak > 0 else 1.0

    def write(tmp):
        with open(tmp, "w") as f:
            for i in range(codes.shape[0]):
                lo, hi = codes.indptr[i], codes.indptr[i + 1]
                dims, vals = codes.indices[lo:hi], codes.data[lo:hi]
                if scale is None:
                    vec = {str(j): float(v) for j, v in zip(dims, vals, strict=True)}
                else:
                    q = np.rint(vals * scale).astype(np.int64)
                    vec = {str(j): int(v) for j, v in zip(dims, q, strict=True) if v != 0}
                ident = ids[i].item() if hasattr(ids[i], "item") else ids[i]
                f.write(json.dumps({"id": ident, field: vec}) + "\n")

    io_utils.atomic_write(path, write)


def from_jsonl(path: str, dim: int, field: str = "vector") -> tuple[list, sp.csr_matrix]:
    """Reads a file written by :func:`to_jsonl` back to ``(ids, CSR (n, dim))``."""
    ids, rows, cols, vals = [], [], [], []
    with open(path) as f:
        for i, line in enumerate(f):
            obj = json.loads(line)
            ids.append(obj["id"])
            for j, v in obj[field].items():
                rows.append(i)
                cols.append(int(j))
                vals.append(v)
    m = sp.csr_matrix(
        (np.asarray(vals, np.float32), (rows, cols)), shape=(len(ids), dim), dtype=np.float32
    )
    return ids, m
