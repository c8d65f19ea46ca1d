"""The functions an attribution method needs from a model, bundled as ``ModelFns``.

Every method takes ``fns`` (a ``ModelFns``, or a bare ``x -> logits`` function for the
methods that need nothing else) plus the input batch and the targets. ``from_model`` builds
the bundle for any Flax module that follows the zoo contract
(``model.apply(variables, x, train=False, explain=False)``):

* ``logits(x)``: the ordinary forward pass [N, H, W, C_in] -> [N, C].
* ``explain(x, targets)``: ``bcos_jax.explain`` of the model (B-cos only): W(x) of the
  targets, their contributions and the logits, from the one explanation path every W(x) in
  the package goes through (the 'bcos' method is ``x · W(x)``).
* ``tap(x, delta)``: the forward pass with a *feature tap*: returns ``(logits, features)``
  where ``features`` [N, h, w, D] is the last feature map before the classifier and
  ``delta`` (same shape, or None) is added to it, so ``jax.vjp`` in ``delta`` at 0 gives
  d logits / d features (Grad-CAM).
* ``probabilities(logits)``: sigmoid for B-cos models (trained with BCE; the reference's
  ``to_probabilities``), softmax for standard ones; used by RISE, LIME and the faithfulness
  curves.
* ``encode``/``decode``: RGB in [0, 1] <-> model input (``[x, 1-x]`` or mean/std
  normalisation); LIME segments ``decode(x)`` and the reports draw it.

Which feature map the tap uses
------------------------------
``feature_layer='path/to/module'`` taps that submodule's output (``'path:input'`` its
input). Without it the site is found from the model's call structure, once per input shape,
by tracing (no computation):

1. the *classifier* is the last direct child module (a top-level submodule) with
   parameters that the forward pass calls;
2. if its input is a feature map ([N, h, w, D], or tokens [N, T, D] with T a square), that
   input is tapped: the B-cos convention, where the classifier is a 1×1 conv before global
   pooling and its input is the reference's ``get_feature_extractor()`` output;
3. otherwise (a pooled-then-dense head, as in torchvision models) the output of the last
   direct child called before the classifier that returns a feature map is tapped.

What this resolves to for the zoo (checked for one model of every family and variant):

=================  =============================  ==============================
family             B-cos (v1, v2)                 standard
=================  =============================  ==============================
ResNet             ``fc`` input                   ``layer4`` output
DenseNet, VGG      ``classifier`` input           ``features`` output (pre-ReLU)
ConvNeXt           ``features`` output            ``features`` output
Inception v3       ``fc`` input                   ``Mixed_7c`` output
ViT (SimpleViT)    ``transformer`` output tokens  ``transformer`` output tokens
CIFAR 9L (v1)      classifier ``8`` input         -
small CNN          ``classifier`` input           -
=================  =============================  ==============================

For the B-cos CNNs this is the reference's ``get_feature_extractor()`` output. Token
sequences [N, T, D] are reshaped to a √T × √T map (ViTs without a class token).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, List, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bcos_jax.constants import IMAGENET_MEAN, IMAGENET_STD
from bcos_jax.explain import Explanation, logits_of
from bcos_jax.explain import explain as _explain

Array = jax.Array

__all__ = [
    "ModelFns",
    "FeatureSite",
    "as_model_fns",
    "from_model",
    "from_zoo",
    "imagenet_normalize",
]


def _identity(x):
    return x


def imagenet_normalize() -> Tuple[Callable[[Array], Array], Callable[[Array], Array]]:
    """(encode, decode) for the standard models: ImageNet mean/std normalisation of RGB."""
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
    std = jnp.asarray(IMAGENET_STD, jnp.float32)
    return (lambda rgb: (rgb - mean) / std), (lambda x: x * std + mean)


def _bcos_encoding() -> Tuple[Callable[[Array], Array], Callable[[Array], Array]]:
    from bcos_jax.layers import add_inverse

    return add_inverse, (lambda x: x[..., :3])


@dataclasses.dataclass(frozen=True, eq=False)
class ModelFns:
    """What attribution methods may call. Hashable by identity, so it can be a static jit arg.

    Attributes:
      logits: x [N, H, W, C_in] -> logits [N, C].
      explain: (x [N, H, W, C_in], targets None | [N] | [N, K]) -> ``bcos_jax.Explanation``
        (``bcos_jax.explain`` of a B-cos model), or None for models without W(x).
      tap: (x, delta or None) -> (logits, features [N, h, w, D]), or None (no Grad-CAM).
      probabilities: logits [..., C] -> probabilities [..., C].
      encode: RGB [..., 3] in [0, 1] -> model input [..., C_in].
      decode: model input -> RGB in [0, 1] (for superpixels and pictures).
      name: for messages and reports.
    """

    logits: Callable[[Array], Array]
    explain: Optional[Callable[[Array, Optional[Array]], Explanation]] = None
    tap: Optional[Callable[[Array, Optional[Array]], Tuple[Array, Array]]] = None
    probabilities: Callable[[Array], Array] = jax.nn.softmax
    encode: Callable[[Array], Array] = _identity
    decode: Callable[[Array], Array] = _identity
    name: str = "model"


def as_model_fns(model: Any, method: str) -> ModelFns:
    """A ``ModelFns`` from either a ``ModelFns`` or a bare ``x -> logits`` callable."""
    if isinstance(model, ModelFns):
        return model
    if callable(model):
        return ModelFns(logits=model)
    raise TypeError(
        f"{method}: expected a ModelFns or a function x -> logits, got {type(model).__name__}"
    )


@dataclasses.dataclass(frozen=True)
class FeatureSite:
    """Where the feature tap sits: module path, method, which call, and input or output."""

    path: Tuple[str, ...]
    method: str = "__call__"
    occurrence: int = 0
    where: str = "output"  # 'input' (first positional argument) or 'output'


def _is_map(shape: Tuple[int, ...]) -> bool:
    if len(shape) == 4:
        return True
    return len(shape) == 3 and math.isqrt(shape[1]) ** 2 == shape[1]


def _as_map(a: Array) -> Array:
    # Tokens [N, T, D] -> [N, √T, √T, D] (row-major patches, as every ViT patchifies).
    if a.ndim == 4:
        return a
    side = math.isqrt(a.shape[1])
    return a.reshape(a.shape[0], side, side, a.shape[2])


def _parse_layer(layer: str) -> FeatureSite:
    where = "output"
    if ":" in layer:
        layer, where = layer.rsplit(":", 1)
        if where not in ("input", "output"):
            raise ValueError(f"feature_layer suffix must be ':input' or ':output', got {where!r}")
    path = tuple(p for p in layer.split("/") if p)
    if not path:
        raise ValueError(f"feature_layer must name a submodule path like 'layer4', got {layer!r}")
    return FeatureSite(path=path, where=where)


def _record_calls(apply: Callable[[Array], Any], x_struct: jax.ShapeDtypeStruct) -> List[dict]:
    """Trace ``apply`` once (abstractly) and list every module-method call in call order."""
    calls: List[dict] = []

    def interceptor(next_fun, args, kwargs, context):
        entry = {
            "path": tuple(context.module.path),
            "method": context.method_name,
            "input": getattr(args[0], "shape", None) if args else None,
            "has_params": bool(context.module.variables.get("params"))
            if context.module.scope
            else False,
        }
        calls.append(entry)
        out = next_fun(*args, **kwargs)
        entry["output"] = getattr(out, "shape", None)
        entry["end"] = len(calls)
        return out

    def run(inp):
        with nn.intercept_methods(interceptor):
            return apply(inp)

    jax.eval_shape(run, x_struct)
    return calls


def _occurrence(calls: List[dict], i: int) -> int:
    c = calls[i]
    return sum(1 for d in calls[:i] if d["path"] == c["path"] and d["method"] == c["method"])


def find_feature_site(
    apply: Callable[[Array], Any], x_struct: jax.ShapeDtypeStruct, name: str
) -> FeatureSite:
    """The automatic rule (module docstring) for the feature map before the classifier."""
    calls = _record_calls(apply, x_struct)
    children = [i for i, c in enumerate(calls) if len(c["path"]) == 1 and c["method"] == "__call__"]
    with_params = [i for i in children if calls[i]["has_params"]]
    if not with_params:
        raise ValueError(
            f"{name}: found no top-level submodule with parameters to use as the classifier"
        )
    k = with_params[-1]
    clf = calls[k]
    if clf["input"] is not None and _is_map(clf["input"]):
        return FeatureSite(path=clf["path"], occurrence=_occurrence(calls, k), where="input")
    before = [
        i
        for i in children
        if i < k and calls[i].get("end", 0) <= k and calls[i]["output"] is not None
    ]
    maps = [i for i in before if _is_map(calls[i]["output"])]
    if not maps:
        raise ValueError(
            f"{name}: the classifier {'/'.join(clf['path'])!r} gets input of shape {clf['input']} "
            "and no earlier top-level submodule returns a feature map [N, h, w, D]; pass "
            "feature_layer='path/to/module' explicitly"
        )
    i = maps[-1]
    return FeatureSite(path=calls[i]["path"], occurrence=_occurrence(calls, i), where="output")


def tapped_apply(
    apply: Callable[[Array], Any], site: FeatureSite, x: Array, delta: Optional[Array], name: str
) -> Tuple[Array, Array]:
    """``apply(x)`` with ``delta`` added at the feature site -> (logits, features [N, h, w, D])."""
    seen = [0]
    captured: List[Array] = []

    def interceptor(next_fun, args, kwargs, context):
        if tuple(context.module.path) != site.path or context.method_name != site.method:
            return next_fun(*args, **kwargs)
        k = seen[0]
        seen[0] += 1
        if k != site.occurrence:
            return next_fun(*args, **kwargs)
        if site.where == "input":
            if not args or not hasattr(args[0], "shape"):
                raise ValueError(
                    f"{name}: {'/'.join(site.path)!r} is not called with an array as first argument"
                )
            feat = args[0]
            captured.append(feat)
            if delta is not None:
                args = (feat + delta.reshape(feat.shape).astype(feat.dtype),) + tuple(args[1:])
            return next_fun(*args, **kwargs)
        out = next_fun(*args, **kwargs)
        if not hasattr(out, "shape"):
            raise ValueError(
                f"{name}: feature layer {'/'.join(site.path)!r} does not return an array"
            )
        captured.append(out)
        return out if delta is None else out + delta.reshape(out.shape).astype(out.dtype)

    with nn.intercept_methods(interceptor):
        logits = logits_of(apply(x))
    if not captured:
        raise ValueError(
            f"{name}: feature layer {'/'.join(site.path)!r} ({site.method}, call "
            f"#{site.occurrence}) "
            "was not called by the forward pass"
        )
    feat = captured[0]
    if not _is_map(feat.shape):
        raise ValueError(
            f"{name}: feature layer {'/'.join(site.path)!r} gives shape {feat.shape}; Grad-CAM "
            "needs a "
            "feature map [N, h, w, D] (or square tokens [N, T, D])"
        )
    return logits, _as_map(feat)


def from_model(
    model: nn.Module,
    variables: Any,
    *,
    bcos: bool,
    feature_layer: Optional[str] = None,
    probabilities: Optional[Callable[[Array], Array]] = None,
    encode: Optional[Callable[[Array], Array]] = None,
    decode: Optional[Callable[[Array], Array]] = None,
    name: str = "model",
    **apply_kwargs: Any,
) -> ModelFns:
    """``ModelFns`` for a Flax module following the zoo contract.

    Args:
      model, variables: the module and its variables.
      bcos: True for B-cos models (explanation mode exists, sigmoid probabilities, ``[x, 1-x]``
        encoding by default), False for standard ones (softmax, ImageNet normalisation).
      feature_layer: Grad-CAM feature site (module docstring); None = automatic.
      probabilities, encode, decode: override the defaults above.
      name: for messages.
      **apply_kwargs: extra arguments for ``model.apply``.
    """

    def plain(x):
        return model.apply(variables, x, train=False, explain=False, **apply_kwargs)

    def logits(x):
        return logits_of(plain(x))

    def explain_targets(x, targets=None):
        return _explain(model, variables, x, targets, **apply_kwargs)

    if feature_layer is not None:
        fixed = _parse_layer(feature_layer)
        site_for = lambda shape, dtype: fixed
    else:

        @functools.lru_cache(maxsize=16)
        def site_for(shape, dtype):
            return find_feature_site(plain, jax.ShapeDtypeStruct(shape, dtype), name)

    def tap(x, delta=None):
        return tapped_apply(plain, site_for(tuple(x.shape), jnp.dtype(x.dtype)), x, delta, name)

    default_enc, default_dec = _bcos_encoding() if bcos else imagenet_normalize()
    return ModelFns(
        logits=logits,
        explain=explain_targets if bcos else None,
        tap=tap,
        probabilities=probabilities or (jax.nn.sigmoid if bcos else jax.nn.softmax),
        encode=encode or default_enc,
        decode=decode or default_dec,
        name=name,
    )


def from_zoo(
    name: str, variables: Any, model: Optional[nn.Module] = None, **kwargs: Any
) -> ModelFns:
    """``from_model`` for the zoo model ``name`` (B-cos or not from its ``ModelSpec``)."""
    from bcos_jax.models import create, get_spec

    spec = get_spec(name)
    model = model if model is not None else create(name)
    return from_model(model, variables, bcos=spec.version != "standard", name=name, **kwargs)
