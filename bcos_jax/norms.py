"""Normalisation layers of B-cos networks (docs/bcos.md §6), NHWC, feature axis last.

Two families:

* **Uncentred** norms divide by ``sqrt(var + eps)`` (the ordinary, mean-subtracted, biased
  variance) but never subtract the mean, so the layer stays a (dynamic) linear map.
* **Centred** norms subtract the mean as usual; the mean is linear in x and kept in the
  gradient.

In explanation mode every *variance* is ``stop_gradient``-ed (it is a dynamic scale like
the B-cos |cos|), the mean is not. Batch-statistics norms in eval mode divide by running
statistics, which are constants anyway.

Every norm is called as ``norm(x, train=False, explain=False)`` so that models can inject
any of them (``norm_layer`` argument of the model families). Parameters are ``scale``
(PyTorch ``weight``) and ``bias``; ``use_bias=False`` is the reference's ``NoBias``
wrapper and ``use_scale=use_bias=False`` its ``Unaffine``.

Batch statistics under ``jax.jit`` over a sharded batch are computed over the *global*
batch automatically (GSPMD inserts the all-reduce). Inside ``shard_map`` / ``pmap`` pass
``axis_name`` to average over devices explicitly.
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bcos_jax.layers import accum_dtype

Array = jax.Array

__all__ = [
    "BatchNormUncentered",
    "AllNormUncentered",
    "GroupNormUncentered",
    "InstanceNormUncentered",
    "LayerNorm2dUncentered",
    "PositionNormUncentered",
    "BatchNorm",
    "AllNorm",
    "GroupNorm",
    "InstanceNorm",
    "LayerNorm2d",
    "PositionNorm",
    "LayerNorm",
    "Identity",
    "no_bias",
    "unaffine",
]


def no_bias(norm_cls):
    """The reference's ``NoBias(norm)``: the same norm without the additive bias."""
    return functools.partial(norm_cls, use_bias=False)


def unaffine(norm_cls):
    """The reference's ``Unaffine(norm)``: neither scale nor bias."""
    return functools.partial(norm_cls, use_scale=False, use_bias=False)


class _Affine(nn.Module):
    """Shared fields and the affine tail of every norm."""

    epsilon: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True
    param_dtype: Any = jnp.float32

    def _affine(self, y: Array, shape: Tuple[int, ...]) -> Array:
        if self.use_scale:
            y = y * self.param("scale", nn.initializers.ones, shape, self.param_dtype).astype(
                y.dtype
            )
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, shape, self.param_dtype).astype(
                y.dtype
            )
        return y


def _moments(x: Array, axes, *, centred: bool, explain: bool, axis_name=None):
    """(mean or None, biased variance) over ``axes`` in ``accum_dtype`` (at least float32);
    variance detached if ``explain``."""
    x32 = x.astype(accum_dtype(x.dtype))
    xs = jax.lax.stop_gradient(x32) if explain else x32
    mean_s = jnp.mean(xs, axes, keepdims=True)
    mean_sq = jnp.mean(jnp.square(xs), axes, keepdims=True)
    if axis_name is not None:
        mean_s, mean_sq = jax.lax.pmean((mean_s, mean_sq), axis_name)
    # E[x²] - E[x]² loses precision for large means; use it only when averaging over
    # devices needs the two first moments, else the two-pass form.
    if axis_name is None:
        var = jnp.mean(jnp.square(xs - mean_s), axes, keepdims=True)
    else:
        var = jnp.maximum(mean_sq - jnp.square(mean_s), 0.0)
    mean = None
    if centred:
        mean = jnp.mean(x32, axes, keepdims=True)  # not detached: the mean is linear in x
        if axis_name is not None:
            mean = jax.lax.pmean(mean, axis_name)
    return mean, var


class _BatchStatsNorm(_Affine):
    """Norm with running statistics: per channel ('batch') or over everything ('all')."""

    momentum: float = 0.1
    axis_name: Optional[str] = None
    _reduce_all: ClassVar[bool] = False
    _centred: ClassVar[bool] = False

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        feats = 1 if self._reduce_all else x.shape[-1]
        axes = tuple(range(x.ndim)) if self._reduce_all else tuple(range(x.ndim - 1))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((feats,), jnp.float32))
        ra_mean = (
            self.variable("batch_stats", "mean", lambda: jnp.zeros((feats,), jnp.float32))
            if self._centred
            else None
        )
        if train:
            if self._centred and explain:
                raise ValueError(
                    f"{type(self).__name__}: a centred batch norm is only explainable in eval "
                    "mode (train=False), as in the reference"
                )
            mean, var = _moments(
                x, axes, centred=self._centred, explain=explain, axis_name=self.axis_name
            )
            var = var.reshape(feats)
            mean = None if mean is None else mean.reshape(feats)
            if not self.is_initializing():
                m = self.momentum
                ra_var.value = (1 - m) * ra_var.value + m * self._running_var(var, x, axes)
                if self._centred:
                    ra_mean.value = (1 - m) * ra_mean.value + m * jax.lax.stop_gradient(mean)
        else:
            var = ra_var.value
            mean = ra_mean.value if self._centred else None
        y = x.astype(accum_dtype(x.dtype))
        if mean is not None:
            y = y - mean
        y = y / jnp.sqrt(var + self.epsilon)
        return self._affine(y.astype(x.dtype), (feats,))

    def _running_var(self, var: Array, x: Array, axes) -> Array:
        var = jax.lax.stop_gradient(var)
        if not self._centred:
            return var  # the uncentred reference stores the *biased* batch variance
        # torch's centred BN stores the unbiased estimate n/(n-1)·var.
        n = 1
        for a in axes:
            n *= x.shape[a]
        if self.axis_name is not None:
            n *= jax.lax.psum(1, self.axis_name)
        return var * n / max(n - 1, 1)


