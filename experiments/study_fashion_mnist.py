"""The study on Fashion-MNIST (issue: the paper's speed-vs-accuracy claim): every family's curve,
three seeds each, hyper-parameters read on a validation split, every reported figure on test.

    python launch.py --mode=sweep --config=experiments/study_fashion_mnist.py --workdir=runs/study
    python launch.py --mode=sweep --config=experiments/study_fashion_mnist.py \\
        --workdir=runs/study --config.sweep.seeds=0     # one part: the first seed
    python launch.py --mode=collect --config=experiments/study_fashion_mnist.py \
        --workdir=runs/study                            # after the parts: every seed's records

Members train on the 50,000 training images left after carving out a 10,000-image validation
split (``data.validation_size``); their training-time evaluation (``eval_split = validation``,
every validation image querying the others) is the validation figure each choice is made on.
The export embeds the 50,000 training images as the database and the 10,000 test images as
queries (class regime), plus 1,000 augmented views of test images for the instance regime
(database: the training images followed by the test originals). Only those test-split exports
are benchmarked and reported.

Size, chosen so that one seed of the whole sweep (15 members) runs in one part of under an
hour on two CPU cores, and the three seeds in about three hours (or minutes on an accelerator):
a narrower ConvNet than ``fashion_mnist.py`` (channels 16-32-64, 128 features, about 8 steps/s
here against 2.8 for the default) trained for 800 steps of 256 images (about 4 epochs of the
50,000), the regulariser warmed up over the first 300. A member takes 2-4 minutes here (training
about 2; the reference member's PCA/LSH/PQ/IVF-PQ rows about 7 more); timings are taken on 200
of the 1,000 test queries. This costs points of precision against the 3,000-step default; the
comparisons are between families trained alike.
"""

import ml_collections

from experiments import fashion_mnist
from sparse_flops.config import smoke

# A dense family's fixed words: no code activation, no penalty (its grid axis: model.dim).
DENSE = "model.activation=none regularizer.name=none regularizer.weight=0.0"


def get_config(arg: str | None = None):
    c = fashion_mnist.get_config()
    c.data.validation_size = 10_000
    c.data.eval_split = "validation"
    c.model.backbone_kwargs.channels = (16, 32, 64)
    c.model.backbone_kwargs.features = 128
    c.train.num_steps = 800
    c.train.eval_every = 800
    c.train.checkpoint_every = 200
    c.train.log_every = 100
    c.regularizer.warmup_steps = 300
    # A deviation from the original code, chosen on validation (experiments/tune_fashion_mnist.py,
    # docs/tuning.md): the penalty sees the head's activations before the L2 normalisation, and
    # the head's BatchNorm has no learned scale. On the normalised codes FLOPs stalls near 1/C
    # with C = 10 classes and d = 1024: ~100 non-zeros at its strongest weight, then collapse.
    c.regularizer.on = "activations"
    c.model.batch_norm_scale = False
    c.eval.num_queries = 0  # every validation image queries the validation split

    b = c.benchmark
    b.num_queries = 1000  # accuracy over 1,000 test queries
    b.timing_queries = 200  # ms/query timed on the first 200 of them, median of 3 repeats
    b.repeats = 3
    b.threads = 1  # one thread: the study's timings
    b.pca_dims = (16, 32, 64, 128, 256)
    b.lsh_bits = (64, 128, 256, 512, 1024, 2048)
    b.pq_m = (8, 16, 32, 64, 128)
    b.ivf_nprobe = (1, 4, 16, 64)
    b.two_stage_candidates = (50, 200, 1000)

    c.sweep = ml_collections.ConfigDict()
    # Each family: key=value words; a|b|c is a grid axis. From "almost dense" to "very sparse".
    c.sweep.families = ml_collections.ConfigDict(
        dict(
            dense=f"{DENSE} model.dim=1024|128|64|32",
            flops="regularizer.name=flops regularizer.weight=0.01|0.03|0.1|0.3|1.0",
            l1="regularizer.name=l1 regularizer.weight=0.001|0.003|0.01|0.03|0.1",
            relu="regularizer.name=none regularizer.weight=0.0",
        )
    )
    c.sweep.seeds = (0, 1, 2)
    c.sweep.only = ()  # families to run in this part; () = all
    # Its seed's dense re-ranker of the two-stage pipeline and the export the compact-code
    # baselines (PCA, LSH, PQ, IVF-PQ) are fitted on.
    c.sweep.reference = "dense-dim1024"
    c.sweep.stages = ("train", "export", "benchmark")  # ("train",): a tuning sweep
    c.sweep.time_budget_min = 0  # > 0: start no member past this many minutes (one part)
    # Each finished member's record (member.json) is copied here, inside the repository, so a
    # study survives its run folders; a member with a record here counts as finished.
    c.sweep.record_dir = "results/study_fashion_mnist"
    if arg == "smoke":
        smoke(c)
        c.model.backbone_kwargs.channels = (8, 16, 32)
        c.model.backbone_kwargs.features = 64
        c.data.validation_size = 128
        c.model.dim = 64
        c.sweep.families = ml_collections.ConfigDict(
            dict(
                dense=f"{DENSE} model.dim=64|16",
                flops="regularizer.name=flops regularizer.weight=0.5|5.0",
                l1="regularizer.name=l1 regularizer.weight=0.05",
            )
        )
        c.sweep.seeds = (0, 1)
        c.sweep.reference = "dense-dim64"
        c.sweep.record_dir = ""
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'smoke' or nothing")
    return c
