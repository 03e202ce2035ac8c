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


def _imports(path):
    """(module name, {imported pyrovae module: "module" or "function"}) of a file: every pyrovae
    module it imports, and whether at module level or inside a function or class body. ``from .
    import x`` counts as importing module x where x is one, else the package it names."""
    tree = ast.parse(path.read_text())
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
               for p in PACKAGE.rglob("*.py")}
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    top_level = {id(node) for node in tree.body}
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            named = {f"{target}.{alias.name}" for alias in node.names} & modules
            targets = named if named and len(named) == len(node.names) else named | {target}
        elif isinstance(node, ast.Import):
            targets = {alias.name for alias in node.names}
        else:
            continue
        where = "module" if id(node) in top_level else "function"
        for target in targets & modules - {name}:
            if found.get(target) != "module":
                found[target] = where
    return name, found


def _import_graph():
    return dict(_imports(path) for path in sorted(PACKAGE.rglob("*.py")))


def test_no_import_cycles_between_modules_at_any_level():
    """A circle held apart only by import order (one side importing inside a function) is a
    circle: the graph has every import, module-level or not."""
    graph = {module: set(targets) for module, targets in _import_graph().items()}

    def path_back(start, goal, seen):
        for nxt in graph[start]:
            # a package's __init__ re-exporting its own modules is not a cycle
            if nxt == goal and not goal.startswith(start + "."):
                return [start, nxt]
            if nxt not in seen and not goal.startswith(nxt + ".") and not start.startswith(nxt + "."):
                seen.add(nxt)
                found = path_back(nxt, goal, seen)
                if found:
                    return [start] + found
        return None

    cycles = {m: path_back(m, m, set()) for m in graph}
    cycles = {m: c for m, c in cycles.items() if c and not any(m.startswith(o + ".") or o.startswith(m + ".")
                                                                 for o in c[1:-1])}
    assert not cycles, cycles


def test_no_import_inside_a_function_dodges_the_graph():
    """Optional third-party packages are imported where they are used; pyrovae's own modules
    never are (that is how a circle hides)."""
    inside = sorted(f"{module} -> {target}" for module, targets in _import_graph().items()
                    for target, where in targets.items() if where == "function")
    assert not inside, inside


LAYERS = {  # what each part of the inference side may import from the others: arrows point down
    "pyrovae.protocol": set(),
    "pyrovae.program": {"pyrovae.protocol"},
    "pyrovae.fast": {"pyrovae.protocol"},
    "pyrovae.infer": {"pyrovae.protocol", "pyrovae.program"},
    "pyrovae.models": {"pyrovae.protocol", "pyrovae.infer", "pyrovae.fast"},
    "pyrovae.estimate": {"pyrovae.protocol", "pyrovae.program", "pyrovae.infer", "pyrovae.fast"},
}


def test_the_inference_side_imports_downward_only():
    def part(module):
        return next((layer for layer in LAYERS if module == layer or module.startswith(layer + ".")), None)

    upward = sorted(f"{module} -> {target}" for module, targets in _import_graph().items() for target in targets
                    if part(module) and part(target) and part(target) != part(module)
                    and part(target) not in LAYERS[part(module)])
    assert not upward, upward


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


def test_the_protocol_declares_and_imports_neither_torch_nor_pyro():
    """Anything may read the protocol (the config schema, which needs no torch); the tracing of a
    user's program lives in pyrovae.program."""
    tree = ast.parse((PACKAGE / "protocol.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and not node.level}
    assert not imported & {"torch", "pyro"}, imported
