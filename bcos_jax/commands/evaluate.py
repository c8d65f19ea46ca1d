"""``bcos-jax evaluate``: localisation, faithfulness and pictures for a trained or converted model.

    bcos-jax evaluate --checkpoint runs/quickstart --dataset quickstart --out eval/quickstart
    bcos-jax evaluate --model resnet50 --weights resnet50-...pth --dataset tfds:imagenet2012 \\
        --split validation --methods bcos gradcam lime --grid-sizes 3 --sample-size 250 \\
        --out eval/r50

Datasets (``--dataset``):
  quickstart[:key=value,...]   the synthetic shapes with object masks (bcos_jax.data.synthetic),
                               keys num_examples (512), image_size (32), num_classes (the
                               model's), seed (0); ``--split`` test (default) or train.
  npz:PATH                     arrays 'images' [M, H, W, 3] (uint8 or [0, 1]), 'labels' [M],
                               optional 'masks' [M, H, W].
  tfds:NAME                    ``tfds.data_source(NAME, split=--split)`` (prepared
                               beforehand), with the model's eval transform (resize + crop).

Method settings: ``--set rise.n_masks=1000 --set occlusion.ks=16`` (values parsed as
Python literals). Writes ``summary.json`` and the pictures to ``--out``.
"""
from __future__ import annotations

import argparse
import ast
import os
from typing import Any, Dict, List, Optional

from bcos_jax.commands import common

