"""Train state, the pure ``train_step``, evaluation, and ``train_and_evaluate``.

The state is a plain pytree (:class:`TrainState`); the step is a module-level pure function whose
fixed dependencies (model, optimiser, loss and penalty settings) are keyword-only and bound with
``functools.partial`` before ``jax.jit``.
"""

from __future__ import annotations

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
    io_utils,
    losses,
    metrics,
    models,
    regularizers,
    sharding,
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


# ---------------------------------------------------------------------------------------------
# Optimiser.

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine", "step")


def make_lr_schedule(opt_config, num_steps: int) -> optax.Schedule:
    """Learning rate by step from ``config.optimizer``: ``constant``, ``cosine`` (to 0 at
    ``num_steps``) or ``step`` (times ``decay_factor`` at each of ``decay_boundaries``), each
    after ``warmup_steps`` of linear warm-up from 0."""
    lr, warmup = opt_config.learning_rate, opt_config.warmup_steps
    if lr <= 0:
        raise ValueError(f"config.optimizer.learning_rate must be positive, got {lr}")
    name = opt_config.lr_schedule
    if name == "constant":
        main = optax.constant_schedule(lr)
    elif name == "cosine":
        main = optax.cosine_decay_schedule(lr, max(1, num_steps - warmup))
    elif name == "step":
        boundaries = {int(b) - warmup: opt_config.decay_factor for b in opt_config.decay_boundaries}
        main = optax.piecewise_constant_schedule(lr, boundaries)
    else:
        raise ValueError(f"config.optimizer.lr_schedule={name!r}; choose one of {LR_SCHEDULES}")
    if warmup <= 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(opt_config, num_steps: int) -> optax.GradientTransformation:
    """The optax optimiser of ``config.optimizer`` (adam, adamw or sgd with momentum)."""
    schedule = make_lr_schedule(opt_config, num_steps)
    name = opt_config.name
    if name == "adam":
        tx = optax.adam(schedule)
    elif name == "adamw":
        tx = optax.adamw(schedule, weight_decay=opt_config.weight_decay)
    elif name == "sgd":
        tx = optax.sgd(schedule, momentum=opt_config.momentum or None, nesterov=opt_config.nesterov)
    else:
        raise ValueError(f"config.optimizer.name={name!r}; choose one of {OPTIMIZERS}")
    if name != "adamw" and opt_config.weight_decay:
        tx = optax.chain(optax.add_decayed_weights(opt_config.weight_decay), tx)
    if opt_config.grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(opt_config.grad_clip_norm), tx)
    return tx


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


def _forward(params, batch_stats, x, key, *, model):
    (z, cosine), updates = model.apply(
        {"params": params, "batch_stats": batch_stats},
        x,
        train=True,
        rngs={"dropout": key},
        mutable=["batch_stats"],
    )
    return z, cosine, updates.get("batch_stats", batch_stats)


