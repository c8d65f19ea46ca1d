"""Explanations as pure functions: the dynamic linear map W(x) of a B-cos model.

A B-cos network computes ``y(x) = W(x) x (+ b)``. With every dynamic scale held constant
(``explain=True``: ``stop_gradient`` on |cos|, patch norms, norm variances and attention
q/k), the vector-Jacobian product of a one-hot cotangent on the target logit is exactly
the target's row of ``W(x)``; ``x · W(x)`` are the contributions, and they sum to the logit
minus its constant part.

The model contract (what a user-defined Linen module must follow to be explainable):

* ``model.apply(variables, x, train=False, explain=True)`` is accepted; ``explain`` is a
  static Python bool forwarded to every B-cos layer (``layers.BcosConv/BcosDense``), every
  norm (``norm(x, train=..., explain=...)``) and every other dynamic factor of the model,
  which must wrap that factor in ``jax.lax.stop_gradient`` when it is True.
* Everything else between input and logits is linear in its input: sums, concatenations,
  average pooling, MaxOut selection, fixed additive constants (which end up in ``bias``).
  No ReLU/GELU unless it is also treated as a dynamic (detached) gate.
* The output is ``[N, C]`` logits (or a tuple/dict whose ``'logits'`` entry is).

Shapes: images NHWC. With one target per image, ``weights`` is [N, H, W, C_in]; with K
targets per image (``targets`` [N, K]) every per-target field gains a *leading* K axis.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple, Union

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bcos_jax.layers import accum_dtype

Array = jax.Array

__all__ = ["Explanation", "explain", "logits_of"]


@flax.struct.dataclass
class Explanation:
    """Result of ``explain`` (a pytree; every field is an array).

    Attributes:
      logits: [N, C] model outputs (for a hidden unit: the unit values, [N, C_layer]).
      targets: [N] (or [K, N]) explained class/channel index.
      weights: [N, H, W, C_in] (or [K, N, ...]) the target's row of W(x).
      contributions: [N, H, W] (or [K, N, H, W]) ``Σ_c x · W(x)`` per pixel.
      bias: [N] (or [K, N]) the part of the explained output not attributed to the input:
        ``output = contributions.sum((-2, -1)) + bias`` holds exactly.
    """

    logits: Array
    targets: Array
    weights: Array
    contributions: Array
    bias: Array


def logits_of(out: Any) -> Array:
    """The logits from a model output: the array itself, ``out['logits']`` or ``out[0]``."""
    if isinstance(out, dict):
        return out["logits"]
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


def _layer_filter(layer: Union[str, Sequence[str]]) -> Tuple[str, ...]:
    path = tuple(layer.split("/")) if isinstance(layer, str) else tuple(layer)
    if not path or not all(path):
        raise ValueError(f"layer must name a submodule path like 'layer3/1/conv2', got {layer!r}")
    return path


def _find_intermediate(tree: Any, path: Tuple[str, ...], layer: str) -> Array:
    node = tree
    for name in path:
        if not isinstance(node, dict) or name not in node:
            raise ValueError(
                f"layer {layer!r} was not called by the model; available at this level: "
                f"{sorted(node) if isinstance(node, dict) else node}"
            )
        node = node[name]
    return node["__call__"][0]


def _unit_values(act: Array, position: Optional[Tuple[int, int]], layer: str) -> Array:
    # A hidden unit is a channel; over a spatial map it is read at one position or pooled
    # (mean over all positions/tokens), so the result is [N, C_layer] like logits.
    if act.ndim == 2:
        if position is not None:
            raise ValueError(f"layer {layer!r} has no spatial axes; position must be None")
        return act
    if position is None:
        return jnp.mean(act, axis=tuple(range(1, act.ndim - 1)))
    if act.ndim != 4:
        raise ValueError(f"position needs an NHWC activation; layer {layer!r} gave {act.shape}")
    i, j = position
    h, w = act.shape[1:3]
    # JAX clamps out-of-range indices silently (and wraps negative ones): refuse both.
    if not (0 <= i < h and 0 <= j < w):
        raise ValueError(
            f"position {tuple(position)} is outside layer {layer!r}'s {h}x{w} output "
            f"(rows 0..{h - 1}, columns 0..{w - 1})"
        )
    return act[:, i, j, :]


def check_targets(targets: Any, num_outputs: int, what: str) -> None:
    """ValueError for concrete ``targets`` that are not integer indices in ``[0, num_outputs)``."""
    # Concrete targets only: a traced index has no value to look at without a host sync.
    if isinstance(targets, jax.core.Tracer):
        return
    if isinstance(targets, jax.Array) and not targets.is_fully_addressable:
        return
    t = np.asarray(targets)
    if t.dtype == bool or not (np.issubdtype(t.dtype, np.integer) or t.size == 0):
        raise ValueError(f"targets must be integer {what} indices, got dtype {t.dtype}")
    bad = (t < 0) | (t >= num_outputs)
    if bad.any():
        raise ValueError(
            f"targets must be {what} indices in [0, {num_outputs}); got "
            f"{np.unique(t[bad]).tolist()[:10]} (at {int(bad.sum())} of {t.size} entries)"
        )


def _check_input(x: Any) -> Array:
    # Rank and dtype are static: checked always. Values only when x is concrete (an eager
    # call): under jit/vmap/eval_shape x is a tracer and a check would need a host sync.
    # The channel count is the model's to check (zoo models do, see models.common.check_input).
    x = jnp.asarray(x)
    if x.ndim != 4:
        hint = "; for a single image add the batch axis: x[None]" if x.ndim == 3 else ""
        raise ValueError(
            f"explain expects x as an NHWC batch [N, H, W, C], got shape {x.shape}{hint}"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        hint = ""
        if jnp.issubdtype(x.dtype, jnp.integer):
            hint = (
                "; scale integer (uint8) images to floats in [0, 1] first (x / 255), then encode "
                "them as the model expects (bcos_jax.add_inverse for a B-cos model)"
            )
        raise ValueError(f"explain expects a floating-point x, got dtype {x.dtype}{hint}")
    if not isinstance(x, jax.core.Tracer) and x.is_fully_addressable:
        bad = int(x.size - jnp.count_nonzero(jnp.isfinite(x)))
        if bad:
            raise ValueError(
                f"explain got {bad} non-finite value(s) (NaN or inf) in x of shape {x.shape}; "
                "the explanation and the logits would be NaN. Check how the images were loaded and "
                "encoded"
            )
    return x


def explain(
    model: nn.Module,
    variables: Any,
    x: Array,
    targets: Optional[Array] = None,
    *,
    layer: Union[str, Sequence[str], None] = None,
    position: Optional[Tuple[int, int]] = None,
    **apply_kwargs: Any,
) -> Explanation:
    """Explain ``targets`` of ``model`` on the batch ``x`` with one forward pass.

    Args:
      model: a Flax module following the model contract (module docstring).
      variables: its variables (``{'params': ..., 'batch_stats': ...}``).
      x: [N, H, W, C_in] encoded input (6 channels ``[x, 1-x]`` for B-cos models).
      targets: None (explain the argmax), [N] one index per image, or [N, K] K indices per
        image (results get a leading K axis; the forward pass is still computed once and
        the K backward passes are vmapped).
      layer: explain a hidden unit instead of a logit: the '/'-separated path of a
        submodule (e.g. ``'layer3/1/conv2'``); ``targets`` then index its channels.
      position: with ``layer``, the (row, col) of the unit in the layer's output; None
        averages the channel over all positions.
      **apply_kwargs: passed to ``model.apply`` (e.g. extra static flags).

    Returns:
      An ``Explanation``. Pure and jittable (``jax.jit(explain, static_argnums=0)``, with
      ``layer``/``position`` static); works on sharded batches and under ``jax.vmap``.

    Raises:
      ValueError: ``x`` is not a floating-point NHWC batch (static: also under ``jit``);
        eagerly (``x`` a concrete array, not a tracer) also when ``x`` holds NaN or inf. Under
        ``jit``/``vmap`` (``explain_fn``) values are not checked, since that would need a
        host sync: non-finite inputs then give NaN explanations. A zoo model raises its own
        ValueError for the wrong number of channels (e.g. RGB without ``add_inverse``).
        Concrete ``targets`` outside ``[0, C)`` (C logits, or the layer's channels) or of a
        non-integer dtype, and a ``position`` outside the layer's output, are ValueErrors.
        Traced targets (under ``jit``/``vmap``) cannot be checked: an out-of-range one gives
        NaN weights, contributions and bias for that image.
    """
    x = _check_input(x)

    if layer is None:

        def forward(inp):
            out = model.apply(variables, inp, train=False, explain=True, **apply_kwargs)
            out = logits_of(out)
            return out.astype(accum_dtype(out.dtype))

    else:
        path = _layer_filter(layer)
        name = "/".join(path)

        def forward(inp):
            _, state = model.apply(
                variables,
                inp,
                train=False,
                explain=True,
                capture_intermediates=lambda mdl, method: method == "__call__"
                and tuple(mdl.path) == path,
                mutable=["intermediates"],
                **apply_kwargs,
            )
            act = _find_intermediate(state.get("intermediates", {}), path, name)
            units = _unit_values(act, position, name)
            return units.astype(accum_dtype(units.dtype))

    outputs, vjp_fn = jax.vjp(forward, x)
    n, c = outputs.shape

    multi = targets is not None and jnp.ndim(targets) == 2
    if targets is None:
        tgt = jnp.argmax(outputs, axis=-1)[None]
    else:
        what = "class" if layer is None else f"channel (of layer {name!r})"
        check_targets(targets, c, what)
        tgt = jnp.asarray(targets, jnp.int32)
        if tgt.ndim not in (1, 2) or tgt.shape[0] != n:
            raise ValueError(f"targets must be [N] or [N, K] with N={n}, got shape {tgt.shape}")
        tgt = tgt.T if multi else tgt[None]  # [K, N]

    def one(t):
        cot = jax.nn.one_hot(t, c, dtype=outputs.dtype)
        (w,) = vjp_fn(cot)
        # Traced targets are not checked (see Raises): an index outside [0, C) gives NaN
        # weights and bias rather than a plausible-looking all-zero explanation.
        valid = (t >= 0) & (t < c)
        w = jnp.where(valid[:, None, None, None], w.astype(outputs.dtype), jnp.nan)
        contrib = jnp.sum(x.astype(outputs.dtype) * w, axis=-1)
        selected = jnp.take_along_axis(outputs, jnp.clip(t, 0, c - 1)[:, None], axis=1)[:, 0]
        return w, contrib, selected - jnp.sum(contrib, axis=(1, 2))

    weights, contributions, bias = jax.vmap(one)(tgt)
    if not multi:
        tgt, weights, contributions, bias = tgt[0], weights[0], contributions[0], bias[0]
    return Explanation(
        logits=outputs, targets=tgt, weights=weights, contributions=contributions, bias=bias
    )


def explain_fn(model: nn.Module, **kwargs: Any) -> Callable[..., Explanation]:
    """``jax.jit``-compiled ``explain`` for a fixed model: ``fn(variables, x, targets=None)``."""

    @jax.jit
    def fn(variables, x, targets=None):
        return explain(model, variables, x, targets, **kwargs)

    return fn
