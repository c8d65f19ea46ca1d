"""The 1000 ImageNet-1k class names, in the order of the logits of every ImageNet model.

Shipped as ``imagenet_classes.txt`` (one name per line), generated once from torchvision's
``ResNet50_Weights.IMAGENET1K_V1.meta["categories"]`` (the standard index order of the
ILSVRC-2012 synsets, which the official B-cos weights were trained with).
"""
from __future__ import annotations

import functools
from importlib import resources
from typing import Tuple

__all__ = ["imagenet_classes"]


@functools.cache
def imagenet_classes() -> Tuple[str, ...]:
    """The 1000 class names; ``imagenet_classes()[i]`` names logit ``i``."""
    text = resources.files(__package__).joinpath("imagenet_classes.txt").read_text("utf-8")
    names = tuple(line for line in text.splitlines() if line)
    if len(names) != 1000:  # a damaged installation, not a user error
        raise RuntimeError(f"imagenet_classes.txt holds {len(names)} names, expected 1000")
    return names