def loss_and_grads(
    params: Pytree,
    state: TrainState,
    batch: tuple[jax.Array, jax.Array],
    *,
    model,
    loss_name: str,
    loss_kwargs: dict,
    penalty_name: str,
    penalty_shards: int,
    weight_fn,
    query_weight_scale: float,
    augment_kwargs: dict,
):
    """Total loss, its parts and its gradient with respect to ``params``; pure.

    Args:
      params: the parameters to differentiate.
      state: the train state (batch statistics, step, rng).
      batch: ``(inputs (B, ...), labels (B,))``, the global batch.
      model: an :class:`~sparse_flops.models.EmbeddingModel`.
      loss_name: one of :data:`sparse_flops.losses.LOSSES`.
      loss_kwargs: the loss's hyper-parameters (scale, margin, temperature).
      penalty_name: ``flops``, ``l1`` or ``none``.
      penalty_shards: 1 = penalty of the global batch; ``n`` = the original code's estimate, the
        mean of the penalties of ``n`` equal slices of the batch (one per device).
      weight_fn: ``step -> weight`` of the penalty on the database side.
      query_weight_scale: query-side weight over database-side weight (two-view losses).
      augment_kwargs: keyword arguments of :func:`sparse_flops.data.augment`.
    Returns:
      ``((loss, (task loss, penalty, weight, embeddings, new batch stats)), grads)``.
    """
    x, labels = batch
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    k_aug_a, k_aug_b, k_drop = jax.random.split(key, 3)
    weight = weight_fn(state.step)

    def pen_of(z):
        if penalty_shards > 1:
            return regularizers.per_device_penalty(penalty_name, z, penalty_shards)
        return regularizers.penalty(penalty_name, z)

    def loss_fn(params):
        if loss_name == "ntxent":
            views = jnp.concatenate(
                [
                    data.augment(k_aug_a, x, **augment_kwargs),
                    data.augment(k_aug_b, x, **augment_kwargs),
                ]
            )
            z, _, new_stats = _forward(params, state.batch_stats, views, k_drop, model=model)
            z_query, z_db = jnp.split(z, 2)
            task = losses.ntxent_loss(z_query, z_db, **loss_kwargs)
            p_query, p_db = pen_of(z_query), pen_of(z_db)
            weighted = weight * (query_weight_scale * p_query + p_db)
            pen = 0.5 * (p_query + p_db)
        else:
            z, cosine, new_stats = _forward(
                params,
                state.batch_stats,
                data.augment(k_aug_a, x, **augment_kwargs),
                k_drop,
                model=model,
            )
            if loss_name == "triplet":
                task = losses.triplet_semihard_loss(z, labels, **loss_kwargs)
            else:
                task = losses.classifier_loss(loss_name, cosine, labels, **loss_kwargs)
            pen = pen_of(z)
            weighted = weight * pen
        return task + weighted, (task, pen, weight, z, new_stats)

    return jax.value_and_grad(loss_fn, has_aux=True)(params)


def train_step(
    state: TrainState,
    batch: tuple[jax.Array, jax.Array],
    *,
    tx: optax.GradientTransformation,
    **loss_config,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimisation step; pure. ``loss_config`` are the keyword arguments of
    :func:`loss_and_grads`. Returns the new state and a dict of scalar metrics."""
    (loss, (task, pen, weight, z, new_stats)), grads = loss_and_grads(
        state.params, state, batch, **loss_config
    )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=new_stats, opt_state=opt_state
    )
    z = jax.lax.stop_gradient(z)
    step_metrics = {
        "loss": loss,
        "task_loss": task,
        "penalty": pen,
        "penalty_weight": weight,
        "flops": regularizers.flops(z),
        "l1": regularizers.l1(z),
        "nonzero_fraction": regularizers.nonzero_fraction(z),
        "mean_nonzeros": regularizers.mean_nonzeros(z),
        "grad_norm": optax.global_norm(grads),
    }
    return new_state, step_metrics


def embed_step(state: TrainState, x: jax.Array, *, model) -> jax.Array:
    """Inference embeddings ``(B, dim)`` of inputs ``x`` ``(B, ...)`` (BatchNorm running stats)."""
    return model.apply(
        {"params": state.params, "batch_stats": state.batch_stats},
        x,
        train=False,
        method=model.embed,
    )


def embed_split(embed_fn, state: TrainState, split: data.ArraySplit, batch_size: int) -> np.ndarray:
    """Embeds a whole split in fixed-size batches (the last one padded, so one compilation);
    returns float32 ``(n, dim)``."""
    out = []
    for x, _ in data.batches_in_order(split, batch_size):
        n = len(x)
        if n < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - n,) + x.shape[1:], x.dtype)])
        out.append(sharding.to_host(embed_fn(state, x))[:n])
    return np.concatenate(out).astype(np.float32)


def evaluate(embed_fn, state: TrainState, split: data.ArraySplit, eval_config) -> dict[str, float]:
    """Class retrieval on a held-out split: the first ``num_queries`` items query the whole split
    (each query excluded from its own ranking). Returns precision@k, recall@k, mAP and the cost
    statistics of the split's codes (mean non-zeros, ``sum_j p_j^2``, ``R_sub``, expected
    multiply-adds per query)."""
    z = embed_split(embed_fn, state, split, eval_config.batch_size)
    nq = min(eval_config.num_queries, len(split)) if eval_config.num_queries > 0 else len(split)
    out = metrics.evaluate_embeddings(
        z[:nq],
        split.labels[:nq],
        z,
        split.labels,
        ks=tuple(eval_config.ks),
        self_index=np.arange(nq),
    )
    out.update(metrics.cost_summary(z))
    return out


# ---------------------------------------------------------------------------------------------
# The loop.


def _check_config(config) -> None:
    if config.loss.name not in losses.LOSSES:
        raise ValueError(f"config.loss.name={config.loss.name!r}; choose one of {losses.LOSSES}")
    reg = config.regularizer
    if reg.name not in regularizers.PENALTIES:
        raise ValueError(
            f"config.regularizer.name={reg.name!r}; choose one of {regularizers.PENALTIES}"
        )
    if reg.query_weight >= 0 and config.loss.name != "ntxent":
        raise ValueError(
            "config.regularizer.query_weight applies only to losses with a query side and a "
            f"database side (ntxent), not {config.loss.name!r}; leave it at -1"
        )
    for key in ("num_steps", "batch_size", "log_every", "eval_every", "checkpoint_every"):
        if config.train[key] <= 0:
            raise ValueError(f"config.train.{key} must be positive, got {config.train[key]}")
    if config.train.compute_dtype not in ("float32", "bfloat16"):
        raise ValueError(
            f"config.train.compute_dtype={config.train.compute_dtype!r}; use float32 or bfloat16"
        )


def _loss_kwargs(loss_config) -> dict:
    name = loss_config.name
    if name in ("arcface", "cosface"):
        return {"scale": loss_config.scale, "margin": loss_config.margin}
    if name == "norm_softmax":
        return {"scale": loss_config.scale}
    if name == "triplet":
        return {"margin": loss_config.margin}
    return {"temperature": loss_config.temperature}


@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything fixed for a run: model, optimiser, mesh, shardings and jitted functions."""

    model: models.EmbeddingModel
    tx: optax.GradientTransformation
    mesh: jax.sharding.Mesh
    state_sharding: Pytree
    batch_sharding: jax.sharding.NamedSharding
    loss_config: dict
    init_fn: Callable[[np.ndarray], TrainState]
    step_fn: Callable
    embed_fn: Callable

    def put_batch(self, batch) -> tuple[jax.Array, jax.Array]:
        """This process's slice of a batch as a global sharded array pair."""
        return tuple(sharding.global_array(b, self.batch_sharding) for b in batch)


