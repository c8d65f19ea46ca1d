"""Run every interpretability metric for a set of attribution methods and write the report.

``evaluate(fns, data, out_dir, config)``:

1. accuracy and the per-class confidence table (one pass over the evaluation set);
2. for every method:
   * the grid pointing game for each grid size (``localisation``), ``config.sample_size``
     grids each, ``config.grids_per_batch`` grid images per device call;
   * on the first ``config.num_images`` correctly classified images (dataset order, target =
     label): deletion/insertion curves (``faithfulness``), mask localisation where the data
     has object masks, and the gallery pictures;
3. ``summary.json`` (numbers), raw scores (``localisation/<method>_<s>x<s>.np``, the
   reference's ``np.savetxt`` format; ``curves/<method>.npz``) and the pictures
   (``localisation.png``, ``faithfulness.png``, ``gallery.png``).

Batches are padded to a fixed size (the padding is discarded), so every function compiles
once; every method is deterministic and per image, so results do not depend on the batch
sizes (up to float rounding).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import time
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from bcos_jax import attribution, jsonio
from bcos_jax.attribution.model_fns import ModelFns
from bcos_jax.evaluation import faithfulness as faith
from bcos_jax.evaluation import localisation as loc
from bcos_jax.evaluation import report
from bcos_jax.evaluation.data import EvalData

__all__ = ["DEFAULT_METHODS", "EvalConfig", "evaluate"]

# The methods registered with default=True (bcos_jax.attribution.registry).
DEFAULT_METHODS = attribution.DEFAULT_METHODS


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What ``evaluate`` computes.

    Attributes:
      methods: attribution method names (ours or the reference's).
      method_settings: per-method overrides of the reference settings, {name: {key: value}}.
      grid_sizes: grid pointing-game sizes s (s×s grids); () skips it.
      sample_size: grids per size (reference: 250 or 500).
      conf_thresh: the sigmoid-confidence threshold of the image sequence (reference 0.5).
      smooth: odd smoothing of the pointing game; None: 15 for images >= 128 px, else 1
        (the reference's ImageNet / CIFAR examples).
      rescale: shrink images by s so a grid keeps the single-image size.
      offset_quirk: keep the reference's skipped index between grids.
      grids_per_batch: grid images per device call.
      num_images: correctly classified images for faithfulness, mask localisation, gallery.
      batch_size: images per device call (confidences and the single-image metrics).
      faithfulness_steps: points per deletion/insertion curve minus one; 0 skips it.
      deletion_baseline, insertion_baseline, faithfulness_score: see ``faithfulness``.
      gallery_images: rows of the gallery; 0 skips it.
    """

    methods: Sequence[str] = DEFAULT_METHODS
    method_settings: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    grid_sizes: Sequence[int] = (2, 3)
    sample_size: int = 250
    conf_thresh: float = 0.5
    smooth: Optional[int] = None
    rescale: bool = False
    offset_quirk: bool = True
    grids_per_batch: int = 4
    num_images: int = 64
    batch_size: int = 16
    faithfulness_steps: int = 20
    deletion_baseline: str = "zero"
    insertion_baseline: str = "blur"
    faithfulness_score: str = "probability"
    gallery_images: int = 6


def _batches(items: Sequence[Any], size: int) -> List[Tuple[List[Any], int]]:
    """Fixed-size batches (the last padded by repeating its last item) and their real lengths."""
    out = []
    for i in range(0, len(items), size):
        part = list(items[i : i + size])
        real = len(part)
        out.append((part + [part[-1]] * (size - real), real))
    return out


def _stats(a: np.ndarray) -> Dict[str, float]:
    a = np.asarray(a, np.float64).reshape(-1)
    if a.size == 0:
        return {"mean": float("nan"), "median": float("nan"), "n": 0}
    return {
        "mean": float(a.mean()),
        "median": float(np.median(a)),
        "q25": float(np.percentile(a, 25)),
        "q75": float(np.percentile(a, 75)),
        "n": int(a.size),
    }


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="evaluate", unit="batch")

    def step(self, desc: str, n: int = 1):
        if self.bar is not None:
            self.bar.set_description(desc)
            self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _confidences(fns: ModelFns, data: EvalData, batch_size: int, progress: _Progress):
    logits_fn = jax.jit(lambda x: fns.logits(x))
    maxl, pred, labels = [], [], []
    for idx, real in _batches(list(range(len(data))), batch_size):
        rgb, lab, _ = data.load(idx)
        out = np.asarray(logits_fn(fns.encode(jnp.asarray(rgb))), np.float32)[:real]
        maxl.append(out.max(axis=1))
        pred.append(out.argmax(axis=1))
        labels.append(lab[:real])
        progress.step("confidences")
    return np.concatenate(maxl), np.concatenate(pred), np.concatenate(labels)


