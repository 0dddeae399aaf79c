"""Fashion-MNIST with the L1 penalty in place of FLOPs (the paper's baseline regulariser).

python launch.py --config=experiments/fashion_mnist_l1.py --workdir=runs/fmnist_l1
"""

from experiments import fashion_mnist


def get_config(arg: str | None = None):
    c = fashion_mnist.get_config(arg)
    c.regularizer.name = "l1"
    # The study's validation choice for L1 (experiments/study_fashion_mnist.py, docs/results.md:
    # the sparsest weight within 0.01 precision@1 of L1's best on validation), on the
    # activations like FLOPs (experiments/fashion_mnist.py).
    c.regularizer.weight = 0.001
    return c
