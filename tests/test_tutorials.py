"""The tutorials (docs/tutorials/*.md, MyST text notebooks) run as notebooks: each is read with
jupytext and executed cell by cell in a Jupyter kernel (nbclient), as the documentation build
executes them (myst-nb), on the small budgets CI affords (PYROVAE_TUTORIAL_FULL=1: the full
ones). Every notebook holds its own checks (its claims as asserts), so running it is the test."""

import os
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

TUTORIALS = sorted((Path(__file__).resolve().parent.parent / "docs" / "tutorials").glob("*.md"))


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_the_tutorial_runs_as_a_notebook(path, tmp_path, monkeypatch, shared_data):
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
    monkeypatch.setenv("PYROVAE_DATA", shared_data)  # the kernel inherits it: MNIST and Frey Face, no download
    notebook = jupytext.read(path)
    assert notebook.metadata.get("kernelspec", {}).get("name") == "python3"
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    figures = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
               if "image/png" in o.get("data", {})]
    assert figures, f"{path.name} draws no figure"


def test_every_tutorial_is_in_the_documentation():
    index = (Path(__file__).resolve().parent.parent / "docs" / "index.md").read_text()
    assert all(f"tutorials/{p.stem}" in index for p in TUTORIALS)
