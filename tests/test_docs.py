"""Everything shown runs: every Python block of the README and docs/ (on a tiny budget), and
every script in examples/ under PYROVAE_SMOKE=1, its output files checked."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pyrovae

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!--[^>]*not run[^>]*-->\s*)?```python\n(.*?)```", re.S)


def python_blocks(page):
    """The page's Python blocks, except those marked ``<!-- not run: why -->``."""
    return [code for skip, code in BLOCK.findall(page.read_text()) if not skip]


def test_pages_have_blocks_and_markers_are_explained():
    assert python_blocks(ROOT / "README.md")
    for page in PAGES:
        for marker in re.findall(r"<!--[^>]*not run[^>]*-->", page.read_text()):
            assert ":" in marker, f"{page.name}: say why a block is not run"


@pytest.fixture
def tiny_budget(monkeypatch, shared_data, tmp_path, binary_npy):
    """Datasets cut to a few hundred examples, one epoch, few importance samples; a run folder
    runs/mnist2d where the README loads one."""
    monkeypatch.setenv("PYROVAE_DATA", shared_data)
    monkeypatch.chdir(tmp_path)
    load, fit = pyrovae.datasets.load, pyrovae.fit
    log_likelihood, check_bounds = pyrovae.log_likelihood, pyrovae.check_bounds

    def small(*args, **kwargs):
        dataset = load(*args, **kwargs)
        dataset.data = dataset.data[:256]
        if dataset.targets is not None:
            dataset.targets = dataset.targets[:256]
        return dataset

    monkeypatch.setattr(pyrovae.datasets, "load", small)
    monkeypatch.setattr(pyrovae, "fit", lambda *a, **k: fit(*a, **{**k, "epochs": 1, "progress": False}))
    monkeypatch.setattr(pyrovae, "log_likelihood", lambda *a, **k: log_likelihood(*a, **{**k, "num_samples": 10}))
    monkeypatch.setattr(pyrovae, "check_bounds",
                        lambda vae, x, ks=(1, 10), **k: check_bounds(vae, x, ks=[q for q in ks if q <= 10], **k))
    from pyrovae.cli import main

    assert main(["train", "--dataset", "mnist", "--latent-dim", "2", "--epochs", "1", "--out", "runs/mnist2d",
                 "--no-progress", "--no-plots"]) == 0
    yield


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_every_python_block_runs(tiny_budget, page):
    namespace = {"__name__": f"docs_{page.stem}"}
    for code in python_blocks(page):
        exec(compile(code, str(page), "exec"), namespace)
    if page.name == "priors-and-likelihoods.md":  # the page registers a prior: leave the registry as found
        pyrovae.priors.PRIORS.unregister("logistic")


EXAMPLES = {
    "train_mnist.py": ["mnist_manifold.png"],
    "frey_faces.py": ["frey_manifold.png"],
    "swap_priors.py": [],
    "svi_by_hand.py": [],
    "svi_classic.py": [],
    "train_lightning.py": ["lightning_vae.pt"],
    "cvae_quadrants.py": ["cvae_completions_1.png", "cvae_completions_3.png"],
    "semi_supervised_m2.py": ["m2_analogies.png"],
    "two_layer_vae.py": ["hvae_samples.png"],
    "prodlda.py": ["prodlda_held_out.json"],
}


def test_every_example_is_listed():
    assert {p.name for p in (ROOT / "examples").glob("*.py")} - {"smoke.py"} == set(EXAMPLES)


@pytest.mark.parametrize("script", sorted(EXAMPLES))
def test_every_example_runs_in_smoke_mode(script, shared_data, tmp_path):
    if script == "train_lightning.py":
        pytest.importorskip("lightning")
    env = {**os.environ, "PYROVAE_SMOKE": "1", "PYROVAE_DATA": shared_data, "OMP_NUM_THREADS": "2"}
    result = subprocess.run([sys.executable, str(ROOT / "examples" / script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), "an example says what it did"
    for name in EXAMPLES[script]:
        assert (tmp_path / name).stat().st_size > 0, name
