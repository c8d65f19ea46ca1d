"""B-cosified networks (Arya, Rao, Böhle, Schiele, NeurIPS 2024): the architectures that
``bcos_jax.bcosify`` turns a standard zoo model into, and the zoo entries ``bcosified_*``.

B-cosification converts a pretrained standard network instead of training a B-cos network
from scratch (shrebox/B-cosification: ``bcosify.py``, ``bcosify_vit.py``,
``bcos/experiments/ImageNet/{bcosification,vit_bcosification}/model.py``):

* the input is the 6-channel ``[x, 1-x]`` image, normalised with the ImageNet mean/std of
  each channel (``[μ, 1-μ]``, ``[σ, σ]``); the first layer's filters become ``[w, -w] / 2``,
  so that the network computes exactly what it computed on the 3-channel normalised image;
* every conv/linear layer is a B-cos layer with B = 2 whose filters are the pretrained ones,
  **not** normalised to unit norm (``BcosConv(normalize_weights=False)``), without bias;
  ViTs keep ``to_qkv`` a plain linear layer (as the B-cos ViTs do);
* CNNs: BatchNorm becomes uncentred and bias-free (running variance kept), the ReLUs stay,
  the stem max-pool becomes ``AvgPool2d(3, 2, 1)``, the classifier becomes a 1×1 B-cos conv
  applied *before* global average pooling, and a fixed logit bias ``-log(999)`` is added;
* ViTs: LayerNorms stay centred but bias-free with a detachable variance, GELU becomes
  ``x · Φ(x)`` with the gate Φ(x) detached in explanation mode (``detachable_gelu``), the
  head is applied to every token before the token average ("gap_reorder"), logit bias
  ``log(1/999)``.

**The input normalisation, folded.** The reference applies ``(u - μ) / σ`` to the encoded
image ``u = [x, 1-x]`` as a separate layer; that affine map leaves a constant offset
``-Σ W(u)·μ/σ`` in every explanation. Because ``u_c + u_{c+3} = 1`` for every valid input,
the same values are produced by the *linear* map ``z_j = (u_j - μ_j (u_c + u_{c+3})) / σ_j``
(``input_norm='linear'``, the default): identical outputs on every ``[x, 1-x]`` input (the
released checkpoints load with parity), but the network is now a dynamic linear function
of ``u`` without offset, so ``Σ u·W(u)`` plus the logit bias is the logit exactly. The
linear part of the first layer could absorb this 6×6 map into its filters, but not its
B-cos patch norm, which is the norm of the *normalised* patch; so the map stays a
parameter-free layer in front of it. ``input_norm='affine'`` is the reference's layer, for
inputs that are not ``[x, 1-x]``.

Flax names mirror the reference's module paths under its ``BcosifyNetwork`` (child
``model``), so a stripped checkpoint converts with ``convert.from_torch`` unchanged
(``model.conv1.linear.weight`` -> ``model/conv1/kernel``). The reference rebuilds every
``nn.Sequential`` as a ``BcosSequential`` from its children, which renames them to their
positions: torchvision DenseNet's ``features.conv0`` is ``features.0``, ``norm0`` ``1``,
``denseblockK`` ``2K + 2``, ``transitionK`` ``2K + 3`` (its ``norm``/``conv`` ``0``/``2``),
``norm5`` ``11``; ``BcosifiedDenseNet`` uses those names.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bcos_jax import constants, norms
from bcos_jax.constants import IMAGENET_MEAN, IMAGENET_STD, v2_logit_bias
from bcos_jax.layers import BcosConv, LogitLayer
from bcos_jax.models import densenet, resnet, vit
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
Factory = Callable[..., nn.Module]

__all__ = [
    "ARCHITECTURES",
    "Bcosified",
    "BcosifiedDenseNet",
    "IMAGENET_MEAN6",
    "IMAGENET_STD6",
    "SmallCNN",
    "TWINS",
    "detachable_gelu",
    "normalise_input",
]

#: The reference's ``IMAGENET_MEAN_ADDINVERSE`` / ``IMAGENET_STD_ADDINVERSE``.
IMAGENET_MEAN6 = tuple(IMAGENET_MEAN) + tuple(1.0 - m for m in IMAGENET_MEAN)
IMAGENET_STD6 = tuple(IMAGENET_STD) * 2
#: ``LogitLayer(logit_bias=-log(1000 - 1))`` of the CNNs, fixed whatever the class count.
CNN_LOGIT_BIAS = v2_logit_bias(1000)
#: ``logit_bias=log(1 / (1000 - 1))`` of the ViT configs (the same number).
VIT_LOGIT_BIAS = constants.VIT_LOGIT_BIAS


# ------------------------------------------------------------------------------ pieces
def normalise_input(x: Array, mean: Sequence[float], std: Sequence[float], mode: str) -> Array:
    """Per-channel ``(x - mean) / std`` of an encoded image [N, H, W, 2C] (NHWC).

    ``mode='affine'``: exactly that (the reference's ``transforms.Normalize``).
    ``mode='linear'``: ``(x_j - mean_j · (x_c + x_{c+C})) / std_j``, where c is the colour
    channel of j: equal to the affine map on every ``[x, 1-x]`` input (there
    ``x_c + x_{c+C} = 1``), but linear, so it adds no constant to the explanation.
    """
    c2 = x.shape[-1]
    if len(mean) != c2 or len(std) != c2:
        raise ValueError(
            f"input normalisation has {len(mean)} means and {len(std)} stds for {c2} channels"
        )
    mean_a = jnp.asarray(mean, x.dtype)
    std_a = jnp.asarray(std, x.dtype)
    if mode == "affine":
        return (x - mean_a) / std_a
    if mode != "linear":
        raise ValueError(f"input_norm must be 'linear' or 'affine', got {mode!r}")
    if c2 % 2:
        raise ValueError(
            f"input_norm='linear' needs the [x, 1-x] encoding (an even channel count), got {c2}"
        )
    half = c2 // 2
    ones = x[..., :half] + x[..., half:]  # = 1 for every valid input; keeps the map linear
    return (x - mean_a * jnp.concatenate([ones, ones], axis=-1)) / std_a


def detachable_gelu(x: Array, explain: bool = False) -> Array:
    """GELU written as ``Φ(x) · x``; in explanation mode the gate Φ(x) is a constant.

    Same values and training gradients as the exact (erf) GELU; with the gate detached the
    activation is a dynamic linear map, as the reference's ``MyGELU`` (bcosify_vit.py).
    """
    gate = 0.5 * (1.0 + jax.lax.erf(x / jnp.sqrt(jnp.asarray(2.0, x.dtype))))
    if explain:
        gate = jax.lax.stop_gradient(gate)
    return gate * x


detachable_gelu.takes_explain = True  # vit.apply_act passes the explain flag


class Bcosified(nn.Module):
    """The reference's ``BcosifyNetwork``: input normalisation, then the network ``model``.

    Input [N, H, W, 6] (``[x, 1-x]`` of an image in [0, 1]) -> logits [N, num_classes]
    (the logit bias is the inner network's ``LogitLayer``).

    Attributes:
      arch: factory of the network (called ``arch(num_classes=, dtype=, name='model')``).
      num_classes: outputs.
      mean, std: per-channel normalisation of the 6 input channels.
      input_norm: 'linear' (no explanation offset; see the module docstring) or 'affine'.
      dtype: computation dtype (None: from the input).
      in_channels: checked input channels (``models.create`` sets 6).
    """

    arch: Factory
    num_classes: int = 1000
    mean: Tuple[float, ...] = IMAGENET_MEAN6
    std: Tuple[float, ...] = IMAGENET_STD6
    input_norm: str = "linear"
    dtype: Any = None
    in_channels: Optional[int] = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        check_input(x, self.in_channels, "Bcosified")
        x = normalise_input(x, self.mean, self.std, self.input_norm)
        model = self.arch(num_classes=self.num_classes, dtype=self.dtype, name="model")
        return model(x, train, explain)


class BcosifiedDenseNet(nn.Module):
    """torchvision DenseNet-BC as the reference B-cosifies it (``DenseNetBcos``).

    ``features`` (children renamed to positions, see the module docstring) -> act ->
    1×1 ``conv`` 'classifier' -> global mean -> ``LogitLayer(logit_bias)``.
    [N, H, W, C] -> logits [N, num_classes]. ``stem_pool``: 'avg' (B-cosified) or 'max'.
    (The standard order act -> mean -> linear equals act -> 1×1 conv -> mean: the mean and
    a 1×1 conv commute, so B = 1 with biases is still the standard network.)
    """

    growth_rate: int = 32
    block_config: Sequence[int] = (6, 12, 24, 16)
    num_init_features: int = 64
    bn_size: int = 4
    num_classes: int = 1000
    conv: Factory = BcosConv
    norm: Factory = norms.no_bias(norms.BatchNormUncentered)
    act: Optional[Callable[[Array], Array]] = nn.relu
    stem_pool: str = "avg"
    logit_bias: Optional[float] = CNN_LOGIT_BIAS
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        conv = partial(self.conv, dtype=self.dtype)
        act = self.act if self.act is not None else (lambda y: y)
        nb = len(self.block_config)

        def features(y):
            y = conv(self.num_init_features, kernel_size=7, strides=2, padding=3, name="0")(
                y, explain
            )
            y = act(self.norm(name="1")(y, train=train, explain=explain))
            if self.stem_pool == "avg":
                y = avg_pool(y, 3, 2, 1)
            elif self.stem_pool == "max":
                y = nn.max_pool(y, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
            else:
                raise ValueError(f"stem_pool must be 'avg' or 'max', got {self.stem_pool!r}")
            c = self.num_init_features
            for i, n in enumerate(self.block_config):
                y = densenet.DenseBlock(
                    n,
                    self.growth_rate,
                    self.bn_size,
                    conv,
                    self.norm,
                    self.act,
                    name=str(4 + 2 * i),
                )(y, train, explain)
                c += n * self.growth_rate
                if i != nb - 1:
                    c //= 2
                    y = _Transition(c, conv, self.norm, act, name=str(5 + 2 * i))(y, train, explain)
            return self.norm(name=str(3 + 2 * nb))(y, train=train, explain=explain)

        from bcos_jax.models.common import Scope

        x = act(Scope(name="features")(features, x))
        x = conv(self.num_classes, kernel_size=1, name="classifier")(x, explain)
        x = global_avg_pool(x)
        return LogitLayer(bias=self.logit_bias)(x) if self.logit_bias is not None else x


class _Transition(nn.Module):
    """torchvision ``_Transition`` renamed by position: norm '0', act, conv '2', AvgPool(2)."""

    features: int
    conv: Factory
    norm: Factory
    act: Callable[[Array], Array]

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        x = self.act(self.norm(name="0")(x, train=train, explain=explain))
        x = self.conv(self.features, kernel_size=1, name="2")(x, explain)
        return avg_pool(x, 2)


class SmallCNN(nn.Module):
    """The quickstart CNN's topology (``bcos_small_cnn``) with injected layers.

    3×3 convs (stride 2 at the start of every stage but the first), each followed by a norm
    and ``act``; head 'linear': global mean then a ``StandardDense`` 'classifier' (the
    standard twin) or 'conv': a 1×1 ``conv`` 'classifier', mean, ``LogitLayer(logit_bias)``.
    [N, H, W, C] -> logits [N, num_classes].
    """

    num_classes: int = 10
    widths: Sequence[int] = (16, 32, 64)
    depth: int = 1
    conv: Factory = StandardConv
    norm: Factory = StandardBatchNorm
    act: Optional[Callable[[Array], Array]] = nn.relu
    head: str = "linear"
    logit_bias: Optional[float] = None
    dtype: Any = None
    in_channels: Optional[int] = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        check_input(x, self.in_channels, "SmallCNN")
        conv = partial(self.conv, dtype=self.dtype)
        i = 0
        for stage, width in enumerate(self.widths):
            for d in range(self.depth):
                stride = 2 if (stage > 0 and d == 0) else 1
                x = conv(width, kernel_size=3, strides=stride, padding=1, name=f"conv{i}")(
                    x, explain
                )
                x = self.norm(name=f"norm{i}")(x, train=train, explain=explain)
                if self.act is not None:
                    x = self.act(x)
                i += 1
        if self.head == "linear":
            return StandardDense(self.num_classes, dtype=self.dtype, name="classifier")(
                global_avg_pool(x)
            )
        if self.head != "conv":
            raise ValueError(f"head must be 'linear' or 'conv', got {self.head!r}")
        x = global_avg_pool(conv(self.num_classes, kernel_size=1, name="classifier")(x, explain))
        return LogitLayer(bias=self.logit_bias)(x) if self.logit_bias is not None else x


# ------------------------------------------------------------------------------ builders
def _layers(b: float, use_bias: bool) -> Dict[str, Any]:
    """Conv / ViT-linear factories and norms of a B-cosified model.

    ``use_bias=True`` keeps the biases of the source (the function-preservation stage);
    it needs ``b=1``, where a layer with raw filters is a plain linear layer.
    """
    if use_bias:
        if b != 1:
            raise ValueError(
                "use_bias=True is supported with b=1 only (the function-preservation stage), "
                f"got b={b}; "
                "the released B-cosified models have no biases"
            )
        return dict(
            conv=partial(StandardConv, use_bias=True),
            linear=StandardDense,
            bn=norms.BatchNormUncentered,
            ln=norms.LayerNorm,
            ln2d=norms.LayerNorm2d,
        )
    return dict(
        conv=partial(BcosConv, b=b, normalize_weights=False),
        linear=partial(vit.bcos_linear, b=b, normalize_weights=False),
        bn=norms.no_bias(norms.BatchNormUncentered),
        ln=norms.no_bias(norms.LayerNorm),
        ln2d=norms.no_bias(norms.LayerNorm2d),
    )


def _wrap(arch: Factory, input_norm: str, num_classes: int, dtype: Any) -> Bcosified:
    return Bcosified(arch=arch, num_classes=num_classes, input_norm=input_norm, dtype=dtype)


def _cnn_pool(stem_pool: str) -> Callable[[Array], Array]:
    if stem_pool not in ("avg", "max"):
        raise ValueError(
            f"stem_pool must be 'avg' (B-cosified) or 'max' (standard), got {stem_pool!r}"
        )
    return resnet.avg_pool_3x3 if stem_pool == "avg" else resnet.max_pool_3x3


def _resnet_builder(block, layers, extra):
    def build(
        *,
        b: float = 2.0,
        use_bias: bool = False,
        stem_pool: str = "avg",
        input_norm: str = "linear",
        logit_bias: Optional[float] = CNN_LOGIT_BIAS,
        num_classes: int = 1000,
        dtype: Any = None,
        **overrides: Any,
    ) -> Bcosified:
        lay = _layers(b, use_bias)
        arch = partial(
            resnet.ResNet,
            **{"block": block, "layers": layers, **extra, **overrides},
            conv=lay["conv"],
            norm=lay["bn"],
            act=nn.relu,
            pool=_cnn_pool(stem_pool),
            dense=None,
            logit_bias=0.0 if logit_bias is None else logit_bias,
        )
        return _wrap(arch, input_norm, num_classes, dtype)

    return build


def _densenet_builder(growth_rate, block_config, num_init_features):
    def build(
        *,
        b: float = 2.0,
        use_bias: bool = False,
        stem_pool: str = "avg",
        input_norm: str = "linear",
        logit_bias: Optional[float] = CNN_LOGIT_BIAS,
        num_classes: int = 1000,
        dtype: Any = None,
        **overrides: Any,
    ) -> Bcosified:
        lay = _layers(b, use_bias)
        _cnn_pool(stem_pool)
        shape = dict(
            growth_rate=growth_rate, block_config=block_config, num_init_features=num_init_features
        )
        arch = partial(
            BcosifiedDenseNet,
            **{**shape, **overrides},
            conv=lay["conv"],
            norm=lay["bn"],
            stem_pool=stem_pool,
            logit_bias=logit_bias,
        )
        return _wrap(arch, input_norm, num_classes, dtype)

    return build


def _vit_builder(arch_kw):
    def build(
        *,
        b: float = 2.0,
        use_bias: bool = False,
        pool_after_head: bool = True,
        input_norm: str = "linear",
        logit_bias: Optional[float] = VIT_LOGIT_BIAS,
        num_classes: int = 1000,
        dtype: Any = None,
        **overrides: Any,
    ) -> Bcosified:
        lay = _layers(b, use_bias)
        arch = partial(
            vit.SimpleViT,
            **{**arch_kw, **overrides},
            linear=lay["linear"],
            conv=lay["conv"],
            norm=lay["ln"],
            norm2d=lay["ln2d"],
            act=detachable_gelu,
            logit_layer=logit_bias is not None,
            logit_bias=logit_bias,
            pool_after_head=pool_after_head,
        )
        return _wrap(arch, input_norm, num_classes, dtype)

    return build


def _small_builder(**preset):
    def build(
        *,
        b: float = 2.0,
        use_bias: bool = False,
        input_norm: str = "linear",
        logit_bias: Any = "v2",
        num_classes: int = 10,
        dtype: Any = None,
        **overrides: Any,
    ) -> Bcosified:
        lay = _layers(b, use_bias)
        # 'v2': the v2 prior -log(C - 1) (for ImageNet the reference's -log(999)); None: none.
        bias = v2_logit_bias(num_classes) if logit_bias == "v2" else logit_bias
        arch = partial(
            SmallCNN,
            **{**preset, **overrides},
            conv=lay["conv"],
            norm=lay["bn"],
            act=nn.relu,
            head="conv",
            logit_bias=bias,
        )
        return _wrap(arch, input_norm, num_classes, dtype)

    return build


# ------------------------------------------------------------------------------ zoo
def _densenet_rename(
    path: Tuple[str, ...], overrides: Dict[str, Any], block_config: Sequence[int]
) -> Tuple[str, ...]:
    """Standard DenseNet module path -> the B-cosified (positional) one, without 'model'."""
    if not path or path[0] != "features":
        return path
    head, rest = path[1], path[2:]
    nb = len(overrides.get("block_config", block_config))
    if head == "conv0":
        return ("features", "0") + rest
    if head == "norm0":
        return ("features", "1") + rest
    if head == "norm5":  # torchvision's name whatever the number of blocks
        return ("features", str(3 + 2 * nb)) + rest
    if head.startswith("denseblock"):
        return ("features", str(2 + 2 * int(head[len("denseblock") :]))) + rest
    if head.startswith("transition"):
        inner = {"norm": "0", "conv": "2"}.get(rest[0], rest[0]) if rest else None
        return ("features", str(3 + 2 * int(head[len("transition") :]))) + (
            (inner,) + rest[1:] if rest else ()
        )
    return path


def _identity(path: Tuple[str, ...], overrides: Dict[str, Any]) -> Tuple[str, ...]:
    return path


#: standard zoo name -> (bcosified zoo name, rename): ``rename(module_path, overrides)`` maps a
#: standard module path to the B-cosified one under 'model' (``overrides``: the models.create
#: overrides both were built with, e.g. a shorter ``block_config``).
TWINS: Dict[str, Tuple[str, Callable[[Tuple[str, ...]], Tuple[str, ...]]]] = {}

# The zoo entries (models.registry); their parameter counts, release and notes: models/zoo.py.
_ARCHITECTURES = []


def _add(name: str, build, family: str, version: str = "v2", **kw: Any) -> None:
    _ARCHITECTURES.append(Architecture(name, build, family=family, version=version, **kw))


for _name, (_block, _layers_n, _extra) in resnet._IMAGENET.items():
    _add(f"bcosified_{_name}", _resnet_builder(_block, _layers_n, _extra), "resnet")
    TWINS[f"standard_{_name}"] = (f"bcosified_{_name}", _identity)
# The same architecture as bcosified_resnet50, B-cosified from other source weights.
_add("bcosified_resnet50_v1", _resnet_builder(*resnet._IMAGENET["resnet50"]), "resnet")

for _depth, (_g, _cfg, _init) in densenet._IMAGENET_ARCHS.items():
    _n = f"densenet{_depth}"
    _add(f"bcosified_{_n}", _densenet_builder(_g, _cfg, _init), "densenet")
    TWINS[f"standard_{_n}"] = (
        f"bcosified_{_n}",
        functools.partial(_densenet_rename, block_config=_cfg),
    )

for _n, *_rest in vit._BCOS_MODELS:
    _size = _rest[0]
    _add(f"bcosified_{_n}", _vit_builder(vit._arch(_size, "vitc" in _n)), "vit")
    TWINS[f"standard_{_n}"] = (f"bcosified_{_n}", _identity)

_add(
    "standard_small_cnn",
    SmallCNN,
    "small",
    version="standard",
    input_size=32,
    resize=32,
    num_classes=10,
    in_channels=3,
)
_add("bcosified_small_cnn", _small_builder(), "small", input_size=32, resize=32, num_classes=10)
TWINS["standard_small_cnn"] = ("bcosified_small_cnn", _identity)

ARCHITECTURES: Tuple[Architecture, ...] = tuple(_ARCHITECTURES)
