"""The quickstart dataset: procedurally drawn shapes on cluttered backgrounds, no download.

Each image holds exactly one *object*; its class sets its shape/texture and its hue:

    0 disc      1 square      2 triangle      3 cross      4 ring      5 stripes

placed at a random position, scale and rotation on a cluttered background: a dark, greyish
smooth random colour field with pixel noise; distractors (thin lines and small irregular
splotches) in any bright colour; and *decoys*: thin lines and scattered pixels in the colour
of another class, about as many pixels as the object has. Every class has its own (jittered)
hue, but because of the decoys the most frequent colour of an image is the class colour only
about half the time: the network has to find the object, the one large solid shape, and read
its colour/shape/texture there. Measured (5000 train / 1000 test images, 32x32): logistic
regression on the hue histogram of the whole image 74 % (on the object's pixels 97 %, on the
rest 19 %, chance 17 %); ``bcos_small_cnn`` (Adam 2e-3, cosine, batch 64, flip + crop)
95 % after 2 epochs and 98.6 % after 10 (2.8 min on a loaded 2-core CPU).

That makes it a localisation test bed: every example comes with the exact object mask
(occluding lines removed), so an explanation can be scored by how much of its positive
evidence falls on the object.

``QuickstartSource(split, num_examples, num_classes, image_size, seed)`` is a random-access
source (``len``, ``[i]`` -> ``{'image': uint8 [S, S, 3], 'label': int, 'mask': bool [S, S]}``).
Example ``i`` of a split depends only on ``(seed, split, i)``; labels are balanced
(``label = i % num_classes``, the pipeline shuffles). ``make_dataset(cfg)`` serves it when
``cfg.name == 'quickstart'``; ``save_preview(path)`` writes a PNG grid of examples.
"""
from __future__ import annotations

import colorsys
import functools
import os
from typing import Dict, Optional

import numpy as np

__all__ = ["CLASS_NAMES", "QuickstartSource", "render", "save_preview", "SPLITS"]

CLASS_NAMES = ("disc", "square", "triangle", "cross", "ring", "stripes")
# Hue of each class (red, green, blue, yellow, magenta, cyan), jittered per object. The class
# is in the colour as well as in the shape because a ~30k-parameter B-cos CNN (receptive
# field ~11 px) learns colour + place in a minute but shape only slowly: with a quarter of
# the objects in a random hue it plateaued at ~81 % (the colour-only accuracy).
_CLASS_HUES = (0.0, 0.33, 0.62, 0.15, 0.83, 0.5)
# Split name -> stream id; 'validation' and 'test' are one held-out split, so that configs
# written for tfds datasets ('validation' for ImageNet, 'test' for CIFAR) both work.
SPLITS = {"train": 0, "test": 1, "validation": 1}


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.asarray(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32)


def _any_colour(rng: np.random.Generator) -> np.ndarray:
    """A colour from the distribution shared by objects and clutter (any hue)."""
    return _hsv(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.6, 1.0))


def _object_colour(rng: np.random.Generator, label: int) -> np.ndarray:
    hue = _CLASS_HUES[label] + rng.normal(0.0, 0.035)
    return _hsv(hue, rng.uniform(0.5, 1.0), rng.uniform(0.6, 1.0))


