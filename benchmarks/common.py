"""Timing helpers shared by the benchmark scripts: medians over repeats after warm-up."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List


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
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "n": repeats}


def fmt(t: Dict[str, float]) -> str:
    return f"{t['median']:.3f}s [{t['min']:.3f}-{t['max']:.3f}] (n={t['n']})"


def ratio_line(name: str, ref: Dict[str, float], ours: Dict[str, float], ref_name="torch", ours_name="jax") -> str:
    r = ref["median"] / ours["median"]
    return f"{name:<34} {ref_name} {fmt(ref):<34} {ours_name} {fmt(ours):<34} speed-up x{r:.2f}"
