"""The registry of attribution methods: every method is declared once, in ``REGISTERED``.

A ``Method`` carries everything the rest of the package needs to know about a method: its
function, the reference's settings, the reference's name, what it needs from the model,
whether the evaluation runs it by default, and how to compile it. Nothing outside this file
lists method names: ``METHODS``, ``REFERENCE_NAMES``, ``DEFAULT_METHODS`` (the ``bcos-jax
evaluate`` default) and the command-line choices are all derived from ``REGISTERED``.

Adding a method (see docs/extending.md):

1. write ``fn(fns, x, targets=None, **settings) -> [N, H, W, C']`` in its own module under
   ``bcos_jax/attribution/`` (conventions in ``_common``), pure and jittable with ``fns`` and
   the settings static;
2. add one ``Method(...)`` to ``REGISTERED`` below (and its import). A method that cannot be
   one ``jax.jit`` (host-side work, like LIME's superpixels) gives ``compile``, a function
   ``compile(fns, **settings) -> f(x, targets=None)`` that builds its runner.
"""
from __future__ import annotations

import dataclasses
import functools
from types import MappingProxyType
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import jax

from bcos_jax.attribution.grad_cam import gradcam
from bcos_jax.attribution.gradients import (
    bcos,
    gradient,
    input_x_gradient,
    integrated_gradients,
    smoothgrad,
)
from bcos_jax.attribution.lime_image import lime, lime_attributor
from bcos_jax.attribution.model_fns import ModelFns, as_model_fns
from bcos_jax.attribution.occlusion_windows import occlusion
from bcos_jax.attribution.relu_rules import deeplift, guided_backprop
from bcos_jax.attribution.rise_masks import rise

Array = jax.Array

__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "Method",
    "REFERENCE_NAMES",
    "REGISTERED",
    "attribute",
    "get_method",
    "make_attributor",
]

_NEEDS = ("", "explain", "tap")


@dataclasses.dataclass(frozen=True)
class Method:
    """A registered attribution method.

    Attributes:
      name: registry key (ours).
      fn: ``fn(fns, x, targets, **settings)`` -> [N, H, W, C'] (or [K, N, H, W, C']).
      label: name for plots and reports.
      reference_name: the method's name in the reference's evaluation code ('Ours', 'IxG',
        'GCam', ...), or None if it has none; ``get_method`` accepts either name.
      settings: the reference's settings (overridable per call).
      per_pixel: True if the result has one channel (a map), False if C_in channels.
      needs: what ``fns`` must provide: 'explain' (``ModelFns.explain``, a B-cos model),
        'tap' (``ModelFns.tap``, a feature tap) or '' (just logits).
      default: evaluated by ``bcos-jax evaluate`` unless ``--methods`` says otherwise.
      compile: None (the method is one ``jax.jit`` of ``fn``), or
        ``compile(fns, **settings) -> f(x, targets=None)`` for a method with host-side work.
    """

    name: str
    fn: Callable[..., Array]
    label: str
    reference_name: Optional[str] = None
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    per_pixel: bool = False
    needs: str = ""
    default: bool = False
    compile: Optional[Callable[..., Callable[..., Array]]] = None

    def __post_init__(self):
        if self.needs not in _NEEDS:
            raise ValueError(
                f"method {self.name!r}: needs must be one of {_NEEDS}, got {self.needs!r}"
            )
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))

    @property
    def jittable(self) -> bool:
        """True if ``make_attributor`` compiles the whole method as one ``jax.jit``."""
        return self.compile is None

    def check(self, fns: ModelFns) -> None:
        """Raise a ValueError if ``fns`` lacks what this method needs."""
        if self.needs == "explain" and fns.explain is None:
            raise ValueError(
                f"method {self.name!r} needs a B-cos model (W(x) via bcos_jax.explain); "
                f"{fns.name!r} is not one"
            )
        if self.needs == "tap" and fns.tap is None:
            raise ValueError(
                f"method {self.name!r} needs a feature tap; build the ModelFns with from_model"
            )


def _settings(**kw: Any) -> Mapping[str, Any]:
    return kw


