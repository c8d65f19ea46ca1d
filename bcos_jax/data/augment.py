"""Per-example image augmentations (Pillow + NumPy), faithful to the PyTorch reference.

The reference trains on PIL images with torchvision transforms, so these are ports of
torchvision's PIL code paths (``RandomResizedCrop``, ``Resize``, ``CenterCrop``,
``RandomCrop``, ``RandomHorizontalFlip``, ``ColorJitter``, ``TrivialAugmentWide``,
``RandAugment``, ``RandomErasing``) and of the v1 code's ildoonet ``RandAugment`` and AlexNet
``Lighting`` (docs/recipes.md §1). For the same parameters they produce the same pixels as
torchvision (tests/test_data.py checks this op by op); random draws come from a NumPy
``Generator`` instead of torch's global RNG.

Every random transform is split into ``sample_*`` / ``*_params`` (draw the parameters from
``rng``) and a deterministic application, so that the same geometry can be applied to an
object mask (with nearest-neighbour resampling, ``apply_op_to_mask``).

Images are PIL ``RGB`` images until ``to_float``; after it float32 [H, W, 3] arrays in [0, 1].
Masks are PIL ``L`` images with values 0/255.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from bcos_jax import constants

BILINEAR = Image.Resampling.BILINEAR
NEAREST = Image.Resampling.NEAREST

IMAGENET_MEAN = np.asarray(constants.IMAGENET_MEAN, np.float32)
IMAGENET_STD = np.asarray(constants.IMAGENET_STD, np.float32)
# AlexNet PCA colour noise, as in moboehle/B-cos:
# experiments/Imagenet/bcos/experiment_parameters.py.
IMAGENET_PCA_EIGVAL = np.asarray([0.2175, 0.0188, 0.0045], np.float32)
IMAGENET_PCA_EIGVEC = np.asarray(
    [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]], np.float32
)

Box = Tuple[int, int, int, int]  # (top, left, height, width), torchvision's order


# ----------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------


def rrc_params(
    rng: np.random.Generator,
    height: int,
    width: int,
    scale: Tuple[float, float] = (0.08, 1.0),
    ratio: Tuple[float, float] = (3 / 4, 4 / 3),
) -> Box:
    """``RandomResizedCrop.get_params``: a box covering ``scale`` of the area with aspect ``ratio``.

    Ten tries at a random area and log-uniform aspect ratio; if none fits, the largest
    centred box whose aspect ratio is clamped to ``ratio``.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(img: Image.Image, box: Box, size: int, resample=BILINEAR) -> Image.Image:
    """Crop ``box`` = (top, left, h, w) and resize it to ``size`` x ``size``."""
    top, left, h, w = box
    return resize(img.crop((left, top, left + w, top + h)), (size, size), resample)


def resize(img: Image.Image, hw: Tuple[int, int], resample=BILINEAR) -> Image.Image:
    """Resize to (height, width); a no-op at the same size (as torchvision's ``F.resize``)."""
    h, w = hw
    if img.size == (w, h):
        return img
    return img.resize((w, h), resample)


