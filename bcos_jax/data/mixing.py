"""Batch-level mixup and cutmix (NumPy), as the reference's ``RandomMixup`` / ``RandomCutmix``.

Both pair every image with its neighbour in the batch (``roll(1)``), draw
``lambda ~ Beta(alpha, alpha)`` once per batch, and mix the one-hot targets with the same
weight as the pixels. When both are enabled the reference picks one of them per batch
uniformly (torchvision ``RandomChoice``, p=1); so does ``mix_batch``.

For B-cos inputs the reference mixes the 6-channel ``[x, 1-x]`` batch; both mixes are
affine with weights summing to one, so mixing before or after ``add_inverse`` is the same.
An optional object mask follows the pixels: cutmix pastes the partner's mask into the box,
mixup keeps the union (both objects are visible, at reduced contrast).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

__all__ = ["mixup", "cutmix", "cutmix_box", "mix_batch"]


def _check(images: np.ndarray, targets: np.ndarray) -> None:
    if images.ndim != 4 or targets.ndim != 2 or images.shape[0] != targets.shape[0]:
        raise ValueError(
            f"mixing expects images [B, H, W, C] and targets [B, num_classes], got {images.shape} "
            f"and {targets.shape}"
        )


def mixup(
    rng: np.random.Generator,
    images: np.ndarray,
    targets: np.ndarray,
    alpha: float,
    mask: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray], float]:
    """``x <- lam x + (1 - lam) roll(x, 1)``, same for the targets.

    Args: images [B, H, W, C] float, targets [B, K] float, alpha > 0, mask bool [B, H, W] or None.
    Returns: (images, targets, mask, lam).
    """
    _check(images, targets)
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be positive, got {alpha}")
    lam = float(rng.beta(alpha, alpha))
    images = lam * images + (1.0 - lam) * np.roll(images, 1, axis=0)
    targets = lam * targets + (1.0 - lam) * np.roll(targets, 1, axis=0)
    if mask is not None:
        mask = mask | np.roll(mask, 1, axis=0)
    return images.astype(np.float32), targets.astype(np.float32), mask, lam


def cutmix_box(
    rng: np.random.Generator, height: int, width: int, lam: float
) -> Tuple[int, int, int, int]:
    """The cutmix box (y1, y2, x1, x2) for mixing weight ``lam``: a random centre and half sides
    ``int(0.5 sqrt(1 - lam) * side)``, clipped to the image (so the area can be smaller)."""
    r_x = int(rng.integers(width))
    r_y = int(rng.integers(height))
    r = 0.5 * math.sqrt(1.0 - lam)
    r_w_half, r_h_half = int(r * width), int(r * height)
    x1, y1 = max(r_x - r_w_half, 0), max(r_y - r_h_half, 0)
    x2, y2 = min(r_x + r_w_half, width), min(r_y + r_h_half, height)
    return y1, y2, x1, x2


def cutmix(
    rng: np.random.Generator,
    images: np.ndarray,
    targets: np.ndarray,
    alpha: float,
    mask: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray], float]:
    """Paste one box of ``roll(x, 1)`` into every image; targets weighted by the area kept.

    Args: images [B, H, W, C] float, targets [B, K] float, alpha > 0, mask bool [B, H, W] or None.
    Returns: (images, targets, mask, lam) with ``lam = 1 - box area / image area``.
    """
    _check(images, targets)
    if alpha <= 0:
        raise ValueError(f"cutmix alpha must be positive, got {alpha}")
    lam = float(rng.beta(alpha, alpha))
    h, w = images.shape[1:3]
    y1, y2, x1, x2 = cutmix_box(rng, h, w, lam)
    images = images.copy()
    images[:, y1:y2, x1:x2] = np.roll(images, 1, axis=0)[:, y1:y2, x1:x2]
    if mask is not None:
        mask = mask.copy()
        mask[:, y1:y2, x1:x2] = np.roll(mask, 1, axis=0)[:, y1:y2, x1:x2]
    lam = 1.0 - (x2 - x1) * (y2 - y1) / (w * h)
    targets = lam * targets + (1.0 - lam) * np.roll(targets, 1, axis=0)
    return images, targets.astype(np.float32), mask, lam


def mix_batch(
    rng: np.random.Generator,
    images: np.ndarray,
    targets: np.ndarray,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    mask: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Apply mixup or cutmix (those with alpha > 0; one uniformly at random if both) to a batch."""
    choices = [f for f, a in ((mixup, mixup_alpha), (cutmix, cutmix_alpha)) if a > 0]
    if not choices:
        return images, targets, mask
    k = int(rng.integers(len(choices))) if len(choices) > 1 else 0
    alpha = (mixup_alpha, cutmix_alpha)[0 if choices[k] is mixup else 1]
    images, targets, mask, _ = choices[k](rng, images, targets, alpha, mask)
    return images, targets, mask
