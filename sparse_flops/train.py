"""Train state, the pure ``train_step``, ``build`` and the loop ``train_and_evaluate``.

The state is a plain pytree (:class:`TrainState`); the step is a module-level pure function whose
fixed dependencies (model, optimiser, objective, penalty, schedules) are callables resolved from
their names once in :func:`build`, keyword-only, and bound with ``functools.partial`` before
``jax.jit``. The optimiser lives in :mod:`sparse_flops.optim`, evaluation in
:mod:`sparse_flops.evaluation`, config validation in :func:`sparse_flops.config.validate`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from sparse_flops import (
    checkpoint,
    data,
    evaluation,
    io_utils,
    logs,
    losses,
    models,
    optim,
    regularizers,
    sharding,
)
from sparse_flops import (
    config as config_lib,
)

Pytree = Any


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; no functions inside.

    ``rng`` holds raw key data (``jax.random.key_data``) so checkpoints store plain integers.
    """

    step: jax.Array
    params: Pytree
    batch_stats: Pytree
    opt_state: Pytree
    rng: jax.Array


def create_train_state(model, tx, sample_input: np.ndarray, *, seed: int) -> TrainState:
    """Initialises parameters from ``seed`` for inputs shaped like ``sample_input`` ``(b, ...)``."""
    key = jax.random.key(seed)
    init_key, train_key = jax.random.split(key)
    variables = model.init(
        {"params": init_key, "dropout": init_key}, jnp.asarray(sample_input), train=False
    )
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        rng=jax.random.key_data(train_key),
    )


# ---------------------------------------------------------------------------------------------
# The step.


def loss_and_grads(
    params: Pytree,
    state: TrainState,
    batch: tuple[jax.Array, jax.Array],
    *,
    model,
    objective: losses.Objective,
    penalty_fn: regularizers.Penalty,
    weight_fn: Callable[[jax.Array], jax.Array],
    query_weight_scale: float,
    augment_fn: Callable[[jax.Array, jax.Array], jax.Array],
    penalty_on: str = "codes",
):
    """Total loss, its parts and its gradient with respect to ``params``; pure.

    Args:
      params: the parameters to differentiate.
      state: the train state (batch statistics, step, rng).
      batch: ``(inputs (B, ...), labels (B,))``, the global batch.
      model: an :class:`~sparse_flops.models.EmbeddingModel`.
      objective: the task loss (:func:`sparse_flops.losses.make_objective`); it sets how many
        augmented views of the batch are embedded (two: query side, then database side).
      penalty_fn: ``z (B, d) -> penalty`` (:func:`sparse_flops.regularizers.make_penalty`).
      weight_fn: ``step -> weight`` of the penalty on the database side.
      query_weight_scale: query-side weight over database-side weight (two-view losses).
      augment_fn: ``(key, inputs) -> augmented inputs``.
      penalty_on: ``"codes"`` penalises the L2-normalised embeddings, ``"activations"`` the
        head's activations before the normalisation (``config.regularizer.on``).
    Returns:
      ``((loss, (parts, embeddings (views * B, d), new batch stats)), grads)``; ``parts`` holds
      the task loss, the penalty (mean of the sides), its weight, and each side's penalty for
      two-view objectives.
    """
    x, labels = batch
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    k_aug_a, k_aug_b, k_drop = jax.random.split(key, 3)
    view_keys = (k_aug_a, k_aug_b)[: objective.num_views]
    weight = weight_fn(state.step)

    def loss_fn(params):
        inputs = jnp.concatenate([augment_fn(k, x) for k in view_keys])
        (z, cosine), updates = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            inputs,
            train=True,
            rngs={"dropout": k_drop},
            mutable=["batch_stats", "intermediates"],
        )
        zs = jnp.split(z, objective.num_views)
        cosines = [None] * len(zs) if cosine is None else jnp.split(cosine, objective.num_views)
        task = objective.fn(list(zip(zs, cosines, strict=True)), labels)
        penalised = z
        if penalty_on == "activations":
            (penalised,) = updates["intermediates"]["head"][models.ACTIVATIONS_KEY]
        ps = jnp.split(penalised, objective.num_views)
        sides = {}
        if objective.num_views == 2:
            weighted, p_query, p_db = regularizers.two_sided_penalty(
                penalty_fn,
                ps[0],
                ps[1],
                query_weight=weight * query_weight_scale,
                database_weight=weight,
            )
            pen = 0.5 * (p_query + p_db)
            sides = {"penalty_query": p_query, "penalty_database": p_db}
        else:
            pen = penalty_fn(penalised)
            weighted = weight * pen
        parts = {"task_loss": task, "penalty": pen, "penalty_weight": weight, **sides}
        new_stats = updates.get("batch_stats", state.batch_stats)
        return task + weighted, (parts, z, new_stats)

    return jax.value_and_grad(loss_fn, has_aux=True)(params)


