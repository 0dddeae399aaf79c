"""The optax optimiser and learning-rate schedule of ``config.optimizer``."""

from __future__ import annotations

import functools

import jax
import optax

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


def kernel_mask(params, *, head: bool):
    """True on the ``kernel`` leaves of the head (``head``) or of everything else: the weights
    an L2 regulariser of the original code covers (biases and BatchNorm parameters are not)."""

    def pick(path, _):
        names = [getattr(k, "key", str(k)) for k in path]
        return names[-1] == "kernel" and ("head" in names) == head

    return jax.tree_util.tree_map_with_path(pick, params)


def make_optimizer(opt_config, num_steps: int) -> optax.GradientTransformation:
    """The optax optimiser of ``config.optimizer`` (adam, adamw or sgd with momentum)."""
    schedule = make_lr_schedule(opt_config, num_steps)
    name = opt_config.name
    if opt_config.adam_eps <= 0:
        raise ValueError(f"config.optimizer.adam_eps must be positive, got {opt_config.adam_eps}")
    if name == "adam":
        tx = optax.adam(schedule, eps=opt_config.adam_eps)
    elif name == "adamw":
        tx = optax.adamw(schedule, eps=opt_config.adam_eps, weight_decay=opt_config.weight_decay)
    elif name == "sgd":
        tx = optax.sgd(schedule, momentum=opt_config.momentum or None, nesterov=opt_config.nesterov)
    else:
        raise ValueError(f"config.optimizer.name={name!r}; choose one of {OPTIMIZERS}")
    if name != "adamw" and opt_config.weight_decay:
        tx = optax.chain(optax.add_decayed_weights(opt_config.weight_decay), tx)
    for rate, head in ((opt_config.kernel_decay, False), (opt_config.head_kernel_decay, True)):
        if rate < 0:
            raise ValueError(f"config.optimizer kernel decay rates must be >= 0, got {rate}")
        if rate:
            mask = functools.partial(kernel_mask, head=head)
            tx = optax.chain(optax.add_decayed_weights(rate, mask=mask), tx)
    if opt_config.grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(opt_config.grad_clip_norm), tx)
    return tx
