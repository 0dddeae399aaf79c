"""The study's open-set part: instance retrieval among a million distractors (the paper's face
protocol, where its speed claim is made), on Fashion-MNIST.

    python launch.py --mode=sweep --config=experiments/open_set_fashion_mnist.py \\
        --workdir=runs/open_set

Models are trained on the 50,000 training images left after the validation split with the
NT-Xent loss (two augmented views of each image must find each other among the batch), so that
tens of thousands of identities stay apart; their validation figure is instance recall
(``eval.regime = instance``: views of 2,000 validation images query the 10,000 validation
originals). Each export embeds 1,000,000 distractors (seeded augmented views of the training
images, 20 per image, 20,000 at a time, no image kept) and 1,000 views of test images as
queries; the benchmark searches the distractors followed by the 10,000 test originals
(``open_set``), recall@1/10/100 of each query's own original, no self-match.

The class-trained models (``cls_*``: the normalised-softmax loss over the ten classes, the class
study's augmentation) are reported beside the NT-Xent ones.

Size: the member recipe is the class study's (``study_fashion_mnist.py``: the narrow ConvNet,
800 steps, the penalty on the activations), with two views per step. Only a few points per
family enter this table (the class study's sweeps give the full curves): embedding a million
images takes minutes per model on two CPU cores. The reference (two-stage re-ranker and the
data the PCA/LSH/PQ baselines are fitted on) is dense-128: 1,000,000 dense 1024-dimensional
codes would need 4 GB of memory and of disk per export.
"""

import ml_collections

from experiments import study_fashion_mnist
from experiments.study_fashion_mnist import DENSE

# The class study's loss and training augmentation (experiments/fashion_mnist.py).
CLASS = "loss.name=norm_softmax augment.flip=True augment.contrast=0.0 augment.noise=0.0"


def get_config(arg: str | None = None):
    c = study_fashion_mnist.get_config(arg)
    c.loss.name = "ntxent"
    c.loss.temperature = 0.1
    # Training views cover the query views (shift 1, contrast 0.2, noise 0.05) and more.
    c.augment.shift = 2
    c.augment.flip = False
    c.augment.contrast = 0.3
    c.augment.noise = 0.05
    c.eval.regime = "instance"
    c.eval.num_queries = 2000
    c.export.distractors = 1_000_000
    c.export.distractor_chunk = 20_000
    c.benchmark.regimes = ("open_set",)
    c.benchmark.pca_dims = (16, 32, 64)
    c.benchmark.lsh_bits = (64, 128, 256, 512)
    c.benchmark.pq_m = (8, 16, 32, 64)
    c.sweep.families = ml_collections.ConfigDict(
        dict(
            dense=f"{DENSE} model.dim=128|32",
            flops="regularizer.name=flops regularizer.weight=0.03|0.1|0.3",
            l1="regularizer.name=l1 regularizer.weight=0.003|0.03",
            relu="regularizer.name=none regularizer.weight=0.0",
            # Class-trained models beside them: the class study's member recipe (its loss and
            # augmentation), at FLOPs' validation choice there and the dense-128 peer.
            cls_flops=f"{CLASS} regularizer.name=flops regularizer.weight=0.03",
            cls_dense=f"{CLASS} {DENSE} model.dim=128",
        )
    )
    c.sweep.reference = "dense-dim128"
    c.sweep.record_dir = "results/open_set_fashion_mnist"
    if arg == "smoke":
        c.eval.num_queries = 64
        c.export.distractors = 2000
        c.export.distractor_chunk = 1000
        c.export.instance_queries = 32
        c.sweep.families = ml_collections.ConfigDict(
            dict(
                dense=f"{DENSE} model.dim=32",
                flops="regularizer.name=flops regularizer.weight=0.1",
            )
        )
        c.sweep.seeds = (0,)
        c.sweep.reference = "dense"
        c.sweep.record_dir = ""
    return c
