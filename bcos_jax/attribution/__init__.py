"""Attribution methods for any model of the zoo (B-cos and standard), with one signature.

    method(fns, x, targets=None, **settings) -> attributions

* ``fns``: a ``ModelFns`` (``from_model(model, variables, bcos=...)`` / ``from_zoo(name,
  variables)``), or a bare ``x -> logits`` function for methods that need nothing else.
* ``x``: the model input [N, H, W, C_in]; ``targets``: None (argmax) | [N] | [N, K].
* result: [N, H, W, C'] (or [K, N, H, W, C'] for [N, K] targets) with C' = C_in for
  gradient methods and 1 for map methods (Grad-CAM, Occlusion, RISE, LIME); metrics sum
  over the last axis.

Every method is pure and jittable with ``fns`` and the settings static
(``make_attributor`` does that), except that LIME computes its superpixels on the host
(give ``segments`` to jit it). Seeded methods are deterministic, and an image's result does
not depend on the other images in its batch.

``METHODS`` maps a name to a ``Method`` holding the function and the reference settings
(docs/evaluation.md §3); ``REFERENCE_NAMES`` maps the reference's names ('Ours', 'IxG',
'GCam', 'Occ5', ...) to ours.
"""
from __future__ import annotations

import dataclasses
import functools
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional

import jax
import numpy as np

from bcos_jax.attribution.grad_cam import gradcam
from bcos_jax.attribution.gradients import bcos, gradient, input_x_gradient, integrated_gradients, smoothgrad
from bcos_jax.attribution.lime_image import lime, lime_from_segments, quickshift_segments, segment_bucket
from bcos_jax.attribution.model_fns import ModelFns, as_model_fns, from_model, from_zoo
from bcos_jax.attribution.occlusion_windows import occlusion
from bcos_jax.attribution.relu_rules import deeplift, guided_backprop, with_relu_rule
from bcos_jax.attribution.rise_masks import rise

Array = jax.Array

__all__ = [
    "METHODS",
    "Method",
    "ModelFns",
    "REFERENCE_NAMES",
    "attribute",
    "bcos",
    "deeplift",
    "from_model",
    "from_zoo",
    "get_method",
    "gradcam",
    "gradient",
    "guided_backprop",
    "input_x_gradient",
    "integrated_gradients",
    "lime",
    "make_attributor",
    "occlusion",
    "quickshift_segments",
    "rise",
    "smoothgrad",
    "with_relu_rule",
]


@dataclasses.dataclass(frozen=True)
class Method:
    """A registered attribution method.

    Attributes:
      name: registry key.
      fn: ``fn(fns, x, targets, **settings)``.
      settings: the reference's settings (overridable per call).
      per_pixel: True if the result has one channel (a map), False if C_in channels.
      needs: 'explain' (a B-cos ModelFns), 'tap' (a feature tap) or '' (just logits).
      label: name for plots.
    """

    name: str
    fn: Callable[..., Array]
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    per_pixel: bool = False
    needs: str = ""
    label: str = ""


def _m(name, fn, label, per_pixel=False, needs="", **settings) -> Method:
    return Method(name, fn, MappingProxyType(dict(settings)), per_pixel, needs, label)


METHODS: Mapping[str, Method] = MappingProxyType(
    {
        m.name: m
        for m in [
            _m("bcos", bcos, "B-cos", needs="explain"),
            _m("gradient", gradient, "Grad"),
            _m("input_x_gradient", input_x_gradient, "IxG"),
            _m("integrated_gradients", integrated_gradients, "IntGrad", n_steps=50, scheme="gausslegendre"),
            _m("smoothgrad", smoothgrad, "SmoothGrad", n_samples=25, stdev_spread=0.15, seed=0),
            _m("gradcam", gradcam, "GradCAM", per_pixel=True, needs="tap"),
            _m("guided_backprop", guided_backprop, "GB"),
            _m("deeplift", deeplift, "DeepLIFT"),
            _m("occlusion", occlusion, "Occlusion", per_pixel=True, ks=32, stride=32),
            _m("occlusion5", occlusion, "Occ5", per_pixel=True, ks=5, stride=2),
            _m("occlusion9", occlusion, "Occ9", per_pixel=True, ks=9, stride=2),
            _m("occlusion9_ti", occlusion, "Occ9-TI", per_pixel=True, ks=9, stride=4),
            _m("occlusion13_ti", occlusion, "Occ13-TI", per_pixel=True, ks=13, stride=4),
            _m("rise", rise, "RISE", per_pixel=True, n_masks=500, s=8, p1=0.1, seed=42),
            _m("lime", lime, "LIME", per_pixel=True, num_samples=500, num_features=5, kernel_size=4,
               max_dist=200, ratio=0.2, seed=0),
        ]
    }
)

REFERENCE_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "Ours": "bcos",
        "Grad": "gradient",
        "IxG": "input_x_gradient",
        "IntGrad": "integrated_gradients",
        "GCam": "gradcam",
        "GB": "guided_backprop",
        "DeepLIFT": "deeplift",
        "Occlusion": "occlusion",
        "Occ5": "occlusion5",
        "Occ9": "occlusion9",
        "Occ9-TI": "occlusion9_ti",
        "Occ13-TI": "occlusion13_ti",
        "RISE": "rise",
        "LIME": "lime",
    }
)


def get_method(name: str) -> Method:
    """The ``Method`` called ``name`` (ours or the reference's); unknown names list the choices."""
    key = REFERENCE_NAMES.get(name, name)
    if key not in METHODS:
        raise ValueError(
            f"unknown attribution method {name!r}; choose from {sorted(METHODS)} "
            f"(or the reference names {sorted(REFERENCE_NAMES)})"
        )
    return METHODS[key]


def _check_needs(method: Method, fns: ModelFns) -> None:
    if method.needs == "explain" and fns.explain_logits is None:
        raise ValueError(f"method {method.name!r} needs a B-cos model (explanation mode); {fns.name!r} is not one")
    if method.needs == "tap" and fns.tap is None:
        raise ValueError(f"method {method.name!r} needs a feature tap; build the ModelFns with from_model")


def attribute(name: str, model: Any, x: Array, targets: Optional[Array] = None, **overrides: Any) -> Array:
    """Run method ``name`` with the reference settings updated by ``overrides`` (not jitted)."""
    method = get_method(name)
    fns = as_model_fns(model, name)
    _check_needs(method, fns)
    return method.fn(fns, x, targets, **{**method.settings, **overrides})


def make_attributor(name: str, model: Any, **overrides: Any) -> Callable[[Any, Optional[Any]], Array]:
    """A compiled ``f(x, targets) -> attributions`` for method ``name`` on ``model``.

    Gradient and perturbation methods are one ``jax.jit``; LIME computes superpixels on the
    host (from ``fns.decode(x)``) and then calls its jitted core, compiled once per
    superpixel bucket.
    """
    method = get_method(name)
    fns = as_model_fns(model, name)
    _check_needs(method, fns)
    settings = {**method.settings, **overrides}
    if method.fn is lime:
        seg_keys = ("kernel_size", "max_dist", "ratio")
        seg_settings = {k: settings.pop(k) for k in seg_keys if k in settings}
        core = jax.jit(
            functools.partial(lime_from_segments, fns, **settings), static_argnames=("max_segments",)
        )

        def run_lime(x, targets=None):
            segments = quickshift_segments(np.asarray(fns.decode(jax.numpy.asarray(x))), **seg_settings)
            return core(x, targets, segments, max_segments=segment_bucket(segments))

        return run_lime
    return jax.jit(functools.partial(method.fn, fns, **settings))
