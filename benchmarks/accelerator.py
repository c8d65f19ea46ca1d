"""Accelerator benchmark: bcos_jax against its standard twins and PyTorch ``bcos``, one process.

    PYTHONPATH=. python benchmarks/accelerator.py --out benchmarks/results/<chip>  # GPU, <= 8 min
    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/accelerator.py --quick --out /tmp/acc_quick

Measured side by side in one run on one device, medians over timed steps after warm-up:

* **training** (images/s): B-cos ResNet-50 vs the zoo's ``standard_resnet50``, B-cos
  ViT-S/16 vs ``standard_simple_vit_s_patch16_224`` (bcos_jax, ``models.create(name,
  dtype=bfloat16)``: bf16 compute, float32 parameters, float32 norm statistics; the training
  step of ``benchmarks/common.py``: sigmoid BCE + Adam, donated state), and the same B-cos
  models in PyTorch ``bcos`` (``bcos.models.pretrained.<name>(pretrained=False)``, autocast
  bf16, channels-last for the CNN, Adam, UniformOffLabels BCE) eager and with
  ``torch.compile`` (a failure is caught and reported);
* **explanations** (images/s explained, one target each, the predicted class): bcos_jax
  ``explain_fn`` vs PyTorch doing the same batched computation (explanation mode, autocast
  bf16, gradient of the selected logits w.r.t. the input, contributions ``x · W(x)``);
* **peak device memory** of each training step: bcos_jax from the compiled step's
  ``memory_analysis()`` (arguments + outputs - donated + temporaries; the process-wide
  ``memory_stats()['peak_bytes_in_use']`` so far is in the JSON), PyTorch from
  ``torch.cuda.max_memory_allocated`` around its steps.

Batch 256 for training, 64 for explanations; a batch that does not fit is halved until it
does (the table states the batch used). Targets (PASS/MISS lines): B-cos ResNet-50 training
>= 0.8x the standard ResNet-50; bcos_jax >= 1.5x PyTorch ``bcos`` (its faster variant) on
training and on explanations. For a missed target the bcos_jax side is traced with
``jax.profiler`` and the top ops by device time are written to ``profile_<name>.txt``.
Writes ``accelerator.json`` and ``accelerator.md`` to ``--out`` and prints the table.

``--quick`` runs every code path on tiny sizes in well under a minute on a CPU: ResNet-18 /
ViT-Ti pairs cut to one block per stage / one encoder on both sides, 16², batch 4, two timed
steps, ``torch.compile(backend='eager')``, XLA:CPU at -O0. Its figures mean nothing.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import glob
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional

# JAX and torch share the GPU: JAX must not take 75 % of it up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# CPU runs on a shared machine: libgomp's spin-waiting would slow torch down (compare_torch.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bcos_jax import explain_fn, models
from benchmarks.common import timeit, train_step

GiB = 1024**3

FULL = dict(
    pairs=[
        ("resnet50", "standard_resnet50"),
        ("simple_vit_s_patch16_224", "standard_simple_vit_s_patch16_224"),
    ],
    size=224,
    train_batch=256,
    explain_batch=64,
    num_classes=1000,
    warmup=3,
    steps=20,
    section_cap_s=10.0,
    min_batch=8,
    compile_backend="inductor",
    shrink=False,
)
QUICK = dict(
    pairs=[
        ("resnet18", "standard_resnet18"),
        ("simple_vit_ti_patch16_224", "standard_simple_vit_ti_patch16_224"),
    ],
    size=16,
    train_batch=4,
    explain_batch=2,
    num_classes=10,
    warmup=1,
    steps=2,
    section_cap_s=5.0,
    min_batch=1,
    compile_backend="eager",
    shrink=True,
)

TARGET_BCOS_VS_STANDARD = 0.8
TARGET_JAX_VS_TORCH = 1.5


# ---------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------
def _jax_model(name: str, cfg: Dict[str, Any]):
    """Zoo model ``name`` computing in bf16 (parameters and norm statistics stay float32)."""
    overrides: Dict[str, Any] = dict(num_classes=cfg["num_classes"], dtype=jnp.bfloat16)
    if cfg["shrink"]:  # --quick: one block per stage / one encoder (compiles in seconds)
        overrides.update(depth=1) if "vit" in name else overrides.update(layers=(1, 1, 1, 1))
    return models.create(name, **overrides)


_VARIABLES: Dict[tuple, Any] = {}


def _jax_variables(name: str, model, x1):
    """Initial variables of ``name`` (initialised once per run; training copies them,
    since its step donates the parameters)."""
    key = (name, x1.shape)
    if key not in _VARIABLES:
        _VARIABLES[key] = jax.jit(lambda: model.init(jax.random.key(0), x1, train=False))()
    return _VARIABLES[key]


def _is_oom(e: BaseException) -> bool:
    text = f"{type(e).__name__}: {e}"
    return any(
        s in text
        for s in (
            "RESOURCE_EXHAUSTED",
            "Out of memory",
            "OutOfMemory",
            "out of memory",
            "CUDA out of memory",
        )
    )


def _images(batch: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    """[batch, size, size, channels] float32 in [0, 1]; 6 channels are [x, 1-x]."""
    img = np.random.default_rng(seed).uniform(size=(batch, size, size, 3)).astype(np.float32)
    return np.concatenate([img, 1 - img], -1) if channels == 6 else img


def _planned_repeats(fn: Callable[[], Any], cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Warm up, then time as many steps as fit in the section cap (at least 3, at most
    ``cfg['steps']``); seconds per call as median/min/max."""
    for _ in range(cfg["warmup"]):
        fn()
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    repeats = int(
        max(min(3, cfg["steps"]), min(cfg["steps"], cfg["section_cap_s"] // max(one, 1e-6)))
    )
    return timeit(fn, repeats=repeats, warmup=0)


def _with_batch_fallback(
    run: Callable[[int], Dict[str, Any]], batch: int, min_batch: int, what: str
):
    """``run(batch)``; on an out-of-memory error halve the batch (down to ``min_batch``)."""
    tried = []
    while True:
        try:
            res = run(batch)
            if tried:
                res["note"] = f"batch {'/'.join(map(str, tried))} did not fit"
            return res
        except Exception as e:
            if not _is_oom(e) or batch // 2 < min_batch:
                raise
            print(
                f"  {what}: batch {batch} does not fit ({type(e).__name__}); trying {batch // 2}",
                flush=True,
            )
            tried.append(batch)
            batch //= 2
            _free_torch_memory()


def _free_torch_memory() -> None:
    try:
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _jax_process_peak() -> Optional[int]:
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def _row(section, model, framework, variant, batch, timing, **extra) -> Dict[str, Any]:
    return dict(
        section=section,
        model=model,
        framework=framework,
        variant=variant,
        batch=batch,
        images_per_s=batch / timing["median"],
        seconds=timing,
        **extra,
    )


# ---------------------------------------------------------------------------------------
# bcos_jax
# ---------------------------------------------------------------------------------------
def jax_train(name: str, batch: int, cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Training throughput of zoo model ``name`` (bf16 compute, f32 params and statistics)."""
    model = _jax_model(name, cfg)
    spec = models.get_spec(name)
    x = jnp.asarray(_images(batch, cfg["size"], spec.in_channels))
    y = jax.nn.one_hot(jnp.arange(batch) % cfg["num_classes"], cfg["num_classes"])
    variables = jax.tree.map(jnp.copy, _jax_variables(name, model, x[:1]))
    params = variables["params"]
    extra = {k: v for k, v in variables.items() if k != "params"}
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)
    step = train_step(model, tx)
    # Compiled once, ahead of time, so that its memory analysis comes without a second compile.
    t0 = time.perf_counter()
    compiled = (
        jax.jit(step, donate_argnums=(0, 1, 2)).lower(params, opt_state, extra, x, y).compile()
    )
    compile_s = time.perf_counter() - t0
    ma = compiled.memory_analysis()
    footprint = None
    if ma is not None:
        footprint = (
            ma.argument_size_in_bytes
            + ma.output_size_in_bytes
            - getattr(ma, "alias_size_in_bytes", 0)
            + ma.temp_size_in_bytes
        )
    state = [params, opt_state, extra]

    def run():
        p, o, e, loss = compiled(*state, x, y)
        jax.block_until_ready(loss)
        state[:] = [p, o, e]

    timing = _planned_repeats(run, cfg)
    return _row(
        "train",
        name,
        "bcos_jax",
        "jit",
        batch,
        timing,
        compile_s=compile_s,
        peak_memory_bytes=footprint,
        memory_source="compiled memory_analysis",
        process_peak_bytes=_jax_process_peak(),
        _profile=(run, compiled.as_text),
    )


def jax_explain(name: str, batch: int, cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Explanation throughput: one target (the predicted class) per image, bf16 compute."""
    model = _jax_model(name, cfg)
    x = jnp.asarray(_images(batch, cfg["size"], models.get_spec(name).in_channels, seed=1))
    variables = _jax_variables(name, model, x[:1])
    t0 = time.perf_counter()
    compiled = explain_fn(model).lower(variables, x).compile()
    compile_s = time.perf_counter() - t0

    def run():
        jax.block_until_ready(compiled(variables, x))

    timing = _planned_repeats(run, cfg)
    return _row(
        "explain",
        name,
        "bcos_jax",
        "jit",
        batch,
        timing,
        compile_s=compile_s,
        process_peak_bytes=_jax_process_peak(),
        _profile=(run, compiled.as_text),
    )


# ---------------------------------------------------------------------------------------
# PyTorch bcos
# ---------------------------------------------------------------------------------------
def _torch_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _torch_model(name: str, cfg: Dict[str, Any]):
    import bcos.models.pretrained as pretrained
    import torch

    torch.manual_seed(0)
    model = getattr(pretrained, name)(pretrained=False, num_classes=cfg["num_classes"])
    if cfg["shrink"]:  # --quick: the same shrinking as _jax_model
        if "vit" in name:
            vit = next(m for m in model.modules() if hasattr(m, "transformer"))
            del vit.transformer[1:]
        else:
            for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
                del stage[1:]
    model = model.to(_torch_device())
    if "vit" not in name:  # convolutions: NHWC kernels on tensor cores
        model = model.to(memory_format=torch.channels_last)
    return model


def _torch_input(name: str, batch: int, cfg: Dict[str, Any], seed: int):
    import torch

    x = torch.from_numpy(
        np.ascontiguousarray(_images(batch, cfg["size"], 6, seed).transpose(0, 3, 1, 2))
    )
    x = x.to(_torch_device())
    return x.to(memory_format=torch.channels_last) if "vit" not in name else x


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def torch_train(name: str, batch: int, cfg: Dict[str, Any], compiled: bool) -> Dict[str, Any]:
    """Training throughput of ``bcos`` model ``name``: autocast bf16, Adam, the recipe's loss."""
    import torch
    from bcos.modules.losses import UniformOffLabelsBCEWithLogitsLoss

    dev = _torch_device()
    model = _torch_model(name, cfg).train()
    x = _torch_input(name, batch, cfg, seed=0)
    y = (torch.arange(batch) % cfg["num_classes"]).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = UniformOffLabelsBCEWithLogitsLoss()
    forward = torch.compile(model, backend=cfg["compile_backend"]) if compiled else model

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = loss_fn(forward(x), y)
        loss.backward()
        opt.step()
        _sync()

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    step()  # the first step compiles (torch.compile) / autotunes (cuDNN)
    first_s = time.perf_counter() - t0
    timing = _planned_repeats(step, cfg)
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else None
    variant = f"torch.compile({cfg['compile_backend']})" if compiled else "eager"
    return _row(
        "train",
        name,
        "torch bcos",
        variant,
        batch,
        timing,
        compile_s=first_s,
        peak_memory_bytes=peak,
        memory_source="torch.cuda.max_memory_allocated" if peak is not None else None,
    )


def torch_explain(name: str, batch: int, cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The same batched explanation in PyTorch: explanation mode, grad of the selected logits."""
    import torch

    dev = _torch_device()
    model = _torch_model(name, cfg).eval()
    x = _torch_input(name, batch, cfg, seed=1)

    def expl():
        xg = x.detach().clone().requires_grad_(True)
        with model.explanation_mode(), torch.autocast(dev.type, dtype=torch.bfloat16):
            out = model(xg)
            sel = out.gather(1, out.argmax(1, keepdim=True)).sum()
        (w,) = torch.autograd.grad(sel, xg)
        (xg.detach() * w).sum(1)  # contributions, as bcos_jax's Explanation carries them
        _sync()

    t0 = time.perf_counter()
    expl()
    first_s = time.perf_counter() - t0
    timing = _planned_repeats(expl, cfg)
    return _row("explain", name, "torch bcos", "eager", batch, timing, compile_s=first_s)


# ---------------------------------------------------------------------------------------
# Profiles of missed targets
# ---------------------------------------------------------------------------------------
def profile_summary(
    run: Callable[[], Any], hlo: str, batch: int, runs: int = 3, top: int = 25
) -> str:
    """Trace ``runs`` calls of ``run`` (a blocking call of a compiled step whose optimised HLO
    is ``hlo``); device time per HLO op, by category (``profile_ops.categorise``) and top ops."""
    from benchmarks.profile_ops import categorise, parse_hlo

    run()
    d = tempfile.mkdtemp(prefix="bcos_acc_prof_")
    with jax.profiler.trace(d):
        t0 = time.perf_counter()
        for _ in range(runs):
            run()
        wall = (time.perf_counter() - t0) / runs
    paths = glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True)
    if not paths:
        return f"no trace written under {d}\n"
    pd = jax.profiler.ProfileData.from_file(paths[0])
    planes = [p for p in pd.planes if p.name.startswith("/device:")] or [
        p for p in pd.planes if p.name == "/host:CPU"
    ]
    totals: Dict[str, float] = collections.Counter()
    for plane in planes:
        lines = list(plane.lines)
        # GPU planes carry each kernel on its stream line and again on a derived "XLA Ops" line.
        preferred = [ln for ln in lines if ln.name == "XLA Ops"] or lines
        for line in preferred:
            if line.name in ("XLA Modules", "Steps", "Framework Ops", "Framework Name Scope"):
                continue
            for ev in line.events:
                stats = dict(ev.stats)
                key = stats.get("hlo_op") or (
                    ev.name if plane.name.startswith("/device:") else None
                )
                if key:
                    totals[key] += ev.duration_ns / runs
    instrs, comps = parse_hlo(hlo)
    cats: Dict[str, float] = collections.Counter()
    for k, ns in totals.items():
        cats[categorise(k, instrs, comps, batch)] += ns
    busy = sum(totals.values()) or 1.0
    out = [
        f"planes {[p.name for p in planes]}; wall {1e3 * wall:.2f} ms/call, "
        f"op time {busy / 1e6:.2f} ms/call",
        "categories:",
    ]
    out += [f"  {c:<22} {ns / 1e6:9.3f} ms {100 * ns / busy:5.1f}%" for c, ns in cats.most_common()]
    out.append(f"top {top} ops:")
    for k, ns in totals.most_common(top):
        op, shape, opname, _ = instrs.get(k.split(":")[0], ("?", "?", "", None))
        out.append(
            f"  {ns / 1e6:9.3f} ms {100 * ns / busy:5.1f}%  {k[:40]:<40} "
            f"{categorise(k, instrs, comps, batch):<18} {shape[:40]:<40} {opname[-60:]}"
        )
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------
def environment() -> Dict[str, Any]:
    dev = jax.devices()[0]
    env = dict(
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        python=platform.python_version(),
        host=platform.node(),
        jax=jax.__version__,
        jaxlib=jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
        jax_backend=jax.default_backend(),
        chip=dev.device_kind,
        jax_platform_version=getattr(getattr(dev, "client", None), "platform_version", None),
    )
    try:
        import jaxlib

        env["jaxlib"] = jaxlib.__version__
    except ImportError:
        pass
    try:
        import torch

        env.update(
            torch=torch.__version__,
            torch_cuda=torch.version.cuda,
            torch_device=torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            cudnn=torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        )
    except ImportError:
        env["torch"] = None
    return env


def _gib(b: Optional[float]) -> str:
    return "—" if b is None else f"{b / GiB:.2f} GiB"


def markdown(
    env: Dict[str, Any],
    rows: List[Dict[str, Any]],
    targets: List[Dict[str, Any]],
    notes: List[str],
    quick: bool = False,
) -> str:
    lines = [
        f"{env['date']}: {env['chip']} ({env['jax_backend']}); jax {env['jax']}, jaxlib "
        f"{env['jaxlib']} ({env['jax_platform_version']}); torch {env.get('torch')} "
        f"(CUDA {env.get('torch_cuda')}, cuDNN {env.get('cudnn')}, {env.get('torch_device')}); "
        f"Python {env['python']}."
        + (" **--quick: shrunk models, tiny inputs; the figures mean nothing.**" if quick else ""),
        "",
        "| what | model | framework | variant | batch | images/s "
        "| ms per step, median [min-max] (n) "
        "| peak memory per step | first call / compile |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["seconds"]
        mem = _gib(r.get("peak_memory_bytes"))
        if r.get("memory_source"):
            mem += f" ({r['memory_source'].split('.')[-1].replace('_', ' ')})"
        lines.append(
            f"| {r['section']} | `{r['model']}` | {r['framework']} | {r['variant']} | {r['batch']} "
            f"| {r['images_per_s']:.1f} | {1e3 * s['median']:.1f} "
            f"[{1e3 * s['min']:.1f}-{1e3 * s['max']:.1f}]"
            f" ({s['n']}) | {mem} | {r['compile_s']:.1f} s |"
        )
    lines.append("")
    for t in targets:
        lines.append(
            f"- **{'PASS' if t['pass'] else 'MISS'}** {t['name']}: {t['ratio']:.2f}x "
            f"(target >= {t['threshold']}x){' — ' + t['profile'] if t.get('profile') else ''}"
        )
    for n in notes:
        lines.append(f"- {n}")
    return "\n".join(lines) + "\n"


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------
def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--out", required=True, help="folder for accelerator.json / accelerator.md / profiles"
    )
    ap.add_argument(
        "--quick", action="store_true", help="tiny sizes: a CPU smoke run of every code path"
    )
    ap.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="wall-clock seconds; a torch.compile variant starts only while under 30 %% "
        "of it is used, the rest is kept for bcos_jax (default 480; --quick: none)",
    )
    ap.add_argument("--no-torch", action="store_true", help="bcos_jax only")
    ap.add_argument("--no-torch-compile", action="store_true", help="PyTorch eager only")
    ap.add_argument(
        "--profile",
        choices=["missed", "all", "none"],
        default="missed",
        help="jax.profiler summaries for missed targets (default), all targets or none",
    )
    args = ap.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    if args.quick:
        # Before the backend starts: XLA:CPU at -O0 compiles ~1.5x faster (figures mean nothing).
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
        ).strip()
    budget = args.budget_s or (float("inf") if args.quick else 480.0)
    start, cpu0 = time.perf_counter(), time.process_time()
    os.makedirs(args.out, exist_ok=True)
    env = environment()
    print(
        f"{env['chip']} ({env['jax_backend']}), jax {env['jax']}, torch {env.get('torch')}; "
        f"{'quick' if args.quick else 'full'} run, budget {budget:.0f} s",
        flush=True,
    )
    rows: List[Dict[str, Any]] = []
    notes: List[str] = []
    by_key: Dict[tuple, Dict[str, Any]] = {}

    def record(res):
        rows.append(res)
        by_key[(res["section"], res["model"], res["framework"], res["variant"])] = res
        print(
            f"  {res['section']:<8} {res['model']:<36} {res['framework']:<11} {res['variant']:<24} "
            f"batch {res['batch']:>4}: {res['images_per_s']:9.1f} images/s  "
            f"(peak {_gib(res.get('peak_memory_bytes'))}; first call {res['compile_s']:.1f} s; "
            f"t={time.perf_counter() - start:.0f} s, cpu {time.process_time() - cpu0:.0f} s)",
            flush=True,
        )

    use_torch = not args.no_torch
    if use_torch:
        try:
            import bcos.models.pretrained  # noqa: F401 - only whether they import
            import torch  # noqa: F401 - only whether they import
        except ImportError as e:
            use_torch = False
            notes.append(f"PyTorch side skipped: {e}")

    def torch_section(what: str, fn: Callable[[int], Dict[str, Any]], batch: int) -> None:
        """A PyTorch measurement; a failure is a note, not the end of the run."""
        try:
            record(_with_batch_fallback(fn, batch, cfg["min_batch"], what))
        except Exception as e:  # noqa: BLE001 - reported; the bcos_jax side still runs
            msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            notes.append(f"{what} failed: {type(e).__name__}: {msg}")
            print(f"  {notes[-1]}", flush=True)
        _free_torch_memory()

    # PyTorch first: its caching allocator gives memory back (empty_cache), JAX's does not, so
    # each framework gets the whole device in turn.
    if use_torch:
        for bcos_name, _ in cfg["pairs"]:
            torch_section(
                f"{bcos_name} torch train",
                lambda b, n=bcos_name: torch_train(n, b, cfg, False),
                cfg["train_batch"],
            )
        for bcos_name, _ in cfg["pairs"]:
            torch_section(
                f"{bcos_name} torch explain",
                lambda b, n=bcos_name: torch_explain(n, b, cfg),
                cfg["explain_batch"],
            )
        for bcos_name, _ in cfg["pairs"]:
            used = time.perf_counter() - start
            if args.no_torch_compile:
                continue
            if used > 0.3 * budget:  # keep the rest of the budget for bcos_jax
                notes.append(
                    f"torch.compile of {bcos_name} skipped: {used:.0f} s of the "
                    f"{budget:.0f} s budget used"
                )
                continue
            torch_section(
                f"torch.compile of {bcos_name}",
                lambda b, n=bcos_name: torch_train(n, b, cfg, True),
                cfg["train_batch"],
            )
    # bcos_jax: each B-cos model and its standard twin, then the explanations.
    for bcos_name, std_name in cfg["pairs"]:
        for name in (bcos_name, std_name):
            record(
                _with_batch_fallback(
                    lambda b, n=name: jax_train(n, b, cfg),
                    cfg["train_batch"],
                    cfg["min_batch"],
                    f"{name} jax train",
                )
            )
    for bcos_name, _ in cfg["pairs"]:
        record(
            _with_batch_fallback(
                lambda b, n=bcos_name: jax_explain(n, b, cfg),
                cfg["explain_batch"],
                cfg["min_batch"],
                f"{bcos_name} jax explain",
            )
        )

    # Targets.
    targets: List[Dict[str, Any]] = []
    cnn, cnn_std = cfg["pairs"][0]
    b, s = by_key[("train", cnn, "bcos_jax", "jit")], by_key[("train", cnn_std, "bcos_jax", "jit")]
    targets.append(
        dict(
            name=f"B-cos {cnn} training vs {cnn_std} (bcos_jax)",
            ratio=b["images_per_s"] / s["images_per_s"],
            threshold=TARGET_BCOS_VS_STANDARD,
            jax_row=b,
        )
    )
    if use_torch:
        for section in ("train", "explain"):
            for bcos_name, _ in cfg["pairs"]:
                ours = by_key[(section, bcos_name, "bcos_jax", "jit")]
                theirs = [
                    r for k, r in by_key.items() if k[:3] == (section, bcos_name, "torch bcos")
                ]
                if not theirs:
                    continue  # its failure is in the notes
                best = max(theirs, key=lambda r: r["images_per_s"])
                targets.append(
                    dict(
                        name=f"bcos_jax vs torch bcos ({best['variant']}), {bcos_name} {section}",
                        ratio=ours["images_per_s"] / best["images_per_s"],
                        threshold=TARGET_JAX_VS_TORCH,
                        jax_row=ours,
                    )
                )
    profiled = set()
    for t in targets:
        t["pass"] = bool(t["ratio"] >= t["threshold"])
        row = t.pop("jax_row")
        if args.profile == "all" or (args.profile == "missed" and not t["pass"]):
            fname = f"profile_{row['section']}_{row['model']}.txt"
            path = os.path.join(args.out, fname)
            if fname not in profiled:
                profiled.add(fname)
                run, hlo_text = row["_profile"]
                try:
                    _write_atomic(
                        path,
                        f"{row['section']} {row['model']} batch {row['batch']} on "
                        f"{env['chip']}\n" + profile_summary(run, hlo_text(), row["batch"]),
                    )
                except Exception as e:  # noqa: BLE001 - a failed profile must not lose the results
                    _write_atomic(path, f"profiling failed: {type(e).__name__}: {e}\n")
            t["profile"] = fname
        print(
            f"{'PASS' if t['pass'] else 'MISS'} {t['name']}: {t['ratio']:.2f}x "
            f"(target >= {t['threshold']}x)",
            flush=True,
        )

    for r in rows:
        r.pop("_profile", None)
    total_s = time.perf_counter() - start
    notes.append(
        f"total wall time {total_s:.0f} s ({time.process_time() - cpu0:.0f} s CPU in this process)"
    )
    result = dict(
        environment=env,
        config={k: v for k, v in cfg.items()},
        quick=args.quick,
        rows=rows,
        targets=targets,
        notes=notes,
    )
    md = markdown(env, rows, targets, notes, args.quick)
    _write_atomic(
        os.path.join(args.out, "accelerator.json"), json.dumps(result, indent=1, default=str)
    )
    _write_atomic(os.path.join(args.out, "accelerator.md"), md)
    print()
    print(md)
    return result


if __name__ == "__main__":
    main()
