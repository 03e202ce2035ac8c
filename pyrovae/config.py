"""The options of a run, defined once: dataclasses from which the TOML reader and writer, the
command-line flags (with their help), :func:`pyrovae.fit`'s keywords and the Lightning module's
arguments are all derived. A TOML file has one table a dataclass:

    [data]             DataConfig       dataset, data_dir, binarize, valid_fraction
    [model]            ModelConfig      model, latent_dim, hidden, network, prior, likelihood, guide, family keys
    [train]            TrainConfig      loss, num_particles, estimator, epochs, batch_size, lr, ...
    [logging]          LoggingConfig    tensorboard, plots, trackers

A key that is not an option is an error that names the nearest option.
"""

import copy
import difflib
import sys
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Dict, List, Optional

from .protocol import ModelProtocol, family

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["DataConfig", "ModelConfig", "TrainConfig", "LoggingConfig", "SECTIONS", "default_config", "load_toml",
           "merge", "validate", "family_defaults", "dumps", "parse_value", "parse_assignments", "resolve_likelihood",
           "DATASET_LIKELIHOODS", "nearest", "train_options"]


def option(default, help, choices=None, flag=True, minimum=None, positive=False):
    """A dataclass field with the help text, choices and range its flag and its checks use:
    ``minimum`` (the value must be >= it) or ``positive`` (> 0)."""
    kwargs = {"default_factory": (lambda: copy.deepcopy(default))} if isinstance(default, (list, dict)) else {"default": default}
    return field(metadata={"help": help, "choices": choices, "flag": flag, "minimum": minimum, "positive": positive},
                 **kwargs)


@dataclass
class DataConfig:
    dataset: str = option("mnist", "mnist, fashion-mnist, frey, binarized-mnist, or a .npy/.npz path")
    data_dir: Optional[str] = option(None, "the folder holding the dataset's files")
    binarize: str = option("auto", "auto: dynamic for grey data under a Bernoulli likelihood",
                           choices=("auto", "dynamic", "threshold", "none"))
    valid_fraction: float = option(0.0, "hold out this fraction of the training data for validation (0: the "
                                   "dataset's own validation split where it has one, else none)", minimum=0)
    features: Optional[str] = option(None, "a trained run folder: train on its encoder's means of each example "
                                     "instead of the examples (Kingma et al.'s M1+M2: m2 on a vae's latent means)")


@dataclass
class ModelConfig:
    model: str = option("vae", "the model family: vae, cvae (conditional), m2 (semi-supervised, labels summed out), "
                        "hvae (two stochastic layers)", choices=("vae", "cvae", "m2", "hvae"))
    latent_dim: int = option(2, "dimension of z (hvae: of the top layer z2)", minimum=1)
    hidden: List[int] = option([400], "hidden widths, e.g. 400 or 512,256; 'none' for affine networks")
    network: str = option("mlp", "encoder and decoder networks: mlp, conv, gated (Tomczak & Welling's gated "
                          "units, He-normal weights, log-variance in [-6, 2]) or gated-conv (van den Berg et al.'s "
                          "gated convolutions; hidden 256 is theirs)", choices=("mlp", "conv", "gated", "gated-conv"))
    activation: str = option("relu", "the networks' nonlinearity (gated: on each unit's value branch; identity in "
                             "the paper)", choices=("relu", "tanh", "softplus", "identity"))
    prior: Dict[str, Any] = option({"kind": "normal"}, "prior name (normal, laplace, student_t, mixture, vamp, flow)")
    likelihood: Dict[str, Any] = option({"kind": "auto"}, "likelihood name (bernoulli, continuous_bernoulli, "
                                        "gaussian, laplace, beta, logistic256)")
    guide: Dict[str, Any] = option({"kind": "meanfield"}, "the posterior family q(z|x) (meanfield, lowrank: rank; "
                                   "planar: steps; iaf: steps, hidden, activation, gated, forget_bias, init)")
    condition: str = option("quadrants", "cvae: what the model is conditioned on, the given quadrants of an image "
                            "or the label", choices=("quadrants", "label"))
    given_quadrants: int = option(1, "cvae: quadrants given, 1 (bottom left), 2 (left half) or 3 (all but bottom "
                                  "right)", minimum=1)
    baseline_hidden: List[int] = option([500, 500], "cvae: the hidden widths of the quadrant task's baseline network")
    num_classes: int = option(10, "cvae (label) and m2: the number of classes", minimum=2)
    init_std: float = option(0.0, "m2: draw the hidden layers' weights and biases from N(0, init_std^2) (Pyro's "
                             "ss_vae example: 0.001); 0: PyTorch's default initialization", minimum=0)
    middle_dim: int = option(100, "hvae: dimension of the middle stochastic layer z1", minimum=1)
    middle_hidden: List[int] = option([100, 100], "hvae: hidden widths between z1 and z2")


