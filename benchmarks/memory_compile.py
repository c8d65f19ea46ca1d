"""Peak memory of one training step (batch 32) in both frameworks, and JAX compile time.

    .venv/bin/python benchmarks/memory_compile.py [--model resnet50 --batch 32 --size 224]

Each measurement runs in a fresh subprocess: the peak resident set size (ru_maxrss) during
one Adam + BCE training step minus the resident size just before it (model, optimiser state
and batch already allocated). For JAX the compiler's own figure (temporaries + arguments +
outputs of the compiled step, ``memory_analysis``) and the compile time are printed too.

JAX is measured in three configurations of the same step (``donate_argnums`` on params,
optimiser state and batch statistics in all of them):

* ``default``: as ``jax.jit`` compiles it;
* ``mem-sched``: compiled with ``compiler_options={'xla_cpu_scheduler_type':
  'CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED'}`` (XLA:CPU's default scheduler does not try to
  keep the live set small; this one does, at no measurable cost in speed);
* ``remat``: the default compile, every B-cos layer rematerialised (as ``config.remat``);
* ``mem-sched + remat``: also every B-cos layer rematerialised
  (``models.create(name, remat=True)``, ``config.remat`` of train.py).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMORY_SCHEDULER = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}

_JAX = r"""
import functools, json, resource, sys, time
import jax, jax.numpy as jnp, numpy as np, optax
from bcos_jax import layers, models
from benchmarks.common import train_step  # cwd is the repository root
name, sched, remat = sys.argv[1], sys.argv[5], sys.argv[6] == "1"
batch, size, nc = (int(a) for a in sys.argv[2:5])
spec = models.get_spec(name)
model = models.create(name, num_classes=nc, remat=remat)  # remat: every B-cos layer
x = np.random.default_rng(0).uniform(size=(batch, size, size, spec.in_channels))
x = jnp.asarray(x, jnp.float32)
y = jax.nn.one_hot(jnp.arange(batch) % nc, nc)
v = jax.jit(lambda: model.init(jax.random.key(0), x[:1], train=False))()
tx = optax.adam(1e-3)
p, extra = v["params"], {k: a for k, a in v.items() if k != "params"}
o = tx.init(p)
step = train_step(model, tx)
t0 = time.perf_counter()
opts = {"xla_cpu_scheduler_type": sched} if sched != "default" else None
lowered = jax.jit(step, donate_argnums=(0, 1, 2)).lower(p, o, extra, x, y)
compiled = lowered.compile(compiler_options=opts)
compile_s = time.perf_counter() - t0
ma = compiled.memory_analysis()
rss_now = int(open("/proc/self/statm").read().split()[1]) * 4096 // 1024
t0 = time.perf_counter()
p, o, extra, l = compiled(p, o, extra, x, y); jax.block_until_ready(l)
step_s = time.perf_counter() - t0
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({
    "compile_s": compile_s, "step_s": step_s, "peak_step_mb": (after - rss_now) / 1024,
    "xla_temp_mb": ma.temp_size_in_bytes / 2**20, "xla_args_mb": ma.argument_size_in_bytes / 2**20,
    "xla_out_mb": ma.output_size_in_bytes / 2**20}))
"""

_TORCH = r"""
import json, resource, sys
import torch, bcos.models.pretrained as pre
from bcos.modules.losses import UniformOffLabelsBCEWithLogitsLoss
name, batch, size, nc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
m = getattr(pre, name)(pretrained=False, num_classes=nc).train()
opt = torch.optim.Adam(m.parameters(), 1e-3)
x = torch.rand(batch, 6, size, size); y = torch.arange(batch) % nc
for p in m.parameters():  # allocate Adam state first, like the JAX side
    opt.state[p]["exp_avg"] = torch.zeros_like(p)
    opt.state[p]["exp_avg_sq"] = torch.zeros_like(p)
    opt.state[p]["step"] = torch.tensor(0.)
rss_now = int(open("/proc/self/statm").read().split()[1]) * 4096 // 1024
loss = UniformOffLabelsBCEWithLogitsLoss()(m(x), y); loss.backward(); opt.step()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_step_mb": (after - rss_now) / 1024}))
"""


def run(code, *args):
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, ROOT)
    from benchmarks.common import header

    print(header())
    a = (args.model, args.batch, args.size, args.num_classes)
    print(f"{args.model} train step, batch {args.batch}, {args.size}², float32:")
    results = {}
    for label, sched, remat in (
        ("default", "default", 0),
        ("remat", "default", 1),
        ("mem-sched", MEMORY_SCHEDULER["xla_cpu_scheduler_type"], 0),
        ("mem-sched + remat", MEMORY_SCHEDULER["xla_cpu_scheduler_type"], 1),
    ):
        j = results[label] = run(_JAX, *a, sched, remat)
        print(
            f"  jax {label:<18} compile {j['compile_s']:5.1f}s; first step {j['step_s']:5.1f}s; "
            f"step peak RSS +{j['peak_step_mb']:5.0f} MB; XLA temporaries {j['xla_temp_mb']:5.0f} "
            f"MB, arguments {j['xla_args_mb']:.0f} MB, outputs {j['xla_out_mb']:.0f} MB",
            flush=True,
        )
    if not args.no_torch:
        t = run(_TORCH, *a)
        print(f"  torch                      step peak RSS +{t['peak_step_mb']:5.0f} MB")
        for label, j in results.items():
            print(
                f"  memory ratio torch / jax {label:<18} "
                f"x{t['peak_step_mb'] / max(j['peak_step_mb'], 1e-9):.2f}"
            )


if __name__ == "__main__":
    main()
