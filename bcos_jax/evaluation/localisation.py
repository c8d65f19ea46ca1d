"""Localisation metrics: the grid pointing game of the reference, and mask localisation.

Grid pointing game (CoDA-Nets eq. 11; B-cos ``interpretability/analyses/localisation.py``,
docs/evaluation.md §1), step by step:

1. ``sorted_confidences``: the max logit of every *correctly* classified image, per class,
   sorted by logit, descending.
2. ``grid_index_sequence``: the reference's ``get_sorted_indices``: with NumPy's legacy
   global RNG seeded 42 (here a ``RandomState(42)``, the same stream), while more than
   ``n_imgs`` classes still have an unused image with ``sigmoid(logit) > conf_thresh``,
   sample ``n_imgs`` of those classes without replacement and append each one's next most
   confident image.
3. ``plan_grids``: the reference's ``make_multi_image`` walk over that sequence: take the next
   ``n_imgs`` images of distinct classes. **Offset quirk** (both reference versions): the
   next grid starts at ``i + offset + 1``, i.e. one index of the sequence is skipped after
   every grid, so later grids straddle the sampled blocks (a repeated class is then skipped).
   ``offset_quirk=True`` keeps this for parity; False starts at ``i + offset``.
4. ``make_grid``: image k goes to row ``k % s``, column ``k // s`` (column-major), as the
   reference's ``view(-1, s, s, C, H, W).permute(0, 3, 2, 4, 1, 5)``.
5. ``grid_pointing_scores``: sum attributions over channels, optionally smooth with
   ``avg_pool(smooth, stride 1, padding (smooth−1)//2, count_include_pad)``, clamp at 0,
   average per cell, and score target k by its own cell's share of the total positive
   attribution (0 when there is none).

``rescale_images`` shrinks the single images by s before gridding so the grid keeps the
single-image size (the reference's ``*_rescale`` configs resize the raw image to
``resize // s`` and crop ``crop // s``; here the already cropped image is resized by the
same factor, antialiased bilinear).
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = [
    "grid_index_sequence",
    "grid_pointing_scores",
    "make_grid",
    "mask_localisation",
    "plan_grids",
    "rescale_images",
    "sigmoid32",
    "smooth_attributions",
    "sorted_confidences",
]

SortedConfs = Dict[int, List[Tuple[int, float]]]


def sorted_confidences(
    max_logits: np.ndarray, predictions: np.ndarray, labels: np.ndarray, num_classes: int
) -> SortedConfs:
    """Per class, ``(image index, max logit)`` of its correctly classified images, most confident
    first.

    All arrays are [M] over the evaluation set in dataset order (the reference's
    ``compute_sorted_confs``; ties keep dataset order, as Python's stable sort there).
    """
    max_logits, predictions, labels = (
        np.asarray(a).reshape(-1) for a in (max_logits, predictions, labels)
    )
    if not len(max_logits) == len(predictions) == len(labels):
        raise ValueError(
            f"max_logits, predictions and labels must have the same length, got "
            f"{len(max_logits)}, {len(predictions)}, {len(labels)}"
        )
    confs: SortedConfs = {c: [] for c in range(num_classes)}
    for i, (logit, pred, label) in enumerate(zip(max_logits, predictions, labels)):
        if int(label) >= num_classes or int(label) < 0:
            raise ValueError(f"label {int(label)} of image {i} is outside [0, {num_classes})")
        if int(pred) == int(label):
            confs[int(label)].append((i, float(logit)))
    return {c: sorted(v, key=lambda t: t[1], reverse=True) for c, v in confs.items()}


def sigmoid32(logit: float) -> float:
    """sigmoid in float32, as the reference's ``torch.tensor(logit).sigmoid().item()``."""
    z = np.float32(logit)
    with np.errstate(over="ignore"):
        return float(np.float32(1.0) / (np.float32(1.0) + np.exp(-z, dtype=np.float32)))


def grid_index_sequence(sorted_confs: Mapping[int, Sequence[Tuple[int, float]]], n_imgs: int,
                        conf_thresh: float = 0.5, seed: int = 42) -> List[int]:
    """The reference's ``get_sorted_indices``: image indices in blocks of ``n_imgs`` classes.

    ``sorted_confs`` must have the classes 0..C−1 as keys (the reference indexes its
    availability mask by class id).
    """
    classes = np.array([k for k in sorted_confs.keys()])
    if not np.array_equal(classes, np.arange(len(classes))):
        raise ValueError("sorted_confs must have the keys 0, 1, ..., C-1 in order")
    position = {int(k): 0 for k in classes}

    def confident(c: int) -> bool:
        return sigmoid32(sorted_confs[c][position[c]][1]) > conf_thresh

    mask = np.array(
        [False if len(sorted_confs[int(k)]) == 0 else confident(int(k)) for k in classes]
    )
    rng = np.random.RandomState(seed)
    indices: List[int] = []
    while mask.sum() > n_imgs:
        sample = rng.choice(classes[mask], size=n_imgs, replace=False)
        for c in sample:
            c = int(c)
            img_idx, _ = sorted_confs[c][position[c]]
            position[c] += 1
            mask[c] = confident(c) if position[c] < len(sorted_confs[c]) else False
            indices.append(int(img_idx))
    return indices


def plan_grids(sequence: Sequence[int], labels: np.ndarray, n_imgs: int, sample_size: int,
               offset_quirk: bool = True) -> List[Tuple[List[int], List[int]]]:
    """Up to ``sample_size`` grids as ``(image indices, classes)`` in placement order.

    The reference's ``make_multi_image`` loop; it stops early (fewer grids) where the
    reference would run off the end of the sequence with an IndexError.
    """
    labels = np.asarray(labels)
    grids = []
    offset = 0
    for _ in range(sample_size):
        idx: List[int] = []
        tgts: List[int] = []
        i = 0
        while len(idx) < n_imgs and i + offset < len(sequence):
            j = int(sequence[i + offset])
            i += 1
            t = int(labels[j])
            if t in tgts:
                continue
            idx.append(j)
            tgts.append(t)
        if len(idx) < n_imgs:
            break
        grids.append((idx, tgts))
        offset = i + offset + (1 if offset_quirk else 0)
    return grids


def _side(n_imgs: int) -> int:
    s = math.isqrt(n_imgs)
    if s * s != n_imgs:
        raise ValueError(f"the number of images per grid must be a perfect square, got {n_imgs}")
    return s


def make_grid(images: Array, grid_size: int) -> Array:
    """[G, s², H, W, C] -> [G, s·H, s·W, C]; image k at row k % s, column k // s."""
    g, n, h, w, c = images.shape
    if n != grid_size * grid_size:
        raise ValueError(f"make_grid: expected {grid_size ** 2} images per grid, got {n}")
    s = grid_size
    # images[g, a*s + b] -> (col a, row b): [G, a, b, H, W, C] -> [G, b, H, a, W, C]
    return images.reshape(g, s, s, h, w, c).transpose(0, 2, 3, 1, 4, 5).reshape(g, s * h, s * w, c)


def rescale_images(images: Array, grid_size: int) -> Array:
    """[N, H, W, C] -> [N, H // s, W // s, C] (antialiased bilinear): grids of the original size."""
    n, h, w, c = images.shape
    return jax.image.resize(
        images, (n, h // grid_size, w // grid_size, c), method="linear", antialias=True
    )


def smooth_attributions(a: Array, smooth: int) -> Array:
    """torch ``avg_pool2d(a, smooth, stride=1, padding=(smooth-1)//2)`` on [..., H, W].

    Padded zeros count in the mean (``count_include_pad``).
    """
    if smooth % 2 == 0:
        raise ValueError(
            f"smooth={smooth}: must be odd (the reference pads (k-1)//2, so an even k shrinks "
            "the map and breaks the cell layout)"
        )
    p = (smooth - 1) // 2
    lead = a.ndim - 2
    s = jax.lax.reduce_window(
        a, jnp.array(0, a.dtype), jax.lax.add,
        window_dimensions=(1,) * lead + (smooth, smooth),
        window_strides=(1,) * a.ndim,
        padding=((0, 0),) * lead + ((p, p), (p, p)),
    )
    return s / (smooth * smooth)


def grid_pointing_scores(attributions: Array, grid_size: int, smooth: Optional[int] = None,
                         cell_size: Optional[int] = None) -> Array:
    """Localisation scores of grid images.

    Args:
      attributions: [K, G, s·H, s·W, C'] (a method's output for [G, K] targets) or
        [K, G, s·H, s·W] already summed over channels; K = s², target k is the class of the
        image placed k-th (column-major).
      grid_size: s.
      smooth: odd average-pool size applied before clamping; None/0/1: none.
      cell_size: side of one image in the grid (default: grid side // s).

    Returns:
      [G, K] scores in [0, 1]: the share of positive attribution in target k's own cell.
    """
    a = jnp.asarray(attributions, jnp.float32)
    if a.ndim == 5:
        a = jnp.sum(a, axis=-1)
    if a.ndim != 4:
        raise ValueError(f"attributions must be [K, G, H, W(, C)], got shape {attributions.shape}")
    s = grid_size
    k = a.shape[0]
    if k != s * s:
        raise ValueError(f"{k} targets per grid image, but a {s}x{s} grid has {s * s} cells")
    if smooth and smooth > 1:
        a = smooth_attributions(a, int(smooth))
    a = jnp.maximum(a, 0)
    cell = a.shape[-1] // s if cell_size is None else int(cell_size)
    if a.shape[-2] < s * cell or a.shape[-1] < s * cell:
        raise ValueError(
            f"grid attributions {a.shape[-2:]} are smaller than {s}x{s} cells of {cell}"
        )
    cells = (
        a[..., : s * cell, : s * cell].reshape(k, a.shape[1], s, cell, s, cell).mean(axis=(3, 5))
    )
    flat = jnp.swapaxes(cells, -1, -2).reshape(k, a.shape[1], s * s)  # column-major cell order
    total = jnp.sum(flat, axis=-1)  # [K, G]
    own = flat[jnp.arange(k), :, jnp.arange(k)]  # [K, G]: target k's own cell
    scores = jnp.where(total * own > 0, own / jnp.where(total > 0, total, 1.0), 0.0)
    return scores.T


def mask_localisation(attributions: Array, masks: Array) -> Tuple[Array, Array]:
    """Share of positive attribution inside a known object mask, and the uniform baseline.

    Args:
      attributions: [N, H, W, C'] (summed over channels) or [N, H, W].
      masks: [N, H, W] bool/0-1 object masks.

    Returns:
      (fraction [N]: Σ relu(a)·mask / Σ relu(a), 0 without positive attribution;
       area [N]: the mask's share of the image, what a uniform attribution would score).
    """
    a = jnp.asarray(attributions, jnp.float32)
    if a.ndim == 4:
        a = jnp.sum(a, axis=-1)
    m = jnp.asarray(masks).astype(jnp.float32)
    if a.shape != m.shape:
        raise ValueError(f"attributions {a.shape} and masks {m.shape} must both be [N, H, W]")
    pos = jnp.maximum(a, 0)
    total = jnp.sum(pos, axis=(1, 2))
    inside = jnp.sum(pos * m, axis=(1, 2))
    frac = jnp.where(total > 0, inside / jnp.where(total > 0, total, 1.0), 0.0)
    return frac, jnp.mean(m, axis=(1, 2))
