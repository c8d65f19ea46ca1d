"""The B-cos transform as Flax Linen layers (NHWC activations, HWIO / [in, out] kernels).

    B-cos(x; w) = |cos(x, ŵ)|^(B-1) · ŵᵀx,     ŵ = w / ‖w‖

Every layer takes a static ``explain`` flag. In explanation mode the dynamic scale
``|cos|^(B-1)`` (and the patch norm inside it) is wrapped in ``jax.lax.stop_gradient``,
so that the input gradient of a stack of such layers is exactly the row of the
dynamic linear map W(x) (docs/bcos.md §5). Nothing is stored on the module: the
mode is an argument, so it is part of the trace and cannot leak between calls.

Numerics follow the PyTorch reference exactly (docs/bcos.md §1, §10): no epsilon in the
weight normalisation, ``sqrt(Σ_window Σ_c x² + 1e-6)`` as the conv patch norm,
``‖x‖ + 1e-12`` for dense layers, ``(|cos| + 1e-6)^(B-1)`` for B ≠ 2.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

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
    "PRENORMALIZED",
    "add_inverse",
    "conv_padding",
    "dynamic_scale",
    "patch_norm",
    "prenormalize",
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

    Raises a ValueError for anything but 3 channels on ``axis``, for a non-float dtype (uint8
    images must be scaled to [0, 1] first) and, when ``x`` is concrete (not a tracer under
    ``jit``/``vmap``, where values are not checked), for values outside [0, 1] (a tolerance of
    ``max(1e-6, 2 eps)`` of the dtype absorbs rounding) or NaN/inf: B-cos inputs are images
    in [0, 1], never mean/std normalised.
    """
    x = jnp.asarray(x)
    if x.ndim == 0 or not -x.ndim <= axis < x.ndim or x.shape[axis] != 3:
        raise ValueError(
            f"add_inverse expects 3 colour channels on axis {axis}, got shape {x.shape}; "
            "the B-cos input encoding is [r, g, b, 1-r, 1-g, 1-b]"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"add_inverse expects a float image in [0, 1], got dtype {x.dtype}; "
            "scale integer (uint8) images first: add_inverse(x.astype(jnp.float32) / 255)"
        )
    if not isinstance(x, jax.core.Tracer) and x.is_fully_addressable and x.size:
        finite = jnp.isfinite(x)
        bad, lo, hi = jax.device_get(
            (
                x.size - jnp.count_nonzero(finite),
                jnp.min(jnp.where(finite, x, 0)),
                jnp.max(jnp.where(finite, x, 0)),
            )
        )
        if bad:
            raise ValueError(
                f"add_inverse got {int(bad)} non-finite value(s) (NaN or inf) in an image of shape "
                f"{x.shape}; "
                "B-cos inputs are images in [0, 1]"
            )
        tol = max(1e-6, 2 * float(jnp.finfo(x.dtype).eps))
        if not (float(lo) >= -tol and float(hi) <= 1 + tol):
            raise ValueError(
                f"add_inverse expects an image in [0, 1], got values in [{lo:.4g}, {hi:.4g}] "
                f"(shape {x.shape}); B-cos inputs are images in [0, 1], not mean/std normalised "
                "(and not 0..255): pass the unnormalised image scaled to [0, 1]"
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


def accum_dtype(dtype: Any) -> Any:
    """The dtype reductions over ``dtype`` values accumulate in: at least float32.

    bf16/f16 activations sum their squares and moments in float32; float64 (under
    ``jax.enable_x64``) stays float64, so a whole model can be evaluated in double
    precision, e.g. to compare against a reference where float32 rounding could flip a
    MaxOut or max-pool choice.
    """
    return jnp.promote_types(dtype, jnp.float32)


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
    Accumulated in ``accum_dtype(x.dtype)`` (at least float32).
    """
    n, h, w, c = x.shape
    sq = jnp.square(x.astype(accum_dtype(x.dtype)))
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


def _bcos_output(lin: Array, norm: Array, b: float, explain: bool) -> Array:
    """``dynamic_scale(lin, norm, b, explain) * lin`` (``norm`` broadcasts against ``lin``)."""
    if b != 2:
        return dynamic_scale(lin, norm, b, explain) * lin
    if explain:
        # A symbolic zero: autodiff then drops the whole norm branch (patch-norm window
        # sums and their transposes) from the explanation's backward pass, which a zero
        # cotangent array from the custom vjp would not.
        norm = jax.lax.stop_gradient(norm)
    return _b2_output(lin, norm.astype(lin.dtype), explain)


def _sum_to(x: Array, shape: Tuple[int, ...]) -> Array:
    axes = tuple(i for i, (a, b) in enumerate(zip(x.shape, shape)) if b == 1 and a != 1)
    return jnp.sum(x, axis=axes, keepdims=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _b2_output(lin: Array, norm: Array, explain: bool) -> Array:
    """B = 2: ``|lin| · lin / norm`` with a hand-written backward pass.

    Autodiff differentiates ``|lin|`` through a sign select and keeps ``|lin| / norm`` as
    well as ``lin``; this keeps only ``lin`` and ``norm`` and computes every cotangent in
    one pass over ``g``:  ``∂/∂lin = 2|lin|/norm`` (``|lin|/norm`` in explanation mode,
    where the scale is a constant) and ``∂/∂norm = -Σ g·|lin|·lin / norm²`` (0 when
    explaining). Same values as ``dynamic_scale(lin, norm, 2, explain) * lin``.
    """
    return jnp.abs(lin) / norm * lin


def _b2_output_fwd(lin, norm, explain):
    return _b2_output(lin, norm, explain), (lin, norm)


def _b2_output_bwd(explain, res, g):
    lin, norm = res
    scaled = g * (jnp.abs(lin) / norm)
    if explain:
        return scaled, jnp.zeros_like(norm)
    return 2 * scaled, -_sum_to(scaled * lin, norm.shape) / norm


_b2_output.defvjp(_b2_output_fwd, _b2_output_bwd)


def _max_out(lin: Array, features: int, max_out: int) -> Array:
    # Output j is the max over linear units j*M + m (consecutive units), as the reference.
    if max_out == 1:
        return lin
    return jnp.max(lin.reshape(*lin.shape[:-1], features, max_out), axis=-1)


def _unit_norm(kernel: Array, axes: Tuple[int, ...]) -> Array:
    # No epsilon: the reference divides by the plain L2 norm (an all-zero filter is a bug).
    return kernel / jnp.sqrt(jnp.sum(jnp.square(kernel), axis=axes, keepdims=True))


#: Variable collection of kernels normalised ahead of time (see ``prenormalize``).
PRENORMALIZED = "bcos_prenormalized"


def _normalised_kernel(module: nn.Module, shape: Tuple[int, ...]) -> Array:
    """ŵ: the ``kernel`` parameter normalised over all but its last (output) axis.

    Taken as is from the ``PRENORMALIZED`` collection when ``prenormalize`` put it there.
    """
    if module.has_variable(PRENORMALIZED, "kernel"):
        w = module.get_variable(PRENORMALIZED, "kernel")
        if w.shape != shape:
            raise ValueError(
                f"{PRENORMALIZED} kernel of {module.path} has shape {w.shape}, expected {shape}"
            )
        return w
    kernel = module.param("kernel", module.kernel_init, shape, module.param_dtype)
    if not module.normalize_weights:
        return kernel  # B-cosified layers (Arya et al. 2024) use the raw pretrained filters
    return _unit_norm(kernel, tuple(range(len(shape) - 1)))


def prenormalize(model: nn.Module, variables: Any, *args: Any, **kwargs: Any) -> Any:
    """Variables for inference with every B-cos kernel normalised once, ahead of time.

    ``model.apply(prenormalize(model, variables, x), x)`` equals ``model.apply(variables, x)``
    (to float rounding) but skips the per-call weight normalisation ``w / ‖w‖`` of every
    ``BcosConv``/``BcosDense``: their ``kernel`` moves from ``'params'`` to the
    ``PRENORMALIZED`` collection, already divided by its norm. For evaluation, explanation
    (``bcos_jax.explain``) and serving; not for training (the kernels are no longer params).

    Args:
      model: the Flax module.
      variables: its variables (``{'params': ..., 'batch_stats': ...}``).
      *args, **kwargs: an example call of ``model.apply(variables, *args, **kwargs)``
        (only shapes matter, arrays or ``jax.ShapeDtypeStruct``); it is traced abstractly
        to find which modules are B-cos layers.
    """
    paths = set()

    def record(next_fun, a, kw, context):
        if context.method_name == "__call__" and isinstance(context.module, (BcosConv, BcosDense)):
            if context.module.normalize_weights:  # raw kernels have nothing to precompute
                paths.add(tuple(context.module.path))
        return next_fun(*a, **kw)

    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, *a: model.apply(v, *a, **kwargs), variables, *args)

    def copy(tree):
        return {k: copy(v) for k, v in tree.items()} if isinstance(tree, Mapping) else tree

    params = copy(variables["params"])
    pre = copy(variables.get(PRENORMALIZED, {}))
    for path in sorted(paths):
        node, dst = params, pre
        for name in path:
            node = node[name]
            dst = dst.setdefault(name, {})
        if "kernel" in node:  # absent if this variables tree was prenormalised already
            kernel = node.pop("kernel")
            dst["kernel"] = _unit_norm(kernel, tuple(range(kernel.ndim - 1)))
    return {**variables, "params": params, PRENORMALIZED: pre}


def _is_pointwise(w: Array, padding, groups: int) -> bool:
    """A 1x1 kernel without padding or groups: the conv is a matmul over channels."""
    return w.shape[0] == 1 and w.shape[1] == 1 and groups == 1 and padding == ((0, 0), (0, 0))


def _matmul(x: Array, w: Array) -> Array:
    # [..., Cin] x [Cin, Cout] -> [..., Cout]
    return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))


@jax.custom_vjp
def _pointwise(x: Array, w: Array) -> Array:
    """``x @ w`` over the last axis, with a backward pass laid out for XLA:CPU.

    Same values and gradients as autodiff of ``_matmul``, but the weight gradient
    ``dw = Σ_positions xᵀ g`` is one 2-D [P, Cin]ᵀ x [P, Cout] dot (P = all positions)
    instead of the ``dot_general`` contracting N, H and W that autodiff emits: the
    ResNet-50 training step is 1.07-1.11x faster, ViT-S/16's 1.04x (benchmarks/lowering.py,
    "autodiff matmul"). ``dx`` is autodiff's, so explanations compile as without it.
    """
    return _matmul(x, w)


def _pointwise_fwd(x, w):
    return _matmul(x, w), (x, w)


def _pointwise_bwd(res, g):
    x, w = res
    dx = jax.lax.dot_general(g, w, (((g.ndim - 1,), (1,)), ((), ())))
    dw = jax.lax.dot_general(
        x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1]), (((0,), (0,)), ((), ()))
    )
    return dx, dw


_pointwise.defvjp(_pointwise_fwd, _pointwise_bwd)


def _lax_conv(x, w, strides, padding, dilation, groups):
    return jax.lax.conv_general_dilated(
        x,
        w,
        window_strides=strides,
        padding=padding,
        rhs_dilation=dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )


def _space_to_depth_transpose_pays(w: Array, strides, dilation, groups: int) -> bool:
    """Whether ``_conv_input_grad_s2d`` should compute the input gradient of this conv.

    Strided convs only. Their autodiff input gradient is a convolution over the input
    dilated with zeros, which XLA:CPU runs on a slow generic path; the space-to-depth
    form is a dense stride-1 conv, but on a kernel zero-padded to a multiple of the
    stride. It is used where that padding wastes little: 7x7/2 stems (64/49 of the taps;
    the ResNet-50 explanation is 1.08-1.13x faster with it, benchmarks/lowering.py "no
    space-to-depth"), k x k / k patchify convs; not 3x3/2 (16/9 of the taps) or 1x1/2.
    """
    (kh, kw), (sh, sw) = w.shape[:2], strides
    if groups != 1 or dilation != (1, 1) or (sh, sw) == (1, 1):
        return False
    waste = (-(-kh // sh) * sh * -(-kw // sw) * sw) / (kh * kw)
    return waste <= 1.5


def _conv_input_grad_s2d(g, w, x_shape, strides, padding):
    """Input gradient of a strided conv as one stride-1 conv and a depth-to-space.

    With ``k = s·kb + r`` the kernel taps split by phase ``r``; output position ``a`` of
    phase ``r`` of the (padded) input receives ``Σ_kb g[a - kb] · w[s·kb + r]``, i.e. a full
    stride-1 correlation of ``g`` with the flipped, phase-stacked kernel
    ``[kb_h, kb_w, Cout, s_h·s_w·Cin]``, whose output channels are then moved back to
    space. Exact (same products, summed in another order).
    """
    n, h, wd, c = x_shape
    (kh, kw, _, o), (sh, sw) = w.shape, strides
    bh, bw = -(-kh // sh), -(-kw // sw)
    wp = jnp.pad(w, ((0, bh * sh - kh), (0, bw * sw - kw), (0, 0), (0, 0)))
    wp = (
        wp.reshape(bh, sh, bw, sw, c, o).transpose(0, 2, 5, 1, 3, 4).reshape(bh, bw, o, sh * sw * c)
    )
    z = jax.lax.conv_general_dilated(
        g,
        wp[::-1, ::-1],
        (1, 1),
        ((bh - 1, bh - 1), (bw - 1, bw - 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    a, b = z.shape[1:3]
    dx = z.reshape(n, a, b, sh, sw, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, a * sh, b * sw, c)
    (pt, _), (pl, _) = padding
    dx = jnp.pad(dx, ((0, 0), (0, max(0, pt + h - a * sh)), (0, max(0, pl + wd - b * sw)), (0, 0)))
    return dx[:, pt : pt + h, pl : pl + wd, :]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_s2d(x, w, strides, padding):
    """``_lax_conv`` (groups 1, no dilation) whose input gradient is ``_conv_input_grad_s2d``."""
    return _lax_conv(x, w, strides, padding, (1, 1), 1)


def _conv_s2d_fwd(x, w, strides, padding):
    return _lax_conv(x, w, strides, padding, (1, 1), 1), (x, w)


def _conv_s2d_bwd(strides, padding, res, g):
    x, w = res
    dx = _conv_input_grad_s2d(g, w, x.shape, strides, padding)
    (dw,) = jax.vjp(lambda w: _lax_conv(x, w, strides, padding, (1, 1), 1), w)[1](g)
    return dx.astype(x.dtype), dw


_conv_s2d.defvjp(_conv_s2d_fwd, _conv_s2d_bwd)


def _conv(x, w, strides, padding, dilation, groups):
    if _space_to_depth_transpose_pays(w, strides, dilation, groups):
        return _conv_s2d(x, w, strides, padding)
    return _lax_conv(x, w, strides, padding, dilation, groups)


def _linear_and_norm(x, w, strides, padding, dilation, groups, need_norm):
    """``(ŵᵀx, ‖patch‖)`` of every output position: [N, H', W', units], [N, H', W', G] (or None).

    A 1x1 conv without padding (most convs of a bottleneck ResNet or a DenseNet) is computed
    as ``dot_general`` on the strided input: the same numbers, but its weight gradient is one
    [Cin, N·H'·W'] x [N·H'·W', Cout] matmul, where XLA:CPU's convolution-based filter
    gradient is slow: with ``lax.conv`` for the 1x1 convs the ResNet-50 training step takes
    1.46-1.51x and its explanation 1.22-1.44x as long (benchmarks/lowering.py). Its patch
    norm is the per-pixel channel norm of that strided input (a 1x1 window sum is the value
    itself).
    """
    if _is_pointwise(w, padding, groups):
        sh, sw = strides
        xs = x if (sh, sw) == (1, 1) else x[:, ::sh, ::sw, :]
        lin = _pointwise(xs, w.reshape(w.shape[2:]))
        if not need_norm:
            return lin, None
        sq = jnp.sum(jnp.square(xs.astype(accum_dtype(xs.dtype))), axis=-1, keepdims=True)
        return lin, jnp.sqrt(sq + 1e-6)
    lin = _conv(x, w, strides, padding, dilation, groups)
    if not need_norm:
        return lin, None
    return lin, patch_norm(x, w.shape[:2], strides, padding, dilation, groups)


def _conv_transform(x, w, *, strides, padding, dilation, groups, b, features, max_out, explain):
    """``|cos(x, ŵ)|^(B-1) · ŵᵀx`` of every patch, MaxOut applied: [N, H', W', features]."""
    lin, norm = _linear_and_norm(x, w, strides, padding, dilation, groups, b != 1)
    lin = _max_out(lin, features, max_out)
    if b == 1:
        return lin
    if groups == 1:
        return _bcos_output(lin, norm, b, explain)
    # Output channel o belongs to group o // (features / groups): view the channels as
    # [G, features / G] and broadcast the [G, 1] norms (no repeat, no copy).
    lg = lin.reshape(*lin.shape[:-1], groups, features // groups)
    return _bcos_output(lg, norm[..., None], b, explain).reshape(lin.shape)


def _maybe_remat(fn, remat: bool):
    # Saves only the layer's inputs (x and ŵ) for the backward pass, which recomputes the
    # conv, the patch norm and the dynamic scale from them.
    return jax.checkpoint(fn, policy=jax.checkpoint_policies.nothing_saveable) if remat else fn


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
      remat: rematerialise the layer in the backward pass (``jax.checkpoint``): only its
        input is kept for the backward pass, which recomputes the conv, patch norm and
        dynamic scale. Lowers the peak memory of a training step where the compiler's
        scheduler keeps the live set small: ResNet-50, batch 32, XLA:CPU with
        ``xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED`` 4.2 -> 3.1 GB; with
        XLA:CPU's default scheduler no change (benchmarks/memory_compile.py).
        ``models.create(name, remat=True)`` sets it on every B-cos layer of a zoo model.
      normalize_weights: use ``ŵ = w / ‖w‖`` (True, every B-cos paper model) or the raw
        ``w`` (False: the B-cosified networks of Arya et al. 2024, whose layers keep the
        pretrained filters' norms; ``bcos_jax.bcosify``). With B = 2 the output then scales
        with ‖w‖², per output channel, which no later layer of those checkpoints absorbs.
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
    remat: bool = False
    normalize_weights: bool = True

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

        w = _normalised_kernel(self, (*ks, cin // groups, units))
        x, w = promote_dtype(x, w, dtype=self.dtype)
        transform = functools.partial(
            _conv_transform, strides=strides, padding=padding, dilation=dilation, groups=groups,
            b=self.b, features=self.features, max_out=self.max_out, explain=explain,
        )
        out = _maybe_remat(transform, self.remat)(x, w)
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
    """B-cos linear layer: [..., Cin] -> [..., features]; ``kernel`` [Cin, features * max_out].

    The input norm is ``‖x‖ + 1e-12`` (epsilon outside the sqrt, as the reference's BcosLinear).
    ``remat``, ``normalize_weights``: as ``BcosConv``'s.
    """

    features: int
    b: float = 2.0
    max_out: int = 1
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()
    remat: bool = False
    normalize_weights: bool = True

    @nn.compact
    def __call__(self, x: Array, explain: bool = False) -> Array:
        if self.max_out < 1:
            raise ValueError(f"max_out must be >= 1, got {self.max_out}")
        units = self.features * self.max_out
        w = _normalised_kernel(self, (x.shape[-1], units))
        x, w = promote_dtype(x, w, dtype=self.dtype)
        transform = functools.partial(
            _dense_transform,
            b=self.b,
            features=self.features,
            max_out=self.max_out,
            explain=explain,
        )
        return _maybe_remat(transform, self.remat)(x, w)


def _dense_transform(x, w, *, b, features, max_out, explain):
    lin = _max_out(_pointwise(x, w), features, max_out)
    if b == 1:
        return lin
    norm = jnp.linalg.norm(x.astype(accum_dtype(x.dtype)), axis=-1, keepdims=True) + 1e-12
    return _bcos_output(lin, norm, b, explain)


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