def build(config, splits: dict[str, data.ArraySplit]) -> Setup:
    """Model, optimiser, device mesh and the jitted init, step and embedding functions."""
    _check_config(config)
    num_classes = data.num_classes(splits) if config.loss.name in losses.CLASSIFIER_LOSSES else 0
    dtype = jnp.bfloat16 if config.train.compute_dtype == "bfloat16" else jnp.float32
    model = models.build_model(config.model, num_classes, dtype=dtype)
    tx = make_optimizer(config.optimizer, config.train.num_steps)
    reg = config.regularizer
    db_weight = reg.weight if reg.name != "none" else 0.0
    weight_fn = regularizers.weight_schedule(reg.schedule, db_weight, reg.warmup_steps)
    query_scale = 1.0
    if reg.query_weight >= 0:
        query_scale = reg.query_weight / reg.weight if reg.weight > 0 else 0.0
        if reg.weight == 0 and reg.query_weight > 0:
            raise ValueError(
                "a query-side weight needs a positive database-side config.regularizer.weight"
            )
    mesh = sharding.make_mesh(config.mesh)
    sharding.check_batch(config.train.batch_size, mesh)
    sample = splits[config.data.train_split].inputs[:1]
    init = functools.partial(create_train_state, model, tx, seed=config.seed)
    state_sh = sharding.state_shardings(
        jax.eval_shape(init, sample), mesh, config.mesh.param_sharding
    )
    batch_sh = sharding.batch_sharding(mesh)
    repl = sharding.replicated(mesh)
    loss_config = dict(
        model=model,
        loss_name=config.loss.name,
        loss_kwargs=_loss_kwargs(config.loss),
        penalty_name=reg.name,
        penalty_shards=mesh.shape[sharding.DATA] if reg.per_device else 1,
        weight_fn=weight_fn,
        query_weight_scale=query_scale,
        augment_kwargs=dict(config.augment),
    )
    step_fn = jax.jit(
        functools.partial(train_step, tx=tx, **loss_config),
        in_shardings=(state_sh, (batch_sh, batch_sh)),
        out_shardings=(state_sh, repl),
        donate_argnums=0,
    )
    embed_fn = jax.jit(
        functools.partial(embed_step, model=model),
        in_shardings=(state_sh, repl),
        out_shardings=repl,
    )
    return Setup(
        model=model,
        tx=tx,
        mesh=mesh,
        state_sharding=state_sh,
        batch_sharding=batch_sh,
        loss_config=loss_config,
        init_fn=jax.jit(init, out_shardings=state_sh),
        step_fn=step_fn,
        embed_fn=embed_fn,
    )


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

    Writes ``config.json``, ``metrics.jsonl`` (one record per log or eval point) and Orbax
    checkpoints to ``workdir``. A run whose checkpoint has reached ``config.train.num_steps``
    does not train again.
    """
    os.makedirs(workdir, exist_ok=True)
    splits = data.load_splits(config.data)
    train_split, eval_split = splits[config.data.train_split], splits[config.data.eval_split]
    setup = build(config, splits)
    tc = config.train
    state = setup.init_fn(train_split.inputs[:1])
    if jax.process_index() == 0:
        write_config(config, workdir)

    manager = checkpoint.make_manager(
        workdir, max_to_keep=tc.max_checkpoints, async_save=tc.async_checkpointing
    )
    state, resumed = checkpoint.restore_or_keep(manager, state)
    start = int(state.step)
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    if start >= tc.num_steps:
        logging.info(
            "workdir %s already holds step %d of %d: nothing to train", workdir, start, tc.num_steps
        )
        checkpoint.close(manager)
        return evaluate(setup.embed_fn, state, eval_split, config.eval)
    chief = jax.process_index() == 0  # the one process that writes logs to the workdir
    if resumed:
        logging.info("resuming from step %d", start)
    if chief and resumed:
        # Records past the checkpoint come from the killed run and will be written again.
        io_utils.write_jsonl(
            metrics_path, [r for r in io_utils.read_jsonl(metrics_path) if r["step"] <= start]
        )
    elif chief and os.path.exists(metrics_path):
        os.remove(metrics_path)

    batcher = data.Batcher(
        train_split, tc.batch_size, config.seed, jax.process_index(), jax.process_count()
    )
    pending: list[tuple[int, dict]] = []
    last_eval: dict[str, float] = {}
    t_log, s_log = time.perf_counter(), start
    try:
        for step in range(start, tc.num_steps):
            state, m = setup.step_fn(state, setup.put_batch(batcher.batch(step)))
            pending.append((step + 1, m))
            done = step + 1
            last = done == tc.num_steps
            if done % tc.log_every == 0 or last or done % tc.checkpoint_every == 0:
                checked = _fetch_checked(pending)
                pending = []
                now = time.perf_counter()
                rate = (done - s_log) / max(now - t_log, 1e-9)
                t_log, s_log = now, done
                m_last = checked[-1][1]
                record = {
                    "step": done,
                    "steps_per_sec": rate,
                    **{f"train/{k}": v for k, v in m_last.items()},
                }
                if chief:
                    io_utils.append_jsonl(metrics_path, record)
                logging.info(
                    "step %d/%d loss %.4f task %.4f penalty %.4g (w %.3g) nnz %.1f | %.2f steps/s,"
                    " ETA %.0fs",
                    done,
                    tc.num_steps,
                    m_last["loss"],
                    m_last["task_loss"],
                    m_last["penalty"],
                    m_last["penalty_weight"],
                    m_last["mean_nonzeros"],
                    rate,
                    (tc.num_steps - done) / max(rate, 1e-9),
                )
            if done % tc.eval_every == 0 or last:
                last_eval = evaluate(setup.embed_fn, state, eval_split, config.eval)
                if chief:
                    io_utils.append_jsonl(
                        metrics_path,
                        {"step": done, **{f"eval/{k}": v for k, v in last_eval.items()}},
                    )
                logging.info(
                    "eval at step %d: %s",
                    done,
                    ", ".join(f"{k}={v:.4g}" for k, v in last_eval.items()),
                )
                t_log = time.perf_counter()  # steps/s measures training, not evaluation
            if done % tc.checkpoint_every == 0 or last:
                checkpoint.save(manager, done, state, force=last)
    finally:
        checkpoint.close(manager)
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
