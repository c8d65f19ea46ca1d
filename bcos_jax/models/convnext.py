"""ConvNeXt: the B-cos v2 models (docs/architectures.md §2) and their torchvision counterparts.

One ``ConvNeXt`` module builds both, from injected layers:

* **B-cos** (``bcos.models.convnext``): 6-channel input, B-cos convs everywhere (the
  pointwise layers are 1×1 B-cos convs), no GELU, bias-free norms, the classifier (norm ->
  1×1 conv) applied at every position *before* global average pooling, then
  ``LogitLayer(-log(C - 1))``.
* **standard** (``torchvision.models.convnext_*``): 3-channel input, convs and Dense layers
  with biases, GELU, LayerNorm (eps 1e-6); pooling *before* the head (norm -> Dense).

The two references nest their modules differently (torchvision wraps the stem in its own
``Sequential`` and keeps ``Permute``/``GELU`` entries in the block); ``Layout`` records
where each parameterised layer sits so that both state_dicts convert with
``bcos_jax.convert`` unchanged.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Tuple

import flax.linen as nn
import jax

from bcos_jax.constants import v2_logit_bias
from bcos_jax.layers import BcosConv, LogitLayer
from bcos_jax.models.common import Scope as _Scope
from bcos_jax.models.common import (
    StandardConv,
    StandardDense,
    StochasticDepth,
    check_input,
    global_avg_pool,
    partial,
)
from bcos_jax.models.registry import Architecture
from bcos_jax.norms import BatchNormUncentered, PositionNorm, no_bias

Array = jax.Array
Factory = Callable[..., nn.Module]
# One entry per stage: (channels, channels after the following downsample or None, blocks).
BlockSetting = Tuple[Tuple[int, Optional[int], int], ...]

__all__ = [
    "ARCHITECTURES",
    "ATTO",
    "BASE",
    "BCOS_LAYOUT",
    "CNBlock",
    "ConvNeXt",
    "LARGE",
    "Layout",
    "SMALL",
    "TINY",
    "TORCHVISION_LAYOUT",
    "stochastic_depth_rates",
]

ATTO: BlockSetting = ((40, 80, 2), (80, 160, 2), (160, 320, 6), (320, None, 2))
TINY: BlockSetting = ((96, 192, 3), (192, 384, 3), (384, 768, 9), (768, None, 3))
SMALL: BlockSetting = ((96, 192, 3), (192, 384, 3), (384, 768, 27), (768, None, 3))
BASE: BlockSetting = ((128, 256, 3), (256, 512, 3), (512, 1024, 27), (1024, None, 3))
LARGE: BlockSetting = ((192, 384, 3), (384, 768, 3), (768, 1536, 27), (1536, None, 3))


@dataclasses.dataclass(frozen=True)
class Layout:
    """Names of the parameterised layers inside the reference's ``nn.Sequential``s.

    Attributes:
      nested_stem: the stem is ``features.0 = Sequential(conv, norm)`` (torchvision) rather
        than ``features.0`` conv, ``features.1`` norm (B-cos); stages follow it.
      block: names of (depthwise conv, norm, pointwise 1, pointwise 2) inside ``block``.
      head: names of (norm, classifier) inside ``classifier``.
    """

    nested_stem: bool
    block: Tuple[str, str, str, str]
    head: Tuple[str, str]


# bcos: block = [dwconv, norm, pw1, pw2] (GELU commented out); classifier = [norm, conv].
BCOS_LAYOUT = Layout(nested_stem=False, block=("0", "1", "2", "3"), head=("0", "1"))
# torchvision: block = [dwconv, Permute, norm, Linear, GELU, Linear, Permute];
# classifier = [LayerNorm2d, Flatten, Linear].
TORCHVISION_LAYOUT = Layout(nested_stem=True, block=("0", "2", "3", "5"), head=("0", "2"))


def stochastic_depth_rates(block_setting: BlockSetting, p: float) -> Tuple[Tuple[float, ...], ...]:
    """Per-stage drop rates, rising linearly from 0 to ``p`` over all blocks (torchvision)."""
    total = sum(n for _, _, n in block_setting)
    rates, i = [], 0
    for _, _, n in block_setting:
        rates.append(tuple(p * (i + j) / (total - 1.0) for j in range(n)))
        i += n
    return tuple(rates)


class CNBlock(nn.Module):
    """ConvNeXt block: ``x + drop(layer_scale · block(x))``; [N, H, W, dim] -> [N, H, W, dim].

    ``block`` = depthwise 7×7 conv -> norm -> pointwise (4·dim) -> act -> pointwise (dim).
    ``layer_scale`` is a per-channel parameter (init ``layer_scale_init``), a fixed linear
    weight in explanation mode.
    """

    dim: int
    drop_rate: float
    conv: Factory
    pointwise: Factory
    norm: Factory
    act: Optional[Callable[[Array], Array]] = None
    layer_scale_init: float = 1e-6
    names: Tuple[str, str, str, str] = BCOS_LAYOUT.block
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        dw, norm, pw1, pw2 = self.names

        def block(y):
            y = self.conv(
                self.dim,
                kernel_size=7,
                padding=3,
                feature_group_count=self.dim,
                dtype=self.dtype,
                name=dw,
            )(y, explain)
            y = self.norm(name=norm)(y, train=train, explain=explain)
            y = self.pointwise(4 * self.dim, dtype=self.dtype, name=pw1)(y, explain)
            if self.act is not None:
                y = self.act(y)
            return self.pointwise(self.dim, dtype=self.dtype, name=pw2)(y, explain)

        y = _Scope(name="block")(block, x)
        gamma = self.param(
            "layer_scale", nn.initializers.constant(self.layer_scale_init), (self.dim,)
        )
        y = StochasticDepth(self.drop_rate)(y * gamma.astype(y.dtype), train)
        return x + y


class ConvNeXt(nn.Module):
    """ConvNeXt classifier: NHWC image [N, H, W, C_in] -> logits [N, num_classes].

    Stem (4×4 conv, stride 4) -> norm; per stage ``CNBlock``s, then norm -> 2×2 conv
    stride 2 to the next width; head norm -> classifier (before pooling unless
    ``pool_before_head``). The strided convs drop border pixels unless H and W are
    multiples of 32 (as in the reference).

    Attributes:
      block_setting: ``(channels, next channels or None, blocks)`` per stage.
      num_classes: classifier outputs.
      stochastic_depth_prob: drop rate of the last block (rng stream 'dropout').
      layer_scale: initial value of every block's ``layer_scale``.
      conv: factory of the stem, depthwise and downsampling convs.
      pointwise: factory of the block's pointwise layers and the classifier
        (1×1 B-cos conv, or Dense).
      norm: norm factory (called as ``norm(name=...)``).
      act: activation between the pointwise layers (None: none, as in B-cos).
      pool_before_head: torchvision order (pool -> norm -> Dense) instead of B-cos
        (norm -> 1×1 conv per position -> pool).
      logit_layer, logit_bias: add ``logit_bias`` (None: ``-log(num_classes - 1)``) to the
        pooled output, as the B-cos ``LogitLayer`` (an explicit 0 stays 0 here, while the
        reference's ``logit_bias or -log(C - 1)`` replaces it).
      layout: reference module names (``BCOS_LAYOUT`` / ``TORCHVISION_LAYOUT``).
      dtype: computation dtype of the convs/Dense layers (None: from inputs).
      in_channels: channels the input must have (checked with an error naming the fix,
        e.g. ``add_inverse`` for RGB into a B-cos model); None: unchecked. ``models.create``
        sets it from the spec.
    """

    block_setting: BlockSetting
    num_classes: int = 1000
    stochastic_depth_prob: float = 0.0
    layer_scale: float = 1e-6
    conv: Factory = BcosConv
    pointwise: Factory = partial(BcosConv, kernel_size=1)
    norm: Factory = partial(no_bias(PositionNorm), epsilon=1e-6)
    act: Optional[Callable[[Array], Array]] = None
    pool_before_head: bool = False
    logit_layer: bool = True
    logit_bias: Optional[float] = None
    layout: Layout = BCOS_LAYOUT
    dtype: Any = None
    in_channels: Optional[int] = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        check_input(x, self.in_channels, "ConvNeXt")
        norm_kw = dict(train=train, explain=explain)
        rates = stochastic_depth_rates(self.block_setting, self.stochastic_depth_prob)

        def stem(y):
            c0 = self.block_setting[0][0]
            y = self.conv(c0, kernel_size=4, strides=4, dtype=self.dtype, name="0")(y, explain)
            return self.norm(name="1")(y, **norm_kw)

        def stage(y, dim, stage_rates):
            for i, p in enumerate(stage_rates):
                y = CNBlock(
                    dim=dim,
                    drop_rate=p,
                    conv=self.conv,
                    pointwise=self.pointwise,
                    norm=self.norm,
                    act=self.act,
                    layer_scale_init=self.layer_scale,
                    names=self.layout.block,
                    dtype=self.dtype,
                    name=str(i),
                )(y, train, explain)
            return y

        def downsample(y, out):
            y = self.norm(name="0")(y, **norm_kw)
            return self.conv(out, kernel_size=2, strides=2, dtype=self.dtype, name="1")(y, explain)

        def features(y):
            if self.layout.nested_stem:
                y, idx = _Scope(name="0")(stem, y), 1
            else:
                y, idx = stem(y), 2
            for (dim, out, _), stage_rates in zip(self.block_setting, rates):
                y = _Scope(name=str(idx))(stage, y, dim, stage_rates)
                idx += 1
                if out is not None:
                    y = _Scope(name=str(idx))(downsample, y, out)
                    idx += 1
            return y

        def classifier(y):
            norm, fc = self.layout.head
            y = self.norm(name=norm)(y, **norm_kw)
            return self.pointwise(self.num_classes, dtype=self.dtype, name=fc)(y, explain)

        x = _Scope(name="features")(features, x)
        if self.pool_before_head:
            x = _Scope(name="classifier")(classifier, global_avg_pool(x))
        else:
            x = global_avg_pool(_Scope(name="classifier")(classifier, x))
        if self.logit_layer:
            bias = v2_logit_bias(self.num_classes) if self.logit_bias is None else self.logit_bias
            x = LogitLayer(bias=bias)(x)
        return x


# ------------------------------------------------------------------------ architectures
_TRUNC = nn.initializers.truncated_normal(0.02)  # reference init (only directions matter for B-cos)

_POSITION_NORM = partial(no_bias(PositionNorm), epsilon=1e-6)  # DetachablePositionNorm2d, eps 1e-6
# The BNU configs pass NoBias(BatchNormUncentered2d) as is, so it keeps eps 1e-5.
_BNU = no_bias(BatchNormUncentered)

_BCOS = dict(
    conv=partial(BcosConv, kernel_init=_TRUNC),
    pointwise=partial(BcosConv, kernel_size=1, kernel_init=_TRUNC),
)
_STANDARD = dict(
    conv=partial(StandardConv, use_bias=True, kernel_init=_TRUNC),
    pointwise=partial(StandardDense, kernel_init=_TRUNC),
    norm=partial(PositionNorm, epsilon=1e-6),
    act=partial(jax.nn.gelu, approximate=False),
    pool_before_head=True,
    logit_layer=False,
    layout=TORCHVISION_LAYOUT,
)

# name: (block setting, default stochastic depth, norm)
_BCOS_MODELS = {
    "convnext_atto": (ATTO, 0.1, _POSITION_NORM),
    "convnext_tiny": (TINY, 0.1, _POSITION_NORM),
    "convnext_small": (SMALL, 0.4, _POSITION_NORM),
    "convnext_base": (BASE, 0.5, _POSITION_NORM),
    "convnext_large": (LARGE, 0.5, _POSITION_NORM),
    "convnext_tiny_bnu": (TINY, 0.1, _BNU),
    "convnext_base_bnu": (BASE, 0.5, _BNU),
}

# name: (block setting, default stochastic depth, eval resize of torchvision's weights)
_STANDARD_MODELS = {
    "standard_convnext_atto": (ATTO, 0.1, 236),
    "standard_convnext_tiny": (TINY, 0.1, 236),
    "standard_convnext_small": (SMALL, 0.4, 230),
    "standard_convnext_base": (BASE, 0.5, 232),
    "standard_convnext_large": (LARGE, 0.5, 232),
}

ARCHITECTURES: Tuple[Architecture, ...] = tuple(
    # bcos_final_long eval transform: Resize(232) -> CenterCrop(224).
    Architecture(name, partial(ConvNeXt, block_setting=setting, stochastic_depth_prob=sd,
                               norm=norm, **_BCOS),
                 family="convnext", version="v2", resize=232)
    for name, (setting, sd, norm) in _BCOS_MODELS.items()
) + tuple(
    Architecture(name, partial(ConvNeXt, block_setting=setting, stochastic_depth_prob=sd,
                               **_STANDARD),
                 family="convnext", version="standard", resize=resize, in_channels=3)
    for name, (setting, sd, resize) in _STANDARD_MODELS.items()
)
