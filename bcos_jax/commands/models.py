"""``bcos-jax models``: the model zoo as a Markdown table."""
from __future__ import annotations

from typing import Optional

__all__ = ["add_parser", "models_table", "run"]


def models_table(version: Optional[str] = None, family: Optional[str] = None) -> str:
    """The model zoo as a Markdown table (``bcos_jax.models.table.markdown``, as docs/MODELS.md)."""
    from bcos_jax.models.table import markdown

    return markdown(version=version, family=family).rstrip("\n")


def add_parser(subparsers):
    p = subparsers.add_parser("models", help="print the model-zoo table")
    p.add_argument("--version", choices=["v1", "v2", "standard"])
    p.add_argument("--family")
    p.set_defaults(fn=run)
    return p


def run(args) -> int:
    print(models_table(args.version, args.family))
    return 0
