"""Training-time *estimates* for the recipes on TPU slices and one GPU, from the compiled step.

    export JAX_PLATFORMS=cpu
    .venv/bin/python benchmarks/tpu_estimates.py --out benchmarks/results/tpu_estimates
    .venv/bin/python benchmarks/tpu_estimates.py --rows imagenet_bcos_final:resnet50@v5e:4x4
    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/tpu_estimates.py --quick --out /tmp/tpu_est

For each row ``config:arg@topology[/chips]`` the real sharded train step of train.py (the
recipe's global batch, dtype, optimiser, EMA) is compiled ahead of time for the described TPU
slice (libtpu, no TPU needed; ``/1`` uses one chip of it). From the compiled executable:

* ``compiled.cost_analysis()``: XLA's count of the floating-point operations and of the bytes
  read and written by all HLO ops of one step, *per chip*;
* ``compiled.memory_analysis()``: the per-chip memory, exactly as ``train.py --aot_topology``
  prints it (``bcos_jax.training.aot.compile_and_report``).

The step time is a roofline with a utilisation factor ``u`` (``--utilisation``, default 0.4):

    step = max(flops / (peak_flops · u), bytes / (hbm_bandwidth · u))

with the chip's published peak (``CHIPS``), and the run takes ``step × total steps`` (the
recipe's epochs × steps per epoch). These are estimates, not measurements: 40 % of peak is a
typical sustained fraction for convolutional training steps, not a property of this code;
gradient all-reduces (data parallelism over ICI) and input pipelines are not modelled.
f32 recipes: XLA runs f32 convolutions and matmuls at DEFAULT precision in bf16 passes on TPU
and in TF32 on H100, so the bf16 / TF32 peaks apply; the bytes are the f32 ones.

*One GPU* (H100 SXM) is estimated from the same compiled program: the per-chip flops and
bytes times the number of chips (the whole global batch), which counts the replicated
optimiser update once per chip (slightly pessimistic), at the H100's published peak and the
same ``u``. XLA's cost analysis counts a while-loop body once, so a recipe with gradient
accumulation is compiled as one micro-batch step and multiplied by the number of
micro-batches (marked in the table).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Published per-chip peaks: dense bf16 FLOP/s (TF32 for f32 on the H100) and HBM bytes/s.
CHIPS = {
    # https://cloud.google.com/tpu/docs/v5e: 197 TFLOP/s bf16, 16 GB HBM2 at 819 GB/s.
    "v5e": dict(bf16=197e12, f32=197e12, hbm=819e9, source="cloud.google.com/tpu/docs/v5e"),
    # https://cloud.google.com/tpu/docs/v4: 275 TFLOP/s bf16, 32 GiB HBM2 at 1200 GB/s.
    "v4": dict(bf16=275e12, f32=275e12, hbm=1200e9, source="cloud.google.com/tpu/docs/v4"),
    # https://cloud.google.com/tpu/docs/v5p: 459 TFLOP/s bf16, 95 GB HBM2e at 2765 GB/s.
    "v5p": dict(bf16=459e12, f32=459e12, hbm=2765e9, source="cloud.google.com/tpu/docs/v5p"),
    # NVIDIA H100 SXM datasheet: 989 TFLOP/s bf16 and 495 TFLOP/s TF32 dense (the datasheet's
    # 1979 / 989 are with 2:4 sparsity), HBM3 at 3.35 TB/s.
    "h100": dict(bf16=989e12, f32=495e12, hbm=3350e9, source="nvidia.com H100 datasheet (SXM)"),
}

# What docs/training.md and the configs quote; --quick compiles one tiny row instead.
DEFAULT_ROWS = (
    "imagenet_bcos_final:resnet50@v5e:4x4",
    "cifar10_v1_9l:2@v5e:2x2/1",
    "cifar10_v2:resnet20@v5e:2x2/1",
    "imagenet_bcos_final:densenet121@v5e:4x4",
    "imagenet_vit_final:simple_vit_s_patch16_224@v5e:4x8",
    "imagenet_vit_final:simple_vit_b_patch16_224@v5e:4x8",
    "imagenet_v1:resnet34@v4:2x2x2",
    "imagenet_bcos_final:resnet50@v4:2x2x2",
    "imagenet_bcos_final:resnet50@v5p:2x2x2",
)
QUICK_ROWS = ("quickstart:ci@v5e:2x2/1",)
# --quick: the quickstart recipe with a ~1k-parameter model on 16x16 images (compiles in seconds).
QUICK_OVERRIDES = {
    "model.widths": (8, 16),
    "model.depth": 1,
    "data.image_size": 16,
    "batch_size": 16,
}

# Dataset sizes (train.py's build needs only the class count and the number of training
# images; the AOT compile must not need the data on disk).
DATASETS = {"imagenet2012": (1000, 1281167), "cifar10": (10, 50000)}


def parse_row(row: str) -> Dict[str, Any]:
    """'config:arg@topology[/chips]' -> its parts; a malformed row is a ValueError naming it."""
    try:
        recipe, topo = row.split("@")
        config, _, arg = recipe.partition(":")
        topology, _, chips = topo.partition("/")
        if not config or ":" not in topology:
            raise ValueError
        return dict(
            row=row, config=config, arg=arg, topology=topology, chips=int(chips) if chips else None
        )
    except ValueError:
        raise ValueError(
            f"row {row!r} is not 'config:arg@generation:layout[/chips]', "
            "e.g. 'imagenet_bcos_final:resnet50@v5e:4x4' or 'cifar10_v2:resnet20@v5e:2x2/1'"
        ) from None


def dataset_sizes(config) -> Tuple[int, int]:
    """(classes, training images) of the config's dataset, without the data on disk."""
    name = config.data.name
    if name == "quickstart":
        from bcos_jax import data

        info = data.dataset_info(config.data)  # generated on the fly: sizes from the config
        return info.num_classes, info.num_train
    if name not in DATASETS:
        raise ValueError(f"no dataset sizes for {name!r}; known: {sorted(DATASETS)}")
    return DATASETS[name]


