"""The quickstart's CI variant learns the synthetic task with object-focused explanations;
a non-finite loss stops a run and keeps its last good checkpoint."""
import json
import os
import subprocess
import sys

import pytest
from training_helpers import ROOT, get_config, train_module


def test_quickstart_ci_reaches_stated_accuracy(tmp_path):
    workdir = str(tmp_path / "qs")
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=1")
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), "--config",
         os.path.join(ROOT, "configs", "quickstart.py") + ":ci", "--workdir", workdir],
        env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    s = json.load(open(os.path.join(workdir, "summary.json")))
    # Stated in configs/quickstart.py: the CI variant (4 epochs of 1024 images) reaches >= 90 %
    # (measured 95.3 %) and its explanations put most positive evidence on the object.
    assert s["accuracy"] >= 90.0, s
    assert s["localisation"] >= 0.8 and s["localisation"] > 3 * s["localisation_uniform"], s
    assert os.path.getsize(os.path.join(workdir, "explanations.png")) > 1000
    assert os.listdir(os.path.join(workdir, "tensorboard"))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    train = train_module()
    cfg = get_config("quickstart", "ci")
    cfg.data.num_train, cfg.data.num_eval, cfg.data.image_size = 64, 16, 16
    cfg.model.widths = (8,)
    cfg.batch_size, cfg.eval_batch_size = 16, 16
    cfg.num_steps, cfg.checkpoint_every_steps, cfg.log_every_steps = 2, 1, 1
    cfg.eval_every_steps = 2
    cfg.localisation = False
    workdir = str(tmp_path)
    train.train_and_evaluate(cfg, workdir)
    cfg.num_steps = 4
    cfg.optimizer.lr = float("nan")  # resume from step 2; the update of step 3 poisons the weights
    with pytest.raises(train.NonFiniteLossError,
                       match=r"at step 3 .*last good checkpoint is step 2"):
        train.train_and_evaluate(cfg, workdir)
    saved = os.listdir(os.path.join(workdir, "checkpoints"))
    assert sorted(int(n) for n in saved if n.isdigit())[-1] == 2


def test_small_cnn_follows_the_model_contract():
    import math

    import jax
    import jax.numpy as jnp
    import numpy as np

    from bcos_jax import explain, models

    model = models.create("bcos_small_cnn", num_classes=6)
    spec = models.get_spec("bcos_small_cnn")
    assert spec.in_channels == 6 and spec.family == "small"
    x = jax.random.uniform(jax.random.key(0), (3, 24, 24, 3))
    x = jnp.concatenate([x, 1 - x], -1)
    v = model.init(jax.random.key(1), x, train=True)
    _, mutated = model.apply(v, x, train=True, mutable=["batch_stats"])
    v = {"params": v["params"], "batch_stats": mutated["batch_stats"]}
    ex = explain(model, v, x)
    # Linear in explanation mode: contributions + the logit bias give the logit exactly.
    np.testing.assert_allclose(ex.bias, -math.log(5), rtol=1e-4)
    assert ex.weights.shape == x.shape
