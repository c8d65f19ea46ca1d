"""examples/tutorial.ipynb runs top to bottom (offline, CPU) and is stored with its outputs.

The notebook is executed with ``BCOS_JAX_TUTORIAL_FAST=1`` (its own switch to fewer
training steps and images: every cell runs, the numbers are smaller) in a kernel of this
interpreter, its runs written under ``tmp_path``; a failing cell fails the test with the
cell's traceback."""
import os

import pytest
from training_helpers import ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = os.path.join(ROOT, "examples", "tutorial.ipynb")


def test_tutorial_is_stored_with_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code), "run the notebook before committing"
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4  # the explanation figures


@pytest.mark.slow
def test_tutorial_runs_top_to_bottom(tmp_path, monkeypatch):
    monkeypatch.setenv("BCOS_JAX_TUTORIAL_FAST", "1")
    monkeypatch.setenv("BCOS_JAX_TUTORIAL_WORKDIR", str(tmp_path))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    # The kernel is a fresh process: one CPU device, not the 8 fake ones of conftest.
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=900, kernel_name="python3",
        resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}})
    client.execute()  # raises CellExecutionError naming the failing cell
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "completeness" in text and "re-initialised ['params/classifier/kernel']" in text
    assert os.path.exists(tmp_path / "probe" / "summary.json")
