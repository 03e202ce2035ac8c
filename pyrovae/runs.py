"""A run folder end to end: config -> data -> VAE -> fit -> figures -> evaluation -> report.
The command-line tool is a thin layer over these functions."""

import json
import math
import os
import sys
from pathlib import Path

import torch

from . import checkpoint as ckpt
from . import config as cfg
from . import datasets, latent, plots
from .evaluation import check_bounds, elbo
from .objectives import check_training_options
from .model import VAE
from . import distributed
from .train import _fixed_binarization, distributed_run, fit, prepare_data, resolve_device

__all__ = ["train_run", "evaluate_run", "plot_run", "report_run", "PLOT_KINDS", "read_run_config"]

PLOT_KINDS = ("manifold", "scatter", "reconstructions", "samples", "interpolation", "attributes", "curves")


def read_run_config(run_dir):
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {str(run_dir)!r} does not exist")
    path = run_dir / ckpt.CONFIG
    if path.is_file():
        return cfg.validate(cfg.load_toml(path))
    state = ckpt.read_checkpoint(run_dir)
    config = state.get("train_config") or {}
    return cfg.validate(config)


def load_split(config, split):
    data = config["data"]
    return datasets.load(data["dataset"], split=split, data_dir=data.get("data_dir"))


def _load_test(config):
    try:
        return load_split(config, "test")
    except ValueError:
        return None  # a dataset with one split (a .npy file)


def build_model(config, train):
    spec = cfg.resolve_likelihood(config, bool(((train.data >= 0) & (train.data <= 1)).all()))
    config["model"]["likelihood"] = spec
    model = config["model"]
    return VAE(data_shape=train.shape, latent_dim=model["latent_dim"], hidden=tuple(model["hidden"]),
               likelihood=spec, prior=model["prior"], network=model["network"])


def train_run(config, out, resume=False, progress=True):
    """Trains the configured VAE into run folder ``out``; returns (vae, history)."""
    out = Path(out)
    if resume:
        if not (out / ckpt.CHECKPOINT).is_file():
            raise FileNotFoundError(f"--resume: no checkpoint in {str(out)!r} to resume from")
    config = cfg.validate(config)
    train = load_split(config, "train")
    test = _load_test(config)
    torch.manual_seed(config["train"]["seed"])  # the initial weights follow the run's seed
    vae = build_model(config, train)
    t = config["train"]
    # check everything that can fail before the run folder gets its first file
    check_training_options(vae, t["loss"], t["num_particles"], t["estimator"], t["free_bits"])
    prepare_data(vae, train.data, config["data"]["binarize"], "train")
    is_main = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 writes files
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write_text(out / ckpt.CONFIG, cfg.dumps(config))
    callback = None
    if config["logging"]["tensorboard"] and is_main:
        from .tensorboard import TensorBoardLogger

        callback = TensorBoardLogger(out, test.data[:64] if test is not None else train.data[:64])
    history = fit(
        vae, train, test,
        epochs=t["epochs"], batch_size=t["batch_size"], lr=t["lr"], loss=t["loss"], num_particles=t["num_particles"], estimator=t["estimator"],
        device=t["device"], seed=t["seed"], binarize=config["data"]["binarize"], beta=t["beta"],
        warmup_epochs=t["warmup_epochs"], free_bits=t["free_bits"], run_dir=out, resume=resume,
        progress=progress, train_config=config, callback=callback,
    )
    if callback is not None:
        callback.close()
    if config["logging"]["plots"] and is_main:
        plot_run(out, "standard", vae=vae, config=config)
    return vae, history


def _evaluation_data(config, vae, split, limit, device):
    """The split's examples as training saw them, and the dataset (its ``split`` says which
    split it really is: a one-split array file evaluates on ``train``)."""
    dataset = load_split(config, split) if split != "test" else (_load_test(config) or load_split(config, "train"))
    x = dataset.data if limit is None else dataset.data[:limit]
    x, binarize = prepare_data(vae, x, config["data"]["binarize"], split)
    # the same fixed binarization of the test set the training run reported on
    return _fixed_binarization(x.to(device), binarize, config["train"]["seed"] + (1 if split == "test" else 2)), dataset


def evaluate_run(run_dir, num_samples=1000, split="test", limit=None, device="auto", ks=None, progress=True, seed=0):
    """Writes ``evaluation.json`` and ``jensen_gap.png``; returns the evaluation dict."""
    run_dir = Path(run_dir)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"--num-samples must be an integer >= 1; got {num_samples!r}")
    if split not in ("test", "train", "valid"):
        raise ValueError(f"--split must be 'test', 'train' or 'valid'; got {split!r}")
    context = distributed.setup(device) if distributed_run() else distributed.single_process(resolve_device(device))
    device = context.device
    config = read_run_config(run_dir)
    vae = ckpt.load(run_dir, device=device)
    x, dataset = _evaluation_data(config, vae, split, limit, device)
    split = dataset.split
    ll, se = distributed.log_likelihood(context, vae, x, num_samples, seed=seed, progress=progress)
    if not context.is_main:
        return None
    elbo_values = elbo(vae, x, num_particles=10, seed=seed + 1)
    ks = ks or sorted({1, 10, 100, num_samples} | ({1000} if num_samples >= 1000 else set()))
    # the ordering check on a subset: it needs replicated draws for every k, through traces
    subset = x[: min(len(x), 200)]
    check = check_bounds(vae, subset, ks=[k for k in ks if k <= num_samples], samples_per_k=2000, seed=seed)
    mean_ll, mean_elbo = float(ll.double().mean()), float(elbo_values.double().mean())
    # the IS estimate below the ELBO of the same examples, beyond the paired error, is a violation too
    gap = (ll - elbo_values).double()
    below = float(gap.mean()) < -4 * float(gap.std()) / math.sqrt(len(x)) - 1e-3 if len(x) > 1 else float(gap[0]) < -1e-3
    violated = not check.ok or below
    result = {
        "split": split,
        "num_examples": len(x),
        "num_samples": num_samples,
        "log_likelihood": mean_ll,
        "log_likelihood_stderr": float((se.double() ** 2).sum().sqrt() / len(x)),
        "nll": -mean_ll,
        "elbo": mean_elbo,
        "jensen_gap": mean_ll - mean_elbo,
        "bits_per_dim": -mean_ll / (vae.data_dim * math.log(2)),
        "bound_check": "violated" if violated else "ok",
        "bounds": {**check.as_dict(), "examples": len(subset)},
    }
    ckpt.atomic_write_text(run_dir / "evaluation.json", json.dumps(result, indent=2) + "\n")
    plots.save(plots.jensen_gap(check), run_dir / "jensen_gap.png")
    return result


