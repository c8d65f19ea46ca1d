"""The training config schema: every key ``train.py`` reads, with its default (the only place
a default is written; ``train.py`` and ``training.step`` read the keys without fallbacks).

Recipes (``configs/*.py``) start from ``default_config()`` and change what they need; every
value is a plain Python value (names, numbers, tuples), never an object, so any key can be
overridden on the command line (``--config.optimizer.lr=5e-4``).

``check_command_line`` and ``check_model`` turn what would be deep tracebacks of a bad
``--config`` (a missing file, a failing ``get_config``, an unknown key, an unknown model
or model override) into one ValueError each that names the problem and suggests the fix.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
import re
from typing import Any, List, Optional, Sequence

import ml_collections

__all__ = ["check_command_line", "check_model", "check_override", "complete", "default_config",
           "load_config"]

# Keys whose value is taken whole, without a schema: models.create's overrides.
_FREE_KEYS = ("model",)


def default_config(data_recipe: Optional[str] = None) -> ml_collections.ConfigDict:
    """All keys with defaults; ``data_recipe`` picks a ``bcos_jax.data.PRESETS`` data config."""
    from bcos_jax import data

    c = ml_collections.ConfigDict()
    c.seed = 42  # model init, per-step rngs (fold_in(seed, step)) and the data order

    # ---- Model: a zoo name and overrides for models.create (num_classes defaults to the data's).
    c.model_name = "resnet50"
    c.model = ml_collections.ConfigDict()
    c.compute_dtype = "float32"  # 'bfloat16': mixed precision (params and norm statistics stay f32)
    c.remat = False  # rematerialise every B-cos layer in the backward pass: less memory, more FLOPs

    # ---- Fine-tuning (bcos_jax.training.transfer; docs/finetuning.md). init_from: the weights
    # a new run starts from (a workdir, a save_model directory, a .pth/.safetensors file, or a
    # zoo name: its official weights); '' = a fresh initialisation. Applied only when a run
    # starts, never over its own checkpoint. freeze: a regex (re.search) on parameter paths
    # ('layer1/0/conv1/kernel') that are not trained; '' = train everything.
    c.init_from = ""
    c.freeze = ""

    # ---- Data: bcos_jax.data's config (name, splits, sizes, augmentation, mixup, ...).
    c.data = data.default_config(data_recipe)

    # ---- Duration and batch. batch_size is GLOBAL (all devices, all hosts) per optimiser
    # update; grad_accum_steps splits it into that many sequential micro-batches.
    c.batch_size = 256
    c.grad_accum_steps = 1
    c.eval_batch_size = 512
    c.num_epochs = 90.0
    c.num_steps = 0  # > 0 overrides num_epochs

    # ---- Objective and optimiser.
    c.loss = "uniform_off_labels_bce"  # 'bce' | 'uniform_off_labels_bce' | 'ce'
    c.aux_loss_weight = 1.0  # Inception-v3 auxiliary head (v1 AuxLoss(1))
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adam", lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
        agc=True, agc_clip_factor=0.01, agc_eps=1e-3, grad_clip_norm=0.0, momentum=0.9))
    c.schedule = ml_collections.ConfigDict(dict(
        name="warmup_cosine", interval="epoch", warmup_epochs=5, warmup_steps=0, warmup_factor=0.01,
        min_lr=0.0, step_epochs=60, gamma=0.1, final_lr=0.0, start_warmup_lr=0.0))
    c.schedule.epoch0_lr = ml_collections.FieldReference(None, field_type=float)  # v1 quirk

    # ---- EMA of the weights (torchvision recipe); 0 disables it.
    c.ema_decay = 0.0
    c.ema_every = 32
    c.ema_warmup_epochs = 5  # the reference restarts the average during the lr warm-up (5 epochs)

    # ---- Mesh and sharding (see bcos_jax.training.sharding).
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))  # in-slice sizes, -1 = the rest
    c.dcn_mesh = ml_collections.ConfigDict(dict(data=1, fsdp=1))  # across slices (multi-slice pods)
    c.sharding_rules = ((".*", "replicate"),)  # ((regex on param path, "fsdp" | "replicate"), ...)
    c.fsdp_min_size = 2**14

    # ---- Monitoring and checkpoints (intervals: *_steps wins over *_epochs when > 0).
    c.log_every_steps = 50  # as Lightning's default; also how often the host checks the loss
    c.eval_every_epochs = 1.0
    c.eval_every_steps = 0
    c.checkpoint_every_epochs = 1.0
    c.checkpoint_every_steps = 0
    c.keep_checkpoints = 3
    c.explain_every_epochs = 1.0
    c.explain_every_steps = 0
    c.num_explain_images = 8
    c.explain_smooth = 15  # gradient_to_image's smoothing kernel (its default; 3 for 32x32 images)
    c.localisation = False  # needs a dataset with object masks (the quickstart)
    return c


def complete(config: Any) -> ml_collections.ConfigDict:
    """``config`` merged onto ``default_config()``: a new config with every key, the value of
    ``config`` where it has one (the recipes start from ``default_config`` and so have them
    all). A key the schema does not know is a ValueError that suggests the close ones.
    ``config.data``'s keys are completed from ``bcos_jax.data.default_config()``."""
    out = default_config()
    _merge_into(out, config, "")
    return out


