"""Guided Backprop and DeepLIFT (rescale rule): modified backward passes through ReLUs.

Both only change how gradients pass the ReLUs of a network, as captum does by hooking every
``nn.ReLU`` module. The mechanism here needs no cooperation from the model: ``with_relu_rule``
traces ``fn`` to a jaxpr and re-evaluates it with every ReLU replaced by a ``jax.custom_vjp``
function carrying the rule. A ReLU is recognised as a call of ``jax.nn.relu`` (which
``flax.linen.relu`` is, and which every zoo model's ``act`` factory uses); other spellings
(``jnp.maximum(x, 0)``, ``relu6``) are left alone, as captum leaves functional ReLUs alone.
ReLUs inside ``jit``/``remat``/``custom_jvp`` calls are found; a ReLU inside another control
primitive (``scan``, ``while``, ``cond``) raises an error instead of being silently skipped.

On a B-cos network there are no ReLUs: Guided Backprop is then the plain gradient and
DeepLIFT is input×gradient (of the ordinary forward pass), as with captum on the reference.
Max-pooling keeps its ordinary gradient (captum's DeepLIFT has an extra max-pool rule).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from bcos_jax.attribution._common import check_input, finish, prepare_targets, target_vjps
from bcos_jax.attribution.model_fns import as_model_fns

Array = jax.Array

__all__ = [
    "deeplift",
    "deeplift_relu",
    "guided_backprop",
    "guided_relu",
    "with_relu_rule",
    "count_relus",
]

# Higher-order primitives whose body we evaluate ourselves (their semantics is "call").
_CALL_PARAMS = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "remat": "jaxpr",
    "checkpoint": "jaxpr",
    "custom_jvp_call": "call_jaxpr",
}


def _sub(eqn) -> Optional[Any]:
    key = _CALL_PARAMS.get(eqn.primitive.name)
    return eqn.params.get(key) if key else None


def _open(j) -> tuple[Any, list]:
    return (j.jaxpr, list(j.consts)) if isinstance(j, jcore.ClosedJaxpr) else (j, [])


def _is_max0(eqn) -> bool:
    if eqn.primitive.name != "max":
        return False
    lits = [v for v in eqn.invars if isinstance(v, jcore.Literal)]
    return len(lits) == 1 and np.ndim(lits[0].val) == 0 and float(lits[0].val) == 0.0


def _is_relu(eqn) -> bool:
    # jax.nn.relu = custom_jvp(jit(max(x, 0), name='relu')); after some transformations only
    # the inner jit(name='relu') is left. Both the name and the body must match.
    if eqn.primitive.name in ("jit", "pjit"):
        if eqn.params.get("name") != "relu":
            return False
        body, _ = _open(eqn.params["jaxpr"])
        return len(body.eqns) == 1 and _is_max0(body.eqns[0])
    if eqn.primitive.name == "custom_jvp_call":
        inner, _ = _open(eqn.params["call_jaxpr"])
        return len(inner.eqns) == 1 and _is_relu(inner.eqns[0])
    return False


def _contains_relu(jaxpr) -> bool:
    for eqn in jaxpr.eqns:
        if _is_relu(eqn):
            return True
        for param in eqn.params.values():
            for j in _jaxprs_in(param):
                if _contains_relu(j):
                    return True
    return False


def _jaxprs_in(param) -> list:
    if isinstance(param, jcore.ClosedJaxpr):
        return [param.jaxpr]
    if isinstance(param, jcore.Jaxpr):
        return [param]
    if isinstance(param, (tuple, list)):
        return [j for p in param for j in _jaxprs_in(p)]
    return []


def count_relus(fn: Callable[[Array], Array], x: Array) -> int:
    """How many ReLU calls ``with_relu_rule`` would rewrite in ``fn`` at input ``x``."""

    def count(jaxpr) -> int:
        total = 0
        for eqn in jaxpr.eqns:
            if _is_relu(eqn):
                total += 1
            else:
                total += sum(count(j) for p in eqn.params.values() for j in _jaxprs_in(p))
        return total

    return count(jax.make_jaxpr(fn)(x).jaxpr)


def _eval(jaxpr, consts, args, rule):
    env = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    for v, val in zip(jaxpr.constvars, consts):
        env[v] = val
    for v, val in zip(jaxpr.invars, args):
        env[v] = val
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        if _is_relu(eqn):
            outs = [rule(invals[0])]
        elif any(_contains_relu(j) for p in eqn.params.values() for j in _jaxprs_in(p)):
            sub = _sub(eqn)
            if sub is None:
                raise NotImplementedError(
                    f"a ReLU inside a '{eqn.primitive.name}' primitive cannot be given a modified "
                    "backward rule; restructure the model so that ReLUs are outside it"
                )
            # Evaluated inline: a custom_jvp's own derivative rule is dropped (its ReLUs get
            # the new rule instead); custom_jvp_call passes its consts as ordinary inputs.
            inner, inner_consts = _open(sub)
            outs = _eval(inner, inner_consts, invals, rule)
        else:
            params = eqn.primitive.get_bind_params(eqn.params)
            ctx = getattr(getattr(eqn, "ctx", None), "manager", None)
            if ctx is not None:
                with ctx:
                    ans = eqn.primitive.bind(*invals, **params)
            else:
                ans = eqn.primitive.bind(*invals, **params)
            outs = ans if eqn.primitive.multiple_results else [ans]
        for v, val in zip(eqn.outvars, outs):
            env[v] = val
    return [read(v) for v in jaxpr.outvars]


def with_relu_rule(
    fn: Callable[[Array], Array], rule: Callable[[Array], Array]
) -> Callable[[Array], Array]:
    """``fn`` with every ``jax.nn.relu`` call replaced by ``rule`` (same forward values).

    fn: one array in, one array out (e.g. x -> logits). Traced per call (cheap under jit).
    """

    def wrapped(x):
        closed = jax.make_jaxpr(fn)(x)
        (out,) = _eval(closed.jaxpr, list(closed.consts), [x], rule)
        return out

    return wrapped


@jax.custom_vjp
def guided_relu(z: Array) -> Array:
    """ReLU whose backward pass lets only positive gradients through positive inputs."""
    return jnp.maximum(z, 0)


def _guided_fwd(z):
    return jnp.maximum(z, 0), z


def _guided_bwd(z, g):
    return (jnp.where((z > 0) & (g > 0), g, jnp.zeros_like(g)),)


guided_relu.defvjp(_guided_fwd, _guided_bwd)

DEEPLIFT_EPS = 1e-10  # captum's threshold below which the multiplier falls back to the gradient


@jax.custom_vjp
def deeplift_relu(z: Array) -> Array:
    """ReLU on a batch ``[inputs; references]`` whose backward uses the rescale multiplier.

    The first half of axis 0 holds activations of the inputs, the second half those of the
    references (as captum concatenates them). Both halves get the multiplier
    ``(relu(z) − relu(z₀)) / (z − z₀)`` (the ordinary derivative where |z − z₀| < 1e-10).
    """
    return jnp.maximum(z, 0)


def _deeplift_fwd(z):
    return jnp.maximum(z, 0), z


def _deeplift_bwd(z, g):
    if z.shape[0] % 2:
        raise ValueError(
            f"deeplift_relu: expected an even batch [inputs; references], got shape {z.shape}"
        )
    zi, zr = jnp.split(z, 2, axis=0)
    dz = zi - zr
    dy = jnp.maximum(zi, 0) - jnp.maximum(zr, 0)
    small = jnp.abs(dz) < DEEPLIFT_EPS
    ratio = dy / jnp.where(small, 1.0, dz)
    m_in = jnp.where(small, (zi > 0).astype(z.dtype), ratio)
    m_ref = jnp.where(small, (zr > 0).astype(z.dtype), ratio)
    return (g * jnp.concatenate([m_in, m_ref], axis=0),)


deeplift_relu.defvjp(_deeplift_fwd, _deeplift_bwd)


def guided_backprop(model: Any, x: Array, targets: Optional[Array] = None) -> Array:
    """Guided Backprop (captum ``GuidedBackprop``, 'GB'): gradient with guided ReLUs."""
    fns = as_model_fns(model, "guided_backprop")
    x = check_input(x, "guided_backprop")
    logits, vjp_fn = jax.vjp(with_relu_rule(fns.logits, guided_relu), x)
    tgt, multi = prepare_targets(targets, logits, x.shape[0], "guided_backprop")
    return finish(target_vjps(vjp_fn, logits, tgt), multi)


def deeplift(
    model: Any, x: Array, targets: Optional[Array] = None, *, baseline: Optional[Array] = None
) -> Array:
    """DeepLIFT with the rescale rule (captum ``DeepLift``, 'DeepLIFT'): (x − x₀) ⊙ multipliers.

    The network is run once on ``[x; x₀]`` (zero baseline by default); the model must treat
    every image independently (eval mode), as captum also assumes.
    """
    fns = as_model_fns(model, "deeplift")
    x = check_input(x, "deeplift")
    n = x.shape[0]
    x0 = (
        jnp.zeros_like(x)
        if baseline is None
        else jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)
    )
    ruled = with_relu_rule(fns.logits, deeplift_relu)

    def f(inp):
        return ruled(jnp.concatenate([inp, x0], axis=0))[:n]

    logits, vjp_fn = jax.vjp(f, x)
    tgt, multi = prepare_targets(targets, logits, n, "deeplift")
    return finish((x - x0)[None] * target_vjps(vjp_fn, logits, tgt), multi)