class BatchNormUncentered(_BatchStatsNorm):
    """Uncentred batch norm: ``scale · x / sqrt(var_batch + eps) (+ bias)``; biased running var."""


class AllNormUncentered(_BatchStatsNorm):
    """Uncentred AllNorm: variance over the whole [N, H, W, C] tensor; scale/bias of shape (1,)."""

    _reduce_all: ClassVar[bool] = True


class BatchNorm(_BatchStatsNorm):
    """Centred batch norm (torch ``BatchNorm2d`` numerics); explainable only in eval mode."""

    _centred: ClassVar[bool] = True


class AllNorm(_BatchStatsNorm):
    """Centred AllNorm (the reference's BatchNorm3d on [N, 1, C, H, W]); explainable in eval."""

    _reduce_all: ClassVar[bool] = True
    _centred: ClassVar[bool] = True


class _SampleNorm(_Affine):
    """Per-sample norm over channel groups (and optionally space); no running statistics."""

    _over_space: ClassVar[bool] = True
    _centred: ClassVar[bool] = False
    _groups: ClassVar[str] = "one"  # 'one', 'per_channel' or 'given' (field num_groups)

    def _num_groups(self, c: int) -> int:
        if self._groups == "one":
            return 1
        if self._groups == "per_channel":
            return c
        if self.num_groups is None:
            raise ValueError(f"{type(self).__name__} needs num_groups")
        return self.num_groups

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        del train  # per-sample statistics are the same in both modes
        c = x.shape[-1]
        g = self._num_groups(c)
        if c % g:
            raise ValueError(f"{type(self).__name__}: {c} channels not divisible into {g} groups")
        xg = x.reshape(*x.shape[:-1], g, c // g)
        # Statistics over the channels of a group (last axis) and, unless position-wise,
        # over all spatial/token axes (1 .. ndim-2 of the grouped tensor).
        axes = (-1,) if not self._over_space else tuple(range(1, xg.ndim - 2)) + (-1,)
        mean, var = _moments(xg, axes, centred=self._centred, explain=explain)
        y = xg.astype(accum_dtype(xg.dtype))
        if mean is not None:
            y = y - mean
        y = (y / jnp.sqrt(var + self.epsilon)).reshape(x.shape)
        return self._affine(y.astype(x.dtype), (c,))


class GroupNormUncentered(_SampleNorm):
    """Uncentred group norm (``num_groups`` required)."""

    num_groups: Optional[int] = None
    _groups: ClassVar[str] = "given"


class InstanceNormUncentered(_SampleNorm):
    """Uncentred instance norm (group norm with one group per channel)."""

    _groups: ClassVar[str] = "per_channel"


class LayerNorm2dUncentered(_SampleNorm):
    """Uncentred layer norm over (H, W, C) of each sample (group norm with one group)."""



class PositionNormUncentered(_SampleNorm):
    """Uncentred position norm: statistics over the channels at each pixel."""

    _over_space: ClassVar[bool] = False


class GroupNorm(_SampleNorm):
    """Centred group norm with detachable variance (``DetachableGroupNorm2d``)."""

    num_groups: Optional[int] = None
    _groups: ClassVar[str] = "given"
    _centred: ClassVar[bool] = True


class InstanceNorm(_SampleNorm):
    """Centred instance norm with detachable variance (``DetachableGNInstanceNorm2d``)."""

    _groups: ClassVar[str] = "per_channel"
    _centred: ClassVar[bool] = True


class LayerNorm2d(_SampleNorm):
    """Centred layer norm over (H, W, C) with detachable variance (``DetachableGNLayerNorm2d``)."""

    _centred: ClassVar[bool] = True


class PositionNorm(_SampleNorm):
    """Centred norm over the last axis with detachable variance.

    On NHWC feature maps this is the reference's ``DetachablePositionNorm2d`` (ConvNeXt);
    on [N, T, D] tokens it is ``DetachableLayerNorm`` (ViT), hence the alias ``LayerNorm``.
    """

    _over_space: ClassVar[bool] = False
    _centred: ClassVar[bool] = True


LayerNorm = PositionNorm


class Identity(nn.Module):
    """No normalisation, with the norm call signature (CIFAR 'no norm' ablation)."""

    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        del train, explain
        return x
