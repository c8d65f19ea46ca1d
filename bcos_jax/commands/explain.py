"""``bcos-jax explain``: per image, the colour explanation, the contribution map and the top-5.

Each image goes through the model's eval transform (``data.augment.eval_transform``) and
input encoding; the files in ``--out`` are ``<stem>_explanation.png`` (B-cos models),
``<stem>_contributions.png`` and ``<stem>_top5.json``. An unreadable image is reported and
skipped; the exit status is then 1.
"""
from __future__ import annotations

import os
import sys

import numpy as np

from bcos_jax import jsonio
from bcos_jax.commands import common

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    p = subparsers.add_parser("explain", help="explain images with a B-cos model")
    p.add_argument("images", nargs="+")
    common.add_model_args(p)
    p.add_argument("--target", type=int, help="class to explain (default: the prediction)")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=run)
    return p


def run(args) -> int:
    import jax
    import jax.numpy as jnp

    from bcos_jax import explain_fn, layers, visualize
    from bcos_jax.data.augment import eval_transform
    from bcos_jax.data.imagenet import imagenet_classes

    model, variables, _, spec = common.load_model(args)
    # Kernels normalised once, not at every call: one image per call is where that pays
    # (ResNet-50 explanation 1.12x, benchmarks/prenormalize.py).
    size = spec.input_size
    example = jax.ShapeDtypeStruct((1, size, size, spec.in_channels), jnp.float32)
    variables = layers.prenormalize(model, variables, example, train=False)
    fn = explain_fn(model)
    os.makedirs(args.out, exist_ok=True)
    failures = 0
    for path in args.images:
        try:
            image = eval_transform(common.load_image(path), spec.resize, size)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            failures += 1
            continue
        x = common.encode_for(spec, image)[None]
        targets = None if args.target is None else np.array([args.target], np.int32)
        e = jax.device_get(fn(variables, x, targets))
        stem = os.path.splitext(os.path.basename(path))[0]
        logits = np.asarray(e.logits[0], np.float64)
        top5 = np.argsort(-logits)[:5]
        record = {
            "image": path,
            "target": int(e.targets[0]),
            "top5": [{"class": int(c), "logit": float(logits[c])} for c in top5],
            "bias": float(e.bias[0]),
            "contribution_sum": float(e.contributions[0].sum()),
        }
        if logits.shape[-1] == 1000:  # ImageNet models name their classes
            names = imagenet_classes()
            record["name"] = names[record["target"]]
            for entry in record["top5"]:
                entry["name"] = names[entry["class"]]
        if spec.in_channels == 6:
            rgba = visualize.gradient_to_image(x[0], e.weights[0])
            visualize.save_png(os.path.join(args.out, f"{stem}_explanation.png"),
                               visualize.to_uint8(rgba))
        visualize.save_png(
            os.path.join(args.out, f"{stem}_contributions.png"),
            visualize.to_uint8(visualize.contribution_map_image(e.contributions[0])),
        )
        jsonio.write_json(os.path.join(args.out, f"{stem}_top5.json"), record)
        label = f"{record['target']} ({record['name']})" if "name" in record else record["target"]
        print(f"{path}: class {label} (logit {logits[record['target']]:.3f}) "
              f"-> {args.out}")
    if failures:
        print(f"{failures} of {len(args.images)} images could not be read", file=sys.stderr)
    return 1 if failures else 0
