"""Pixel deletion and insertion curves (Petsiuk et al., RISE 2018) and their areas.

For an image, a target class and an attribution map (summed over channels), pixels are
ordered by importance — most important first (MIF) or least important first (LIF) — and
perturbed in that order in ``steps`` equal portions:

* deletion: start from the image and replace pixels by a baseline (default 0 in model-input
  space, i.e. what occlusion and RISE use); a faithful map makes the MIF curve drop fast
  (small area) and the LIF curve stay high (large area);
* insertion: start from a baseline (default: the image blurred) and put the image's pixels
  back; a faithful map makes the MIF curve rise fast (large area).

The curve is the target's probability (``ModelFns.probabilities``) or logit at fractions
0, 1/steps, ..., 1 of the pixels; its area is the trapezoid rule over [0, 1] (so it is
normalised for the number of steps and lies in [0, 1] for probabilities). Pixels of equal
importance keep raster order (a stable sort), so flat maps are perturbed top-left first.
The blur is a Gaussian (σ 5, 11×11 window, edge-replicating), RISE's insertion substrate;
it is computed in model-input space, which equals blurring the RGB image for the affine
encodings of the zoo.
"""
from __future__ import annotations

from typing import Any, Dict

import jax
import jax.numpy as jnp
import numpy as np

from bcos_jax.attribution._common import check_input, pad_to_multiple, scan_chunks
from bcos_jax.attribution.model_fns import as_model_fns

Array = jax.Array

__all__ = [
    "CURVES",
    "area_under_curve",
    "baseline_image",
    "faithfulness_curves",
    "gaussian_blur",
    "pixel_ranks",
    "perturbation_curve",
]

CURVES = ("deletion_mif", "deletion_lif", "insertion_mif", "insertion_lif")


def pixel_ranks(importance: Array, most_important_first: bool = True) -> Array:
    """[N, H, W] importance -> [N, H, W] int32 rank (0 = perturbed first); ties in raster order."""
    n, h, w = importance.shape
    flat = importance.reshape(n, -1).astype(jnp.float32)
    order = jnp.argsort(-flat if most_important_first else flat, axis=1, stable=True)
    ranks = jax.vmap(
        lambda o: jnp.zeros(h * w, jnp.int32).at[o].set(jnp.arange(h * w, dtype=jnp.int32))
    )(order)
    return ranks.reshape(n, h, w)


def gaussian_blur(x: Array, sigma: float = 5.0, size: int = 11) -> Array:
    """Separable Gaussian blur of [N, H, W, C] with edge replication."""
    r = size // 2
    t = np.arange(size) - r
    k = np.exp(-(t**2) / (2 * sigma**2))
    k = jnp.asarray(k / k.sum(), x.dtype)
    xp = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")
    h, w = x.shape[1:3]
    rows = sum(k[i] * xp[:, i : i + h, :, :] for i in range(size))
    return sum(k[i] * rows[:, :, i : i + w, :] for i in range(size))


def baseline_image(x: Array, kind: str) -> Array:
    """The substrate of a perturbation: 'zero', 'blur' or 'mean' (per-image channel mean)."""
    if kind == "zero":
        return jnp.zeros_like(x)
    if kind == "blur":
        return gaussian_blur(x)
    if kind == "mean":
        return jnp.broadcast_to(jnp.mean(x, axis=(1, 2), keepdims=True), x.shape)
    raise ValueError(f"unknown baseline {kind!r}; choose 'zero', 'blur' or 'mean'")


def _scores(fns, xs: Array, targets: Array, score: str) -> Array:
    logits = fns.logits(xs).astype(jnp.float32)
    vals = fns.probabilities(logits) if score == "probability" else logits
    return jnp.take_along_axis(vals, targets[:, None], axis=1)[:, 0]


def perturbation_curve(
    model: Any,
    start: Array,
    end: Array,
    ranks: Array,
    targets: Array,
    *,
    steps: int = 20,
    score: str = "probability",
    internal_batch_size: int = 7,
) -> Array:
    """Scores while pixels move from ``start`` to ``end`` in rank order.

    start, end: [N, H, W, C]; ranks: [N, H, W] int; targets: [N] -> curve [N, steps + 1]
    (point k has the ``round(k/steps · H·W)`` lowest-ranked pixels taken from ``end``).
    """
    fns = as_model_fns(model, "perturbation_curve")
    if score not in ("probability", "logit"):
        raise ValueError(f"score must be 'probability' or 'logit', got {score!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    n, h, w, _ = start.shape
    counts = np.rint(np.arange(steps + 1) / steps * h * w).astype(np.int32)
    chunk = max(1, min(internal_batch_size, steps + 1))
    items, _ = pad_to_multiple({"count": jnp.asarray(counts)}, chunk)
    targets = jnp.asarray(targets, jnp.int32)

    def body(it):
        moved = ranks[None] < it["count"][:, None, None, None]  # [chunk, N, H, W]
        xs = jnp.where(moved[..., None], end[None], start[None]).reshape((-1,) + start.shape[1:])
        return _scores(fns, xs, jnp.tile(targets, chunk), score).reshape(chunk, n)

    ys = scan_chunks(body, items, chunk, accumulate=False)
    return ys.reshape(-1, n)[: steps + 1].T


def faithfulness_curves(
    model: Any,
    x: Array,
    targets: Array,
    attributions: Array,
    *,
    steps: int = 20,
    deletion_baseline: str = "zero",
    insertion_baseline: str = "blur",
    score: str = "probability",
    internal_batch_size: int = 7,
) -> Dict[str, Array]:
    """Deletion and insertion curves, MIF and LIF, for one target per image.

    Args:
      x: [N, H, W, C_in] model input; targets: [N]; attributions: [N, H, W, C'] for those
        targets (summed over channels to rank pixels).

    Returns:
      {name: [N, steps + 1]} for the names in ``CURVES``.
    """
    x = check_input(x, "faithfulness_curves")
    a = jnp.asarray(attributions)
    if a.ndim == 4:
        a = jnp.sum(a.astype(jnp.float32), axis=-1)
    if a.shape != x.shape[:3]:
        raise ValueError(f"attributions {attributions.shape} do not match the images {x.shape}")
    t = jnp.asarray(targets)
    if t.shape != (x.shape[0],):
        raise ValueError(f"faithfulness_curves takes one target per image [N], got shape {t.shape}")
    dele = baseline_image(x, deletion_baseline)
    ins = baseline_image(x, insertion_baseline)
    kw = dict(steps=steps, score=score, internal_batch_size=internal_batch_size)
    out = {}
    for order in ("mif", "lif"):
        r = pixel_ranks(a, most_important_first=order == "mif")
        out[f"deletion_{order}"] = perturbation_curve(model, x, dele, r, t, **kw)
        out[f"insertion_{order}"] = perturbation_curve(model, ins, x, r, t, **kw)
    return out


def area_under_curve(curves: Array) -> Array:
    """[..., T] curves at equally spaced fractions of [0, 1] -> [...] trapezoid areas."""
    c = jnp.asarray(curves, jnp.float32)
    if c.shape[-1] < 2:
        raise ValueError("a curve needs at least two points")
    return (jnp.sum(c, axis=-1) - 0.5 * (c[..., 0] + c[..., -1])) / (c.shape[-1] - 1)