def shorter_side_size(height: int, width: int, size: int) -> Tuple[int, int]:
    """torchvision ``Resize(size)``'s output (height, width): shorter side -> size, aspect kept."""
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def resize_shorter(img: Image.Image, size: int, resample=BILINEAR) -> Image.Image:
    """``Resize(size)``: scale so that the shorter side is ``size``."""
    return resize(img, shorter_side_size(img.height, img.width, size), resample)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """``CenterCrop(size)``, zero-padding first if the image is smaller than the crop."""
    w, h = img.size
    if size > w or size > h:
        pw, ph = max(size - w, 0), max(size - h, 0)
        padded = Image.new(img.mode, (w + pw, h + ph), 0)
        padded.paste(img, (pw // 2, ph // 2))
        img, (w, h) = padded, padded.size
        if (w, h) == (size, size):
            return img
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def resize_center_crop(img: Image.Image, resize: int, crop: int, resample=BILINEAR) -> Image.Image:
    """The eval geometry: ``Resize(resize)`` then ``CenterCrop(crop)``, each skipped when 0.

    An image still smaller than ``crop`` after the resize (possible only when ``resize <
    crop``, or with no resize) is zero-padded around its centre, as torchvision's
    ``CenterCrop`` does, rather than refused: the model sees what the reference's eval
    transform would give it.
    """
    if resize:
        img = resize_shorter(img, resize, resample)
    return center_crop(img, crop) if crop else img


def eval_transform(image: np.ndarray, resize: int, crop: int) -> np.ndarray:
    """The eval transform of one decoded image, shared by the input pipeline and the commands.

    uint8 RGB [H, W, 3] -> float32 [crop, crop, 3] in [0, 1]: ``resize_center_crop``
    (bilinear), then ``to_float``. Equal to torchvision's ``Resize(resize)``,
    ``CenterCrop(crop)``, ``ToTensor()`` on the PIL image (tests/test_zoo.py).
    """
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"expected a uint8 RGB image [H, W, 3], got {a.dtype} {a.shape}")
    return to_float(resize_center_crop(Image.fromarray(a), resize, crop))


def hflip(img: Image.Image) -> Image.Image:
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def random_crop_params(
    rng: np.random.Generator, height: int, width: int, size: int
) -> Tuple[int, int]:
    """``RandomCrop.get_params`` on an (already padded) image: (top, left)."""
    if height < size or width < size:
        raise ValueError(
            f"random crop of {size} from a {height}x{width} image: the image is too small"
        )
    if (height, width) == (size, size):
        return 0, 0
    return int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))


def pad_crop(img: Image.Image, top: int, left: int, size: int, padding: int) -> Image.Image:
    """Zero-pad by ``padding`` on every side, then crop ``size`` x ``size`` at (top, left)."""
    if padding:
        img = ImageOps.expand(img, border=padding, fill=0)
    return img.crop((left, top, left + size, top + size))


# ----------------------------------------------------------------------------------------
# torchvision's auto-augment ops (TrivialAugmentWide, RandAugment)
# ----------------------------------------------------------------------------------------


def _fill(img: Image.Image, fill: float):
    return tuple([int(fill)] * len(img.getbands())) if len(img.getbands()) > 1 else int(fill)


def _inverse_affine_matrix(center, angle, translate, scale, shear) -> List[float]:
    """torchvision ``_get_inverse_affine_matrix`` (the matrix PIL's AFFINE transform wants)."""
    rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
    cx, cy = center
    tx, ty = translate
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    m = [x / scale for x in (d, -b, 0.0, -c, a, 0.0)]
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty)
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty)
    m[2] += cx
    m[5] += cy
    return m


def affine(
    img,
    angle=0.0,
    translate=(0, 0),
    scale=1.0,
    shear=(0.0, 0.0),
    resample=BILINEAR,
    fill=0.0,
    center=None,
):
    """torchvision ``F.affine`` on a PIL image (centre defaults to the image centre)."""
    if center is None:
        center = (img.width * 0.5, img.height * 0.5)
    m = _inverse_affine_matrix(center, angle, translate, scale, shear)
    return img.transform(img.size, Image.Transform.AFFINE, m, resample, fillcolor=_fill(img, fill))


# op name -> (magnitudes or None, signed). Magnitudes are torchvision's float32 values.
def _linspace(a, b, n):
    return np.linspace(a, b, n, dtype=np.float32)


def trivial_augment_wide_space(num_bins: int = 31) -> Dict[str, Tuple[Optional[np.ndarray], bool]]:
    """``TrivialAugmentWide._augmentation_space``, in torchvision's op order."""
    return {
        "Identity": (None, False),
        "ShearX": (_linspace(0.0, 0.99, num_bins), True),
        "ShearY": (_linspace(0.0, 0.99, num_bins), True),
        "TranslateX": (_linspace(0.0, 32.0, num_bins), True),
        "TranslateY": (_linspace(0.0, 32.0, num_bins), True),
        "Rotate": (_linspace(0.0, 135.0, num_bins), True),
        "Brightness": (_linspace(0.0, 0.99, num_bins), True),
        "Color": (_linspace(0.0, 0.99, num_bins), True),
        "Contrast": (_linspace(0.0, 0.99, num_bins), True),
        "Sharpness": (_linspace(0.0, 0.99, num_bins), True),
        "Posterize": (
            8 - np.round(np.arange(num_bins) / ((num_bins - 1) / 6)).astype(np.int64),
            False,
        ),
        "Solarize": (_linspace(255.0, 0.0, num_bins), False),
        "AutoContrast": (None, False),
        "Equalize": (None, False),
    }


