"""The model zoo as a whole: names, published figures, conversion errors, untrusted files, CLI."""
import inspect
import json
import pickle

from tests.torch_ref import bcos, randomize_norm_stats, torch

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcos_jax
from bcos_jax import commands, convert, models
from bcos_jax.commands import common
from bcos_jax.data.augment import eval_transform

# docs/recipes.md §8, the v2 model zoo: name -> (top-1, params in millions as published).
PUBLISHED = {
    "resnet18": (68.736, 11.69),
    "resnet34": (72.284, 21.80),
    "resnet50": (75.882, 25.54),
    "resnet101": (76.532, 44.50),
    "resnet152": (76.484, 60.13),
    "resnext50_32x4d": (75.820, 25.00),
    "densenet121": (73.612, 7.95),
    "densenet161": (76.622, 28.58),
    "densenet169": (75.186, 14.08),
    "densenet201": (75.480, 19.91),
    "vgg11_bnu": (69.310, 132.86),
    "convnext_tiny": (77.488, 28.54),
    "convnext_base": (79.650, 88.47),
    "convnext_tiny_bnu": (76.826, 28.54),
    "convnext_base_bnu": (80.142, 88.47),
    "densenet121_long": (77.302, 7.95),
    "resnet50_long": (79.468, 25.54),
    "resnet152_long": (80.144, 60.13),
    "simple_vit_ti_patch16_224": (59.960, 5.80),
    "simple_vit_s_patch16_224": (69.246, 22.28),
    "simple_vit_b_patch16_224": (74.408, 86.90),
    "simple_vit_l_patch16_224": (75.060, 178.79),
    "vitc_ti_patch1_14": (67.260, 5.32),
    "vitc_s_patch1_14": (74.504, 20.88),
    "vitc_b_patch1_14": (77.152, 81.37),
    "vitc_l_patch1_14": (77.782, 167.44),
}
# Published parameter counts that differ from the actual reference modules (noted in the specs).
PUBLISHED_PARAMS_DIFFER = {"simple_vit_s_patch16_224", "vitc_b_patch1_14"}


def test_every_reference_entry_point_has_a_model():
    entry = [
        n
        for n, f in inspect.getmembers(bcos.models.pretrained, inspect.isfunction)
        if f.__module__ == bcos.models.pretrained.__name__
        and not n.startswith("_")
        and n not in ("register", "list_available")
    ]
    assert len(entry) >= 30
    missing = sorted(set(entry) - set(models.list_models()))
    assert not missing, missing


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_accuracy_and_parameters(name):
    spec = models.get_spec(name)
    top1, params_m = PUBLISHED[name]
    assert spec.top1 == pytest.approx(top1)
    assert spec.version == "v2" and spec.in_channels == 6
    assert spec.weights_url and spec.weights_url.startswith("https://")
    if name not in PUBLISHED_PARAMS_DIFFER:
        assert round(spec.params / 1e6, 2) == pytest.approx(params_m, abs=0.011)


def test_every_model_declares_its_parameter_count_and_version():
    for name in models.list_models():
        spec = models.get_spec(name)
        assert spec.params and spec.params > 0, name
        assert spec.version in ("v1", "v2", "standard"), name
        assert name.startswith("v1_") == (spec.version == "v1"), name
        assert name.startswith("standard_") == (spec.version == "standard"), name
        assert spec.in_channels == (3 if spec.version == "standard" else 6), name


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match="did you mean.*resnet50"):
        models.create("resnet_50")


# --------------------------------------------------------------------------------------
# conversion: errors that name keys, untrusted files, safetensors, checkpoints, CLI
# --------------------------------------------------------------------------------------
NAME = "cifar10_resnet20"


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    ref = bcos.models.resnet.cifar10_resnet20(num_classes=10)
    randomize_norm_stats(ref)
    return ref.eval()


def test_conversion_errors_name_the_offending_keys(reference):
    sd = dict(reference.state_dict())
    first = "conv1.linear.weight"
    assert first in sd
    removed = sd.pop(first)
    sd["bogus.linear.weight"] = removed
    norm_key = "layer3.2.bn2.weight"
    sd[norm_key] = torch.ones(3)
    with pytest.raises(convert.ConversionError) as err:
        convert.from_torch(NAME, sd)
    msg = str(err.value)
    assert "params/conv1/kernel" in msg and "missing" in msg
    assert "bogus.linear.weight" in msg and "unexpected" in msg
    assert norm_key in msg and "mis-shaped" in msg
    assert err.value.missing and err.value.unexpected and err.value.misshaped


