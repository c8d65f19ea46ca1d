"""Exponential moving average of the weights, as the reference's torchvision recipe.

``bcos/training/trainer.py``: ``ExponentialMovingAverage`` (an ``AveragedModel`` with
``use_buffers=True``, so batch statistics are averaged too) with

    alpha = min(1, (1 - decay) · world_size · accumulate · per_gpu_batch · every / epochs)
    ema   = (1 - alpha) · ema + alpha · model          (the first update copies the model)

updated in ``training_step`` — i.e. with the parameters *before* that step's optimiser update
and the batch statistics *after* its forward pass — whenever ``batch_idx % every == 0``
(``batch_idx`` counts micro-batches within the epoch), and with the average count reset to
0 during the warm-up epochs (so the EMA is a copy of the model until warm-up ends).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["adjusted_decay", "update"]


def adjusted_decay(decay: float, every: int, global_batch: int, epochs: float) -> float:
    """The per-update decay after the torchvision adjustment (``global_batch``: the effective
    batch)."""
    alpha = min(1.0, (1.0 - decay) * global_batch * every / epochs)
    return 1.0 - alpha


def update(ema: Any, count: jax.Array, model: Any, *, step, steps_per_epoch: int, every: int,
           accum: int, decay: float, warmup_epochs: int):
    """One jittable EMA step; returns (new ema, new count). ``step`` is the optimiser step index."""
    micro_idx = (step % steps_per_epoch) * accum  # the first micro-batch of this step
    due = (micro_idx % every) < accum  # some micro-batch of this step has batch_idx % every == 0
    first = count == 0
    new = jax.tree.map(
        lambda e, m: jnp.where(first, m, decay * e + (1.0 - decay) * m).astype(e.dtype), ema, model
    )
    new = jax.tree.map(lambda n, e: jnp.where(due, n, e), new, ema)
    new_count = jnp.where(due, count + 1, count)
    in_warmup = (step // steps_per_epoch) < warmup_epochs
    new_count = jnp.where(in_warmup, 0, new_count)
    return new, new_count
