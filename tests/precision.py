"""Float64 comparisons in tests (JAX side; ``tests.torch_ref.float64_model`` is the torch side).

A parity test whose result depends on a discontinuous choice (which
MaxOut candidate wins, which max-pool entry, which side of a ReLU, the argmax target) can
flip in float32 when two candidates are closer than float32 rounding: the two frameworks
(and the same framework on another CPU, with other kernels) then pick differently and
the gradients differ by O(1) over a receptive field. Random weights make near-ties
common (relative margins of 1e-6 are seen in the v1 9L net); in float64 the same
computation has ~1e-16 rounding, so the comparison checks the maths on any machine.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _to_float64(a):
    if isinstance(a, (np.ndarray, jax.Array)) and np.issubdtype(a.dtype, np.floating):
        return np.asarray(a, np.float64)
    return a


def run_float64(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with JAX in double precision (``jax.enable_x64``); floating
    array arguments (also inside pytrees such as variables) are cast to float64, and the
    result's leaves come back as NumPy arrays (still float64)."""
    with jax.enable_x64(True):
        args, kwargs = jax.tree.map(_to_float64, (args, kwargs))
        out = fn(*args, **kwargs)
        return jax.tree.map(np.asarray, out)


def bcos_maxout_margin(model, variables, x, **apply_kwargs) -> float:
    """The smallest gap between the winning and the runner-up MaxOut candidate over every
    B-cos layer with ``max_out > 1`` of a Flax model on input ``x``, relative to the largest
    |candidate| of that layer and image, computed in float64 (so the same on any machine).

    Float32 rounding of a dot product is ~1e-6 of that scale: an input whose margin is
    1e-4 or more makes the same MaxOut choices however and wherever it is computed."""
    import flax.linen as nn

    from bcos_jax import layers

    margins = []

    def record(next_fun, args, kwargs, context):
        mod = context.module
        if (
            context.method_name == "__call__"
            and isinstance(mod, (layers.BcosConv, layers.BcosDense))
            and mod.max_out > 1
        ):
            m = mod.max_out
            # B = 1, MaxOut 1 with the same kernel: the candidates' linear outputs ŵᵀx
            # (MaxOut picks among them before the dynamic scale is applied).
            unscaled = {k: None for k in ("scale", "scale_fact") if hasattr(mod, k)}
            plain = mod.clone(parent=None, b=1.0, max_out=1, features=mod.features * m, **unscaled)
            lin = plain.apply({"params": mod.variables["params"]}, args[0])
            lin = lin.reshape(*lin.shape[:-1], mod.features, m)
            top2 = -jnp.sort(-lin, axis=-1)[..., :2]
            gap = (top2[..., 0] - top2[..., 1]).reshape(lin.shape[0], -1)
            scale = jnp.abs(lin).reshape(lin.shape[0], -1).max(1, keepdims=True)
            margins.append(jnp.min(gap / jnp.maximum(scale, 1e-300)))
        return next_fun(*args, **kwargs)

    def run(variables, x):
        with nn.intercept_methods(record):
            model.apply(variables, x, **apply_kwargs)
        if not margins:
            raise ValueError("the model has no B-cos layer with MaxOut")
        return jnp.min(jnp.stack(margins))

    return float(run_float64(run, variables, x))


def logit_margin(fn, x) -> float:
    """The smallest gap between the top two outputs of ``fn(x)`` ([N, C]) over the batch,
    relative to each row's largest |output|, in float64: an argmax target is stable on
    any machine when this is well above float32 rounding (1e-4 or more)."""

    def run(x):
        out = fn(x)
        top2 = -jnp.sort(-out, axis=-1)[:, :2]
        return jnp.min((top2[:, 0] - top2[:, 1]) / jnp.abs(out).max(-1))

    return float(run_float64(run, x))
