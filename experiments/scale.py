"""Synthetic retrieval benchmark of the sparse engine at a million items (no model, no data files).

python launch.py --mode=scale --config=experiments/scale.py --workdir=runs/scale
python launch.py --mode=scale --config=experiments/scale.py --workdir=runs/scale \\
    --config.scale.nonzeros=32 --config.scale.profiles=uniform
python launch.py --mode=scale --config=experiments/scale.py --workdir=runs/scale_b16384 \\
    --config.scale.nonzeros=32 --config.scale.profiles=uniform --config.scale.block_size=16384
"""

import ml_collections


def get_config(arg: str | None = None):
    c = ml_collections.ConfigDict()
    c.scale = ml_collections.ConfigDict()
    c.scale.num_items = 1_000_000  # database rows
    c.scale.dim = 1024
    c.scale.num_queries = 1000
    c.scale.nonzeros = (8, 32, 64)  # mean non-zeros per row, one row of the report each
    c.scale.profiles = ("uniform", "zipf")  # activation profiles over the dimensions
    c.scale.k = 100
    c.scale.repeats = 3  # timed repeats; the median is reported
    c.scale.scipy_queries = 200  # queries timed (and checked) on scipy's Q @ D.T
    c.scale.batch_size = 16  # the batched search's queries per batch (a column of its own)
    c.scale.seed = 0
    c.scale.block_size = 0  # rows per block of the compact engine; 0: its default (8,192)
    if arg == "smoke":
        c.scale.num_items = 3000
        c.scale.dim = 64
        c.scale.num_queries = 20
        c.scale.nonzeros = (4,)
        c.scale.repeats = 1
        c.scale.scipy_queries = 10
        c.scale.k = 10
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'smoke' or nothing")
    return c
