"""Fashion-MNIST, ReLU codes of dimension 1024, FLOPs regulariser (the default experiment).

python launch.py --config=experiments/fashion_mnist.py --workdir=runs/fmnist_flops
python launch.py --config=experiments/fashion_mnist.py:smoke --workdir=/tmp/smoke
"""

from sparse_flops.config import base_config, smoke


def get_config(arg: str | None = None):
    c = base_config()
    c.data.source = "fashion_mnist"
    c.augment.shift = 2
    c.augment.flip = True
    c.model.backbone = "small_convnet"
    c.model.dim = 1024
    c.model.activation = "relu"
    c.loss.name = "norm_softmax"
    c.loss.scale = 16.0
    c.regularizer.name = "flops"
    # The study's validation choice (experiments/study_fashion_mnist.py, docs/results.md: the
    # sparsest weight within 0.01 precision@1 of FLOPs' best on the 10,000-image validation
    # split, three seeds; docs/tuning.md for the penalty's target): the penalty sees the head's
    # activations before the L2 normalisation, whose BatchNorm has no learned scale to undo it.
    # Chosen with the study's shorter recipe (800 steps, a narrower ConvNet) and not re-tuned at
    # this config's 3000 steps.
    c.regularizer.on = "activations"
    c.model.batch_norm_scale = False
    c.regularizer.weight = 0.03
    c.regularizer.warmup_steps = 1000
    c.eval.num_queries = 0  # all 10,000 test items query the test split (leave-one-out)
    if arg == "smoke":
        smoke(c)
        c.model.backbone_kwargs.channels = (8, 16, 32)
        c.model.backbone_kwargs.features = 64
        c.model.dim = 256
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'smoke' or nothing")
    return c