def rand_augment_space(
    num_bins: int, height: int, width: int
) -> Dict[str, Tuple[Optional[np.ndarray], bool]]:
    """``RandAugment._augmentation_space`` for an image of this size, in torchvision's op order."""
    return {
        "Identity": (None, False),
        "ShearX": (_linspace(0.0, 0.3, num_bins), True),
        "ShearY": (_linspace(0.0, 0.3, num_bins), True),
        "TranslateX": (_linspace(0.0, 150.0 / 331.0 * width, num_bins), True),
        "TranslateY": (_linspace(0.0, 150.0 / 331.0 * height, num_bins), True),
        "Rotate": (_linspace(0.0, 30.0, num_bins), True),
        "Brightness": (_linspace(0.0, 0.9, num_bins), True),
        "Color": (_linspace(0.0, 0.9, num_bins), True),
        "Contrast": (_linspace(0.0, 0.9, num_bins), True),
        "Sharpness": (_linspace(0.0, 0.9, num_bins), True),
        "Posterize": (
            8 - np.round(np.arange(num_bins) / ((num_bins - 1) / 4)).astype(np.int64),
            False,
        ),
        "Solarize": (_linspace(255.0, 0.0, num_bins), False),
        "AutoContrast": (None, False),
        "Equalize": (None, False),
    }


def sample_trivial_augment_wide(rng: np.random.Generator, num_bins: int = 31) -> Tuple[str, float]:
    """One ``TrivialAugmentWide`` draw: a uniform op at a uniform magnitude bin, random sign."""
    space = trivial_augment_wide_space(num_bins)
    name = list(space)[int(rng.integers(len(space)))]
    mags, signed = space[name]
    magnitude = float(mags[int(rng.integers(len(mags)))]) if mags is not None else 0.0
    if signed and rng.integers(2):
        magnitude = -magnitude
    return name, magnitude


def sample_rand_augment(
    rng: np.random.Generator,
    height: int,
    width: int,
    num_ops: int = 2,
    magnitude: int = 9,
    num_bins: int = 31,
) -> List[Tuple[str, float]]:
    """``RandAugment``: ``num_ops`` uniform ops (drawn with replacement) at ``magnitude``."""
    if not 0 <= magnitude < num_bins:
        raise ValueError(f"RandAugment magnitude {magnitude} must be in [0, {num_bins})")
    space = rand_augment_space(num_bins, height, width)
    names = list(space)
    ops = []
    for _ in range(num_ops):
        name = names[int(rng.integers(len(names)))]
        mags, signed = space[name]
        m = float(mags[magnitude]) if mags is not None else 0.0
        if signed and rng.integers(2):
            m = -m
        ops.append((name, m))
    return ops


def apply_op(
    img: Image.Image, name: str, magnitude: float, resample=BILINEAR, fill: float = 0.0
) -> Image.Image:
    """torchvision ``autoaugment._apply_op`` on a PIL image."""
    if name in ("ShearX", "ShearY"):  # torchvision shears by atan(magnitude) degrees about (0, 0)
        angle = math.degrees(math.atan(magnitude))
        shear = (angle, 0.0) if name == "ShearX" else (0.0, angle)
        return affine(img, shear=shear, resample=resample, fill=fill, center=(0, 0))
    if name == "TranslateX":
        return affine(img, translate=(int(magnitude), 0), resample=resample, fill=fill)
    if name == "TranslateY":
        return affine(img, translate=(0, int(magnitude)), resample=resample, fill=fill)
    if name == "Rotate":
        return img.rotate(
            magnitude, resample, expand=False, center=None, fillcolor=_fill(img, fill)
        )
    if name == "Brightness":
        return ImageEnhance.Brightness(img).enhance(1.0 + magnitude)
    if name == "Color":
        return ImageEnhance.Color(img).enhance(1.0 + magnitude)
    if name == "Contrast":
        return ImageEnhance.Contrast(img).enhance(1.0 + magnitude)
    if name == "Sharpness":
        return ImageEnhance.Sharpness(img).enhance(1.0 + magnitude)
    if name == "Posterize":
        return ImageOps.posterize(img, int(magnitude))
    if name == "Solarize":
        return ImageOps.solarize(img, magnitude)
    if name == "AutoContrast":
        return ImageOps.autocontrast(img)
    if name == "Equalize":
        return ImageOps.equalize(img)
    if name == "Invert":
        return ImageOps.invert(img)
    if name == "Identity":
        return img
    raise ValueError(f"unknown augmentation op {name!r}")


