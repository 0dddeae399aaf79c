import os

import nbformat
import pytest
from helpers import write_fake_fashion_mnist
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "examples", "quickstart.ipynb")


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None


@pytest.mark.slow
def test_quickstart_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    data = write_fake_fashion_mnist(str(tmp_path / "fm"), n_train=600, n_test=200)
    monkeypatch.setenv("QUICKSTART_SMOKE", "1")
    monkeypatch.setenv("QUICKSTART_DATA_DIR", data)
    monkeypatch.setenv("QUICKSTART_WORKDIR", str(tmp_path / "w"))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("PYTHONPATH", ROOT)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": ROOT}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "R_sub" in text and "precision@1" in text and "multiply-adds per query" in text
    # the trade-off plot is shown inline
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert (tmp_path / "w" / "codes" / "metadata.json").exists()
