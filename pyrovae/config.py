"""The run configuration: one nested table, the same whether it comes from a TOML file,
command-line flags or Python keyword arguments.

    [data]             dataset, data_dir, binarize
    [model]            latent_dim, hidden, network
    [model.prior]      kind = "normal", ...           (see pyrovae.priors.PRIORS)
    [model.likelihood] kind = "bernoulli", ...        (see pyrovae.likelihoods.LIKELIHOODS)
    [train]            loss, num_particles, estimator, epochs, batch_size, lr, device, seed,
                       beta, warmup_epochs, free_bits
    [logging]          tensorboard, plots
"""

import copy
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["DEFAULTS", "default_config", "load_toml", "merge", "validate", "dumps", "parse_value", "DATASET_LIKELIHOODS"]

DEFAULTS = {
    "data": {"dataset": "mnist", "binarize": "auto"},
    "model": {
        "latent_dim": 2,
        "hidden": [400],
        "network": "mlp",
        "prior": {"kind": "normal"},
        "likelihood": {"kind": "auto"},
    },
    "train": {
        "loss": "meanfield",
        "num_particles": 1,
        "estimator": "standard",
        "epochs": 10,
        "batch_size": 128,
        "lr": 1e-3,
        "device": "auto",
        "seed": 0,
        "beta": 1.0,
        "warmup_epochs": 0.0,
        "free_bits": 0.0,
    },
    "logging": {"tensorboard": False, "plots": True},
}

# The likelihood a dataset gets when the config says "auto".
DATASET_LIKELIHOODS = {
    "mnist": {"kind": "bernoulli"},
    "fashion-mnist": {"kind": "bernoulli"},
    "binarized-mnist": {"kind": "bernoulli"},
    "frey": {"kind": "gaussian", "scale": "learned", "mean": "sigmoid"},
}

_TYPES = {
    ("data", "dataset"): str,
    ("data", "data_dir"): str,
    ("data", "binarize"): str,
    ("model", "latent_dim"): int,
    ("model", "hidden"): list,
    ("model", "network"): str,
    ("model", "prior"): dict,
    ("model", "likelihood"): dict,
    ("train", "loss"): str,
    ("train", "num_particles"): int,
    ("train", "estimator"): str,
    ("train", "epochs"): int,
    ("train", "batch_size"): int,
    ("train", "lr"): float,
    ("train", "device"): str,
    ("train", "seed"): int,
    ("train", "beta"): float,
    ("train", "warmup_epochs"): float,
    ("train", "free_bits"): float,
    ("logging", "tensorboard"): bool,
    ("logging", "plots"): bool,
}


def default_config():
    return copy.deepcopy(DEFAULTS)


def load_toml(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {error}") from None


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


def validate(config):
    """Checks section names, keys and types; returns the config with defaults filled in."""
    config = merge(default_config(), config)
    for section, table in config.items():
        if section not in DEFAULTS:
            raise ValueError(f"unknown config section [{section}]; sections are {sorted(DEFAULTS)}")
        for key, value in table.items():
            expected = _TYPES.get((section, key))
            if expected is None:
                known = sorted(k for s, k in _TYPES if s == section)
                raise ValueError(f"unknown key {key!r} in [{section}]; known keys: {known}")
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                table[key] = value = float(value)
            if expected is int and isinstance(value, bool) or not isinstance(value, expected):
                raise ValueError(f"[{section}] {key} must be a {expected.__name__}; got {value!r}")
    for key in ("prior", "likelihood"):
        if "kind" not in config["model"][key]:
            raise ValueError(f"[model.{key}] needs a 'kind'")
    return config


def resolve_likelihood(config, data_is_binary_or_unit):
    """Replaces likelihood kind "auto" by the dataset's usual choice."""
    spec = config["model"]["likelihood"]
    if spec.get("kind") != "auto":
        return spec
    dataset = config["data"]["dataset"]
    if dataset in DATASET_LIKELIHOODS:
        return dict(DATASET_LIKELIHOODS[dataset])
    return {"kind": "bernoulli"} if data_is_binary_or_unit else {"kind": "gaussian", "scale": 1.0}


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
