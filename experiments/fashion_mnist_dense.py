"""Fashion-MNIST dense baseline: same network and steps, no code activation, no penalty.

python launch.py --config=experiments/fashion_mnist_dense.py --workdir=runs/fmnist_dense
"""

from experiments import fashion_mnist


def get_config(arg: str | None = None):
    c = fashion_mnist.get_config(arg)
    c.model.activation = "none"
    c.regularizer.name = "none"
    c.regularizer.weight = 0.0
    # No penalty for the head's BatchNorm scale to undo: it keeps its learned scale.
    c.model.batch_norm_scale = True
    return c
