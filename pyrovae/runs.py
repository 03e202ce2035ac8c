"""A run end to end: config -> data -> VAE -> fit -> figures -> evaluation -> report, each
step reading and writing one :class:`~pyrovae.run_folder.RunFolder`. The command-line tool is a
thin layer over these functions."""

import hashlib
import json
import shutil
import sys
from pathlib import Path

import torch

from . import config as cfg
from . import datasets, distributed, latent, plots
from .estimate import METHODS, ImportanceSamplingWarning, ais_summary, bdmc_summary, evaluate_examples
from .models import MODEL_OPTIONS, MODELS, model_class
from .models.m2 import StackedM2
from .infer.objectives import check_training_options
from .report import write_report
from .run_folder import RunFolder, RunFolderWriteError, load, vae_from_state
from .tensorboard import TensorBoardLogger
from .trackers import log_evaluation, make_trackers
from .train import LogLikelihoodCurve, fit, stream_seed
from .train.callbacks import BEST, CheckpointWriteError, describe_checkpoint, selection_metric
from .train.trainer import TrainingDiverged
from .protocol import PLOT_KINDS, family
from .validation import require_positive_int

__all__ = ["train_run", "evaluate_run", "ais_summary", "bdmc_summary", "METHODS", "ImportanceSamplingWarning", "plot_run", "report_run", "PLOT_KINDS", "read_run_config"]



def read_run_config(run_dir, trust=False):
    """The resolved config of a run folder: its ``config.toml``, else the copy in its checkpoint."""
    run = RunFolder(run_dir)
    if not run.exists():
        raise FileNotFoundError(f"run folder {str(run.path)!r} does not exist")
    if run.config_file.is_file():
        return cfg.validate(cfg.load_toml(run.config_file))
    return cfg.validate(run.read_checkpoint(trust=trust).get("train_config") or {})


def load_split(config, split):
    """The configured dataset's ``split``, mapped through ``features``' encoder where set."""
    data = config["data"]
    dataset = datasets.load(data["dataset"], split=split, data_dir=data.get("data_dir"))
    if data.get("features"):
        dataset = latent_features(data["features"], dataset)
    return dataset


def latent_features(run_dir, dataset, batch_size=2000):
    """``dataset`` with each example x replaced by E_q[z | x], the encoder's mean, of the VAE
    trained in ``run_dir`` (read as weights only, as ``evaluate`` reads a checkpoint): the first
    stage of Kingma et al.'s M1+M2, whose M2 models these means. The labels and split stay."""
    try:
        vae = load(run_dir)
    except FileNotFoundError as error:  # read_checkpoint's, given the step the user missed
        raise FileNotFoundError(f"features: no trained run in {str(run_dir)!r}: {error}; train the feature VAE "
                                f"first (pyrovae train --model vae --latent-dim 50 --out {run_dir})") from None
    if tuple(vae.data_shape) != tuple(dataset.shape):
        raise ValueError(f"features: the run in {str(run_dir)!r} encodes examples of shape {tuple(vae.data_shape)}, "
                         f"the dataset's are {tuple(dataset.shape)}")
    with torch.no_grad():
        means = torch.cat([vae.encode(dataset.data[i:i + batch_size])[0] for i in range(0, len(dataset), batch_size)])
    return datasets.ArrayDataset(means, dataset.targets, name=f"{dataset.name} features of {run_dir}",
                                 split=dataset.split)


def _load_test(config):
    try:
        return load_split(config, "test")
    except ValueError:
        return None  # a dataset with one split (a .npy file)


def load_train_valid(config):
    """(train, valid or None): the dataset's own validation split where ``valid_fraction`` is 0
    and it has one, else ``valid_fraction`` of the training split held out (seeded by the run's
    seed)."""
    data = config["data"]
    train = load_split(config, "train")
    if data["valid_fraction"] > 0:
        return datasets.split_validation(train, data["valid_fraction"], seed=config["train"]["seed"])
    if datasets.has_split(data["dataset"], "valid"):
        return train, load_split(config, "valid")
    return train, None


