"""How a model gets into the zoo: one way for every family.

Adding a model family (or models to one) — see also docs/extending.md:

1. Write the family file ``bcos_jax/models/<family>.py`` (Flax modules following the model
   contract of ``models.common``) and end it with the family's declaration::

       ARCHITECTURES = (
           Architecture("my_net18", partial(MyNet, depth=18), family="mynet", version="v2"),
           Architecture("standard_my_net18", partial(MyNet, depth=18, conv=StandardConv),
                        family="mynet", version="standard", in_channels=3),
       )

   An ``Architecture`` says how to build the module and how the model takes its input;
   nothing else (build it with a loop if the family is large; it stays one tuple).
2. Add the module to ``FAMILIES`` in ``bcos_jax/models/__init__.py`` (one name).
3. Add one ``ZooEntry`` per name to ``ZOO`` in ``bcos_jax/models/zoo.py``: the parameter
   count of the reference module (required by the zoo tests), and where known the
   published top-1, the weights URL and a note.
4. Regenerate the model table: ``python -m bcos_jax.models.table`` (docs/MODELS.md;
   tests/test_models_table.py fails while it is stale).

``join`` puts the two halves together into the ``ModelSpec`` that ``get_spec(name)``
returns, refusing duplicate names and zoo entries for unknown models.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Iterable, Mapping, Optional

import flax.linen as nn

from bcos_jax.models.zoo import ZooEntry

__all__ = ["Architecture", "ModelSpec", "VERSIONS", "join"]

VERSIONS = ("v1", "v2", "standard")


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A family file's declaration of one zoo model: how to build it, what input it takes.

    Attributes:
      name: the zoo name (``v1_*`` for v1 models, ``standard_*`` for non-B-cos ones).
      build: ``build(**overrides) -> nn.Module``.
      family: 'resnet', 'densenet', 'vgg', 'convnext', 'vit', 'inception', 'cifar9l', ...
      version: 'v1', 'v2' or 'standard'.
      input_size: side of the (square) eval input, e.g. 224, 299 or 32.
      resize: eval transform resize of the shorter side (then centre crop input_size).
      num_classes: default number of classes.
      in_channels: 6 for B-cos models (``[x, 1-x]``), 3 for standard ones.
      torch_prefix: prefix of the reference state_dict keys (e.g. '0.' for wrapped models).
    """

    name: str
    build: Callable[..., nn.Module]
    family: str
    version: str
    input_size: int = 224
    resize: int = 256
    num_classes: int = 1000
    in_channels: int = 6
    torch_prefix: str = ""

    def __post_init__(self):
        if self.version not in VERSIONS:
            raise ValueError(
                f"model {self.name!r}: version must be one of {VERSIONS}, got {self.version!r}"
            )


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One entry of the model zoo: its ``Architecture`` joined with its ``ZooEntry``.

    Attributes:
      build, family, version, input_size, resize, num_classes, in_channels, torch_prefix:
        from the family file's ``Architecture``.
      top1, params, weights_url, notes: from ``zoo.ZOO`` (None / '' without an entry).
    """

    build: Callable[..., nn.Module]
    family: str
    version: str
    input_size: int = 224
    resize: int = 256
    num_classes: int = 1000
    in_channels: int = 6
    top1: Optional[float] = None
    params: Optional[int] = None
    torch_prefix: str = ""
    weights_url: Optional[str] = None
    notes: str = ""


def join(
    architectures: Iterable[Architecture], zoo: Mapping[str, ZooEntry]
) -> Dict[str, ModelSpec]:
    """{name: ModelSpec} from the families' architectures and the zoo metadata.

    Raises:
      ValueError: a name declared twice, or a zoo entry naming no declared architecture.
    """
    out: Dict[str, ModelSpec] = {}
    for arch in architectures:
        if not isinstance(arch, Architecture):
            raise TypeError(f"ARCHITECTURES must hold models.registry.Architecture, got {arch!r}")
        if arch.name in out:
            raise ValueError(f"model name {arch.name!r} declared twice")
        fields: Dict[str, Any] = {f.name: getattr(arch, f.name) for f in dataclasses.fields(arch)}
        del fields["name"]
        entry = zoo.get(arch.name, ZooEntry())
        out[arch.name] = ModelSpec(**fields, **dataclasses.asdict(entry))
    unknown = sorted(set(zoo) - set(out))
    if unknown:
        raise ValueError(f"models/zoo.py has entries for models no family declares: {unknown}")
    return out
