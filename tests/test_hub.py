"""Models on disk (bcos_jax.hub), the one JSON writer (bcos_jax.jsonio), the command options.

Training workdirs (step='best', EMA, another mesh) are covered by test_training_checkpoint.py;
the convert/explain round trip with real reference weights by test_zoo.py.
"""
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcos_jax
from bcos_jax import commands, hub, jsonio, models

OVERRIDES = {"num_classes": 3, "widths": (4, 8)}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = models.create("bcos_small_cnn", **OVERRIDES)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 16, 16, 6)))
    out = bcos_jax.save_model(str(tmp_path_factory.mktemp("m") / "small"), "bcos_small_cnn",
                              OVERRIDES, variables)
    return out, variables


def test_to_jsonable_one_convention():
    obj = {
        1: np.float32(0.5), "i": np.int64(3), "b": np.bool_(True), "t": (1, 2.5),
        "a": np.arange(3, dtype=np.int32), "j": jnp.asarray([1.0, jnp.nan]),
        "nan": float("nan"), "inf": -math.inf, "np_inf": np.float64(np.inf), "s": "x", "n": None,
    }
    assert jsonio.to_jsonable(obj) == {
        "1": 0.5, "i": 3, "b": True, "t": [1, 2.5], "a": [0, 1, 2], "j": [1.0, None],
        "nan": None, "inf": None, "np_inf": None, "s": "x", "n": None,
    }
    with pytest.raises(TypeError, match=r"\$\.methods\.bcos\[1\]: a object is not"):
        jsonio.to_jsonable({"methods": {"bcos": [1, object()]}})
    with pytest.raises(TypeError, match="a ndarray is not"):
        jsonio.to_jsonable(np.array(["a"]))


def test_write_json_is_atomic(tmp_path):
    path = str(tmp_path / "summary.json")
    jsonio.write_json(path, {"accuracy": np.float32(0.75), "loss": float("nan")})
    text = open(path).read()
    assert json.loads(text) == {"accuracy": 0.75, "loss": None} and "NaN" not in text
    with pytest.raises(TypeError):  # refused before anything is written: the old file stays
        jsonio.write_json(path, {"accuracy": object()})
    assert json.loads(open(path).read())["accuracy"] == 0.75
    assert os.listdir(tmp_path) == ["summary.json"]


def test_save_and_load_round_trip(saved):
    out, variables = saved
    assert sorted(os.listdir(out)) == ["model.json", "variables"]
    assert hub.read_model_json(out) == ("bcos_small_cnn", {"num_classes": 3, "widths": [4, 8]})
    model, v = bcos_jax.load_checkpoint(out)
    jax.tree.map(np.testing.assert_array_equal, v, variables)
    loaded = hub.load(checkpoint=out)
    assert loaded.name == "bcos_small_cnn" and loaded.spec is models.get_spec("bcos_small_cnn")
    x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 6))
    np.testing.assert_array_equal(jax.jit(loaded.model.apply)(loaded.variables, x),
                                  jax.jit(model.apply)(v, x))


def test_overrides_must_fit_the_weights(saved):
    out, _ = saved
    model, _ = hub.load_checkpoint(out, dtype=jnp.bfloat16)  # no shape changes: accepted
    assert model.dtype == jnp.bfloat16
    needs = r"kernel'\] saved \(1, 1, 8, 3\), the model needs \(1, 1, 8, 7\)"
    with pytest.raises(ValueError, match="do not fit.*" + needs):
        hub.load_checkpoint(out, num_classes=7)


def test_model_json_dtypes_and_errors(tmp_path):
    hub.write_model_json(str(tmp_path), "resnet18", {"dtype": jnp.bfloat16, "num_classes": 10})
    assert hub.read_model_json(str(tmp_path)) == ("resnet18", {"dtype": jnp.dtype("bfloat16"),
                                                               "num_classes": 10})
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        hub.write_model_json(str(tmp_path), "resnet18", {"act": object()})
    (tmp_path / "model.json").write_text('{"model": "resnet18", "overr')
    with pytest.raises(ValueError, match="not a model.json"):
        hub.read_model_json(str(tmp_path))
    (tmp_path / "model.json").write_text('{"model": "resnet18"}')
    with pytest.raises(FileNotFoundError, match="neither variables/"):
        hub.load_checkpoint(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="neither a training workdir"):
        hub.load_checkpoint(str(tmp_path / "absent"))
    (tmp_path / "checkpoints").mkdir()  # a workdir before its first checkpoint
    with pytest.raises(FileNotFoundError, match="no checkpoints in"):
        hub.load_checkpoint(str(tmp_path))
    with pytest.raises(ValueError, match="step must be None, 'latest', 'best' or a step number"):
        hub.load_checkpoint(str(tmp_path), step="last")


def test_load_needs_exactly_one_source(saved):
    out, _ = saved
    with pytest.raises(ValueError, match="not both"):
        hub.load(checkpoint=out, model="resnet18", weights="w.pth")
    with pytest.raises(ValueError, match="a model name with a weights file"):
        hub.load(model="resnet18")
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        hub.load(model="bcos_small_cnn", weights=str(out) + "/absent.safetensors")


def test_every_loading_command_takes_the_same_model_options(saved, capsys):
    out, _ = saved
    parser = commands.build_parser()
    for argv in (["convert", "--model", "m", "--weights", "w", "--out", "o"],
                 ["explain", "x.png", "--checkpoint", "c", "--out", "o"],
                 ["evaluate", "--model", "m", "--weights", "w", "--out", "o"]):
        args = parser.parse_args(argv + ["--num-classes", "7"])
        assert args.num_classes == 7 and args.model in (None, "m"), argv
    # A model source that does not fit is one clear error line, exit status 2.
    rc = commands.main(["explain", "x.png", "--checkpoint", out, "--num-classes", "7",
                        "--out", str(os.path.dirname(out))])
    assert rc == 2 and "do not fit the model" in capsys.readouterr().err
    rc = commands.main(["evaluate", "--checkpoint", out, "--model", "m", "--out", "o"])
    assert rc == 2 and "not both" in capsys.readouterr().err


def test_console_script_is_the_commands_main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml")) as f:
        scripts = f.read().split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    assert 'bcos-jax = "bcos_jax.commands:main"' in scripts
