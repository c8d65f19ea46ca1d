"""``bcos-jax bcosify``: a standard model (released, converted or trained) -> its B-cosified
twin as a model directory (``hub.save_model``), the ``init_from`` of configs/bcosify.py."""
from __future__ import annotations

from bcos_jax import hub
from bcos_jax.commands import common

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    p = subparsers.add_parser(
        "bcosify", help="turn a standard model into a B-cos model (Arya et al., NeurIPS 2024)"
    )
    common.add_model_args(p)
    p.add_argument("--out", required=True, help="the model directory to write")
    p.set_defaults(fn=run)
    return p


def run(args) -> int:
    from bcos_jax.bcosify import bcosified_name, bcosify

    loaded = common.load_model(args)
    arch = {} if args.num_classes is None else {"num_classes": args.num_classes}
    target = bcosified_name(loaded.name)
    _, variables = bcosify(loaded.name, loaded.variables, **arch)
    hub.save_model(args.out, target, arch, variables)
    print(f"{loaded.name} -> {target}: wrote {args.out}; train it with "
          f"--config.init_from={args.out}")
    return 0
