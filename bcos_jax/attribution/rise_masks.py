"""RISE (Petsiuk et al. 2018) with the reference's masks (``explainers/rise.py``).

Saliency of class t: ``Σ_i p_t(x ⊙ M_i) · M_i / (n · p1)`` over n random masks, p = the
model's probabilities (``ModelFns.probabilities``: sigmoid for B-cos, softmax otherwise, as
the reference's ``to_probabilities``). Every mask batch is accumulated (v1 overwrote the sum
in its batch loop, so only its last batch counted).

Masks are exactly the reference's for the same seed: with NumPy's legacy ``RandomState(seed)``
(the reference calls ``np.random.seed(42)``) draw ``grid = rand(n, s, s) < p1``, then per mask
a shift ``(randint(0, cell_h), randint(0, cell_w))``; each binary grid is upsampled bilinearly
to ``(s + 1) · cell`` (``skimage.transform.resize(order=1, mode='reflect',
anti_aliasing=False)``, reproduced as a fixed interpolation matrix R, so a mask is
``R_rows[shift] @ grid @ R_colsᵀ``) and cropped to the image at the shift. Only the small
grids and shifts are drawn on the host (at trace time); the masks are built on the device a
chunk at a time.
"""
from __future__ import annotations

import functools
from typing import Any, Optional, Tuple

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

__all__ = ["rise", "rise_masks", "rise_mask_parameters", "mirror_linear_resize_matrix"]


def mirror_linear_resize_matrix(src: int, dst: int) -> np.ndarray:
    """[dst, src] matrix of skimage's ``resize(order=1, mode='reflect', anti_aliasing=False)``.

    Half-pixel centres, linear interpolation, out-of-range coordinates mirrored about the
    edge samples (skimage 'reflect' = scipy 'mirror').
    """
    if src == 1:
        return np.ones((dst, 1))
    c = (np.arange(dst) + 0.5) * (src / dst) - 0.5
    c = np.abs(c)
    c = np.where(c > src - 1, 2 * (src - 1) - c, c)
    i0 = np.clip(np.floor(c).astype(np.int64), 0, src - 2)
    frac = c - i0
    m = np.zeros((dst, src))
    m[np.arange(dst), i0] += 1 - frac
    m[np.arange(dst), i0 + 1] += frac
    return m


@functools.lru_cache(maxsize=8)
def rise_mask_parameters(n: int, s: int, p1: float, size: Tuple[int, int], seed: int = 42):
    """(grids [n, s, s] float32, shifts [n, 2] int32, cell [2]) drawn as the reference does."""
    if n < 1 or s < 1 or not 0 < p1 <= 1:
        raise ValueError(f"rise: need n >= 1, s >= 1 and 0 < p1 <= 1, got n={n}, s={s}, p1={p1}")
    rs = np.random.RandomState(seed)
    cell = np.ceil(np.asarray(size, np.float64) / s)
    grids = (rs.rand(n, s, s) < p1).astype(np.float32)
    shifts = np.empty((n, 2), np.int32)
    for i in range(n):
        shifts[i, 0] = rs.randint(0, int(cell[0]))
        shifts[i, 1] = rs.randint(0, int(cell[1]))
    return grids, shifts, cell.astype(np.int64)


def _interp(size: Tuple[int, int], s: int, cell) -> Tuple[Array, Array]:
    up_h, up_w = int((s + 1) * cell[0]), int((s + 1) * cell[1])
    return (
        jnp.asarray(mirror_linear_resize_matrix(s, up_h), jnp.float32),
        jnp.asarray(mirror_linear_resize_matrix(s, up_w), jnp.float32),
    )


def _build(grids: Array, shifts: Array, rh: Array, rw: Array, size: Tuple[int, int]) -> Array:
    h, w = size

    def one(g, sh):
        r = jax.lax.dynamic_slice_in_dim(rh, sh[0], h, axis=0)  # [H, s]
        c = jax.lax.dynamic_slice_in_dim(rw, sh[1], w, axis=0)  # [W, s]
        return r @ g @ c.T

    return jax.vmap(one)(grids, shifts)


def rise_masks(
    n: int = 500, s: int = 8, p1: float = 0.1, size: Tuple[int, int] = (224, 224), seed: int = 42
) -> Array:
    """All n masks [n, H, W] (for inspection and tests; ``rise`` never stacks them)."""
    grids, shifts, cell = rise_mask_parameters(n, s, p1, tuple(size), seed)
    rh, rw = _interp(tuple(size), s, cell)
    return _build(jnp.asarray(grids), jnp.asarray(shifts), rh, rw, tuple(size))


def rise(
    model: Any,
    x: Array,
    targets: Optional[Array] = None,
    *,
    n_masks: int = 500,
    s: int = 8,
    p1: float = 0.1,
    seed: int = 42,
    internal_batch_size: int = 50,
) -> Array:
    """RISE saliency: x [N, H, W, C_in] -> [N, H, W, 1] (or [K, N, H, W, 1]).

    Reference settings: 500 masks, s=8, p1=0.1, seed 42. Masks multiply the model input
    (0 = removed), evaluated ``internal_batch_size`` masks at a time for the whole batch.
    """
    fns = as_model_fns(model, "rise")
    x = check_input(x, "rise")
    n, h, w, _ = x.shape
    grids, shifts, cell = rise_mask_parameters(n_masks, s, p1, (h, w), seed)
    rh, rw = _interp((h, w), s, cell)
    tgt, multi = prepare_targets(targets, fns.logits(x) if targets is None else None, n, "rise")
    chunk = max(1, min(internal_batch_size, n_masks))
    items, valid = pad_to_multiple(
        {"grid": jnp.asarray(grids), "shift": jnp.asarray(shifts)}, chunk
    )
    items["valid"] = valid

    def body(it):
        masks = _build(it["grid"], it["shift"], rh, rw, (h, w))  # [chunk, H, W]
        xs = (x[None] * masks[:, None, :, :, None].astype(x.dtype)).reshape((-1,) + x.shape[1:])
        p = fns.probabilities(fns.logits(xs).astype(jnp.float32)).reshape(chunk, n, -1)
        pt = select_targets(p, tgt) * it["valid"][:, None, None]  # [chunk, N, K]
        return jnp.einsum("cnk,chw->knhw", pt, masks)

    sal = scan_chunks(body, items, chunk, accumulate=True) / (n_masks * p1)
    return finish(sal[..., None].astype(x.dtype), multi)
