"""The shape of the package: one schema for every option, no import cycles, no global side effects."""

import ast
import random
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

import pyrovae
from pyrovae import config as cfg
from pyrovae.cli import build_parser

PACKAGE = Path(pyrovae.__file__).parent


def test_every_option_has_one_flag_and_fit_takes_every_training_option():
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for section, cls in cfg.SECTIONS.items():
        for f in fields(cls):
            if f.metadata["flag"]:
                assert "--" + f.name.replace("_", "-") in help_text, f.name
                assert f.metadata["help"].split(",")[0][:20] in " ".join(help_text.split()), f.name
    defaults = cfg.train_options({})
    assert set(defaults) == {f.name for f in fields(cfg.TrainConfig)}


def test_a_misspelt_option_names_the_nearest_one(tmp_path):
    with pytest.raises(TypeError, match="unknown training option 'lrr' \\(did you mean 'lr'\\?\\)"):
        pyrovae.fit(pyrovae.VAE((4,), latent_dim=1), torch.zeros(8, 4), lrr=0.1)
    toml = tmp_path / "run.toml"
    toml.write_text("[train]\nbatchsize = 32\n")
    with pytest.raises(ValueError, match="unknown key 'batchsize' in \\[train\\] \\(did you mean 'batch_size'\\?\\)"):
        cfg.validate(cfg.load_toml(toml))
    with pytest.raises(ValueError, match="unknown config section \\[trian\\] \\(did you mean 'train'\\?\\)"):
        cfg.validate({"trian": {}})


def _module_level_imports(path):
    """The pyrovae modules a file imports at module level (not inside functions)."""
    tree = ast.parse(path.read_text())
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    if path.name == "__init__.py":
        name = package
    found = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")
            base = base[: len(base) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            found.add(target)
            for alias in node.names:  # "from . import x" may name a module
                found.add(f"{target}.{alias.name}")
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("pyrovae")}
    return name, found


def test_no_import_cycles_between_modules():
    files = sorted(PACKAGE.rglob("*.py"))
    graph = dict(_module_level_imports(path) for path in files)
    graph = {module: {t for t in targets if t in graph and t != module} for module, targets in graph.items()}
    # a package's __init__ re-exporting its modules is not a cycle; a module importing a sibling
    # that imports it back is
    def reaches(start, goal, seen):
        for nxt in graph[start]:
            if nxt == goal:
                return True
            if nxt not in seen and not goal.startswith(nxt + ".") and not nxt.endswith(("pyrovae", "infer", "train")):
                seen.add(nxt)
                if reaches(nxt, goal, seen):
                    return True
        return False

    cycles = [m for m in graph if not m.endswith(("pyrovae", "infer", "train")) and reaches(m, m, set())]
    assert not cycles, cycles


def test_importing_and_plotting_set_no_matplotlib_backend(tmp_path):
    code = (
        "import sys, torch, pyrovae\n"
        "from pyrovae import plots\n"
        "vae = pyrovae.VAE((1, 6, 5), latent_dim=2, hidden=(8,))\n"
        f"plots.save(plots.manifold(vae, n=4), {str(tmp_path / 'm.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "m.png").stat().st_size > 0


def test_fit_leaves_pythons_and_numpys_generators_alone():
    random.seed(5)
    np.random.seed(5)
    python_state, numpy_state = random.getstate(), np.random.get_state()
    pyrovae.fit(pyrovae.VAE((4,), latent_dim=1, hidden=(4,)), torch.rand(16, 4), epochs=1, progress=False, device="cpu")
    assert random.getstate() == python_state
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), numpy_state))


def test_fit_seeds_torch_so_a_seeded_run_repeats():
    x = torch.rand(64, 4)
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        vae = pyrovae.VAE((4,), latent_dim=1, hidden=(4,))
        torch.manual_seed(123)  # whatever the global state was, the run's seed decides
        pyrovae.fit(vae, x, epochs=2, batch_size=16, progress=False, device="cpu", seed=3)
        states.append(vae.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_registration_does_not_patch_classes():
    from pyrovae.likelihoods import Gaussian

    assert "__wrapped__" not in Gaussian.__init__.__dict__
    assert Gaussian(scale=0.5).spec == {"kind": "gaussian", "scale": 0.5}

    class MyGaussian(Gaussian):  # a subclass is not the registered class: its spec is custom
        pass

    assert MyGaussian().spec == {"kind": "custom"}
