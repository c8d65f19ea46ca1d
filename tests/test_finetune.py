"""Fine-tuning and transfer: init_from (workdir, model dir, weights file), the logit-layer
re-initialisation, freeze (optax + frozen norms), resume without re-applying init_from, and
the configs/finetune.py recipes. CI-sized: a ~3k-parameter CNN on 16x16 images."""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from training_helpers import get_config, train_module

import bcos_jax
from bcos_jax import models
from bcos_jax.training import transfer

TINY = dict(widths=(8, 16), depth=1)


def _torch_style(variables):
    """A reference-style state_dict of a bcos_small_cnn's variables (what a .pth holds)."""
    sd = {}
    for name, p in variables["params"].items():
        if "kernel" in p:
            # Contiguous: safetensors' save_file writes a transposed view's buffer as is.
            oihw = np.transpose(p["kernel"], (3, 2, 0, 1))
            sd[f"{name}.linear.weight"] = np.ascontiguousarray(oihw)
        if "scale" in p:
            sd[f"{name}.weight"] = np.asarray(p["scale"])
    for name, s in variables.get("batch_stats", {}).items():
        sd[f"{name}.running_var"] = np.asarray(s["var"])
    return sd


def _init(num_classes, seed=0, **over):
    m = models.create("bcos_small_cnn", num_classes=num_classes, **{**TINY, **over})
    return jax.device_get(m.init(jax.random.key(seed), jnp.zeros((1, 16, 16, 6)), train=False))


def test_head_keys_and_probe_pattern():
    assert transfer.head_keys("bcos_small_cnn", dict(TINY, num_classes=5), 16) == {
        "params/classifier/kernel"}
    assert transfer.probe_pattern("bcos_small_cnn") == "^(?!(classifier)/)"
    # Every family without a list of head names: the ResNet's logit layer is 'fc'.
    assert transfer.probe_pattern("resnet18") == "^(?!(fc)/)"


def test_merge_reinitialises_only_the_logit_layer():
    src, fresh = _init(6, seed=1), _init(5, seed=2)
    over = dict(TINY, num_classes=5)
    heads = transfer.head_keys("bcos_small_cnn", over, 16)
    shapes = transfer.shapes_at("bcos_small_cnn", over, 16)
    flat, reinit = transfer.merge_variables(src, fresh, heads, shapes)
    assert reinit == ["params/classifier/kernel"]
    np.testing.assert_array_equal(flat["params/classifier/kernel"],
                                  fresh["params"]["classifier"]["kernel"])
    np.testing.assert_array_equal(flat["params/conv1/kernel"], src["params"]["conv1"]["kernel"])
    np.testing.assert_array_equal(flat["batch_stats/norm0/var"], src["batch_stats"]["norm0"]["var"])
    # Same classes: nothing re-initialised.
    assert transfer.merge_variables(_init(5, seed=1), fresh, heads, shapes)[1] == []
    # Another architecture: an error listing the keys (mis-shaped outside the head, missing).
    other = _init(5, widths=(8, 24))
    with pytest.raises(transfer.TransferError, match=r"mis-shaped \(3\): batch_stats/norm1/var"):
        transfer.merge_variables(other, fresh, heads, shapes)
    # ... also when only the logit layer's input width differs (not a class count).
    wide = _init(5, seed=1)
    wide["params"]["classifier"]["kernel"] = np.zeros((1, 1, 24, 5), np.float32)
    with pytest.raises(transfer.TransferError, match=r"mis-shaped \(1\): params/classifier"):
        transfer.merge_variables(wide, fresh, heads, shapes)
    deeper = _init(5, depth=2)
    with pytest.raises(transfer.TransferError, match=r"unexpected \(\d+\): .*params/conv2/kernel"):
        transfer.merge_variables(deeper, fresh, heads, shapes)


def test_freeze_plan_counts_and_norms():
    v = _init(5)
    plan = transfer.freeze_plan(v, "^(?!classifier/)")
    assert set(plan.frozen) == {"conv0/kernel", "conv1/kernel", "norm0/scale", "norm1/scale"}
    assert plan.frozen_norms == {("norm0",), ("norm1",)}
    assert plan.num_params - plan.num_frozen == 16 * 5
    assert plan.labels["classifier"]["kernel"] == "trained"
    # Kernels only: the norm layers keep training (their scale is not matched).
    assert transfer.freeze_plan(v, "kernel$").frozen_norms == frozenset()
    with pytest.raises(ValueError, match="matches no parameter"):
        transfer.freeze_plan(v, "^layer9/")
    with pytest.raises(ValueError, match="every parameter"):
        transfer.freeze_plan(v, ".")
    with pytest.raises(ValueError, match="not a regular expression"):
        transfer.freeze_plan(v, "(")


