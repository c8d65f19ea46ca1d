"""The per-example transform of each training recipe (docs/recipes.md), and of evaluation.

``ImageTransform(...)(image, rng, mask)`` maps one decoded uint8 [H, W, 3] image (any size)
to float32 [S, S, 3], in [0, 1] for B-cos models (``add_inverse`` happens on the batch) or
normalised with the ImageNet mean/std for standard models:

  recipe   per-example steps (torchvision names)                            reference
  v2       RandomResizedCrop(S) + hflip [+ RandAugment(m) if m > 0]           v2 bcos_final
                                                                              (+ vit_final)
  long     RandomResizedCrop(S) + hflip + TrivialAugmentWide                  v2 bcos_final_long
  v1       RandAugment_v1(2, 9) + RandomResizedCrop(S) + hflip                v1 ImageNet
           + ColorJitter(0.4, 0.4, 0.4) + Lighting(0.1)
  cifar    hflip + RandomCrop(S, padding=4)                                   v1/v2 CIFAR-10
  none     Resize(S) + CenterCrop(S)  (identity on S x S images)
  eval     Resize(eval_resize) + CenterCrop(eval_crop)  (each skipped when 0)

followed by RandomErasing(p) when ``random_erasing > 0`` (after normalisation, before
``add_inverse``, as in the reference). All resampling is bilinear. An object mask, if
given, follows every geometric step (nearest resampling) and loses erased pixels.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from PIL import Image

from bcos_jax.data import augment as A

RECIPES = ("v2", "long", "v1", "cifar", "none")
CIFAR_PADDING = 4


class ImageTransform:
    """One example's transform; picklable (it runs in grain worker processes).

    Args:
      recipe: one of ``RECIPES`` for training, or 'eval'.
      image_size: output side S of the training recipes.
      eval_resize, eval_crop: the eval transform's shorter-side resize and centre crop
        (0 skips the step; then images must already be square of side ``output_size``).
      output_size: the side every output must have (checked, for a clear error).
      randaugment_magnitude: 'v2' only; > 0 adds torchvision RandAugment(2, magnitude).
      random_erasing: probability of RandomErasing (training recipes only).
      normalize: subtract/divide the ImageNet mean/std (standard, non-B-cos models).
    """

    def __init__(
        self,
        recipe: str,
        image_size: int,
        eval_resize: int = 0,
        eval_crop: int = 0,
        output_size: Optional[int] = None,
        randaugment_magnitude: int = 0,
        random_erasing: float = 0.0,
        normalize: bool = False,
    ):
        if recipe not in RECIPES + ("eval",):
            raise ValueError(f"unknown augment recipe {recipe!r}; choose one of {RECIPES}")
        if randaugment_magnitude and recipe != "v2":
            raise ValueError(
                f"randaugment_magnitude={randaugment_magnitude} is only used with augment='v2' "
                f"(the ViT recipe); recipe {recipe!r} has its own policy or none"
            )
        if not 0.0 <= random_erasing <= 1.0:
            raise ValueError(f"random_erasing is a probability, got {random_erasing}")
        if recipe == "eval" and random_erasing:
            random_erasing = 0.0
        self.recipe, self.image_size = recipe, int(image_size)
        self.eval_resize, self.eval_crop = int(eval_resize), int(eval_crop)
        if output_size is None:
            output_size = (
                (self.eval_crop or self.image_size) if recipe == "eval" else self.image_size
            )
        self.output_size = int(output_size)
        self.randaugment_magnitude = int(randaugment_magnitude)
        self.random_erasing, self.normalize = float(random_erasing), bool(normalize)

    def __repr__(self) -> str:
        return (
            f"ImageTransform(recipe={self.recipe!r}, image_size={self.image_size}, "
            f"eval_resize={self.eval_resize}, eval_crop={self.eval_crop}, "
            f"output_size={self.output_size}, randaugment_magnitude={self.randaugment_magnitude}, "
            f"random_erasing={self.random_erasing}, normalize={self.normalize})"
        )

    def __call__(
        self,
        image: np.ndarray,
        rng: Optional[np.random.Generator] = None,
        mask: Optional[np.ndarray] = None,
    ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """uint8 [H, W, 3] (+ bool [H, W] mask) -> float32 [S, S, 3] (+ bool [S, S] mask)."""
        img = _to_pil(image)
        m = None if mask is None else Image.fromarray(np.asarray(mask, np.uint8) * 255)
        if self.recipe != "eval" and rng is None:
            raise ValueError(f"the {self.recipe!r} training transform needs an rng")
        img, m = getattr(self, f"_{self.recipe}")(img, m, rng)
        if img.size != (self.output_size, self.output_size):
            raise ValueError(
                f"the {self.recipe!r} transform produced a {img.height}x{img.width} image, "
                f"expected {self.output_size}x{self.output_size}; set eval_resize/eval_crop (or "
                "image_size) "
                "to match the dataset's image sizes"
            )
        x = A.to_float(img)
        if self.recipe == "v1":
            x = A.lighting(x, rng, 0.1)
        if self.normalize:
            x = A.normalize(x)
        out_mask = None if m is None else np.asarray(m) > 127
        if self.random_erasing > 0:
            box = A.random_erasing_params(rng, x.shape[0], x.shape[1], self.random_erasing)
            if box is not None:
                x = A.erase(x, box)
                if out_mask is not None:
                    out_mask = A.erase(out_mask, box, False)
        return x.astype(np.float32, copy=False), out_mask

    # --- recipes: PIL image (+ PIL mask) -> PIL image (+ mask) of output_size ---------

    def _rrc_flip(self, img, m, rng):
        box = A.rrc_params(rng, img.height, img.width)
        img = A.resized_crop(img, box, self.image_size)
        m = None if m is None else A.resized_crop(m, box, self.image_size, A.NEAREST)
        if rng.random() < 0.5:
            img, m = A.hflip(img), (None if m is None else A.hflip(m))
        return img, m

    def _v2(self, img, m, rng):
        img, m = self._rrc_flip(img, m, rng)
        if self.randaugment_magnitude > 0:
            for name, mag in A.sample_rand_augment(
                rng, img.height, img.width, 2, self.randaugment_magnitude
            ):
                img = A.apply_op(img, name, mag)
                m = None if m is None else A.apply_op_to_mask(m, name, mag)
        return img, m

    def _long(self, img, m, rng):
        img, m = self._rrc_flip(img, m, rng)
        name, mag = A.sample_trivial_augment_wide(rng)
        img = A.apply_op(img, name, mag)
        return img, (None if m is None else A.apply_op_to_mask(m, name, mag))

    def _v1(self, img, m, rng):
        for name, v, extra in A.sample_v1_rand_augment(rng, img.height, img.width, 2, 9):
            img = A.apply_v1_op(img, name, v, extra)
            m = None if m is None else A.apply_v1_op_to_mask(m, name, v, extra)
        img, m = self._rrc_flip(img, m, rng)
        return A.color_jitter(img, A.color_jitter_params(rng, 0.4, 0.4, 0.4)), m

    def _cifar(self, img, m, rng):
        if img.size != (self.image_size, self.image_size):
            raise ValueError(
                "augment='cifar' takes images of the crop size "
                f"{self.image_size}x{self.image_size} (RandomCrop with padding {CIFAR_PADDING}), "
                f"got {img.height}x{img.width}; use 'v2' "
                "for datasets of other or varying image sizes"
            )
        if rng.random() < 0.5:
            img, m = A.hflip(img), (None if m is None else A.hflip(m))
        s, p = self.image_size, CIFAR_PADDING
        top, left = A.random_crop_params(rng, s + 2 * p, s + 2 * p, s)
        img = A.pad_crop(img, top, left, s, p)
        return img, (None if m is None else A.pad_crop(m, top, left, s, p))

    def _none(self, img, m, rng):
        return _resize_crop(img, m, self.image_size, self.image_size)

    def _eval(self, img, m, rng):
        return _resize_crop(img, m, self.eval_resize, self.eval_crop)


def _resize_crop(img, m, resize: int, crop: int):
    img = A.resize_center_crop(img, resize, crop)
    return img, (None if m is None else A.resize_center_crop(m, resize, crop, A.NEAREST))


def _to_pil(image: np.ndarray) -> Image.Image:
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"expected a decoded uint8 image, got dtype {a.dtype}")
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:  # greyscale datasets: replicate to RGB, as PIL .convert('RGB') would
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(
            f"expected an image [H, W, 3] (or greyscale [H, W(, 1)]), got shape {a.shape}"
        )
    return Image.fromarray(a)