def build_model(config, train):
    spec = cfg.resolve_likelihood(config, bool(((train.data >= 0) & (train.data <= 1)).all()))
    config["model"]["likelihood"] = spec
    model = config["model"]
    options = {key: tuple(model[key]) if isinstance(model[key], list) else model[key]
               for key in MODEL_OPTIONS[model["model"]]}
    return model_class(model["model"])(
        data_shape=train.shape, latent_dim=model["latent_dim"], hidden=tuple(model["hidden"]), likelihood=spec,
        prior=model["prior"], network=model["network"], activation=model["activation"], guide=model["guide"],
        **options)


def train_run(config, out, resume=False, progress=True, trust=False, callbacks=()):
    """Trains the configured VAE into run folder ``out``; returns (vae, history); ``callbacks``
    watch the run beside the config's own (a sweep's report to its trial). Everything that
    can fail on the inputs fails before the folder gets its first file (a bad input found later,
    before the first checkpoint, removes the folder it made). A run that fails in training before
    its first checkpoint (a NaN loss, a full disk, an interrupt) keeps its folder and config, so
    the same command runs again; a failed write says what is on disk and how to go on."""
    run = RunFolder(out)
    if resume and not run.checkpoint_generations():
        raise FileNotFoundError(f"--resume: no checkpoint in {str(run.path)!r} to resume from")
    config = cfg.validate(config)
    t = config["train"]
    context = distributed.process_context(t["device"])
    train, valid = load_train_valid(config)
    test = _load_test(config)
    if t["patience"] and valid is None:
        raise ValueError("early stopping (patience) needs a validation set: set valid_fraction "
                         "(--valid-fraction) or use a dataset with a validation split")
    torch.manual_seed(t["seed"])  # the initial weights follow the run's seed
    vae = build_model(config, train)
    config["train"] = t = cfg.family_defaults(t, vae)  # the run folder records the loss it trained with
    check_training_options(vae, t["loss"], t["num_particles"], t["estimator"], t["free_bits"])
    datasets.prepare(vae, train.data, config["data"]["binarize"], "train")
    if not context.is_main:  # under torchrun only rank 0 writes files
        history = fit(vae, train, test, valid=valid, binarize=config["data"]["binarize"], run_dir=run, resume=resume,
                      progress=False, run_config=config, trust=trust, callbacks=_curve_callbacks(config), **t)
        return vae, history
    made_folder = not run.exists()
    try:
        with run.lock():
            run.write_config(config)
            trackers = make_trackers(config, run.path)
            callbacks = _curve_callbacks(config) + list(callbacks) + trackers
            if config["logging"]["tensorboard"]:
                callbacks.append(TensorBoardLogger(run.path, test.data[:64] if test is not None else train.data[:64]))
            history = fit(vae, train, test, valid=valid, binarize=config["data"]["binarize"], run_dir=run, resume=resume,
                          progress=progress, callbacks=callbacks, run_config=config, trust=trust, **t)
            if config["logging"]["plots"]:
                plot_run(run.path, "standard", vae=vae, config=config)
            for tracker in trackers:
                tracker.finish()
    except (TrainingDiverged, OSError, KeyboardInterrupt) as error:
        if made_folder and not run.checkpoint_generations() and not run.config_file.exists():
            shutil.rmtree(run.path, ignore_errors=True)  # nothing was written to go on from
        if isinstance(error, RunFolderWriteError) and not isinstance(error, CheckpointWriteError):
            raise RunFolderWriteError(error.errno, f"{error}. The run folder holds {describe_checkpoint(run)}: free "
                                      f"space or fix the folder's permissions, then "
                                      + ("continue with --resume" if run.checkpoint_generations() else
                                         "run the same command again")) from None
        raise
    except BaseException:
        if made_folder and not run.checkpoint_generations():
            shutil.rmtree(run.path, ignore_errors=True)  # a bad input: the command itself must change
        raise
    return vae, history


def _curve_callbacks(config):
    logging = config["logging"]
    if not logging["nll_every"]:
        return []
    return [LogLikelihoodCurve(logging["nll_every"], logging["nll_samples"], logging["nll_examples"])]


