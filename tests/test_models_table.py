"""docs/MODELS.md is generated from the registry; the generator's parameter column is computed."""
import os

import pytest

from bcos_jax import models
from bcos_jax.models import table

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "MODELS.md")


def test_models_md_is_generated_from_the_registry():
    with open(DOC, encoding="utf-8") as f:
        current = f.read()
    expected = table.document()
    assert current == expected, "docs/MODELS.md is stale: run python -m bcos_jax.models.table"
    for name in models.list_models():
        assert f"| `{name}` |" in current, name
    assert "| ? |" not in current


@pytest.mark.parametrize("name", ["bcos_small_cnn", "cifar10_resnet20", "v1_cifar10_9l_b150"])
def test_params_column_is_the_module_count(name):
    # eval_shape of three small models here; tests/test_models_*.py check every other count
    # against the reference modules.
    assert table.count_params(name) == models.get_spec(name).params


def test_check_fails_on_a_stale_file_and_the_writer_refuses_wrong_counts(tmp_path, capsys):
    path = tmp_path / "MODELS.md"
    path.write_text(table.document().replace("| `resnet50` | resnet |", "| `resnet50` | resnet2 |"))
    assert table.main(["--check", "--out", str(path)]) == 1
    assert table.main(["--check", "--out", str(tmp_path / "missing.md")]) == 1

    # The writer with a stand-in counter (the real one takes a minute for the whole zoo).
    recorded = table.zoo_params()
    assert table.main(["--out", str(path)], count=lambda n: recorded[n]) == 0
    assert path.read_text() == table.document()
    assert table.main(["--check", "--out", str(path)]) == 0
    off = lambda n: recorded[n] + (n == "resnet50")
    before = path.read_text()
    assert table.main(["--out", str(path)], count=off) == 1
    assert "resnet50: module 25,538,881" in capsys.readouterr().err
    assert path.read_text() == before


def test_a_missing_count_is_an_error_not_a_question_mark():
    params = dict(table.zoo_params(), resnet50=None)
    with pytest.raises(ValueError, match="resnet50.*zoo.py"):
        table.markdown(params)
