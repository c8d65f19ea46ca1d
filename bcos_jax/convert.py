"""PyTorch state_dict -> Flax variables, for the official B-cos weights (and any model of the zoo).

The mapping is structural: every family names its Flax submodules after the reference's
module paths (``layer1/0/conv1`` <-> ``layer1.0.conv1``), so one rule set converts all:

* ``X.linear.weight`` (B-cos layers wrap a normed conv/linear named ``linear``) and
  ``X.weight`` of a conv/linear -> ``params/X/kernel``; OIHW -> HWIO, [out, in] -> [in, out].
* norm ``X.weight`` -> ``params/X/scale``; ``X.bias`` -> ``params/X/bias``.
* ``X.running_var`` -> ``batch_stats/X/var``; ``X.running_mean`` -> ``batch_stats/X/mean``
  where the norm is centred (uncentred norms keep it as an unused buffer: dropped);
  ``num_batches_tracked`` dropped.
* any other tensor (``layer_scale``, ...) -> the parameter of the same name, reshaped if
  only singleton axes differ.

On any mismatch a ``ConversionError`` lists the missing, unexpected and mis-shaped keys.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

import flax
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "ConversionError",
    "from_torch",
    "from_torch_module",
    "load_torch_checkpoint",
    "to_numpy_state_dict",
]

_DROPPED_LEAVES = ("num_batches_tracked",)


class ConversionError(ValueError):
    """A state_dict that does not fit the model; the message lists the offending keys."""

    def __init__(self, model_name: str, missing, unexpected, misshaped):
        self.missing, self.unexpected, self.misshaped = (
            list(missing),
            list(unexpected),
            list(misshaped),
        )
        lines = [f"state_dict does not match model {model_name!r}:"]
        if self.missing:
            lines.append(f"  missing ({len(self.missing)}): " + ", ".join(self.missing[:20]))
        if self.unexpected:
            lines.append(
                f"  unexpected ({len(self.unexpected)}): " + ", ".join(self.unexpected[:20])
            )
        if self.misshaped:
            lines.append(
                f"  mis-shaped ({len(self.misshaped)}): "
                + ", ".join(f"{k} {a} vs expected {b}" for k, a, b in self.misshaped[:20])
            )
        more = max(len(self.missing), len(self.unexpected), len(self.misshaped)) > 20
        super().__init__("\n".join(lines) + ("\n  (lists truncated to 20)" if more else ""))


def to_numpy_state_dict(state_dict: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """Values as NumPy arrays (accepts torch tensors, NumPy arrays, jax arrays)."""
    out = {}
    for k, v in state_dict.items():
        if hasattr(v, "detach"):  # torch tensor, without importing torch
            v = (
                v.detach().cpu().float().numpy()
                if v.is_floating_point()
                else v.detach().cpu().numpy()
            )
        out[k] = np.asarray(v)
    return out


def load_torch_checkpoint(path: str) -> Dict[str, np.ndarray]:
    """Read a ``.pth``/``.pt`` (``torch.save``) or ``.safetensors`` file; PyTorch is not needed.

    ``.pth`` files are read by ``bcos_jax.torch_file`` (zip and legacy formats), a restricted
    unpickler that accepts only tensors and plain containers: a file whose pickle asks for
    anything else is refused (``torch_file.UnsafeCheckpointError``, a ValueError naming the
    global) and nothing in it runs. The arrays are bitwise those of
    ``torch.load(path, weights_only=True)``, in their stored dtype (bfloat16 as
    ``ml_dtypes.bfloat16``). Only the pre-2017 tar format of ``torch.save`` falls back to
    ``torch.load(weights_only=True)`` (PyTorch needed). A Lightning-style
    ``{'state_dict': ...}`` is unwrapped. Returns a flat ``{key: np.ndarray}``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file at {path!r}")
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        try:
            return dict(load_file(path))
        except Exception as e:  # re-raised with the path
            raise ValueError(f"{path}: not a readable .safetensors file ({e})") from e
    from bcos_jax import torch_file

    try:
        obj = torch_file.load(path)
    except torch_file.UnsafeCheckpointError as e:
        raise torch_file.UnsafeCheckpointError(
            f"{path}: refused to load: it is not a plain weights file ({e}). Nothing in it was "
            "run; ask for a .safetensors file."
        ) from e
    except torch_file.UnsupportedFormatError:
        obj = _torch_load(path)
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{path}: expected a state_dict (a mapping of tensors), got {type(obj).__name__}")
    bad = [str(k) for k, v in obj.items()
           if not (isinstance(v, np.ndarray) or hasattr(v, "detach"))]
    if bad:
        raise ValueError(f"{path}: state_dict entries that are not tensors: {', '.join(bad[:10])}")
    return to_numpy_state_dict(obj)


