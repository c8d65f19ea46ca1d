"""Inception v3: the v1 (CVPR 2022) B-cos network and the standard torchvision model.

One set of blocks builds both; only the injected pieces differ (docs/architectures.md §1,
``moboehle/B-cos: models/bcos/inception.py``, itself torchvision's Inception3 with the diffs below):

==============  ======================================  =====================================
piece           ``v1_inception_v3``                     ``standard_inception_v3``
==============  ======================================  =====================================
BasicConv2d     ``BcosConv(B=2, max_out=2, sf=200)``    conv (no bias) + BN(eps 1e-3) + ReLU
stride-2 pools  AvgPool(3, 2)                           MaxPool(3, 2)
classifier      1x1 ``BcosConv(sf=200)``, then pool     pool, dropout 0.5, Dense (with bias)
logits          ``pooled / 1 + log(0.01/0.99)``         the Dense output
input           [N, 299, 299, 6] (``[x, 1 - x]``)       [N, 299, 299, 3], ImageNet mean/std
==============  ======================================  =====================================

Outputs: ``model.apply(v, x)`` (eval) -> logits [N, C]. In training (``train=True``) a model
with the aux head returns ``{'logits': [N, C], 'aux_logits': [N, C]}``: the aux output is
needed for the reference's aux loss (v1: ``AuxLoss(1)``, BCE on the *raw* pooled aux
output, with neither logit bias nor temperature). ``bcos_jax.explain.logits_of`` accepts
both forms. The aux head only runs in training, as in the reference.

Flax submodule names are the reference's module paths (``Mixed_5b/branch5x5_2/conv``), so
``bcos_jax.convert`` loads the v1 state_dict (prefix ``'0.'``: the reference wraps the net
in ``nn.Sequential(net, pool, FinalLayer)``) and torchvision's (no prefix).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bcos_jax.constants import IMAGENET_MEAN, IMAGENET_STD, V1_IMAGENET_LOGIT_BIAS
from bcos_jax.layers import BcosConv, LogitLayer
from bcos_jax.models.common import (
    StandardBatchNorm,
    StandardConv,
    StandardDense,
    avg_pool,
    check_input,
    global_avg_pool,
)
from bcos_jax.models.registry import Architecture

Array = jax.Array

__all__ = [
    "ARCHITECTURES",
    "BasicConv2d",
    "Inception3",
    "InceptionA",
    "InceptionAux",
    "InceptionB",
    "InceptionC",
    "InceptionD",
    "InceptionE",
    "standard_inception_v3",
    "v1_inception_v3",
]

# The reference (and torchvision) draw every kernel from truncnorm(-2, 2) with std 0.1.
_init = nn.initializers.truncated_normal(0.1)
# v1 BasicConv2d's conv: BcosConv2d(..., scale_fact=200) with the v1 defaults B=2, MaxOut 2.
_v1_conv = functools.partial(BcosConv, b=2, max_out=2, scale_fact=200.0, kernel_init=_init)


def avg_pool_3x3_s2(x: Array) -> Array:
    """v1's replacement for the stride-2 max pools: AvgPool2d(3, 2), no padding."""
    return avg_pool(x, 3, 2)


def max_pool_3x3_s2(x: Array) -> Array:
    """torchvision's MaxPool2d(3, 2), no padding."""
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class BasicConv2d(nn.Module):
    """``conv`` -> optional ``norm`` (named ``bn``) -> optional ``act``.

    [N, H, W, Cin] -> [N, H', W', features].

    The conv is the child ``conv`` (reference key ``X.conv.linear.weight`` / ``X.conv.weight``).
    """

    features: int
    kernel_size: Any
    strides: Any = 1
    padding: Any = 0
    conv: Callable[..., nn.Module] = BcosConv
    norm: Optional[Callable[..., nn.Module]] = None
    act: Optional[Callable[[Array], Array]] = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        x = self.conv(
            features=self.features,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            name="conv",
        )(x, explain)
        if self.norm is not None:
            x = self.norm(name="bn")(x, train=train, explain=explain)
        if self.act is not None:
            x = self.act(x)
        return x


def _conv_fn(block: nn.Module, train: bool, explain: bool):
    """``conv(x, name, features, kernel_size, **kw)``: the named ``conv_block`` of ``block``."""

    def conv(x, name, features, kernel_size, **kw):
        return block.conv_block(features, kernel_size, name=name, **kw)(
            x, train=train, explain=explain
        )

    return conv


