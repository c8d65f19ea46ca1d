"""The model zoo: ``create(name, **overrides)``, ``list_models()``, ``get_spec(name)``.

v2 names equal the ``bcos`` package's entry points (``resnet50``, ``densenet121``,
``simple_vit_s_patch16_224``, ``cifar10_resnet20``, ...); v1 (CVPR 2022) models are
prefixed ``v1_``; standard (non-B-cos) counterparts ``standard_``. Every model takes NHWC
input and is called as ``model.apply(variables, x, train=False, explain=False)``.

Every family file declares its models once, as ``ARCHITECTURES`` (``registry.Architecture``);
``FAMILIES`` below lists the family files; ``zoo.ZOO`` holds the metadata (weights, published
figures, parameter counts). How to add a model or a family: ``bcos_jax.models.registry``.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, List

import flax.linen as nn

from bcos_jax.models import (
    bcosified,
    cifar9l,
    convnext,
    densenet,
    inception,
    resnet,
    small,
    vgg,
    vit,
    zoo,
)
from bcos_jax.models.common import with_remat
from bcos_jax.models.registry import Architecture, ModelSpec, join

__all__ = ["FAMILIES", "Architecture", "ModelSpec", "create", "get_spec", "list_models"]

# The one list of model families: each module declares ARCHITECTURES.
FAMILIES = (resnet, densenet, vgg, convnext, vit, inception, cifar9l, small, bcosified)

_MODELS = join((a for family in FAMILIES for a in family.ARCHITECTURES), zoo.ZOO)


def list_models(version: str | None = None, family: str | None = None) -> List[str]:
    """Sorted model names, optionally filtered by version ('v1', 'v2', 'standard') and family."""
    return sorted(
        n
        for n, s in _MODELS.items()
        if (version is None or s.version == version) and (family is None or s.family == family)
    )


def get_spec(name: str) -> ModelSpec:
    """The ``ModelSpec`` of ``name``; unknown names raise a ValueError suggesting close ones."""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=5, cutoff=0.5)
        hint = (
            f"; did you mean {', '.join(close)}?" if close
            else "; see bcos_jax.models.list_models()"
        )
        raise ValueError(f"unknown model {name!r}{hint}")
    return _MODELS[name]


def create(name: str, **overrides: Any) -> nn.Module:
    """Build the Flax module of zoo model ``name`` (``num_classes=10``, ``dtype=jnp.bfloat16``).

    The model checks its input (``models.common.check_input``): an NHWC float batch with
    ``get_spec(name).in_channels`` channels, so RGB given to a B-cos model is a ValueError
    that says to apply ``bcos_jax.add_inverse``. ``in_channels=C`` builds it for C channels
    instead (e.g. 2 for ``[gray, 1 - gray]``), ``in_channels=None`` turns the check off.

    ``remat=True`` rematerialises every B-cos layer in the backward pass
    (``BcosConv.remat``): lower peak memory of a training step for some recomputation
    (benchmarks/README.md); values and gradients are unchanged.
    """
    spec = get_spec(name)
    in_channels = overrides.pop("in_channels", spec.in_channels)
    remat = overrides.pop("remat", False)
    model = spec.build(**overrides)
    if remat:
        changes = {}
        for f in dataclasses.fields(model):
            if f.name == "remat":  # a model building its B-cos layers itself (CIFAR9L)
                changes["remat"] = True
            elif f.name not in ("parent", "name"):
                value = getattr(model, f.name)
                new = with_remat(value)
                if new is not value:
                    changes[f.name] = new
        if not changes:
            raise ValueError(f"remat=True: model {name!r} has no B-cos layers to rematerialise")
        model = model.clone(**changes)
    if any(f.name == "in_channels" for f in dataclasses.fields(model)):  # every zoo model class
        model = model.clone(in_channels=in_channels)
    return model
