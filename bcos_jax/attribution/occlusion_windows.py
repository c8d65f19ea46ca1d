"""Occlusion, as the reference's own implementation (``explainers/occlusion.py``, not captum's).

For every window position the window is set to 0 (in model-input space), the change of
every logit ``f(x) − f(x_occluded)`` is computed, and each pixel of the window receives that
change divided by the window's pixel count; a pixel's attribution is the sum over the
windows it belongs to.

Windows (a transcription of the reference's ``make_masks``): positions ``i = 0 .. H/stride − 1``
per axis; for an even ``ks`` the window is rows ``[i·stride, i·stride + ks)``; for an odd
``ks`` it is ``[max(0, i·stride − (ks−1)/2), i·stride + (ks−1)/2)`` — i.e. only ``ks − 1``
pixels wide and starting before the position: the reference's convention, kept for
parity. H and W must be multiples of the stride (the reference asserts the same).
Reference configs: default ks=32, stride=32; 'Occ5' 5/2, 'Occ9' 9/2, 'Occ9-TI' 9/4, 'Occ13-TI' 13/4.

Windows are evaluated ``internal_batch_size`` at a time for the whole image batch; the
occluded image is ``x · (1 − r ⊗ c)`` with per-axis window indicators r, c, so no
[P, H, W] mask stack is ever materialised.
"""
from __future__ import annotations

from typing import Any, Optional

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

__all__ = ["occlusion", "occlusion_windows"]


def occlusion_windows(size: int, ks: int, stride: int) -> np.ndarray:
    """[P, size] 0/1 indicators of the occlusion windows along one axis (reference rule)."""
    if ks < 1 or stride < 1:
        raise ValueError(f"occlusion: ks and stride must be >= 1, got ks={ks}, stride={stride}")
    if size % stride:
        raise ValueError(
            f"occlusion: the image side {size} must be a multiple of the stride {stride}"
        )
    if ks % 2 == 1:
        half, off = (ks - 1) // 2, 0
    else:
        half, off = ks, 1
    rows = np.zeros((size // stride, size), np.float32)
    for i in range(size // stride):
        rows[i, max(0, (i + off) * stride - half) : i * stride + half] = 1.0
    return rows


def occlusion(
    model: Any,
    x: Array,
    targets: Optional[Array] = None,
    *,
    ks: int = 32,
    stride: int = 32,
    only_positive: bool = False,
    internal_batch_size: int = 16,
) -> Array:
    """Occlusion maps: x [N, H, W, C_in] -> [N, H, W, 1] (or [K, N, H, W, 1]).

    Args:
      ks, stride: window size and step (see the module docstring for odd ``ks``).
      only_positive: clamp the logit changes at 0 (the reference's option, off by default).
      internal_batch_size: windows evaluated per model call (times N images).
    """
    fns = as_model_fns(model, "occlusion")
    x = check_input(x, "occlusion")
    n, h, w, _ = x.shape
    rows = jnp.asarray(occlusion_windows(h, ks, stride))  # [Ph, H]
    cols = jnp.asarray(occlusion_windows(w, ks, stride))  # [Pw, W]
    ph, pw = rows.shape[0], cols.shape[0]
    ri, ci = np.meshgrid(np.arange(ph), np.arange(pw), indexing="ij")
    clean = fns.logits(x)
    tgt, multi = prepare_targets(targets, clean, n, "occlusion")
    chunk = max(1, min(internal_batch_size, ph * pw))
    items, valid = pad_to_multiple(
        {"r": jnp.asarray(ri.ravel()), "c": jnp.asarray(ci.ravel())}, chunk
    )
    items["valid"] = valid
    clean_t = select_targets(clean.astype(jnp.float32), tgt)  # [N, K]

    def body(it):
        r, c = rows[it["r"]], cols[it["c"]]  # [chunk, H], [chunk, W]
        keep = 1.0 - r[:, :, None] * c[:, None, :]  # [chunk, H, W]
        xs = (x[None] * keep[:, None, :, :, None].astype(x.dtype)).reshape((-1,) + x.shape[1:])
        out = fns.logits(xs).astype(jnp.float32).reshape(chunk, n, -1)
        diff = clean_t[None] - select_targets(out, tgt)  # [chunk, N, K]
        if only_positive:
            diff = jnp.maximum(diff, 0)
        n_part = jnp.sum(r, axis=1) * jnp.sum(c, axis=1)  # window pixel counts [chunk]
        d = diff * (it["valid"] / n_part)[:, None, None]
        return jnp.einsum("pnk,ph,pw->knhw", d, r, c)

    attr = scan_chunks(body, items, chunk, accumulate=True)
    return finish(attr[..., None].astype(x.dtype), multi)
