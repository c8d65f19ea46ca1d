"""The train state: every array a training step changes, saved whole in each checkpoint.

Not in it, because they are not arrays a step changes: the run's random key (each step
uses ``fold_in(key, step)`` of the key made from ``config.seed``) and the position of the
data iterator (checkpointed beside the state, see ``checkpoint.Checkpointer``).
"""
from __future__ import annotations

from typing import Any, Dict

import jax
from flax import struct

__all__ = ["TrainState"]


class TrainState(struct.PyTreeNode):
    """A pytree of the training arrays (``jax.jit`` takes, shards and donates it whole).

    Attributes:
      step: int32 [], optimiser updates done so far.
      params: the model's parameters (kernels HWIO, dense [in, out]).
      batch_stats: the norm layers' running statistics; ``{}`` for models without them.
      opt_state: the optax state of ``params``.
      ema: ``{'params', 'batch_stats'}``, the moving average of the weights; None when the
        run keeps no EMA (``config.ema_decay == 0``).
      ema_count: int32 [], EMA updates since the end of its warm-up; None without EMA.

    The field names are the key names of a checkpoint's ``state`` item, which
    ``bcos_jax.load_checkpoint`` reads (``params``, ``batch_stats``, ``ema``).
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema: Any = None
    ema_count: Any = None

    def variables(self, ema: bool = False) -> Dict[str, Any]:
        """``{'params', 'batch_stats'}`` for ``model.apply`` (the EMA's with ``ema=True``);
        no ``batch_stats`` key for models without norm statistics."""
        if ema and self.ema is None:
            raise ValueError("this train state keeps no EMA of the weights (config.ema_decay is 0)")
        src = self.ema if ema else {"params": self.params, "batch_stats": self.batch_stats}
        out = {"params": src["params"]}
        if src["batch_stats"]:
            out["batch_stats"] = src["batch_stats"]
        return out
