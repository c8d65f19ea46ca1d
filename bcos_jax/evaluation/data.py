"""Random access to an evaluation set: RGB images in [0, 1], labels, optional object masks.

``EvalData`` wraps any source with ``len(src)`` and ``src[i] -> {'image', 'label'[, 'mask']}``
(the quickstart ``QuickstartSource``, a ``tfds.data_source``, a grain ``MapDataset``) or
plain arrays. Images may be uint8 (scaled by 1/255) or float in [0, 1]; an optional
``transform`` maps a decoded uint8/float image to the model's square input size (e.g. the
reference resize + centre crop for ImageNet). Every image must come out the same size.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np

__all__ = ["EvalData"]


class _ArraySource:
    def __init__(self, images, labels, masks):
        self.images, self.labels, self.masks = images, labels, masks

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        ex = {"image": self.images[i], "label": self.labels[i]}
        if self.masks is not None:
            ex["mask"] = self.masks[i]
        return ex


def _check_image_values(images: np.ndarray, name: str) -> None:
    """uint8 (0..255) or float in [0, 1], finite; anything else is a ValueError with the fix."""
    if images.dtype == np.uint8:
        return
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(
            f"{name}: images must be uint8 (0..255) or float in [0, 1], got dtype {images.dtype}; "
            "convert them with images.astype(np.uint8) or images / 255.0"
        )
    finite = np.isfinite(images)
    if not finite.all():
        raise ValueError(
            f"{name}: images contain {int(images.size - finite.sum())} non-finite value(s) (NaN or "
            "inf)"
        )
    if images.size:
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ValueError(
                f"{name}: float images must be in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; "
                "give unnormalised RGB (uint8, or float divided by 255), not mean/std normalised"
            )


@dataclasses.dataclass
class EvalData:
    """An evaluation set.

    Attributes:
      source: ``len`` and ``[i] -> dict`` with 'image' [H, W, 3], 'label' and optionally
        'mask' [H, W].
      num_classes: number of classes of the model's output.
      name: for the summary.
      transform: optional image transform (applied before scaling to [0, 1] if it returns uint8).
      limit: use only the first ``limit`` examples (None: all).
    """

    source: Any
    num_classes: int
    name: str = "data"
    transform: Optional[Callable[[np.ndarray], np.ndarray]] = None
    limit: Optional[int] = None

    def __post_init__(self):
        n = len(self.source)
        if n == 0:
            raise ValueError(f"evaluation set {self.name!r} is empty")
        self._len = n if self.limit is None else min(n, int(self.limit))
        first = self.source[0]
        missing = {"image", "label"} - set(first)
        if missing:
            raise ValueError(
                f"evaluation examples need keys 'image' and 'label'; {self.name!r} lacks "
                f"{sorted(missing)}"
            )
        self.has_masks = "mask" in first and first["mask"] is not None

    @classmethod
    def from_arrays(cls, images: np.ndarray, labels: np.ndarray, masks: Optional[np.ndarray] = None,
                    num_classes: Optional[int] = None, name: str = "arrays",
                    limit: Optional[int] = None) -> EvalData:
        """From arrays: images [M, H, W, 3] (uint8 or float in [0, 1]), labels [M], masks [M, H, W].
        """
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be [M, H, W, 3], got shape {images.shape}")
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"labels must be [M] with M={images.shape[0]}, got shape {labels.shape}"
            )
        if masks is not None and np.asarray(masks).shape != images.shape[:3]:
            raise ValueError(
                f"masks must be [M, H, W] = {images.shape[:3]}, got {np.asarray(masks).shape}"
            )
        _check_image_values(images, name)
        k = int(labels.max()) + 1 if num_classes is None else num_classes
        return cls(
            _ArraySource(images, labels, None if masks is None else np.asarray(masks)),
            k,
            name,
            limit=limit,
        )

    def __len__(self) -> int:
        return self._len

    def _image(self, img: Any) -> np.ndarray:
        img = np.asarray(img)
        if self.transform is not None:
            img = np.asarray(self.transform(img))
        if img.dtype == np.uint8:
            img = img.astype(np.float32) / 255.0
        img = img.astype(np.float32)
        if img.ndim != 3 or img.shape[-1] != 3:
            raise ValueError(f"{self.name}: images must be RGB [H, W, 3], got shape {img.shape}")
        return img

    def load(self, indices: Sequence[int]) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """(images [n, H, W, 3] float32 in [0, 1], labels [n] int32, masks [n, H, W] or None)."""
        exs = [self.source[int(i)] for i in indices]
        images = [self._image(ex["image"]) for ex in exs]
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise ValueError(
                f"{self.name}: images of different sizes {sorted(shapes)}; give a transform"
            )
        labels = np.asarray([int(ex["label"]) for ex in exs], np.int32)
        masks = None
        if self.has_masks:
            masks = np.stack([np.asarray(ex["mask"]).astype(bool) for ex in exs])
            if masks.shape != (len(exs),) + images[0].shape[:2]:
                raise ValueError(
                    f"{self.name}: masks {masks.shape[1:]} do not match images "
                    f"{images[0].shape[:2]}"
                )
        return np.stack(images), labels, masks
