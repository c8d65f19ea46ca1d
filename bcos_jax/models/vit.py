"""Simple ViT and ViT-C (conv stem): the B-cos v2 models and their standard counterparts.

docs/bcos.md §8, docs/architectures.md §2; the reference is ``bcos.models.vit`` (lucidrains'
SimpleViT):
patch embedding (optionally after a conv stem) -> fixed 2-D sin-cos positional embedding
added to the tokens -> pre-norm transformer encoders -> mean over tokens -> norm -> linear.
One ``SimpleViT`` module builds both variants from injected layers:

* **B-cos**: 6-channel input, ``BcosDense`` everywhere except ``to_qkv`` (a plain linear
  layer without bias, as in the reference), no activation, centred bias-free LayerNorms,
  ``LogitLayer(log(1/999))`` (the reference's ``BcosSequential(model, LogitLayer)``, hence
  the state_dict prefix ``0.``).
* **standard**: 3-channel input, Dense layers with biases (``to_qkv``/``to_out`` without),
  GELU, affine LayerNorms, no logit layer.

Explanation mode stops the gradient through attention's q and k, so the attention matrix
is a fixed weight and the value path stays linear. The positional embedding is an additive
constant: it is *not* part of ``W(x)·x`` and therefore lands in ``Explanation.bias``
together with the logit bias (the PyTorch reference drops it silently; see
``tests/test_models_vit.py`` for the exact decomposition).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bcos_jax.constants import VIT_LOGIT_BIAS, v2_logit_bias
from bcos_jax.layers import BcosConv, BcosDense, LogitLayer, accum_dtype
from bcos_jax.models.common import Scope as _Scope
from bcos_jax.models.common import StandardConv, StandardDense, check_input, partial
from bcos_jax.models.registry import Architecture
from bcos_jax.norms import LayerNorm, LayerNorm2d, no_bias

Array = jax.Array
Factory = Callable[..., nn.Module]

__all__ = [
    "ARCHITECTURES",
    "Attention",
    "Encoder",
    "FeedForward",
    "PosEmbSinCos2d",
    "SimpleViT",
    "bcos_linear",
    "posemb_sincos_2d",
]


def bcos_linear(features: int, use_bias: bool = False, **kwargs: Any) -> BcosDense:
    """``BcosDense`` with the linear-layer signature of the standard variant.

    ``use_bias`` is accepted and ignored, like ``bias`` in the reference's ``BcosLinear``:
    a B-cos layer has no bias (it would be an unexplained constant).
    """
    del use_bias
    return BcosDense(features, **kwargs)


bcos_linear.builds_bcos_layer = True  # models.common.with_remat: takes remat=True


def apply_act(act: Optional[Callable[..., Array]], y: Array, explain: bool) -> Array:
    """``act(y)``; None is the identity. An activation whose gate must be detached in
    explanation mode (``bcosified.detachable_gelu``) says so with ``takes_explain = True``
    and is called as ``act(y, explain=explain)``."""
    if act is None:
        return y
    return act(y, explain=explain) if getattr(act, "takes_explain", False) else act(y)


def posemb_sincos_2d(
    h: int, w: int, dim: int, temperature: float = 10_000.0, dtype: Any = jnp.float32
) -> Array:
    """The reference's fixed 2-D sin-cos embedding: [h·w, dim], tokens in row-major (y, x) order.

    Channels are ``[sin(x·ω), cos(x·ω), sin(y·ω), cos(y·ω)]`` with
    ``ω_i = temperature^(-i / (dim/4 - 1))``, i < dim/4.
    """
    if dim % 4:
        raise ValueError(f"the sin-cos embedding needs a width divisible by 4, got {dim}")
    y, x = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij")
    omega = jnp.arange(dim // 4, dtype=jnp.float32) / (dim // 4 - 1)
    omega = 1.0 / (temperature**omega)
    y = y.reshape(-1, 1).astype(jnp.float32) * omega[None, :]
    x = x.reshape(-1, 1).astype(jnp.float32) * omega[None, :]
    return jnp.concatenate([jnp.sin(x), jnp.cos(x), jnp.sin(y), jnp.cos(y)], axis=1).astype(dtype)


class PosEmbSinCos2d(nn.Module):
    """Module wrapper of ``posemb_sincos_2d`` (no parameters), so it can be intercepted by name."""

    temperature: float = 10_000.0

    def __call__(self, h: int, w: int, dim: int, dtype: Any = jnp.float32) -> Array:
        return posemb_sincos_2d(h, w, dim, self.temperature, dtype)


class Attention(nn.Module):
    """Pre-norm multi-head self-attention: [N, T, dim] -> [N, T, dim].

    ``norm -> to_qkv`` (plain linear, no bias) ``-> softmax(q·kᵀ/√dim_head)·v -> to_out``.
    """

    dim: int
    heads: int
    dim_head: int
    linear: Factory
    norm: Factory
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        n, t, _ = x.shape
        inner = self.heads * self.dim_head
        x = self.norm(name="norm")(x, train=train, explain=explain)
        qkv = StandardDense(3 * inner, use_bias=False, dtype=self.dtype, name="to_qkv")(x)
        # Heads first ([N, heads, T, dim_head]): both products are then plain batched
        # matmuls; with the head axis in the middle XLA:CPU ran attn·v 2.8x slower
        # (ViT-S/16, batch 8: 25 -> 8.8 ms per layer; ViT-S forward 0.97 -> 0.71 s).
        q, k, v = (
            a.reshape(n, t, self.heads, self.dim_head).transpose(0, 2, 1, 3)
            for a in jnp.split(qkv, 3, axis=-1)
        )
        if explain:
            # The attention matrix becomes a fixed weight of the (linear) value path.
            q, k = jax.lax.stop_gradient(q), jax.lax.stop_gradient(k)
        dots = jnp.einsum("nhqd,nhkd->nhqk", q, k) * self.dim_head**-0.5
        attn = jax.nn.softmax(dots.astype(accum_dtype(dots.dtype)), axis=-1).astype(v.dtype)
        out = jnp.einsum("nhqk,nhkd->nhqd", attn, v).transpose(0, 2, 1, 3).reshape(n, t, inner)
        return self.linear(self.dim, use_bias=False, dtype=self.dtype, name="to_out")(out, explain)


class FeedForward(nn.Module):
    """``norm -> linear1 (dim -> hidden) -> act -> linear2 (hidden -> dim)`` on [N, T, dim].

    Layers live under ``net`` like the reference's ``nn.Sequential``.
    """

    dim: int
    hidden_dim: int
    linear: Factory
    norm: Factory
    act: Optional[Callable[[Array], Array]] = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        def net(y):
            y = self.norm(name="norm")(y, train=train, explain=explain)
            y = self.linear(self.hidden_dim, dtype=self.dtype, name="linear1")(y, explain)
            y = apply_act(self.act, y, explain)
            return self.linear(self.dim, dtype=self.dtype, name="linear2")(y, explain)

        return _Scope(name="net")(net, x)


class Encoder(nn.Module):
    """``x + attn(x)``, then ``+ ff(·)``: [N, T, dim] -> [N, T, dim]."""

    dim: int
    heads: int
    dim_head: int
    mlp_dim: int
    linear: Factory
    norm: Factory
    act: Optional[Callable[[Array], Array]] = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        attn = Attention(
            self.dim, self.heads, self.dim_head, self.linear, self.norm, self.dtype, name="attn"
        )
        x = attn(x, train, explain) + x
        ff = FeedForward(
            self.dim, self.mlp_dim, self.linear, self.norm, self.act, self.dtype, name="ff"
        )
        return ff(x, train, explain) + x


class SimpleViT(nn.Module):
    """Simple ViT / ViT-C classifier: NHWC image [N, H, W, channels] -> logits [N, num_classes].

    Any resolution whose token grid is whole works (the positional embedding is computed
    for the actual grid): H, W divisible by ``patch_size`` times the stem's total stride.

    Attributes:
      patch_size: side of the square patches (1 after a conv stem).
      dim, depth, heads, mlp_dim: transformer width, encoders, heads (``dim_head = dim //
        heads``), hidden width of the feed-forward block.
      num_classes: outputs of the head.
      conv_stem: output channels of the 3×3 stem convs (stride 2 where the width grows),
        each followed by ``norm2d`` and ``act``; None: plain patch embedding.
      linear: factory of every linear layer but ``to_qkv``; called with ``use_bias``.
      conv, norm, norm2d: factories of the stem convs, the token norms, the stem norms.
      act: activation of the stem and the feed-forward block (None: identity).
      logit_layer, logit_bias: add ``logit_bias`` (None: ``-log(num_classes - 1)``).
      pool_after_head: apply ``linear_head`` to every token, then average the tokens (the
        B-cosified ViTs' "gap_reorder", Arya et al. 2024); False: average, then the head.
      temperature: of the sin-cos positional embedding.
      dtype: computation dtype of convs/linear layers (None: from inputs).
      in_channels: channels the input must have (checked with an error naming the fix,
        e.g. ``add_inverse`` for RGB into a B-cos model); None: unchecked. ``models.create``
        sets it from the spec.
    """

    patch_size: int
    dim: int
    depth: int
    heads: int
    mlp_dim: int
    num_classes: int = 1000
    conv_stem: Optional[Tuple[int, ...]] = None
    linear: Factory = bcos_linear
    conv: Factory = BcosConv
    norm: Factory = no_bias(LayerNorm)
    norm2d: Factory = no_bias(LayerNorm2d)
    act: Optional[Callable[[Array], Array]] = None
    logit_layer: bool = True
    pool_after_head: bool = False
    logit_bias: Optional[float] = None
    temperature: float = 10_000.0
    dtype: Any = None
    in_channels: Optional[int] = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False, explain: bool = False) -> Array:
        check_input(x, self.in_channels, "SimpleViT")
        def act(y):
            return apply_act(self.act, y, explain)

        def conv_stem(y):
            # Reference: Sequential([conv, norm, act] * len(conv_stem)); act holds no parameters.
            cin = y.shape[-1]
            for i, cout in enumerate(self.conv_stem):
                stride = 2 if cout > cin else 1
                y = self.conv(
                    cout,
                    kernel_size=3,
                    strides=stride,
                    padding=1,
                    dtype=self.dtype,
                    name=str(3 * i),
                )(y, explain)
                y = act(self.norm2d(name=str(3 * i + 1))(y, train=train, explain=explain))
                cin = cout
            return y

        def to_patch_embedding(y):
            if self.conv_stem:
                y = _Scope(name="conv_stem")(conv_stem, y)
            n, h, w, c = y.shape
            p = self.patch_size
            if h % p or w % p:
                raise ValueError(f"feature map {h}x{w} is not divisible by the patch size {p}")
            # 'b c (h p1) (w p2) -> b h w (p1 p2 c)' in NHWC.
            y = y.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
            y = y.reshape(n, h // p, w // p, p * p * c)
            return self.linear(self.dim, dtype=self.dtype, name="linear")(y, explain)

        def transformer(y):
            for i in range(self.depth):
                y = Encoder(
                    self.dim,
                    self.heads,
                    self.dim // self.heads,
                    self.mlp_dim,
                    self.linear,
                    self.norm,
                    self.act,
                    self.dtype,
                    name=f"encoder_{i}",
                )(y, train, explain)
            return y

        def linear_head(y):
            y = self.norm(name="norm")(y, train=train, explain=explain)
            return self.linear(self.num_classes, dtype=self.dtype, name="linear")(y, explain)

        x = _Scope(name="to_patch_embedding")(to_patch_embedding, x)  # [N, h, w, dim]
        n, h, w, d = x.shape
        pe = PosEmbSinCos2d(self.temperature, name="positional_embedding")(h, w, d, x.dtype)
        x = x.reshape(n, h * w, d) + pe
        x = _Scope(name="transformer")(transformer, x)
        if self.pool_after_head:
            x = jnp.mean(_Scope(name="linear_head")(linear_head, x), axis=1)
        else:
            x = _Scope(name="linear_head")(linear_head, jnp.mean(x, axis=1))
        if self.logit_layer:
            bias = v2_logit_bias(self.num_classes) if self.logit_bias is None else self.logit_bias
            x = LogitLayer(bias=bias)(x)
        return x


# ------------------------------------------------------------------------ architectures

# size: (dim, depth, heads, mlp_dim); ViT-C drops one encoder to account for its stem.
_SIZES = {
    "ti": (192, 12, 3, 768),
    "s": (384, 12, 6, 1536),
    "b": (768, 12, 12, 3072),
    "l": (1024, 14, 16, 4096),
}
_STEMS = {
    "ti": (24, 48, 96, 192),
    "s": (48, 96, 192, 384),
    "b": (64, 128, 128, 256, 256, 512),
    "l": (64, 128, 128, 256, 256, 512),
}

_BCOS = dict(
    linear=bcos_linear,
    conv=BcosConv,
    norm=no_bias(LayerNorm),
    norm2d=no_bias(LayerNorm2d),
    act=None,
    logit_layer=True,
    # The vit_final config fixes log(1/999), whatever num_classes is (as here).
    logit_bias=VIT_LOGIT_BIAS,
)
_STANDARD = dict(
    linear=StandardDense,
    conv=partial(StandardConv, use_bias=True),
    norm=LayerNorm,
    norm2d=LayerNorm2d,
    act=partial(jax.nn.gelu, approximate=False),
    logit_layer=False,
)

# (name, size): the B-cos ViTs of bcos.models.pretrained (vit_final) and their standard twins.
_BCOS_MODELS = [
    ("simple_vit_ti_patch16_224", "ti"),
    ("simple_vit_s_patch16_224", "s"),
    ("simple_vit_b_patch16_224", "b"),
    ("simple_vit_l_patch16_224", "l"),
    ("vitc_ti_patch1_14", "ti"),
    ("vitc_s_patch1_14", "s"),
    ("vitc_b_patch1_14", "b"),
    ("vitc_l_patch1_14", "l"),
]
_STANDARD_MODELS = [(f"standard_{name}", size) for name, size in _BCOS_MODELS]


def _arch(size: str, conv: bool) -> dict:
    dim, depth, heads, mlp = _SIZES[size]
    if conv:
        return dict(
            patch_size=1, dim=dim, depth=depth - 1, heads=heads, mlp_dim=mlp, conv_stem=_STEMS[size]
        )
    return dict(patch_size=16, dim=dim, depth=depth, heads=heads, mlp_dim=mlp)


def _architecture(name: str, size: str, bcos: bool) -> Architecture:
    # ViT-C ('vitc'): a conv stem, then 224x224 input -> 14x14 tokens of patch size 1.
    return Architecture(
        name,
        partial(SimpleViT, **_arch(size, "vitc" in name), **(_BCOS if bcos else _STANDARD)),
        family="vit",
        version="v2" if bcos else "standard",
        resize=256,  # ImageNetClassificationPresetEval default: Resize(256) -> CenterCrop(224)
        in_channels=6 if bcos else 3,
        torch_prefix="0." if bcos else "",
    )


ARCHITECTURES: Tuple[Architecture, ...] = tuple(
    _architecture(name, size, bcos=True) for name, size in _BCOS_MODELS
) + tuple(_architecture(name, size, bcos=False) for name, size in _STANDARD_MODELS)
