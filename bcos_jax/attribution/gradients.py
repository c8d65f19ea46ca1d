"""Gradient attributions: Gradient, Input×Gradient, B-cos (x·W(x)), IntGrad, SmoothGrad.

All are pure and jittable: ``fns`` and every setting are static, ``x``/``targets`` traced.
Shapes follow ``_common``: x [N, H, W, C_in]; targets None | [N] | [N, K]; result
[N, H, W, C_in] or [K, N, H, W, C_in].
"""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from bcos_jax.attribution._common import (
    check_input,
    finish,
    input_gradients,
    pad_to_multiple,
    prepare_targets,
    scan_chunks,
    target_vjps,
)
from bcos_jax.attribution.model_fns import as_model_fns

Array = jax.Array

__all__ = [
    "IG_SCHEMES",
    "bcos",
    "gradient",
    "input_x_gradient",
    "integrated_gradients",
    "integration_points",
    "smoothgrad",
]


def _grads(fn, x, targets, method):
    logits, vjp_fn = jax.vjp(fn, x)
    tgt, multi = prepare_targets(targets, logits, x.shape[0], method)
    return target_vjps(vjp_fn, logits, tgt), multi


def gradient(model: Any, x: Array, targets: Optional[Array] = None) -> Array:
    """d logit_t / d x (captum ``Saliency(abs=False)``, the reference's 'Grad')."""
    fns = as_model_fns(model, "gradient")
    x = check_input(x, "gradient")
    g, multi = _grads(fns.logits, x, targets, "gradient")
    return finish(g, multi)


def input_x_gradient(model: Any, x: Array, targets: Optional[Array] = None) -> Array:
    """x ⊙ d logit_t / d x (captum ``InputXGradient``, 'IxG'), in the ordinary forward mode."""
    fns = as_model_fns(model, "input_x_gradient")
    x = check_input(x, "input_x_gradient")
    g, multi = _grads(fns.logits, x, targets, "input_x_gradient")
    return finish(x[None] * g, multi)


def bcos(model: Any, x: Array, targets: Optional[Array] = None) -> Array:
    """The B-cos explanation x ⊙ W(x) ('Ours'), with W(x) from ``bcos_jax.explain``.

    Summed over channels this is ``bcos_jax.explain(...).contributions`` (and sums to the
    logit minus its constant bias).
    """
    fns = as_model_fns(model, "bcos")
    if fns.explain is None:
        raise ValueError(
            "bcos: needs a ModelFns with explain (a B-cos model: from_model(..., bcos=True)); "
            f"{fns.name!r} has none"
        )
    x = check_input(x, "bcos")
    if targets is None:
        weights, multi = fns.explain(x, None).weights[None], False
    else:
        tgt, multi = prepare_targets(targets, None, x.shape[0], "bcos")
        weights = fns.explain(x, tgt).weights  # [K, N, H, W, C_in]
    return finish(x[None] * weights.astype(x.dtype), multi)


IG_SCHEMES = (
    "gausslegendre",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
    "linspace",
)


def integration_points(n_steps: int, scheme: str) -> tuple[np.ndarray, np.ndarray]:
    """(alphas [n_steps], weights [n_steps]) of a path-integral quadrature on [0, 1].

    'gausslegendre' and 'riemann_*' are captum's rules ('gausslegendre' is captum's default,
    so the reference's); 'linspace' is PAIR saliency's (``linspace(0, 1, n)``, weights 1/n).
    """
    if n_steps < 1:
        raise ValueError(f"integrated_gradients: n_steps must be >= 1, got {n_steps}")
    n = n_steps
    if scheme == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(n)
        return (nodes + 1) / 2, w / 2
    if scheme == "linspace":
        return np.linspace(0, 1, n), np.full(n, 1.0 / n)
    if scheme == "riemann_trapezoid":
        if n < 2:
            raise ValueError("integrated_gradients: riemann_trapezoid needs n_steps >= 2")
        w = np.full(n, 1.0 / (n - 1))
        w[0] = w[-1] = 0.5 / (n - 1)
        return np.linspace(0, 1, n), w
    w = np.full(n, 1.0 / n)
    if scheme == "riemann_left":
        return np.linspace(0, 1 - 1 / n, n), w
    if scheme == "riemann_right":
        return np.linspace(1 / n, 1, n), w
    if scheme == "riemann_middle":
        return np.linspace(1 / (2 * n), 1 - 1 / (2 * n), n), w
    raise ValueError(f"integrated_gradients: unknown scheme {scheme!r}; choose from {IG_SCHEMES}")


def _tiled(x: Array) -> Array:
    # [c, N, ...] -> [c*N, ...]: a chunk of perturbed copies evaluated as one model batch.
    return x.reshape((-1,) + x.shape[2:])