def _evaluation_data(config, vae, split, limit, device):
    """The split's examples as training saw them, and the dataset (its ``split`` says which
    split it really is: a one-split array file evaluates on ``train``)."""
    if split == "test":
        dataset = _load_test(config) or load_split(config, "train")
    elif split == "valid":
        dataset = load_train_valid(config)[1]
        if dataset is None:
            raise ValueError("this run has no validation split (set valid_fraction, or use a dataset with one)")
    else:
        dataset = load_train_valid(config)[0]
    x = dataset.data if limit is None else dataset.data[:limit]
    x, binarization = datasets.prepare(vae, x, config["data"]["binarize"], split)
    # the same fixed binarization of the split the training run reported on
    stream = stream_seed(config["train"]["seed"], {"test": 1, "train": 2, "valid": 3}[dataset.split])
    return datasets.fixed_binarization(x.to(device), binarization, stream), dataset


def evaluate_run(run_dir, num_samples=1000, split="test", limit=None, device="auto", ks=None, progress=True, seed=0,
                 vae=None, model_class=None, trust=False, repeats=1, checkpoint="auto", method="is", num_chains=16,
                 num_steps=1000, num_leapfrog=10):
    """Writes ``evaluation.json`` and ``jensen_gap.png``; returns the evaluation dict. Every
    number comes from the VAE's own model: pass ``vae`` (or ``model_class``) for a subclass.

    :param repeats: R independent importance-sampling estimates; ``log_likelihood`` is their mean
        and ``log_likelihood_sd`` their standard deviation (as pythae reports them).
    :param checkpoint: ``"last"`` (``checkpoint.pt``), ``"best"`` (``best.pt``, the epoch with the
        best validation ELBO, or the family's own validation number: m2's accuracy) or
        ``"auto"``: ``best.pt`` where the family selects by its own number and the run has one
        (m2, as Pyro's example reports the test accuracy at the best validation accuracy), else
        the last.
    :param method: ``"is"`` (importance sampling with q(z|x), always computed, with its Pareto k
        diagnostics), ``"ais"`` (also annealed importance sampling: ``num_chains`` chains,
        ``num_steps`` distributions, ``num_leapfrog`` leapfrog steps each) or ``"bdmc"`` (also
        BDMC on as many examples simulated from the model: the sandwich and its gap). AIS runs in
        blocks of examples, each seeded by its position and written to a hidden folder of the run
        as it finishes: a killed evaluation run again continues where it stopped, with the same
        numbers (the folder goes once ``evaluation.json`` holds them).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    for value, name in ((num_chains, "--num-chains"), (num_steps, "--num-steps"), (num_leapfrog, "--num-leapfrog")):
        require_positive_int(value, name)
    run = RunFolder(run_dir)
    require_positive_int(num_samples, "--num-samples")
    require_positive_int(repeats, "--repeats")
    if checkpoint not in ("auto", "last", "best"):
        raise ValueError(f"--checkpoint must be 'auto', 'best' or 'last'; got {checkpoint!r}")
    if split not in ("test", "train", "valid"):
        raise ValueError(f"--split must be 'test', 'train' or 'valid'; got {split!r}")
    config = read_run_config(run.path, trust=trust)
    if checkpoint == "auto":
        own_selection = selection_metric(MODELS[config["model"]["model"]]) != "valid_elbo"  # (model_class names an argument here)
        checkpoint = "best" if own_selection and run.file(BEST).is_file() else "last"
    source = run.checkpoint if checkpoint == "last" else run.file(BEST)
    if checkpoint == "best" and not source.is_file():
        raise FileNotFoundError(f"--checkpoint best: no {BEST} in {str(run.path)!r} (a run writes it when it has a "
                                "validation set)")
    context = distributed.process_context(device)
    device = context.device
    state = run.read_checkpoint(map_location=device, trust=trust, path=source)  # read once: weights and epoch
    vae = vae_from_state(state, device, model_class, where=source) if vae is None else vae.to(device).eval()
    x, dataset = _evaluation_data(config, vae, split, limit, device)
    split = dataset.split
    targets = None if dataset.targets is None else dataset.targets[:len(x)].to(device)
    labels = targets if family(vae).requires_labels else None
    if family(vae).requires_labels and labels is None:
        raise ValueError(f"this {type(vae).__name__} is conditioned on labels and the {split} data have none")
    seeds = [seed] + [stream_seed(seed, r) for r in range(1, repeats)]
    result, check = evaluate_examples(context, vae, x, labels, num_samples, seeds, progress=progress, ks=ks)
    if not context.is_main:
        return None
    result = {"split": split, **result, "checkpoint": checkpoint, "epoch": int(state["epoch"]),
              "checkpoint_file": (run.loaded_from or source).name}
    if config["data"].get("features"):  # every density above is of those latent means, not of the examples
        result["features"] = config["data"]["features"]
    summary = METHODS[method].summary
    pieces = None
    if summary is not None:
        # a long evaluation's finished blocks, kept until evaluation.json holds the result: a folder
        # named by everything that decides the numbers, so a changed command never reads them
        decided = json.dumps([method, num_chains, num_steps, num_leapfrog, seed, split, len(x), result["checkpoint_file"],
                              int(state["epoch"])])
        pieces = run.file(f".{method}-pieces-{hashlib.sha256(decided.encode()).hexdigest()[:16]}")
        result[method] = summary(vae, x, labels, num_chains, num_steps, num_leapfrog, seed, num_samples,
                                 pieces=pieces)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed + 2)
        result.update(family(vae).extra_metrics(x, targets, num_samples))  # a family's own numbers (accuracy, ...)
    run.write_json("evaluation.json", result)
    log_evaluation(config, run.path, result)
    if pieces is not None:
        shutil.rmtree(pieces, ignore_errors=True)
    plots.save(plots.jensen_gap(check), run.file("jensen_gap.png"))
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


# The Frey grid's steps along each attribute vector (a vector is the mean encoding of one labelled
# group less the other's): chosen by measurement with the latent dimension (docs/pictures.md).
FREY_AMOUNTS = (-2.0, -1.0, 0.0, 1.0, 2.0)


def _frey_attributes(vae, config, test_x, device):
    """The notes' Figure 17.13 on Frey Face: three neutral, mouth-closed test faces, each with its
    5 x 5 grid, the original to the left and the reconstruction at the centre, smiling added down
    the rows and the mouth opened across the columns, along the vectors of the package's labels
    (:func:`pyrovae.datasets.frey_expressions`)."""
    faces = datasets.load("frey", split="all", data_dir=config["data"].get("data_dir")).data
    faces, _ = datasets.prepare(vae, faces, config["data"]["binarize"], "all")
    faces = faces.to(device)
    smiling, mouth_open = datasets.frey_expressions()
    vectors = [latent.attribute_vector(vae, faces, labels=smiling.to(device), positive=1, negative=0),
               latent.attribute_vector(vae, faces, labels=mouth_open.to(device), positive=1, negative=0)]
    frames = datasets.frey_split_order()[:len(test_x)]  # the test split's frames
    calm = [i for i, frame in enumerate(frames.tolist()) if smiling[frame] == 0 and mouth_open[frame] == 0][:3]
    return plots.attributes(vae, test_x[calm], vectors, ["neutral -> smiling", "mouth closed -> open"],
                            amounts=FREY_AMOUNTS, examples=len(calm), originals=True)


def plot_run(run_dir, kind="all", vae=None, config=None, dims=None, pca=False, n=20, device="cpu", trust=False):
    """Draws figures of a run into its folder; returns the written paths. ``kind="standard"``
    draws what ``train`` draws: every kind, the manifold only where it is defined by default."""
    run_dir = Path(run_dir)
    config = config or read_run_config(run_dir, trust=trust)
    family = model_kinds(config)
    kinds = family if kind in ("all", "standard") else (kind,)
    if kind not in ("all", "standard") and kind not in family:
        raise ValueError(f"unknown plot kind {kind!r} for a {config['model']['model']}; choose one of "
                         f"{list(family) + ['all']}")
    vae = (vae or load(run_dir, device=device, trust=trust)).eval()
    device = vae.device
    features = config["data"].get("features")
    if features and config["model"]["model"] == "m2":  # M1+M2: the figures are of the examples, through M1
        vae = StackedM2(vae, load(features, device=device, trust=trust))
    needs_data = set(kinds) & {"scatter", "reconstructions", "interpolation", "attributes", "completions",
                               "analogies", "posterior"} or pca
    x = labels = None
    if needs_data:
        if features:  # M1+M2's figures start from the examples themselves, not from their features
            source = cfg.merge(config, {"data": {"features": None}})
            dataset = _load_test(source) or load_split(source, "train")
            x = dataset.data[:5000].to(device)
        else:  # as training saw them (the test split, or a one-split file's examples)
            x, dataset = _evaluation_data(config, vae, "test", 5000, device)
        # the labels and grey images of the same examples as x
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
        elif k == "posterior":
            if vae.latent_dim != 2 or config["model"]["model"] != "vae":
                if kind in ("all", "standard"):
                    print("posterior skipped: drawn for the plain vae with a 2-D latent", file=sys.stderr)
                    continue
                raise ValueError("--kind posterior is drawn for the plain vae with a 2-D latent (the true posterior "
                                 "on a grid)")
            name = vae.config.get("guide", {"kind": "meanfield"})["kind"]
            fig = plots.posterior({f"{name} guide": vae}, x)
        elif k == "reconstructions":
            fig = plots.reconstructions(vae, x, n=12)
        elif k == "samples":
            fig = plots.samples(vae, n=100)
        elif k == "interpolation":
            fig = plots.interpolation(vae, x, pairs=3, steps=12)
        elif k == "completions":
            fig = plots.completions(vae, x)
        elif k == "classes":
            fig = plots.classes(vae)
        elif k == "analogies":
            fig = plots.analogies(vae, x)
        elif k == "attributes":
            if len(vae.data_shape) < 2:
                print("attributes skipped: resynthesis is drawn for image data", file=sys.stderr)
                continue
            if config["data"]["dataset"] == "frey":
                fig = _frey_attributes(vae, config, x, device)
            else:
                vectors, names = _attribute_vectors(vae, grey, labels)
                fig = plots.attributes(vae, x, vectors, names, amounts=(-1.5, -0.75, 0, 0.75, 1.5), examples=3)
        else:
            history = RunFolder(run_dir).read_metrics()
            if not history and kind in ("all", "standard"):
                print("curves skipped: no epoch trained yet", file=sys.stderr)
                continue
            fig = plots.curves(history)
        written.append(plots.save(fig, run_dir / f"{k}.png"))
    return written


def model_kinds(config):
    """The figures of a run's model family: the VAE's (and the two-layer VAE's) seven, or the
    conditional and semi-supervised models' own."""
    name = config["model"]["model"]
    if config["data"].get("features"):  # the examples are latent means: M1+M2's figures go through M1
        return ("analogies", "classes", "curves") if name == "m2" else ("curves",)
    if name == "cvae":
        return ("completions", "curves") if config["model"]["condition"] == "quadrants" else ("classes", "curves")
    if name == "m2":
        return model_class("m2").plot_kinds
    return PLOT_KINDS


def _data_shape(run, trust):
    try:
        return run.read_checkpoint(trust=trust)["model_config"]["data_shape"]
    except (OSError, ValueError, KeyError):
        return ["?"]


def report_run(run_dir, trust=False):
    """Writes ``report.html`` with every figure present (drawing the missing ones first)."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir, trust=trust)
    kinds = model_kinds(config)
    missing = [k for k in kinds if not (run_dir / f"{k}.png").is_file()]
    if missing:
        plot_run(run_dir, "standard", config=config, trust=trust)
    names = list(kinds) + ["jensen_gap"]
    figures = [(name, run_dir / f"{name}.png") for name in names if (run_dir / f"{name}.png").is_file()]
    evaluation = None
    run = RunFolder(run_dir)
    if run.evaluation.is_file():
        evaluation = json.loads(run.evaluation.read_text())
    config_text = run.config_file.read_text() if run.config_file.is_file() else cfg.dumps(config)
    model = config.get("model")
    return write_report(run_dir, figures, config_text, run.read_metrics(), evaluation,
                        model=None if model is None else {**model, "data_shape": _data_shape(run, trust)})
