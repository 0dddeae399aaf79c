"""What a run tells its user: quiet third-party logs, progress bars, and the metric log of a
workdir (``metrics.jsonl`` and TensorBoard event files, written side by side).

    tensorboard --logdir runs
"""

from __future__ import annotations

import logging as py_logging
import os
import sys

from tqdm.auto import tqdm

from sparse_flops import io_utils

# Loggers whose INFO lines say nothing a user of this project acts on (JAX probing for TPU and
# proxy backends, Orbax's per-save chatter, faiss announcing its build).
NOISY_LOGGERS = ("jax._src.xla_bridge", "jax._src.compiler", "orbax", "absl.orbax", "faiss.loader")


def quiet_third_party(verbose: bool = False) -> None:
    """Raises the level of :data:`NOISY_LOGGERS` to WARNING, unless ``verbose``."""
    level = py_logging.DEBUG if verbose else py_logging.WARNING
    for name in NOISY_LOGGERS:
        py_logging.getLogger(name).setLevel(level)


def progress(iterable=None, **kwargs):
    """A tqdm progress bar on stderr, shown only when stderr is a terminal (never in CI logs or
    redirected output); ``kwargs`` go to tqdm (``desc``, ``total``, ``unit``)."""
    kwargs.setdefault("disable", not _is_terminal())
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


def _is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def tensorboard_tag(key: str) -> str:
    """The TensorBoard tag of a metric key: ``@`` is not allowed in tags, so ``precision@1``
    becomes ``precision_at_1``."""
    return key.replace("@", "_at_")


class MetricLog:
    """The metric log of a workdir: one JSON record per log or evaluation point in
    ``metrics.jsonl`` and the same scalars in TensorBoard event files (tensorboardX).

    Args:
      workdir: the run's folder.
      start_step: the step the run resumes from; records past it (written by a killed run, to be
        written again) are dropped from both logs. 0 starts both afresh.
      enabled: False on the processes that do not write (multi-host: only process 0 writes).
    """

    def __init__(self, workdir: str, start_step: int = 0, *, enabled: bool = True):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        if start_step:
            kept = [r for r in io_utils.read_jsonl(self.path) if r["step"] <= start_step]
            io_utils.write_jsonl(self.path, kept)
        elif os.path.exists(self.path):
            os.remove(self.path)
        from tensorboardX import SummaryWriter

        # purge_step hides the events past the checkpoint that a killed run left behind.
        self._tb = SummaryWriter(
            workdir, purge_step=start_step if start_step else None, flush_secs=30
        )

    def write(self, step: int, scalars: dict[str, float]) -> None:
        """Appends ``{"step": step, **scalars}`` to ``metrics.jsonl`` and each scalar to
        TensorBoard under :func:`tensorboard_tag` of its key (``train/loss``,
        ``eval/precision_at_1``)."""
        if not self.enabled:
            return
        io_utils.append_jsonl(self.path, {"step": step, **scalars})
        for key, value in scalars.items():
            self._tb.add_scalar(tensorboard_tag(key), value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