def train_step(
    state: TrainState,
    batch: tuple[jax.Array, jax.Array],
    *,
    tx: optax.GradientTransformation,
    lr_fn: Callable[[jax.Array], jax.Array],
    **step_kwargs,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimisation step; pure. ``lr_fn`` is the learning-rate schedule ``tx`` follows
    (logged); ``step_kwargs`` are the keyword arguments of :func:`loss_and_grads` (callables and
    constants bound by :func:`build`). Returns the new state and a dict of scalar metrics."""
    (loss, (parts, z, new_stats)), grads = loss_and_grads(state.params, state, batch, **step_kwargs)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=new_stats, opt_state=opt_state
    )
    z = jax.lax.stop_gradient(z)
    step_metrics = {
        "loss": loss,
        **parts,
        "flops": regularizers.flops(z),
        "l1": regularizers.l1(z),
        **regularizers.sparsity_stats(z),
        "grad_norm": optax.global_norm(grads),
        "learning_rate": lr_fn(state.step),
    }
    return new_state, step_metrics


# ---------------------------------------------------------------------------------------------
# Building a run.


@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything fixed for a run: model, optimiser, mesh, shardings and jitted functions."""

    model: models.EmbeddingModel
    tx: optax.GradientTransformation
    mesh: jax.sharding.Mesh
    state_sharding: Pytree
    batch_sharding: jax.sharding.NamedSharding
    step_kwargs: dict
    init_fn: Callable[[np.ndarray], TrainState]
    step_fn: Callable
    embed_fn: Callable

    def put_batch(self, batch) -> tuple[jax.Array, jax.Array]:
        """This process's slice of a batch as a global sharded array pair."""
        return tuple(sharding.global_array(b, self.batch_sharding) for b in batch)


def build(config, splits: dict[str, data.ArraySplit]) -> Setup:
    """Validates ``config``, resolves every name in it to a callable (backbone, objective,
    penalty, weight schedule, optimiser, augmentation), and returns the model, mesh and the
    jitted init, step and embedding functions."""
    config_lib.validate(config)
    objective = losses.make_objective(config.loss)
    num_classes = data.num_classes(splits) if config.loss.name in losses.CLASSIFIER_LOSSES else 0
    dtype = jnp.bfloat16 if config.train.compute_dtype == "bfloat16" else jnp.float32
    model = models.build_model(config.model, num_classes, dtype=dtype)
    tx = optim.make_optimizer(config.optimizer, config.train.num_steps)
    lr_fn = optim.make_lr_schedule(config.optimizer, config.train.num_steps)
    reg = config.regularizer
    db_weight = reg.weight if reg.name != "none" else 0.0
    weight_fn = regularizers.weight_schedule(reg.schedule, db_weight, reg.warmup_steps)
    query_scale = 1.0
    if reg.query_weight >= 0:
        query_scale = reg.query_weight / reg.weight if reg.weight > 0 else 0.0
    mesh = sharding.make_mesh(config.mesh)
    sharding.check_batch(config.train.batch_size, mesh)
    sample = splits[config.data.train_split].inputs[:1]
    init = functools.partial(create_train_state, model, tx, seed=config.seed)
    state_sh = sharding.state_shardings(
        jax.eval_shape(init, sample), mesh, config.mesh.param_sharding
    )
    batch_sh = sharding.batch_sharding(mesh)
    repl = sharding.replicated(mesh)
    step_kwargs = dict(
        model=model,
        objective=objective,
        penalty_fn=regularizers.make_penalty(
            reg.name, mesh.shape[sharding.DATA] if reg.per_device else 1
        ),
        weight_fn=weight_fn,
        query_weight_scale=query_scale,
        augment_fn=functools.partial(data.augment, **dict(config.augment)),
        penalty_on=reg.on,
    )
    step_fn = jax.jit(
        functools.partial(train_step, tx=tx, lr_fn=lr_fn, **step_kwargs),
        in_shardings=(state_sh, (batch_sh, batch_sh)),
        out_shardings=(state_sh, repl),
        donate_argnums=0,
    )
    embed_fn = jax.jit(
        functools.partial(evaluation.embed_step, model=model),
        in_shardings=(state_sh, repl),
        out_shardings=repl,
    )
    return Setup(
        model=model,
        tx=tx,
        mesh=mesh,
        state_sharding=state_sh,
        batch_sharding=batch_sh,
        step_kwargs=step_kwargs,
        init_fn=jax.jit(init, out_shardings=state_sh),
        step_fn=step_fn,
        embed_fn=embed_fn,
    )


# ---------------------------------------------------------------------------------------------
# The loop.


def _fetch_checked(pending: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    """Fetches pending step metrics to the host; stops at the first non-finite loss."""
    fetched = [(step, {k: sharding.to_host(v) for k, v in m.items()}) for step, m in pending]
    for step, m in fetched:
        bad = [k for k in ("loss", "task_loss", "penalty") if not math.isfinite(float(m[k]))]
        if bad:
            raise FloatingPointError(
                f"non-finite {', '.join(bad)} at step {step} (loss={float(m['loss'])}); "
                "training stopped, the last checkpoint in the workdir is the last good state. "
                "Lower --config.optimizer.learning_rate or the regulariser weight."
            )
    return [(s, {k: float(v) for k, v in m.items()}) for s, m in fetched]


def interval_means(checked: list[tuple[int, dict[str, float]]]) -> dict[str, float]:
    """The mean of each metric over the steps of a logging interval (NaN entries, e.g. ``R_sub``
    of an all-zero batch, are left out; a metric NaN at every step stays NaN)."""
    keys = checked[-1][1].keys()
    out = {}
    for k in keys:
        v = np.array([m[k] for _, m in checked], np.float64)
        ok = v[~np.isnan(v)]
        out[k] = float(ok.mean()) if len(ok) else float("nan")
    return out


def write_config(config, workdir: str) -> None:
    """Writes ``config.json`` atomically; warns when it differs from a previous run's."""
    path = os.path.join(workdir, "config.json")
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
        if old != text:
            old_d, new_d = json.loads(old), json.loads(text)
            diff = sorted(k for k in set(old_d) | set(new_d) if old_d.get(k) != new_d.get(k))
            logging.warning(
                "config differs from the one saved in %s (sections %s); resuming with the new one",
                path,
                diff,
            )
    io_utils.atomic_write_text(path, text)


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
    """Trains ``config`` in ``workdir``, resuming from its latest checkpoint, and returns the
    final evaluation metrics.

    Writes ``config.json``, ``metrics.jsonl`` (one record per log or eval point; train metrics are
    means over the steps since the previous record), the same scalars as TensorBoard event files
    (``tensorboard --logdir``), and Orbax checkpoints to ``workdir``. A run whose checkpoint has
    reached ``config.train.num_steps`` does not train again. One run at a time per workdir (a
    second one fails at once); nothing in the workdir changes before the restore has succeeded.
    """
    config_lib.validate(config)
    chief = jax.process_index() == 0  # the one process that writes logs to the workdir
    os.makedirs(workdir, exist_ok=True)
    lock = io_utils.WorkdirLock(workdir) if chief else contextlib.nullcontext()
    with lock:
        return _train_locked(config, workdir, chief)


def _train_locked(config, workdir: str, chief: bool) -> dict[str, float]:
    splits = data.load_splits(config.data)
    train_split, eval_split = splits[config.data.train_split], splits[config.data.eval_split]
    setup = build(config, splits)
    tc = config.train
    state = setup.init_fn(train_split.inputs[:1])
    manager = checkpoint.make_manager(
        workdir, max_to_keep=tc.max_checkpoints, async_save=tc.async_checkpointing
    )
    log = None
    try:
        state, resumed = checkpoint.restore_or_keep(manager, state)
        start = int(state.step)
        if chief:
            write_config(config, workdir)
        if start >= tc.num_steps:
            logging.info(
                "workdir %s already holds step %d of %d: nothing to train",
                workdir,
                start,
                tc.num_steps,
            )
            return evaluation.evaluate(
                setup.embed_fn, state, eval_split, config.eval, config.export
            )
        if resumed:
            logging.info("resuming from step %d", start)
        # Records past the checkpoint come from a killed run and will be written again.
        log = logs.MetricLog(workdir, start if resumed else 0, enabled=chief)
        return _loop(config, setup, state, start, train_split, eval_split, manager, log)
    finally:
        if log is not None:
            log.close()
        checkpoint.close(manager)


def _loop(config, setup, state, start, train_split, eval_split, manager, log):
    tc = config.train
    batcher = data.Batcher(
        train_split, tc.batch_size, config.seed, jax.process_index(), jax.process_count()
    )
    pending: list[tuple[int, dict]] = []
    last_eval: dict[str, float] = {}
    t_log, s_log = time.perf_counter(), start
    for step in range(start, tc.num_steps):
        state, m = setup.step_fn(state, setup.put_batch(batcher.batch(step)))
        pending.append((step + 1, m))
        done = step + 1
        last = done == tc.num_steps
        evaluate_now = done % tc.eval_every == 0 or last
        save_now = done % tc.checkpoint_every == 0 or last
        # Every pending step is checked for non-finite values before an evaluation or a
        # checkpoint could record a broken model.
        if done % tc.log_every == 0 or evaluate_now or save_now:
            checked = _fetch_checked(pending)
            pending = []
            now = time.perf_counter()
            rate = (done - s_log) / max(now - t_log, 1e-9)
            t_log, s_log = now, done
            m_mean = interval_means(checked)
            log.write(done, {"steps_per_sec": rate, **{f"train/{k}": v for k, v in m_mean.items()}})
            logging.info(
                "step %d/%d loss %.4f task %.4f penalty %.4g (w %.3g) nnz %.1f | %.2f steps/s,"
                " ETA %.0fs",
                done,
                tc.num_steps,
                m_mean["loss"],
                m_mean["task_loss"],
                m_mean["penalty"],
                m_mean["penalty_weight"],
                m_mean["mean_nonzeros"],
                rate,
                (tc.num_steps - done) / max(rate, 1e-9),
            )
        if evaluate_now:
            last_eval = evaluation.evaluate(
                setup.embed_fn, state, eval_split, config.eval, config.export
            )
            log.write(done, {f"eval/{k}": v for k, v in last_eval.items()})
            logging.info(
                "eval at step %d: %s",
                done,
                ", ".join(f"{k}={v:.4g}" for k, v in last_eval.items()),
            )
            t_log = time.perf_counter()  # steps/s measures training, not evaluation
        if save_now:
            checkpoint.save(manager, done, state, force=last)
    return last_eval


def load_trained_state(config, workdir: str, splits=None):
    """``(state, embed_fn, splits)`` of the latest checkpoint in ``workdir``, for export and
    notebooks."""
    splits = splits if splits is not None else data.load_splits(config.data)
    setup = build(config, splits)
    state = setup.init_fn(splits[config.data.train_split].inputs[:1])
    manager = checkpoint.make_manager(workdir, async_save=False)
    try:
        state = checkpoint.restore(manager, state)
    finally:
        checkpoint.close(manager)
    return state, setup.embed_fn, splits
