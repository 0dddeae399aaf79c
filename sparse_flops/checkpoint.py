"""Every Orbax call of the project: checkpoint manager, save, restore, resume.

Checkpoints live in ``<workdir>/checkpoints/<step>``. Orbax writes each step to a temporary
folder and renames it when complete, so a run killed mid-save leaves the previous checkpoints
intact and the half-written one is ignored on restore.
"""

from __future__ import annotations

import logging
import os
import sys

import jax
import orbax.checkpoint as ocp


class _QuietOrbax(logging.Filter):
    """Drops Orbax's INFO chatter (several lines per save) from the shared absl logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "orbax" not in record.pathname


_FILTER = _QuietOrbax()
logging.getLogger("absl").addFilter(_FILTER)


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def make_manager(workdir: str, *, max_to_keep: int = 3, async_save: bool = True):
    """A ``CheckpointManager`` over ``<workdir>/checkpoints``."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=True,
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(
        checkpoint_dir(workdir), options=options, item_handlers=ocp.StandardCheckpointHandler()
    )


def save(manager, step: int, state, *, force: bool = False) -> bool:
    """Saves the pytree ``state`` as step ``step`` (asynchronously when the manager is)."""
    return manager.save(step, args=ocp.args.StandardSave(state), force=force)


def restore(manager, target, step: int | None = None):
    """Restores step ``step`` (default: latest) into the structure, shapes, dtypes and shardings
    of ``target`` (a pytree of arrays or ``jax.ShapeDtypeStruct``)."""
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    abstract = jax.tree.map(_abstract, target)
    _check_fits(manager, step, abstract)
    try:
        return manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"checkpoint {step} in {manager.directory} does not fit the model or optimiser of "
            "this config (was it written with another backbone, dimension or optimiser?); "
            f"resume with the config in the workdir's config.json or use a fresh --workdir. "
            f"Orbax said: {e}"
        ) from e


def _shapes_by_path(tree) -> dict[tuple, tuple]:
    def name(k):
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                return str(getattr(k, attr))
        return str(k)

    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {tuple(name(k) for k in path): tuple(leaf.shape) for path, leaf in leaves}


def _check_fits(manager, step: int, abstract) -> None:
    """Compares the saved arrays' names and shapes with the target's before Orbax reads any
    data: a checkpoint of another model or optimiser fails here, cleanly, rather than half-way
    through an asynchronous restore."""
    try:
        saved = _shapes_by_path(manager.item_metadata(step))
    except Exception as e:  # noqa: BLE001 - unreadable metadata: let the restore report it
        logging.getLogger("absl").debug("no metadata for checkpoint %d: %s", step, e)
        return
    if not saved:
        return
    wanted = _shapes_by_path(abstract)
    differ = [
        f"{'/'.join(p)}: saved {saved.get(p)}, wanted {wanted.get(p)}"
        for p in sorted(set(saved) | set(wanted))
        if saved.get(p) != wanted.get(p)
    ]
    if differ:
        raise ValueError(
            f"checkpoint {step} in {manager.directory} does not fit the model or optimiser of "
            "this config (was it written with another backbone, dimension or optimiser?); "
            "resume with the config in the workdir's config.json or use a fresh --workdir. "
            f"{len(differ)} arrays differ, e.g. {differ[0]}"
        )


def _abstract(x):
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    sharding = getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)


# What Orbax's and tensorstore's background threads print when a restore fails half-way: noise
# after the real error, which would bury ours.
_BACKGROUND_NOISE = ("Event loop is closed", "cannot schedule new futures after")


def _quiet_background_errors() -> None:
    """From now on, drops the follow-up errors that background threads print (through
    ``sys.excepthook``) after a failed restore, which may come after the restore has returned;
    every other error still prints. Installed once, on the first failed restore."""
    if getattr(sys.excepthook, "_sparse_flops_filter", False):
        return
    previous = sys.excepthook

    def hook(kind, value, tb):
        if isinstance(value, RuntimeError) and any(n in str(value) for n in _BACKGROUND_NOISE):
            return
        previous(kind, value, tb)

    hook._sparse_flops_filter = True
    sys.excepthook = hook


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:limit]


def restore_or_keep(manager, state):
    """``(restored state, True)`` from the newest checkpoint that restores, or ``(state, False)``
    when there is none.

    A damaged or partial newest checkpoint is skipped with a warning that names it and says why,
    and the next older one is tried; when none restores, a ``ValueError`` names the folder and
    each step's failure (the checkpoints are left as they are).
    """
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        return state, False
    failures = []
    for step in steps:
        try:
            restored = restore(manager, state, step)
        except Exception as e:  # noqa: BLE001 - damaged files raise many types; all are reported
            _quiet_background_errors()
            failures.append(f"step {step}: {_first_line(e)}")
            logging.getLogger("absl").warning(
                "checkpoint %d in %s does not restore (%s); trying an older one",
                step,
                manager.directory,
                _first_line(e),
            )
            continue
        if failures:
            logging.getLogger("absl").warning(
                "resuming from checkpoint %d; skipped the newer %s", step, steps[: len(failures)]
            )
        return restored, True
    raise ValueError(
        f"no checkpoint in {manager.directory} restores into this config's model and optimiser "
        f"(tried {steps}); nothing was changed. If the config changed, resume with the "
        "workdir's config.json; otherwise the files are damaged. Failures:\n" + "\n".join(failures)
    )


def close(manager) -> None:
    manager.wait_until_finished()
    manager.close()
