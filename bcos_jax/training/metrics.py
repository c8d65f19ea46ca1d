"""Metrics and monitoring: top-k counts, TensorBoard events, progress bar, summary.json.

Only process 0 writes (events, summary); every process computes the same global values.
"""
from __future__ import annotations

import os
import time
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from bcos_jax import jsonio

__all__ = ["ProgressBar", "Writer", "topk_correct", "write_summary"]


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """[N] bool: whether ``labels`` is among the top ``k`` logits (ties broken by index)."""
    k = min(k, logits.shape[-1])
    _, idx = jax.lax.top_k(logits, k)
    return jnp.any(idx == labels[:, None], axis=-1)


class Writer:
    """TensorBoard scalars and images (tensorboardX, no TensorFlow) on process 0."""

    def __init__(self, workdir: str, enabled: Optional[bool] = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._tb = None
        if self.enabled:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        if self._tb is None:
            return
        for k, v in values.items():
            self._tb.add_scalar(k, float(v), step)

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        """``image``: [H, W, 3] uint8 or float in [0, 1]."""
        if self._tb is not None:
            self._tb.add_image(tag, np.asarray(image), step, dataformats="HWC")

    def text(self, step: int, tag: str, text: str) -> None:
        """Markdown ``text`` (TensorBoard's text tab)."""
        if self._tb is not None:
            self._tb.add_text(tag, text, step)

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


class ProgressBar:
    """A tqdm bar over optimiser steps with loss and ETA (process 0 only)."""

    def __init__(self, total: int, initial: int = 0, enabled: Optional[bool] = None):
        enabled = jax.process_index() == 0 if enabled is None else enabled
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                             mininterval=1.0, smoothing=0.1)

    def update(self, n: int = 1, **postfix: Any) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v)
                                       for k, v in postfix.items()},
                                      refresh=False)

    def write(self, msg: str) -> None:
        if self._bar is not None:
            self._bar.write(msg)
        elif jax.process_index() == 0:
            print(msg, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def write_summary(workdir: str, summary: Mapping[str, Any]) -> str:
    """``workdir/summary.json`` (atomically, process 0 only)."""
    path = os.path.join(workdir, "summary.json")
    if jax.process_index() == 0:
        jsonio.write_json(path, dict(summary, written_at=time.strftime("%Y-%m-%d %H:%M:%S")))
    return path
