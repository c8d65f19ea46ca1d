"""Helpers shared by the attribution methods: targets, input gradients, chunked loops, resizing.

Conventions (every method follows them):

* ``x`` is the *model input* [N, H, W, C_in] (the 6-channel ``[x, 1-x]`` encoding for B-cos
  models, the normalised image for standard ones), as in the v2 reference where post-hoc
  methods see the tensor the model sees.
* ``targets`` is None (the argmax class), [N] (one class per image) or [N, K] (K classes per
  image). Results are [N, H, W, C'] for [N]/None targets and [K, N, H, W, C'] for [N, K]
  targets: a leading K axis, as in ``bcos_jax.explain``.
* C' is C_in for per-input-element methods (gradients, IG, ...) and 1 for methods that give
  one value per pixel (Grad-CAM, Occlusion, RISE, LIME). Metrics sum over the last axis.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from bcos_jax.explain import check_targets

Array = jax.Array

__all__ = [
    "check_input",
    "finish",
    "input_gradients",
    "nearest_resize",
    "pad_to_multiple",
    "prepare_targets",
    "scan_chunks",
    "select_targets",
    "target_vjps",
]


def check_input(x: Any, method: str) -> Array:
    """``x`` as a floating NHWC array, or a ValueError naming the problem."""
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"{method}: expected an NHWC batch [N, H, W, C], got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{method}: expected a floating-point input, got dtype {x.dtype}")
    return x


def prepare_targets(
    targets: Optional[Any], logits: Optional[Array], n: int, method: str
) -> Tuple[Array, bool]:
    """Targets as an int32 [N, K] array and whether the caller asked for K targets per image.

    ``targets=None`` needs ``logits`` (the argmax class is explained). With ``logits``,
    concrete targets outside ``[0, C)`` are a ValueError (as in ``bcos_jax.explain``).
    """
    if targets is None:
        if logits is None:
            raise ValueError(f"{method}: targets=None needs the model's logits")
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)[:, None], False
    t = jnp.asarray(targets)
    if not jnp.issubdtype(t.dtype, jnp.integer):
        raise ValueError(f"{method}: targets must be integer class indices, got dtype {t.dtype}")
    if t.ndim not in (1, 2) or t.shape[0] != n:
        raise ValueError(f"{method}: targets must be [N] or [N, K] with N={n}, got shape {t.shape}")
    if logits is not None:  # concrete targets in [0, C) (traced ones cannot be checked)
        try:
            check_targets(targets, logits.shape[-1], "class")
        except ValueError as e:
            raise ValueError(f"{method}: {e}") from None
    multi = t.ndim == 2
    return (t if multi else t[:, None]).astype(jnp.int32), multi


def finish(attr: Array, multi: bool) -> Array:
    """[K, N, ...] -> [N, ...] when a single target per image was requested."""
    return attr if multi else attr[0]


def select_targets(values: Array, tgt: Array) -> Array:
    """values [..., N, C] and tgt [N, K] -> [..., N, K] (the target columns)."""
    idx = jnp.broadcast_to(tgt, values.shape[:-1] + tgt.shape[-1:])
    return jnp.take_along_axis(values, idx, axis=-1)


def input_gradients(fn: Callable[[Array], Array], x: Array, tgt: Array) -> Tuple[Array, Array]:
    """Gradients of the target logits w.r.t. the input: one forward, K vmapped backwards.

    fn: [M, ...] -> [M, C] logits; x: [M, ...]; tgt: [M, K] int.
    Returns (logits [M, C], gradients [K, M, ...]).
    """
    logits, vjp_fn = jax.vjp(fn, x)
    return logits, target_vjps(vjp_fn, logits, tgt)


def target_vjps(vjp_fn: Callable, logits: Array, tgt: Array) -> Array:
    """One backward pass per target column: one-hot cotangents on ``logits`` [M, C], vmapped.

    tgt: [M, K] -> [K, *input shape] (the first output of ``vjp_fn`` for each target).
    """
    num_classes = logits.shape[-1]
    return jax.vmap(lambda t: vjp_fn(jax.nn.one_hot(t, num_classes, dtype=logits.dtype))[0])(tgt.T)


def pad_to_multiple(tree: Any, chunk: int) -> Tuple[Any, Array]:
    """Pad the leading axis of every leaf to a multiple of ``chunk`` (repeating the last row).

    Returns (padded tree, valid [S_pad] float32 mask): padded rows must get weight 0.
    """
    leaves = jax.tree.leaves(tree)
    s = leaves[0].shape[0]
    pad = (-s) % chunk

    def one(a):
        a = jnp.asarray(a)
        if pad == 0:
            return a
        return jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)], axis=0)

    valid = jnp.concatenate([jnp.ones((s,), jnp.float32), jnp.zeros((pad,), jnp.float32)])
    return jax.tree.map(one, tree), valid


def scan_chunks(body: Callable[[Any], Any], items: Any, chunk: int, accumulate: bool) -> Any:
    """Run ``body`` over ``items`` (a pytree with a leading axis S) ``chunk`` rows at a time.

    ``body(items_chunk)`` sees leaves of shape [chunk, ...] (padded rows included: weight
    them with the ``valid`` field callers put into ``items``). With ``accumulate`` the
    per-chunk results are summed (bounded memory: IG steps, RISE masks, occlusion windows);
    otherwise they are stacked to [S_pad // chunk, ...] (the caller reshapes/trims).

    A ``lax.scan``: compiled once, sequential over chunks, batched within a chunk.
    """
    s = jax.tree.leaves(items)[0].shape[0]
    if s % chunk:
        raise ValueError(f"internal error: {s} items are not a multiple of the chunk {chunk}")
    chunks = jax.tree.map(lambda a: a.reshape((s // chunk, chunk) + a.shape[1:]), items)
    if accumulate:
        first = jax.tree.map(lambda a: a[0], chunks)
        init = jax.tree.map(jnp.zeros_like, jax.eval_shape(body, first))

        def step(acc, c):
            return jax.tree.map(jnp.add, acc, body(c)), None

        out, _ = jax.lax.scan(step, init, chunks)
        return out
    _, ys = jax.lax.scan(lambda carry, c: (carry, body(c)), None, chunks)
    return ys


def nearest_resize(a: Array, size: Tuple[int, int]) -> Array:
    """torch ``F.interpolate(mode='nearest')`` on the two axes before the last one.

    a: [..., h, w, C] -> [..., H, W, C] with source index ``floor(i * h / H)`` (torch's
    'nearest', not jax.image's half-pixel rule; they differ for non-integer ratios).
    """
    h, w = a.shape[-3], a.shape[-2]
    rows = np.floor(np.arange(size[0]) * (h / size[0])).astype(np.int32)
    cols = np.floor(np.arange(size[1]) * (w / size[1])).astype(np.int32)
    return jnp.take(jnp.take(a, rows, axis=-3), cols, axis=-2)
