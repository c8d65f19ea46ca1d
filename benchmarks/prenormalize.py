"""Inference with kernels normalised once (``layers.prenormalize``) against per-call normalisation.

    .venv/bin/python benchmarks/prenormalize.py \\
        [--models resnet50 simple_vit_s_patch16_224 --batch 1 8]

Every B-cos layer divides its kernel by its norm at each call: O(parameters) work (25 M
for ResNet-50) next to O(batch · activations) work, so it matters most at small batches.
Forward and explanation (``explain_fn``), both variable trees timed alternately.
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bcos_jax import explain_fn, layers, models
from benchmarks.common import fmt, header, load, timeit_pair


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", nargs="+", default=["resnet50", "simple_vit_s_patch16_224"])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    print(header())
    for name in args.models:
        model = models.create(name)
        spec = models.get_spec(name)
        for batch in args.batch:
            x = jnp.asarray(
                np.random.default_rng(0).uniform(
                    size=(batch, args.size, args.size, spec.in_channels)
                ),
                jnp.float32,
            )
            variables = jax.jit(lambda: model.init(jax.random.key(0), x[:1], train=False))()
            pre = layers.prenormalize(model, variables, x, train=False)
            fwd = jax.jit(lambda v, x: model.apply(v, x, train=False))
            expl = explain_fn(model)
            for what, fn in (("forward", fwd), ("explain", expl)):
                a, b = timeit_pair(lambda: jax.block_until_ready(fn(variables, x)),
                                   lambda: jax.block_until_ready(fn(pre, x)), args.repeats)
                print(f"{name} batch {batch} {what:<8} per-call {fmt(a)}  prenormalized {fmt(b)}  "
                      f"speed-up x{a['median'] / b['median']:.2f}  ({load()})", flush=True)


if __name__ == "__main__":
    main()
