"""``bcos_jax.platform.skip_absent_tpu``: quiet CPU fallback when libtpu has no TPU to drive."""
import os
import subprocess
import sys

import pytest

from bcos_jax import platform


def _run(code: str, **env_changes) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    env.update(env_changes)
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


def test_import_is_quiet_and_on_cpu_without_a_tpu():
    if platform._accelerators_visible() is not False:
        pytest.skip("this machine has an accelerator (or JAX's probes are unavailable)")
    import importlib.util

    if importlib.util.find_spec("libtpu") is None:
        pytest.skip("libtpu is not installed (the tpu extra)")
    res = _run("import bcos_jax, jax; print(jax.devices()[0].platform, jax.config.jax_platforms)")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["cpu", "cpu"]
    assert "TPU" not in res.stderr, res.stderr  # no libtpu initialisation errors


def test_an_explicit_choice_is_left_alone(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert platform.skip_absent_tpu() is False
    res = _run("import jax; jax.config.update('jax_platforms', 'cpu,tpu'); import bcos_jax; "
               "print(jax.config.jax_platforms)")
    assert res.stdout.strip() == "cpu,tpu", res.stderr


def test_no_decision_without_the_probes(monkeypatch):
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.setattr(platform, "_accelerators_visible", lambda: None)
    assert platform.skip_absent_tpu() is False
    monkeypatch.setattr(platform, "_accelerators_visible", lambda: True)
    assert platform.skip_absent_tpu() is False
