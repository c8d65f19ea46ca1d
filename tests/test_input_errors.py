"""Bad inputs get a ValueError that names the problem and the fix (issue 7, reliability):
wrong channels / rank / dtype to a zoo model and to ``explain``, NaN/inf, images outside
[0, 1] to ``add_inverse``, unreadable files in the ``explain`` and ``evaluate`` CLIs."""
import functools
import io
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcos_jax
from bcos_jax import commands, layers, models

KEY = jax.random.key(0)


# --------------------------------------------------------------------------------------
# zoo models: channels, rank, dtype (static checks: also at init, under jit and eval_shape)
# --------------------------------------------------------------------------------------
def _one_per_class_and_version():
    seen, names = set(), []
    for name in models.list_models():
        model = models.create(name)
        key = (type(model).__name__, models.get_spec(name).in_channels)
        if key not in seen:
            seen.add(key)
            names.append(name)
    return names


REPRESENTATIVES = _one_per_class_and_version()


def test_every_zoo_model_checks_the_channels_of_its_spec():
    assert len(REPRESENTATIVES) >= 12  # 8 model classes, B-cos and standard variants
    for name in models.list_models():
        assert models.create(name).in_channels == models.get_spec(name).in_channels, name


@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_wrong_channels_at_init_name_the_fix(name):
    model = models.create(name)
    expected = models.get_spec(name).in_channels
    wrong = 3 if expected == 6 else 6
    x = jnp.zeros((1, 32, 32, wrong))
    with pytest.raises(ValueError, match=f"expects {expected} input channels, got {wrong}") as err:
        jax.eval_shape(lambda: model.init(KEY, x))
    if expected == 6:
        assert "add_inverse" in str(err.value) and "[r, g, b, 1-r, 1-g, 1-b]" in str(err.value)
    else:
        assert "mean/std" in str(err.value)


@functools.cache
def _small():
    model = models.create("bcos_small_cnn", num_classes=4, widths=(8,))
    variables = jax.jit(model.init)(KEY, jnp.zeros((1, 16, 16, 6)))
    rgb = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype(np.float32)
    return model, variables, rgb


def test_rgb_to_a_trained_bcos_model_says_add_inverse():
    model, variables, rgb = _small()
    calls = {
        "apply": lambda x: model.apply(variables, x),
        "jit(apply)": lambda x: jax.jit(model.apply)(variables, x),
        "explain": lambda x: bcos_jax.explain(model, variables, x),
        "explain_fn": lambda x: bcos_jax.explain_fn(model)(variables, x),
    }
    for what, call in calls.items():
        with pytest.raises(
            ValueError, match=r"SmallBcosCNN expects 6 input channels, got 3.*add_inverse"
        ):
            call(rgb)
        assert jax.eval_shape(call, layers.add_inverse(rgb)) is not None, what


def test_wrong_rank_and_integer_images():
    model, variables, rgb = _small()
    x = layers.add_inverse(rgb)
    for call in (lambda a: model.apply(variables, a), lambda a: jax.jit(model.apply)(variables, a)):
        with pytest.raises(ValueError, match=r"NHWC batch.*\(16, 16, 6\).*x\[None\]"):
            call(x[0])
        with pytest.raises(ValueError, match=r"floating-point input, got dtype uint8.*/ 255"):
            call(np.zeros((2, 16, 16, 6), np.uint8))
    with pytest.raises(ValueError, match=r"explain expects x as an NHWC batch.*x\[None\]"):
        bcos_jax.explain(model, variables, x[0])
    with pytest.raises(
        ValueError, match=r"floating-point x, got dtype uint8.*x / 255.*add_inverse"
    ):
        bcos_jax.explain(model, variables, np.zeros((2, 16, 16, 6), np.uint8))


def test_in_channels_override_and_opt_out():
    gray = models.create("bcos_small_cnn", in_channels=2, widths=(8,))
    assert gray.in_channels == 2
    v = jax.eval_shape(lambda: gray.init(KEY, jnp.zeros((1, 16, 16, 2))))
    assert v["params"]["conv0"]["kernel"].shape[-2] == 2
    with pytest.raises(ValueError, match=r"models.create\(\.\.\., in_channels=4\)"):
        jax.eval_shape(lambda: models.create("bcos_small_cnn").init(KEY, jnp.zeros((1, 16, 16, 4))))
    unchecked = models.create("bcos_small_cnn", in_channels=None)
    jax.eval_shape(
        lambda: unchecked.init(KEY, jnp.zeros((1, 16, 16, 4)))
    )  # no check: any channel count


# --------------------------------------------------------------------------------------
# explain: NaN / inf in a concrete input; not checked under jit
# --------------------------------------------------------------------------------------
def test_explain_refuses_non_finite_concrete_input():
    model, variables, rgb = _small()
    x = np.array(layers.add_inverse(rgb))
    x[0, 1, 2, 3] = np.nan
    x[1, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"explain got 2 non-finite value\(s\) \(NaN or inf\)"):
        bcos_jax.explain(model, variables, x)
    # Under jit the values are not looked at (no host sync): NaN in, NaN out.
    e = bcos_jax.explain_fn(model)(variables, x)
    assert np.isnan(np.asarray(e.weights[0])).any()
    # Baselines the attribution code passes stay legal: zeros, constants, noise.
    for ok in (
        np.zeros_like(x),
        np.full_like(x, 0.5),
        np.random.default_rng(1).normal(size=x.shape),
    ):
        bcos_jax.explain(model, variables, ok.astype(np.float32))


