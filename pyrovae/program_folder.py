"""A user's own Pyro program on the command line: ``pyrovae evaluate|plot|report OUT --program
file.py:NAME --weights FILE --dataset NAME`` loads the program (a class or factory called with the
``--program-arg key=value`` pairs), its weights (a state dict, read with ``weights_only=True``)
and the data, and writes into folder OUT what a run folder gets: ``evaluation.json`` and
``jensen_gap.png``, the figures, ``report.html``, and ``program.toml`` saying what was evaluated."""

import importlib.util
import sys
from pathlib import Path

import torch

from . import config as cfg
from . import datasets, distributed, plots
from .estimate import METHODS, evaluate_examples
from .program import as_program
from .report import write_report
from .run_folder import RunFolder, atomic_write_text
from .validation import require_positive_int

__all__ = ["load_program", "evaluate_program", "plot_program", "report_program", "PROGRAM_PLOT_KINDS"]

PROGRAM_PLOT_KINDS = ("manifold", "scatter", "reconstructions", "samples", "interpolation")


def _import_file(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--program: no file {str(path)!r}")
    name = f"pyrovae_user_program_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look a module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise ValueError(f"--program: importing {str(path)!r} failed: {type(error).__name__}: {error}") from None
    return module


def load_program(spec: str, program_args=None, weights=None, device="cpu"):
    """The object ``NAME(**program_args)`` of ``spec`` = ``path/to/file.py:NAME`` (a class or a
    factory), its parameters loaded from ``weights`` (a state dict file, read with
    ``weights_only=True``), in eval mode, on ``device``."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"--program takes path/to/file.py:NAME (a class or factory in that file); got {spec!r}")
    path, name = spec.rsplit(":", 1)
    module = _import_file(path)
    factory = getattr(module, name, None)
    if not callable(factory):
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise ValueError(f"--program: {path!r} has no class or factory {name!r}; it defines {found}")
    try:
        obj = factory(**(program_args or {}))
    except TypeError as error:
        raise ValueError(f"--program: {name}(**{program_args or {}}) failed: {error} (pass its arguments as "
                         "--program-arg key=value)") from None
    as_program(obj)  # the named error of an object without model and guide
    if weights is not None:
        if not isinstance(obj, torch.nn.Module):
            raise ValueError(f"--weights: {name} made a {type(obj).__name__}, not an nn.Module with parameters to load")
        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(f"--weights: no file {str(weights)!r}")
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(f"--weights: {str(weights)!r} is not a state dict torch.load reads with weights_only=True "
                             f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict) and \
                not any(torch.is_tensor(v) for v in state.values()):
            state = state["model"]  # a pyrovae checkpoint's weights
        try:
            obj.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as error:
            raise ValueError(f"--weights: {str(weights)!r} does not fit {name}: {error}") from None
    if isinstance(obj, torch.nn.Module):
        obj.to(device).eval()
    return obj


def _program_record(spec, program_args, weights, dataset, split, limit, binarize):
    return {"program": {"spec": spec, "args": dict(program_args or {}),
                        "weights": None if weights is None else str(weights)},
            "data": {"dataset": dataset, "split": split, "limit": limit, "binarize": binarize}}


def _data(dataset, split, limit, binarize, data_dir, seed, device):
    """The split's examples (and labels), binarized as asked: ``none`` (as the dataset gives
    them), ``threshold`` (> 0.5) or ``dynamic`` (one fixed Bernoulli draw, seeded)."""
    if binarize not in ("none", "threshold", "dynamic"):
        raise ValueError(f"--binarize for a program takes none, threshold or dynamic; got {binarize!r}")
    try:
        data = datasets.load(dataset, split=split, data_dir=data_dir)
    except ValueError:
        if split != "test" or not str(dataset).endswith((".npy", ".npz")):
            raise
        data = datasets.load(dataset, split="train", data_dir=data_dir)  # a one-split file: its examples
    x = data.data if limit is None else data.data[:limit]
    labels = None if data.targets is None else data.targets[:len(x)]
    if binarize == "threshold":
        x = datasets.binarize(x, "threshold")
    elif binarize == "dynamic":
        x = datasets.fixed_binarization(x, "dynamic", seed)
    return x.to(device), labels, data.split


def evaluate_program(out, spec, program_args=None, weights=None, dataset="mnist", split="test", limit=None,
                     num_samples=1000, seed=0, method="is", num_chains=16, num_steps=1000, num_leapfrog=10,
                     binarize="none", data_dir=None, device="auto", progress=True, repeats=1, data_plate=None):
    """Evaluates a user's program as ``pyrovae evaluate`` does a run: writes ``OUT/evaluation.json``
    (the same keys), ``OUT/jensen_gap.png`` and ``OUT/program.toml``; returns the evaluation dict."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    for value, name in ((num_samples, "--num-samples"), (repeats, "--repeats"), (num_chains, "--num-chains"),
                        (num_steps, "--num-steps"), (num_leapfrog, "--num-leapfrog")):
        require_positive_int(value, name)
    context = distributed.process_context(device)
    obj = load_program(spec, program_args, weights, context.device)
    program = as_program(obj, data_plate=data_plate)
    x, _, split = _data(dataset, split, limit, binarize, data_dir, seed, context.device)
    seeds = [seed + 1000003 * r for r in range(repeats)]
    result, check = evaluate_examples(context, program, x, None, num_samples, seeds, progress=progress)
    if not context.is_main:
        return None
    result = {"split": split, **result, "program": spec, "weights": None if weights is None else str(weights)}
    summary = METHODS[method].summary
    if summary is not None:
        result[method] = summary(program, x, None, num_chains, num_steps, num_leapfrog, seed, num_samples)
    folder = RunFolder(out)
    folder.path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder.file("program.toml"),
                      cfg.dumps(_program_record(spec, program_args, weights, dataset, split, limit, binarize)))
    folder.write_json("evaluation.json", result)
    plots.save(plots.jensen_gap(check), folder.file("jensen_gap.png"))
    return result


