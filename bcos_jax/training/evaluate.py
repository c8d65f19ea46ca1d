"""Evaluation: sharded top-1/top-5, explanation pictures and the localisation score.

Eval batches carry ``valid`` (the padded last batch); every count is masked with it, so the
result is exact for any dataset size. Everything here runs under ``jax.jit`` on the global,
sharded batch; only the scalar sums come back to the host.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from bcos_jax.evaluation.localisation import mask_localisation
from bcos_jax.explain import explain
from bcos_jax.training import sharding
from bcos_jax.training.step import model_input

__all__ = ["evaluate", "explanation_rows", "localisation", "make_explain_step", "model_input"]


def evaluate(eval_step: Callable, variables: Any, dataset: Iterable, mesh: Any,
             keys=("image", "label", "valid")) -> Dict[str, float]:
    """Top-1/top-5 (in %) and the mean loss over one pass of ``dataset``."""
    totals = None
    for batch in dataset:
        gb = sharding.make_global_batch({k: batch[k] for k in keys}, mesh)
        out = eval_step(variables, gb)
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    if totals is None:
        raise ValueError("the evaluation dataset is empty")
    t = jax.device_get(totals)
    n = max(float(t["count"]), 1.0)
    return {"top1": 100.0 * float(t["correct1"]) / n, "top5": 100.0 * float(t["correct5"]) / n,
            "loss": float(t["loss_sum"]) / n, "count": int(t["count"])}


def make_explain_step(model: Any, in_channels: int, mesh: Any) -> Callable:
    """Jitted ``fn(variables, images, targets) -> Explanation``, replicated result."""

    def fn(variables, images, targets):
        return explain(model, variables, model_input(images, in_channels), targets)

    return jax.jit(fn, out_shardings=NamedSharding(mesh, P()))


def explanation_rows(ex: Any, images: np.ndarray, smooth: int = 3) -> np.ndarray:
    """A uint8 [n·H, 3·W, 3] picture from a host ``Explanation``: image | colour explanation |
    contribution map, one row per image."""
    from bcos_jax import visualize

    rows = []
    for i in range(len(images)):
        rgba = visualize.gradient_to_image(images[i], ex.weights[i], smooth=smooth)
        tiles = [images[i][..., :3], visualize.composite(rgba),
                 visualize.contribution_map_image(ex.contributions[i])]
        rows.append(np.concatenate([visualize.to_uint8(t) for t in tiles], axis=1))
    return np.concatenate(rows, axis=0)


def display_class_names(
    names: Optional[Sequence[str]], num_classes: int
) -> Optional[Tuple[str, ...]]:
    """Readable class names: the dataset's, except for ImageNet-1k, whose tfds label names
    are WordNet ids (``n01440764``): the shipped names (``data.imagenet_classes``) instead."""
    import re

    if num_classes == 1000 and (names is None or all(re.fullmatch(r"n\d{8}", n) for n in names)):
        from bcos_jax.data import imagenet_classes

        return imagenet_classes()
    return None if names is None else tuple(names)


def explanation_captions(ex: Any, names: Optional[Sequence[str]]) -> str:
    """Markdown lines naming, per row of ``explanation_rows``, the explained class (the label)
    and the predicted class with its logit."""
    def label(i: int) -> str:
        return f"{i} ({names[i]})" if names is not None and 0 <= i < len(names) else str(i)

    logits = np.asarray(ex.logits)
    lines = []
    for row, (t, lg) in enumerate(zip(np.asarray(ex.targets), logits)):
        p = int(np.argmax(lg))
        lines.append(f"row {row}: explained {label(int(t))}; predicted {label(p)}, "
                     f"logit {float(lg[p]):.3g}")
    return "  \n".join(lines)


def localisation(
    model: Any, variables: Any, dataset: Iterable, mesh: Any, in_channels: int
) -> Dict[str, float]:
    """Localisation of the explanations of the true class on a dataset with object masks.

    Per image: ``evaluation.localisation.mask_localisation`` of the contribution map
    ``Σ_c x · W(x)``: (positive contribution inside the object mask) / (total positive
    contribution), 0 if there is no positive contribution; ``uniform`` is the mask's area
    fraction, the score of a uniform contribution map. Also the top-1 accuracy.
    """

    def step(variables, batch):
        ex = explain(model, variables, model_input(batch["image"], in_channels), batch["label"])
        score, area = mask_localisation(ex.contributions, batch["mask"])
        valid = batch["valid"].astype(jnp.float32)
        correct = (jnp.argmax(ex.logits, -1) == batch["label"]).astype(jnp.float32)
        return {
            "loc_sum": jnp.sum(score * valid),
            "uniform_sum": jnp.sum(area * valid),
            "correct": jnp.sum(correct * valid),
            "count": jnp.sum(valid),
        }

    step = jax.jit(step, out_shardings=NamedSharding(mesh, P()))
    totals = None
    for batch in dataset:
        gb = sharding.make_global_batch(
            {k: batch[k] for k in ("image", "label", "mask", "valid")}, mesh
        )
        out = step(variables, gb)
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    t = jax.device_get(totals)
    n = max(float(t["count"]), 1.0)
    return {
        "localisation": float(t["loc_sum"]) / n,
        "localisation_uniform": float(t["uniform_sum"]) / n,
        "accuracy": 100.0 * float(t["correct"]) / n,
        "count": int(t["count"]),
    }
