"""B-cosification: a pretrained standard zoo model -> a B-cos model with its weights.

``model, variables = bcosify('standard_resnet50', variables)`` follows Arya, Rao, Böhle,
Schiele, *B-cosification: Transforming Deep Neural Networks to be Inherently Interpretable*
(NeurIPS 2024; shrebox/B-cosification: ``bcosify.py``, ``bcosify_vit.py``). The architecture
is the zoo entry ``bcosified_<arch>`` (``bcos_jax.models.bcosified``, which lists every
change); this module moves the weights:

* the first layer's filters over the 3 normalised colour channels become ``[w, -w] / 2``
  over the 6 channels of ``[x, 1-x]`` (normalised with ``[μ, 1-μ]``, ``[σ, σ]``), which
  computes exactly ``w · (x - μ) / σ`` again;
* every other filter is copied as is (B-cos layers that do not normalise their filters);
  a dense classifier becomes the 1×1 conv it equals;
* BatchNorm keeps its scale and running variance and becomes uncentred; with
  ``use_bias=True`` its bias absorbs the mean, ``β - μ·γ / sqrt(var + eps)`` (the
  reference's "BnUncV2"), which leaves the layer's eval-mode output unchanged;
* biases are dropped (``use_bias=False``, the reference's recipe) or kept.

With ``b=1, use_bias=True, logit_bias=None`` and ``stem_pool='max'`` (CNNs) or
``pool_after_head=False`` (ViTs) the result computes the standard network's logits exactly
on every ``[x, 1-x]`` input (the function-preservation check of tests/test_bcosify.py;
docs/bcosification.md); the defaults are the reference's
B-cosified model (B = 2, no biases, average-pool stem, ViT head before the token mean,
logit bias ``-log(999)``), ready to fine-tune (``configs/bcosify.py``).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

import flax
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["BCOSIFY_OPTIONS", "bcosified_name", "bcosify", "bcosify_variables"]

#: Keyword arguments that only the B-cosified model takes (everything else, such as
#: ``num_classes`` or ``depth``, builds both the standard model and its B-cosified twin).
BCOSIFY_OPTIONS = ("b", "use_bias", "stem_pool", "pool_after_head", "input_norm", "logit_bias")

Path = Tuple[str, ...]


def _flatten(tree: Mapping[str, Any], prefix: Path = ()) -> Dict[Path, Any]:
    out: Dict[Path, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, prefix + (str(k),)))
        else:
            out[prefix + (str(k),)] = v
    return out


def _unflatten(flat: Mapping[Path, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for path, v in flat.items():
        node = out
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = v
    return out


def _abstract(model: Any, in_channels: int, size: int) -> Dict[Path, Any]:
    x = jax.ShapeDtypeStruct((1, size, size, in_channels), jnp.float32)
    tree = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros(x.shape, x.dtype), train=False)
    )
    return _flatten(flax.core.unfreeze(tree))


def _twin(name: str):
    from bcos_jax import models
    from bcos_jax.models.bcosified import TWINS

    if name in TWINS:
        return TWINS[name]
    supported = ", ".join(sorted(TWINS))
    if f"standard_{name}" in TWINS:
        raise ValueError(
            f"bcosify takes the standard model, not {name!r}: "
            f"use 'standard_{name}' and its variables"
        )
    if name in models.list_models():
        spec = models.get_spec(name)
        what = (
            "a B-cos model already"
            if spec.version != "standard"
            else f"a standard {spec.family} model without a B-cosified architecture"
        )
        raise ValueError(
            f"cannot B-cosify {name!r}: it is {what}; supported standard models: {supported}"
        )
    models.get_spec(name)  # unknown name: the zoo's error with close names
    raise AssertionError("unreachable")


def _encode_first_layer(w: np.ndarray, target_shape: Tuple[int, ...], channels: int) -> np.ndarray:
    """Filters over ``channels`` normalised colours -> ``[w, -w] / 2`` over ``[x, 1-x]``.

    Works for HWIO conv kernels and for patch-embedding [p·p·C, out] kernels, whose input
    axis is ordered (position, channel) as the reference's ``(p1 p2 c)``.
    """
    out = w.shape[-1]
    per_channel = w.reshape(-1, channels, out)
    return (np.concatenate([per_channel, -per_channel], axis=1) / 2.0).reshape(target_shape)


def _module_kind(src: Mapping[Path, Any], module: Path) -> str:
    leaves = {p[-1] for p in src if p[1:-1] == module}
    colls = {p[0] for p in src if p[1:-1] == module}
    if "kernel" in leaves:
        return "linear"
    if "batch_stats" in colls and "mean" in leaves:
        return "batchnorm"
    if "scale" in leaves or "bias" in leaves:
        return "norm"
    return "unknown"


def bcosify_variables(
    source: Mapping[str, Any],
    source_abstract: Mapping[Path, Any],
    target_abstract: Mapping[Path, Any],
    rename,
    *,
    overrides: Mapping[str, Any] = None,
    channels: int = 3,
    bn_eps: float = 1e-5,
    where: str = "",
) -> Dict[str, Any]:
    """Move standard-model variables onto the B-cosified model's variable tree.

    Args:
      source: ``{'params': ..., 'batch_stats': ...}`` of the standard model.
      source_abstract, target_abstract: flattened ``{(collection, *path): ShapeDtypeStruct}``
        of the standard and the B-cosified model (the latter rooted at ``model``).
      rename: ``rename(module_path, overrides)``: standard module path -> B-cosified module
        path (without ``model``); ``overrides``: the models.create overrides of both models.
      channels: colour channels of the standard model's input (3).
      bn_eps: epsilon of the standard BatchNorms (torch's 1e-5), for the mean-absorbing bias.
      where: the model name, for error messages.
    Returns the B-cosified variables (numpy float32 leaves become jnp arrays).
    Raises ValueError naming the module path for a structure mismatch or a layer kind the
    transformation does not know.
    """
    overrides = dict(overrides or {})
    src = {k: np.asarray(v) for k, v in _flatten(flax.core.unfreeze(source)).items()}
    missing = sorted("/".join(k) for k in source_abstract if k not in src)
    unexpected = sorted("/".join(k) for k in src if k not in source_abstract)
    misshaped = sorted(
        f"{'/'.join(k)} {src[k].shape} vs {source_abstract[k].shape}"
        for k in src
        if k in source_abstract and tuple(src[k].shape) != tuple(source_abstract[k].shape)
    )
    if missing or unexpected or misshaped:
        lines = [f"variables do not match {where!r}:"]
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("mis-shaped", misshaped),
        ):
            if items:
                lines.append(f"  {label} ({len(items)}): " + ", ".join(items[:20]))
        raise ValueError("\n".join(lines))

    out: Dict[Path, np.ndarray] = {}
    for (coll, *path), arr in sorted(src.items()):
        module, leaf = tuple(path[:-1]), path[-1]
        tmod = ("model",) + tuple(rename(module, overrides))
        kind = _module_kind(src, module)
        mod_name = "/".join(module)
        tkey = (coll,) + tmod + (leaf,)
        if kind == "unknown":
            raise ValueError(
                f"{where}: module {mod_name!r} ({coll}/{leaf}) is a layer the B-cosification "
                "does not "
                "know (it converts convs, linear layers, BatchNorm and LayerNorm/GroupNorm)"
            )
        if kind == "linear" and leaf == "kernel":
            shape = (
                tuple(target_abstract[("params",) + tmod + ("kernel",)].shape)
                if ("params",) + tmod + ("kernel",) in target_abstract
                else None
            )
            if shape is None:
                raise ValueError(
                    f"{where}: linear layer {mod_name!r} has no B-cosified counterpart at "
                    f"{'/'.join(tmod)}"
                )
            if arr.ndim == 2 and len(shape) == 4:
                arr = arr.reshape(shape)  # dense classifier -> 1x1 conv before the pooling
            first = (
                arr.ndim == len(shape)
                and arr.shape[-1] == shape[-1]
                and arr.size * 2 == int(np.prod(shape))
            )
            if first:  # the layer that sees the image: its input channels double
                arr = _encode_first_layer(arr, shape, channels)
            if tuple(arr.shape) != shape:
                raise ValueError(
                    f"{where}: {mod_name}/kernel {arr.shape} does not fit {'/'.join(tmod)} {shape}"
                )
            out[("params",) + tmod + ("kernel",)] = arr
        elif leaf == "bias":
            if tkey not in target_abstract:
                continue  # B-cosified layers have no biases (use_bias=False)
            if kind == "batchnorm" and (("batch_stats",) + tmod + ("mean",)) not in target_abstract:
                # uncentred BN: β - μ·γ / sqrt(var + eps) keeps the eval-mode output
                mean = src[("batch_stats",) + module + ("mean",)]
                var = src[("batch_stats",) + module + ("var",)]
                scale = src.get(("params",) + module + ("scale",), np.ones_like(var))
                arr = arr - mean * scale / np.sqrt(var + bn_eps)
            out[tkey] = arr
        elif leaf == "mean" and coll == "batch_stats":
            if tkey in target_abstract:
                out[tkey] = arr
        elif leaf in ("scale", "var"):
            if tkey not in target_abstract:
                raise ValueError(
                    f"{where}: {coll}/{mod_name}/{leaf} has no B-cosified counterpart "
                    f"at {'/'.join(tkey)}"
                )
            out[tkey] = arr
        else:
            raise ValueError(
                f"{where}: {coll}/{mod_name}/{leaf}: a {kind} parameter {leaf!r} the "
                "B-cosification does not know"
            )

    for k, t in target_abstract.items():
        # use_bias=True gives every conv a bias; those of layers that had none start at 0.
        if k not in out and k[-1] == "bias" and k[:-1] + ("kernel",) in out:
            out[k] = np.zeros(t.shape, np.float32)
    unfilled = sorted("/".join(k) for k in target_abstract if k not in out)
    if unfilled:
        raise ValueError(
            f"{where}: B-cosified variables left unset ({len(unfilled)}): "
            + ", ".join(unfilled[:20])
        )
    flat = {}
    for k, v in out.items():
        t = target_abstract[k]
        if tuple(v.shape) != tuple(t.shape):
            raise ValueError(
                f"{where}: {'/'.join(k)} has shape {v.shape}, "
                f"the B-cosified model expects {t.shape}"
            )
        flat[k] = jnp.asarray(v, t.dtype)
    return _unflatten(flat)


def bcosified_name(name: str) -> str:
    """The zoo name of the B-cosified twin of standard model ``name`` (``standard_resnet50`` ->
    ``bcosified_resnet50``); a ValueError naming the supported models otherwise."""
    return _twin(name)[0]


def bcosify(name: str, variables: Mapping[str, Any], **options: Any):
    """B-cosify the standard zoo model ``name`` with ``variables``: returns ``(model, variables)``.

    Args:
      name: a standard zoo model with a B-cosified twin (``standard_resnet50``,
        ``standard_densenet121``, ``standard_simple_vit_s_patch16_224``, ``standard_small_cnn``,
        ...; ``bcos_jax.models.bcosified.TWINS``).
      variables: its ``{'params': ..., 'batch_stats': ...}`` (e.g. torchvision weights through
        ``convert.from_torch(name, state_dict)``).
      **options: B-cosification options (``BCOSIFY_OPTIONS``): ``b`` (2), ``use_bias`` (False;
        True needs b=1), ``stem_pool`` ('avg'; CNNs), ``pool_after_head`` (True; ViTs),
        ``input_norm`` ('linear'; 'affine' is the reference's offset-leaving layer),
        ``logit_bias`` (the reference's; None: no logit layer); any other keyword
        (``num_classes``, ``depth``, ``widths``...) builds both models.
    Returns:
      ``model``: the Flax module of zoo entry ``bcosified_<arch>`` (with these options), taking
      ``[x, 1-x]`` images [N, H, W, 6]; ``variables``: its variables.
    """
    from bcos_jax import models, norms

    target, rename = _twin(name)
    opts = {k: v for k, v in options.items() if k in BCOSIFY_OPTIONS}
    arch = {k: v for k, v in options.items() if k not in BCOSIFY_OPTIONS}
    try:
        src_model = models.create(name, **arch)
        dst_model = models.create(target, **opts, **arch)
    except TypeError as e:
        raise ValueError(f"bcosify({name!r}): unsupported option ({e})") from e
    s_spec, t_spec = models.get_spec(name), models.get_spec(target)
    size = s_spec.input_size
    src_abs = _abstract(src_model, s_spec.in_channels, size)
    dst_abs = _abstract(dst_model, t_spec.in_channels, size)
    new = bcosify_variables(
        variables,
        src_abs,
        dst_abs,
        rename,
        overrides=arch,
        channels=s_spec.in_channels,
        bn_eps=norms.BatchNorm.epsilon,
        where=name,
    )
    return dst_model, new
