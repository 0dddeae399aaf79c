"""Training throughput per backbone, with and without the penalty (random inputs, no data files).

python launch.py --mode=throughput --config=experiments/throughput.py --workdir=runs/throughput
python launch.py --mode=throughput --config=experiments/throughput.py --workdir=runs/tp \\
    --config.throughput.batch_size=64 --config.throughput.steps=10
On an accelerator, pass its peak to get the fraction of peak, e.g. an H100 in bf16:
python launch.py --mode=throughput --config=experiments/throughput.py --workdir=runs/tp \\
    --config.throughput.backbones=cifar_convnet,resnet50 --config.throughput.batch_size=512 \\
    --config.throughput.compute_dtype=bfloat16 --config.throughput.peak_tflops=989
"""

import ml_collections


def get_config(arg: str | None = None):
    c = ml_collections.ConfigDict()
    c.throughput = ml_collections.ConfigDict()
    c.throughput.backbones = ("small_convnet", "cifar_convnet", "resnet18")
    c.throughput.penalties = ("none", "flops", "l1")
    c.throughput.batch_size = 256  # global batch
    c.throughput.steps = 20  # timed steps per measurement (after warm-up)
    c.throughput.rounds = 3  # rounds in rotated order; each row keeps its median
    c.throughput.dim = 1024
    c.throughput.compute_dtype = "float32"  # float32 | bfloat16
    c.throughput.peak_tflops = 0.0  # > 0: the device's peak, to report the fraction of it
    if arg == "smoke":
        c.throughput.backbones = ("mlp",)
        c.throughput.batch_size = 8
        c.throughput.steps = 1
        c.throughput.rounds = 1
        c.throughput.dim = 64
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'smoke' or nothing")
    return c
