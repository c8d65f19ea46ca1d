"""``bcos-jax convert``: official PyTorch weights -> a model directory (``hub.save_model``)."""
from __future__ import annotations

from bcos_jax import hub
from bcos_jax.commands import common

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    p = subparsers.add_parser("convert", help="convert official PyTorch weights to a JAX model")
    common.add_model_args(p, directory=False)
    p.add_argument("--out", required=True, help="the model directory to write")
    p.set_defaults(fn=run)
    return p


def run(args) -> int:
    loaded = common.load_model(args)
    overrides = {} if args.num_classes is None else {"num_classes": args.num_classes}
    hub.save_model(args.out, loaded.name, overrides, loaded.variables)
    print(f"wrote {args.out} (model {loaded.name}); load with "
          f"bcos_jax.load_checkpoint({args.out!r})")
    return 0
