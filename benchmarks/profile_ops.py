"""Where the time goes: per-HLO-op profile of a jitted B-cos (or standard) model on CPU.

    .venv/bin/python benchmarks/profile_ops.py --model resnet50 --what forward [--top 25]
    .venv/bin/python benchmarks/profile_ops.py --model standard_resnet50 --what train

Traces ``--runs`` calls with ``jax.profiler`` after warm-up, reads the XSpace back with
``jax.profiler.ProfileData`` and sums the duration of every executed thunk (an HLO
instruction: a convolution, a dot, a fusion, a reduce-window, a copy ...). Every thunk is
put in a category from the optimised HLO (``compiled.as_text()``):

* ``conv fwd`` / ``conv bwd-data`` / ``conv bwd-filter``: convolutions (thunks or fusions
  holding one) of the forward pass, or the transposes autodiff produced, told apart by
  their metadata op_name (``transpose(jvp(...))`` = backward; the filter gradient is the
  one whose output is the kernel shape);
* ``dot``: matmuls; ``reduce-window``: the patch-norm window sums and pools;
* ``elementwise/reduce fusion``: everything else XLA fused (B-cos epilogue, norms, Adam);
* ``copy/transpose``: layout changes.

Times are summed over all threads (two cores: the sum can exceed the wall time).
"""
from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bcos_jax import explain_fn, models
from benchmarks.common import train_step

_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\S+)\s+([\w\-]+)\(")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_OPNAME = re.compile(r'op_name="([^"]*)"')


def parse_hlo(text: str):
    """instruction name -> (opcode, shape, op_name, called computation); computation -> opcodes."""
    instrs, comps, cur = {}, collections.defaultdict(list), None
    for line in text.splitlines():
        if not line.startswith(" ") and "{" in line and ("%" in line or "ENTRY" in line):
            m = re.search(r"%?([\w.\-]+)\s*\(", line.replace("ENTRY ", ""))
            cur = m.group(1) if m else None
            continue
        m = _INSTR.match(line)
        if not m:
            continue
        name, shape, op = m.groups()
        calls = _CALLS.search(line)
        opn = _OPNAME.search(line)
        instrs[name] = (op, shape, opn.group(1) if opn else "", calls.group(1) if calls else None)
        if cur:
            comps[cur].append((op, shape, opn.group(1) if opn else ""))
    return instrs, comps


def categorise(name: str, instrs, comps, batch: int) -> str:
    if name not in instrs:
        base = name.split(":")[0]
        if base in instrs:
            name = base
        else:
            return "other:" + re.sub(r"[.\d]+$", "", name)
    op, shape, opname, calls = instrs[name]
    inner = comps.get(calls, []) if calls else []
    convs = [(o, s, n) for o, s, n in inner if o == "convolution"]
    if op == "convolution" or convs:
        _, s, n = (op, shape, opname) if op == "convolution" else convs[0]
        if "transpose(" not in n:
            return "conv fwd"
        return "conv bwd-data" if _leading_dim(s) == batch else "conv bwd-filter"
    dots = [(o, s, n) for o, s, n in inner if o == "dot"]
    if op == "dot" or dots:
        _, s, n = (op, shape, opname) if op == "dot" else dots[0]
        return "dot fwd" if "transpose(" not in n else "dot bwd"
    if op == "reduce-window" or any(o == "reduce-window" for o, _, _ in inner):
        return "reduce-window"
    if op in ("copy", "transpose") or (
        inner and all(o in ("copy", "transpose", "parameter", "bitcast") for o, _, _ in inner)
    ):
        return "copy/transpose"
    if op == "fusion" or "fusion" in op:
        if any(o == "reduce" for o, _, _ in inner):
            return "reduce fusion"
        return "elementwise fusion"
    return op


def _leading_dim(shape: str) -> int:
    dims = re.findall(r"\[([\d,]*)\]", shape)
    return int(dims[0].split(",")[0]) if dims and dims[0] else -1


def profile(fn, args, runs: int = 3):
    """Trace ``runs`` calls of jitted ``fn(*args)``: {thunk name: total ns}, wall s, hlo text."""
    compiled = fn.lower(*args).compile()
    text = compiled.as_text()
    jax.block_until_ready(fn(*args))
    jax.block_until_ready(fn(*args))
    d = tempfile.mkdtemp(prefix="bcos_prof_")
    import time

    with jax.profiler.trace(d):
        t0 = time.perf_counter()
        for _ in range(runs):
            jax.block_until_ready(fn(*args))
        wall = (time.perf_counter() - t0) / runs
    (path,) = glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True)
    pd = jax.profiler.ProfileData.from_file(path)
    totals = collections.Counter()
    for plane in pd.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            for ev in line.events:
                stats = dict(ev.stats)
                if "hlo_op" in stats:
                    totals[stats["hlo_op"]] += ev.duration_ns / runs
    return totals, wall, text


def report(totals, wall, text, top: int, title: str, batch: int, only: str = ""):
    instrs, comps = parse_hlo(text)
    cats = collections.Counter()
    for name, ns in totals.items():
        cats[categorise(name, instrs, comps, batch)] += ns
    busy = sum(totals.values())
    print(
        f"== {title}: wall {wall * 1e3:.0f} ms/call, op time summed over threads {busy / 1e6:.0f} "
        "ms"
    )
    for c, ns in cats.most_common():
        print(f"  {c:<22} {ns / 1e6:8.1f} ms  {100 * ns / busy:5.1f}%")
    if top:
        print(f"  top {top} ops{' of ' + only if only else ''}:")
        ranked = [
            (n, v)
            for n, v in totals.most_common()
            if not only or categorise(n, instrs, comps, batch) == only
        ]
        for name, ns in ranked[:top]:
            op, shape, opname, _ = instrs.get(name, ("?", "?", "", None))
            print(
                f"    {ns / 1e6:7.1f} ms  {name:<28} {categorise(name, instrs, comps, batch):<18} "
                f"{shape[:40]:<40} {opname[-70:]}"
            )
    return cats


def build(name: str, what: str, batch: int, size: int, remat: bool = False):
    model = models.create(name)
    spec = models.get_spec(name)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(batch, size, size, spec.in_channels)), jnp.float32)
    variables = jax.jit(lambda: model.init(jax.random.key(0), x[:1], train=False))()
    if what == "forward":
        return jax.jit(lambda v, x: model.apply(v, x, train=False)), (variables, x)
    if what == "explain":
        return explain_fn(model), (variables, x)
    tx = optax.adam(1e-3)
    params, extra = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    y = jax.nn.one_hot(jnp.arange(batch) % 1000, 1000)

    return jax.jit(train_step(model, tx)), (params, tx.init(params), extra, x, y)


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--what", choices=["forward", "explain", "train"], default="forward")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument(
        "--only",
        default="",
        help="list the top ops of this category only (e.g. 'elementwise fusion')",
    )
    args = ap.parse_args()
    fn, fargs = build(args.model, args.what, args.batch, args.size)
    totals, wall, text = profile(fn, fargs, args.runs)
    print(f"load average {os.getloadavg()[0]:.2f}")
    report(
        totals,
        wall,
        text,
        args.top,
        f"{args.model} {args.what} batch {args.batch} {args.size}²",
        args.batch,
        args.only,
    )


if __name__ == "__main__":
    main()
