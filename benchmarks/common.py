"""Timing helpers shared by the benchmark scripts: medians over repeats after warm-up.

The machine these numbers come from is shared (2 cores, often loaded by other jobs), so
comparisons interleave the contenders (``timeit_pair``: A, B, A, B, ...) and every result
carries the load average at the time (``load``).
"""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from typing import Callable, Dict, List


def _summary(times: List[float]) -> Dict[str, float]:
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "n": len(times)}


def timeit(fn: Callable[[], object], repeats: int = 5, warmup: int = 2) -> Dict[str, float]:
    """Run ``fn`` ``warmup`` times, then ``repeats`` times; seconds as median/min/max.

    ``fn`` must block until its result is ready (``jax.block_until_ready``)."""
    for _ in range(warmup):
        fn()
    times: List[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return _summary(times)


def timeit_pair(fa: Callable[[], object], fb: Callable[[], object], repeats: int = 5, warmup: int = 2):
    """Time two functions alternately (a, b, a, b, ...) so that load drift hits both alike."""
    for _ in range(warmup):
        fa()
        fb()
    ta: List[float] = []
    tb: List[float] = []
    for _ in range(repeats):
        for fn, acc in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return _summary(ta), _summary(tb)


def fmt(t: Dict[str, float]) -> str:
    return f"{t['median']:.3f}s [{t['min']:.3f}-{t['max']:.3f}] (n={t['n']})"


def ratio_line(name: str, ref: Dict[str, float], ours: Dict[str, float], ref_name="torch", ours_name="jax") -> str:
    r = ref["median"] / ours["median"]
    return f"{name:<34} {ref_name} {fmt(ref):<34} {ours_name} {fmt(ours):<34} speed-up x{r:.2f}"


def load() -> str:
    """The 1/5/15-minute load averages (2 cores: above 2 means other jobs compete)."""
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def header() -> str:
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"{now}; {cpu}, {os.cpu_count()} cores; {load()}"


def train_step(model, tx):
    """The training step every benchmark times (not jitted): mean sigmoid BCE, one optax update.

    ``step(params, opt_state, extra, x, y) -> (params, opt_state, extra, loss)``; ``extra`` are
    the non-parameter collections (batch statistics), ``y`` the [N, C] targets.
    """
    import jax
    import optax

    def loss_fn(p, extra, x, y):
        out, new = model.apply({"params": p, **extra}, x, train=True, mutable=list(extra),
                               rngs={"dropout": jax.random.key(1)})
        return optax.sigmoid_binary_cross_entropy(out, y).mean(), new

    def step(p, o, extra, x, y):
        (loss, new), g = jax.value_and_grad(loss_fn, has_aux=True)(p, extra, x, y)
        upd, o = tx.update(g, o, p)
        return optax.apply_updates(p, upd), o, new, loss

    return step


def donated_runner(step, params, opt_state, extra, x, y):
    """A blocking zero-argument call of ``jit(step)`` that donates and carries the train state,
    as a training loop would."""
    import jax

    jitted = jax.jit(step, donate_argnums=(0, 1, 2))
    state = [params, opt_state, extra]

    def run():
        p, o, e, loss = jitted(*state, x, y)
        jax.block_until_ready(loss)
        state[:] = [p, o, e]

    return run