def evaluate(fns: ModelFns, data: EvalData, out_dir: str, config: EvalConfig = EvalConfig(),
             progress: bool = True, model_name: str = "model") -> Dict[str, Any]:
    """Evaluate ``config.methods`` on ``data`` for the model ``fns``; write results to ``out_dir``.

    Returns the summary dict (also written to ``out_dir/summary.json``).
    """
    methods = [attribution.get_method(m) for m in config.methods]
    for m in methods:
        m.check(fns)
    settings = {attribution.get_method(k).name: dict(v) for k, v in config.method_settings.items()}
    unknown = set(settings) - {m.name for m in methods}
    if unknown:
        raise ValueError(f"method_settings given for methods not evaluated: {sorted(unknown)}")
    for s in config.grid_sizes:
        if s < 2:
            raise ValueError(f"grid sizes must be >= 2, got {s}")
    os.makedirs(out_dir, exist_ok=True)

    n_conf_batches = -(-len(data) // config.batch_size)
    bar = _Progress(n_conf_batches, progress)
    t0 = time.perf_counter()
    max_logits, preds, labels = _confidences(fns, data, config.batch_size, bar)
    accuracy = float(np.mean(preds == labels))
    confs = loc.sorted_confidences(max_logits, preds, labels, data.num_classes)

    image_size = data.load([0])[0].shape[1]
    smooth = config.smooth if config.smooth is not None else (15 if image_size >= 128 else 1)
    grids = {}
    for s in config.grid_sizes:
        seq = loc.grid_index_sequence(confs, s * s, config.conf_thresh)
        grids[s] = loc.plan_grids(seq, labels, s * s, config.sample_size, config.offset_quirk)
        if len(grids[s]) < config.sample_size:
            usable = sum(
                1 for v in confs.values() if v and loc.sigmoid32(v[0][1]) > config.conf_thresh
            )
            warnings.warn(
                f"{s}x{s} pointing game: {len(grids[s])} of {config.sample_size} grids (the image "
                f"sequence needs more than {s * s} classes with confident correct images; {usable} "
                "have one)",
                stacklevel=2,
            )
    correct = np.flatnonzero(preds == labels)[: config.num_images].tolist()

    grid_batches = {s: _batches(g, config.grids_per_batch) for s, g in grids.items() if g}
    single_batches = _batches(correct, config.batch_size) if correct else []
    per_method = sum(len(b) for b in grid_batches.values()) + len(single_batches)
    if bar.bar is not None:
        bar.bar.total = n_conf_batches + per_method * len(methods)
        bar.bar.refresh()

    score_fns = {
        s: jax.jit(functools.partial(loc.grid_pointing_scores, grid_size=s, smooth=smooth))
        for s in grid_batches
    }
    curves_fn = jax.jit(functools.partial(
        faith.faithfulness_curves, fns, steps=max(config.faithfulness_steps, 1),
        deletion_baseline=config.deletion_baseline, insertion_baseline=config.insertion_baseline,
        score=config.faithfulness_score))

    def grid_inputs(s, batch):
        idx = [i for g, _ in batch for i in g]
        rgb = jnp.asarray(data.load(idx)[0])
        if config.rescale:
            rgb = loc.rescale_images(rgb, s)
        rgb = rgb.reshape((len(batch), s * s) + rgb.shape[1:])
        x = fns.encode(loc.make_grid(rgb, s))
        return x, jnp.asarray([t for _, t in batch], jnp.int32)

    summary_methods: Dict[str, Any] = {}
    loc_scores: Dict[str, Dict[int, np.ndarray]] = {}
    curve_store: Dict[str, Dict[str, np.ndarray]] = {}
    gallery_maps: Dict[str, List[np.ndarray]] = {}
    gallery_rows = correct[: config.gallery_images]
    for m in methods:
        tm = time.perf_counter()
        attr_fn = attribution.make_attributor(m.name, fns, **settings.get(m.name, {}))
        entry: Dict[str, Any] = {"label": m.label}
        loc_scores[m.label] = {}
        for s in config.grid_sizes:
            if not grids[s]:
                entry.setdefault("localisation", {})[f"{s}x{s}"] = {
                    **_stats(np.zeros(0)),
                    "grids": 0,
                }
        for s, batches in grid_batches.items():
            scores = []
            for batch, real in batches:
                x, t = grid_inputs(s, batch)
                scores.append(np.asarray(score_fns[s](attr_fn(x, t)))[:real])
                bar.step(f"{m.name} {s}x{s}")
            sc = np.concatenate(scores).reshape(-1)
            loc_scores[m.label][s] = sc
            entry.setdefault("localisation", {})[f"{s}x{s}"] = {
                **_stats(sc),
                "grids": len(grids[s]),
            }
            os.makedirs(os.path.join(out_dir, "localisation"), exist_ok=True)
            np.savetxt(os.path.join(out_dir, "localisation", f"{m.name}_{s}x{s}.np"), sc)
        curves: Dict[str, List[np.ndarray]] = {}
        fractions, areas = [], []
        maps: List[np.ndarray] = []
        for batch, real in single_batches:
            rgb, lab, masks = data.load(batch)
            x = fns.encode(jnp.asarray(rgb))
            t = jnp.asarray(lab)
            a = attr_fn(x, t)
            if config.faithfulness_steps > 0:
                for k, v in curves_fn(x, t, a).items():
                    curves.setdefault(k, []).append(np.asarray(v)[:real])
            if masks is not None:
                frac, area = loc.mask_localisation(a, masks)
                fractions.append(np.asarray(frac)[:real])
                areas.append(np.asarray(area)[:real])
            if len(maps) < len(gallery_rows):
                maps.extend(np.asarray(jnp.sum(a.astype(jnp.float32), -1))[:real])
            bar.step(f"{m.name} images")
        if curves:
            cs = {k: np.concatenate(v) for k, v in curves.items()}
            curve_store[m.label] = cs
            entry["faithfulness"] = {
                k: _stats(np.asarray(faith.area_under_curve(v))) for k, v in cs.items()
            }
            os.makedirs(os.path.join(out_dir, "curves"), exist_ok=True)
            np.savez(os.path.join(out_dir, "curves", f"{m.name}.npz"), **cs)
        if fractions:
            entry["mask_localisation"] = {**_stats(np.concatenate(fractions)),
                                          "uniform_baseline": float(np.mean(np.concatenate(areas)))}
        if gallery_rows:
            gallery_maps[m.label] = maps[: len(gallery_rows)]
        entry["seconds"] = round(time.perf_counter() - tm, 2)
        summary_methods[m.name] = entry
    bar.close()

    pictures = {}
    if any(loc_scores[m.label] for m in methods):
        pictures["localisation"] = report.localisation_boxplot(
            {k: v for k, v in loc_scores.items() if v},
            os.path.join(out_dir, "localisation.png"),
            title=model_name,
        )
    if curve_store:
        pictures["faithfulness"] = report.faithfulness_plot(
            curve_store,
            os.path.join(out_dir, "faithfulness.png"),
            ylabel=config.faithfulness_score,
            title=model_name,
        )
    if gallery_rows and gallery_maps:
        rgb, lab, _ = data.load(gallery_rows)
        colour = _colour_explanations(fns, rgb, lab, image_size)
        if colour is not None:
            gallery_maps = {"B-cos (colour)": colour, **gallery_maps}
        pictures["gallery"] = report.gallery(
            rgb,
            gallery_maps,
            os.path.join(out_dir, "gallery.png"),
            titles=[f"class {c}" for c in lab],
        )

    summary = {
        "model": model_name,
        "dataset": data.name,
        "num_images": len(data),
        "accuracy": accuracy,
        "settings": {
            **{
                k: v
                for k, v in dataclasses.asdict(config).items()
                if k not in ("methods", "method_settings")
            },
            "smooth": smooth,
            "methods": [m.name for m in methods],
            "method_settings": {
                m.name: {**m.settings, **settings.get(m.name, {})} for m in methods
            },
        },
        "uniform_baseline": {f"{s}x{s}": 1.0 / (s * s) for s in config.grid_sizes},
        "methods": summary_methods,
        "pictures": {k: os.path.basename(v) for k, v in pictures.items()},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    jsonio.write_json(os.path.join(out_dir, "summary.json"), summary)
    return summary


def _colour_explanations(fns: ModelFns, rgb: np.ndarray, labels: np.ndarray,
                         image_size: int) -> Optional[List[np.ndarray]]:
    """The reference's coloured B-cos explanations (RGBA) of the gallery images, if it has any.

    They need W(x) (``ModelFns.explain``) on the 6-channel ``[x, 1-x]`` encoding.
    """
    from bcos_jax import visualize

    x = fns.encode(jnp.asarray(rgb))
    if fns.explain is None or x.shape[-1] != 6:
        return None
    w = np.asarray(fns.explain(x, jnp.asarray(labels)).weights)
    x = np.asarray(x)
    smooth = 15 if image_size >= 128 else 3
    return [visualize.gradient_to_image(x[i], w[i], smooth=smooth) for i in range(len(x))]
