"""sparse_flops: learning sparse embeddings with minimal retrieval FLOPs (Paria et al., 2020).

The pure functions a notebook needs are importable from here. They load on first use: importing
the package (or its retrieval side, :mod:`sparse_flops.codes`, :mod:`sparse_flops.retrieval`,
:mod:`sparse_flops.metrics`, :mod:`sparse_flops.bench`) does not import JAX; the penalties,
losses and models import it when first touched.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS = {
    "arcface_loss": "losses",
    "cosface_loss": "losses",
    "l2_normalize": "losses",
    "norm_softmax_loss": "losses",
    "ntxent_loss": "losses",
    "triplet_semihard_loss": "losses",
    "make_objective": "losses",
    "activation_probabilities": "metrics",
    "code_statistics": "metrics",
    "cost_summary": "metrics",
    "evaluate_embeddings": "metrics",
    "ranking_metrics": "metrics",
    "topk_metrics": "metrics",
    "SparseHead": "models",
    "build_model": "models",
    "make_backbone": "models",
    "soft_threshold": "models",
    "constant": "regularizers",
    "flops": "regularizers",
    "l1": "regularizers",
    "make_penalty": "regularizers",
    "quadratic_warmup": "regularizers",
    "sparsity_stats": "regularizers",
    "two_sided_penalty": "regularizers",
    "unbiased_flops": "regularizers",
    "weight_schedule": "regularizers",
    "SparseIndex": "retrieval",
    "DenseIndex": "retrieval",
    "CodeSet": "codes",
    "load_codes": "codes",
    "save_codes": "codes",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"sparse_flops.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sparse_flops' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
