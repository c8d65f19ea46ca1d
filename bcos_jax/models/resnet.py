"""ResNet / ResNeXt / Wide-ResNet: B-cos v2, B-cos v1 (CVPR 2022) and standard (torchvision).

One set of modules builds all three variants; they differ only in what is injected:

========== ============================== ================== ======== =========== ==================
variant    conv                           norm               act      stem pool   head
========== ============================== ================== ======== =========== ==================
v2         BcosConv (B=2, MaxOut 1)       NoBias(BNU) [1]_   none     AvgPool     1x1 conv, pool,
                                                                                  -log(C-1)
v1         BcosConv(max_out=2, sf=100)    none               none     AvgPool     1x1 conv, pool,
                                                                                  /T + log(.01/.99)
standard   StandardConv                   BatchNorm          ReLU     MaxPool     pool, Dense (bias)
========== ============================== ================== ======== =========== ==================

.. [1] the released ImageNet models; the CIFAR constructors and the entry points without a
   config or weights (resnext101_32x8d, wide_resnet*) keep the bare ``bcos.models.resnet``
   default NoBias(PositionNorm). ``create(name, norm=..., max_out=...)`` overrides either
   (``norm`` may name a ``CIFAR_NORMS`` entry, e.g. 'bnu-linear').

Every variant runs ``conv1 -> bn1 [-> act] -> pool -> layer1..layerN -> head`` (the v2
forward order; torchvision's is the same). Flax submodule names are the reference's module
paths (``layer2/0/downsample/0`` <-> ``layer2.0.downsample.0``), so ``bcos_jax.convert``
loads the reference state_dicts (v2 releases, v1 checkpoints with prefix ``0.``,
torchvision weights) with no per-model code.

Input NHWC: [N, H, W, 6] (``[x, 1-x]``) for B-cos models, [N, H, W, 3] ImageNet-normalised
for standard ones. Output: logits [N, num_classes].
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax

from bcos_jax import norms
from bcos_jax.constants import V1_IMAGENET_LOGIT_BIAS, v2_logit_bias
from bcos_jax.layers import BcosConv, LogitLayer
from bcos_jax.models.common import (
    StandardBatchNorm,
    StandardConv,
    StandardDense,
    StochasticDepth,
    avg_pool,
    check_input,
    global_avg_pool,
    partial,
)
from bcos_jax.models.registry import Architecture

Array = jax.Array
ModuleFactory = Callable[..., nn.Module]

__all__ = [
    "ARCHITECTURES",
    "BasicBlock",
    "Bottleneck",
    "CIFAR_NORMS",
    "Downsample",
    "ResNet",
    "ResStage",
    "V1_TEMPERATURE",
    "avg_pool_3x3",
    "max_pool_3x3",
]

# The ImageNet release norm: NoBias(BatchNormUncentered2d), eps 1e-5 (bcos_final configs).
BNU_NO_BIAS = norms.no_bias(norms.BatchNormUncentered)
# The bare bcos.models.resnet default (used by the CIFAR constructors and every entry point
# without an experiment config): NoBias(DetachablePositionNorm2d), eps 1e-5.
PN_NO_BIAS = norms.no_bias(norms.PositionNorm)
V1_CONV = partial(BcosConv, max_out=2, scale_fact=100.0)
# Only v1 ResNet-34 has a config (logit_temperature 1e1); the other depths use the same.
V1_TEMPERATURE = 10.0


def avg_pool_3x3(x: Array) -> Array:
    """B-cos stem pool: ``AvgPool2d(3, 2, 1)`` (linear, so W(x) stays exact)."""
    return avg_pool(x, 3, 2, 1)


def max_pool_3x3(x: Array) -> Array:
    """torchvision stem pool: ``MaxPool2d(3, 2, 1)`` (pads with -inf, as torch)."""
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class Downsample(nn.Module):
    """Shortcut projection ``conv1x1(stride) -> norm``: [N, H, W, Cin] -> [N, H/s, W/s, features].

    Submodules '0' and '1' mirror the reference's ``nn.Sequential`` (v1 has only the conv;
    its norm is ``Identity`` here, which has no variables).
    """

    features: int
    strides: int
    conv: ModuleFactory
    norm: ModuleFactory
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        x = self.conv(
            self.features, kernel_size=1, strides=self.strides, dtype=self.dtype, name="0"
        )(x, explain)
        return self.norm(name="1")(x, train=train, explain=explain)


class _Block(nn.Module):
    """Fields and the residual tail shared by ``BasicBlock`` and ``Bottleneck``."""

    planes: int
    strides: int = 1
    groups: int = 1
    base_width: int = 64
    stochastic_depth_prob: float = 0.0
    conv: ModuleFactory = BcosConv
    norm: ModuleFactory = BNU_NO_BIAS
    act: Optional[Callable[[Array], Array]] = None
    dtype: Any = None
    expansion: ClassVar[int] = 1

    def _conv(
        self, features: int, k: int, name: str, strides: int = 1, groups: int = 1
    ) -> nn.Module:
        return self.conv(
            features,
            kernel_size=k,
            strides=strides,
            padding=k // 2,
            feature_group_count=groups,
            dtype=self.dtype,
            name=name,
        )

    def _act(self, x: Array) -> Array:
        return x if self.act is None else self.act(x)

    def _residual(self, out: Array, x: Array, train: bool, explain: bool) -> Array:
        if self.stochastic_depth_prob:
            out = StochasticDepth(self.stochastic_depth_prob, name="stochastic_depth")(out, train)
        identity = x
        features = self.planes * self.expansion
        if self.strides != 1 or x.shape[-1] != features:
            identity = Downsample(
                features, self.strides, self.conv, self.norm, self.dtype, name="downsample"
            )(x, train, explain)
        return self._act(out + identity)


class BasicBlock(_Block):
    """Two 3x3 convs: [N, H, W, Cin] -> [N, H/s, W/s, planes] (stride on the first conv)."""

    expansion: ClassVar[int] = 1

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        if self.groups != 1 or self.base_width != 64:
            raise ValueError(
                "BasicBlock only supports groups=1 and base_width=64 (as the reference)"
            )
        out = self._conv(self.planes, 3, "conv1", self.strides)(x, explain)
        out = self._act(self.norm(name="bn1")(out, train=train, explain=explain))
        out = self._conv(self.planes, 3, "conv2")(out, explain)
        out = self.norm(name="bn2")(out, train=train, explain=explain)
        return self._residual(out, x, train, explain)


class Bottleneck(_Block):
    """1x1 -> 3x3 (grouped, strided: ResNet v1.5) -> 1x1: [N, H, W, Cin] -> [N, H/s, W/s, 4·planes].

    Inner width ``int(planes · base_width / 64) · groups`` (ResNeXt / Wide-ResNet).
    """

    expansion: ClassVar[int] = 4

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        width = int(self.planes * (self.base_width / 64.0)) * self.groups
        out = self._conv(width, 1, "conv1")(x, explain)
        out = self._act(self.norm(name="bn1")(out, train=train, explain=explain))
        out = self._conv(width, 3, "conv2", self.strides, self.groups)(out, explain)
        out = self._act(self.norm(name="bn2")(out, train=train, explain=explain))
        out = self._conv(self.planes * self.expansion, 1, "conv3")(out, explain)
        out = self.norm(name="bn3")(out, train=train, explain=explain)
        return self._residual(out, x, train, explain)


class ResStage(nn.Module):
    """``layerK``: blocks named '0', '1', ...; the first one strides (and projects if needed).

    [N, H, W, Cin] -> [N, H/s, W/s, planes · block.expansion].
    """

    block: Any
    planes: int
    num_blocks: int
    strides: int = 1
    sd_probs: Sequence[float] = ()
    block_kwargs: Optional[Dict[str, Any]] = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        kw = dict(self.block_kwargs or {})
        for i in range(self.num_blocks):
            p = self.sd_probs[i] if self.sd_probs else 0.0
            x = self.block(
                self.planes,
                strides=self.strides if i == 0 else 1,
                stochastic_depth_prob=p,
                name=str(i),
                **kw,
            )(x, train, explain)
        return x


class ResNet(nn.Module):
    """ResNet of any variant (see the module docstring for what each variant injects).

    Input [N, H, W, Cin] (Cin = 6 for B-cos, 3 for standard); output logits [N, num_classes].
    Call ``apply(variables, x, train=False, explain=False)``; training needs
    ``mutable=['batch_stats']`` (batch-statistics norms) and, with stochastic depth,
    an rng stream 'dropout'.

    Attributes:
      block: ``BasicBlock`` or ``Bottleneck``.
      layers: blocks per stage (4 stages for ImageNet, 3 for the CIFAR models).
      num_classes: outputs.
      groups, width_per_group: ResNeXt cardinality / width (Bottleneck only).
      inplanes: width of the stem and of stage 1 (stage k has ``inplanes · 2^(k-1)`` planes).
      small_inputs: CIFAR stem (3x3 stride-1 conv, no pooling) instead of 7x7/2 + pool.
      stochastic_depth_prob: p of the last block; block i of n drops with ``p · i / (n - 1)``.
      conv, norm, act: factories (``conv(features, kernel_size=, strides=, padding=,
        feature_group_count=, dtype=, name=)``, ``norm(name=)``; ``act`` None = no activation).
      pool: stem pooling function (``avg_pool_3x3`` or ``max_pool_3x3``).
      dense: None for the B-cos head (1x1 ``conv`` 'fc' before global pooling, then
        ``LogitLayer``); a dense factory for the standard head (pool, then ``dense`` 'fc').
      logit_bias: added to the B-cos logits; None = ``-log(num_classes - 1)``.
        (The reference replaces any falsy bias, 0 included, by that default; here 0 is 0.)
      logit_temperature: B-cos logits are divided by it (v1); None = no division.
      dtype: computation dtype of the convs/dense (None: from the input).
      in_channels: channels the input must have (checked with an error naming the fix,
        e.g. ``add_inverse`` for RGB into a B-cos model); None: unchecked. ``models.create``
        sets it from the spec.
    """

    block: Any
    layers: Sequence[int]
    num_classes: int = 1000
    groups: int = 1
    width_per_group: int = 64
    inplanes: int = 64
    small_inputs: bool = False
    stochastic_depth_prob: float = 0.0
    conv: ModuleFactory = BcosConv
    norm: ModuleFactory = BNU_NO_BIAS
    act: Optional[Callable[[Array], Array]] = None
    pool: Callable[[Array], Array] = avg_pool_3x3
    dense: Optional[ModuleFactory] = None
    logit_bias: Optional[float] = None
    logit_temperature: Optional[float] = None
    dtype: Any = None
    in_channels: Optional[int] = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        check_input(x, self.in_channels, "ResNet")
        x = self._features(x, train, explain)
        if self.dense is not None:
            return self.dense(self.num_classes, dtype=self.dtype, name="fc")(global_avg_pool(x))
        x = self.conv(self.num_classes, kernel_size=1, dtype=self.dtype, name="fc")(x, explain)
        bias = v2_logit_bias(self.num_classes) if self.logit_bias is None else self.logit_bias
        return LogitLayer(temperature=self.logit_temperature, bias=bias)(global_avg_pool(x))

    def _features(self, x: Array, train: bool, explain: bool) -> Array:
        # Part of the compact __call__ (not an apply method). The feature map [N, h, w, F]
        # is the last stage's output ('layer4'; 'layer3' for CIFAR): capture_intermediates or
        # explain(layer=...).
        if self.small_inputs:
            stem = self.conv(
                self.inplanes, kernel_size=3, padding=1, dtype=self.dtype, name="conv1"
            )
        else:
            stem = self.conv(
                self.inplanes, kernel_size=7, strides=2, padding=3, dtype=self.dtype, name="conv1"
            )
        x = stem(x, explain)
        x = self.norm(name="bn1")(x, train=train, explain=explain)
        if self.act is not None:
            x = self.act(x)
        if not self.small_inputs:
            x = self.pool(x)

        total = sum(self.layers)
        block_kwargs = dict(
            groups=self.groups,
            base_width=self.width_per_group,
            conv=self.conv,
            norm=self.norm,
            act=self.act,
            dtype=self.dtype,
        )
        first = 0
        for k, n in enumerate(self.layers):
            # Linear stochastic-depth schedule over all blocks of the network (reference).
            probs = tuple(
                self.stochastic_depth_prob * i / (total - 1) if total > 1 else 0.0
                for i in range(first, first + n)
            )
            first += n
            x = ResStage(
                self.block,
                self.inplanes * 2**k,
                n,
                strides=1 if k == 0 else 2,
                sd_probs=probs,
                block_kwargs=block_kwargs,
                name=f"layer{k + 1}",
            )(x, train, explain)
        return x


# ------------------------------------------------------------------------------ norms by name
# The CIFAR-10 norm ablation of the reference (experiments/CIFAR10/norm_ablations_final):
# ``create('cifar10_resnet20', norm='bnu-linear', max_out=2)`` is its 'resnet_20_bnu-linear'.
_CIFAR_NORM_CLASSES = {
    "an": norms.AllNorm,
    "bn": norms.BatchNorm,
    "gn": partial(norms.GroupNorm, num_groups=2),
    "in": norms.InstanceNorm,
    "ln": norms.LayerNorm2d,
    "pn": norms.PositionNorm,
    "anu": norms.AllNormUncentered,
    "bnu": norms.BatchNormUncentered,
    "gnu": partial(norms.GroupNormUncentered, num_groups=2),
    "inu": norms.InstanceNormUncentered,
    "lnu": norms.LayerNorm2dUncentered,
    "pnu": norms.PositionNormUncentered,
}
CIFAR_NORMS: Dict[str, ModuleFactory] = {"none": norms.Identity}
for _k, _cls in _CIFAR_NORM_CLASSES.items():
    CIFAR_NORMS[_k] = _cls
    CIFAR_NORMS[f"{_k}-linear"] = norms.no_bias(_cls)
    CIFAR_NORMS[f"{_k}-unaffine"] = norms.unaffine(_cls)


def _resolve_norm(norm: Any) -> ModuleFactory:
    if isinstance(norm, str):
        if norm not in CIFAR_NORMS:
            raise ValueError(
                f"unknown norm {norm!r}; use a factory or one of {sorted(CIFAR_NORMS)}"
            )
        return CIFAR_NORMS[norm]
    return norm


# ------------------------------------------------------------------------------ builders
def _bcos_builder(**preset: Any) -> Callable[..., ResNet]:
    """``build(**overrides)`` for B-cos ResNets.

    Besides any ``ResNet`` field it accepts ``b`` and ``max_out`` (applied to the conv
    factory) and ``norm`` as a factory or a ``CIFAR_NORMS`` name.
    """

    def build(
        *, b: Optional[float] = None, max_out: Optional[int] = None, **overrides: Any
    ) -> ResNet:
        kw = {**preset, **overrides}
        if "norm" in kw:
            kw["norm"] = _resolve_norm(kw["norm"])
        conv_kw = {k: v for k, v in (("b", b), ("max_out", max_out)) if v is not None}
        if conv_kw:
            kw["conv"] = partial(kw.get("conv", BcosConv), **conv_kw)
        return ResNet(**kw)

    return build


def _standard_builder(**preset: Any) -> Callable[..., ResNet]:
    def build(**overrides: Any) -> ResNet:
        return ResNet(**{**preset, **overrides})

    return build


_STANDARD = dict(
    conv=StandardConv, norm=StandardBatchNorm, act=nn.relu, pool=max_pool_3x3, dense=StandardDense
)
_V1 = dict(
    conv=V1_CONV,
    norm=norms.Identity,
    logit_bias=V1_IMAGENET_LOGIT_BIAS,
    logit_temperature=V1_TEMPERATURE,
)

# name -> (block, layers, extra ResNet fields)
_IMAGENET = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), {}),
    "resnet34": (BasicBlock, (3, 4, 6, 3), {}),
    "resnet50": (Bottleneck, (3, 4, 6, 3), {}),
    "resnet101": (Bottleneck, (3, 4, 23, 3), {}),
    "resnet152": (Bottleneck, (3, 8, 36, 3), {}),
    "resnext50_32x4d": (Bottleneck, (3, 4, 6, 3), dict(groups=32, width_per_group=4)),
    "resnext101_32x8d": (Bottleneck, (3, 4, 23, 3), dict(groups=32, width_per_group=8)),
    "wide_resnet50_2": (Bottleneck, (3, 4, 6, 3), dict(width_per_group=128)),
    "wide_resnet101_2": (Bottleneck, (3, 4, 23, 3), dict(width_per_group=128)),
}

_CIFAR = {
    "cifar10_resnet20": (BasicBlock, (3,) * 3, {}),
    "cifar10_resnet32": (BasicBlock, (5,) * 3, {}),
    "cifar10_resnet44": (BasicBlock, (7,) * 3, {}),
    "cifar10_resnet56": (BasicBlock, (9,) * 3, {}),
    "cifar10_resnet110": (BasicBlock, (18,) * 3, {}),
    "cifar10_resnext29_8x64d": (
        Bottleneck,
        (3,) * 3,
        dict(groups=8, width_per_group=64, inplanes=64),
    ),
    "cifar10_resnext29_16x64d": (
        Bottleneck,
        (3,) * 3,
        dict(groups=16, width_per_group=64, inplanes=64),
    ),
    "cifar10_resnext29_32x4d": (Bottleneck, (3,) * 3, dict(groups=32, width_per_group=4)),
    "cifar10_resnext47_32x4d": (Bottleneck, (5,) * 3, dict(groups=32, width_per_group=4)),
    "cifar10_resnext65_32x4d": (Bottleneck, (7,) * 3, dict(groups=32, width_per_group=4)),
    "cifar10_resnext101_32x4d": (Bottleneck, (11,) * 3, dict(groups=32, width_per_group=4)),
    "cifar10_resnext29_16x8d": (Bottleneck, (3,) * 3, dict(groups=16, width_per_group=8)),
    "cifar10_resnext47_16x8d": (Bottleneck, (5,) * 3, dict(groups=16, width_per_group=8)),
    "cifar10_resnext65_16x8d": (Bottleneck, (7,) * 3, dict(groups=16, width_per_group=8)),
    "cifar10_resnext101_16x8d": (Bottleneck, (11,) * 3, dict(groups=16, width_per_group=8)),
}

# The entry points that bcos.models.pretrained configures with the bcos_final recipe (and
# releases weights for); the other ImageNet names are bare constructors.
_BCOS_FINAL = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d")


def _architectures() -> Tuple[Architecture, ...]:
    out = []

    def add(name: str, build, version: str, **kw: Any) -> None:
        out.append(Architecture(name, build, family="resnet", version=version, **kw))

    for name, (block, layers, extra) in _IMAGENET.items():
        arch = dict(block=block, layers=layers, **extra)
        # Entry points with released weights come with the bcos_final norm; the others are
        # the bare bcos.models.resnet constructors (no config), NoBias(PositionNorm).
        norm = BNU_NO_BIAS if name in _BCOS_FINAL else PN_NO_BIAS
        add(name, _bcos_builder(**arch, norm=norm), "v2")
        add(f"standard_{name}", _standard_builder(**arch, **_STANDARD), "standard", in_channels=3)
        if block is BasicBlock or extra == {}:
            add(f"v1_{name}", _bcos_builder(**arch, **_V1), "v1", torch_prefix="0.")

    for depth in (50, 152):
        block, layers, _ = _IMAGENET[f"resnet{depth}"]
        build = _bcos_builder(
            block=block, layers=layers, norm=BNU_NO_BIAS, stochastic_depth_prob=0.1
        )
        add(f"resnet{depth}_long", build, "v2", resize=232)

    for name, (block, layers, extra) in _CIFAR.items():
        arch = dict(block=block, layers=layers, small_inputs=True, num_classes=10, norm=PN_NO_BIAS,
                    **{"inplanes": 16, **extra})
        add(name, _bcos_builder(**arch), "v2", input_size=32, resize=32, num_classes=10)
    return tuple(out)


ARCHITECTURES: Tuple[Architecture, ...] = _architectures()
