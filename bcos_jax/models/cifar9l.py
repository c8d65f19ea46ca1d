"""The v1 (CVPR 2022) CIFAR-10 "9L" B-cos network (moboehle/B-cos: experiments/CIFAR10/bcos/).

Nine ``BcosConv`` layers, no norms, pools or residuals (docs/architectures.md §1,
docs/recipes.md §2):

======  ======  ======  =======  ==============================
layer   kernel  stride  padding  out channels (MaxOut 2 each)
======  ======  ======  =======  ==============================
0-1     3       1       1        64
2       3       2       1        128
3-4     3       1       1        128
5       3       2       1        256
6-7     3       1       1        256
8       1       1       0        num_classes (10)
======  ======  ======  =======  ==============================

then global average pooling and ``logits = pooled / T + log(0.1/0.9)``. Every layer
divides by the same constant ``scale``; ``scale`` and ``T`` depend on the exponent B. The
paper trained one network per B (configs ``9L-M2-B{1, 1.25, ..., 2.5}``); the constants
of those configs are built in and any other B needs ``scale`` and ``logit_temperature``.

Input [N, 32, 32, 6] (``[x, 1 - x]``) -> logits [N, num_classes]. The reference is a flat
``nn.Sequential``, so its state_dict keys are ``'{i}.linear.weight'`` and the Flax layers
are named ``'0'`` ... ``'8'`` (no key prefix).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax

from bcos_jax.constants import V1_CIFAR10_LOGIT_BIAS
from bcos_jax.layers import BcosConv, LogitLayer
from bcos_jax.models.common import check_input, global_avg_pool
from bcos_jax.models.registry import Architecture

Array = jax.Array

__all__ = ["ARCHITECTURES", "CIFAR9L", "PUBLISHED_B", "v1_cifar10_9l", "v1_cifar10_constants"]

# B -> T of the published 9L-M2-B{B} configs (logit_temperature = 10**T), as hard-coded in
# moboehle/B-cos: "Quantitative results.ipynb" (their weights and accuracies: models/zoo.py).
_PUBLISHED = {1.0: -3, 1.25: -3, 1.5: -2, 1.75: 1, 2.0: 2, 2.25: 2, 2.5: 3}
PUBLISHED_B = tuple(_PUBLISHED)

_KERNELS = (3,) * 8 + (1,)
_STRIDES = (1, 1, 2, 1, 1, 2, 1, 1, 1)
_PADDING = (1,) * 8 + (0,)
_WIDTHS = (64, 64, 128, 128, 128, 256, 256, 256)


def v1_cifar10_constants(
    b: float, scale: Optional[float] = None, logit_temperature: Optional[float] = None
) -> Tuple[float, float]:
    """(scale, logit_temperature) of the 9L network for exponent ``b``.

    Missing values come from the published configs: ``scale = 10**(-2 + 1.5 (2.5 - B))``,
    ``logit_temperature = 10**T``. A B without a published config needs both given.
    """
    if scale is None or logit_temperature is None:
        if b not in _PUBLISHED:
            raise ValueError(
                f"no published 9L config for B={b} (published: "
                f"{', '.join(map(str, PUBLISHED_B))}); "
                "pass both scale= and logit_temperature= explicitly"
            )
        if scale is None:
            scale = 10 ** (-2 + 1.5 * (2.5 - b))
        if logit_temperature is None:
            logit_temperature = 10.0 ** _PUBLISHED[b]
    return float(scale), float(logit_temperature)


class CIFAR9L(nn.Module):
    """The 9-layer v1 B-cos CNN: [N, H, W, 6] -> logits [N, num_classes] (H, W = 32 for CIFAR).

    Attributes:
      num_classes: output channels of the last (1x1) layer.
      b: the alignment exponent B of every layer.
      scale, logit_temperature: None -> the published constants for ``b``
        (``v1_cifar10_constants``), else as given.
      logit_bias: added to every logit, log(0.1/0.9) in the reference.
      max_out: linear units per output channel.
      widths: output channels of the eight 3x3 layers.
      in_channels: channels the input must have (checked with an error naming the fix,
        e.g. ``add_inverse`` for RGB into a B-cos model); None: unchecked. ``models.create``
        sets it from the spec.
    """

    num_classes: int = 10
    b: float = 2.0
    scale: Optional[float] = None
    logit_temperature: Optional[float] = None
    logit_bias: float = V1_CIFAR10_LOGIT_BIAS
    max_out: int = 2
    widths: Sequence[int] = _WIDTHS
    dtype: Any = None
    in_channels: Optional[int] = None
    remat: bool = False  # BcosConv.remat of every layer

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        check_input(x, self.in_channels, "CIFAR9L")
        del train  # no batch statistics or dropout
        scale, temperature = v1_cifar10_constants(self.b, self.scale, self.logit_temperature)
        features = (*self.widths, self.num_classes)
        for i, (c, k, s, p) in enumerate(zip(features, _KERNELS, _STRIDES, _PADDING)):
            conv = BcosConv(
                c, k, strides=s, padding=p, b=self.b, max_out=self.max_out, scale=scale,
                dtype=self.dtype, remat=self.remat, name=str(i),
            )
            x = conv(x, explain)
        return LogitLayer(temperature, self.logit_bias)(global_avg_pool(x))


def v1_cifar10_9l(b: float = 2.0, **overrides: Any) -> CIFAR9L:
    """``CIFAR9L`` for exponent ``b``; refuses a B without published constants unless
    ``scale`` and ``logit_temperature`` are both given."""
    v1_cifar10_constants(b, overrides.get("scale"), overrides.get("logit_temperature"))
    return CIFAR9L(b=b, **overrides)


def _preset(b: float):
    def build(**overrides: Any) -> CIFAR9L:
        if overrides.pop("b", b) != b:
            raise ValueError(f"this preset is B={b}; use 'v1_cifar10_9l' with b=... for another B")
        return v1_cifar10_9l(b=b, **overrides)

    build.__doc__ = f"The published 9L-M2-B{b:g} network (``v1_cifar10_9l(b={b:g})``)."
    return build


def _architecture(name: str, build: Callable[..., CIFAR9L]) -> Architecture:
    return Architecture(name, build, family="cifar9l", version="v1", input_size=32, resize=32,
                        num_classes=10)


# 'v1_cifar10_9l' takes b= (B=2 by default); each preset is one published config.
ARCHITECTURES: Tuple[Architecture, ...] = (
    _architecture("v1_cifar10_9l", v1_cifar10_9l),
    *(_architecture(f"v1_cifar10_9l_b{round(b * 100)}", _preset(b)) for b in PUBLISHED_B),
)
