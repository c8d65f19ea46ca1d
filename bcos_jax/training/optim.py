"""Optimisers, learning-rate schedules and adaptive gradient clipping of the reference recipes.

Schedules (``config.schedule``, plain values; ``interval`` 'epoch' or 'step'):

* ``warmup_cosine`` — v2 ``LRSchedulerFactory('cosineannealinglr', warmup_method='linear')``:
  ``LinearLR(start_factor=warmup_factor)`` for the warm-up, then ``CosineAnnealingLR(T_max =
  total − warmup, eta_min=min_lr)`` (``SequentialLR``). With ``interval='epoch'`` the
  reference steps the scheduler once per epoch, so the lr is constant within an epoch; with
  ``interval='step'`` (ViTs) once per optimiser step.
* ``step`` — v1 ``ExtendedOptimiser.simple_decay``: ``lr · gamma^(epoch // step_epochs)``.
* ``v1_cosine`` — v1 ``cosine_scheduler(lr, final_lr, epochs, warmup_epochs,
  start_warmup_value)`` (``linspace`` warm-up, then cosine to ``final_lr``), per epoch.
* ``v1_cifar`` — v1 CIFAR-10 ``1e-3·cos(π·e/200) + 1e-5`` per epoch.
* ``constant``.

``epoch0_lr`` reproduces the v1 quirk that epoch 0 always runs at the optimiser's construction
lr (``base_lr``), whatever the schedule says for epoch 0.

Per-epoch schedules are tabulated on the host (one float per epoch, exactly the reference's
values) and looked up with ``step // steps_per_epoch`` inside the jitted step.

``adaptive_grad_clip`` is the reference's unit-wise AGC (``bcos/training/agc.py``) on Flax
layouts: an HWIO conv kernel is normed per output filter over axes (0, 1, 2) (torch OIHW
dims 1, 2, 3); a dense ``[in, out]`` kernel per output over axis 0 (torch ``[out, in]`` dim 1);
tensors with at most one non-singleton axis as a whole.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array

__all__ = [
    "adaptive_grad_clip",
    "epoch_table",
    "make_optimizer",
    "make_schedule",
    "unitwise_norm",
]


# ---------------------------------------------------------------------------------------
# Learning-rate schedules.
# ---------------------------------------------------------------------------------------
def _linear_warmup_factor(t, total: int, start: float):
    # torch LinearLR closed form: start + (1 - start) * min(t, total) / total.
    return start + (1.0 - start) * np.minimum(t, total) / total


def _cosine(t, t_max: int, base: float, eta_min: float):
    # torch CosineAnnealingLR closed form.
    return eta_min + (base - eta_min) * (1 + np.cos(np.pi * t / t_max)) / 2


def epoch_table(cfg: Any, base_lr: float, num_epochs: int) -> np.ndarray:
    """The lr of every epoch [num_epochs] for an ``interval='epoch'`` schedule config."""
    name = cfg.name
    e = np.arange(num_epochs, dtype=np.float64)
    if name == "constant":
        lr = np.full(num_epochs, base_lr)
    elif name == "warmup_cosine":
        warm = int(cfg.warmup_epochs)
        t_max = max(num_epochs - warm, 1)  # short debug runs may end inside the warm-up
        min_lr = float(cfg.min_lr)
        cos = _cosine(np.maximum(e - warm, 0), t_max, base_lr, min_lr)
        if warm:
            warmup = base_lr * _linear_warmup_factor(e, warm, cfg.warmup_factor)
            lr = np.where(e < warm, warmup, cos)
        else:
            lr = cos
    elif name == "step":
        lr = base_lr * cfg.gamma ** np.floor(e / cfg.step_epochs)
    elif name == "v1_cosine":
        warm = int(cfg.warmup_epochs)
        warmup = np.linspace(cfg.start_warmup_lr, base_lr, warm) if warm > 0 else np.array([])
        iters = np.arange(num_epochs - warm)
        cos = 1 + np.cos(np.pi * iters / len(iters))
        main = cfg.final_lr + 0.5 * (base_lr - cfg.final_lr) * cos
        lr = np.concatenate([warmup, main])
    elif name == "v1_cifar":
        lr = 1e-3 * np.cos(np.pi * e / 200) + 1e-5
    else:
        raise ValueError(
            f"unknown schedule {name!r}; choose warmup_cosine, step, v1_cosine, v1_cifar or "
            "constant"
        )
    lr = np.asarray(lr, np.float64)
    if cfg.epoch0_lr is not None:
        lr[0] = cfg.epoch0_lr
    return lr


def make_schedule(
    cfg: Any, base_lr: float, steps_per_epoch: int, total_steps: int
) -> Callable[[Array], Array]:
    """``schedule(step) -> lr`` (jittable) for ``config.schedule``; ``step`` counts optimiser
    updates."""
    interval = cfg.interval
    if interval == "epoch":
        num_epochs = max(1, math.ceil(total_steps / steps_per_epoch))
        table = jnp.asarray(epoch_table(cfg, base_lr, num_epochs), jnp.float32)

        def schedule(step):
            epoch = jnp.minimum(step // steps_per_epoch, num_epochs - 1)
            return table[epoch]

        return schedule
    if interval != "step":
        raise ValueError(f"schedule interval must be 'epoch' or 'step', got {interval!r}")
    if cfg.name == "constant":
        return lambda step: jnp.full((), base_lr, jnp.float32)
    if cfg.name != "warmup_cosine":
        raise ValueError(f"schedule {cfg.name!r} is defined per epoch only")
    # The reference converts epochs to steps with steps_per_epoch = total // epochs.
    warm = int(cfg.warmup_steps) or int(cfg.warmup_epochs) * steps_per_epoch
    t_max = max(total_steps - warm, 1)  # short debug runs may end inside the warm-up
    min_lr = float(cfg.min_lr)
    start = float(cfg.warmup_factor)

    def schedule(step):
        t = step.astype(jnp.float32) if hasattr(step, "astype") else jnp.float32(step)
        phase = jnp.pi * jnp.maximum(t - warm, 0) / t_max
        cos = min_lr + (base_lr - min_lr) * (1 + jnp.cos(phase)) / 2
        if not warm:
            return cos
        factor = start + (1.0 - start) * jnp.minimum(t, warm) / warm
        return jnp.where(t < warm, base_lr * factor, cos)

    return schedule


# ---------------------------------------------------------------------------------------
# Adaptive gradient clipping (unit-wise, as bcos/training/agc.py).
# ---------------------------------------------------------------------------------------
def _unit_axes(shape: Tuple[int, ...]) -> Optional[Tuple[int, ...]]:
    if sum(d != 1 for d in shape) <= 1:
        return None  # torch: x.squeeze().ndim <= 1 -> norm of the whole tensor
    if len(shape) == 4:
        return (0, 1, 2)  # HWIO kernel; torch OIHW dims (1, 2, 3)
    if len(shape) == 2:
        return (0,)  # [in, out]; torch [out, in] dim 1
    if len(shape) == 3:
        return (1,)  # [k, in, out] (conv1d); torch [out, in, k] dim 1
    raise ValueError(f"AGC expects parameters with 1 <= ndim <= 4, got shape {shape}")


def unitwise_norm(x: Array) -> Array:
    """L2 norm per output unit (see the module docstring), broadcastable against ``x``."""
    axes = _unit_axes(x.shape)
    x = x.astype(jnp.float32)
    if axes is None:
        return jnp.sqrt(jnp.sum(jnp.square(x)))
    return jnp.sqrt(jnp.sum(jnp.square(x), axis=axes, keepdims=True))


def adaptive_grad_clip(clip_factor: float = 0.01,
                       eps: float = 1e-3) -> optax.GradientTransformation:
    """Unit-wise AGC: ``g ← g · max_norm / max(‖g‖, 1e-6)`` where ``‖g‖ > max_norm =
    max(‖p‖, eps) · clip_factor`` (per unit), else ``g`` unchanged."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("adaptive_grad_clip needs the parameters (pass params to update)")

        def clip(g, p):
            max_norm = jnp.maximum(unitwise_norm(p), eps) * clip_factor
            g_norm = unitwise_norm(g)
            clipped = g * (max_norm / jnp.maximum(g_norm, 1e-6))
            return jnp.where(g_norm < max_norm, g, clipped.astype(g.dtype))

        return jax.tree.map(clip, updates, params), state

    return optax.GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------------------------