def _torch_load(path: str) -> Any:
    """``torch.load(weights_only=True)``: the fallback for formats ``torch_file`` does not read."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"reading {path!r} (the pre-2017 tar format of torch.save) needs PyTorch "
            "(pip install 'bcos-jax[torch]'), or convert it to .safetensors first"
        ) from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError and others
        raise ValueError(
            f"{path}: refused to load: it is not a plain weights file (torch.load with "
            f"weights_only=True failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}). "
            "Files carrying pickled code are never executed; ask for a .safetensors file."
        ) from e


def _flatten(tree: Mapping[str, Any], prefix: Tuple[str, ...] = ()) -> Dict[Tuple[str, ...], Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def _candidates(parts: List[str]) -> List[Tuple[str, Tuple[str, ...]]]:
    """(collection, flax path) candidates for one torch key, most specific first."""
    *mods, leaf = parts
    stripped = mods[:-1] if mods and mods[-1] == "linear" else None
    out = []
    for m in ([stripped] if stripped is not None else []) + [mods]:
        m = tuple(m)
        if leaf == "weight":
            out += [("params", m + ("kernel",)), ("params", m + ("scale",))]
        elif leaf == "bias":
            out += [("params", m + ("bias",))]
        elif leaf == "running_var":
            out += [("batch_stats", m + ("var",))]
        elif leaf == "running_mean":
            out += [("batch_stats", m + ("mean",))]
        else:
            out += [("params", m + (leaf,)), ("batch_stats", m + (leaf,))]
    return out


def _to_flax_array(
    arr: np.ndarray, path: Tuple[str, ...], shape: Tuple[int, ...]
) -> Optional[np.ndarray]:
    if path[-1] == "kernel":
        if arr.ndim == 4:
            arr = arr.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        elif arr.ndim == 2:
            arr = arr.T  # [out, in] -> [in, out]
    if arr.shape == tuple(shape):
        return arr
    if path[-1] != "kernel" and arr.size == int(np.prod(shape)):
        squeezed = lambda s: tuple(d for d in s if d != 1)
        if squeezed(arr.shape) == squeezed(shape):
            return arr.reshape(shape)
    return None


def from_torch_module(
    model: Any,
    state_dict: Mapping[str, Any],
    input_shape: Tuple[int, ...],
    *,
    prefix: str = "",
    name: Optional[str] = None,
) -> Dict[str, Any]:
    """Convert ``state_dict`` for any Flax ``model`` whose names mirror the torch module paths.

    Args:
      model: the Flax module; its variables are traced with ``jax.eval_shape`` on
        ``input_shape`` (NHWC, batch included) to know what to fill.
      state_dict: torch tensors or arrays.
      prefix: key prefix to strip (e.g. '0.' for ``nn.Sequential(model, ...)`` wrappers).
    Returns:
      ``{'params': ..., 'batch_stats': ...}`` (collections the model has) of jnp arrays.
    """
    name = name or type(model).__name__
    sd = to_numpy_state_dict(state_dict)
    abstract = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros(input_shape, jnp.float32), train=False)
    )
    abstract = flax.core.unfreeze(abstract)
    target = {(coll,) + p: v for coll, tree in abstract.items() for p, v in _flatten(tree).items()}
    filled: Dict[Tuple[str, ...], np.ndarray] = {}
    unexpected, misshaped = [], []
    for key, arr in sd.items():
        if prefix and not key.startswith(prefix):
            unexpected.append(key)
            continue
        parts = key[len(prefix):].split(".")
        if parts[-1] in _DROPPED_LEAVES:
            continue
        hit = None
        for coll, path in _candidates(parts):
            full = (coll,) + path
            if full in target:
                hit = full
                break
        if hit is None:
            if parts[-1] == "running_mean":
                continue  # uncentred norms: an unused buffer of the reference
            unexpected.append(key)
            continue
        conv = _to_flax_array(arr, hit[1:], target[hit].shape)
        if conv is None:
            misshaped.append((key, tuple(arr.shape), tuple(target[hit].shape)))
            continue
        filled[hit] = conv.astype(target[hit].dtype)
    missing = ["/".join(k) for k in target if k not in filled]
    if missing or unexpected or misshaped:
        raise ConversionError(name, missing, unexpected, misshaped)
    variables: Dict[str, Any] = {}
    for full, arr in filled.items():
        node = variables
        for p in full[:-1]:
            node = node.setdefault(p, {})
        node[full[-1]] = jnp.asarray(arr)
    return variables


def from_torch(name: str, state_dict: Mapping[str, Any], **overrides: Any) -> Dict[str, Any]:
    """Convert a reference state_dict for the zoo model ``models.create(name, **overrides)``.

    Example::

        sd = convert.load_torch_checkpoint('resnet50-xxxx.pth')
        variables = convert.from_torch('resnet50', sd)

    ``state_dict`` may also be a PyTorch Lightning checkpoint as the reference trainers save
    it (``{'state_dict': {'model.' + key: ...}, 'epoch': ...}``, e.g. the released
    B-cosified models) or that inner dict: the ``model.`` weights are used (not ``ema.``).
    """
    from bcos_jax import models

    model = models.create(name, **overrides)
    spec = models.get_spec(name)
    size = spec.input_size
    shape = (1, size, size, spec.in_channels)
    wrapped = isinstance(state_dict, Mapping) and isinstance(state_dict.get("state_dict"), Mapping)
    if wrapped:
        state_dict = _lightning_model_weights(state_dict["state_dict"], name)
    try:
        return from_torch_module(model, state_dict, shape, prefix=spec.torch_prefix, name=name)
    except ConversionError as first:
        # The inner state_dict of a Lightning file (what load_torch_checkpoint returns).
        lightning_keys = all(k.startswith(("model.", "ema.")) for k in state_dict)
        if wrapped or not state_dict or not lightning_keys:
            raise
        stripped = _lightning_model_weights(state_dict, name)
        try:
            return from_torch_module(model, stripped, shape, prefix=spec.torch_prefix, name=name)
        except ConversionError:
            raise first from None  # the keys as given


def _lightning_model_weights(state_dict: Mapping[str, Any], name: str) -> Dict[str, Any]:
    # The reference's LightningModule holds the network as ``self.model`` (and an EMA copy
    # as ``self.ema.module``); scripts/strip_checkpoints.py keeps the ``model.`` keys.
    out = {k[len("model."):]: v for k, v in state_dict.items() if k.startswith("model.")}
    if not out:
        raise ConversionError(name, [], sorted(state_dict)[:20], [])
    return out