def _merge_into(base: ml_collections.ConfigDict, over: Any, prefix: str) -> None:
    for key in over.keys():
        value, where = over[key], prefix + str(key)
        if key not in base:
            keys = [str(k) for k in base.keys()]
            hint = _did_you_mean(str(key), keys, prefix=prefix) or f"; known: {_key_list(keys)}"
            raise ValueError(f"config.{where}: unknown config key{hint}")
        nested = isinstance(value, (ml_collections.ConfigDict, dict))
        if nested and where not in _FREE_KEYS and isinstance(base[key], ml_collections.ConfigDict):
            _merge_into(base[key], value, where + ".")
        else:
            with base.ignore_type():
                base[key] = value


# ----------------------------------------------------------------------------------------
# Checking a command line before ml_collections applies it.
# ----------------------------------------------------------------------------------------
def _did_you_mean(name: str, options: Sequence[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, list(options), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(prefix + c) for c in close)}?" if close else ""


def _key_list(options: Sequence[str], limit: int = 40) -> str:
    options = sorted(options)
    if not options:
        return "(none)"
    more = f", ... ({len(options) - limit} more)" if len(options) > limit else ""
    return ", ".join(options[:limit]) + more


def load_config(arg: str) -> Any:
    """``PATH[:ARG]`` -> ``get_config(ARG)`` of that file (as ``--config`` loads it).

    A missing file (with the close file names of its folder), a file that fails to import,
    has no ``get_config`` or whose ``get_config`` raises are ValueErrors naming the file.
    """
    path, sep, cfg_arg = arg.partition(":")
    if not os.path.isfile(path):
        folder = os.path.dirname(path) or "."
        names = []
        if os.path.isdir(folder):
            names = sorted(f for f in os.listdir(folder) if f.endswith(".py"))
        hint = _did_you_mean(os.path.basename(path), names,
                             prefix=os.path.join(os.path.dirname(path), ""))
        if not hint and names:
            hint = f"; config files in {folder}: {_key_list(names)}"
        raise ValueError(f"--config={arg}: no config file {path!r}{hint}")
    spec = importlib.util.spec_from_file_location("_bcos_checked_config", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise ValueError(f"--config={arg}: {path} failed to load ({type(e).__name__}: {e})") from e
    if not callable(getattr(module, "get_config", None)):
        raise ValueError(f"--config={arg}: {path} defines no get_config()")
    try:
        return module.get_config(cfg_arg) if sep else module.get_config()
    except Exception as e:
        call = f"get_config({cfg_arg!r})" if sep else "get_config()"
        raise ValueError(
            f"--config={arg}: {call} of {path} failed ({type(e).__name__}: {e})") from e


def check_override(config: Any, key: str) -> None:
    """ValueError unless ``key`` (``'optimizer.lr'``, from ``--config.optimizer.lr=...``) is a
    field of ``config``; it names the first unknown part and suggests close keys (difflib)."""
    node, seen = config, "config"
    for part in key.split("."):
        name = re.sub(r"\[.*\]$", "", part)  # an indexed tuple field: sharding_rules[0]
        if not isinstance(node, (ml_collections.ConfigDict, dict)):
            raise ValueError(
                f"--config.{key}: {seen} is {node!r} (of type {type(node).__name__}), not a dict; "
                f"it has no key {name!r}"
            )
        keys = [str(k) for k in node.keys()]
        if name not in keys:
            where = seen[len("config."):] + "." if seen != "config" else ""
            hint = _did_you_mean(name, keys, prefix=where)
            note = ""
            if seen == "config.model":
                note = (" (config.model holds models.create overrides; the config is locked, so "
                        "only keys its file sets can be overridden: set new ones in the config "
                        "file)")
            listing = "" if hint else f"; {seen} has: {_key_list(keys)}"
            raise ValueError(
                f"--config.{key}: unknown config key {where + name!r}{hint}{listing}{note}")
        node = node[name]
        seen = f"{seen}.{name}"


def _config_argument(argv: Sequence[str], flag: str) -> Optional[str]:
    for i, a in enumerate(argv[1:], 1):
        if a == "--":
            break
        m = re.match(rf"^--?{re.escape(flag)}(?:=(.*))?$", a)
        if m:
            if m.group(1) is not None:
                return m.group(1)
            return argv[i + 1] if i + 1 < len(argv) else None
    return None


def _override_keys(argv: Sequence[str], flag: str) -> List[str]:
    # As ml_collections reads them: --config.KEY[=VALUE], -config.KEY, --noconfig.KEY.
    keys = []
    for a in argv[1:]:
        if a == "--":
            break
        m = re.match(rf"^--?(?:no)?{re.escape(flag)}\.([^=]+)", a)
        if m:
            keys.append(m.group(1))
    return keys


def check_command_line(argv: Sequence[str], flag: str = "config") -> Optional[Any]:
    """Load ``--config`` from ``argv`` and check every ``--config.KEY`` override exists.

    Returns the loaded config (None without a ``--config``: absl reports that itself).
    Raises the ValueErrors of ``load_config`` and ``check_override``.
    """
    arg = _config_argument(argv, flag)
    if arg is None:
        return None
    config = load_config(arg)
    for key in _override_keys(argv, flag):
        check_override(config, key)
    return config


def check_model(config: Any) -> None:
    """ValueError unless ``config.model_name`` is a zoo model that accepts ``config.model``.

    Builds the module only (no parameters): an unknown name suggests close names, an unknown
    override key suggests close fields of the model.
    """
    from bcos_jax import models

    name = config.model_name
    try:
        models.get_spec(name)
    except ValueError as e:
        raise ValueError(f"config.model_name: {e}") from None
    overrides = config.model.to_dict() if hasattr(config.model, "to_dict") else dict(config.model)
    try:
        models.create(name, **overrides)
    except TypeError as e:
        m = re.search(r"unexpected keyword argument '([^']+)'", str(e))
        if m is None:
            raise ValueError(f"config.model (overrides of {name}): {e}") from None
        fields = [f.name for f in dataclasses.fields(models.create(name))
                  if f.name not in ("parent", "name")]
        raise ValueError(
            f"config.model.{m.group(1)}: model {name} has no such setting"
            f"{_did_you_mean(m.group(1), fields, prefix='config.model.')} "
            f"(its settings: {_key_list(fields)})"
        ) from None
    except ValueError as e:
        raise ValueError(f"config.model (overrides of {name}): {e}") from None
