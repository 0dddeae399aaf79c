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
    # Read on the test split before the study's protocol existed (3000 steps: weight 5 gave 100
    # non-zeros and -0.9 points of precision@1, weight 7 gave 77 and -1.9), so figures of this
    # run are reference runs, not results. The study's recipe, chosen on validation, penalises
    # the activations instead (experiments/study_fashion_mnist.py, docs/tuning.md).
    c.regularizer.weight = 6.0
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
