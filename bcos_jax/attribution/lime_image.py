"""LIME for images (Ribeiro et al. 2016) as the reference runs it (``explainers/lime.py``).

1. Superpixels: ``skimage.segmentation.quickshift(rgb, kernel_size=4, max_dist=200,
   ratio=0.2)`` (skimage's own seed 42) on the RGB image — host-side NumPy, the only part
   that is not JAX (``quickshift_segments``).
2. ``num_samples`` binary vectors z over the superpixels (the first all ones); a sample keeps
   the superpixels with z=1 and paints the others with their mean colour (lime's default
   ``hide_color=None``). Mean colours are taken in model-input space, which equals encoding
   the RGB means because both encodings are affine per channel.
3. Targets' probabilities (``ModelFns.probabilities``) of every sample; weights
   ``sqrt(exp(−d²/0.25²))`` with d the cosine distance of z to the all-ones vector.
4. Weighted ridge regression (sklearn ``Ridge(alpha=1)`` with intercept, solved in closed
   form); lime's 'auto' feature selection keeps every superpixel here (num_features=100000).
5. Attribution: a 0/1 map of the ``num_features`` superpixels with the largest *positive*
   coefficients (``get_image_and_mask(positive_only=True, num_features=5)``).

The quickshift settings are the reference's, tuned for 224-pixel images; on small images
(CIFAR-sized, the quickstart) they give only a handful of superpixels — pass e.g.
``kernel_size=1, max_dist=5`` there.

Sampling is seeded (``jax.random``, one stream per superpixel index, so an image's samples do
not depend on its batch); it is not lime's NumPy stream. Superpixel ids are padded to a
multiple of 64 (``max_segments``) so that jit compiles once per bucket.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from bcos_jax.attribution._common import (
    check_input,
    finish,
    pad_to_multiple,
    prepare_targets,
    scan_chunks,
    select_targets,
)
from bcos_jax.attribution.model_fns import as_model_fns

Array = jax.Array

__all__ = [
    "lime",
    "lime_attributor",
    "lime_from_segments",
    "lime_samples",
    "quickshift_segments",
    "segment_bucket",
]


def quickshift_segments(
    rgb: np.ndarray, kernel_size: float = 4, max_dist: float = 200, ratio: float = 0.2
) -> np.ndarray:
    """Quickshift superpixels of RGB images [N, H, W, 3] in [0, 1] -> int32 ids [N, H, W]."""
    try:
        from skimage.segmentation import quickshift
    except ImportError as e:  # pragma: no cover - scikit-image is a dependency
        raise ImportError(
            "LIME needs scikit-image for quickshift superpixels: pip install scikit-image"
        ) from e
    rgb = np.asarray(rgb, np.float64)
    if rgb.ndim != 4 or rgb.shape[-1] != 3:
        raise ValueError(
            f"quickshift_segments expects RGB images [N, H, W, 3], got shape {rgb.shape}"
        )
    out = np.empty(rgb.shape[:3], np.int32)
    for i, img in enumerate(np.clip(rgb, 0.0, 1.0)):
        seg = quickshift(img, kernel_size=kernel_size, max_dist=max_dist, ratio=ratio)
        out[i] = np.unique(seg, return_inverse=True)[1].reshape(seg.shape)
    return out


def segment_bucket(segments: np.ndarray, multiple: int = 64) -> int:
    """The padded number of superpixel ids for a batch (a multiple of ``multiple``)."""
    m = int(np.max(segments)) + 1
    return multiple * -(-m // multiple)


def lime_samples(seed: int, num_samples: int, max_segments: int) -> Array:
    """Binary samples [num_samples, max_segments] (row 0 all ones); column j from its own stream."""
    key = jax.random.key(seed)
    cols = jax.vmap(
        lambda j: jax.random.bernoulli(jax.random.fold_in(key, j), 0.5, (num_samples,))
    )(jnp.arange(max_segments))
    return cols.T.astype(jnp.float32).at[0].set(1.0)


def _segment_means(x: Array, seg: Array, m: int) -> Array:
    # Per-image mean of every superpixel, painted back: [N, H, W, C].
    def one(img, s):
        flat = img.reshape(-1, img.shape[-1]).astype(jnp.float32)
        ids = s.reshape(-1)
        sums = jax.ops.segment_sum(flat, ids, num_segments=m)
        counts = jax.ops.segment_sum(jnp.ones_like(ids, jnp.float32), ids, num_segments=m)
        return (sums / jnp.maximum(counts, 1.0)[:, None])[s].astype(img.dtype)

    return jax.vmap(one)(x, seg)


def _weighted_ridge(z: Array, y: Array, w: Array, alpha: float) -> Array:
    """sklearn Ridge(alpha, fit_intercept=True).fit(z, y, sample_weight=w).coef_.

    z [S, M], y [S, K], w [S] -> coefficients [M, K].
    """
    sw = w / jnp.sum(w)
    zc = z - sw @ z
    yc = y - sw @ y
    a = (zc * w[:, None]).T @ zc + alpha * jnp.eye(z.shape[1], dtype=z.dtype)
    b = (zc * w[:, None]).T @ yc
    return jnp.linalg.solve(a, b)


def lime_from_segments(
    model: Any,
    x: Array,
    targets: Optional[Array],
    segments: Array,
    *,
    max_segments: int,
    num_samples: int = 500,
    num_features: int = 5,
    kernel_width: float = 0.25,
    ridge_alpha: float = 1.0,
    seed: int = 0,
    internal_batch_size: int = 50,
) -> Array:
    """The jittable part of LIME, given superpixel ids [N, H, W] (< ``max_segments``, static).

    Returns [N, H, W, 1] (or [K, N, H, W, 1]) 0/1 maps of the selected superpixels.
    """
    fns = as_model_fns(model, "lime")
    x = check_input(x, "lime")
    n = x.shape[0]
    seg = jnp.asarray(segments, jnp.int32)
    if seg.shape != x.shape[:3]:
        raise ValueError(f"lime: segments must be [N, H, W] = {x.shape[:3]}, got {seg.shape}")
    if num_samples < 2 or num_features < 1:
        raise ValueError(
            f"lime: need num_samples >= 2 and num_features >= 1, got {num_samples}, {num_features}"
        )
    m = max_segments
    tgt, multi = prepare_targets(targets, fns.logits(x) if targets is None else None, n, "lime")
    z = lime_samples(seed, num_samples, m)  # [S, M]
    fudged = _segment_means(x, seg, m)
    chunk = max(1, min(internal_batch_size, num_samples))
    items, _ = pad_to_multiple({"z": z}, chunk)

    def body(it):
        keep = jax.vmap(lambda zs: zs[seg])(it["z"])  # [chunk, N, H, W]
        xs = jnp.where(keep[..., None] > 0, x[None], fudged[None]).reshape((-1,) + x.shape[1:])
        p = fns.probabilities(fns.logits(xs).astype(jnp.float32)).reshape(chunk, n, -1)
        return select_targets(p, tgt)  # [chunk, N, K]

    y = scan_chunks(body, items, chunk, accumulate=False)
    y = y.reshape((-1,) + y.shape[2:])[:num_samples]  # [S, N, K]

    n_seg = jnp.max(seg.reshape(n, -1), axis=1) + 1  # superpixels per image [N]
    present = (jnp.arange(m)[None] < n_seg[:, None]).astype(jnp.float32)  # [N, M]

    def per_image(yn, pres, count):
        zn = z * pres[None]
        ones = jnp.sum(zn, axis=1)
        # sklearn cosine distance to the all-ones row; an all-zero row has similarity 0.
        cos = jnp.where(
            ones > 0, ones / (jnp.sqrt(jnp.maximum(ones, 1e-12)) * jnp.sqrt(count)), 0.0
        )
        d = 1.0 - cos
        wts = jnp.sqrt(jnp.exp(-(d**2) / kernel_width**2))
        return _weighted_ridge(zn, yn, wts, ridge_alpha)  # [M, K]

    coef = jax.vmap(per_image, in_axes=(1, 0, 0))(
        y, present, n_seg.astype(jnp.float32)
    )  # [N, M, K]
    coef = jnp.moveaxis(coef, -1, 0) * present[None]  # [K, N, M]
    # Positive evidence only: the largest positive coefficients, fewer if fewer are positive.
    vals, idx = jax.lax.top_k(
        jnp.where(coef > 0, coef, -jnp.inf), min(num_features, m)
    )  # [K, N, k]
    chosen = jnp.isfinite(vals)
    sel = jnp.zeros(coef.shape, jnp.float32)
    sel = jax.vmap(jax.vmap(lambda s, i, c: s.at[i].max(c.astype(jnp.float32))))(sel, idx, chosen)
    maps = jax.vmap(lambda s: jax.vmap(lambda si, segn: si[segn])(s, seg))(sel)  # [K, N, H, W]
    return finish(maps[..., None].astype(x.dtype), multi)


def lime(
    model: Any,
    x: Array,
    targets: Optional[Array] = None,
    *,
    segments: Optional[Any] = None,
    max_segments: Optional[int] = None,
    kernel_size: float = 4,
    max_dist: float = 200,
    ratio: float = 0.2,
    **settings: Any,
) -> Array:
    """LIME maps: x [N, H, W, C_in] -> [N, H, W, 1] (or [K, N, H, W, 1]).

    Computes quickshift superpixels of ``decode(x)`` on the host unless ``segments`` are
    given (then, and with ``max_segments``, it can run under ``jax.jit``). Other settings:
    see ``lime_from_segments`` (reference: 500 samples, 5 features, positive only).
    """
    fns = as_model_fns(model, "lime")
    x = check_input(x, "lime")
    if segments is None:
        if isinstance(x, jax.core.Tracer):
            raise ValueError(
                "lime: superpixels are computed on the host; under jax.jit pass "
                "segments=quickshift_segments(rgb) and max_segments"
            )
        segments = quickshift_segments(np.asarray(fns.decode(x)), kernel_size, max_dist, ratio)
    if max_segments is None:
        if isinstance(segments, jax.core.Tracer):
            raise ValueError("lime: with traced segments, pass a static max_segments")
        max_segments = segment_bucket(np.asarray(segments))
    return lime_from_segments(fns, x, targets, segments, max_segments=max_segments, **settings)


def lime_attributor(
    fns: Any,
    *,
    kernel_size: float = 4,
    max_dist: float = 200,
    ratio: float = 0.2,
    **settings: Any,
) -> Callable[..., Array]:
    """The compiled ``f(x, targets=None)`` for LIME (its ``Method.compile``).

    Superpixels are computed on the host from ``fns.decode(x)`` for every call; the rest
    (sampling, probabilities, ridge regression) is one ``jax.jit`` compiled once per
    superpixel bucket (``segment_bucket``).
    """
    fns = as_model_fns(fns, "lime")
    core = jax.jit(
        functools.partial(lime_from_segments, fns, **settings), static_argnames=("max_segments",)
    )

    def run(x, targets=None):
        rgb = np.asarray(fns.decode(jnp.asarray(x)))
        segments = quickshift_segments(rgb, kernel_size, max_dist, ratio)
        return core(x, targets, segments, max_segments=segment_bucket(segments))

    return run