def integrated_gradients(
    model: Any,
    x: Array,
    targets: Optional[Array] = None,
    *,
    n_steps: int = 50,
    scheme: str = "gausslegendre",
    baseline: Optional[Array] = None,
    internal_batch_size: int = 10,
) -> Array:
    """Integrated Gradients (x − x₀) ⊙ Σ_s w_s ∇f(x₀ + α_s (x − x₀)) ('IntGrad').

    Reference settings: 50 steps, zero baseline, captum's default Gauss–Legendre rule.
    The steps are evaluated ``internal_batch_size`` at a time, each chunk as one model batch
    of ``internal_batch_size · N`` images, summed in a ``lax.scan`` (memory stays bounded).

    Args:
      baseline: x₀, broadcastable to x (None: zeros).
      scheme: one of ``IG_SCHEMES``.
    """
    fns = as_model_fns(model, "integrated_gradients")
    x = check_input(x, "integrated_gradients")
    n = x.shape[0]
    x0 = (
        jnp.zeros_like(x)
        if baseline is None
        else jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)
    )
    logits = fns.logits(x) if targets is None else None
    tgt, multi = prepare_targets(targets, logits, n, "integrated_gradients")
    alphas, weights = integration_points(n_steps, scheme)
    chunk = max(1, min(internal_batch_size, n_steps))
    items, valid = pad_to_multiple(
        {"alpha": jnp.asarray(alphas, jnp.float32), "weight": jnp.asarray(weights, jnp.float32)},
        chunk,
    )
    items["weight"] = items["weight"] * valid
    diff = x - x0
    tgt_rep = jnp.tile(tgt, (chunk, 1))

    def body(it):
        a = it["alpha"].astype(x.dtype)
        xs = x0[None] + a[:, None, None, None, None] * diff[None]
        _, g = input_gradients(fns.logits, _tiled(xs), tgt_rep)  # [K, chunk*N, ...]
        g = g.reshape((g.shape[0], chunk, n) + x.shape[1:])
        return jnp.einsum("kcn...,c->kn...", g.astype(jnp.float32), it["weight"])

    total = scan_chunks(body, items, chunk, accumulate=True)
    return finish((diff[None] * total).astype(x.dtype), multi)


def smoothgrad_noise(seed: int, sample: Array, shape) -> Array:
    """Standard-normal noise of sample ``sample`` (shared by every image of a batch).

    Drawn per sample index from ``fold_in(key(seed), sample)``, so an image's result does
    not depend on which other images share its batch.
    """
    return jax.random.normal(jax.random.fold_in(jax.random.key(seed), sample), shape, jnp.float32)


def smoothgrad(
    model: Any,
    x: Array,
    targets: Optional[Array] = None,
    *,
    n_samples: int = 25,
    stdev_spread: float = 0.15,
    magnitude: bool = False,
    seed: int = 0,
    internal_batch_size: int = 25,
) -> Array:
    """SmoothGrad: the mean gradient over ``n_samples`` noisy copies x + ε, ε ~ N(0, σ²).

    σ = ``stdev_spread · (max(x) − min(x))`` per image (PAIR saliency's definition and its
    defaults 0.15 / 25 samples); ``magnitude`` averages squared gradients (PAIR's default
    True; False here, the SmoothGrad paper's plain mean that keeps the sign).
    """
    fns = as_model_fns(model, "smoothgrad")
    x = check_input(x, "smoothgrad")
    if n_samples < 1:
        raise ValueError(f"smoothgrad: n_samples must be >= 1, got {n_samples}")
    n = x.shape[0]
    logits = fns.logits(x) if targets is None else None
    tgt, multi = prepare_targets(targets, logits, n, "smoothgrad")
    stdev = stdev_spread * (jnp.max(x, axis=(1, 2, 3)) - jnp.min(x, axis=(1, 2, 3)))  # [N]
    chunk = max(1, min(internal_batch_size, n_samples))
    items, valid = pad_to_multiple({"sample": jnp.arange(n_samples, dtype=jnp.int32)}, chunk)
    items["valid"] = valid
    tgt_rep = jnp.tile(tgt, (chunk, 1))

    def body(it):
        noise = jax.vmap(lambda s: smoothgrad_noise(seed, s, x.shape[1:]))(
            it["sample"]
        )  # [c, H, W, C]
        xs = x[None] + (noise[:, None] * stdev[None, :, None, None, None]).astype(x.dtype)
        _, g = input_gradients(fns.logits, _tiled(xs), tgt_rep)
        g = g.reshape((g.shape[0], chunk, n) + x.shape[1:]).astype(jnp.float32)
        if magnitude:
            g = g * g
        return jnp.einsum("kcn...,c->kn...", g, it["valid"])

    total = scan_chunks(body, items, chunk, accumulate=True)
    return finish((total / n_samples).astype(x.dtype), multi)
