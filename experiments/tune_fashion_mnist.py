"""Recipe tuning for the Fashion-MNIST study, on validation only (nothing here touches test).

    python launch.py --mode=sweep --config=experiments/tune_fashion_mnist.py --workdir=runs/tune

Every member is the study's member recipe (``experiments/study_fashion_mnist.py``: 50,000
training images, the narrow ConvNet, 800 steps) trained and evaluated on the 10,000-image
validation split; ``sweep.stages = ("train",)``, so nothing is exported or benchmarked. Records land
in ``results/tune_fashion_mnist/`` and ``python -m sparse_flops.bench.study --tuning`` tabulates
them (``docs/tuning.md``).

The question it answers: what the penalty should see. On the L2-normalised codes
(``regularizer.on = "codes"``) the FLOPs relaxation of a batch is ``sum_j (mean_i |z_ij|)^2`` with
every row of unit norm, which rewards rows with disjoint supports rather than few non-zeros:
when each class keeps to its own block of dimensions the penalty no longer depends on how many
of them a row uses. On the head's activations before the normalisation, with BatchNorm's learned
scale removed so that units cannot all shrink alike (the loss is blind to that scale), it can
only be lowered by switching units off (the original code penalises those activations).
"""

import ml_collections

from experiments import study_fashion_mnist


def get_config(arg: str | None = None):
    c = study_fashion_mnist.get_config(arg)
    act = "regularizer.on=activations model.batch_norm_scale=False"
    c.sweep.families = ml_collections.ConfigDict(
        dict(
            flops_codes="regularizer.name=flops regularizer.weight=5.0|15.0|50.0",
            flops_act=f"{act} regularizer.name=flops regularizer.weight=0.01|0.03|0.1|0.3|1.0",
            l1_act=f"{act} regularizer.name=l1 regularizer.weight=0.001|0.003|0.01|0.03",
        )
    )
    c.sweep.seeds = (0,)
    c.sweep.stages = ("train",)
    c.sweep.reference = ""
    c.sweep.record_dir = "" if arg == "smoke" else "results/tune_fashion_mnist"
    return c
