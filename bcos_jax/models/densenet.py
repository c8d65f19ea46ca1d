"""DenseNets: B-cos v2 (ImageNet and CIFAR-10), B-cos v1 and standard torchvision, one definition.

The three variants differ only in what is injected (docs/architectures.md §1, §2):

=========  =====================  ======================  ==========  ===========================
variant    conv                   norm                    act / pool  head
=========  =====================  ======================  ==========  ===========================
v2         ``BcosConv``           ``NoBias(BNU)``         - / avg     1×1 conv → mean → −log(C−1)
v1         ``BcosConv`` M=2, /s   none (no norm0/norm5)   - / avg     1×1 conv → mean → /T + b
standard   ``StandardConv``       ``BatchNorm``           ReLU / max  ReLU → mean → Dense (bias)
=========  =====================  ======================  ==========  ===========================

Flax names follow torchvision/bcos (``features/denseblock1/denselayer1/conv1``,
``features/transition1/norm``, ``features/norm5``, ``classifier``), so reference state_dicts
convert with ``bcos_jax.convert.from_torch``.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bcos_jax import norms
from bcos_jax.constants import V1_IMAGENET_LOGIT_BIAS, v2_logit_bias
from bcos_jax.layers import BcosConv, LogitLayer
from bcos_jax.models.common import (
    StandardBatchNorm,
    StandardConv,
    StandardDense,
    avg_pool,
    check_input,
    global_avg_pool,
    partial,
)
from bcos_jax.models.registry import Architecture

Array = jax.Array
ModuleDef = Callable[..., nn.Module]

__all__ = [
    "DenseLayer",
    "DenseBlock",
    "Transition",
    "DenseNetFeatures",
    "DenseNet",
    "ARCHITECTURES",
]


def _norm_act(
    x: Array,
    norm: Optional[ModuleDef],
    act: Optional[Callable],
    name: str,
    train: bool,
    explain: bool,
) -> Array:
    # Called inside a parent's compact method, so the norm becomes the parent's child `name`.
    if norm is not None:
        x = norm(name=name)(x, train=train, explain=explain)
    if act is not None:
        x = act(x)
    return x


class DenseLayer(nn.Module):
    """torchvision ``_DenseLayer``: [norm1, act] → 1×1 conv1 → [norm2, act] → 3×3 conv2.

    x: [N, H, W, C] (concatenation of all earlier features) -> [N, H, W, growth_rate].
    """

    growth_rate: int
    bn_size: int
    conv: ModuleDef
    norm: Optional[ModuleDef] = None
    act: Optional[Callable] = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        h = _norm_act(x, self.norm, self.act, "norm1", train, explain)
        h = self.conv(self.bn_size * self.growth_rate, kernel_size=1, name="conv1")(h, explain)
        h = _norm_act(h, self.norm, self.act, "norm2", train, explain)
        return self.conv(self.growth_rate, kernel_size=3, padding=1, name="conv2")(h, explain)


class DenseBlock(nn.Module):
    """``num_layers`` dense layers, each fed the concatenation of the block input and all
    earlier outputs. [N, H, W, C] -> [N, H, W, C + num_layers · growth_rate]."""

    num_layers: int
    growth_rate: int
    bn_size: int
    conv: ModuleDef
    norm: Optional[ModuleDef] = None
    act: Optional[Callable] = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        feats = [x]
        for i in range(self.num_layers):
            layer = DenseLayer(
                self.growth_rate,
                self.bn_size,
                self.conv,
                self.norm,
                self.act,
                name=f"denselayer{i + 1}",
            )
            feats.append(layer(jnp.concatenate(feats, axis=-1), train, explain))
        return jnp.concatenate(feats, axis=-1)


class Transition(nn.Module):
    """[norm, act] → 1×1 conv → AvgPool(2, 2): [N, H, W, C] -> [N, H/2, W/2, features]."""

    features: int
    conv: ModuleDef
    norm: Optional[ModuleDef] = None
    act: Optional[Callable] = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        x = _norm_act(x, self.norm, self.act, "norm", train, explain)
        x = self.conv(self.features, kernel_size=1, name="conv")(x, explain)
        return avg_pool(x, 2)


class DenseNetFeatures(nn.Module):
    """The ``features`` part: stem, dense blocks with transitions, final norm ``norm5``.

    [N, H, W, C_in] -> [N, H/32, W/32, C_out] (ImageNet stem; H/4 with ``small_inputs``).
    ``norm=None`` drops every norm (v1, which also has no norm0/norm5).
    """

    growth_rate: int
    block_config: Sequence[int]
    num_init_features: int
    bn_size: int
    conv: ModuleDef
    norm: Optional[ModuleDef] = None
    act: Optional[Callable] = None
    stem_pool: str = "avg"
    small_inputs: bool = False

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        if self.small_inputs:
            # CIFAR stem (gpleiss' efficient DenseNet): one 3×3 conv, no norm0, no pool.
            x = self.conv(self.num_init_features, kernel_size=3, padding=1, name="conv0")(
                x, explain
            )
        else:
            conv0 = self.conv(
                self.num_init_features, kernel_size=7, strides=2, padding=3, name="conv0"
            )
            x = conv0(x, explain)
            x = _norm_act(x, self.norm, self.act, "norm0", train, explain)
            if self.stem_pool == "max":
                x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
            elif self.stem_pool == "avg":
                x = avg_pool(x, 3, 2, 1)
            else:
                raise ValueError(f"stem_pool must be 'avg' or 'max', got {self.stem_pool!r}")
        c = self.num_init_features
        for i, n in enumerate(self.block_config):
            x = DenseBlock(
                n,
                self.growth_rate,
                self.bn_size,
                self.conv,
                self.norm,
                self.act,
                name=f"denseblock{i + 1}",
            )(x, train, explain)
            c += n * self.growth_rate
            if i != len(self.block_config) - 1:
                c //= 2
                trans = Transition(c, self.conv, self.norm, self.act, name=f"transition{i + 1}")
                x = trans(x, train, explain)
        if self.norm is not None:
            x = self.norm(name="norm5")(x, train=train, explain=explain)
        return x


class DenseNet(nn.Module):
    """DenseNet-BC for all variants (see the module docstring for what each injects).

    Input [N, H, W, C_in] (6-channel ``[x, 1-x]`` for B-cos, 3 normalised channels for
    standard) -> logits [N, num_classes].

    Attributes:
      growth_rate, block_config, num_init_features, bn_size: torchvision's DenseNet-BC shape.
      num_classes: output classes.
      conv: conv factory (``BcosConv``, ``partial(BcosConv, max_out=2, scale_fact=100)``,
        ``StandardConv``); called with torch-style ``kernel_size/strides/padding``.
      norm: norm factory (called ``norm(name=...)``, used as ``norm(x, train=, explain=)``);
        None: no norm layers at all (v1).
      act: activation after every norm (and before the linear head); None for B-cos.
      stem_pool: 'avg' (B-cos: AvgPool(3, 2, 1)) or 'max' (torchvision).
      small_inputs: CIFAR stem (3×3 stride-1 conv, no norm0 and pool0).
      head: 'conv' (B-cos: 1×1 ``conv`` classifier on the feature map, global mean, logit
        layer) or 'linear' (torchvision: act, global mean, ``StandardDense`` with bias).
      logit_bias: added to the B-cos logits; None: ``-log(num_classes - 1)``.
      logit_temperature: B-cos logits are divided by it (v1); None: no division.
      dtype: computation dtype of convs and dense layers (None: from the input).
      in_channels: channels the input must have (checked with an error naming the fix,
        e.g. ``add_inverse`` for RGB into a B-cos model); None: unchecked. ``models.create``
        sets it from the spec.
    """

    growth_rate: int = 32
    block_config: Sequence[int] = (6, 12, 24, 16)
    num_init_features: int = 64
    bn_size: int = 4
    num_classes: int = 1000
    conv: ModuleDef = BcosConv
    norm: Optional[ModuleDef] = norms.no_bias(norms.BatchNormUncentered)
    act: Optional[Callable] = None
    stem_pool: str = "avg"
    small_inputs: bool = False
    head: str = "conv"
    logit_bias: Optional[float] = None
    logit_temperature: Optional[float] = None
    dtype: Any = None
    in_channels: Optional[int] = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        check_input(x, self.in_channels, "DenseNet")
        conv = partial(self.conv, dtype=self.dtype)
        x = DenseNetFeatures(
            growth_rate=self.growth_rate,
            block_config=tuple(self.block_config),
            num_init_features=self.num_init_features,
            bn_size=self.bn_size,
            conv=conv,
            norm=self.norm,
            act=self.act,
            stem_pool=self.stem_pool,
            small_inputs=self.small_inputs,
            name="features",
        )(x, train, explain)
        if self.head == "linear":
            if self.act is not None:
                x = self.act(x)
            return StandardDense(self.num_classes, dtype=self.dtype, name="classifier")(
                global_avg_pool(x)
            )
        if self.head != "conv":
            raise ValueError(f"head must be 'conv' or 'linear', got {self.head!r}")
        # B-cos: class evidence maps first, pooled afterwards (docs/bcos.md §7).
        x = conv(self.num_classes, kernel_size=1, name="classifier")(x, explain)
        bias = v2_logit_bias(self.num_classes) if self.logit_bias is None else self.logit_bias
        return LogitLayer(temperature=self.logit_temperature, bias=bias)(global_avg_pool(x))


# (growth_rate, block_config, num_init_features) of torchvision / bcos.models.densenet.
_IMAGENET_ARCHS = {
    121: (32, (6, 12, 24, 16), 64),
    161: (48, (6, 12, 36, 24), 96),
    169: (32, (6, 12, 32, 32), 64),
    201: (32, (6, 12, 48, 32), 64),
}


def _cifar_arch(depth: int, k: int):
    # bcos' _get_cifar_block_config: three blocks of (depth - 4) // 6 layers; 2k stem features.
    return k, ((depth - 4) // 6,) * 3, 2 * k


# depth -> growth rate k of bcos' cifar10_densenet{depth}.
_CIFAR_ARCHS = {d: _cifar_arch(d, k) for d, k in {52: 12, 100: 12, 190: 40, 250: 24}.items()}


def _arch(growth_rate, block_config, num_init_features, **kw):
    return partial(
        DenseNet,
        growth_rate=growth_rate,
        block_config=block_config,
        num_init_features=num_init_features,
        **kw,
    )


_V2 = dict(conv=BcosConv, norm=norms.no_bias(norms.BatchNormUncentered))
# bcos.models.densenet's own default norm, which its CIFAR constructors keep.
_V2_CIFAR = dict(
    conv=BcosConv, norm=norms.no_bias(norms.PositionNorm), small_inputs=True, num_classes=10
)
_V1 = dict(
    conv=partial(BcosConv, max_out=2, scale_fact=100.0),
    norm=None,
    logit_temperature=1e-3,  # DenseNet-121 config (v1 experiments/Imagenet/bcos)
    logit_bias=V1_IMAGENET_LOGIT_BIAS,
)
_STANDARD = dict(
    conv=StandardConv, norm=StandardBatchNorm, act=nn.relu, stem_pool="max", head="linear"
)


def _architectures() -> Tuple[Architecture, ...]:
    out = []
    for depth, arch in _IMAGENET_ARCHS.items():
        name = f"densenet{depth}"
        out += [
            Architecture(name, _arch(*arch, **_V2), family="densenet", version="v2"),
            Architecture(f"v1_{name}", _arch(*arch, **_V1), family="densenet", version="v1",
                         torch_prefix="0."),
            Architecture(f"standard_{name}", _arch(*arch, **_STANDARD), family="densenet",
                         version="standard", in_channels=3),
        ]
    # densenet121's architecture, trained with the 600-epoch recipe (bcos_final_long).
    out.append(Architecture("densenet121_long", _arch(*_IMAGENET_ARCHS[121], **_V2),
                            family="densenet", version="v2", resize=232))
    for depth, arch in _CIFAR_ARCHS.items():
        out.append(Architecture(f"cifar10_densenet{depth}", _arch(*arch, **_V2_CIFAR),
                                family="densenet", version="v2", input_size=32, resize=32,
                                num_classes=10))
    return tuple(out)


ARCHITECTURES: Tuple[Architecture, ...] = _architectures()
