"""Containers and errors shared by the data sources."""

from __future__ import annotations

import dataclasses

import numpy as np


class DataError(ValueError):
    """A data source is missing, corrupt, or does not fit the configuration."""


@dataclasses.dataclass(frozen=True)
class ArraySplit:
    """One split held in memory: ``inputs`` ``(n, ...)`` float32 and ``labels`` ``(n,)`` int32."""

    inputs: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        if len(self.inputs) != len(self.labels):
            raise DataError(f"{len(self.inputs)} inputs but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> ArraySplit:
        return ArraySplit(self.inputs[index], self.labels[index])