@functools.lru_cache(maxsize=8)
def _grids(size: int):
    """Pixel-centre coordinates (yy, xx) and the bilinear 3 -> size upsampling matrix."""
    c = np.arange(size, dtype=np.float32) + 0.5
    yy, xx = np.meshgrid(c, c, indexing="ij")
    t = c / size * 2.0  # position on a 3-point grid spanning the image, in [0, 2]
    up = np.maximum(0.0, 1.0 - np.abs(t[:, None] - np.arange(3, dtype=np.float32)[None, :]))
    return yy, xx, up.astype(np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random colour field (a bilinearly upsampled 3x3 grid of colours) + noise: [S, S, 3]."""
    # Darker and greyer than objects and clutter, so an object always stands out from the
    # background itself (the clutter, which does not, is what makes the task non-trivial).
    grid = np.stack(
        [_hsv(rng.random(), rng.uniform(0.2, 0.7), rng.uniform(0.15, 0.5)) for _ in range(9)]
    ).reshape(3, 3, 3)
    up = _grids(size)[2]
    rows = (up @ grid.reshape(3, 9)).reshape(size, 3, 3)  # [y, grid column, channel]
    img = np.matmul(up, rows)  # [y, x, channel]
    return img + np.float32(0.05) * rng.standard_normal((size, size, 3), dtype=np.float32)


def _segment_mask(yy, xx, p0, p1, width) -> np.ndarray:
    d = p1 - p0
    t = np.clip(((yy - p0[0]) * d[0] + (xx - p0[1]) * d[1]) / max(float(d @ d), 1e-6), 0.0, 1.0)
    return (yy - p0[0] - t * d[0]) ** 2 + (xx - p0[1] - t * d[1]) ** 2 <= (width / 2) ** 2


def _draw_clutter(rng, img, yy, xx, size) -> None:
    for _ in range(rng.integers(2, 6)):
        colour = _any_colour(rng)
        if rng.random() < 0.5:  # a thin line across (part of) the image
            p0, p1 = rng.uniform(-0.1, 1.1, (2, 2)) * size
            m = _segment_mask(yy, xx, p0, p1, rng.uniform(0.8, 0.04 * size + 0.8))
        else:  # an irregular splotch: a few small overlapping discs, smaller than any object
            c = rng.uniform(0, size, 2)
            m = np.zeros((size, size), bool)
            for _ in range(rng.integers(2, 4)):
                cc = c + rng.normal(0, 0.04 * size, 2)
                r = rng.uniform(0.03, 0.07) * size
                m |= (yy - cc[0]) ** 2 + (xx - cc[1]) ** 2 <= r * r
        img[m] = colour


def _draw_decoys(rng, img, yy, xx, size, label, area) -> None:
    """Thin lines and isolated pixels in another class's colour, about as many pixels as the
    object has: a colour histogram of the whole image then no longer tells the class (the
    colour of the larger share wins only about half the time); where the colour sits does."""
    decoy = int(rng.choice([c for c in range(len(CLASS_NAMES)) if c != label]))
    m = np.zeros((size, size), bool)
    for _ in range(rng.integers(1, 4)):
        p0, p1 = rng.uniform(0, 1, (2, 2)) * size
        m |= _segment_mask(yy, xx, p0, p1, 1.0)
    rest = area * rng.uniform(0.6, 1.4) - m.sum()
    if rest > 0:
        m |= rng.random((size, size)) < rest / (size * size)
    noise = np.float32(0.04) * rng.standard_normal((int(m.sum()), 3), dtype=np.float32)
    img[m] = _object_colour(rng, decoy) + noise


def _shape_mask(label: int, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Pixels of shape ``label`` in object coordinates (u, v rotated, centred), circumradius r."""
    d2 = u * u + v * v
    if label == 0:  # disc
        return d2 <= r * r
    if label in (1, 5):  # square (class 5 is a striped square, see render)
        a = 0.75 * r
        return (np.abs(u) <= a) & (np.abs(v) <= a)
    if label == 2:  # equilateral triangle: inside three half-planes (circumradius 1.2 r)
        m = np.ones(u.shape, bool)
        for k in range(3):
            a = np.pi / 2 + 2 * np.pi * k / 3
            m &= u * np.cos(a) + v * np.sin(a) <= 0.6 * r
        return m
    if label == 3:  # cross: two bars
        w, a = 0.27 * r, 0.95 * r
        return ((np.abs(u) <= w) & (np.abs(v) <= a)) | ((np.abs(v) <= w) & (np.abs(u) <= a))
    if label == 4:  # ring
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    raise ValueError(f"unknown quickstart class {label}")


def render(rng: np.random.Generator, label: int, size: int) -> Dict[str, np.ndarray]:
    """Draw one example of class ``label``: {'image': uint8 [size, size, 3], 'mask': bool [size, size]}."""
    if not 0 <= label < len(CLASS_NAMES):
        raise ValueError(f"label {label} out of range: the quickstart has {len(CLASS_NAMES)} classes")
    yy, xx, _ = _grids(size)
    r = rng.uniform(0.25, 0.4) * size
    cy, cx = rng.uniform(r, size - r, 2)
    theta = rng.uniform(0, 2 * np.pi)
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    mask = _shape_mask(label, u, v, r)

    img = _background(rng, size)
    _draw_clutter(rng, img, yy, xx, size)
    _draw_decoys(rng, img, yy, xx, size, label, int(mask.sum()))
    colour = _object_colour(rng, label)
    if label == 5:  # stripes: the object colour alternating with a darker shade of it
        period = rng.uniform(0.3, 0.45) * r
        phi = rng.uniform(0, np.pi)
        on = np.sin(2 * np.pi * (u * np.cos(phi) + v * np.sin(phi)) / period) > 0
        pixels = np.where(on[..., None], colour, colour * rng.uniform(0.2, 0.45))
        img[mask] = pixels[mask]
    else:
        img[mask] = colour
    img[mask] += np.float32(0.04) * rng.standard_normal((int(mask.sum()), 3), dtype=np.float32)
    # A line drawn over the object now and then: partial occlusion, removed from the mask.
    if rng.random() < 0.15:
        p0, p1 = rng.uniform(0, 1, (2, 2)) * size
        occ = _segment_mask(yy, xx, p0, p1, rng.uniform(0.8, 1.6))
        img[occ] = _any_colour(rng)
        mask &= ~occ
    image = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return {"image": image, "mask": mask}


class QuickstartSource:
    """Random-access source of the quickstart dataset (grain ``RandomAccessDataSource``).

    Args:
      split: 'train', or 'test' / 'validation' (one held-out split).
      num_examples: length of the split.
      num_classes: 2..6; the first ``num_classes`` of ``CLASS_NAMES``.
      image_size: side S of the square images.
      seed: the dataset's content seed (not the training seed).
      cache: render every example once on construction (a few seconds for thousands of
        32x32 images) instead of on every access; examples are identical either way.

    ``src[i]`` -> {'image': uint8 [S, S, 3], 'label': int, 'mask': bool [S, S]}.
    """

    def __init__(
        self,
        split: str = "train",
        num_examples: int = 5000,
        num_classes: int = 6,
        image_size: int = 32,
        seed: int = 0,
        cache: bool = True,
    ):
        if split not in SPLITS:
            raise ValueError(f"quickstart split {split!r} unknown; use one of {sorted(SPLITS)}")
        if not 2 <= num_classes <= len(CLASS_NAMES):
            raise ValueError(f"quickstart num_classes={num_classes}: must be in [2, {len(CLASS_NAMES)}]")
        if image_size < 16:
            raise ValueError(f"quickstart image_size={image_size}: must be at least 16 pixels")
        if num_examples < 1:
            raise ValueError(f"quickstart num_examples={num_examples}: must be positive")
        self.split, self.num_examples, self.num_classes = split, int(num_examples), int(num_classes)
        self.image_size, self.seed = int(image_size), int(seed)
        self._images: Optional[np.ndarray] = None
        self._masks: Optional[np.ndarray] = None
        if cache:
            examples = [self._render(i) for i in range(self.num_examples)]
            self._images = np.stack([e["image"] for e in examples])
            self._masks = np.stack([e["mask"] for e in examples])

    def _render(self, index: int) -> Dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, SPLITS[self.split], index])
        return render(rng, index % self.num_classes, self.image_size)

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> Dict[str, np.ndarray]:
        index = int(index)
        if not 0 <= index < self.num_examples:
            raise IndexError(f"index {index} out of range for a quickstart split of {self.num_examples}")
        if self._images is not None:
            image, mask = self._images[index], self._masks[index]
        else:
            ex = self._render(index)
            image, mask = ex["image"], ex["mask"]
        return {"image": image, "label": np.int64(index % self.num_classes), "mask": mask}

    def __repr__(self) -> str:
        return (
            f"QuickstartSource(split={self.split!r}, num_examples={self.num_examples}, "
            f"num_classes={self.num_classes}, image_size={self.image_size}, seed={self.seed})"
        )


def save_preview(
    path: str,
    num_per_class: int = 8,
    num_classes: int = len(CLASS_NAMES),
    image_size: int = 32,
    seed: int = 0,
    split: str = "train",
    scale: int = 4,
    with_masks: bool = True,
) -> str:
    """Write a PNG grid of quickstart examples: one row per class (images, then their masks).

    Returns the path. The file is written under a temporary name and renamed.
    """
    from PIL import Image

    src = QuickstartSource(split, num_per_class * num_classes, num_classes, image_size, seed, cache=False)
    pad = 2
    tile = image_size + pad
    cols = num_per_class * (2 if with_masks else 1)
    grid = np.full((num_classes * tile + pad, cols * tile + pad, 3), 255, np.uint8)
    for i in range(len(src)):
        ex = src[i]
        row, col = int(ex["label"]), i // num_classes
        tiles = [ex["image"]]
        if with_masks:
            tiles.append(np.repeat(ex["mask"][..., None].astype(np.uint8) * 255, 3, axis=-1))
        for k, t in enumerate(tiles):
            c = col + k * num_per_class
            y, x = pad + row * tile, pad + c * tile
            grid[y : y + image_size, x : x + image_size] = t
    pil = Image.fromarray(grid)
    if scale != 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    pil.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