def test_init_from_sources_and_errors(tmp_path):
    src = _init(6, seed=3)
    # A .safetensors file of the reference layout, for 6 classes, into a 5-class model.
    from safetensors.numpy import save_file

    path = str(tmp_path / "small.safetensors")
    save_file(_torch_style(src), path)
    got, what = transfer.init_from_variables(path, "bcos_small_cnn", dict(TINY, num_classes=5))
    assert "converted for bcos_small_cnn" in what
    np.testing.assert_array_equal(got["params"]["conv0"]["kernel"],
                                  src["params"]["conv0"]["kernel"])
    assert got["params"]["classifier"]["kernel"].shape == (1, 1, 16, 6)  # its own classes
    # A save_model directory.
    bcos_jax.save_model(str(tmp_path / "saved"), "bcos_small_cnn", dict(TINY, num_classes=6), src)
    got, what = transfer.init_from_variables(str(tmp_path / "saved"), "bcos_small_cnn", {})
    np.testing.assert_array_equal(got["batch_stats"]["norm1"]["var"],
                                  src["batch_stats"]["norm1"]["var"])
    with pytest.raises(transfer.TransferError, match="points nowhere: no file or directory"):
        transfer.init_from_variables(str(tmp_path / "missing" / "run"), "bcos_small_cnn", {})
    with pytest.raises(transfer.TransferError, match="did you mean 'resnet50'"):
        transfer.init_from_variables("resnet5O", "bcos_small_cnn", {})
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(transfer.TransferError, match="not a weights file"):
        transfer.init_from_variables(str(tmp_path / "notes.txt"), "bcos_small_cnn", {})
    with pytest.raises(transfer.TransferError, match="does not fit"):
        transfer.init_from_variables(path, "bcos_small_cnn", dict(widths=(8, 24), num_classes=5))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(transfer.TransferError, match="model.json"):
        transfer.init_from_variables(str(tmp_path / "empty"), "bcos_small_cnn", {})


def test_finetune_recipes():
    c = get_config("finetune", "quickstart2,probe")
    assert c.freeze == transfer.probe_pattern("bcos_small_cnn") and c.data.name == "quickstart2"
    assert get_config("finetune", "quickstart2,scratch").init_from == ""
    r = get_config("finetune", "resnet50")
    assert (r.init_from, r.optimizer.lr, r.data.name) == ("resnet50", 1e-4, "folder:data")
    v = get_config("finetune", "simple_vit_s_patch16_224")
    assert v.optimizer.lr == 1e-3 and v.schedule.warmup_epochs == 5
    with pytest.raises(ValueError, match="'probe' or 'scratch'"):
        get_config("finetune", "resnet50,linear")


# ---------------------------------------------------------------------------------------
# Whole runs of train.py (in-process, sharded over the 8 fake CPU devices of conftest).
# ---------------------------------------------------------------------------------------
def _tiny(cfg, steps):
    cfg.model.widths = TINY["widths"]
    cfg.data.image_size = 16
    cfg.data.num_train, cfg.data.num_eval = 64, 32
    cfg.batch_size, cfg.eval_batch_size = 16, 32
    cfg.num_steps = steps
    cfg.schedule.warmup_steps = 1
    cfg.checkpoint_every_steps, cfg.eval_every_steps, cfg.explain_every_steps = 2, 2, 2
    cfg.log_every_steps = 2
    cfg.localisation = False
    return cfg


def _params(workdir):
    return jax.device_get(bcos_jax.load_checkpoint(workdir, ema=False)[1])


def test_train_probe_from_a_quickstart_run_and_resume(tmp_path):
    train = train_module()
    src = str(tmp_path / "quickstart")
    train.train_and_evaluate(_tiny(get_config("quickstart", "ci"), 2), src)
    source = _params(src)

    run = str(tmp_path / "probe")
    cfg = _tiny(get_config("finetune", "quickstart2,probe"), 4)
    cfg.init_from = src
    cfg.ema_decay, cfg.ema_every, cfg.ema_warmup_epochs = 0.5, 1, 0
    summary = train.train_and_evaluate(cfg, run)
    assert summary["init_from"] == src and summary["reinitialised"] == ["params/classifier/kernel"]
    assert summary["frozen_params"] > 0 and summary["frozen_norm_layers"] == 2
    assert [e["step"] for e in summary["evals"]] == [2, 4]
    with open(os.path.join(run, "classes.json")) as f:
        assert json.load(f) == ["star", "crescent", "frame", "bar", "checker"]
    probe = _params(run)
    # The backbone is the source's, bit for bit (frozen norms kept their statistics too);
    # the 5-class logit layer trained.
    for key in ("conv0", "conv1", "norm0", "norm1"):
        for leaf, value in probe["params"][key].items():
            np.testing.assert_array_equal(value, source["params"][key][leaf])
    for key, value in probe["batch_stats"].items():
        np.testing.assert_array_equal(value["var"], source["batch_stats"][key]["var"])
    assert probe["params"]["classifier"]["kernel"].shape == (1, 1, 16, 5)

    # Resume from step 2 (as after a crash): init_from is not applied over the checkpoint,
    # and the run ends bit for bit where the uninterrupted one did.
    shutil.rmtree(os.path.join(run, "checkpoints", "4"))
    os.remove(os.path.join(run, "summary.json"))
    again = train.train_and_evaluate(cfg, run)
    assert "reinitialised" not in again and again["steps"] == 4
    resumed = _params(run)
    jax.tree.map(np.testing.assert_array_equal, resumed, probe)
    ema = jax.device_get(bcos_jax.load_checkpoint(run, ema=True)[1])
    assert not np.array_equal(ema["params"]["classifier"]["kernel"],
                              probe["params"]["classifier"]["kernel"])


def test_train_init_from_errors_before_training(tmp_path):
    train = train_module()
    cfg = _tiny(get_config("finetune", "quickstart2"), 2)
    cfg.init_from = str(tmp_path / "nowhere")
    with pytest.raises(transfer.TransferError, match="points nowhere"):
        train.train_and_evaluate(cfg, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / "summary.json")
