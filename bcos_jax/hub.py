"""Models on disk: save a trained model, and load one from wherever its weights are.

A model directory names its zoo model in ``DIR/model.json``::

    {"model": "resnet50", "overrides": {"num_classes": 10, "dtype": {"__dtype__": "bfloat16"}}}

and holds its weights in one of two layouts:

* ``DIR/variables/`` — written by ``save_model`` (an orbax ``StandardCheckpointer`` tree of
  ``{'params': ..., 'batch_stats': ...}``);
* ``DIR/checkpoints/<step>/state/`` — a training workdir of ``train.py``: orbax
  ``CheckpointManager`` steps whose item ``state`` is the whole train state (``params``,
  ``batch_stats``, ``ema``, optimiser state, ...). Only ``params``/``batch_stats`` (or the
  EMA's) are read back; the step's ``metrics`` item (``val_top1``) picks ``step='best'``.

``load_checkpoint(DIR)`` reads either and returns ``(model, variables)``. ``load`` is what the
commands call: one of the sources — a directory (``checkpoint=``), or a zoo name with an
official PyTorch weights file (``model=``, ``weights=``, converted by ``bcos_jax.convert``) —
to a ``Loaded(model, variables, name, spec)``, the model built once. The released weights by
name (``bcos_jax.released``, which caches them as a directory of this module's layout) sit
above this module: the commands add that third source (``commands.common.load_model``).

Nothing here imports the training package: the trainer writes this layout (``write_model_json``,
``CKPT_SUBDIR``, ``STATE_ITEM``, ``BEST_METRIC``) and this module reads it.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from bcos_jax import jsonio

__all__ = [
    "BEST_METRIC",
    "CKPT_SUBDIR",
    "Loaded",
    "MODEL_JSON",
    "STATE_ITEM",
    "VARIABLES_SUBDIR",
    "load",
    "load_checkpoint",
    "read_model_json",
    "save_model",
    "write_model_json",
]

log = logging.getLogger(__name__)

MODEL_JSON = "model.json"
VARIABLES_SUBDIR = "variables"
CKPT_SUBDIR = "checkpoints"  # a training workdir's orbax CheckpointManager directory
STATE_ITEM = "state"  # the item of each step holding the train state
BEST_METRIC = "val_top1"  # the metric of a step that step='best' maximises


# ---------------------------------------------------------------------------------------
# model.json: which zoo model, with which overrides.
# ---------------------------------------------------------------------------------------
def _encode_override(v: Any) -> Any:
    # dtypes (dtype=jnp.bfloat16) are the one override kind JSON has no value for.
    if isinstance(v, Mapping):
        return {str(k): _encode_override(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_encode_override(x) for x in v]
    if v is None or isinstance(v, (str, bool, int, float, np.generic)):
        return v
    try:
        return {"__dtype__": jnp.dtype(v).name}
    except TypeError:
        raise TypeError(
            f"model override {v!r} is not JSON-serialisable; pass plain values") from None


def _decode_override(v: Any) -> Any:
    if isinstance(v, dict):
        if set(v) == {"__dtype__"}:
            return jnp.dtype(v["__dtype__"])
        return {k: _decode_override(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_decode_override(x) for x in v]
    return v


def write_model_json(directory: str, model_name: str,
                     overrides: Optional[Mapping[str, Any]] = None) -> str:
    """Write ``directory/model.json`` (atomically); returns its path."""
    os.makedirs(directory, exist_ok=True)
    record = {"model": model_name, "overrides": _encode_override(dict(overrides or {}))}
    return jsonio.write_json(os.path.join(directory, MODEL_JSON), record)


def read_model_json(directory: str) -> Tuple[str, Dict[str, Any]]:
    """``(zoo name, overrides)`` from ``directory/model.json``; a clear error if absent/corrupt."""
    path = os.path.join(directory, MODEL_JSON)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: {directory!r} is neither a training workdir nor a directory "
            "written by save_model"
        )
    try:
        with open(path) as f:
            d = json.load(f)
        name, overrides = d["model"], d.get("overrides", {})
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"{path}: not a model.json of bcos_jax ({type(e).__name__}: {e})") from None
    if not isinstance(name, str) or not isinstance(overrides, dict):
        raise ValueError(f"{path}: 'model' must be a name and 'overrides' an object")
    return name, _decode_override(overrides)


# ---------------------------------------------------------------------------------------
# Saving and loading a directory.
# ---------------------------------------------------------------------------------------
def save_model(directory: str, model_name: str, model_overrides: Optional[Mapping[str, Any]],
               variables: Any) -> str:
    """Write ``variables`` ({'params', 'batch_stats'...}) and ``model.json`` to ``directory``.

    Returns the absolute directory; ``load_checkpoint`` of it gives the model back.
    """
    import orbax.checkpoint as ocp

    directory = os.path.abspath(directory)
    write_model_json(directory, model_name, model_overrides)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(directory, VARIABLES_SUBDIR), jax.device_get(variables), force=True)
        ckptr.wait_until_finished()
    return directory


def _host_target(metadata: Any) -> Any:
    # Restore everything onto the first local device, whatever mesh wrote it.
    dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=dev), metadata,
        is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"),
    )


def _read_variables_dir(path: str) -> Any:
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(path, _host_target(ckptr.metadata(path).item_metadata))


def _read_workdir(directory: str, step: Union[None, int, str], ema: Optional[bool]) -> Any:
    """The variables of one step of a training workdir (see the module docstring)."""
    import orbax.checkpoint as ocp

    if not (step in (None, "latest", "best") or str(step).isdigit()):
        raise ValueError(f"step must be None, 'latest', 'best' or a step number, got {step!r}")
    ckpt_dir = os.path.join(directory, CKPT_SUBDIR)
    if not os.path.isdir(ckpt_dir):
        raise FileNotFoundError(
            f"{directory} has a {MODEL_JSON} but neither {VARIABLES_SUBDIR}/ (save_model) nor "
            f"{CKPT_SUBDIR}/ (a training workdir)"
        )
    manager = ocp.CheckpointManager(
        ckpt_dir, options=ocp.CheckpointManagerOptions(read_only=True),
        item_handlers={STATE_ITEM: ocp.StandardCheckpointHandler()},
    )
    try:
        steps = sorted(manager.all_steps())
        if not steps:
            raise FileNotFoundError(f"no checkpoints in {ckpt_dir}")
        if step in (None, "latest"):
            candidates = steps[::-1]
        elif step == "best":
            scored = [(m[BEST_METRIC], s) for s in steps
                      if (m := manager.metrics(s)) and BEST_METRIC in m]
            if not scored:
                raise ValueError(f"no checkpoint in {ckpt_dir} has validation metrics")
            candidates = [max(scored)[1]]
        else:
            if int(step) not in steps:
                raise FileNotFoundError(f"no checkpoint of step {step} in {ckpt_dir} (has {steps})")
            candidates = [int(step)]
        for s in candidates:
            try:
                target = _host_target(manager.item_metadata(s)[STATE_ITEM])
                restore = ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardRestore(target)})
                state = manager.restore(s, args=restore)[STATE_ITEM]
                break
            except Exception as e:  # an unreadable step falls back to an older one
                if len(candidates) == 1:
                    raise
                log.warning("checkpoint %d in %s unreadable (%s: %s); trying an older one",
                            s, ckpt_dir, type(e).__name__, str(e).splitlines()[0][:200])
        else:
            raise FileNotFoundError(f"no readable checkpoint in {ckpt_dir}")
    finally:
        manager.close()
    has_ema = bool(state.get("ema"))
    use_ema = has_ema if ema is None else ema
    if use_ema and not has_ema:
        raise ValueError(f"{directory} kept no EMA of the weights; use ema=False")
    src = state["ema"] if use_ema else state
    variables = {"params": src["params"]}
    if src.get("batch_stats"):
        variables["batch_stats"] = src["batch_stats"]
    return variables


def load_checkpoint(directory: str, step: Union[None, int, str] = None, ema: Optional[bool] = None,
                    **model_overrides: Any):
    """``(model, variables)`` from a training workdir or a ``save_model`` directory.

    Args:
      directory: a training workdir (``train.py --workdir``) or a ``save_model`` directory.
      step: for a workdir: None or 'latest' (the newest readable checkpoint), 'best' (the
        best validation top-1), or a step number.
      ema: for a workdir: use the EMA weights (None: if the run kept an EMA).
      **model_overrides: extra overrides for ``models.create`` (e.g. ``dtype``); ones that
        change a parameter's shape (``num_classes``) must agree with the weights.
    """
    loaded = _load_directory(directory, step, ema, model_overrides)
    return loaded.model, loaded.variables


# ---------------------------------------------------------------------------------------
# One entry for the commands: any source -> the model, built once.
# ---------------------------------------------------------------------------------------
class Loaded(NamedTuple):
    """A model ready for ``model.apply`` / ``explain``, with its zoo name and spec."""

    model: Any
    variables: Any
    name: str
    spec: Any  # bcos_jax.models.ModelSpec: input size, resize, channels, version


def _load_directory(directory: str, step, ema, overrides: Mapping[str, Any]) -> Loaded:
    from bcos_jax import models

    directory = os.path.abspath(directory)
    name, saved = read_model_json(directory)
    model = models.create(name, **{**saved, **overrides})
    var_dir = os.path.join(directory, VARIABLES_SUBDIR)
    if os.path.isdir(var_dir):
        variables = _read_variables_dir(var_dir)
    else:
        variables = _read_workdir(directory, step, ema)
    spec = models.get_spec(name)
    if overrides:  # the saved weights fix every shape: an override may not change one
        _check_shapes(model, variables, spec, directory)
    return Loaded(model, variables, name, spec)


def _check_shapes(model, variables, spec, source: str) -> None:
    shape = (1, spec.input_size, spec.input_size, spec.in_channels)
    want = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
    want = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(want)}
    have = {jax.tree_util.keystr(k): np.shape(v)
            for k, v in jax.tree_util.tree_leaves_with_path(variables)}
    bad = [f"{k} saved {have.get(k)}, the model needs {tuple(s)}"
           for k, s in want.items() if have.get(k) != tuple(s)]
    if bad:
        raise ValueError(f"the weights in {source} do not fit the model with these overrides: "
                         + "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""))


def load(*, checkpoint: Optional[str] = None, model: Optional[str] = None,
         weights: Optional[str] = None, step: Union[None, int, str] = None,
         ema: Optional[bool] = None, **overrides: Any) -> Loaded:
    """The model of exactly one source:

    * ``checkpoint=DIR``: a ``save_model`` directory or a training workdir (``step``, ``ema``
      as in ``load_checkpoint``);
    * ``model=NAME, weights=FILE``: a zoo model with official PyTorch weights (``.pth``/``.pt``
      read weights-only, or ``.safetensors``), converted by ``bcos_jax.convert``.

    ``overrides`` go to ``models.create`` (e.g. ``num_classes=10``). A ValueError says which
    source is missing or doubled.
    """
    if checkpoint is not None:
        if model is not None or weights is not None:
            raise ValueError("give either a checkpoint directory or a model with weights, not both")
        return _load_directory(checkpoint, step, ema, overrides)
    if model is None or weights is None:
        raise ValueError("give a checkpoint directory, or a model name with a weights file")
    from bcos_jax import convert, models

    spec = models.get_spec(model)
    net = models.create(model, **overrides)
    shape = (1, spec.input_size, spec.input_size, spec.in_channels)
    variables = convert.from_torch_module(net, convert.load_torch_checkpoint(weights), shape,
                                          prefix=spec.torch_prefix, name=model)
    return Loaded(net, variables, model, spec)
