"""Numerical constants used in more than one place, each defined once with its source.

Import them from here (``from bcos_jax.constants import IMAGENET_MEAN``) instead of writing
the literal again: a forker who changes a value changes it everywhere.

Sources are the papers (Böhle, Fritz, Schiele, *B-cos Networks: Alignment is All We Need for
Interpretability*, CVPR 2022 = "v1"; *B-cos Alignment for Inherently Interpretable CNNs and
Vision Transformers*, TPAMI 2024 = "v2") and their reference code, cited by repository and
file.
"""
from __future__ import annotations

import math

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "V1_CIFAR10_LOGIT_BIAS",
    "V1_IMAGENET_LOGIT_BIAS",
    "VIT_LOGIT_BIAS",
    "v2_logit_bias",
]

# Per-channel RGB mean/std of ImageNet for the *standard* (non-B-cos) models; B-cos models
# take the [x, 1-x] encoding instead and use no normalisation. The torchvision values, as in
# B-cos/B-cos-v2: bcos/data/presets.py (IMAGENET_MEAN, IMAGENET_STD).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# v1 ImageNet models end in FinalLayer(bias=log(0.01/0.99)): every class starts with a
# sigmoid prior of 1 % (moboehle/B-cos: experiments/Imagenet/bcos/model.py, get_model).
V1_IMAGENET_LOGIT_BIAS = math.log(0.01 / 0.99)

# The v1 CIFAR-10 "9L" network's FinalLayer bias, a prior of 10 % per class
# (moboehle/B-cos: experiments/CIFAR10/bcos/model.py).
V1_CIFAR10_LOGIT_BIAS = math.log(0.1 / 0.9)

# The v2 ViTs' LogitLayer bias, fixed for ImageNet's 1000 classes whatever num_classes is
# (B-cos/B-cos-v2: bcos/experiments/ImageNet/vit_final/experiment_parameters.py,
# logit_bias=log(1 / (NUM_CLASSES - 1))).
VIT_LOGIT_BIAS = math.log(1 / 999)


def v2_logit_bias(num_classes: int) -> float:
    """The v2 CNNs' fixed logit bias ``-log(C - 1)``: a sigmoid prior of 1/C per class.

    B-cos/B-cos-v2: bcos/experiments/ImageNet/bcos_final/experiment_parameters.py
    (``logit_bias=-math.log(NUM_CLASSES - 1)``).
    """
    if num_classes < 2:
        raise ValueError(f"the logit bias -log(C - 1) needs num_classes >= 2, got {num_classes}")
    return -math.log(num_classes - 1)
