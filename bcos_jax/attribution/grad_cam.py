"""Grad-CAM on the last feature map before the classifier ('GCam' of the reference).

As the v2 reference (``interpretability/explanation_methods/explainers/captum.py``):
the gradient of the (globally pooled) class output w.r.t. the feature map A [N, h, w, D],
channel weights = the spatial **sum** of that gradient, ``relu(Σ_d w_d A_d)``, upsampled
to the input size with torch's 'nearest' rule. The feature map comes from
``ModelFns.tap`` (see ``model_fns`` for how the site is chosen).
"""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from bcos_jax.attribution._common import (
    check_input,
    finish,
    nearest_resize,
    prepare_targets,
    target_vjps,
)
from bcos_jax.attribution.model_fns import as_model_fns

Array = jax.Array

__all__ = ["gradcam"]


def gradcam(model: Any, x: Array, targets: Optional[Array] = None, *, relu: bool = True) -> Array:
    """Grad-CAM maps: x [N, H, W, C_in] -> [N, H, W, 1] (or [K, N, H, W, 1] for [N, K] targets).

    Args:
      model: a ``ModelFns`` with a ``tap`` (``from_model`` provides one).
      relu: keep only positive evidence (the original Grad-CAM and the reference).
    """
    fns = as_model_fns(model, "gradcam")
    if fns.tap is None:
        raise ValueError(
            f"gradcam: {fns.name!r} has no feature tap; build it with attribution.from_model"
        )
    x = check_input(x, "gradcam")
    _, feat0 = jax.eval_shape(lambda inp: fns.tap(inp, None), x)

    # d logits / d features: the vjp in an additive perturbation of the feature map at 0
    logits, vjp_fn, feats = jax.vjp(
        lambda d: fns.tap(x, d), jnp.zeros(feat0.shape, feat0.dtype), has_aux=True
    )
    tgt, multi = prepare_targets(targets, logits, x.shape[0], "gradcam")
    grads = target_vjps(vjp_fn, logits, tgt)  # [K, N, h, w, D]
    weights = jnp.sum(grads.astype(jnp.float32), axis=(2, 3), keepdims=True)
    cam = jnp.sum(
        weights * feats.astype(jnp.float32)[None], axis=-1, keepdims=True
    )  # [K, N, h, w, 1]
    if relu:
        cam = jnp.maximum(cam, 0)
    return finish(nearest_resize(cam, x.shape[1:3]).astype(x.dtype), multi)