class _KeepCompiled:
    """Hands ``lower(...).compile()`` through to a jitted function and keeps the executable,
    so that the memory report (aot.compile_and_report) and the cost analysis share one compile."""

    def __init__(self, jitted):
        self.jitted, self.compiled = jitted, None

    def lower(self, *args):
        lowered, keep = self.jitted.lower(*args), self

        class _Lowered:
            def compile(self):
                keep.compiled = lowered.compile()
                return keep.compiled

        return _Lowered()


def compile_row(row: Dict[str, Any], overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Compile the training step of the row's recipe for its topology (as ``train.py
    --aot_topology`` does, optionally on the first ``chips`` devices); cost and memory per chip.

    ``overrides``: dotted config keys -> values applied after the recipe (e.g. a smaller model).
    """
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from bcos_jax.training import aot, defaults, sharding
    from bcos_jax.training import step as step_lib

    path = os.path.join(ROOT, "configs", row["config"] + ".py")
    config = defaults.load_config(path + (":" + row["arg"] if row["arg"] else ""))
    for key, value in (overrides or {}).items():
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
    config = defaults.complete(config)
    num_classes, num_train = dataset_sizes(config)
    steps_per_epoch, total_steps = step_lib.schedule_lengths(config, num_train)
    accum = int(config.grad_accum_steps or 1)
    if accum > 1:  # cost analysis counts a loop body once: compile one micro-batch step
        config.batch_size //= accum
        config.grad_accum_steps = 1

    jax.config.update("jax_threefry_partitionable", True)
    devices, chip = aot.topology_devices(row["topology"])
    devices = devices[: row["chips"]] if row["chips"] else devices
    mesh = sharding.make_mesh(config.mesh, config.dcn_mesh, devices)
    if config.batch_size % mesh.size:
        raise ValueError(
            f"{row['row']}: batch {config.batch_size} not divisible by {mesh.size} chips"
        )
    # The schedule of the real run (accumulation changes the micro-batch, not the updates).
    setup = step_lib.Setup.from_config(config, num_classes, num_train, mesh)
    steps = step_lib.jit_on_mesh(setup, mesh, config.sharding_rules, config.fsdp_min_size)
    s, n = config.data.image_size, config.batch_size
    batch = {
        "image": jax.ShapeDtypeStruct(
            (n, s, s, setup.in_channels), jnp.float32, sharding=steps.batch_sharding
        ),
        "targets": jax.ShapeDtypeStruct(
            (n, num_classes), jnp.float32, sharding=steps.batch_sharding
        ),
    }
    rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=NamedSharding(mesh, P()))
    keep = _KeepCompiled(steps.train_step)
    fits_error, report = None, None
    t0 = time.time()
    try:
        report = aot.compile_and_report(
            keep,
            (steps.abstract_state, batch, rng),
            chip=chip,
            topology=row["topology"],
            mesh_shape=dict(mesh.shape),
            config_name=config.model_name,
            global_batch=n * accum,
            verbose=False,
        )
    except aot.OutOfMemoryError as e:  # still an estimate worth printing; flagged in the table
        fits_error = str(e)
    compile_seconds = time.time() - t0
    cost = keep.compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    if " while(" in keep.compiled.as_text():
        # A loop in the step would be under-counted (its body counted once).
        raise RuntimeError(
            f"{row['row']}: the compiled step has a while loop; XLA's cost analysis "
            "would count its body once"
        )
    return dict(
        row=row["row"],
        config=f"{row['config']}:{row['arg']}" if row["arg"] else row["config"],
        model=config.model_name,
        topology=row["topology"],
        chip=chip,
        chips=mesh.size,
        global_batch=n * accum,
        accum=accum,
        compute_dtype=config.compute_dtype,
        image_size=s,
        epochs=float(config.num_epochs),
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        flops_per_chip=float(cost["flops"]) * accum,
        bytes_per_chip=float(cost["bytes accessed"]) * accum,
        memory=report,
        fits_error=fits_error,
        compile_seconds=compile_seconds,
        overrides=overrides or {},
    )


def estimate(result: Dict[str, Any], utilisation: float) -> Dict[str, Any]:
    """Roofline step time and run time on the row's TPU slice and on one H100 (estimates)."""
    dt = "bf16" if result["compute_dtype"] == "bfloat16" else "f32"

    def roofline(chip, flops, nbytes):
        p = CHIPS[chip]
        t_c, t_m = flops / (p[dt] * utilisation), nbytes / (p["hbm"] * utilisation)
        return max(t_c, t_m), "compute" if t_c >= t_m else "memory"

    step, bound = roofline(result["chip"], result["flops_per_chip"], result["bytes_per_chip"])
    n = result["chips"]
    gpu_step, gpu_bound = roofline(
        "h100", result["flops_per_chip"] * n, result["bytes_per_chip"] * n
    )
    steps = result["total_steps"]
    return dict(
        result,
        utilisation=utilisation,
        step_seconds=step,
        bound=bound,
        hours=step * steps / 3600,
        images_per_s=result["global_batch"] / step,
        h100_step_seconds=gpu_step,
        h100_bound=gpu_bound,
        h100_hours=gpu_step * steps / 3600,
    )