_GEOMETRIC_OPS = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")


def apply_op_to_mask(mask: Image.Image, name: str, magnitude: float) -> Image.Image:
    """The geometric part of ``apply_op`` on a mask (nearest, zero fill); colour ops are no-ops."""
    if name in _GEOMETRIC_OPS:
        return apply_op(mask, name, magnitude, resample=NEAREST, fill=0)
    return mask


# ----------------------------------------------------------------------------------------
# v1: ildoonet RandAugment, ColorJitter, Lighting
# ----------------------------------------------------------------------------------------

# (name, min, max) in the order of moboehle/B-cos: data/augmentations/rand_augment.py
# augment_list().
V1_RAND_AUGMENT_OPS = (
    ("AutoContrast", 0, 1),
    ("Equalize", 0, 1),
    ("Invert", 0, 1),
    ("Rotate", 0, 30),
    ("Posterize", 0, 4),
    ("Solarize", 0, 256),
    ("SolarizeAdd", 0, 110),
    ("Color", 0.1, 1.9),
    ("Contrast", 0.1, 1.9),
    ("Brightness", 0.1, 1.9),
    ("Sharpness", 0.1, 1.9),
    ("ShearX", 0.0, 0.3),
    ("ShearY", 0.0, 0.3),
    ("CutoutAbs", 0, 40),
    ("TranslateXabs", 0.0, 100),
    ("TranslateYabs", 0.0, 100),
)
_V1_SIGNED = ("Rotate", "ShearX", "ShearY", "TranslateXabs", "TranslateYabs")


def sample_v1_rand_augment(
    rng: np.random.Generator, height: int, width: int, n: int = 2, m: int = 9
) -> List[Tuple]:
    """The v1 (ildoonet) RandAugment draw: ``n`` ops with replacement, value ``m/30`` of each
    op's range, a random sign for the geometric ones, a random position for Cutout.
    Returns [(name, value, extra)], extra = cutout corner (x0, y0) or None."""
    ops = []
    for k in rng.integers(len(V1_RAND_AUGMENT_OPS), size=n):
        name, lo, hi = V1_RAND_AUGMENT_OPS[int(k)]
        v = (float(m) / 30) * float(hi - lo) + lo
        extra = None
        if name in _V1_SIGNED and rng.random() > 0.5:
            v = -v
        if name == "CutoutAbs":
            # v1 draws ``np.random.uniform(w)``, i.e. low=w, high=1: a value in (1, w].
            extra = (width + (1.0 - width) * rng.random(), height + (1.0 - height) * rng.random())
        ops.append((name, v, extra))
    return ops


def _v1_cutout_box(img_size, v, extra):
    w, h = img_size
    x0 = int(max(0, extra[0] - v / 2.0))
    y0 = int(max(0, extra[1] - v / 2.0))
    return (x0, y0, min(w, x0 + v), min(h, y0 + v))


def apply_v1_op(img: Image.Image, name: str, v: float, extra=None) -> Image.Image:
    """One op of the v1 RandAugment (nearest resampling and black fill, as ildoonet's)."""
    if name == "ShearX":
        return img.transform(img.size, Image.Transform.AFFINE, (1, v, 0, 0, 1, 0))
    if name == "ShearY":
        return img.transform(img.size, Image.Transform.AFFINE, (1, 0, 0, v, 1, 0))
    if name == "TranslateXabs":
        return img.transform(img.size, Image.Transform.AFFINE, (1, 0, v, 0, 1, 0))
    if name == "TranslateYabs":
        return img.transform(img.size, Image.Transform.AFFINE, (1, 0, 0, 0, 1, v))
    if name == "Rotate":
        return img.rotate(v)
    if name == "AutoContrast":
        return ImageOps.autocontrast(img)
    if name == "Invert":
        return ImageOps.invert(img)
    if name == "Equalize":
        return ImageOps.equalize(img)
    if name == "Solarize":
        return ImageOps.solarize(img, v)
    if name == "SolarizeAdd":
        a = np.clip(np.asarray(img).astype(np.int64) + v, 0, 255).astype(np.uint8)
        return ImageOps.solarize(Image.fromarray(a), 128)
    if name == "Posterize":
        return ImageOps.posterize(img, max(1, int(v)))
    if name in ("Contrast", "Color", "Brightness", "Sharpness"):
        return getattr(ImageEnhance, name)(img).enhance(v)
    if name == "CutoutAbs":
        if v < 0:
            return img
        img = img.copy()
        ImageDraw.Draw(img).rectangle(_v1_cutout_box(img.size, v, extra), (125, 123, 114))
        return img
    raise ValueError(f"unknown v1 RandAugment op {name!r}")


