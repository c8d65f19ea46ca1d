"""The ``bcos-jax`` command line: one module per command, each ``add_parser`` + ``run``.

  bcos-jax models [--version v2] [--family F]    the model-zoo table
  bcos-jax convert --model NAME --weights FILE --out DIR
                                                 official .pth/.safetensors -> a model directory
  bcos-jax bcosify MODEL --out DIR               a standard model -> its B-cosified twin
  bcos-jax explain IMAGE... MODEL [--target K] --out DIR
                                                 colour explanation, contribution map, top-5 JSON
  bcos-jax evaluate MODEL [--dataset ...] --out DIR
                                                 localisation / faithfulness (see --help)

MODEL is ``--checkpoint DIR`` (a ``save_model`` directory or a training workdir),
``--model NAME --weights FILE``, or ``--model NAME --pretrained`` (the released weights,
downloaded and converted once: ``bcos_jax.pretrained``), with ``--num-classes N``
(``common.add_model_args``).
The commands sit on top of the package: they import the libraries, nothing imports them.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from bcos_jax.commands import bcosify, convert, evaluate, explain, models

__all__ = ["build_parser", "main"]

COMMANDS = (models, convert, bcosify, explain, evaluate)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bcos-jax", description="B-cos networks in JAX")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``bcos-jax`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Bad input (a missing file, a wrong model name, weights that do not fit) prints one
    ``error: ...`` line and returns 2.
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
