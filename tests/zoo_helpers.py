"""Zoo test helpers shared by the model-family tests: state_dict keys, listings, shapes."""
from __future__ import annotations

import functools
import pathlib

from tests.torch_ref import randomize_norm_stats, rel_err, torch_explain

import jax
import jax.numpy as jnp
import numpy as np

from bcos_jax import convert, models
from bcos_jax.explain import explain
from tests.precision import run_float64


def torch_state_dict(name: str, model) -> dict:
    prefix = models.get_spec(name).torch_prefix
    return {prefix + k: v for k, v in model.state_dict().items()}


def encoded_image(n: int, size: int, seed: int = 0) -> np.ndarray:
    x = np.random.RandomState(seed).rand(n, size, size, 3).astype(np.float32)
    return np.concatenate([x, 1.0 - x], axis=-1)


@functools.cache
def abstract_variables(name: str):
    spec = models.get_spec(name)
    model = models.create(name)
    shape = (1, spec.input_size, spec.input_size, spec.in_channels)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))


def structure_mismatch(name: str, shapes: dict) -> list:
    """What ``convert.from_torch`` would reject, from key -> shape alone (no arrays built)."""
    abstract = abstract_variables(name)
    target = {
        (c,) + p: v.shape for c, tree in abstract.items() for p, v in convert._flatten(tree).items()
    }
    prefix, filled, bad = models.get_spec(name).torch_prefix, set(), []
    for key, shape in shapes.items():
        parts = key[len(prefix):].split(".") if key.startswith(prefix) else None
        if parts is None:
            bad.append(f"unexpected {key}")
            continue
        if parts[-1] == "num_batches_tracked":
            continue
        hit = next(
            (f for f in ((c,) + p for c, p in convert._candidates(parts)) if f in target), None
        )
        if hit is None:
            if parts[-1] != "running_mean":
                bad.append(f"unexpected {key}")
            continue
        zeros = np.broadcast_to(np.float32(0), shape)  # a view: no memory for big kernels
        if convert._to_flax_array(zeros, hit[1:], target[hit]) is None:
            bad.append(f"mis-shaped {key} {shape} vs {target[hit]}")
        filled.add(hit)
    bad += [f"missing {'/'.join(k)}" for k in target if k not in filled]
    return bad


def param_count(name: str) -> int:
    return sum(
        int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(abstract_variables(name)["params"])
    )


def read_listing(path: pathlib.Path) -> dict:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape, _ = line.split("\t")
            out[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return out


def explain_parity(name: str, tmodel, x: np.ndarray, targets, float64: bool = False, **arch):
    """Convert ``tmodel``, compare logits (<= 1e-4) and W(x) (<= 1e-3) with the reference in
    explanation mode and check completeness; returns (model, variables, explanation).

    ``float64=True`` compares in double precision (<= 1e-10): for models with MaxOut or
    max-pooling, whose choices float32 rounding can flip between frameworks and CPUs
    (tests/precision.py)."""
    tmodel.eval()
    randomize_norm_stats(tmodel)
    variables = convert.from_torch(name, torch_state_dict(name, tmodel), **arch)
    model = models.create(name, **arch)
    logits_t, w_t, _ = torch_explain(tmodel, x, targets, float64=float64)

    def run(v, inp, t):
        return jax.jit(lambda v, inp, t: explain(model, v, inp, t))(
            v, jnp.asarray(inp), jnp.asarray(t)
        )

    e = run_float64(run, variables, x, targets) if float64 else run(variables, x, targets)
    tol_logits, tol_w, tol_sum = (1e-10, 1e-10, 1e-12) if float64 else (1e-4, 1e-3, 1e-5)
    assert rel_err(e.logits, logits_t) <= tol_logits
    assert rel_err(e.weights, w_t) <= tol_w
    selected = np.take_along_axis(np.asarray(e.logits), np.asarray(targets)[:, None], 1)[:, 0]
    total = np.asarray(e.contributions).sum((1, 2)) + e.bias
    np.testing.assert_allclose(total, selected, rtol=tol_sum, atol=tol_sum)
    return model, variables, e
