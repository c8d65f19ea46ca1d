"""Host-side pictures of explanations (NumPy + Pillow; no matplotlib, no JAX needed).

* ``gradient_to_image``: the coloured B-cos explanation (docs/bcos.md §9), RGBA.
* ``contribution_map_image``: the per-pixel contributions in a symmetric blue-white-red map.
* ``save_grid``: a PNG of images next to their explanations.

All functions take NHWC-style arrays without the batch axis: images [H, W, 6] encoded as
``[x, 1 - x]``, weights W(x) [H, W, 6], contributions [H, W].
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

__all__ = [
    "gradient_to_image",
    "save_png",
    "contribution_map_image",
    "to_uint8",
    "composite",
    "save_grid",
    "decode_image",
]


def _avg_pool_same(a: np.ndarray, k: int) -> np.ndarray:
    """avg_pool2d(a, k, stride 1, padding (k-1)//2, count_include_pad=True): same size for odd k."""
    p = (k - 1) // 2
    padded = np.pad(a, ((p, p), (p, p)))
    c = np.cumsum(np.cumsum(padded, axis=0), axis=1)
    c = np.pad(c, ((1, 0), (1, 0)))
    h_out, w_out = padded.shape[0] - k + 1, padded.shape[1] - k + 1
    s = (
        c[k : k + h_out, k : k + w_out]
        - c[:h_out, k : k + w_out]
        - c[k : k + h_out, :w_out]
        + c[:h_out, :w_out]
    )
    return s / (k * k)


def gradient_to_image(
    image: np.ndarray,
    weights: np.ndarray,
    smooth: int = 15,
    alpha_percentile: float = 99.5,
) -> np.ndarray:
    """The coloured explanation of a B-cos model, as the reference's ``gradient_to_image``.

    Args:
      image: [H, W, 6] encoded input ``[r, g, b, 1-r, 1-g, 1-b]``.
      weights: [H, W, 6] W(x) for the explained class (``Explanation.weights[i]``).
      smooth: odd kernel of the average pooling of alpha (0 or None: none).
      alpha_percentile: alpha is divided by this percentile of itself and clipped to [0, 1].

    Returns:
      [H, W, 4] float RGBA in [0, 1]: colour from the direction of W(x) per pixel, opacity
      from its norm where the pixel's contribution is positive (all 0 when the percentile
      of that opacity is 0, e.g. no pixel contributes positively).
    """
    image = np.asarray(image, np.float64)
    w = np.asarray(weights, np.float64)
    if image.shape != w.shape or image.ndim != 3 or image.shape[-1] != 6:
        raise ValueError(
            f"gradient_to_image expects image and weights of the same shape [H, W, 6], got "
            f"{image.shape} and {w.shape}"
        )
    contribs = np.sum(image * w, axis=-1)
    rgb = w / (np.max(np.abs(w), axis=-1, keepdims=True) + 1e-12)
    rgb = np.clip(rgb, 0, None)
    rgb = rgb[..., :3] / (rgb[..., :3] + rgb[..., 3:] + 1e-12)
    alpha = np.linalg.norm(w, axis=-1)
    alpha = np.where(contribs < 0, 1e-12, alpha)
    if smooth:
        if int(smooth) % 2 == 0:
            raise ValueError(f"smooth must be an odd kernel size (or 0), got {smooth}")
        alpha = _avg_pool_same(alpha, int(smooth))
    top = np.percentile(alpha, alpha_percentile)
    # Too few positively contributing pixels to reach the percentile (it is then 0 or the
    # 1e-12 marker of negative contributions): fully transparent. The reference divides by
    # that value instead, giving NaN (all-zero W) or a fully opaque image (all negative).
    alpha = np.clip(alpha / top, 0, 1) if top > 1e-12 else np.zeros_like(alpha)
    return np.concatenate([rgb, alpha[..., None]], axis=-1).astype(np.float32)


def _bwr(t: np.ndarray) -> np.ndarray:
    # matplotlib's 'bwr': blue (0,0,1) -> white -> red (1,0,0), linear in both halves.
    t = np.clip(t, 0.0, 1.0)[..., None]
    lo = np.array([0.0, 0.0, 1.0]) + (np.array([1.0, 1.0, 1.0]) - np.array([0.0, 0.0, 1.0])) * (
        t * 2
    )
    hi = np.array([1.0, 1.0, 1.0]) + (np.array([1.0, 0.0, 0.0]) - np.array([1.0, 1.0, 1.0])) * (
        t * 2 - 1
    )
    return np.where(t < 0.5, lo, hi)


def contribution_map_image(contributions: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """[H, W] contributions -> [H, W, 3] float RGB, as the reference's ``plot_contribution_map``.

    Values are clipped at the ``percentile`` of |map|, then drawn with the symmetric 'bwr'
    colour map over [-v, v], v = max |clipped map| (positive: red, negative: blue).
    """
    m = np.asarray(contributions, np.float64)
    if m.ndim != 2:
        raise ValueError(f"contribution map must be [H, W], got shape {m.shape}")
    cutoff = np.percentile(np.abs(m), percentile)
    m = np.clip(m, -cutoff, cutoff)
    v = np.max(np.abs(m))
    t = 0.5 + 0.5 * (m / v if v > 0 else m)
    return _bwr(t).astype(np.float32)


def to_uint8(a: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] -> uint8."""
    return (np.clip(np.asarray(a, np.float64), 0, 1) * 255 + 0.5).astype(np.uint8)


def composite(rgba: np.ndarray, background: float = 1.0) -> np.ndarray:
    """RGBA explanation over a plain background (white by default) -> RGB."""
    rgba = np.asarray(rgba)
    return rgba[..., :3] * rgba[..., 3:] + background * (1 - rgba[..., 3:])


def decode_image(encoded: np.ndarray) -> np.ndarray:
    """The RGB image [H, W, 3] of an encoded [H, W, 6] (or plain [H, W, 3]) input."""
    encoded = np.asarray(encoded)
    return encoded[..., :3]


def save_grid(
    path: str,
    images: Sequence[np.ndarray],
    explanations: Sequence[np.ndarray],
    contributions: Optional[Sequence[np.ndarray]] = None,
    scale: int = 1,
) -> str:
    """Write a PNG: one row per image — the image, its colour explanation, and optionally
    its contribution map. Images are [H, W, 3|6] in [0, 1], explanations RGBA [H, W, 4].
    The file is written to a temporary name and renamed, so a crash leaves no half PNG.
    """
    if len(images) != len(explanations):
        raise ValueError(f"{len(images)} images but {len(explanations)} explanations")
    if contributions is not None and len(contributions) != len(images):
        raise ValueError(f"{len(images)} images but {len(contributions)} contribution maps")
    rows = []
    for i, (img, expl) in enumerate(zip(images, explanations)):
        tiles = [decode_image(img), composite(expl)]
        if contributions is not None:
            tiles.append(contribution_map_image(contributions[i]))
        rows.append(np.concatenate([to_uint8(t) for t in tiles], axis=1))
    return save_png(path, np.concatenate(rows, axis=0), scale=scale)


def save_png(path: str, image: np.ndarray, scale: int = 1) -> str:
    """Write a uint8 [H, W, 3|4] image as a PNG, upscaled ``scale`` times (nearest), creating
    the folder; written to a temporary name beside ``path`` and renamed, so a crash leaves
    no half-written file. Returns ``path``."""
    from PIL import Image

    pil = Image.fromarray(np.asarray(image))
    if scale != 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        pil.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