def apply_v1_op_to_mask(mask: Image.Image, name: str, v: float, extra=None) -> Image.Image:
    """The geometric part of ``apply_v1_op`` on a mask; Cutout removes the cut-out pixels."""
    if name in _V1_SIGNED:
        return apply_v1_op(mask, name, v)
    if name == "CutoutAbs" and v >= 0:
        mask = mask.copy()
        ImageDraw.Draw(mask).rectangle(_v1_cutout_box(mask.size, v, extra), 0)
    return mask


def color_jitter_params(
    rng: np.random.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
) -> List[Tuple[str, float]]:
    """``ColorJitter.get_params`` (no hue): the enhancers in a random order with uniform factors."""
    order = rng.permutation(4)  # torchvision permutes all four, hue included
    factors = {
        0: ("Brightness", rng.uniform(max(0.0, 1 - brightness), 1 + brightness)),
        1: ("Contrast", rng.uniform(max(0.0, 1 - contrast), 1 + contrast)),
        2: ("Color", rng.uniform(max(0.0, 1 - saturation), 1 + saturation)),
    }
    return [(factors[int(i)][0], float(factors[int(i)][1])) for i in order if int(i) in factors]


def color_jitter(img: Image.Image, params: Sequence[Tuple[str, float]]) -> Image.Image:
    for name, factor in params:
        img = getattr(ImageEnhance, name)(img).enhance(factor)
    return img


def lighting(x: np.ndarray, rng: np.random.Generator, alphastd: float = 0.1) -> np.ndarray:
    """AlexNet PCA colour noise on a float [H, W, 3] image; not clipped (as in v1)."""
    if alphastd == 0:
        return x
    alpha = rng.normal(0.0, alphastd, 3).astype(np.float32)
    rgb = (IMAGENET_PCA_EIGVEC * alpha[None, :] * IMAGENET_PCA_EIGVAL[None, :]).sum(1)
    return x + rgb


# ----------------------------------------------------------------------------------------
# Float-array stage
# ----------------------------------------------------------------------------------------


def to_float(img: Image.Image) -> np.ndarray:
    """PIL RGB -> float32 [H, W, 3] in [0, 1] (``PILToTensor`` + ``ConvertImageDtype``)."""
    return np.asarray(img, dtype=np.float32) * np.float32(1.0 / 255.0)


def normalize(x: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    return (x - mean) / std


def random_erasing_params(
    rng: np.random.Generator,
    height: int,
    width: int,
    p: float,
    scale: Tuple[float, float] = (0.02, 0.33),
    ratio: Tuple[float, float] = (0.3, 3.3),
) -> Optional[Box]:
    """``RandomErasing``: with probability p a box (top, left, h, w) of ``scale`` of the area
    and log-uniform aspect ``ratio``; None for no erasing (also when ten tries do not fit)."""
    if not rng.random() < p:
        return None
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        erase_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        h = int(round(math.sqrt(erase_area * aspect)))
        w = int(round(math.sqrt(erase_area / aspect)))
        if not (h < height and w < width):
            continue
        return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    return None


def erase(x: np.ndarray, box: Box, value: float = 0.0) -> np.ndarray:
    """Set the box (top, left, h, w) of an [H, W, C] array to ``value`` (copy)."""
    top, left, h, w = box
    x = x.copy()
    x[top : top + h, left : left + w] = value
    return x
