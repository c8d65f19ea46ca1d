"""Losses of the reference recipes, on dense targets [N, C] (one-hot or mixup/cutmix-mixed).

* ``bce``: ``BCEWithLogitsLoss(reduction='mean')`` — mean over batch × classes (v1 ``LogitsBCE``,
  v2 ``BinaryCrossEntropyLoss``).
* ``uniform_off_labels_bce``: v2 ``UniformOffLabelsBCEWithLogitsLoss`` — the targets are
  clamped to at least ``1/C`` before the BCE (ImageNet recipes: off value 0.001).
* ``ce``: softmax cross-entropy (standard, non-B-cos models), mean over the batch.

``compute(name, outputs, targets, aux_weight)`` adds the Inception-v3 auxiliary loss
(v1 ``AuxLoss(1)``: the same loss on ``outputs['aux_logits']``, times ``aux_weight``).
All losses are computed in float32 whatever the compute dtype of the model.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp
import optax

Array = jax.Array

__all__ = ["LOSSES", "bce", "ce", "compute", "get", "uniform_off_labels_bce"]


def bce(logits: Array, targets: Array) -> Array:
    """Mean binary cross-entropy with logits over all N × C entries."""
    logits = logits.astype(jnp.float32)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, targets.astype(jnp.float32)))


def uniform_off_labels_bce(logits: Array, targets: Array,
                           off_value: Optional[float] = None) -> Array:
    """BCE with the targets clamped to ``min(off_value or 1/C)`` (v2 ImageNet recipes)."""
    off = off_value or 1.0 / logits.shape[-1]
    return bce(logits, jnp.maximum(targets.astype(jnp.float32), off))


def ce(logits: Array, targets: Array) -> Array:
    """Softmax cross-entropy with dense (possibly mixed) targets, mean over the batch."""
    logits = logits.astype(jnp.float32)
    return jnp.mean(optax.softmax_cross_entropy(logits, targets.astype(jnp.float32)))


LOSSES: Dict[str, Callable[[Array, Array], Array]] = {
    "bce": bce,
    "uniform_off_labels_bce": uniform_off_labels_bce,
    "ce": ce,
}


def get(name: str) -> Callable[[Array, Array], Array]:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name]


def compute(name: str, outputs: Any, targets: Array, aux_weight: float = 1.0) -> Array:
    """Loss of a model output: logits [N, C] or a dict with 'logits' (and 'aux_logits')."""
    fn = get(name)
    if isinstance(outputs, dict):
        loss = fn(outputs["logits"], targets)
        if outputs.get("aux_logits") is not None and aux_weight:
            loss = loss + aux_weight * fn(outputs["aux_logits"], targets)
        return loss
    return fn(outputs, targets)
