"""sparse_flops: learning sparse embeddings with minimal retrieval FLOPs (Paria et al., 2020).

The pure functions a notebook needs are importable from here; see each module for the rest.
"""

from sparse_flops.losses import (
    arcface_loss,
    cosface_loss,
    l2_normalize,
    norm_softmax_loss,
    ntxent_loss,
    triplet_semihard_loss,
)
from sparse_flops.metrics import cost_summary, evaluate_embeddings, ranking_metrics, topk_metrics
from sparse_flops.models import SparseHead, build_model, make_backbone, soft_threshold
from sparse_flops.regularizers import (
    activation_probabilities,
    constant,
    flops,
    l1,
    mean_nonzeros,
    nonzero_fraction,
    penalty,
    quadratic_warmup,
    sparsity_stats,
    suboptimality_ratio,
    two_sided_penalty,
    unbiased_flops,
    weight_schedule,
)

__version__ = "0.1.0"

__all__ = [
    "SparseHead",
    "activation_probabilities",
    "arcface_loss",
    "build_model",
    "constant",
    "cosface_loss",
    "cost_summary",
    "topk_metrics",
    "evaluate_embeddings",
    "flops",
    "l1",
    "l2_normalize",
    "make_backbone",
    "mean_nonzeros",
    "nonzero_fraction",
    "norm_softmax_loss",
    "ntxent_loss",
    "penalty",
    "quadratic_warmup",
    "ranking_metrics",
    "soft_threshold",
    "sparsity_stats",
    "suboptimality_ratio",
    "triplet_semihard_loss",
    "two_sided_penalty",
    "unbiased_flops",
    "weight_schedule",
]
