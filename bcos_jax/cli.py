"""The ``bcos-jax`` command line.

  bcos-jax models [--version v2]                 the model-zoo table
  bcos-jax convert --model NAME --weights FILE --out DIR
                                                 official .pth/.safetensors -> a JAX checkpoint
  bcos-jax explain IMAGE... (--model NAME --weights FILE | --checkpoint DIR) [--target K] --out DIR
                                                 colour explanation, contribution map, top-5 JSON
  bcos-jax evaluate ...                          localisation / faithfulness (see --help)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

import numpy as np

__all__ = ["main", "load_image", "eval_transform"]


# ---------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------
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


def _cmd_models(args) -> int:
    print(models_table(args.version, args.family))
    return 0


# ---------------------------------------------------------------------------------------
# convert
# ---------------------------------------------------------------------------------------
def _overrides(args) -> dict:
    return {} if args.num_classes is None else {"num_classes": args.num_classes}


def _cmd_convert(args) -> int:
    from bcos_jax import convert
    from bcos_jax.training.checkpoint import save_model

    sd = convert.load_torch_checkpoint(args.weights)
    variables = convert.from_torch(args.model, sd, **_overrides(args))
    save_model(args.out, args.model, _overrides(args), variables)
    print(f"wrote {args.out} (model {args.model}); load with bcos_jax.load_checkpoint({args.out!r})")
    return 0


# ---------------------------------------------------------------------------------------
# explain
# ---------------------------------------------------------------------------------------
def load_image(path: str) -> np.ndarray:
    """Decode an image file to uint8 RGB [H, W, 3]; a ValueError naming the file if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()  # decodes everything: a truncated file fails here, not later
            return np.asarray(im.convert("RGB"), np.uint8)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from None


def eval_transform(image: np.ndarray, resize: int, crop: int) -> np.ndarray:
    """The reference eval transform on a uint8 RGB image, as torchvision does it on PIL:
    shorter side to ``resize`` (bilinear), centre crop ``crop``, scale to [0, 1].
    [H, W, 3] uint8 -> [crop, crop, 3] float32."""
    from PIL import Image

    h, w = image.shape[:2]
    if h <= w:
        nh, nw = resize, int(resize * w / h)
    else:
        nh, nw = int(resize * h / w), resize
    out = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR), np.float32) / 255.0
    top, left = int(round((nh - crop) / 2.0)), int(round((nw - crop) / 2.0))
    if top < 0 or left < 0:
        raise ValueError(f"image resized to {nh}x{nw} is smaller than the crop {crop}")
    return out[top : top + crop, left : left + crop]


def encode_for(spec, image: np.ndarray) -> np.ndarray:
    """[H, W, 3] in [0, 1] -> the model's input encoding ([x, 1-x] or mean/std normalised)."""
    from bcos_jax.models.common import IMAGENET_MEAN, IMAGENET_STD

    if spec.in_channels == 6:
        return np.concatenate([image, 1.0 - image], -1)
    return (image - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)


def _load_model(args):
    from bcos_jax import convert, models

    if args.checkpoint:
        from bcos_jax.training.checkpoint import load_checkpoint, read_model_json

        model, variables = load_checkpoint(args.checkpoint)
        return model, variables, models.get_spec(read_model_json(args.checkpoint)[0])
    if not (args.model and args.weights):
        raise ValueError("give --checkpoint DIR, or --model NAME with --weights FILE")
    spec = models.get_spec(args.model)
    variables = convert.from_torch(args.model, convert.load_torch_checkpoint(args.weights), **_overrides(args))
    return models.create(args.model, **_overrides(args)), variables, spec


def _cmd_explain(args) -> int:
    import jax

    import jax.numpy as jnp

    from bcos_jax import explain_fn, layers, visualize

    model, variables, spec = _load_model(args)
    # Kernels normalised once, not at every call: one image per call is where that pays
    # (ResNet-50 explanation 1.12x, benchmarks/prenormalize.py).
    example = jax.ShapeDtypeStruct((1, spec.input_size, spec.input_size, spec.in_channels), jnp.float32)
    variables = layers.prenormalize(model, variables, example, train=False)
    fn = explain_fn(model)
    os.makedirs(args.out, exist_ok=True)
    failures = 0
    results = {}
    for path in args.images:
        try:
            image = eval_transform(load_image(path), spec.resize, spec.input_size)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            failures += 1
            continue
        x = encode_for(spec, image)[None]
        targets = None if args.target is None else np.array([args.target], np.int32)
        e = jax.device_get(fn(variables, x, targets))
        stem = os.path.splitext(os.path.basename(path))[0]
        probs_src = np.asarray(e.logits[0], np.float64)
        top5 = np.argsort(-probs_src)[:5]
        record = {
            "image": path,
            "target": int(e.targets[0]),
            "top5": [{"class": int(c), "logit": float(probs_src[c])} for c in top5],
            "bias": float(e.bias[0]),
            "contribution_sum": float(e.contributions[0].sum()),
        }
        if spec.in_channels == 6:
            rgba = visualize.gradient_to_image(x[0], e.weights[0])
            _save_png(os.path.join(args.out, f"{stem}_explanation.png"), visualize.to_uint8(rgba))
        _save_png(
            os.path.join(args.out, f"{stem}_contributions.png"),
            visualize.to_uint8(visualize.contribution_map_image(e.contributions[0])),
        )
        _write_json(os.path.join(args.out, f"{stem}_top5.json"), record)
        results[path] = record
        print(f"{path}: class {record['target']} (logit {probs_src[record['target']]:.3f}) -> {args.out}")
    if failures:
        print(f"{failures} of {len(args.images)} images could not be read", file=sys.stderr)
    return 1 if failures else 0


def _save_png(path: str, arr: np.ndarray) -> None:
    from PIL import Image

    tmp = path + ".tmp"
    Image.fromarray(arr).save(tmp, format="PNG")
    os.replace(tmp, path)


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bcos-jax", description="B-cos networks in JAX")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("models", help="print the model-zoo table")
    m.add_argument("--version", choices=["v1", "v2", "standard"])
    m.add_argument("--family")
    m.set_defaults(fn=_cmd_models)

    c = sub.add_parser("convert", help="convert official PyTorch weights to a JAX checkpoint")
    c.add_argument("--model", required=True)
    c.add_argument("--weights", required=True, help=".pth/.pt (loaded weights-only) or .safetensors")
    c.add_argument("--out", required=True)
    c.add_argument("--num-classes", type=int)
    c.set_defaults(fn=_cmd_convert)

    e = sub.add_parser("explain", help="explain images with a B-cos model")
    e.add_argument("images", nargs="+")
    e.add_argument("--model")
    e.add_argument("--weights")
    e.add_argument("--checkpoint")
    e.add_argument("--target", type=int, help="class to explain (default: the prediction)")
    e.add_argument("--num-classes", type=int)
    e.add_argument("--out", required=True)
    e.set_defaults(fn=_cmd_explain)

    try:
        from bcos_jax.evaluation import cli as eval_cli
    except ImportError:  # pragma: no cover - evaluation extras missing
        eval_cli = None
    if eval_cli is not None:
        eval_cli.add_parser(sub)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
