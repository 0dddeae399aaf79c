"""Seeded batching: a shuffle per epoch, and the batch of any step computable on its own.

The batch of step ``t`` depends only on ``(seed, t)``, so a resumed run sees exactly the batches
an uninterrupted run would have seen. Each process of a multi-host run takes its contiguous
slice of the global batch.
"""

from __future__ import annotations

import numpy as np

from sparse_flops.data.base import ArraySplit, DataError


class Batcher:
    """Global batches of ``batch_size`` from ``split``, reshuffled every epoch (last partial
    batch of an epoch dropped).

    Args:
      split: the training split.
      batch_size: the global batch size.
      seed: shuffling seed.
      process_index, process_count: this host's slice of each global batch.
    """

    def __init__(
        self,
        split: ArraySplit,
        batch_size: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
    ):
        if batch_size <= 0:
            raise DataError(f"batch size must be positive, got {batch_size}")
        if batch_size > len(split):
            raise DataError(
                f"batch size {batch_size} exceeds the {len(split)} training examples; lower "
                "--config.train.batch_size"
            )
        if batch_size % process_count:
            raise DataError(f"batch size {batch_size} is not divisible by {process_count} hosts")
        self.split = split
        self.batch_size = batch_size
        self.seed = seed
        self.steps_per_epoch = len(split) // batch_size
        self.local = batch_size // process_count
        self.offset = process_index * self.local
        self._epoch = -1
        self._perm = None

    def indices(self, step: int) -> np.ndarray:
        """This process's example indices for global step ``step``; ``(batch_size / hosts,)``."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.split))
            self._epoch = epoch
        start = pos * self.batch_size + self.offset
        return self._perm[start : start + self.local]

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """``(inputs, labels)`` of step ``step``, in permutation order, so the global batch (and
        the augmentation each example gets) is the same whatever the number of hosts."""
        idx = self.indices(step)
        return self.split.inputs[idx], self.split.labels[idx]


def batches_in_order(split: ArraySplit, batch_size: int):
    """Yields ``(inputs, labels)`` of consecutive batches covering ``split`` once, in order;
    the last one may be smaller."""
    for start in range(0, len(split), batch_size):
        yield split.inputs[start : start + batch_size], split.labels[start : start + batch_size]
