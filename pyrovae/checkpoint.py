"""Run-folder files written atomically (a crash never leaves half a file), checkpoints that
say what is wrong with them, and ``load(run_dir)``."""

import json
import os
import tempfile
from pathlib import Path

import torch

__all__ = ["atomic_write", "save_checkpoint", "read_checkpoint", "load", "CHECKPOINT", "METRICS"]

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
CONFIG = "config.toml"
FORMAT = "pyrovae-checkpoint-v1"


def atomic_write(path, write):
    """Calls ``write(file)`` on a temporary file beside ``path``, then renames it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a run's files get the usual mode
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path, text):
    atomic_write(path, lambda f: f.write(text.encode()))


def write_metrics(run_dir, history):
    atomic_write_text(Path(run_dir) / METRICS, "".join(json.dumps(row) + "\n" for row in history))


def save_checkpoint(path, state):
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **state}, f))


def read_checkpoint(path, map_location="cpu"):
    """The checkpoint's dict, or a clear error for a missing, corrupt or foreign file."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r} (a run folder holds {CHECKPOINT} after its first epoch)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:
        raise ValueError(f"corrupt checkpoint {str(path)!r}: {type(error).__name__}: {error}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a pyrovae checkpoint (expected format {FORMAT!r})")
    return state


def build_vae(model_config):
    from .model import VAE

    config = dict(model_config)
    config["data_shape"] = tuple(config["data_shape"])
    config["hidden"] = tuple(config["hidden"])
    for key in ("prior", "likelihood"):
        if config[key].get("kind") == "custom":
            raise ValueError(
                f"this run used a custom {key} object, which a checkpoint cannot rebuild; "
                f"build the VAE yourself and load the state with vae.load_state_dict(read_checkpoint(run_dir)['model'])"
            )
    return VAE(**config)


def load(run_dir, device="cpu"):
    """The trained VAE of a run folder (or a checkpoint file), in eval mode, on ``device``."""
    state = read_checkpoint(run_dir, map_location=device)
    vae = build_vae(state["model_config"])
    try:
        vae.load_state_dict(state["model"])
    except RuntimeError as error:
        raise ValueError(f"checkpoint in {str(run_dir)!r} does not match its own model config: {error}") from None
    return vae.to(device).eval()
