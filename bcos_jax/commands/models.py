"""``bcos-jax models``: the model zoo as a Markdown table."""
from __future__ import annotations

from typing import Optional

__all__ = ["add_parser", "models_table", "run"]


def _fmt_params(n: Optional[int]) -> str:
    return "?" if n is None else f"{n / 1e6:.2f}M"


def models_table(version: Optional[str] = None, family: Optional[str] = None) -> str:
    """The model zoo as a Markdown table (name, family, version, params, input, top-1)."""
    from bcos_jax import models

    rows = ["| name | family | version | params | input | top-1 |", "|---|---|---|---|---|---|"]
    for name in models.list_models(version=version, family=family):
        s = models.get_spec(name)
        top1 = "-" if s.top1 is None else f"{s.top1:.2f}"
        rows.append(
            f"| {name} | {s.family} | {s.version} | {_fmt_params(s.params)} | "
            f"{s.input_size}x{s.input_size}x{s.in_channels} | {top1} |"
        )
    return "\n".join(rows)


def add_parser(subparsers):
    p = subparsers.add_parser("models", help="print the model-zoo table")
    p.add_argument("--version", choices=["v1", "v2", "standard"])
    p.add_argument("--family")
    p.set_defaults(fn=run)
    return p


def run(args) -> int:
    print(models_table(args.version, args.family))
    return 0
