"""A run killed with SIGKILL at any moment resumes from its workdir and ends bit-for-bit
where an uninterrupted run ends (subprocesses running train.py on the quickstart data)."""
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
from training_helpers import ROOT

import bcos_jax

STEPS = 60
ARGS = [
    "--config", os.path.join(ROOT, "configs", "quickstart.py") + ":ci",
    f"--config.num_steps={STEPS}", "--config.checkpoint_every_steps=4",
    "--config.checkpoint_every_epochs=0", "--config.eval_every_steps=0",
    "--config.eval_every_epochs=0", "--config.explain_every_epochs=0",
    "--config.log_every_steps=4", "--config.batch_size=16", "--config.eval_batch_size=64",
    "--config.data.num_train=128", "--config.data.num_eval=64", "--config.data.image_size=16",
    "--config.model.widths=(8, 16)", "--config.keep_checkpoints=3", "--config.ema_decay=0.5",
    "--config.ema_every=2", "--config.ema_warmup_epochs=1", "--config.localisation=False",
]


def _env():
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    return env


def _cmd(workdir):
    return [sys.executable, os.path.join(ROOT, "train.py"), "--workdir", workdir] + ARGS


def _steps(workdir):
    d = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    ref, killed = str(tmp_path / "ref"), str(tmp_path / "killed")
    subprocess.run(_cmd(ref), env=_env(), check=True, capture_output=True, timeout=600)

    proc = subprocess.Popen(_cmd(killed), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if any(s >= 8 for s in _steps(killed)):
            break
        time.sleep(0.02)
    assert proc.poll() is None, ("the run ended before it could be killed: "
                                 + proc.stderr.read().decode()[-2000:])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(killed, "summary.json"))
    assert max(_steps(killed)) < STEPS

    out = subprocess.run(_cmd(killed), env=_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "start at step 0" not in out.stderr + out.stdout  # it resumed

    for ema in (False, True):
        _, a = bcos_jax.load_checkpoint(ref, step=STEPS, ema=ema)
        _, b = bcos_jax.load_checkpoint(killed, step=STEPS, ema=ema)
        jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)