# The optimiser.
# ---------------------------------------------------------------------------------------
def make_optimizer(
    cfg: Any, schedule_cfg: Any, steps_per_epoch: int, total_steps: int
) -> Tuple[optax.GradientTransformation, Callable[[Array], Array]]:
    """(optax transformation, lr schedule) for ``config.optimizer`` and ``config.schedule``.

    ``cfg.name``: 'adam' (torch Adam, no weight decay unless given: L2 added to the grads as
    torch does) or 'adamw' (decoupled decay on every parameter, like the reference's
    ``set_weight_decay`` without norm groups). Clipping runs first: ``agc`` (bool, with
    ``agc_clip_factor``) or ``grad_clip_norm`` (global norm, the ViT baselines).
    """
    schedule = make_schedule(schedule_cfg, cfg.lr, steps_per_epoch, total_steps)
    chain = []
    if cfg.agc:
        chain.append(adaptive_grad_clip(cfg.agc_clip_factor, cfg.agc_eps))
    if cfg.grad_clip_norm:
        chain.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
    b1, b2, eps, wd = cfg.b1, cfg.b2, cfg.eps, cfg.weight_decay
    name = cfg.name.lower()
    if name == "adam":
        if wd:
            chain.append(optax.add_decayed_weights(wd))  # torch Adam's L2 term on the gradient
        chain.append(optax.adam(schedule, b1=b1, b2=b2, eps=eps))
    elif name == "adamw":
        chain.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=wd))
    elif name == "sgd":
        if wd:
            chain.append(optax.add_decayed_weights(wd))
        chain.append(optax.sgd(schedule, momentum=cfg.momentum))
    else:
        raise ValueError(f"unknown optimizer {cfg.name!r}; choose adam, adamw or sgd")
    return optax.chain(*chain), schedule
