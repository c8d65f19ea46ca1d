"""Shared helpers of the training tests: train.py (for whole runs), configs, a tiny config,
the jitted steps of a config on a mesh (``bcos_jax.training.step``, as train.py builds them)."""
import importlib.util
import os
import types

import ml_collections

from bcos_jax.training import defaults
from bcos_jax.training import step as step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_module(relpath: str, name: str):
    path = os.path.join(ROOT, relpath)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_TRAIN = None


def train_module():
    """train.py imported once per process (it defines absl flags): for whole runs
    (``train_and_evaluate``, ``aot_compile``); the steps themselves are ``build``'s."""
    global _TRAIN
    if _TRAIN is None:
        import sys

        _TRAIN = sys.modules.get("bcos_train") or load_module("train.py", "bcos_train")
        sys.modules["bcos_train"] = _TRAIN
    return _TRAIN


def build(cfg, mesh, data_info=None):
    """(setup, jitted steps) of ``cfg`` on ``mesh``, as train.py builds them."""
    data_info = data_info or info()
    setup = step_lib.Setup.from_config(cfg, data_info.num_classes, data_info.num_train, mesh)
    return setup, step_lib.jit_on_mesh(setup, mesh, cfg.sharding_rules, cfg.fsdp_min_size)


def get_config(name: str, arg: str = ""):
    mod = load_module(os.path.join("configs", name + ".py"), "cfg_" + name)
    return mod.get_config(arg) if arg else mod.get_config()


def tiny_config(**over) -> ml_collections.ConfigDict:
    """A complete training config for a ~1k-parameter model on 16x16 images (no pipeline
    needed): the defaults with a tiny model, batch and schedule, and a fast EMA."""
    c = defaults.default_config("quickstart")
    c.seed = 0
    c.model_name = "bcos_small_cnn"
    c.model = ml_collections.ConfigDict(dict(widths=(8, 16), depth=1))
    c.data.image_size = 16
    c.batch_size = 16
    c.eval_batch_size = 16
    c.num_epochs = 2.0
    c.optimizer.lr = 1e-2
    c.schedule.warmup_epochs = 1
    c.schedule.warmup_factor = 0.1
    c.ema_decay = 0.9
    c.ema_every = 1
    c.ema_warmup_epochs = 0
    c.fsdp_min_size = 1
    with c.ignore_type():
        for k, v in over.items():
            c[k] = v
    return c


def info(num_classes=4, num_train=64, image_size=16):
    return types.SimpleNamespace(num_classes=num_classes, num_train=num_train, num_eval=32,
                                 image_size=image_size)


TINY_VIT = dict(patch_size=8, dim=32, depth=1, heads=2, mlp_dim=64, conv_stem=None)


def one_step_on_mock_data(name: str, arg: str, workdir: str) -> dict:
    """One step of recipe ``name:arg`` through the real pipeline on tfds mock data, with a
    tiny model (ViT recipes: a one-block ViT of the same kind; CNNs: bcos_small_cnn) and
    32x32 images; everything else (loss, optimiser, schedule, AGC, EMA, accumulation,
    augmentation, mixup) as the recipe says. Returns the summary after checking the workdir."""
    import json

    import tensorflow_datasets as tfds

    cfg = get_config(name, arg)
    if "vit" in cfg.model_name:
        cfg.model = dict(TINY_VIT, num_classes=cfg.model.get("num_classes", 1000))
    else:
        cfg.model_name = "bcos_small_cnn"
        cfg.model = dict(widths=(8, 16), depth=1)
    cfg.data.image_size = 32
    if cfg.data.name == "imagenet2012":
        cfg.data.eval_resize, cfg.data.eval_crop = 36, 32
    cfg.data.num_threads = 1
    cfg.batch_size = 16
    cfg.eval_batch_size = 16
    cfg.num_steps = 1
    cfg.log_every_steps = 1
    with tfds.testing.mock_data(num_examples=24):
        summary = train_module().train_and_evaluate(cfg, workdir)
    assert summary["steps"] == 1 and summary["val_count"] == 24
    assert os.path.exists(os.path.join(workdir, "summary.json"))
    assert os.listdir(os.path.join(workdir, "checkpoints"))
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    if cfg.data.add_inverse:
        assert os.path.exists(os.path.join(workdir, "explanations.png"))
    assert json.load(open(os.path.join(workdir, "model.json")))["model"] == cfg.model_name
    return summary