class InceptionA(nn.Module):
    """35x35 block: [N, H, W, Cin] -> [N, H, W, 224 + pool_features]."""

    pool_features: int
    conv_block: Callable[..., nn.Module]

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        conv = _conv_fn(self, train, explain)
        b1 = conv(x, "branch1x1", 64, 1)
        b5 = conv(conv(x, "branch5x5_1", 48, 1), "branch5x5_2", 64, 5, padding=2)
        b3 = conv(x, "branch3x3dbl_1", 64, 1)
        b3 = conv(b3, "branch3x3dbl_2", 96, 3, padding=1)
        b3 = conv(b3, "branch3x3dbl_3", 96, 3, padding=1)
        bp = conv(avg_pool(x, 3, 1, 1), "branch_pool", self.pool_features, 1)
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: [N, H, W, Cin] -> [N, (H-3)//2+1, ..., 480 + Cin]."""

    conv_block: Callable[..., nn.Module]
    reduce_pool: Callable[[Array], Array] = avg_pool_3x3_s2

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        conv = _conv_fn(self, train, explain)
        b3 = conv(x, "branch3x3", 384, 3, strides=2)
        bd = conv(x, "branch3x3dbl_1", 64, 1)
        bd = conv(bd, "branch3x3dbl_2", 96, 3, padding=1)
        bd = conv(bd, "branch3x3dbl_3", 96, 3, strides=2)
        return jnp.concatenate([b3, bd, self.reduce_pool(x)], axis=-1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convs: [N, H, W, Cin] -> [N, H, W, 768]."""

    channels_7x7: int
    conv_block: Callable[..., nn.Module]

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        conv = _conv_fn(self, train, explain)
        c7 = self.channels_7x7
        b1 = conv(x, "branch1x1", 192, 1)
        b7 = conv(x, "branch7x7_1", c7, 1)
        b7 = conv(b7, "branch7x7_2", c7, (1, 7), padding=(0, 3))
        b7 = conv(b7, "branch7x7_3", 192, (7, 1), padding=(3, 0))
        bd = conv(x, "branch7x7dbl_1", c7, 1)
        bd = conv(bd, "branch7x7dbl_2", c7, (7, 1), padding=(3, 0))
        bd = conv(bd, "branch7x7dbl_3", c7, (1, 7), padding=(0, 3))
        bd = conv(bd, "branch7x7dbl_4", c7, (7, 1), padding=(3, 0))
        bd = conv(bd, "branch7x7dbl_5", 192, (1, 7), padding=(0, 3))
        bp = conv(avg_pool(x, 3, 1, 1), "branch_pool", 192, 1)
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: [N, H, W, Cin] -> [N, (H-3)//2+1, ..., 512 + Cin]."""

    conv_block: Callable[..., nn.Module]
    reduce_pool: Callable[[Array], Array] = avg_pool_3x3_s2

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        conv = _conv_fn(self, train, explain)
        b3 = conv(conv(x, "branch3x3_1", 192, 1), "branch3x3_2", 320, 3, strides=2)
        b7 = conv(x, "branch7x7x3_1", 192, 1)
        b7 = conv(b7, "branch7x7x3_2", 192, (1, 7), padding=(0, 3))
        b7 = conv(b7, "branch7x7x3_3", 192, (7, 1), padding=(3, 0))
        b7 = conv(b7, "branch7x7x3_4", 192, 3, strides=2)
        return jnp.concatenate([b3, b7, self.reduce_pool(x)], axis=-1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3/3x1 convs: [N, H, W, Cin] -> [N, H, W, 2048]."""

    conv_block: Callable[..., nn.Module]

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        conv = _conv_fn(self, train, explain)
        b1 = conv(x, "branch1x1", 320, 1)
        b3 = conv(x, "branch3x3_1", 384, 1)
        b3 = jnp.concatenate(
            [
                conv(b3, "branch3x3_2a", 384, (1, 3), padding=(0, 1)),
                conv(b3, "branch3x3_2b", 384, (3, 1), padding=(1, 0)),
            ],
            axis=-1,
        )
        bd = conv(x, "branch3x3dbl_1", 448, 1)
        bd = conv(bd, "branch3x3dbl_2", 384, 3, padding=1)
        bd = jnp.concatenate(
            [
                conv(bd, "branch3x3dbl_3a", 384, (1, 3), padding=(0, 1)),
                conv(bd, "branch3x3dbl_3b", 384, (3, 1), padding=(1, 0)),
            ],
            axis=-1,
        )
        bp = conv(avg_pool(x, 3, 1, 1), "branch_pool", 192, 1)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionAux(nn.Module):
    """Auxiliary head on the 17x17 map: [N, 17, 17, Cin] -> [N, num_classes].

    AvgPool(5, 3) -> conv0 1x1 128 -> conv1 5x5 768 -> ``classifier`` (named ``fc``), with
    global average pooling after the classifier (v1: a 1x1 B-cos conv) or before it
    (torchvision: a Dense layer), as in each reference. Needs a map of at least 17x17.
    """

    num_classes: int
    conv_block: Callable[..., nn.Module]
    classifier: Callable[..., nn.Module]
    pool_before_fc: bool = False

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        conv = _conv_fn(self, train, explain)
        x = conv(avg_pool(x, 5, 3), "conv0", 128, 1)
        x = conv(x, "conv1", 768, 5)
        fc = self.classifier(features=self.num_classes, name="fc")
        if self.pool_before_fc:
            return fc(global_avg_pool(x), explain)
        return global_avg_pool(fc(x, explain))


class Inception3(nn.Module):
    """Inception v3 with injected convs, pools and classifier. The defaults are the v1
    B-cos network; ``standard_inception_v3`` overrides them for torchvision's.

    Input [N, H, W, in_channels] with H, W >= 75 (>= 299 to train with the aux head) ->
    logits [N, num_classes] (see the module docstring for training outputs).

    Attributes:
      num_classes: classes of ``fc`` (and of the aux head).
      conv_block: ``BasicConv2d`` factory with conv/norm/act bound.
      reduce_pool: the stride-2 pool of the stem and of InceptionB/D.
      classifier: factory ``classifier(features=..., name=...)`` called as ``(x, explain)``.
      pool_before_fc: pool the 8x8 map before the classifier (torchvision) or after (v1).
      aux_logits: build the auxiliary head (it is in both reference state_dicts).
      dropout: dropout rate before a pooled classifier (rng stream 'dropout' in training).
      transform_input: torchvision's re-normalisation of ImageNet mean/std inputs to the
        (x - 0.5) / 0.5 inputs the Google weights were trained on (3 channels only).
      logit_temperature, logit_bias: v1 ``FinalLayer``: ``pooled / T + bias`` (None: skipped).
      in_channels: channels the input must have (checked with an error naming the fix,
        e.g. ``add_inverse`` for RGB into a B-cos model); None: unchecked. ``models.create``
        sets it from the spec.
    """

    num_classes: int = 1000
    conv_block: Callable[..., nn.Module] = functools.partial(BasicConv2d, conv=_v1_conv)
    reduce_pool: Callable[[Array], Array] = avg_pool_3x3_s2
    classifier: Callable[..., nn.Module] = functools.partial(_v1_conv, kernel_size=1)
    pool_before_fc: bool = False
    aux_logits: bool = True
    dropout: float = 0.0
    transform_input: bool = False
    logit_temperature: Optional[float] = 1.0
    logit_bias: Optional[float] = V1_IMAGENET_LOGIT_BIAS
    in_channels: Optional[int] = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False):
        check_input(x, self.in_channels, "Inception3")
        if self.transform_input:
            x = _transform_input(x)
        conv = _conv_fn(self, train, explain)
        blocks = dict(conv_block=self.conv_block)
        run = lambda m, h: m(h, train=train, explain=explain)

        x = conv(x, "Conv2d_1a_3x3", 32, 3, strides=2)
        x = conv(x, "Conv2d_2a_3x3", 32, 3)
        x = conv(x, "Conv2d_2b_3x3", 64, 3, padding=1)
        x = self.reduce_pool(x)
        x = conv(x, "Conv2d_3b_1x1", 80, 1)
        x = conv(x, "Conv2d_4a_3x3", 192, 3)
        x = self.reduce_pool(x)
        x = run(InceptionA(32, name="Mixed_5b", **blocks), x)
        x = run(InceptionA(64, name="Mixed_5c", **blocks), x)
        x = run(InceptionA(64, name="Mixed_5d", **blocks), x)
        x = run(InceptionB(name="Mixed_6a", reduce_pool=self.reduce_pool, **blocks), x)
        for name, c7 in (
            ("Mixed_6b", 128),
            ("Mixed_6c", 160),
            ("Mixed_6d", 160),
            ("Mixed_6e", 192),
        ):
            x = run(InceptionC(c7, name=name, **blocks), x)
        aux = self._aux(x, train, explain)
        x = run(InceptionD(name="Mixed_7a", reduce_pool=self.reduce_pool, **blocks), x)
        x = run(InceptionE(name="Mixed_7b", **blocks), x)
        x = run(InceptionE(name="Mixed_7c", **blocks), x)

        fc = self.classifier(features=self.num_classes, name="fc")
        if self.pool_before_fc:
            x = nn.Dropout(self.dropout, deterministic=not train, name="dropout")(
                global_avg_pool(x)
            )
            x = fc(x, explain)
        else:
            x = global_avg_pool(fc(x, explain))
        logits = LogitLayer(self.logit_temperature, self.logit_bias)(x)
        if train and aux is not None:
            return {"logits": logits, "aux_logits": aux}
        return logits

    def _aux(self, x: Array, train: bool, explain: bool) -> Optional[Array]:
        if not self.aux_logits or not (train or self.is_initializing()):
            return None
        if self.is_initializing() and min(x.shape[1:3]) < 17:
            # The head's parameters depend on channels only; let small inputs initialise.
            x = jnp.zeros((x.shape[0], 17, 17, x.shape[-1]), x.dtype)
        head = InceptionAux(
            self.num_classes,
            conv_block=self.conv_block,
            classifier=self.classifier,
            pool_before_fc=self.pool_before_fc,
            name="AuxLogits",
        )
        return head(x, train=train, explain=explain)


def _transform_input(x: Array) -> Array:
    # ImageNet mean/std-normalised -> (x - 0.5) / 0.5, per channel, as torchvision.
    mean = jnp.asarray(IMAGENET_MEAN, x.dtype)
    std = jnp.asarray(IMAGENET_STD, x.dtype)
    return x * (std / 0.5) + (mean - 0.5) / 0.5


def v1_inception_v3(
    num_classes: int = 1000, aux_logits: bool = True, dtype: Any = None, **overrides: Any
) -> Inception3:
    """The v1 B-cos Inception v3 (config ``inception_v3``): [N, 299, 299, 6] -> [N, num_classes].

    Every conv is ``BcosConv(B=2, max_out=2, scale_fact=200)``, no norms or ReLUs, logit
    temperature 1 and bias log(0.01/0.99). Eval transform: Resize(320), CenterCrop(299).
    ``dtype`` is the computation dtype of the convs (parameters stay float32).
    """
    conv = functools.partial(_v1_conv, dtype=dtype)
    fields = dict(
        conv_block=functools.partial(BasicConv2d, conv=conv),
        classifier=functools.partial(conv, kernel_size=1),
    )
    fields.update(overrides)
    return Inception3(num_classes=num_classes, aux_logits=aux_logits, **fields)


def standard_inception_v3(
    num_classes: int = 1000, aux_logits: bool = True, dtype: Any = None, **overrides: Any
) -> Inception3:
    """torchvision's Inception v3 (``inception_v3(weights=IMAGENET1K_V1)``).

    [N, 299, 299, 3] -> [N, num_classes].

    Takes ImageNet mean/std-normalised input; ``transform_input=True`` (torchvision's
    setting for its weights) converts it to what the Google weights expect. Eval
    transform: Resize(342), CenterCrop(299). Training needs ``mutable=['batch_stats']``
    and an rng stream 'dropout'.
    """
    fields = dict(
        conv_block=functools.partial(
            BasicConv2d,
            conv=functools.partial(StandardConv, kernel_init=_init, dtype=dtype),
            norm=functools.partial(StandardBatchNorm, epsilon=1e-3),
            act=nn.relu,
        ),
        reduce_pool=max_pool_3x3_s2,
        classifier=functools.partial(StandardDense, use_bias=True, kernel_init=_init, dtype=dtype),
        pool_before_fc=True,
        dropout=0.5,
        transform_input=True,
        logit_temperature=None,
        logit_bias=None,
    )
    fields.update(overrides)
    return Inception3(num_classes=num_classes, aux_logits=aux_logits, **fields)


ARCHITECTURES: Tuple[Architecture, ...] = (
    # v1 (CVPR 2022) B-cos Inception v3 (B=2, MaxOut 2, scale_fact 200); aux head in training.
    Architecture("v1_inception_v3", v1_inception_v3, family="inception", version="v1",
                 input_size=299, resize=320, torch_prefix="0."),
    # torchvision's Inception v3 (transform_input=True, aux head in training).
    Architecture("standard_inception_v3", standard_inception_v3, family="inception",
                 version="standard", input_size=299, resize=342, in_channels=3),
)
