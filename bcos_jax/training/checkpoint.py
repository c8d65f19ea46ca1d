"""Checkpoints: the full train state while training, and trained models for inference.

Training (``Checkpointer``, orbax V0 ``CheckpointManager``, asynchronous): every checkpoint
``WORKDIR/checkpoints/<step>/`` holds the item ``state`` (params, optimiser state,
batch_stats, EMA, step) and the item ``data`` (the grain iterator state, JSON), so that a
run killed at any moment resumes bit-for-bit. Orbax writes into a temporary folder and
renames it on commit, so a partial checkpoint is never listed; a committed one that
cannot be read (a corrupted file) is skipped in favour of the previous one. The last
``keep`` checkpoints are kept, plus the best one by validation top-1 (``metrics``).
Restoring takes the target shardings of the *current* mesh, so a run can resume on a
different number of devices or a different sharding.

Models (``save_model`` / ``load_checkpoint``): ``DIR/model.json`` names the zoo model and
its overrides; ``save_model`` writes the variables beside it (``DIR/variables``); a
training workdir has the same ``model.json`` and its checkpoints. ``load_checkpoint``
reads either and returns ``(model, variables)`` ready for ``model.apply`` / ``explain``.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

__all__ = ["Checkpointer", "load_checkpoint", "read_model_json", "save_model", "write_model_json"]

log = logging.getLogger(__name__)

CKPT_SUBDIR = "checkpoints"
MODEL_JSON = "model.json"
VARIABLES_SUBDIR = "variables"
BEST_METRIC = "val_top1"


# ---------------------------------------------------------------------------------------
# model.json: which zoo model, with which overrides.
# ---------------------------------------------------------------------------------------
def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (np.generic,)):
        return v.item()
    try:  # dtypes
        return {"__dtype__": jnp.dtype(v).name}
    except TypeError:
        raise TypeError(f"model override {v!r} is not JSON-serialisable; pass plain values") from None


def _from_json(v: Any) -> Any:
    if isinstance(v, dict):
        if set(v) == {"__dtype__"}:
            return jnp.dtype(v["__dtype__"])
        return {k: _from_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_from_json(x) for x in v]
    return v


def write_model_json(directory: str, model_name: str, overrides: Optional[Mapping[str, Any]] = None) -> None:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, MODEL_JSON)
    with open(path + ".tmp", "w") as f:
        json.dump({"model": model_name, "overrides": _jsonable(dict(overrides or {}))}, f, indent=2)
    os.replace(path + ".tmp", path)


def read_model_json(directory: str) -> Tuple[str, Dict[str, Any]]:
    path = os.path.join(directory, MODEL_JSON)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: {directory!r} is neither a training workdir nor a directory "
            "written by save_model"
        )
    with open(path) as f:
        d = json.load(f)
    return d["model"], _from_json(d.get("overrides", {}))


# ---------------------------------------------------------------------------------------
# Training checkpoints.
# ---------------------------------------------------------------------------------------
class Checkpointer:
    """Saves and restores ``(state, data_state)`` under ``workdir/checkpoints``."""

    def __init__(self, workdir: str, keep: int = 3, keep_best: bool = True, async_save: bool = True):
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
            item_handlers={"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()},
        )

    def all_steps(self):
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, data_state: Any, metrics: Optional[Dict[str, float]] = None) -> None:
        """Start an (async) save; ``metrics`` (with 'val_top1') make the step eligible as best."""
        data_json = _data_state_to_json(data_state)
        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_json)),
            metrics=metrics,
            force=True,
        )

    def restore(self, abstract_state: Any, step: Optional[int] = None) -> Optional[Tuple[int, Any, Any]]:
        """Restore the newest readable checkpoint (or ``step``) onto ``abstract_state``'s shardings.

        ``abstract_state``: a pytree of ``jax.ShapeDtypeStruct`` with ``sharding`` set.
        Returns ``(step, state, data_state)`` or None if there is no usable checkpoint.
        """
        steps = [step] if step is not None else self.all_steps()[::-1]
        for s in steps:
            try:
                out = self.manager.restore(
                    s,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
                    ),
                )
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is skipped
                log.warning("checkpoint %d in %s is unreadable (%s: %s); trying an older one",
                            s, self.directory, type(e).__name__, str(e).splitlines()[0][:200])
                if step is not None:
                    raise
                continue
            return s, out["state"], _data_state_from_json(out["data"])
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


def _data_state_to_json(state: Any) -> Any:
    # grain's DataLoader state is bytes (a JSON string); dataset iterators give dicts.
    if isinstance(state, bytes):
        return {"__bytes__": state.decode("utf-8")}
    return _jsonable(state) if state is not None else {}


def _data_state_from_json(state: Any) -> Any:
    if isinstance(state, dict) and set(state) == {"__bytes__"}:
        return state["__bytes__"].encode("utf-8")
    return state


# ---------------------------------------------------------------------------------------
# Trained models.
# ---------------------------------------------------------------------------------------
def save_model(directory: str, model_name: str, model_overrides: Optional[Mapping[str, Any]],
               variables: Any) -> str:
    """Write ``variables`` ({'params', 'batch_stats'...}) and ``model.json`` to ``directory``."""
    directory = os.path.abspath(directory)
    write_model_json(directory, model_name, model_overrides)
    path = os.path.join(directory, VARIABLES_SUBDIR)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, jax.device_get(variables), force=True)
        ckptr.wait_until_finished()
    return directory


def _host_target(metadata: Any) -> Any:
    dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=dev), metadata,
        is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"),
    )


def load_checkpoint(directory: str, step: Union[None, int, str] = None, ema: Optional[bool] = None,
                    **model_overrides: Any):
    """``(model, variables)`` from a training workdir or a ``save_model`` directory.

    Args:
      directory: a training workdir (``train.py --workdir``) or a ``save_model`` directory.
      step: for a workdir: None or 'latest' (the newest readable checkpoint), 'best' (the
        best validation top-1), or a step number.
      ema: for a workdir: use the EMA weights (None: if the run kept an EMA).
      **model_overrides: extra overrides for ``models.create`` (e.g. ``dtype``).
    """
    from bcos_jax import models

    directory = os.path.abspath(directory)
    name, overrides = read_model_json(directory)
    overrides = {**overrides, **model_overrides}
    model = models.create(name, **overrides)
    var_dir = os.path.join(directory, VARIABLES_SUBDIR)
    if os.path.isdir(var_dir):
        with ocp.StandardCheckpointer() as ckptr:
            target = _host_target(ckptr.metadata(var_dir).item_metadata)
            variables = ckptr.restore(var_dir, target)
        return model, variables

    ckpt = Checkpointer(directory, async_save=False)
    try:
        steps = ckpt.all_steps()
        if not steps:
            raise FileNotFoundError(f"no checkpoints in {ckpt.directory}")
        if step in (None, "latest"):
            candidates = steps[::-1]
        elif step == "best":
            best = ckpt.best_step()
            if best is None:
                raise ValueError(f"no checkpoint in {ckpt.directory} has validation metrics")
            candidates = [best]
        else:
            candidates = [int(step)]
        for s in candidates:
            try:
                meta = ckpt.manager.item_metadata(s)["state"]
                target = _host_target(meta)
                state = ckpt.manager.restore(s, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
                break
            except Exception as e:  # noqa: BLE001
                if len(candidates) == 1:
                    raise
                log.warning("checkpoint %d unreadable (%s); trying an older one", s, e)
        else:
            raise FileNotFoundError(f"no readable checkpoint in {ckpt.directory}")
    finally:
        ckpt.close()
    has_ema = state.get("ema") is not None and bool(state["ema"])
    use_ema = has_ema if ema is None else ema
    if use_ema and not has_ema:
        raise ValueError(f"{directory} kept no EMA of the weights; use ema=False")
    src = state["ema"] if use_ema else {"params": state["params"], "batch_stats": state.get("batch_stats")}
    variables = {"params": src["params"]}
    if src.get("batch_stats"):
        variables["batch_stats"] = src["batch_stats"]
    return model, variables
