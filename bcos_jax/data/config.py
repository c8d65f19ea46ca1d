"""The data config: defaults, the reference recipes as presets, and validation.

``default_config()`` is the v2 ImageNet recipe ("bcos_final"); ``default_config(recipe)``
starts from one of ``PRESETS`` instead. Field meanings: see the ``bcos_jax.data`` docstring.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import ml_collections

from bcos_jax.data.recipes import RECIPES

_DEFAULTS = dict(
    name="imagenet2012",
    data_dir="",  # '' -> tfds' default ($TFDS_DATA_DIR or ~/tensorflow_datasets)
    train_split="train",
    eval_split="validation",
    image_key="image",
    label_key="label",
    image_size=224,
    eval_resize=256,
    eval_crop=224,
    augment="v2",
    mixup_alpha=0.0,
    cutmix_alpha=0.0,
    random_erasing=0.0,
    repeated_aug=1,
    randaugment_magnitude=0,
    add_inverse=True,
    num_workers=0,
    num_threads=2,
    prefetch=2,
    # synthetic tasks only ('quickstart', 'quickstart2')
    num_train=5000,
    num_eval=1000,
    num_classes=0,  # the first num_classes classes of the task; 0: all of them
    synthetic_seed=0,
)

# Overrides of _DEFAULTS for each reference recipe (docs/recipes.md).
PRESETS = {
    "v2": {},
    "long": dict(
        image_size=176, eval_resize=232, eval_crop=224, augment="long", random_erasing=0.1,
        mixup_alpha=0.2, cutmix_alpha=1.0, repeated_aug=4,
    ),
    "vit": dict(augment="v2", randaugment_magnitude=10, mixup_alpha=0.2),
    "v1": dict(augment="v1"),
    "v1_inception": dict(augment="v1", image_size=299, eval_resize=320, eval_crop=299),
    "baseline": dict(add_inverse=False),
    "cifar": dict(
        name="cifar10", train_split="train", eval_split="test", image_size=32, eval_resize=0,
        eval_crop=0, augment="cifar",
    ),
    "quickstart": dict(
        name="quickstart", train_split="train", eval_split="test", image_size=32, eval_resize=0,
        eval_crop=0, augment="cifar",
    ),
    # The second synthetic task (new classes from the quickstart's generator): transfer.
    "quickstart2": dict(
        name="quickstart2", train_split="train", eval_split="test", image_size=32, eval_resize=0,
        eval_crop=0, augment="cifar",
    ),
}


def default_config(recipe: Optional[str] = None) -> ml_collections.ConfigDict:
    """The data config with every field set: v2 ImageNet, or preset ``recipe`` of ``PRESETS``."""
    fields = dict(_DEFAULTS)
    if recipe is not None:
        if recipe not in PRESETS:
            raise ValueError(f"unknown data recipe {recipe!r}; presets: {sorted(PRESETS)}")
        fields.update(PRESETS[recipe])
    return ml_collections.ConfigDict(fields)


def get(cfg: Any, key: str) -> Any:
    """``cfg[key]`` from a ConfigDict or mapping, falling back to the default."""
    if isinstance(cfg, Mapping) or hasattr(cfg, "get"):
        value = cfg.get(key, None)
    else:
        value = getattr(cfg, key, None)
    return _DEFAULTS[key] if value is None else value


def validate(cfg: Any) -> None:
    """Raise a ValueError naming the first bad field of the data config."""
    unknown = set(cfg.keys() if hasattr(cfg, "keys") else ()) - set(_DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown data config field(s) {sorted(unknown)}; known: {sorted(_DEFAULTS)}"
        )
    if get(cfg, "augment") not in RECIPES:
        raise ValueError(f"data.augment={get(cfg, 'augment')!r}: choose one of {RECIPES}")
    for key in ("mixup_alpha", "cutmix_alpha"):
        if get(cfg, key) < 0:
            raise ValueError(f"data.{key}={get(cfg, key)}: must be >= 0 (0 = off)")
    if not 0 <= get(cfg, "random_erasing") <= 1:
        raise ValueError(
            f"data.random_erasing={get(cfg, 'random_erasing')}: a probability in [0, 1]"
        )
    if int(get(cfg, "repeated_aug")) < 1:
        raise ValueError(
            f"data.repeated_aug={get(cfg, 'repeated_aug')}: repetitions, >= 1 (1 = off)"
        )
    if not 0 <= int(get(cfg, "randaugment_magnitude")) < 31:
        raise ValueError(
            f"data.randaugment_magnitude={get(cfg, 'randaugment_magnitude')}: in [0, 30], 0 = off"
        )
    for key in ("image_size", "num_threads", "prefetch"):
        if int(get(cfg, key)) < 1:
            raise ValueError(f"data.{key}={get(cfg, key)}: must be >= 1")
    for key in ("eval_resize", "eval_crop", "num_workers", "num_classes"):
        if int(get(cfg, key)) < 0:
            raise ValueError(f"data.{key}={get(cfg, key)}: must be >= 0")