# The one list of methods. Names and settings are the reference's: the method names of its
# localisation analysis and the settings of its post-hoc explainer configs
# (B-cos/B-cos-v2: interpretability/explanation_methods/explanation_configs.py, the same in
# moboehle/B-cos).
REGISTERED: Tuple[Method, ...] = (
    Method("bcos", bcos, "B-cos", "Ours", needs="explain", default=True),
    Method("gradient", gradient, "Grad", "Grad", default=True),
    Method("input_x_gradient", input_x_gradient, "IxG", "IxG", default=True),
    Method("integrated_gradients", integrated_gradients, "IntGrad", "IntGrad",
           _settings(n_steps=50, scheme="gausslegendre"), default=True),
    Method("smoothgrad", smoothgrad, "SmoothGrad", None,
           _settings(n_samples=25, stdev_spread=0.15, seed=0)),
    Method("gradcam", gradcam, "GradCAM", "GCam", per_pixel=True, needs="tap", default=True),
    Method("guided_backprop", guided_backprop, "GB", "GB", default=True),
    Method("deeplift", deeplift, "DeepLIFT", "DeepLIFT", default=True),
    Method("occlusion", occlusion, "Occlusion", "Occlusion", _settings(ks=32, stride=32),
           per_pixel=True, default=True),
    Method("occlusion5", occlusion, "Occ5", "Occ5", _settings(ks=5, stride=2), per_pixel=True),
    Method("occlusion9", occlusion, "Occ9", "Occ9", _settings(ks=9, stride=2), per_pixel=True),
    Method("occlusion9_ti", occlusion, "Occ9-TI", "Occ9-TI", _settings(ks=9, stride=4),
           per_pixel=True),
    Method("occlusion13_ti", occlusion, "Occ13-TI", "Occ13-TI", _settings(ks=13, stride=4),
           per_pixel=True),
    Method("rise", rise, "RISE", "RISE", _settings(n_masks=500, s=8, p1=0.1, seed=42),
           per_pixel=True, default=True),
    Method("lime", lime, "LIME", "LIME",
           _settings(num_samples=500, num_features=5, kernel_size=4, max_dist=200, ratio=0.2,
                     seed=0),
           per_pixel=True, default=True, compile=lime_attributor),
)


def _index(methods: Tuple[Method, ...]) -> Tuple[Dict[str, Method], Dict[str, str]]:
    by_name: Dict[str, Method] = {}
    by_reference: Dict[str, str] = {}
    for m in methods:
        if m.name in by_name:
            raise ValueError(f"attribution method {m.name!r} registered twice")
        by_name[m.name] = m
        if m.reference_name is not None:
            if m.reference_name in by_reference:
                raise ValueError(f"reference name {m.reference_name!r} registered twice")
            by_reference[m.reference_name] = m.name
    return by_name, by_reference


_BY_NAME, _BY_REFERENCE = _index(REGISTERED)
METHODS: Mapping[str, Method] = MappingProxyType(_BY_NAME)
REFERENCE_NAMES: Mapping[str, str] = MappingProxyType(_BY_REFERENCE)
DEFAULT_METHODS: Tuple[str, ...] = tuple(m.name for m in REGISTERED if m.default)


def get_method(name: Union[str, Method]) -> Method:
    """The ``Method`` called ``name`` (ours or the reference's); unknown names list the choices.

    A ``Method`` object is returned as is, so ``attribute``/``make_attributor`` also run a
    method that is not (yet) registered.
    """
    if isinstance(name, Method):
        return name
    key = REFERENCE_NAMES.get(name, name)
    if key not in METHODS:
        raise ValueError(
            f"unknown attribution method {name!r}; choose from {sorted(METHODS)} "
            f"(or the reference names {sorted(REFERENCE_NAMES)})"
        )
    return METHODS[key]


def attribute(
    name: Union[str, Method],
    model: Any,
    x: Array,
    targets: Optional[Array] = None,
    **overrides: Any,
) -> Array:
    """Run method ``name`` with the reference settings updated by ``overrides`` (not jitted)."""
    method = get_method(name)
    fns = as_model_fns(model, method.name)
    method.check(fns)
    return method.fn(fns, x, targets, **{**method.settings, **overrides})


def make_attributor(
    name: Union[str, Method], model: Any, **overrides: Any
) -> Callable[[Any, Optional[Any]], Array]:
    """A compiled ``f(x, targets=None) -> attributions`` for method ``name`` on ``model``.

    One ``jax.jit`` of the method, or what its ``Method.compile`` builds (LIME: superpixels
    on the host, then a jitted core compiled once per superpixel bucket).
    """
    method = get_method(name)
    fns = as_model_fns(model, method.name)
    method.check(fns)
    settings = {**method.settings, **overrides}
    if method.compile is not None:
        return method.compile(fns, **settings)
    return jax.jit(functools.partial(method.fn, fns, **settings))
