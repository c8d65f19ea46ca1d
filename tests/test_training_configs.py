"""Every recipe config builds its model (under jax.eval_shape) and takes one training step
through the real input pipeline on ``tfds.testing.mock_data`` with a tiny model override."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from training_helpers import ROOT, get_config

from bcos_jax import models
from bcos_jax.training import step as step_lib

RECIPES = [
    ("imagenet_bcos_final", a)
    for a in ("resnet18", "resnet50", "resnext50_32x4d", "densenet121", "vgg11_bnu")
] + [
    ("imagenet_bcos_final_long", a) for a in ("resnet50_long", "densenet121_long", "convnext_tiny",
                                             "convnext_base_bnu")
] + [
    ("imagenet_vit_final", a) for a in ("vitc_s_patch1_14", "simple_vit_b_patch16_224",
                                       "standard_simple_vit_s_patch16_224")
] + [
    ("imagenet_v1", a)
    for a in ("resnet34", "densenet121", "densenet121_cossched", "vgg11", "inception_v3")
] + [
    ("cifar10_v1_9l", a) for a in ("1", "2", "2.5")
] + [
    ("cifar10_v2", a) for a in ("resnet20", "resnet56/bnu-linear", "resnet20-nomaxout")
] + [("quickstart", ""), ("quickstart", "ci")]


@pytest.mark.parametrize("name,arg", RECIPES, ids=[f"{n}:{a}" for n, a in RECIPES])
def test_config_builds_its_model(name, arg):
    cfg = get_config(name, arg)
    num_classes = cfg.model.get("num_classes", 1000 if "imagenet" in name else 10)
    overrides = step_lib.model_overrides(cfg, num_classes)
    model = models.create(cfg.model_name, **overrides)
    spec = models.get_spec(cfg.model_name)
    s = cfg.data.image_size
    shapes = jax.eval_shape(
        lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                           jnp.zeros((2, s, s, spec.in_channels)), train=True))
    assert jax.tree.leaves(shapes["params"])
    # Guard rails every recipe keeps.
    assert cfg.batch_size % cfg.grad_accum_steps == 0
    assert cfg.loss in ("bce", "uniform_off_labels_bce", "ce")
    assert cfg.data.add_inverse == (spec.in_channels == 6)


# --------------------------------------------------------------------------------------
# A bad --config is a one-line error naming the fix (no training, no parameters built).
# --------------------------------------------------------------------------------------
def _check(*args):
    from bcos_jax.training import defaults

    return defaults.check_command_line(["train.py", *args])


QUICKSTART = os.path.join(ROOT, "configs", "quickstart.py")


@pytest.mark.parametrize("override,message", [
    ("--config.batch_sise=3", "unknown config key 'batch_sise'; did you mean 'batch_size'"),
    ("--config.optimizer.lrr=1e-3",
     "unknown config key 'optimizer.lrr'; did you mean 'optimizer.lr'?"),
    ("--config.data.image_sise=8", "did you mean 'data.image_size'"),
    ("--config.model.widht=(8,)", "did you mean 'model.widths'?"),
    ("--config.model.foo=1",
     "config.model has: depth, widths (config.model holds models.create overrides"),
    ("--config.zzzzzz=1", "unknown config key 'zzzzzz'; config has: aux_loss_weight, batch_size"),
    ("--config.batch_size.x=1", "config.batch_size is 64 (of type int), not a dict"),
])
def test_unknown_override_key_suggests_the_close_one(override, message):
    with pytest.raises(ValueError) as err:
        _check("--config", QUICKSTART, override)
    assert message in str(err.value) and override.split("=")[0] in str(err.value)


def test_known_overrides_pass_the_check():
    cfg = _check(f"--config={QUICKSTART}:ci", "--config.batch_size=16", "--config.optimizer.lr",
                 "1e-3",
                 "--noconfig.localisation", "--config.model.widths=(8, 16)", "--workdir", "/tmp/x")
    assert cfg.data.num_train == 1024  # the file's values: the overrides are ml_collections' job


def test_bad_config_file_or_argument():
    with pytest.raises(ValueError,
                       match=r"no config file '.*quikstart.py'; did you mean '.*quickstart.py'\?"):
        _check("--config", os.path.join(ROOT, "configs", "quikstart.py"))
    with pytest.raises(ValueError, match=r"no config file .*; config files in .*: "
                                         r".*cifar10_v1_9l.py, .*quickstart.py"):
        _check("--config", os.path.join(ROOT, "configs", "zzzz.py"))
    with pytest.raises(ValueError, match=r"get_config\('foo'\) of .*quickstart.py failed "
                                         r"\(ValueError: quickstart takes"):
        _check(f"--config={QUICKSTART}:foo")
    assert _check("--workdir", "/tmp/x") is None  # no --config: absl reports the missing flag


def test_unknown_model_or_model_setting_in_a_config():
    from bcos_jax.training import defaults

    cfg = get_config("quickstart")
    cfg.model_name = "resnet_50"
    with pytest.raises(ValueError, match=r"config.model_name: unknown model 'resnet_50'; "
                                         r"did you mean resnet50"):
        defaults.check_model(cfg)
    cfg = get_config("quickstart")
    cfg.model.widhts = (8,)
    with pytest.raises(ValueError, match=r"config.model.widhts: model bcos_small_cnn has no "
                                         r"such setting; "
                                         r"did you mean 'config.model.widths'\?"):
        defaults.check_model(cfg)
    for name, arg in RECIPES:  # every recipe passes (builds modules only, no parameters)
        defaults.check_model(get_config(name, arg))


def test_train_py_reports_a_bad_config_in_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), "--config", QUICKSTART,
         "--config.batch_sise=3",
         "--workdir", str(tmp_path / "w")],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 1
    assert "FATAL Flags parsing error: --config.batch_sise: unknown config key 'batch_sise'; " \
           "did you mean 'batch_size'" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "w").exists()
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), "--config", QUICKSTART,
         "--config.model_name=resnet_50",
         "--workdir", str(tmp_path / "w")],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 1 and "config.model_name: unknown model 'resnet_50'" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "w").exists()


# --------------------------------------------------------------------------------------
# One source of defaults: training/defaults.py. The code reads config keys without
# fallbacks, and every key it reads exists in the default config.
# --------------------------------------------------------------------------------------
READERS = {  # file: names its config objects go by (optim: config.optimizer / config.schedule)
    "train.py": ("config",),
    os.path.join("bcos_jax", "training", "step.py"): ("config",),
    os.path.join("bcos_jax", "training", "optim.py"): ("cfg", "schedule_cfg"),
}


def _config_reads(relpath, names):
    """(dotted keys read as attributes of ``names``, line numbers of ``.get`` calls on them)."""
    import ast

    with open(os.path.join(ROOT, relpath)) as f:
        tree = ast.parse(f.read())
    reads, gets = set(), []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain, root = [], node
        while isinstance(root, ast.Attribute):
            chain.append(root.attr)
            root = root.value
        if isinstance(root, ast.Name) and root.id in names:
            if chain[0] == "get":
                gets.append(node.lineno)
            reads.add((root.id, ".".join(reversed(chain))))
    return reads, gets


def _resolves(node, dotted):
    import ml_collections

    for part in dotted.split("."):
        if not isinstance(node, ml_collections.ConfigDict):
            return hasattr(node, part)  # a method of a value: config.optimizer.name.lower
        if part not in node:
            return hasattr(ml_collections.ConfigDict, part)  # a method: to_dict, keys, ...
        node = node[part]
    return True


@pytest.mark.parametrize("relpath", list(READERS))
def test_config_keys_are_read_without_fallbacks_and_all_have_defaults(relpath):
    from bcos_jax.training import defaults

    reads, gets = _config_reads(relpath, READERS[relpath])
    assert reads, f"no config reads found in {relpath}: the scan is broken"
    assert not gets, (f"{relpath}:{gets}: config.get(...) with a fallback; put the default in "
                      "bcos_jax/training/defaults.py and read the key directly")
    c = defaults.default_config()
    roots = [c] if relpath == "train.py" or "step.py" in relpath else [c.optimizer, c.schedule]
    missing = sorted(f"{name}.{key}" for name, key in reads
                     if key != "get" and not any(_resolves(r, key) for r in roots))
    assert not missing, f"{relpath} reads keys default_config() lacks: {missing}"


def test_complete_fills_missing_keys_from_the_defaults_and_rejects_unknown_ones():
    import ml_collections

    from bcos_jax import visualize
    from bcos_jax.training import defaults

    partial = ml_collections.ConfigDict(dict(model_name="bcos_small_cnn", batch_size=8,
                                             optimizer=dict(lr=0.5), data=dict(image_size=16)))
    c = defaults.complete(partial)
    ref = defaults.default_config()
    assert c.batch_size == 8 and c.optimizer.lr == 0.5 and c.data.image_size == 16
    assert c.optimizer.b2 == ref.optimizer.b2 and c.log_every_steps == ref.log_every_steps
    assert c.data.eval_split == ref.data.eval_split and c.schedule.epoch0_lr is None
    assert defaults.complete(get_config("quickstart", "ci")).to_dict() == \
        get_config("quickstart", "ci").to_dict()  # a recipe is already complete
    with pytest.raises(ValueError, match=r"config.optimizer.lrr: unknown config key; did you mean "
                                         r"'optimizer.lr'\?"):
        defaults.complete(ml_collections.ConfigDict(dict(optimizer=dict(lrr=1.0))))
    # The values the reference recipes use where they say one (B-cos-v2: Lightning's
    # log_every_n_steps default, gradient_to_image's smooth=15, the EMA restarted during
    # the 5 warm-up epochs).
    import inspect

    smooth = inspect.signature(visualize.gradient_to_image).parameters["smooth"].default
    assert (ref.log_every_steps, ref.explain_smooth, ref.ema_warmup_epochs) == (50, smooth, 5)
    assert ref.ema_warmup_epochs == ref.schedule.warmup_epochs
