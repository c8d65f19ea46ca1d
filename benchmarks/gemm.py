"""The matrix products of ViT-S/16 (batch 8) alone: XLA:CPU against torch, same machine, one run.

    .venv/bin/python benchmarks/gemm.py [--repeats 21]

ViT-S/16 spends 78 % of its forward pass in these products (``profile_ops.py``), so their
speed bounds how fast a ViT can be here whatever the B-cos layers do. Timed alternately
(torch, jax, ...); speed-up = torch median / jax median (< 1: torch's BLAS is faster).
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see compare_torch.py

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import header, load, timeit_pair

TOKENS = 8 * 196  # batch 8, 14 x 14 patches
CASES = {
    "mlp linear1 [1568,384]x[384,1536]": (TOKENS, 384, 1536),
    "mlp linear2 [1568,1536]x[1536,384]": (TOKENS, 1536, 384),
    "to_qkv [1568,384]x[384,1152]": (TOKENS, 384, 1152),
    "to_out [1568,384]x[384,384]": (TOKENS, 384, 384),
}


def _line(name, t, j):
    ms = "{:.2f} ms [{:.2f}-{:.2f}]".format
    return (
        f"{name:<42} torch {ms(t['median'] * 1e3, t['min'] * 1e3, t['max'] * 1e3):<26} jax "
        f"{ms(j['median'] * 1e3, j['min'] * 1e3, j['max'] * 1e3):<26} speed-up "
        f"x{t['median'] / j['median']:.2f}  ({load()})"
    )


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=21)
    args = ap.parse_args()
    import torch

    print(header())
    print(
        f"jax {jax.__version__}; torch {torch.__version__} threads {torch.get_num_threads()}; "
        "float32",
        flush=True,
    )
    rng = np.random.default_rng(0)
    matmul = jax.jit(lambda a, b: a @ b)
    for name, (m, k, n) in CASES.items():
        a, b = rng.random((m, k), np.float32), rng.random((k, n), np.float32)
        ta, tb, ja, jb = torch.from_numpy(a), torch.from_numpy(b), jnp.asarray(a), jnp.asarray(b)
        t, j = timeit_pair(
            lambda: ta @ tb, lambda: matmul(ja, jb).block_until_ready(), args.repeats
        )
        print(_line(name, t, j), flush=True)
    q = rng.random((8, 6, 196, 64), np.float32)
    p = rng.random((8, 6, 196, 196), np.float32)
    tq, tp, jq, jp = (torch.from_numpy(q), torch.from_numpy(p), jnp.asarray(q), jnp.asarray(p))
    qk = jax.jit(lambda q: jnp.einsum("nhqd,nhkd->nhqk", q, q))
    av = jax.jit(lambda p, v: jnp.einsum("nhqk,nhkd->nhqd", p, v))
    t, j = timeit_pair(
        lambda: tq @ tq.transpose(-1, -2), lambda: qk(jq).block_until_ready(), args.repeats
    )
    print(_line("attention q·kᵀ [48,196,64]x[48,64,196]", t, j), flush=True)
    t, j = timeit_pair(lambda: tp @ tq, lambda: av(jp, jq).block_until_ready(), args.repeats)
    print(_line("attention attn·v [48,196,196]x[48,196,64]", t, j), flush=True)


if __name__ == "__main__":
    main()
