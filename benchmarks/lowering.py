"""What each lowering choice of ``bcos_jax.layers`` buys, measured on whole models.

    .venv/bin/python benchmarks/lowering.py [--model resnet50 --batch 8 --what train_step explain]

``BcosConv`` computes its linear part ``ŵᵀx`` in one of several ways (``layers._linear_and_norm``):
1x1 convs as a matmul with a hand-written backward (``_pointwise``: one 2-D weight-gradient
dot), strided stems with a space-to-depth input
gradient (``_conv_s2d``). This script swaps each choice back for the plain alternative, in
the same process, and times the model's training step and explanation against the
shipped configuration (timed alternately, medians; ratio = variant / shipped, > 1 means the
shipped choice is faster):

* ``autodiff matmul``: 1x1 convs still as matmuls, but differentiated by JAX;
* ``lax conv for 1x1``: 1x1 convs as ``lax.conv_general_dilated`` (how the layer started);
* ``no space-to-depth``: strided stems differentiated by JAX (dilated-input convolution);
* ``memory scheduler``: no code change, XLA:CPU's memory-optimising scheduler
  (``xla_cpu_scheduler_type``), which ``memory_compile.py`` shows lowers the peak memory.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bcos_jax import explain_fn, layers, models
from benchmarks.common import fmt, header, load, timeit_pair, train_step

VARIANTS = {  # name: (changes to bcos_jax.layers, XLA compiler options)
    "autodiff matmul": ({"_pointwise": layers._matmul}, None),
    "lax conv for 1x1": ({"_is_pointwise": lambda *a: False}, None),
    "no space-to-depth": ({"_space_to_depth_transpose_pays": lambda *a: False}, None),
    "memory scheduler": ({}, {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}),
}


@contextlib.contextmanager
def patched(changes):
    old = {k: getattr(layers, k) for k in changes}
    try:
        for k, v in changes.items():
            setattr(layers, k, v)
        yield
    finally:
        for k, v in old.items():
            setattr(layers, k, v)


def compiled_fns(model, variables, x, y, options=None):
    """(train step, explanation) compiled now, so that a later patch does not change them."""
    tx = optax.adam(1e-3)
    params, extra = variables["params"], {k: v for k, v in variables.items() if k != "params"}

    step = train_step(model, tx)
    # x and y are arguments, not closure constants (which XLA would constant-fold into the
    # input's patch norm).
    opt_state = tx.init(params)
    step_c = jax.jit(step).lower(params, opt_state, extra, x, y).compile(compiler_options=options)
    expl = explain_fn(model)
    expl_c = jax.jit(lambda v, x: expl(v, x)).lower(variables, x).compile(compiler_options=options)
    return {
        "train_step": lambda: jax.block_until_ready(step_c(params, opt_state, extra, x, y)),
        "explain": lambda: jax.block_until_ready(expl_c(variables, x)),
    }


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--what", nargs="+", default=["train_step", "explain"], choices=["train_step", "explain"]
    )
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = ap.parse_args()
    print(header())
    print(f"{args.model}, batch {args.batch}, {args.size}², float32", flush=True)
    spec = models.get_spec(args.model)
    model = models.create(args.model)
    rng = np.random.default_rng(0)
    x = jnp.asarray(
        rng.uniform(size=(args.batch, args.size, args.size, spec.in_channels)), jnp.float32
    )
    y = jax.nn.one_hot(jnp.arange(args.batch) % 1000, 1000)
    variables = jax.jit(lambda: model.init(jax.random.key(0), x[:1], train=False))()
    shipped = compiled_fns(model, variables, x, y)
    for name in args.variants:
        changes, options = VARIANTS[name]
        with patched(changes):
            variant = compiled_fns(model, variables, x, y, options)
        for k in args.what:
            s, v = timeit_pair(shipped[k], variant[k], args.repeats)
            print(
                f"{k:<10} shipped {fmt(s)}  {name:<18} {fmt(v)}  ratio "
                f"x{v['median'] / s['median']:.2f}  ({load()})",
                flush=True,
            )


if __name__ == "__main__":
    main()
