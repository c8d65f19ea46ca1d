"""Fine-tuning and transfer: start a run from other weights, freeze parameters by pattern.

``config.init_from`` (``init_from_variables`` + ``restart_from``) names where a new run's
weights come from:

* a directory: a training workdir of ``train.py`` (its newest readable checkpoint; the EMA
  weights if the run kept an EMA) or a ``save_model`` directory — both name their zoo
  model in ``model.json``;
* a ``.pth``/``.pt``/``.safetensors`` file of a zoo model: converted by ``bcos_jax.convert``
  for ``config.model_name`` (with the config's model overrides, whatever its number of
  classes);
* a zoo model name: its official weights, ``bcos_jax.pretrained(name)``.

The parameters and the norm statistics are taken over; the optimiser state, the step and
the EMA start afresh (the EMA as a copy of the new weights). Parameters whose shape depends
on the number of classes (the logit layer: found by comparing the model's shapes at two
class counts, so it works for every family without a list of head names) keep their fresh
initialisation when the source was trained for another number of classes; a log line names
them. Any other difference (a missing, unexpected or differently shaped key) is a
``TransferError`` that lists the keys. ``init_from`` is applied only when a run *starts*: a
run that resumes from its own checkpoint never re-applies it.

``config.freeze`` is a regular expression, searched (``re.search``) in the '/'-joined path
of every parameter inside ``params`` (``layer1/0/conv1/kernel``, ``classifier/kernel``) and
of every running statistic inside ``batch_stats`` (``layer1/0/bn1/var``). Matched
parameters get no update: the optimiser becomes ``optax.multi_transform`` of the recipe's
optimiser (trained parameters) and ``optax.set_to_zero()`` (frozen ones, which then keep no
optimiser state, and get no weight decay). A norm layer whose variables all match is
*frozen* as a whole: it runs in inference mode in the training forward pass too (its
running statistics normalise, as torch's ``module.eval()``), so its statistics are neither
used from the batch nor updated: the features a frozen backbone computes are exactly those
of the source model. (A norm layer only partly matched trains normally.) ``probe_pattern``
gives the linear probe's pattern, everything but the logit layer.
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, NamedTuple, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "FreezePlan",
    "FrozenNormsModel",
    "TransferError",
    "apply_freeze",
    "freeze_plan",
    "head_keys",
    "init_from_variables",
    "merge_variables",
    "probe_pattern",
    "restart_from",
]

log = logging.getLogger(__name__)

WEIGHT_FILES = (".pth", ".pt", ".safetensors")
_LIST = 20  # keys listed per kind in an error message


class TransferError(ValueError):
    """Weights that do not fit the model being trained; the message lists the keys."""


# ---------------------------------------------------------------------------------------
# Paths.
# ---------------------------------------------------------------------------------------
def flatten(variables: Mapping[str, Any]) -> Dict[str, Any]:
    """``{'params': {'a': {'kernel': x}}}`` -> ``{'params/a/kernel': x}``."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(dict(variables)):
        out["/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)] = leaf
    return out


def _abstract_variables(model_name: str, overrides: Mapping[str, Any], image_size: int):
    from bcos_jax import models

    model = models.create(model_name, **dict(overrides))
    c = models.get_spec(model_name).in_channels
    x = jax.ShapeDtypeStruct((1, image_size, image_size, c), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)


def head_keys(model_name: str, overrides: Mapping[str, Any], image_size: int) -> FrozenSet[str]:
    """The variables (``'params/classifier/kernel'``, ...) whose shape depends on the number
    of classes: the logit layer(s), including auxiliary heads (shapes only, nothing run)."""
    n = int(overrides.get("num_classes") or 0) or _default_classes(model_name)
    a = flatten(_abstract_variables(model_name, {**overrides, "num_classes": n}, image_size))
    b = flatten(_abstract_variables(model_name, {**overrides, "num_classes": n + 1}, image_size))
    return frozenset(k for k in a if k not in b or a[k].shape != b[k].shape)


def _default_classes(model_name: str) -> int:
    from bcos_jax import models

    return int(models.get_spec(model_name).num_classes)


def probe_pattern(model_name: str, overrides: Mapping[str, Any] = None,
                  image_size: Optional[int] = None) -> str:
    """The ``config.freeze`` of a linear probe: every parameter but the logit layer's
    (``'^(?!classifier/)'`` for ``bcos_small_cnn``)."""
    from bcos_jax import models

    size = image_size or models.get_spec(model_name).input_size
    heads = sorted({k.split("/", 1)[1].rsplit("/", 1)[0]
                    for k in head_keys(model_name, dict(overrides or {}), size)
                    if k.startswith("params/")})
    return "^(?!(" + "|".join(re.escape(h) for h in heads) + ")/)"


# ---------------------------------------------------------------------------------------
# init_from: reading the source.
# ---------------------------------------------------------------------------------------
def _from_weights_file(path: str, model_name: str, overrides: Mapping[str, Any]):
    """Convert a PyTorch/safetensors file for ``model_name``; a file for another number of
    classes is converted at its own count (found from the shapes the first try reports)."""
    from bcos_jax import convert, models

    sd = convert.load_torch_checkpoint(path)
    spec = models.get_spec(model_name)
    base = {k: v for k, v in overrides.items() if k != "num_classes"}
    tried: List[int] = []
    first: Optional[convert.ConversionError] = None
    candidates = [int(overrides.get("num_classes") or spec.num_classes), int(spec.num_classes)]
    while candidates:
        n = candidates.pop(0)
        if n in tried or n < 2:
            continue
        tried.append(n)
        try:
            return convert.from_torch(model_name, sd, **base, num_classes=n)
        except convert.ConversionError as e:
            if first is None:
                first = e
                # Mis-shaped keys (also listed as missing), nothing unexpected: try the
                # class counts their shapes suggest (the logit layer's).
                if not e.unexpected and len(e.missing) == len(e.misshaped):
                    dims = {d for _, have, _ in e.misshaped for d in have}
                    candidates += sorted(dims)
    raise TransferError(
        f"init_from={path!r} does not fit config.model_name={model_name!r} (tried "
        f"{tried} classes):\n{first}") from first


def _close_names(name: str) -> str:
    from bcos_jax import models

    close = difflib.get_close_matches(name, list(models.list_models()), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(map(repr, close))}?" if close else ""


def init_from_variables(init_from: str, model_name: str,
                        overrides: Mapping[str, Any]) -> Tuple[Dict[str, Any], str]:
    """The source's ``{'params', 'batch_stats'}`` as host NumPy arrays, and what it was.

    ``init_from``: a workdir / ``save_model`` directory, a ``.pth``/``.pt``/``.safetensors``
    file (converted for ``model_name`` with ``overrides``), or a zoo model name (its
    official weights through ``bcos_jax.pretrained``). A source that does not exist or
    cannot be read is a ``TransferError`` naming it.
    """
    from bcos_jax import models

    path = os.path.expanduser(init_from)
    if os.path.isdir(path):
        import bcos_jax

        try:
            _, variables = bcos_jax.load_checkpoint(path)
        except (FileNotFoundError, ValueError) as e:
            raise TransferError(f"init_from={init_from!r}: {e}") from e
        what = f"checkpoint {os.path.abspath(path)}"
    elif os.path.isfile(path):
        if not path.lower().endswith(WEIGHT_FILES):
            raise TransferError(
                f"init_from={init_from!r} is a file but not a weights file "
                f"({', '.join(WEIGHT_FILES)}); give a training workdir, a save_model directory, "
                "a weights file or a zoo name")
        variables = _from_weights_file(path, model_name, overrides)
        what = f"weights file {os.path.abspath(path)} (converted for {model_name})"
    elif init_from in models.list_models():
        import bcos_jax

        _, variables = bcos_jax.pretrained(init_from)  # downloaded and converted once
        what = f"the official weights of {init_from}"
    else:
        looks_like_path = os.sep in init_from or init_from.lower().endswith(WEIGHT_FILES)
        raise TransferError(
            f"init_from={init_from!r} points nowhere: "
            + (f"no file or directory {os.path.abspath(path)}" if looks_like_path
               else f"not a file, a directory or a zoo model name{_close_names(init_from)}"))
    return jax.tree.map(np.asarray, jax.device_get(dict(variables))), what


# ---------------------------------------------------------------------------------------
# init_from: fitting the source to the model.
# ---------------------------------------------------------------------------------------
def merge_variables(loaded: Mapping[str, Any], fresh: Mapping[str, Any], heads: FrozenSet[str],
                    shapes_at: Callable[[int], Mapping[str, Tuple[int, ...]]],
                    source: str = "init_from") -> Tuple[Dict[str, Any], List[str]]:
    """``fresh`` (the new model's initial variables) with every leaf replaced by ``loaded``'s,
    except the logit-layer leaves (``heads``) when the source has another number of classes:
    those stay fresh.

    ``shapes_at(n)``: the model's ``{key: shape}`` at ``n`` classes. The logit layer may
    differ only as the number of classes makes it differ: its loaded shapes must be those of
    the model at some other class count (a logit layer of another width is an error).
    Returns ``(flat {key: leaf}, re-initialised keys)``: loaded leaves are NumPy arrays cast
    to the fresh leaf's dtype, fresh ones are ``fresh``'s own leaves. A key missing from
    either side or mis-shaped otherwise raises ``TransferError`` listing them all.
    """
    lf = {k: v for k, v in flatten(loaded).items() if k.split("/")[0] in ("params", "batch_stats")}
    ff = flatten(fresh)
    missing = [k for k in ff if k not in lf]
    unexpected = [k for k in lf if k not in ff]
    misshaped = [(k, tuple(np.shape(lf[k])), tuple(ff[k].shape)) for k in ff
                 if k in lf and tuple(np.shape(lf[k])) != tuple(ff[k].shape)]
    bad = [m for m in misshaped if m[0] not in heads]
    head_diff = {k: a for k, a, _ in misshaped if k in heads}
    if head_diff and not bad and not _other_class_count(head_diff, shapes_at):
        bad = [m for m in misshaped if m[0] in heads]
    if missing or unexpected or bad:
        lines = [f"{source} does not fit the model being trained:"]
        for what, keys in (("missing", missing), ("unexpected", unexpected),
                           ("mis-shaped", [f"{k} {a} vs model {b}" for k, a, b in bad])):
            if keys:
                more = f", ... ({len(keys) - _LIST} more)" if len(keys) > _LIST else ""
                lines.append(f"  {what} ({len(keys)}): " + ", ".join(keys[:_LIST]) + more)
        lines.append(f"  (only the logit layer may differ, when the number of classes does: "
                     f"{', '.join(sorted(heads)) or 'none'})")
        raise TransferError("\n".join(lines))
    reinit = sorted(k for k, _, _ in misshaped)
    out = {k: (v if k in reinit else np.asarray(lf[k]).astype(v.dtype)) for k, v in ff.items()}
    return out, reinit


def _other_class_count(head_diff: Mapping[str, Tuple[int, ...]],
                       shapes_at: Callable[[int], Mapping[str, Tuple[int, ...]]]) -> Optional[int]:
    """The class count at which the model's logit layer has the loaded shapes, if any."""
    for n in sorted({d for shape in head_diff.values() for d in shape}):
        if n < 2:
            continue
        want = shapes_at(n)
        if all(tuple(want.get(k, ())) == tuple(a) for k, a in head_diff.items()):
            return n
    return None


def shapes_at(model_name: str, overrides: Mapping[str, Any], image_size: int):
    """``n -> {key: shape}`` of the model at ``n`` classes (for ``merge_variables``)."""
    def fn(n: int) -> Dict[str, Tuple[int, ...]]:
        flat = flatten(_abstract_variables(model_name, {**overrides, "num_classes": n}, image_size))
        return {k: tuple(v.shape) for k, v in flat.items()}

    return fn


def restart_from(setup: Any, state: Any, params: Any, batch_stats: Any) -> Any:
    """``state`` restarted at step 0 from ``params``/``batch_stats``: a fresh optimiser state
    (``setup.tx.init``), and the EMA (when the run keeps one) a copy of the new weights.
    Pure; train.py jits it with the state's shardings."""
    ema = ema_count = None
    if setup.use_ema:
        ema = {"params": params, "batch_stats": batch_stats}
        ema_count = jnp.zeros((), jnp.int32)
    return state.replace(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                         opt_state=setup.tx.init(params), ema=ema, ema_count=ema_count)


def _place(flat: Mapping[str, Any], like: Any, prefix: str) -> Any:
    """The subtree ``prefix`` of ``flat`` as arrays with the shardings of ``like``'s leaves
    (every process holds the whole source, each places its own shards)."""
    def one(path, leaf):
        key = prefix + "/" + "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
        value = flat[key]
        if isinstance(value, jax.Array):
            return value  # a fresh leaf: already where it belongs
        host = np.asarray(value)
        return jax.make_array_from_callback(host.shape, leaf.sharding, lambda idx: host[idx])

    return jax.tree_util.tree_map_with_path(one, like)


def apply_init_from(setup: Any, state: Any, state_sharding: Any, init_from: str,
                    image_size: int) -> Tuple[Any, Dict[str, Any]]:
    """The fresh ``state`` of a new run with the weights of ``init_from`` (see the module
    docstring). Returns ``(state, report)``; report: 'init_from' (what was read),
    'reinitialised' (keys), logged as well."""
    loaded, what = init_from_variables(init_from, setup.model_name, setup.model_overrides)
    fresh = {"params": state.params, "batch_stats": state.batch_stats}
    heads = head_keys(setup.model_name, setup.model_overrides, image_size)
    flat, reinit = merge_variables(
        loaded, fresh, heads, shapes_at(setup.model_name, setup.model_overrides, image_size),
        f"init_from={init_from!r} ({what})")
    params = _place(flat, state.params, "params")
    batch_stats = _place(flat, state.batch_stats, "batch_stats")
    # Not donated: the re-initialised leaves of ``params`` are buffers of ``state`` itself.
    restart = jax.jit(lambda s, p, b: restart_from(setup, s, p, b), out_shardings=state_sharding)
    state = restart(state, params, batch_stats)
    n = sum(int(np.prod(np.shape(v))) for k, v in flat.items() if k not in reinit)
    log.warning("init_from: %s weights (%d values) from %s", len(flat) - len(reinit), n, what)
    if reinit:
        log.warning("init_from: the source has another number of classes; re-initialised the "
                    "logit layer: %s", ", ".join(reinit))
    return state, {"init_from": what, "reinitialised": reinit}


# ---------------------------------------------------------------------------------------
# freeze.
# ---------------------------------------------------------------------------------------
class FreezePlan(NamedTuple):
    """What ``config.freeze`` freezes.

    Attributes:
      pattern: the regular expression.
      labels: a pytree like ``params`` of 'frozen' / 'trained' (``optax.multi_transform``).
      frozen: '/'-joined paths (inside ``params``) of the frozen parameters.
      frozen_norms: module paths (tuples of names) of the norm layers run in inference mode.
      num_frozen, num_params: frozen and all parameter values (not arrays).
    """

    pattern: str
    labels: Any
    frozen: Tuple[str, ...]
    frozen_norms: FrozenSet[Tuple[str, ...]]
    num_frozen: int
    num_params: int


def freeze_plan(variables: Mapping[str, Any], pattern: str) -> FreezePlan:
    """Which parameters and norm layers ``pattern`` freezes (``variables``: arrays or
    ShapeDtypeStructs of ``{'params', 'batch_stats'}``). A pattern that matches no
    parameter, or every parameter, is a ValueError."""
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"config.freeze={pattern!r} is not a regular expression: {e}") from None
    params = flatten({"": variables["params"]})
    params = {k[1:]: v for k, v in params.items()}  # paths inside params
    stats = {k[1:]: v for k, v in flatten({"": variables.get("batch_stats") or {}}).items()}
    frozen = tuple(k for k in params if rx.search(k))

    def size(v):
        return int(np.prod(v.shape))

    if not frozen:
        raise ValueError(f"config.freeze={pattern!r} matches no parameter; parameter paths look "
                         f"like {', '.join(list(params)[:4])}")
    if len(frozen) == len(params):
        raise ValueError(f"config.freeze={pattern!r} matches every parameter: nothing would train")
    modules: Dict[Tuple[str, ...], List[str]] = {}
    for k in stats:
        modules.setdefault(tuple(k.split("/")[:-1]), []).append(k)
    frozen_norms = set()
    for mod, keys in modules.items():
        own = keys + [k for k in params if tuple(k.split("/")[:-1]) == mod]
        if all(rx.search(k) for k in own):
            frozen_norms.add(mod)
    fset = set(frozen)
    def label(path, _):
        return "frozen" if "/".join(str(getattr(k, "key", k)) for k in path) in fset else "trained"

    labels = jax.tree_util.tree_map_with_path(label, variables["params"])
    return FreezePlan(pattern, labels, frozen, frozenset(frozen_norms),
                      sum(size(params[k]) for k in frozen), sum(size(v) for v in params.values()))