@dataclass
class TrainConfig:
    """The keywords of :func:`pyrovae.fit` (and of :class:`pyrovae.lightning.VAEModule`)."""

    loss: str = option("auto", "meanfield (closed-form KL), trace (Monte Carlo KL) or iwae; auto: the model "
                       "family's own (meanfield for vae and cvae, trace for m2 and hvae)",
                       choices=("auto", "meanfield", "trace", "iwae"))
    num_particles: int = option(1, "K: draws of z per example", minimum=1)
    estimator: str = option("standard", "gradient estimator: stl (trace, iwae), dreg (iwae)",
                            choices=("standard", "stl", "dreg"))
    epochs: int = option(10, "passes over the training data", minimum=0)
    batch_size: int = option(128, "examples per step", minimum=1)
    optimizer: str = option("adam", "adam, adamax or rmsprop (PyTorch's defaults besides the learning rate)",
                            choices=("adam", "adamax", "rmsprop"))
    lr: float = option(1e-3, "the optimizer's learning rate", positive=True)
    adam_beta1: float = option(0.9, "Adam's beta1, the decay of its running mean of the gradient (Pyro's ss_vae "
                               "example: 0.95)", minimum=0)
    optimizer_eps: Optional[float] = option(None, "the optimizer's eps (default: PyTorch's, 1e-8). pyrovae's loss is a "
                                            "sum over the batch (Pyro's convention): a recipe whose loss is the batch "
                                            "mean with eps e trains identically with batch_size * e here (Adam, Adamax "
                                            "and RMSprop divide by a gradient scale plus eps)", positive=True)
    lr_schedule: str = option("constant", "learning-rate schedule, stepped each epoch: multistep (lr_milestones, "
                              "lr_gamma), exponential (lr_gamma), cosine (to 0 at the last epoch), burda (3^i epochs "
                              "at lr 10^(-i/7), i = 0..7)",
                              choices=("constant", "multistep", "exponential", "cosine", "burda"))
    lr_milestones: List[int] = option([], "epochs at which multistep multiplies the lr by lr_gamma, e.g. 200,350")
    lr_gamma: float = option(0.1, "the factor of multistep and exponential", positive=True)
    device: str = option("auto", "auto, cpu, cuda, cuda:1, ...")
    seed: int = option(0, "seeds the weights, the shuffles and torch's global generator (the draws of z)")
    beta: float = option(1.0, "KL weight (beta-VAE)", minimum=0)
    warmup_epochs: float = option(0.0, "linear KL warm-up length, in epochs", minimum=0)
    free_bits: float = option(0.0, "free bits, nats per latent dimension", minimum=0)
    patience: int = option(0, "early stopping: stop after this many epochs without a better validation ELBO "
                           "(0: never)", minimum=0)
    grad_clip: float = option(0.0, "clip the gradient's norm to this (0: no clipping)", minimum=0)
    checkpoint_every: int = option(0, "also checkpoint every N steps inside an epoch (0: by time only)", minimum=0)
    precision: str = option("fp32", "the training step's matrix products: fp32, or bf16 (bfloat16 on a CPU with "
                            "AVX512-BF16 or a GPU with bfloat16; evaluation stays fp32)", choices=("fp32", "bf16"))
    compile: str = option("auto", "compile the training step (torch.compile, fused Adam) where the built-in VAE "
                          "takes its fast path: auto (runs of 5000 steps or more), on, off (--no-compile)",
                          choices=("auto", "on", "off"))
    steps_per_call: int = option(0, "the whole compiled step: training steps per compiled call, unrolled into one "
                                 "graph (more amortize each call's overhead; the compile time grows with them). "
                                 "0: 8 to 12, the number that leaves fewest of an epoch's full batches off the "
                                 "calls (fewer where an epoch has fewer full batches)", minimum=0)
    labels: Optional[int] = option(None, "m2: labelled training examples, class-balanced, drawn by the seed "
                                   "(default: every training label)", minimum=1)
    aux_weight: float = option(46.0, "m2: alpha, the weight of the classification term log q(y|x) in the step "
                               "on a labelled batch (Pyro's ss_vae example: 46)", minimum=0)
    labelled_repeats: int = option(1, "m2: passes over the labelled examples an epoch, their batches spread over the "
                                   "unlabelled steps (Pyro's recipe: 1)", minimum=1)
    every_batch_classifier_step: bool = option(False, "m2: the classifier's optimizer step after every batch, "
                                               "labelled or not, moving every parameter (a zero gradient where the "
                                               "classifier term has none), as Pyro's ss_vae example's second SVI "
                                               "object steps")
    report_examples: int = option(2000, "training examples of the per-epoch ELBO report (train_elbo, "
                                  "train_reconstruction, train_kl): the first N, binarized once, read at each epoch's "
                                  "end (a forward pass: for the plain VAE on MNIST, 2000 cost a hundredth of an "
                                  "epoch, 10000 a twentieth; the mean's standard error is about 27 / sqrt(N) nats "
                                  "there); held-out sets are reported whole",
                                  minimum=1)
    checkpoint_minutes: float = option(5.0, "also checkpoint when this many minutes passed since the last one "
                                       "(0: at epoch ends only)", minimum=0)
    keep_checkpoints: int = option(2, "checkpoint generations kept (checkpoint.pt, checkpoint.1.pt, ...): a damaged "
                                   "newest one falls back to the one before, losing at most one checkpoint interval",
                                   minimum=1)