def plot_program(out, spec, program_args=None, weights=None, dataset="mnist", kind="all", split="test",
                 binarize="none", data_dir=None, n=20, dims=None, pca=False, image_shape=None, latent_site=None,
                 obs_site=None, seed=0):
    """Draws the pictures of a user's program into folder ``out``; returns the written paths."""
    kinds = PROGRAM_PLOT_KINDS if kind in ("all", "standard") else (kind,)
    if kind not in ("all", "standard") and kind not in PROGRAM_PLOT_KINDS:
        raise ValueError(f"unknown plot kind {kind!r} for a program; choose one of {list(PROGRAM_PLOT_KINDS) + ['all']}")
    obj = load_program(spec, program_args, weights)
    x, labels, _ = _data(dataset, split, 5000, binarize, data_dir, seed, "cpu")
    program = as_program(obj, latent_site=latent_site, obs_site=obs_site, image_shape=image_shape)
    program.prepare_data(x)  # the shape of the model's input, for decoding without data
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for k in kinds:
        if k == "manifold":
            latent_dim = program.latent_dim
            if latent_dim > 2 and dims is None and not pca and kind in ("all", "standard"):
                print(f"manifold skipped: the latent has {latent_dim} dimensions; pass --dims i,j or --pca",
                      file=sys.stderr)
                continue
            fig = plots.manifold(program, n=n, dims=dims, data=x if pca else None)
        elif k == "scatter":
            fig = plots.scatter(program, x, labels)
        elif k == "reconstructions":
            fig = plots.reconstructions(program, x, n=12)
        elif k == "samples":
            fig = plots.samples(program, n=100)
        else:
            fig = plots.interpolation(program, x, pairs=3, steps=12)
        written.append(plots.save(fig, folder / f"{k}.png"))
    atomic_write_text(folder / "program.toml",
                      cfg.dumps(_program_record(spec, program_args, weights, dataset, split, None, binarize)))
    return written


def report_program(out, spec, program_args=None, weights=None, dataset="mnist", **options):
    """Writes ``OUT/report.html``: the figures (drawn where missing) and ``evaluation.json`` where
    ``pyrovae evaluate`` wrote one."""
    folder = RunFolder(out)
    missing = [k for k in PROGRAM_PLOT_KINDS if not folder.file(f"{k}.png").is_file()]
    if missing:
        plot_program(out, spec, program_args, weights, dataset, **options)
    figures = [(name, folder.file(f"{name}.png")) for name in PROGRAM_PLOT_KINDS + ("jensen_gap",)
               if folder.file(f"{name}.png").is_file()]
    evaluation = None
    if folder.evaluation.is_file():
        import json

        evaluation = json.loads(folder.evaluation.read_text())
    record = folder.file("program.toml")
    text = record.read_text() if record.is_file() else cfg.dumps(
        _program_record(spec, program_args, weights, dataset, "test", None, "none"))
    return write_report(folder.path, figures, text, [], evaluation, program=spec)
