"""CIFAR-100 with the paper's settings: NiN-style ConvNet (192 channels, dropout 0.5), d = 64,
soft-threshold 0.1 codes, triplet semi-hard loss (margin 0.1), FLOPs weight 1e-3 warmed up over
15k steps, Adam 1e-3 divided by 10 at 15k, batch 512, 50k steps.

The data is not shipped: extract the official "python version" archive and pass its folder.

    python launch.py --config=experiments/cifar100.py --workdir=runs/cifar100 \\
        --config.data.dir=/path/to/cifar-100-python
"""

from sparse_flops.config import base_config, smoke


def get_config(arg: str | None = None):
    c = base_config()
    c.data.source = "cifar100"
    c.augment.shift = 4
    c.augment.flip = True
    c.model.backbone = "cifar_convnet"
    c.model.dim = 64
    c.model.activation = "soft_threshold"
    c.model.threshold = 0.1
    c.loss.name = "triplet"
    c.loss.margin = 0.1
    c.regularizer.name = "flops"
    c.regularizer.weight = 1e-3
    c.regularizer.warmup_steps = 15000
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.lr_schedule = "step"
    c.optimizer.decay_boundaries = (15000,)
    c.train.num_steps = 50000
    c.train.batch_size = 512
    c.train.eval_every = 5000
    c.train.checkpoint_every = 2500
    c.eval.ks = (1, 4, 16, 64)
    if arg == "smoke":
        smoke(c)
        c.model.backbone_kwargs.channels = 16
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'smoke' or nothing")
    return c