@dataclass
class LoggingConfig:
    tensorboard: bool = option(False, "write TensorBoard logs into the run folder")
    plots: bool = option(True, "draw the figures at the end", flag=False)
    nll_every: int = option(0, "every N epochs, the importance-sampled test log-likelihood (0: never)", minimum=0)
    nll_samples: int = option(200, "importance samples per example for nll_every", minimum=1)
    nll_examples: int = option(1000, "test examples for nll_every", minimum=1)
    trackers: List[str] = option([], "experiment trackers the run also logs to: mlflow, wandb (--tracker NAME, "
                                 "repeatable; optional extras: pip install 'pyrovae[mlflow]')", flag=False)
    mlflow_uri: Optional[str] = option(None, "the MLflow tracking URI (default: sqlite:///RUN/../mlflow.db, a "
                                       "database beside the run folder, no server)")
    wandb_project: str = option("pyrovae", "the Weights & Biases project (offline unless WANDB_MODE says otherwise)")


TRACKER_NAMES = ("mlflow", "wandb")  # pyrovae.trackers.TRACKERS: named here, where torch is not imported
SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "logging": LoggingConfig}

# The likelihood a dataset gets when the config says "auto".
DATASET_LIKELIHOODS = {
    "mnist": {"kind": "bernoulli"},
    "fashion-mnist": {"kind": "bernoulli"},
    "binarized-mnist": {"kind": "bernoulli"},
    "frey": {"kind": "gaussian", "scale": "learned", "mean": "sigmoid"},
}


def _default(f):
    return f.default_factory() if f.default is MISSING else f.default


def default_config():
    return {section: {f.name: _default(f) for f in fields(cls)} for section, cls in SECTIONS.items()}


def nearest(word, choices):
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def train_options(options, model=None):
    """``fit``'s keywords checked against :class:`TrainConfig`: a dict with every option, and
    where ``model`` is given, ``"auto"`` values replaced by the family's own
    (:func:`family_defaults`)."""
    known = {f.name: f for f in fields(TrainConfig)}
    if isinstance(options.get("compile"), bool):  # fit(compile=False), as torch users write it
        options = {**options, "compile": "on" if options["compile"] else "off"}
    unknown = [key for key in options if key not in known]
    if unknown:
        key = unknown[0]
        raise TypeError(f"unknown training option {key!r}{nearest(key, known)}; the options are {sorted(known)}")
    table = {name: _default(f) for name, f in known.items()}
    table.update(options)
    table = _check_table("train", table)
    return table if model is None else family_defaults(table, model)


def family_defaults(train, model):
    """The training options ``train`` with each ``"auto"`` replaced by what the model family
    trains with (its class attribute ``training_defaults``): a CLI run or a ``fit`` call that
    leaves the loss unset gets a loss that model can train with, while an explicit choice is
    kept (and checked against the model)."""
    declared = model.training_defaults if isinstance(model, type) and issubclass(model, ModelProtocol) else \
        family(model).training_defaults
    if not isinstance(declared, Mapping):  # a class whose defaults depend on the instance (its guide)
        declared = {}
    defaults = {"loss": "meanfield", **declared}
    return {key: defaults[key] if value == "auto" and key in defaults else value for key, value in train.items()}


def load_toml(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"config file {str(path)!r} is not UTF-8 text: {error}") from None


