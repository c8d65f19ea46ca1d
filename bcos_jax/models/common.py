"""Pieces shared by the model families: input checks, pooling, stochastic depth, factories.

Conventions every family follows:

* NHWC input; B-cos models take the 6-channel encoding ``[x, 1-x]`` (``layers.add_inverse``),
  standard models 3 channels normalised with the ImageNet mean/std. Every model's
  ``__call__`` starts with ``check_input`` (rank, float dtype, ``in_channels``), so a wrong
  input is a ValueError naming the fix instead of a parameter-shape error deep inside Flax.
* ``model.apply(variables, x, train=False, explain=False)`` -> logits [N, C]; training mode
  needs ``mutable=['batch_stats']`` where the model has batch statistics, and an rng
  stream ``'dropout'`` where it has stochastic depth.
* Submodule names mirror the PyTorch reference's module paths (``layer1/0/conv1`` for
  ``layer1.0.conv1``), so that state_dicts convert generically (``bcos_jax.convert``) and
  hidden units can be explained by the reference's layer names.
* Convs and norms are injected (``conv``, ``norm`` factory arguments), so one family file
  builds the B-cos, the v1 and the standard variant.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

from bcos_jax.constants import IMAGENET_MEAN, IMAGENET_STD  # re-exported

Array = jax.Array

__all__ = [
    "StandardConv",
    "StandardBatchNorm",
    "StandardDense",
    "StochasticDepth",
    "avg_pool",
    "check_input",
    "global_avg_pool",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]



def check_input(x: Any, in_channels: Optional[int], model: str) -> None:
    """Refuse an input ``model`` cannot take with a ValueError that names the problem and the fix.

    Called first thing in every zoo model's ``__call__`` (``model`` is the class name for the
    message). Only static properties are checked (rank, dtype, channels), so it works the
    same eagerly, under ``jit``/``vmap``/``eval_shape`` and at ``init``. ``in_channels`` None
    (a model class built directly, not by ``models.create``) skips the channel check.
    """
    shape = tuple(getattr(x, "shape", ()))
    dtype = getattr(x, "dtype", None)
    if len(shape) != 4:
        hint = "; for a single image add the batch axis: x[None]" if len(shape) == 3 else ""
        raise ValueError(
            f"{model} expects an NHWC batch [N, H, W, C], got an input of shape {shape}{hint}"
        )
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        hint = ""
        if dtype is not None and jnp.issubdtype(dtype, jnp.integer):
            hint = (
                "; scale integer (uint8) images to floats in [0, 1] first: "
                "x.astype(jnp.float32) / 255"
            )
        raise ValueError(f"{model} expects a floating-point input, got dtype {dtype}{hint}")
    c = shape[-1]
    if in_channels is None or c == in_channels:
        return
    if in_channels == 6 and c == 3:
        fix = (
            "a B-cos model takes the 6-channel encoding [r, g, b, 1-r, 1-g, 1-b] of an image in "
            "[0, 1]: pass bcos_jax.add_inverse(x) (bcos_jax.layers.add_inverse) of the RGB batch, "
            "not x itself"
        )
    elif in_channels == 3 and c == 6:
        fix = (
            "a standard model takes 3-channel ImageNet mean/std-normalised images, not the "
            "B-cos [x, 1-x] encoding"
        )
    else:
        fix = (
            f"give {in_channels}-channel input, or build the model for {c} channels with "
            f"models.create(..., in_channels={c})"
        )
    raise ValueError(
        f"{model} expects {in_channels} input channels, got {c} (input shape {shape}); {fix}"
    )


def avg_pool(x: Array, window: int, stride: Optional[int] = None, padding: int = 0) -> Array:
    """torch ``AvgPool2d(window, stride, padding)`` with ``count_include_pad=True`` (NHWC)."""
    stride = window if stride is None else stride
    return nn.avg_pool(
        x,
        (window, window),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        count_include_pad=True,
    )


def global_avg_pool(x: Array) -> Array:
    """[N, H, W, C] -> [N, C] (mean over all positions)."""
    return jnp.mean(x, axis=(1, 2))


class StochasticDepth(nn.Module):
    """torchvision ``StochasticDepth(p, 'row')``: drop the whole residual branch per sample.

    Needs an rng stream 'dropout' when ``train`` and ``p > 0``; identity otherwise.
    """

    p: float

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        if not train or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
        # p = 1 always drops; torch skips the rescaling then (instead of 0 / 0 = nan).
        return x * mask.astype(x.dtype) / keep if keep > 0 else x * mask.astype(x.dtype)


class StandardConv(nn.Module):
    """Plain conv with PyTorch-style explicit padding, for the standard (non-B-cos) models.

    Same call signature and parameter layout as ``BcosConv`` (``kernel`` HWIO, optional
    ``bias``; ``explain`` is accepted and ignored), so family files take either through
    their ``conv`` argument and state_dicts convert the same way.
    """

    features: int
    kernel_size: Any
    strides: Any = 1
    padding: Any = 0
    kernel_dilation: Any = 1
    feature_group_count: int = 1
    use_bias: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

    @nn.compact
    def __call__(self, x: Array, explain: bool = False) -> Array:
        from bcos_jax.layers import _linear_and_norm, _pair, conv_padding

        del explain
        ks = _pair(self.kernel_size, "kernel_size")
        cin = x.shape[-1]
        kernel = self.param(
            "kernel",
            self.kernel_init,
            (*ks, cin // self.feature_group_count, self.features),
            self.param_dtype,
        )
        x, kernel = promote_dtype(x, kernel, dtype=self.dtype)
        # The same lowering as BcosConv's linear part (1x1 convs as matmuls, space-to-depth
        # input gradients of strided stems), so that B-cos and standard models differ only
        # in the B-cos transform itself (benchmarks/bcos_overhead.py).
        y, _ = _linear_and_norm(
            x,
            kernel,
            _pair(self.strides, "strides"),
            conv_padding(self.padding),
            _pair(self.kernel_dilation, "kernel_dilation"),
            self.feature_group_count,
            need_norm=False,
        )
        if self.use_bias:
            y = y + self.param(
                "bias", nn.initializers.zeros, (self.features,), self.param_dtype
            ).astype(y.dtype)
        return y


class StandardDense(nn.Module):
    """Plain dense layer (``kernel`` [in, out], ``bias``) taking and ignoring ``explain``."""

    features: int
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: Array, explain: bool = False) -> Array:
        del explain
        kernel = self.param(
            "kernel", self.kernel_init, (x.shape[-1], self.features), self.param_dtype
        )
        x, kernel = promote_dtype(x, kernel, dtype=self.dtype)
        y = jnp.matmul(x, kernel)
        if self.use_bias:
            y = y + self.param(
                "bias", nn.initializers.zeros, (self.features,), self.param_dtype
            ).astype(y.dtype)
        return y


# torch BatchNorm2d numerics (centred, unbiased running variance, momentum 0.1, eps 1e-5).
def StandardBatchNorm(**kwargs):
    from bcos_jax.norms import BatchNorm

    return BatchNorm(**kwargs)


class Scope(nn.Module):
    """A named level of the parameter tree with no computation of its own (a torch container).

    ``fn`` is a plain function (not a method: Flax would re-enter the method's own module)
    whose layers become children of this scope, so a forward pass can be written flat while
    its parameters sit at the reference's module paths.
    """

    @nn.compact
    def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)


partial = functools.partial
Pair = Tuple[int, int]


def with_remat(factory: Any) -> Any:
    """``factory`` with ``remat=True`` on every B-cos layer it builds (anything else as is).

    Walks classes, ``functools.partial`` chains and their keyword arguments (e.g. Inception's
    ``conv_block=partial(BasicConv2d, conv=partial(BcosConv, ...))``); a function that builds
    a B-cos layer says so with a ``builds_bcos_layer = True`` attribute (``vit.bcos_linear``).
    Used by ``models.create(name, remat=True)``.
    """
    from bcos_jax.layers import BcosConv, BcosDense

    if isinstance(factory, type) and issubclass(factory, (BcosConv, BcosDense)):
        return functools.partial(factory, remat=True)
    if getattr(factory, "builds_bcos_layer", False):
        return functools.partial(factory, remat=True)
    if isinstance(factory, functools.partial):
        func = with_remat(factory.func)
        keywords = {k: with_remat(v) for k, v in factory.keywords.items()}
        if func is factory.func and all(keywords[k] is v for k, v in factory.keywords.items()):
            return factory
        return functools.partial(func, *factory.args, **keywords)
    return factory
