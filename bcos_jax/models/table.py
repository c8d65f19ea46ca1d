"""The model-zoo table, generated from the registry: docs/MODELS.md and ``bcos-jax models``.

    python -m bcos_jax.models.table           # count every model's parameters, write docs/MODELS.md
    python -m bcos_jax.models.table --check   # exit 1 if docs/MODELS.md is not what the zoo gives

Writing counts the parameters of every model from its Flax module with ``jax.eval_shape``
(no weights are allocated, but every model is traced: 80 s of CPU time for the 140 models,
measured with ``/usr/bin/time python -m bcos_jax.models.table`` on a 2-core AMD EPYC VM)
and refuses to write if a count differs from ``zoo.ZOO``'s. The table itself is rendered
from ``zoo.ZOO``'s counts, so ``--check`` and tests/test_models_table.py compare it without
building any model; the per-family tests (tests/test_models_*.py) check those counts
against the reference modules.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Dict, List, Mapping, Optional, Sequence

__all__ = ["count_params", "document", "main", "markdown", "zoo_params"]

DEFAULT_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "docs", "MODELS.md")

_HEADER = """\
# Model zoo

Generated from the registry (`bcos_jax/models`: the family files' `ARCHITECTURES` and
`zoo.py`) by `python -m bcos_jax.models.table`; do not edit by hand
(tests/test_models_table.py fails when this file is stale). `bcos-jax models` prints the same
table, optionally filtered (`--version`, `--family`).

* **params**: counted from the Flax module with `jax.eval_shape`; equal to the parameter
  count of the reference module (the `bcos` package, moboehle/B-cos, torchvision), which the
  per-family tests check.
* **input**: the eval input (height x width x channels): 6 channels `[x, 1-x]` for B-cos
  models, 3 ImageNet-normalised channels for standard ones; the eval transform resizes the
  shorter side to **resize**, then centre-crops.
* **top-1**: as published for the official weights: ImageNet validation, single crop, from
  the B-cos v2 model zoo and torchvision's own figures for the standard models; CIFAR-10 test
  accuracy for the v1 9L networks. `-`: nothing published.
* **weights**: where the official weights are (`get_spec(name).weights_url` has the link).
"""


def _weights_source(url: Optional[str]) -> str:
    from bcos_jax.models import zoo

    if not url:
        return "-"
    for prefix, label in (
        (zoo.V2_RELEASE, "B-cos v2 release"),
        (zoo.V1_RELEASE, "B-cos v1 release"),
        (zoo.TORCHVISION, "torchvision"),
        (zoo.BCOSIFICATION_RELEASE, "B-cosification release"),
    ):
        if url.startswith(prefix):
            return label
    return "elsewhere"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def zoo_params() -> Dict[str, Optional[int]]:
    """{name: the parameter count recorded in ``zoo.ZOO``} (None where none is recorded)."""
    from bcos_jax import models

    return {name: models.get_spec(name).params for name in models.list_models()}


def count_params(name: str) -> int:
    """Parameters of zoo model ``name`` at its default settings, from ``jax.eval_shape``."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from bcos_jax import models

    spec = models.get_spec(name)
    model = models.create(name)
    x = jax.ShapeDtypeStruct((1, spec.input_size, spec.input_size, spec.in_channels), jnp.float32)
    shapes = jax.eval_shape(lambda inp: model.init(jax.random.key(0), inp), x)
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(shapes["params"]))


def markdown(
    params: Optional[Mapping[str, Optional[int]]] = None,
    version: Optional[str] = None,
    family: Optional[str] = None,
) -> str:
    """The zoo as a Markdown table, one row per model (sorted by name).

    Args:
      params: {name: parameter count}; None: ``zoo_params()``.
      version, family: only the models of that version / family (``models.list_models``).

    Raises:
      ValueError: a listed model has no parameter count (add it to ``models/zoo.py``).
    """
    from bcos_jax import models

    params = zoo_params() if params is None else params
    names = models.list_models(version=version, family=family)
    missing = [n for n in names if params.get(n) is None]
    if missing:
        raise ValueError(f"no parameter count for {missing}: add it to bcos_jax/models/zoo.py")
    rows = [
        "| name | family | version | params | input | resize | top-1 | weights | notes |",
        "|---|---|---|--:|---|--:|--:|---|---|",
    ]
    for name in names:
        s = models.get_spec(name)
        top1 = "-" if s.top1 is None else f"{s.top1:.2f}"
        rows.append(
            f"| `{name}` | {s.family} | {s.version} | {params[name]:,} | "
            f"{s.input_size}x{s.input_size}x{s.in_channels} | {s.resize} | {top1} | "
            f"{_weights_source(s.weights_url)} | {_cell(s.notes)} |"
        )
    return "\n".join(rows) + "\n"


def document(params: Optional[Mapping[str, Optional[int]]] = None) -> str:
    """The full text of docs/MODELS.md."""
    from bcos_jax import models

    counts = {v: len(models.list_models(version=v)) for v in ("v2", "v1", "standard")}
    total = len(models.list_models())
    summary = (
        f"{total} models: {counts['v2']} B-cos v2 (TPAMI 2024, and B-cosified), "
        f"{counts['v1']} B-cos v1 (CVPR 2022), {counts['standard']} standard.\n"
    )
    return f"{_HEADER}\n{summary}\n{markdown(params)}"


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: Optional[Sequence[str]] = None,
         count: Callable[[str], int] = count_params) -> int:
    """The command line (module docstring). Returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bcos_jax.models.table", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=DEFAULT_PATH, help="the file (default: docs/MODELS.md)")
    parser.add_argument("--check", action="store_true",
                        help="only compare the file with the table from zoo.py's counts")
    args = parser.parse_args(argv)
    if args.check:
        try:
            with open(args.out, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        if current != document():
            print(f"{args.out} is stale: run python -m bcos_jax.models.table", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    from bcos_jax import models

    recorded = zoo_params()
    counted: Dict[str, int] = {}
    wrong: List[str] = []
    for name in models.list_models():
        counted[name] = count(name)
        if counted[name] != recorded[name]:
            wrong.append(f"{name}: module {counted[name]:,}, zoo.py {recorded[name]}")
    if wrong:
        print("parameter counts differ from bcos_jax/models/zoo.py (fix the zoo entry or the "
              "architecture):\n  " + "\n  ".join(wrong), file=sys.stderr)
        return 1
    _write(args.out, document(counted))
    print(f"wrote {args.out} ({len(counted)} models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