def _ms(seconds: float) -> str:
    ms = 1e3 * seconds
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.3g} ms"


def _fmt_hours(h: float) -> str:
    if h < 1 / 60:
        return f"{h * 3600:.0f} s"
    return f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h" if h < 48 else f"{h / 24:.1f} days"


def markdown(rows: List[Dict[str, Any]], utilisation: float) -> str:
    lines = [
        f"Estimates at {100 * utilisation:.0f} % of the published peak "
        "(roofline of XLA's cost analysis "
        "of the AOT-compiled train step; not measured):",
        "",
        "| config `:arg` | topology (chips) | global batch (per chip) | dtype "
        "| GFLOP / chip / step | GB accessed / chip / step | step (bound) | steps "
        "| **run, estimate** | per chip: total / HBM "
        "| one H100, estimate |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mem = r["memory"]
        mem_s = f"{mem['total_gib']:.2f} / {mem['hbm_gib']:.0f} GiB" if mem else "does not fit"
        accum = (
            f", {r['accum']}×{r['global_batch'] // r['accum']} accumulated"
            if r["accum"] > 1
            else ""
        )
        lines.append(
            f"| `{r['config']}` | {r['topology']} ({r['chips']}) | {r['global_batch']} "
            f"({r['global_batch'] // r['chips']}{accum}) | {r['compute_dtype']} "
            f"| {r['flops_per_chip'] / 1e9:.4g} "
            f"| {r['bytes_per_chip'] / 1e9:.3g} | {_ms(r['step_seconds'])} ({r['bound']}) "
            f"| {r['total_steps']} ({r['epochs']:g} ep) | **{_fmt_hours(r['hours'])}** | {mem_s} "
            f"| {_fmt_hours(r['h100_hours'])} ({_ms(r['h100_step_seconds'])}/step) |"
        )
    chips = sorted({r["chip"] for r in rows} | {"h100"})
    lines += [
        "",
        "Peaks used (dense, per chip): "
        + "; ".join(
            f"{c}: {CHIPS[c]['bf16'] / 1e12:.0f} TFLOP/s bf16"
            + (
                f" ({CHIPS[c]['f32'] / 1e12:.0f} TF32)"
                if CHIPS[c]["f32"] != CHIPS[c]["bf16"]
                else ""
            )
            + f", {CHIPS[c]['hbm'] / 1e9:.0f} GB/s HBM ({CHIPS[c]['source']})"
            for c in chips
        )
        + ".",
    ]
    return "\n".join(lines) + "\n"


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--rows",
        nargs="+",
        help=f"rows 'config:arg@topology[/chips]' (default: {' '.join(DEFAULT_ROWS)})",
    )
    ap.add_argument(
        "--quick", action="store_true", help=f"one small row ({QUICK_ROWS[0]}), seconds"
    )
    ap.add_argument(
        "--utilisation", type=float, default=0.4, help="assumed fraction of the peak (0, 1]"
    )
    ap.add_argument(
        "--out", help="folder for tpu_estimates.json and tpu_estimates.md (written after each row)"
    )
    ap.add_argument(
        "--render",
        nargs="+",
        metavar="JSON",
        help="no compiling: the table of earlier runs' tpu_estimates.json files, in order",
    )
    args = ap.parse_args(argv)
    if not 0 < args.utilisation <= 1:
        ap.error(f"--utilisation must be in (0, 1], got {args.utilisation}")
    if args.render:
        results = []
        for path in args.render:
            with open(path) as f:
                results += [estimate(r, args.utilisation) for r in json.load(f)]
        text = markdown(results, args.utilisation)
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            _write_atomic(
                os.path.join(args.out, "tpu_estimates.json"), json.dumps(results, indent=1)
            )
            _write_atomic(os.path.join(args.out, "tpu_estimates.md"), text)
        print(text)
        return results
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    rows = [parse_row(r) for r in (args.rows or (QUICK_ROWS if args.quick else DEFAULT_ROWS))]
    results: List[Dict[str, Any]] = []
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    failed = []
    for row in rows:
        t0 = time.time()
        try:
            res = estimate(
                compile_row(row, QUICK_OVERRIDES if args.quick else None), args.utilisation
            )
        except Exception as e:  # noqa: BLE001 - one row's failure must not lose the others
            failed.append(row["row"])
            print(f"{row['row']}: FAILED ({type(e).__name__}: {e})", flush=True)
            continue
        results.append(res)
        print(
            f"{row['row']}: {res['flops_per_chip'] / 1e9:.1f} GFLOP, "
            f"{res['bytes_per_chip'] / 1e9:.2f} GB per chip "
            f"per step -> {1e3 * res['step_seconds']:.1f} ms ({res['bound']}-bound), "
            f"{_fmt_hours(res['hours'])} for {res['total_steps']} steps; "
            f"compiled in {time.time() - t0:.0f} s",
            flush=True,
        )
        if args.out:
            _write_atomic(
                os.path.join(args.out, "tpu_estimates.json"), json.dumps(results, indent=1)
            )
            _write_atomic(
                os.path.join(args.out, "tpu_estimates.md"), markdown(results, args.utilisation)
            )
    print()
    print(markdown(results, args.utilisation))
    if failed:
        sys.exit(f"failed rows: {' '.join(failed)}")
    return results


if __name__ == "__main__":
    main()