__all__ = ["add_parser", "parse_dataset", "parse_settings", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the 'evaluate' sub-command to an ``argparse`` sub-parser collection."""
    from bcos_jax.attribution import METHODS
    from bcos_jax.evaluation.evaluate import DEFAULT_METHODS, EvalConfig

    d = EvalConfig()
    p = subparsers.add_parser(
        "evaluate",
        help="localisation / faithfulness of attribution methods",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = common.add_model_args(p)
    src.add_argument("--feature-layer", help="Grad-CAM feature site, e.g. 'layer4' or 'fc:input'")
    data = p.add_argument_group("data")
    data.add_argument("--dataset", default="quickstart",
                      help="quickstart[:k=v,...] | npz:PATH | tfds:NAME")
    data.add_argument("--split", default=None,
                      help="dataset split (quickstart: test; tfds: validation)")
    data.add_argument("--limit", type=int, help="use only the first N examples")
    ev = p.add_argument_group("evaluation")
    ev.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                    help=f"attribution methods (default: %(default)s); all: {', '.join(METHODS)}")
    ev.add_argument("--set", dest="settings", action="append", default=[],
                    metavar="METHOD.KEY=VALUE", help="override a method setting (repeatable)")
    ev.add_argument("--grid-sizes", type=int, nargs="*", default=list(d.grid_sizes))
    ev.add_argument("--sample-size", type=int, default=d.sample_size, help="grids per size")
    ev.add_argument("--conf-thresh", type=float, default=d.conf_thresh)
    ev.add_argument("--smooth", type=int, default=None,
                    help="odd smoothing (default: 15 for >=128 px, else 1)")
    ev.add_argument("--rescale", action="store_true",
                    help="shrink images so a grid keeps the image size")
    ev.add_argument("--no-offset-quirk", action="store_true",
                    help="do not skip an index between grids (the reference does)")
    ev.add_argument("--num-images", type=int, default=d.num_images,
                    help="images for faithfulness / mask localisation / gallery")
    ev.add_argument("--faithfulness-steps", type=int, default=d.faithfulness_steps,
                    help="0 skips the curves")
    baselines = ["zero", "blur", "mean"]
    ev.add_argument("--deletion-baseline", default=d.deletion_baseline, choices=baselines)
    ev.add_argument("--insertion-baseline", default=d.insertion_baseline, choices=baselines)
    ev.add_argument("--score", default=d.faithfulness_score, choices=["probability", "logit"])
    ev.add_argument("--batch-size", type=int, default=d.batch_size)
    ev.add_argument("--grids-per-batch", type=int, default=d.grids_per_batch)
    ev.add_argument("--gallery", type=int, default=d.gallery_images, help="gallery rows (0: none)")
    ev.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(fn=run)
    return p


def parse_settings(items: List[str]) -> Dict[str, Dict[str, Any]]:
    """['rise.n_masks=1000', ...] -> {'rise': {'n_masks': 1000}} (values as Python literals)."""
    out: Dict[str, Dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot or not method or not name:
            raise ValueError(f"--set {item!r}: expected METHOD.KEY=VALUE, e.g. rise.n_masks=1000")
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        out.setdefault(method, {})[name] = parsed
    return out


def _read_npz(path: str) -> Dict[str, Any]:
    """Every array of an .npz file; a ValueError naming the file if missing, truncated, corrupt."""
    import zipfile
    import zlib

    import numpy as np

    if not os.path.exists(path):
        raise ValueError(f"--dataset npz:{path}: no such file")
    try:
        f = np.load(path, allow_pickle=False)
        if not hasattr(f, "files"):
            raise ValueError("a single .npy array, not an .npz archive")
        with f:
            return {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
        raise ValueError(
            f"--dataset npz:{path}: not a readable .npz archive ({type(e).__name__}: {e}); "
            "the file may be truncated or not written by numpy.savez"
        ) from None


def parse_dataset(spec: str, split: Optional[str], num_classes: int, model_spec=None,
                  limit: Optional[int] = None):
    """An ``EvalData`` from a ``--dataset`` string (see the module docstring)."""
    import numpy as np

    from bcos_jax.evaluation.data import EvalData

    kind, _, rest = spec.partition(":")
    if kind == "quickstart":
        from bcos_jax.data.synthetic import QuickstartSource

        kw: Dict[str, Any] = {"num_examples": 512, "image_size": 32, "num_classes": num_classes,
                              "seed": 0}
        for part in filter(None, rest.split(",")):
            k, sep, v = part.partition("=")
            if not sep or k not in kw:
                raise ValueError(
                    f"--dataset quickstart: unknown option {part!r}; options: {sorted(kw)}")
            kw[k] = int(v)
        src = QuickstartSource(split or "test", kw["num_examples"], kw["num_classes"],
                               kw["image_size"], kw["seed"])
        return EvalData(src, num_classes, name=f"quickstart/{split or 'test'}", limit=limit)
    if kind == "npz":
        if not rest:
            raise ValueError("--dataset npz:PATH needs a path")
        arrays = _read_npz(rest)
        missing = {"images", "labels"} - set(arrays)
        if missing:
            raise ValueError(f"{rest}: missing arrays {sorted(missing)} (has {sorted(arrays)})")
        return EvalData.from_arrays(arrays["images"], arrays["labels"], arrays.get("masks"),
                                    num_classes, name=rest, limit=limit)
    if kind == "tfds":
        import tensorflow_datasets as tfds

        from bcos_jax.data.augment import eval_transform

        if not rest:
            raise ValueError("--dataset tfds:NAME needs a dataset name")
        src = tfds.data_source(rest, split=split or "validation")
        transform = None
        if model_spec is not None:
            def transform(im):
                return eval_transform(np.asarray(im, np.uint8), model_spec.resize,
                                      model_spec.input_size)
        return EvalData(src, num_classes, name=f"{rest}/{split or 'validation'}",
                        transform=transform, limit=limit)
    raise ValueError(f"unknown --dataset {spec!r}; use quickstart[:k=v,...], npz:PATH or tfds:NAME")


def run(args: argparse.Namespace) -> int:
    """Run ``bcos-jax evaluate``; returns the exit status."""
    import jax
    import jax.numpy as jnp

    from bcos_jax.attribution import from_model, get_method
    from bcos_jax.evaluation.evaluate import EvalConfig, evaluate

    for m in args.methods:
        get_method(m)  # fail on a typo before loading anything
    settings = parse_settings(args.settings)
    model, variables, name, spec = common.load_model(args)
    fns = from_model(model, variables, bcos=spec.version != "standard",
                     feature_layer=args.feature_layer, name=name)
    probe = jnp.zeros((1, spec.input_size, spec.input_size, spec.in_channels), jnp.float32)
    num_classes = int(jax.eval_shape(fns.logits, probe).shape[-1])
    data = parse_dataset(args.dataset, args.split, num_classes, spec, args.limit)
    config = EvalConfig(
        methods=tuple(args.methods),
        method_settings=settings,
        grid_sizes=tuple(args.grid_sizes),
        sample_size=args.sample_size,
        conf_thresh=args.conf_thresh,
        smooth=args.smooth,
        rescale=args.rescale,
        offset_quirk=not args.no_offset_quirk,
        grids_per_batch=args.grids_per_batch,
        num_images=args.num_images,
        batch_size=args.batch_size,
        faithfulness_steps=args.faithfulness_steps,
        deletion_baseline=args.deletion_baseline,
        insertion_baseline=args.insertion_baseline,
        faithfulness_score=args.score,
        gallery_images=args.gallery,
    )
    summary = evaluate(fns, data, args.out, config, progress=not args.no_progress, model_name=name)
    print(f"accuracy {summary['accuracy']:.4f} on {summary['num_images']} images ({data.name})")
    for m, e in summary["methods"].items():
        parts = [f"{k} {v['median']:.3f}" if v["grids"] else f"{k} -"
                 for k, v in e.get("localisation", {}).items()]
        if "faithfulness" in e:
            parts.append(f"del-MIF {e['faithfulness']['deletion_mif']['mean']:.3f}")
            parts.append(f"ins-MIF {e['faithfulness']['insertion_mif']['mean']:.3f}")
        if "mask_localisation" in e:
            ml = e["mask_localisation"]
            parts.append(f"mask {ml['mean']:.3f} (uniform {ml['uniform_baseline']:.3f})")
        print(f"  {m:22s} " + ", ".join(parts))
    print(f"summary and pictures in {args.out}")
    return 0