class _Payload:
    """Unpickling this would create a marker file (it must never run)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_code_is_refused_without_running_it(tmp_path, reference):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    sd = dict(reference.state_dict())
    sd["payload"] = _Payload(str(marker))
    with open(path, "wb") as f:
        pickle.dump(sd, f)  # a legacy (non-zip) torch file: torch.load reads it
    torch.save({"state_dict": sd}, tmp_path / "evil_zip.pth")
    for p in (path, tmp_path / "evil_zip.pth"):
        with pytest.raises(ValueError, match="refused"):
            convert.load_torch_checkpoint(str(p))
    assert not marker.exists()


def test_pth_and_safetensors_give_the_same_variables(tmp_path, reference):
    from safetensors.torch import save_file

    torch.save(reference.state_dict(), tmp_path / "w.pth")
    save_file(
        {k: v.contiguous() for k, v in reference.state_dict().items()},
        str(tmp_path / "w.safetensors"),
    )
    a = convert.from_torch(NAME, convert.load_torch_checkpoint(str(tmp_path / "w.pth")))
    b = convert.from_torch(NAME, convert.load_torch_checkpoint(str(tmp_path / "w.safetensors")))
    c = convert.from_torch(NAME, reference.state_dict())  # torch tensors directly
    jax.tree.map(np.testing.assert_array_equal, a, b)
    jax.tree.map(np.testing.assert_array_equal, a, c)
    with pytest.raises(FileNotFoundError):
        convert.load_torch_checkpoint(str(tmp_path / "absent.pth"))


def _images(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(40, 52), (32, 32)]):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return paths, str(bad)


def test_cli_convert_load_and_explain(tmp_path, reference, capsys):
    torch.save(reference.state_dict(), tmp_path / "w.pth")
    out_dir = tmp_path / "ckpt"
    assert (
        commands.main(
            [
                "convert",
                "--model",
                NAME,
                "--weights",
                str(tmp_path / "w.pth"),
                "--out",
                str(out_dir),
            ]
        )
        == 0
    )
    model, variables = bcos_jax.load_checkpoint(str(out_dir))
    direct = convert.from_torch(NAME, reference.state_dict())
    jax.tree.map(np.testing.assert_array_equal, variables, direct)

    good, bad = _images(tmp_path)
    expl_dir = tmp_path / "expl"
    rc = commands.main(
        ["explain", *good, bad, "--checkpoint", str(out_dir), "--out", str(expl_dir)]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "broken.png" in err and "not a readable image" in err
    for stem in ("img0", "img1"):
        assert (expl_dir / f"{stem}_explanation.png").exists()
        assert (expl_dir / f"{stem}_contributions.png").exists()
        rec = json.loads((expl_dir / f"{stem}_top5.json").read_text())
        assert len(rec["top5"]) == 5 and rec["target"] == rec["top5"][0]["class"]
    assert not (expl_dir / "broken_top5.json").exists()

    # The CLI's numbers are those of the library on the same eval-transformed input.
    spec = models.get_spec(NAME)
    x = common.encode_for(
        spec, eval_transform(common.load_image(good[0]), spec.resize, spec.input_size)
    )[None]
    e = bcos_jax.explain(model, variables, jnp.asarray(x))
    rec = json.loads((expl_dir / "img0_top5.json").read_text())
    assert rec["target"] == int(e.targets[0])
    np.testing.assert_allclose(rec["bias"], float(e.bias[0]), rtol=1e-5, atol=1e-6)

    # --model/--weights path, explicit target.
    rc = commands.main(
        [
            "explain",
            good[1],
            "--model",
            NAME,
            "--weights",
            str(tmp_path / "w.pth"),
            "--target",
            "3",
            "--out",
            str(tmp_path / "e2"),
        ]
    )
    assert rc == 0 and json.loads((tmp_path / "e2" / "img1_top5.json").read_text())["target"] == 3


def test_cli_models_table(capsys):
    assert commands.main(["models", "--version", "v2"]) == 0
    out = capsys.readouterr().out
    assert "| `resnet50` | resnet | v2 | 25,538,880 |" in out and "v1_resnet34" not in out


@pytest.mark.parametrize("shape, resize, crop", [
    ((300, 410), 256, 224),  # the ImageNet eval transform, landscape
    ((410, 300), 256, 224),  # portrait
    ((20, 27), 36, 32),  # a small image is upscaled first
    ((20, 27), 24, 32),  # still smaller than the crop after the resize: zero-padded
    ((40, 31), 0, 32),  # no resize, one side smaller than the crop: padded on that side only
])
def test_eval_transform_matches_torchvision(shape, resize, crop):
    # One eval transform for the commands and the input pipeline, torchvision's on PIL.
    from PIL import Image
    from torchvision import transforms

    from bcos_jax.data import recipes

    img = np.random.default_rng(1).integers(0, 255, (*shape, 3), dtype=np.uint8)
    steps = ([transforms.Resize(resize)] if resize else []) + [transforms.CenterCrop(crop)]
    ref = transforms.Compose([*steps, transforms.ToTensor()])(Image.fromarray(img))
    ours = eval_transform(img, resize, crop)
    assert ours.shape == (crop, crop, 3) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref.numpy().transpose(1, 2, 0), atol=1e-6)
    piped, _ = recipes.ImageTransform("eval", crop, eval_resize=resize, eval_crop=crop)(img)
    np.testing.assert_array_equal(piped, ours)  # the input pipeline's eval images are the same
    with pytest.raises(ValueError, match="uint8 RGB"):
        eval_transform(img.astype(np.float32), resize, crop)