def _attribute_vectors(vae, x, labels):
    """Two directions for MNIST-like data: class a -> class b (labels), thin -> thick strokes."""
    vectors, names = [], []
    if labels is not None and len(labels.unique()) >= 2:
        a, b = (1, 7) if {1, 7} <= set(labels.tolist()) else tuple(int(v) for v in labels.unique()[:2])
        vectors.append(latent.attribute_vector(vae, x, labels=labels, positive=b, negative=a))
        names.append(f"label {a} -> {b}")
    mass = latent.stroke_mass(x)
    vectors.append(latent.attribute_vector(vae, x, has=mass > mass.median()))
    names.append("thin -> thick strokes")
    return vectors[:2], names[:2]


def plot_run(run_dir, kind="all", vae=None, config=None, dims=None, pca=False, n=20, device="cpu"):
    """Draws figures of a run into its folder; returns the written paths. ``kind="standard"``
    draws what ``train`` draws: every kind, the manifold only where it is defined by default."""
    run_dir = Path(run_dir)
    kinds = PLOT_KINDS if kind in ("all", "standard") else (kind,)
    if kind not in ("all", "standard") and kind not in PLOT_KINDS:
        raise ValueError(f"unknown plot kind {kind!r}; choose one of {list(PLOT_KINDS) + ['all']}")
    config = config or read_run_config(run_dir)
    vae = (vae or ckpt.load(run_dir, device=device)).eval()
    device = next(vae.parameters()).device
    needs_data = set(kinds) & {"scatter", "reconstructions", "interpolation", "attributes"} or pca
    x = labels = None
    if needs_data:
        dataset = _load_test(config) or load_split(config, "train")
        x, _ = _evaluation_data(config, vae, "test" if _load_test(config) else "train", 5000, device)
        labels = dataset.targets[:5000] if dataset.targets is not None else None
        grey = dataset.data[:5000].to(device)  # stroke mass is a property of the grey image
    written = []
    for k in kinds:
        if k == "manifold":
            if vae.latent_dim > 2 and dims is None and not pca and kind in ("all", "standard"):
                print(f"manifold skipped: the latent has {vae.latent_dim} dimensions; pass --dims i,j or --pca", file=sys.stderr)
                continue
            fig = plots.manifold(vae, n=n, dims=dims, data=x if pca else None)
        elif k == "scatter":
            fig = plots.scatter(vae, x, labels)
        elif k == "reconstructions":
            fig = plots.reconstructions(vae, x, n=12)
        elif k == "samples":
            fig = plots.samples(vae, n=100)
        elif k == "interpolation":
            fig = plots.interpolation(vae, x, pairs=3, steps=12)
        elif k == "attributes":
            if len(vae.data_shape) < 2:
                print("attributes skipped: resynthesis is drawn for image data", file=sys.stderr)
                continue
            vectors, names = _attribute_vectors(vae, grey, labels)
            fig = plots.attributes(vae, x, vectors, names, amounts=(-1.5, -0.75, 0, 0.75, 1.5), examples=3)
        else:
            history = _read_history(run_dir)
            fig = plots.curves(history)
        written.append(plots.save(fig, run_dir / f"{k}.png"))
    return written


def _read_history(run_dir):
    path = Path(run_dir) / ckpt.METRICS
    if not path.is_file():
        raise FileNotFoundError(f"no {ckpt.METRICS} in {str(run_dir)!r}: train first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def report_run(run_dir):
    """Writes ``report.html`` with every figure present (drawing the missing ones first)."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    missing = [k for k in PLOT_KINDS if not (run_dir / f"{k}.png").is_file()]
    if missing:
        plot_run(run_dir, "standard", config=config)
    names = list(PLOT_KINDS) + ["jensen_gap"]
    figures = [(name, run_dir / f"{name}.png") for name in names if (run_dir / f"{name}.png").is_file()]
    evaluation = None
    if (run_dir / "evaluation.json").is_file():
        evaluation = json.loads((run_dir / "evaluation.json").read_text())
    config_text = (run_dir / ckpt.CONFIG).read_text() if (run_dir / ckpt.CONFIG).is_file() else cfg.dumps(config)
    return plots.report(run_dir, figures, config_text, _read_history(run_dir), evaluation)
