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
    return {"median": statistics.median(times), "min": min(times), "max": max(times),
            "n": len(times)}


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


def timeit_pair(fa: Callable[[], object], fb: Callable[[], object], repeats: int = 5,
                warmup: int = 2):
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


def ratio_line(name: str, ref: Dict[str, float], ours: Dict[str, float], ref_name="torch",
               ours_name="jax") -> str:
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


def train_step(model, tx, loss: str = "bce"):
    """The training step every benchmark times: ``bcos_jax.training.step.train_step``, the
    step train.py runs (forward, ``loss``, backward, one ``tx`` update, the step metrics),
    with a constant schedule, no EMA and no gradient accumulation; not jitted.

    ``step(params, opt_state, extra, x, y) -> (params, opt_state, extra, loss)``: ``extra``
    are the non-parameter collections ({} or {'batch_stats': ...}), ``x`` the [N, H, W, C]
    images, ``y`` the [N, classes] targets. Scripts that hold a ``TrainState`` can call
    ``bcos_jax.training.step.train_step`` directly.
    """
    import functools

    import jax
    import jax.numpy as jnp

    from bcos_jax.training import step as step_lib
    from bcos_jax.training.state import TrainState

    def step(p, o, extra, x, y):
        setup = step_lib.Setup(
            model_name=type(model).__name__, model_overrides={}, model=model,
            in_channels=x.shape[-1], image_size=x.shape[1], tx=tx,
            schedule=lambda count: jnp.zeros((), jnp.float32), loss=loss, aux_loss_weight=1.0,
            grad_accum_steps=1, steps_per_epoch=1, total_steps=1, use_ema=False, ema_decay=0.0,
            ema_every=1, ema_warmup_epochs=0, mesh=None)
        state = TrainState(step=jnp.zeros((), jnp.int32), params=p,
                           batch_stats=extra.get("batch_stats", {}), opt_state=o)
        run = functools.partial(step_lib.train_step, setup)
        new, metrics = run(state, {"image": x, "targets": y}, jax.random.key(1))
        new_extra = {"batch_stats": new.batch_stats} if "batch_stats" in extra else {}
        return new.params, new.opt_state, new_extra, metrics["loss"]

    return step


def donated_runner(step, params, opt_state, extra, x, y):
    """A blocking zero-argument call of ``jit(step)`` (a ``train_step`` above) that donates
    and carries the train state, as a training loop would."""
    import jax

    jitted = jax.jit(step, donate_argnums=(0, 1, 2))
    state = [params, opt_state, extra]

    def run():
        p, o, e, loss = jitted(*state, x, y)
        jax.block_until_ready(loss)
        state[:] = [p, o, e]

    return run
