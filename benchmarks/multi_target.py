"""Explaining K classes of one image: one call with targets [1, K] against K separate calls.

    .venv/bin/python benchmarks/multi_target.py [--model resnet50 --k 1 5 10 --size 224]

One call runs the forward pass once and vmaps K backward passes over one-hot cotangents, so
its cost should be about forward + K·backward, not K·(forward + backward). Also prints the
cost of the plain forward, to read the per-target backward cost off the table.
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bcos_jax import explain_fn, models
from benchmarks.common import fmt, header, load, timeit, timeit_pair


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 5, 10])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(header())
    model = models.create(args.model)
    spec = models.get_spec(args.model)
    x = jnp.asarray(
        np.random.default_rng(0).uniform(size=(1, args.size, args.size, spec.in_channels)),
        jnp.float32,
    )
    variables = jax.jit(lambda: model.init(jax.random.key(0), x, train=False))()
    fn = explain_fn(model)
    fwd = jax.jit(lambda v, x: model.apply(v, x, train=False))
    t_fwd = timeit(lambda: jax.block_until_ready(fwd(variables, x)), args.repeats)
    t_one = timeit(
        lambda: jax.block_until_ready(fn(variables, x, jnp.zeros((1,), jnp.int32))), args.repeats
    )
    print(f"{args.model} {args.size}²: forward {fmt(t_fwd)}; explain 1 target {fmt(t_one)}")
    for k in args.k:
        tg = jnp.arange(k, dtype=jnp.int32)[None]
        def separate():
            for j in range(k):
                jax.block_until_ready(fn(variables, x, tg[:, j]))

        t_multi, t_sep = timeit_pair(
            lambda: jax.block_until_ready(fn(variables, x, tg)), separate, args.repeats
        )
        bwd = (t_multi["median"] - t_fwd["median"]) / k
        print(
            f"K={k:<3} one call {fmt(t_multi)}  K calls {fmt(t_sep)}  speed-up "
            f"x{t_sep['median'] / t_multi['median']:.2f}  (≈ forward + K × {bwd:.3f}s)  ({load()})",
            flush=True,
        )


if __name__ == "__main__":
    main()
