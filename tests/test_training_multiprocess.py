"""Two processes on localhost (CPU collectives over gloo, jax.distributed) train exactly
like one process with the same global batch."""
import os
import socket
import subprocess
import sys

import jax
import numpy as np
from training_helpers import ROOT

import bcos_jax

STEPS = 6
ARGS = [
    "--config", os.path.join(ROOT, "configs", "quickstart.py") + ":ci",
    f"--config.num_steps={STEPS}", "--config.checkpoint_every_steps=3",
    "--config.eval_every_steps=6",
    "--config.explain_every_epochs=0", "--config.log_every_steps=3", "--config.batch_size=16",
    "--config.eval_batch_size=32", "--config.data.num_train=64", "--config.data.num_eval=40",
    "--config.data.image_size=16", "--config.model.widths=(8, 16)", "--config.localisation=False",
    "--config.ema_decay=0.5", "--config.ema_every=1", "--config.ema_warmup_epochs=0",
]


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(devices):
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def test_two_processes_equal_one(tmp_path):
    single, multi = str(tmp_path / "single"), str(tmp_path / "multi")
    train = os.path.join(ROOT, "train.py")
    one = subprocess.run([sys.executable, train, "--workdir", single] + ARGS, env=_env(1),
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]

    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, train, "--workdir", multi, f"--coordinator_address=localhost:{port}",
             "--num_processes=2", f"--process_id={i}"] + ARGS,
            env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    for ema in (False, True):
        _, a = bcos_jax.load_checkpoint(single, step=STEPS, ema=ema)
        _, b = bcos_jax.load_checkpoint(multi, step=STEPS, ema=ema)
        jax.tree.map(lambda x, y: np.testing.assert_allclose(
            np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6), a, b)
    import json

    s1 = json.load(open(os.path.join(single, "summary.json")))
    s2 = json.load(open(os.path.join(multi, "summary.json")))
    assert s2["processes"] == 2 and s2["devices"] == 4 and s2["val_count"] == s1["val_count"] == 40
    assert abs(s1["val_top1"] - s2["val_top1"]) < 1e-6