# --------------------------------------------------------------------------------------
# add_inverse: images in [0, 1] only (concrete inputs)
# --------------------------------------------------------------------------------------
def test_add_inverse_refuses_normalised_and_unscaled_images():
    rgb = np.random.default_rng(2).uniform(size=(2, 8, 8, 3)).astype(np.float32)
    mean, std = (
        np.array([0.485, 0.456, 0.406], np.float32),
        np.array([0.229, 0.224, 0.225], np.float32),
    )
    with pytest.raises(
        ValueError,
        match=r"expects an image in \[0, 1\], got values in \[-.*not mean/std normalised",
    ):
        layers.add_inverse((rgb - mean) / std)
    with pytest.raises(ValueError, match=r"got values in \[.*, 25\d\.?\d*\].*not 0\.\.255"):
        layers.add_inverse(rgb * 255)
    with pytest.raises(ValueError, match=r"got dtype uint8.*astype\(jnp.float32\) / 255"):
        layers.add_inverse((rgb * 255).astype(np.uint8))
    bad = rgb.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"3 non-finite value\(s\)"):
        layers.add_inverse(bad)
    # Rounding at the edges is fine, so are low-precision images, and traced inputs are not checked.
    edge = np.clip(rgb, 0, 1)
    edge[0, 0, 0] = [1 + 1e-7, -1e-7, 1.0]
    assert layers.add_inverse(edge).shape == (2, 8, 8, 6)
    assert layers.add_inverse(jnp.asarray(rgb, jnp.bfloat16)).dtype == jnp.bfloat16
    assert float(jax.jit(layers.add_inverse)(rgb * 255).max()) > 1


# --------------------------------------------------------------------------------------
# CLI: unreadable / truncated images, corrupt .npz
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ckpt") / "small")
    overrides = {"num_classes": 5, "widths": (8, 16)}
    model = models.create("bcos_small_cnn", **overrides)
    bcos_jax.save_model(
        out, "bcos_small_cnn", overrides, jax.jit(model.init)(KEY, jnp.zeros((1, 32, 32, 6)))
    )
    return out


def _encoded(fmt: str, seed: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
        buf, format=fmt
    )
    return buf.getvalue()


def test_cli_explain_skips_truncated_and_huge_images(tmp_path, checkpoint, capsys, monkeypatch):
    from PIL import Image

    good = tmp_path / "good.png"
    good.write_bytes(_encoded("PNG", 0))
    also_good = tmp_path / "fine.jpg"
    also_good.write_bytes(_encoded("JPEG", 1))
    bad = {}
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg")):
        data = _encoded(fmt, 2)
        bad[f"cut_{ext}"] = tmp_path / f"cut_{ext}.{ext}"
        bad[f"cut_{ext}"].write_bytes(data[: len(data) * 2 // 3])  # truncated mid-stream
    bad["empty"] = tmp_path / "empty.png"
    bad["empty"].write_bytes(b"")
    bad["missing"] = tmp_path / "missing.png"
    out = tmp_path / "expl"
    paths = [str(good), *map(str, bad.values()), str(also_good)]
    assert commands.main(["explain", *paths, "--checkpoint", checkpoint, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "4 of 6 images could not be read" in err
    for stem, p in bad.items():
        assert str(p) in err, stem
        assert not any(f.startswith(stem) for f in os.listdir(out)), stem
    assert err.count("image file is truncated") == 2 and "no such file" in err
    for stem in ("good", "fine"):
        for suffix in ("_explanation.png", "_contributions.png", "_top5.json"):
            assert (out / f"{stem}{suffix}").is_file()
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]  # nothing half-written

    # A decompression bomb (PIL refuses images over 2 * MAX_IMAGE_PIXELS) is skipped too.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    rc = commands.main(
        ["explain", str(good), "--checkpoint", checkpoint, "--out", str(tmp_path / "bomb")]
    )
    assert rc == 1 and "not a readable image" in capsys.readouterr().err


def test_cli_evaluate_refuses_a_corrupt_npz(tmp_path, checkpoint, capsys):
    rng = np.random.default_rng(3)
    images, labels = rng.uniform(size=(4, 32, 32, 3)).astype(np.float32), np.arange(4) % 5
    np.savez(tmp_path / "ok.npz", images=images, labels=labels)
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    np.savez(tmp_path / "scaled.npz", images=images * 255, labels=labels)
    cases = {
        "cut.npz": "not a readable .npz archive (BadZipFile",
        "scaled.npz": "float images must be in [0, 1], got values in",
        "absent.npz": "no such file",
    }
    for fname, message in cases.items():
        out = tmp_path / f"eval_{fname}"
        rc = commands.main(
            [
                "evaluate",
                "--checkpoint",
                checkpoint,
                "--dataset",
                f"npz:{tmp_path / fname}",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        err = capsys.readouterr().err
        assert rc == 2 and message in err and fname in err, (fname, err)
        assert not out.exists()  # refused before anything was written
