"""Small B-cos CNNs for quick experiments (the quickstart, CI, tutorials).

``bcos_small_cnn``: a plain stack of 3×3 B-cos convs (stride 2 at the start of each stage)
with uncentred bias-free batch norms (the v2 ImageNet choice), a 1×1 B-cos classifier
*before* global average pooling, and the v2 logit bias ``-log(C - 1)``. Input: NHWC
6-channel ``[x, 1 - x]`` images of any size; about 25 k parameters at the default widths.
It follows the zoo's contract: ``model.apply(variables, x, train=False, explain=False)``,
``mutable=['batch_stats']`` in training, injectable ``conv`` and ``norm`` factories.
"""
from __future__ import annotations

import functools
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bcos_jax import norms
from bcos_jax.constants import v2_logit_bias
from bcos_jax.layers import BcosConv, LogitLayer
from bcos_jax.models.common import check_input, global_avg_pool
from bcos_jax.models.registry import Architecture

__all__ = ["ARCHITECTURES", "SmallBcosCNN"]


class SmallBcosCNN(nn.Module):
    """[N, H, W, 6] -> logits [N, num_classes].

    Attributes:
      num_classes: number of classes.
      widths: channels of each stage; the first conv of every stage but the first has stride 2.
      depth: 3×3 convs per stage.
      conv: B-cos conv factory (``BcosConv`` fields); norm: norm factory (``norms`` API).
      b, max_out: B-cos exponent and MaxOut of every conv.
      logit_bias: None -> ``-log(num_classes - 1)``.
      dtype: computation dtype (params stay float32; norm statistics are float32).
      in_channels: channels the input must have (checked with an error naming the fix,
        e.g. ``add_inverse`` for RGB into a B-cos model); None: unchecked. ``models.create``
        sets it from the spec.
    """

    num_classes: int = 10
    widths: Sequence[int] = (16, 32, 64)
    depth: int = 1
    conv: Any = BcosConv
    norm: Any = norms.no_bias(norms.BatchNormUncentered)
    b: float = 2.0
    max_out: int = 1
    logit_bias: Optional[float] = None
    dtype: Any = None
    in_channels: Optional[int] = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, explain: bool = False) -> jax.Array:
        check_input(x, self.in_channels, "SmallBcosCNN")
        conv = functools.partial(self.conv, b=self.b, max_out=self.max_out, dtype=self.dtype)
        i = 0
        for stage, width in enumerate(self.widths):
            for d in range(self.depth):
                stride = 2 if (stage > 0 and d == 0) else 1
                x = conv(width, 3, strides=stride, padding=1, name=f"conv{i}")(x, explain=explain)
                x = self.norm(name=f"norm{i}")(x, train=train, explain=explain)
                i += 1
        x = conv(self.num_classes, 1, name="classifier")(x, explain=explain)
        x = global_avg_pool(x).astype(jnp.float32)
        bias = self.logit_bias if self.logit_bias is not None else v2_logit_bias(self.num_classes)
        return LogitLayer(bias=bias)(x)


# The quickstart / CI model (3 stages of 3x3 B-cos convs + BNU).
ARCHITECTURES: Tuple[Architecture, ...] = (
    Architecture("bcos_small_cnn", SmallBcosCNN, family="small", version="v2", input_size=32,
                 resize=32, num_classes=10),
)
