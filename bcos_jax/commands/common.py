"""What the commands share: the model options, reading images, the model's input encoding."""
from __future__ import annotations

import argparse

import numpy as np

from bcos_jax import hub

__all__ = ["add_model_args", "encode_for", "load_image", "load_model"]


def add_model_args(parser: argparse.ArgumentParser, directory: bool = True):
    """The options naming a model: ``--checkpoint DIR`` (if ``directory``), or ``--model NAME
    --weights FILE``; ``--num-classes N`` for either. Returns the argument group."""
    g = parser.add_argument_group("model")
    if directory:
        g.add_argument("--checkpoint", help="a save_model directory or a training workdir")
    g.add_argument("--model", required=not directory, help="zoo model name (with --weights)")
    g.add_argument("--weights", required=not directory,
                   help="official weights: .pth/.pt (loaded weights-only) or .safetensors")
    if directory:
        g.add_argument("--pretrained", action="store_true",
                       help="the released weights of --model, downloaded and converted once "
                            "into the cache (docs/pretrained.md)")
    g.add_argument("--num-classes", type=int, help="override the model's number of classes")
    return g


def load_model(args: argparse.Namespace) -> hub.Loaded:
    """The model the options of ``add_model_args`` name (``hub.load``), built once."""
    overrides = {} if args.num_classes is None else {"num_classes": args.num_classes}
    checkpoint = getattr(args, "checkpoint", None)
    if getattr(args, "pretrained", False):
        if checkpoint is not None or args.weights or not args.model:
            raise ValueError("--pretrained takes --model NAME only (no --checkpoint/--weights)")
        # bcos_jax.released is built on the hub (it caches a model directory), so the
        # commands, not hub.load, choose it: the hub stays free of a circle through it.
        from bcos_jax import download, models
        from bcos_jax.released import pretrained

        try:
            net, variables = pretrained(args.model, **overrides)
            return hub.Loaded(net, variables, args.model, models.get_spec(args.model))
        except download.DownloadError as e:  # offline: one error line that says what to do
            raise ValueError(str(e)) from e
    if checkpoint is not None and (args.model or args.weights):
        raise ValueError("give either --checkpoint or --model/--weights, not both")
    if checkpoint is None and not (args.model and args.weights):
        raise ValueError("give --checkpoint DIR, --model NAME with --weights FILE, or "
                         "--model NAME --pretrained")
    return hub.load(checkpoint=checkpoint, model=args.model, weights=args.weights, **overrides)


def load_image(path: str) -> np.ndarray:
    """Decode an image file to uint8 RGB [H, W, 3]; a ValueError naming the file if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()  # decodes everything: a truncated file fails here, not later
            return np.asarray(im.convert("RGB"), np.uint8)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from None


def encode_for(spec, image: np.ndarray) -> np.ndarray:
    """[H, W, 3] in [0, 1] -> the model's input: ``[x, 1-x]`` (B-cos, 6 channels) or the
    ImageNet mean/std normalisation (standard models, 3 channels)."""
    from bcos_jax.data import augment

    if spec.in_channels == 6:
        return np.concatenate([image, 1.0 - image], -1)
    return augment.normalize(image)
