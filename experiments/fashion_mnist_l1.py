"""Fashion-MNIST with the L1 penalty in place of FLOPs (the paper's baseline regulariser).

python launch.py --config=experiments/fashion_mnist_l1.py --workdir=runs/fmnist_l1
"""

from experiments import fashion_mnist


def get_config(arg: str | None = None):
    c = fashion_mnist.get_config(arg)
    c.regularizer.name = "l1"
    c.regularizer.weight = 0.05
    return c
