"""VGGs: B-cos v2 (plain and BNU), B-cos v1 and standard torchvision, one definition.

=========  =====================  ===================  ==========  =================================
variant    conv (3×3, p=1)        norm after conv      act / pool  classifier
=========  =====================  ===================  ==========  =================================
v2         ``BcosConv``           Identity or NoBias   - / avg     convs 7×7 p3 → 1×1 → 1×1 on the
                                  BNU (``*_bnu``)                  feature map, mean, −log(C−1)
v1         ``BcosConv`` M=2, /s   none                 - / avg     same convs (scale_fact 1000),
                                                                   mean, /T + b
standard   ``StandardConv``+bias  none or BatchNorm    ReLU / max  AdaptiveAvgPool(7, 7), flatten,
                                                                   Dense-ReLU-Dropout ×2, Dense
=========  =====================  ===================  ==========  =================================

B-cos VGGs have no adaptive pooling: the classifier convs run on whatever map comes out
(7×7 at 224 px; padding 3 keeps the size) and the class maps are averaged afterwards.

Flax names are the indices of the reference ``nn.Sequential``s, which differ per variant
because every module takes a slot: v2 ``[conv, norm, pool]`` (the norm slot exists even
as ``nn.Identity``), v1 ``[conv, pool]``, torchvision ``[conv, (bn), relu, pool]``. A
``norm``/``act`` of None takes no slot. Classifier: ``classifier/0, 1, 2`` (B-cos) or
``classifier/0, 3, 6`` (torchvision).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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
Cfg = Sequence[Union[int, str]]

__all__ = ["CFGS", "VGGFeatures", "VGGClassifier", "VGG", "adaptive_avg_pool", "ARCHITECTURES"]

CFGS = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "E": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
          512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}
_DEPTH_CFG = {11: "A", 13: "B", 16: "D", 19: "E"}


def _pool_matrix(n_in: int, n_out: int) -> np.ndarray:
    # torch adaptive pooling: output i averages inputs [floor(i·n/m), ceil((i+1)·n/m)).
    p = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        p[i, lo:hi] = 1.0 / (hi - lo)
    return p


def adaptive_avg_pool(x: Array, size: Tuple[int, int]) -> Array:
    """torch ``AdaptiveAvgPool2d(size)`` on NHWC: [N, H, W, C] -> [N, size[0], size[1], C].

    Written as two small averaging matrices, so it is exact for any H, W (also H < size,
    where torch repeats inputs).
    """
    ph = jnp.asarray(_pool_matrix(x.shape[1], size[0]), x.dtype)
    pw = jnp.asarray(_pool_matrix(x.shape[2], size[1]), x.dtype)
    return jnp.einsum("ih,jw,nhwc->nijc", ph, pw, x)


class VGGFeatures(nn.Module):
    """The ``features`` Sequential: ``cfg`` entries are conv widths or 'M' (2×2 pooling).

    [N, H, W, C_in] -> [N, H / 2^#M, W / 2^#M, cfg[-1]]. Submodules are named by their
    index in the reference ``nn.Sequential`` (see the module docstring).
    """

    cfg: Cfg
    conv: ModuleDef
    norm: Optional[ModuleDef] = None
    act: Optional[Callable] = None
    pool: str = "avg"

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        idx = 0
        for v in self.cfg:
            if v == "M":
                if self.pool == "avg":
                    x = avg_pool(x, 2)
                elif self.pool == "max":
                    x = nn.max_pool(x, (2, 2), strides=(2, 2))
                else:
                    raise ValueError(f"pool must be 'avg' or 'max', got {self.pool!r}")
                idx += 1
                continue
            x = self.conv(int(v), kernel_size=3, padding=1, name=str(idx))(x, explain)
            idx += 1
            if self.norm is not None:
                x = self.norm(name=str(idx))(x, train=train, explain=explain)
                idx += 1
            if self.act is not None:
                x = self.act(x)
                idx += 1
        return x


class VGGClassifier(nn.Module):
    """The ``classifier`` Sequential.

    head 'conv' (B-cos): [N, h, w, C] -> [N, h, w, num_classes] with convs
    ``0`` 7×7 p3 (width), ``1`` 1×1 (width), ``2`` 1×1 (num_classes).
    head 'linear' (torchvision): [N, D] -> [N, num_classes] with ``0`` Dense(width), act,
    Dropout, ``3`` Dense(width), act, Dropout, ``6`` Dense(num_classes).
    """

    num_classes: int
    width: int
    head: str
    conv: Optional[ModuleDef] = None
    act: Optional[Callable] = None
    dropout: float = 0.5
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        if self.head == "conv":
            x = self.conv(self.width, kernel_size=7, padding=3, name="0")(x, explain)
            x = self.conv(self.width, kernel_size=1, name="1")(x, explain)
            return self.conv(self.num_classes, kernel_size=1, name="2")(x, explain)
        if self.head != "linear":
            raise ValueError(f"head must be 'conv' or 'linear', got {self.head!r}")
        act = self.act if self.act is not None else (lambda h: h)
        for idx in (0, 3):
            x = act(StandardDense(self.width, dtype=self.dtype, name=str(idx))(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return StandardDense(self.num_classes, dtype=self.dtype, name="6")(x)


class VGG(nn.Module):
    """VGG for all variants (see the module docstring for what each injects).

    Input [N, H, W, C_in] (6-channel ``[x, 1-x]`` for B-cos, 3 normalised channels for
    standard; H, W multiples of 2^#pools) -> logits [N, num_classes].

    Attributes:
      cfg: conv widths and 'M' pools (``CFGS['A']`` is VGG-11).
      num_classes: output classes.
      conv: conv factory, torch-style ``kernel_size/padding`` (``BcosConv``,
        ``partial(BcosConv, max_out=2, scale_fact=1000)``,
        ``partial(StandardConv, use_bias=True)``);
        also builds the B-cos classifier convs.
      norm: norm after every conv, ``norm(name=...)`` (``norms.Identity`` keeps the v2 slot);
        None: no norm slot.
      act: activation after every conv/norm (ReLU for standard; it takes a slot); None: none.
      pool: 'avg' (B-cos) or 'max' (torchvision) for the 'M' entries.
      head: 'conv' (B-cos) or 'linear' (torchvision: adaptive pooling to 7×7, flatten in
        torch's channel-major order, MLP with dropout; needs rng 'dropout' when training).
      classifier_width: the 4096 of the classifier.
      dropout: dropout rate of the linear head.
      logit_bias: added to the B-cos logits; None: ``-log(num_classes - 1)``.
      logit_temperature: B-cos logits are divided by it (v1); None: no division.
      dtype: computation dtype of convs and dense layers (None: from the input).
      in_channels: channels the input must have (checked with an error naming the fix,
        e.g. ``add_inverse`` for RGB into a B-cos model); None: unchecked. ``models.create``
        sets it from the spec.
    """

    cfg: Cfg = CFGS["A"]
    num_classes: int = 1000
    conv: ModuleDef = BcosConv
    norm: Optional[ModuleDef] = norms.Identity
    act: Optional[Callable] = None
    pool: str = "avg"
    head: str = "conv"
    classifier_width: int = 4096
    dropout: float = 0.5
    logit_bias: Optional[float] = None
    logit_temperature: Optional[float] = None
    dtype: Any = None
    in_channels: Optional[int] = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        check_input(x, self.in_channels, "VGG")
        conv = partial(self.conv, dtype=self.dtype)
        features = VGGFeatures(
            tuple(self.cfg), conv, self.norm, self.act, self.pool, name="features"
        )
        x = features(x, train, explain)
        classifier = VGGClassifier(
            self.num_classes,
            self.classifier_width,
            self.head,
            conv,
            self.act,
            self.dropout,
            self.dtype,
            name="classifier",
        )
        if self.head == "linear":
            x = adaptive_avg_pool(x, (7, 7))
            x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # torch.flatten of NCHW
            return classifier(x, train, explain)
        # B-cos: class evidence maps first, pooled afterwards (docs/bcos.md §7).
        x = global_avg_pool(classifier(x, train, explain))
        bias = v2_logit_bias(self.num_classes) if self.logit_bias is None else self.logit_bias
        return LogitLayer(temperature=self.logit_temperature, bias=bias)(x)


_BNU = norms.no_bias(norms.BatchNormUncentered)
_V1 = dict(
    conv=partial(BcosConv, max_out=2, scale_fact=1000.0),
    norm=None,
    logit_temperature=0.1,  # VGG-11 config (v1 experiments/Imagenet/bcos)
    logit_bias=V1_IMAGENET_LOGIT_BIAS,
)
_STANDARD = dict(conv=partial(StandardConv, use_bias=True), act=nn.relu, pool="max", head="linear")


def _architectures() -> Tuple[Architecture, ...]:
    out = []
    for depth, key in _DEPTH_CFG.items():
        variants = {
            f"vgg{depth}": ("v2", dict(norm=norms.Identity)),
            f"vgg{depth}_bnu": ("v2", dict(norm=_BNU)),
            f"v1_vgg{depth}": ("v1", _V1),
            f"standard_vgg{depth}": ("standard", dict(_STANDARD, norm=None)),
            f"standard_vgg{depth}_bn": ("standard", dict(_STANDARD, norm=StandardBatchNorm)),
        }
        for name, (version, kw) in variants.items():
            out.append(Architecture(
                name,
                partial(VGG, cfg=CFGS[key], **kw),
                family="vgg",
                version=version,
                in_channels=3 if version == "standard" else 6,
                torch_prefix="0." if version == "v1" else "",
            ))
    return tuple(out)


ARCHITECTURES: Tuple[Architecture, ...] = _architectures()
