"""Synthetic class-structured features through an MLP, FLOPs regulariser; needs no data files.

python launch.py --config=experiments/synthetic.py --workdir=runs/synthetic
"""

from sparse_flops.config import base_config, smoke


def get_config(arg: str | None = None):
    c = base_config()
    c.data.source = "synthetic"
    c.data.synthetic.num_classes = 1000
    c.data.synthetic.features = 128
    c.data.synthetic.train_per_class = 40
    c.data.synthetic.test_per_class = 10
    c.augment.noise = 0.02
    c.model.backbone = "mlp"
    c.model.backbone_kwargs.hidden = (512, 512)
    c.model.dim = 1024
    c.loss.name = "arcface"
    c.loss.scale = 32.0
    c.loss.margin = 0.3
    c.regularizer.weight = 2.0
    c.train.num_steps = 2000
    c.train.batch_size = 256
    if arg == "smoke":
        smoke(c)
        c.data.synthetic.num_classes = 20
        c.data.synthetic.train_per_class = 30
        c.model.backbone_kwargs.hidden = (64,)
        c.model.dim = 128
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'smoke' or nothing")
    return c