def merge(base, override):
    """``override``'s keys win, table by table; prior/likelihood tables are replaced whole when
    their kind changes (another kind's arguments would not fit)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            if "kind" in value and value["kind"] != out[key].get("kind"):
                out[key] = copy.deepcopy(value)
            else:
                out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
               dict: "a table"}


def _expected_type(annotation):
    origin = getattr(annotation, "__origin__", None)
    if origin is not None and type(None) in getattr(annotation, "__args__", ()):  # Optional[X]
        return _expected_type(annotation.__args__[0])
    return {List[int]: list, Dict[str, Any]: dict}.get(annotation, origin or annotation)


def _check_table(section, table):
    known = {f.name: f for f in fields(SECTIONS[section])}
    for key, value in table.items():
        if key not in known:
            raise ValueError(f"unknown key {key!r} in [{section}]{nearest(key, known)}; known keys: {sorted(known)}")
        f = known[key]
        expected = _expected_type(f.type)
        if value is None and f.default is None:
            continue
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            table[key] = value = float(value)
        if (expected is int and isinstance(value, bool)) or not isinstance(value, expected):
            raise ValueError(f"[{section}] {key} must be {_TYPE_NAMES.get(expected, expected.__name__)}; got {value!r}")
        if key == "trackers":
            unknown = [v for v in value if v not in TRACKER_NAMES]
            if unknown:
                raise ValueError(f"[{section}] trackers: unknown tracker {unknown[0]!r}; choose from "
                                 f"{list(TRACKER_NAMES)}{nearest(str(unknown[0]), TRACKER_NAMES)}")
        elif expected is list and not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ValueError(f"[{section}] {key} must be a list of integers; got {value!r}")
        minimum, positive = f.metadata.get("minimum"), f.metadata.get("positive")
        if expected in (int, float) and not value == value:
            raise ValueError(f"[{section}] {key} must be a number; got {value!r}")
        if minimum is not None and not value >= minimum:
            raise ValueError(f"[{section}] {key} must be >= {minimum}; got {value!r}")
        if positive and not value > 0:
            raise ValueError(f"[{section}] {key} must be positive; got {value!r}")
        if key == "valid_fraction" and not value < 1:
            raise ValueError(f"[{section}] valid_fraction must be in [0, 1); got {value!r}")
        if key == "lr_milestones" and list(value) != sorted(set(value)):
            raise ValueError(f"[{section}] lr_milestones must be increasing epochs; got {value!r}")
        if key == "adam_beta1" and not value < 1:
            raise ValueError(f"[{section}] adam_beta1 must be in [0, 1); got {value!r}")
        if key == "lr_milestones" and any(v < 1 for v in value):
            raise ValueError(f"[{section}] lr_milestones must be epochs >= 1; got {value!r}")
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ValueError(f"[{section}] {key} must be one of {list(choices)}; got {value!r}{nearest(str(value), choices)}")
    return table


def validate(config):
    """Checks sections, keys, types and choices; returns the config with defaults filled in."""
    if not isinstance(config, dict):
        raise ValueError(f"a config must be a table of sections; got {type(config).__name__}")
    for section, table in config.items():
        if section not in SECTIONS:
            raise ValueError(f"unknown config section [{section}]{nearest(section, SECTIONS)}; sections are {sorted(SECTIONS)}")
        if not isinstance(table, dict):
            raise ValueError(f"[{section}] must be a table; got {table!r}")
    config = merge(default_config(), config)
    for section, table in config.items():
        _check_table(section, table)
    for key in ("prior", "likelihood", "guide"):
        if "kind" not in config["model"][key]:
            raise ValueError(f"[model.{key}] needs a 'kind'")
    return config


def resolve_likelihood(config, data_in_unit_interval):
    """Replaces likelihood kind "auto" by the dataset's usual choice."""
    spec = config["model"]["likelihood"]
    if spec.get("kind") != "auto":
        return spec
    dataset = config["data"]["dataset"]
    if dataset in DATASET_LIKELIHOODS:
        return dict(DATASET_LIKELIHOODS[dataset])
    return {"kind": "bernoulli"} if data_in_unit_interval else {"kind": "gaussian", "scale": 1.0}


def parse_value(text):
    """A command-line ``key=value``'s value as TOML would read it (numbers, booleans, lists),
    else as a plain string."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def parse_assignments(items, what):
    out = {}
    for item in items or ():
        if "=" not in item:
            raise ValueError(f"--{what}-arg takes key=value; got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = parse_value(value.strip())
    return out


def dumps(config):
    """The config as TOML text (keys whose value is None are left out)."""
    import tomli_w

    def drop_none(table):
        return {k: drop_none(v) if isinstance(v, dict) else v for k, v in table.items() if v is not None}

    return tomli_w.dumps(drop_none(config))
