"""Checkpoints of the full train state while training (models for inference: ``bcos_jax.hub``).

Training (``Checkpointer``, orbax V0 ``CheckpointManager``, asynchronous): every checkpoint
``WORKDIR/checkpoints/<step>/`` holds the item ``state`` (params, optimiser state,
batch_stats, EMA, step) and the item ``data`` (the grain iterator state, JSON), so that a
run killed at any moment resumes bit-for-bit. Orbax writes into a temporary folder and
renames it on commit, so a partial checkpoint is never listed; a committed one that
cannot be read (a corrupted file) is skipped in favour of the previous one. The last
``keep`` checkpoints are kept, plus the best one by validation top-1 (``metrics``).
Restoring takes the target shardings of the *current* mesh, so a run can resume on a
different number of devices or a different sharding.

The layout (``checkpoints/<step>/state``, the ``val_top1`` metric) is the one
``bcos_jax.hub.load_checkpoint`` reads a trained model back from; ``model.json`` beside it
(``hub.write_model_json``) names the model. Saving and loading trained models for inference
lives in ``bcos_jax.hub``.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

from bcos_jax.hub import BEST_METRIC, CKPT_SUBDIR, STATE_ITEM
from bcos_jax.jsonio import to_jsonable

__all__ = ["Checkpointer"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------
# Training checkpoints.
# ---------------------------------------------------------------------------------------
class Checkpointer:
    """Saves and restores ``(state, data_state)`` under ``workdir/checkpoints``."""

    def __init__(self, workdir: str, keep: int = 3, keep_best: bool = True,
                 async_save: bool = True):
        self.directory = os.path.abspath(os.path.join(workdir, CKPT_SUBDIR))
        policies = [ocm.LatestN(keep)]
        if keep_best:
            policies.append(
                ocm.BestN(get_metric_fn=lambda m: m[BEST_METRIC], reverse=False, n=1,
                          keep_checkpoints_without_metrics=False)
            )
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                preservation_policy=ocm.AnyPreservationPolicy(policies),
                # best_fn makes orbax store the metrics of each step (BestN reads them).
                best_fn=lambda m: m[BEST_METRIC],
                best_mode="max",
                enable_async_checkpointing=async_save,
                create=True,
            ),
            item_handlers={STATE_ITEM: ocp.StandardCheckpointHandler(),
                           "data": ocp.JsonCheckpointHandler()},
        )

    def all_steps(self):
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, data_state: Any,
             metrics: Optional[Dict[str, float]] = None) -> None:
        """Start an (async) save; ``metrics`` (with 'val_top1') make the step eligible as best."""
        data_json = _data_state_to_json(data_state)
        self.manager.save(
            step,
            args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardSave(_saved_tree(state))},
                                    data=ocp.args.JsonSave(data_json)),
            metrics=metrics,
            force=True,
        )

    def restore(self, abstract_state: Any,
                step: Optional[int] = None) -> Optional[Tuple[int, Any, Any]]:
        """Restore the newest readable checkpoint (or ``step``) onto ``abstract_state``'s shardings.

        ``abstract_state``: a ``TrainState`` (or another pytree) of ``jax.ShapeDtypeStruct``
        with ``sharding`` set; the state comes back in its type.
        Returns ``(step, state, data_state)`` or None if there is no usable checkpoint.
        """
        steps = [step] if step is not None else self.all_steps()[::-1]
        for s in steps:
            try:
                out = self.manager.restore(
                    s,
                    args=ocp.args.Composite(
                        **{STATE_ITEM: ocp.args.StandardRestore(_saved_tree(abstract_state))},
                        data=ocp.args.JsonRestore(),
                    ),
                )
            except Exception as e:
                log.warning("checkpoint %d in %s is unreadable (%s: %s); trying an older one",
                            s, self.directory, type(e).__name__, str(e).splitlines()[0][:200])
                if step is not None:
                    raise
                continue
            state = _from_saved_tree(abstract_state, out[STATE_ITEM])
            return s, state, _data_state_from_json(out["data"])
        return None

    def best_step(self) -> Optional[int]:
        best, best_v = None, -np.inf
        for s in self.all_steps():
            m = self.manager.metrics(s)
            if m and BEST_METRIC in m and m[BEST_METRIC] > best_v:
                best, best_v = s, m[BEST_METRIC]
        return best

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _saved_tree(state: Any) -> Any:
    # A TrainState is saved as the dict of its fields, fields that are None (no EMA) left
    # out: the tree on disk (keys params, batch_stats, opt_state, ema, ...) does not depend
    # on the Python class holding it, and bcos_jax.hub reads it as a dict.
    if dataclasses.is_dataclass(state):
        return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)
                if getattr(state, f.name) is not None}
    return state


def _from_saved_tree(abstract_state: Any, restored: Any) -> Any:
    if dataclasses.is_dataclass(abstract_state):
        return dataclasses.replace(abstract_state, **restored)
    return restored


def _data_state_to_json(state: Any) -> Any:
    # grain's DataLoader state is bytes (a JSON string); dataset iterators give dicts.
    if isinstance(state, bytes):
        return {"__bytes__": state.decode("utf-8")}
    return to_jsonable(state) if state is not None else {}


def _data_state_from_json(state: Any) -> Any:
    if isinstance(state, dict) and set(state) == {"__bytes__"}:
        return state["__bytes__"].encode("utf-8")
    return state
