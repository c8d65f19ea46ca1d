"""The accelerator benchmark and the TPU estimates run end to end on tiny sizes (so that the
scripts cannot rot between the rare runs on an accelerator)."""

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, tmp_path, timeout=900):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


def test_accelerator_quick_covers_every_section(tmp_path):
    out = _run(
        ["benchmarks/accelerator.py", "--quick", "--profile", "all", "--out", str(tmp_path)],
        tmp_path,
    )
    res = json.loads((tmp_path / "accelerator.json").read_text())
    assert res["quick"] and res["environment"]["jax"] and res["environment"]["torch"]
    kinds = {(r["section"], r["model"], r["framework"], r["variant"]) for r in res["rows"]}
    for name in (
        "resnet18",
        "standard_resnet18",
        "simple_vit_ti_patch16_224",
        "standard_simple_vit_ti_patch16_224",
    ):
        assert ("train", name, "bcos_jax", "jit") in kinds
    for name in ("resnet18", "simple_vit_ti_patch16_224"):
        assert ("train", name, "torch bcos", "eager") in kinds
        assert ("explain", name, "bcos_jax", "jit") in kinds
        assert ("explain", name, "torch bcos", "eager") in kinds
        compiled = ("train", name, "torch bcos", "torch.compile(eager)") in kinds
        assert compiled or any(f"torch.compile of {name} failed" in n for n in res["notes"])
    for r in res["rows"]:
        assert r["images_per_s"] > 0 and math.isfinite(r["images_per_s"]), r
        assert r["seconds"]["n"] >= 2 and r["seconds"]["min"] <= r["seconds"]["median"], r
        if r["framework"] == "bcos_jax" and r["section"] == "train":
            assert r["peak_memory_bytes"] > 0, r  # compiled memory analysis
    # One B-cos-vs-standard target and four bcos_jax-vs-torch targets, each printed and profiled.
    assert len(res["targets"]) == 5
    md = (tmp_path / "accelerator.md").read_text()
    for t in res["targets"]:
        word = "PASS" if t["pass"] else "MISS"
        assert t["pass"] == (t["ratio"] >= t["threshold"])
        assert f"{word} {t['name']}: {t['ratio']:.2f}x" in out
        assert f"**{word}** {t['name']}" in md
        profile = (tmp_path / t["profile"]).read_text()
        assert "top 25 ops:" in profile and "categories:" in profile, profile
    assert "| train | `resnet18` | bcos_jax | jit | 4 |" in md and md in out


def test_accelerator_rejects_missing_out(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, "benchmarks/accelerator.py", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "--out" in proc.stderr


def _libtpu():
    try:
        import libtpu  # noqa: F401 - only whether it imports
    except ImportError:
        return False
    return True


@pytest.mark.skipif(
    not _libtpu(), reason="libtpu is not importable: pip install 'jax[tpu]==0.10.2' (extra 'tpu')"
)
def test_tpu_estimates_quick_row(tmp_path):
    sys.path.insert(0, ROOT)
    from benchmarks import tpu_estimates

    out = _run(["benchmarks/tpu_estimates.py", "--quick", "--out", str(tmp_path)], tmp_path)
    (r,) = json.loads((tmp_path / "tpu_estimates.json").read_text())
    assert r["chip"] == "v5e" and r["chips"] == 1 and r["global_batch"] == 16
    assert r["flops_per_chip"] > 0 and r["bytes_per_chip"] > 0
    assert r["memory"]["fits"] and 0 < r["memory"]["total_gib"] < 1
    # The roofline: the slower of compute and HBM traffic at 40 % of the v5e's peaks.
    t = max(r["flops_per_chip"] / (197e12 * 0.4), r["bytes_per_chip"] / (819e9 * 0.4))
    assert r["step_seconds"] == pytest.approx(t)
    assert r["hours"] == pytest.approx(t * r["total_steps"] / 3600)
    assert r["total_steps"] == 4 * r["steps_per_epoch"]  # quickstart:ci, 4 epochs
    md = (tmp_path / "tpu_estimates.md").read_text()
    assert "| `quickstart:ci` | v5e:2x2 (1) | 16 (16) | float32 |" in md and md in out
    # --render rebuilds the same table from the JSON without compiling, at another utilisation.
    again = tpu_estimates.main(
        ["--render", str(tmp_path / "tpu_estimates.json"), "--utilisation", "0.2"]
    )
    assert again[0]["step_seconds"] == pytest.approx(2 * r["step_seconds"])


def test_tpu_estimates_bad_row_is_named():
    sys.path.insert(0, ROOT)
    from benchmarks import tpu_estimates

    with pytest.raises(ValueError, match="'resnet50-v5e' is not 'config:arg@generation:layout"):
        tpu_estimates.parse_row("resnet50-v5e")
    assert tpu_estimates.parse_row("cifar10_v2:resnet20@v5e:2x2/1")["chips"] == 1
