"""CI-sized B-cosification on the synthetic quickstart data (examples/bcosify_quickstart.py):
a briefly pretrained standard CNN, B-cosified and fine-tuned, localises its evidence on the
object better than the same B-cosified network before fine-tuning."""

from __future__ import annotations

import importlib.util
import pathlib

import jax
import jax.numpy as jnp

from bcos_jax import models
from bcos_jax.bcosify import bcosify

_PATH = pathlib.Path(__file__).resolve().parents[1] / "examples" / "bcosify_quickstart.py"


def _example():
    spec = importlib.util.spec_from_file_location("bcosify_quickstart", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_finetuned_bcosified_localises_better_than_untrained():
    ex = _example()
    train, test = ex.load_data(num_train=512, num_eval=256, seed=0)
    std = models.create("standard_small_cnn", num_classes=ex.NUM_CLASSES)
    std_vars = std.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
    std_vars = ex.train(
        std,
        std_vars,
        train,
        loss="ce",
        lr=3e-3,
        steps=96,
        warmup=8,
        batch=32,
        seed=0,
        in_channels=3,
    )
    model, variables = bcosify("standard_small_cnn", std_vars, num_classes=ex.NUM_CLASSES)
    score = ex.make_scorer(model, test, 6)
    before = score(variables)
    tuned = ex.train(
        model,
        variables,
        train,
        loss="bce",
        lr=1e-3,
        steps=32,
        warmup=0,
        batch=32,
        seed=0,
        in_channels=6,
    )
    after = score(tuned)
    # Measured (2-core AMD EPYC VM): 0.903 -> 0.919 (top-1 73.8 -> 98.4 %); a third of that gap.
    assert after["localisation"] > before["localisation"] + 0.005, (before, after)
    assert after["top1"] > before["top1"], (before, after)
    assert after["localisation"] > 1.5 * after["uniform"]
