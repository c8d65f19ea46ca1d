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

Methods are registered once, in ``registry.REGISTERED`` (see ``registry`` for how to add
one): ``METHODS`` maps a name to its ``Method`` (function, reference settings, reference
name, needs, default, compile), ``REFERENCE_NAMES`` maps the reference's names ('Ours',
'IxG', 'GCam', 'Occ5', ...) to ours, ``DEFAULT_METHODS`` are those ``bcos-jax evaluate``
runs by default.
"""
from bcos_jax.attribution.grad_cam import gradcam
from bcos_jax.attribution.gradients import (
    bcos,
    gradient,
    input_x_gradient,
    integrated_gradients,
    smoothgrad,
)
from bcos_jax.attribution.lime_image import lime, quickshift_segments
from bcos_jax.attribution.model_fns import ModelFns, from_model, from_zoo
from bcos_jax.attribution.occlusion_windows import occlusion
from bcos_jax.attribution.registry import (
    DEFAULT_METHODS,
    METHODS,
    REFERENCE_NAMES,
    Method,
    attribute,
    get_method,
    make_attributor,
)
from bcos_jax.attribution.relu_rules import deeplift, guided_backprop, with_relu_rule
from bcos_jax.attribution.rise_masks import rise

__all__ = [
    "DEFAULT_METHODS",
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