class FrozenNormsModel:
    """``model`` whose norm layers at ``paths`` run in inference mode even in training
    (``train=False`` passed to their ``__call__``); everything else is ``model``'s.

    Not a Flax module itself (that would add a level to every parameter path): ``init``
    and ``apply`` run the wrapped module under ``flax.linen.intercept_methods``.
    """

    def __init__(self, model: Any, paths: FrozenSet[Tuple[str, ...]]):
        self.model, self.paths = model, frozenset(paths)

    def _intercept(self, next_fun, args, kwargs, context):
        if context.method_name == "__call__" and tuple(context.module.path) in self.paths:
            if "train" in kwargs:
                kwargs = dict(kwargs, train=False)
            elif len(args) > 1:
                args = (args[0], False) + tuple(args[2:])
        return next_fun(*args, **kwargs)

    def init(self, *args, **kwargs):
        with nn.intercept_methods(self._intercept):
            return self.model.init(*args, **kwargs)

    def apply(self, *args, **kwargs):
        with nn.intercept_methods(self._intercept):
            return self.model.apply(*args, **kwargs)

    def __getattr__(self, name):
        if name == "model":  # not set yet (copy, unpickling): no recursion through __getattr__
            raise AttributeError(name)
        return getattr(self.model, name)


def apply_freeze(setup: Any, pattern: str) -> Tuple[Any, FreezePlan]:
    """``setup`` (``step.Setup``) with ``pattern`` frozen: its optimiser through
    ``optax.multi_transform`` (frozen: ``set_to_zero``) and its model with the fully
    matched norm layers in inference mode. Logs the frozen count."""
    x = jax.ShapeDtypeStruct((1, setup.image_size, setup.image_size, setup.in_channels),
                             jnp.float32)
    abstract = jax.eval_shape(lambda x: setup.model.init(jax.random.key(0), x, train=False), x)
    plan = freeze_plan(abstract, pattern)
    tx = optax.multi_transform({"trained": setup.tx, "frozen": optax.set_to_zero()}, plan.labels)
    model = FrozenNormsModel(setup.model, plan.frozen_norms) if plan.frozen_norms else setup.model
    log.warning("freeze %r: %d of %d parameter values frozen (%d of %d arrays), %d norm layers "
                "in inference mode", pattern, plan.num_frozen, plan.num_params, len(plan.frozen),
                len(jax.tree.leaves(abstract["params"])), len(plan.frozen_norms))
    return dataclasses.replace(setup, tx=tx, model=model), plan


def summary_fields(plan: Optional[FreezePlan], report: Optional[Mapping[str, Any]],
                   init_from: str) -> Dict[str, Any]:
    """The summary.json fields of a fine-tuning run."""
    out: Dict[str, Any] = {}
    if init_from:
        out["init_from"] = init_from
        if report is not None:  # None: resumed, init_from was applied by the first run
            out["reinitialised"] = list(report["reinitialised"])
    if plan is not None:
        out["freeze"] = plan.pattern
        out["frozen_params"] = plan.num_frozen
        out["frozen_norm_layers"] = len(plan.frozen_norms)
    return out

