"""The B-cos transform as Flax Linen layers (NHWC activations, HWIO / [in, out] kernels).

    B-cos(x; w) = |cos(x, ŵ)|^(B-1) · ŵᵀx,     ŵ = w / ‖w‖

Every layer takes a static ``explain`` flag. In explanation mode the dynamic scale
``|cos|^(B-1)`` (and the patch norm inside it) is wrapped in ``jax.lax.stop_gradient``,
so that the input gradient of a stack of such layers is exactly the row of the
dynamic linear map W(x) (BCOS_REFERENCE §1.2). Nothing is stored on the module: the
mode is an argument, so it is part of the trace and cannot leak between calls.

Numerics follow the PyTorch reference exactly (BCOS_REFERENCE §8): no epsilon in the
weight normalisation, ``sqrt(Σ_window Σ_c x² + 1e-6)`` as the conv patch norm,
``‖x‖ + 1e-12`` for dense layers, ``(|cos| + 1e-6)^(B-1)`` for B ≠ 2.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

Array = jax.Array
IntOrPair = Union[int, Sequence[int]]
Padding = Union[int, Sequence[int], Sequence[Tuple[int, int]]]

__all__ = [
    "BcosConv",
    "BcosDense",
    "LogitLayer",
    "add_inverse",
    "conv_padding",
    "dynamic_scale",
    "patch_norm",
    "v1_scale",
]

# Kaiming-normal, fan_out: what the reference constructors use. Only the direction of a
# filter matters (it is normalised at use), so this choice affects training, not maths.
default_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def add_inverse(x: Array, axis: int = -1) -> Array:
    """Encode an image in [0, 1] as ``[x, 1 - x]`` along ``axis``: [N, H, W, 3] -> [N, H, W, 6].

    The extra channels make black and white pixels equally "visible" to a B-cos layer (a
    zero pixel has no norm and could not contribute otherwise) and let the colour of an
    explanation be read back from W(x) (``visualize.gradient_to_image``).
    """
    x = jnp.asarray(x)
    if x.shape[axis] != 3:
        raise ValueError(
            f"add_inverse expects 3 colour channels on axis {axis}, got shape {x.shape}; "
            "the B-cos input encoding is [r, g, b, 1-r, 1-g, 1-b]"
        )
    return jnp.concatenate([x, 1.0 - x], axis=axis)


def _pair(v: IntOrPair, name: str) -> Tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(i) for i in v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {v}")
    return v  # type: ignore[return-value]


def conv_padding(padding: Padding) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """PyTorch-style explicit padding -> ((top, bottom), (left, right)).

    ``p`` pads all sides by p; ``(ph, pw)`` pads symmetrically per axis; pairs of pairs are
    taken as given. Strings such as 'SAME' are refused: for stride-2 convs they pad
    asymmetrically and would silently break parity with the reference weights.
    """
    if isinstance(padding, str):
        raise ValueError(
            f"padding={padding!r}: give explicit PyTorch-style padding (an int, (ph, pw) or "
            "((top, bottom), (left, right))); 'SAME'/'VALID' are not supported"
        )
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    padding = tuple(padding)
    if len(padding) == 2 and all(isinstance(p, int) for p in padding):
        return ((padding[0], padding[0]), (padding[1], padding[1]))
    if len(padding) == 2 and all(len(p) == 2 for p in padding):
        return tuple((int(a), int(b)) for a, b in padding)  # type: ignore[return-value]
    raise ValueError(f"cannot interpret padding {padding!r}")


def v1_scale(kernel_size: IntOrPair, in_features: int, scale_fact: float = 100.0) -> float:
    """The v1 (CVPR) output divisor ``k · sqrt(Cin) / scale_fact`` (k = sqrt(kh·kw))."""
    kh, kw = _pair(kernel_size, "kernel_size")
    return math.sqrt(kh * kw) * math.sqrt(in_features) / scale_fact


def patch_norm(
    x: Array,
    kernel_size: Tuple[int, int],
    strides: Tuple[int, int],
    padding: Tuple[Tuple[int, int], Tuple[int, int]],
    dilation: Tuple[int, int] = (1, 1),
    groups: int = 1,
) -> Array:
    """‖patch‖ for every output position of a conv: ``sqrt(window_sum(Σ_c x²) + 1e-6)``.

    x: [N, H, W, C] -> [N, H', W', G] (G = groups; channels summed within each group).
    One reduce_window over a channel-summed map, instead of a conv with a ones kernel.
    Accumulated in float32 whatever the input dtype.
    """
    n, h, w, c = x.shape
    sq = jnp.square(x.astype(jnp.float32))
    if groups == 1:
        sq = jnp.sum(sq, axis=-1, keepdims=True)
    else:
        sq = jnp.sum(sq.reshape(n, h, w, groups, c // groups), axis=-1)
    window = jax.lax.reduce_window(
        sq,
        0.0,
        jax.lax.add,
        window_dimensions=(1, *kernel_size, 1),
        window_strides=(1, *strides, 1),
        padding=((0, 0), *padding, (0, 0)),
        window_dilation=(1, *dilation, 1),
    )
    return jnp.sqrt(window + 1e-6)


def dynamic_scale(lin: Array, norm: Array, b: float, explain: bool) -> Array:
    """The dynamic scale ``|cos|^(B-1)`` for ``cos = lin / norm`` (B != 1).

    In explanation mode the scale is a constant for autodiff, which turns the layer into
    the linear map ``x -> scale · ŵᵀx`` whose gradient is the explanation.
    """
    if explain:
        lin = jax.lax.stop_gradient(lin)
        norm = jax.lax.stop_gradient(norm)
    norm = norm.astype(lin.dtype)
    if b == 2:
        return jnp.abs(lin) / norm
    return jnp.power(jnp.abs(lin / norm) + 1e-6, b - 1)


def _max_out(lin: Array, features: int, max_out: int) -> Array:
    # Output j is the max over linear units j*M + m (consecutive units), as the reference.
    if max_out == 1:
        return lin
    return jnp.max(lin.reshape(*lin.shape[:-1], features, max_out), axis=-1)


def _unit_norm(kernel: Array, axes: Tuple[int, ...]) -> Array:
    # No epsilon: the reference divides by the plain L2 norm (an all-zero filter is a bug).
    return kernel / jnp.sqrt(jnp.sum(jnp.square(kernel), axis=axes, keepdims=True))


class BcosConv(nn.Module):
    """B-cos 2-D convolution.

    Input [N, H, W, Cin] -> output [N, H', W', features]. Parameter ``kernel`` has HWIO
    shape ``(kh, kw, Cin // groups, features * max_out)`` (``flax.linen.Conv`` layout) and
    is normalised per output filter at every call.

    Attributes:
      features: output channels (after MaxOut).
      kernel_size: int or (kh, kw).
      strides, kernel_dilation: int or pair.
      padding: PyTorch-style symmetric padding (see ``conv_padding``).
      feature_group_count: groups; the patch norm is then computed per group.
      b: the alignment exponent B. B=1 is the plain linear map with unit-norm filters.
      max_out: number of linear units per output (MaxOut).
      scale: v1 output divisor; ``scale_fact`` computes it as ``v1_scale`` instead.
      dtype: computation dtype (None: from inputs); param_dtype: parameter dtype.
    """

    features: int
    kernel_size: IntOrPair
    strides: IntOrPair = 1
    padding: Padding = 0
    kernel_dilation: IntOrPair = 1
    feature_group_count: int = 1
    b: float = 2.0
    max_out: int = 1
    scale: Optional[float] = None
    scale_fact: Optional[float] = None
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Any = default_kernel_init

    @nn.compact
    def __call__(self, x: Array, explain: bool = False) -> Array:
        if x.ndim != 4:
            raise ValueError(f"BcosConv expects NHWC input [N, H, W, C], got shape {x.shape}")
        if self.max_out < 1:
            raise ValueError(f"max_out must be >= 1, got {self.max_out}")
        cin, groups = x.shape[-1], self.feature_group_count
        units = self.features * self.max_out
        if cin % groups or self.features % groups:
            raise ValueError(
                f"in channels ({cin}) and features ({self.features}) must be divisible by "
                f"feature_group_count ({groups})"
            )
        ks = _pair(self.kernel_size, "kernel_size")
        strides = _pair(self.strides, "strides")
        dilation = _pair(self.kernel_dilation, "kernel_dilation")
        padding = conv_padding(self.padding)

        kernel = self.param("kernel", self.kernel_init, (*ks, cin // groups, units), self.param_dtype)
        w = _unit_norm(kernel, (0, 1, 2))
        x, w = promote_dtype(x, w, dtype=self.dtype)
        lin = jax.lax.conv_general_dilated(
            x,
            w,
            window_strides=strides,
            padding=padding,
            rhs_dilation=dilation,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups,
        )
        lin = _max_out(lin, self.features, self.max_out)
        if self.b == 1:
            out = lin
        else:
            norm = patch_norm(x, ks, strides, padding, dilation, groups)
            if groups > 1:
                # Output channel o belongs to group o // (features / groups).
                norm = jnp.repeat(norm, self.features // groups, axis=-1)
            out = dynamic_scale(lin, norm, self.b, explain) * lin
        return self._apply_scale(out, ks, cin)

    def _apply_scale(self, out: Array, ks: Tuple[int, int], cin: int) -> Array:
        if self.scale is not None and self.scale_fact is not None:
            raise ValueError("give either scale or scale_fact, not both")
        if self.scale_fact is not None:
            return out / v1_scale(ks, cin, self.scale_fact)
        if self.scale is not None:
            return out / self.scale
        return out


class BcosDense(nn.Module):
    """B-cos linear layer: [..., Cin] -> [..., features]; ``kernel`` is ``[Cin, features * max_out]``.

    The input norm is ``‖x‖ + 1e-12`` (epsilon outside the sqrt, as the reference's BcosLinear).
    """

    features: int
    b: float = 2.0
    max_out: int = 1
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: Array, explain: bool = False) -> Array:
        if self.max_out < 1:
            raise ValueError(f"max_out must be >= 1, got {self.max_out}")
        units = self.features * self.max_out
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], units), self.param_dtype)
        w = _unit_norm(kernel, (0,))
        x, w = promote_dtype(x, w, dtype=self.dtype)
        lin = _max_out(jnp.matmul(x, w), self.features, self.max_out)
        if self.b == 1:
            return lin
        norm = jnp.linalg.norm(x.astype(jnp.float32), axis=-1, keepdims=True) + 1e-12
        return dynamic_scale(lin, norm, self.b, explain) * lin


class LogitLayer(nn.Module):
    """``x / temperature + bias`` (either may be None). No parameters.

    v2 models use ``bias = -log(C - 1)``; v1 ``temperature = T`` and ``bias = log(0.01/0.99)``.
    """

    temperature: Optional[float] = None
    bias: Optional[float] = None

    def __call__(self, x: Array) -> Array:
        if self.temperature is not None:
            x = x / self.temperature
        if self.bias is not None:
            x = x + self.bias
        return x
