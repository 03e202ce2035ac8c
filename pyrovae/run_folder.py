"""The run folder as an object that knows its files, writes each of them atomically (a crash
never leaves half a file), and reads checkpoints safely.

    config.toml       the resolved run config
    checkpoint.pt     the last checkpoint (written every epoch)
    metrics.jsonl     one JSON object per epoch
    evaluation.json   what ``pyrovae evaluate`` measured
    figures           ``*.png`` and ``report.html``

Checkpoints hold tensors and plain types only, and every reader loads them with
``torch.load(weights_only=True)``: a checkpoint carrying any other object (a pickle that could
run code) is refused unless the caller passes ``trust=True`` for a file they trust.
"""

import fcntl
import json
import os
import pickle
import socket
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch

__all__ = ["RunFolder", "RunFolderLocked", "atomic_write", "atomic_write_text", "load", "vae_from_state", "read_checkpoint",
           "UntrustedCheckpoint",
           "CHECKPOINT", "METRICS", "CONFIG", "EVALUATION", "FORMAT"]

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
CONFIG = "config.toml"
EVALUATION = "evaluation.json"
FORMAT = "pyrovae-checkpoint-v2"
_READABLE_FORMATS = ("pyrovae-checkpoint-v1", FORMAT)


class UntrustedCheckpoint(ValueError):
    """A checkpoint holds objects other than tensors and plain types; loading it could run code."""


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write):
    """Calls ``write(file)`` on a temporary file beside ``path``, flushes it to disk, then renames
    it over ``path``: readers see the old file or the new one, never a part. On any error the
    temporary file is removed and ``path`` is left as it was."""
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


def atomic_write_text(path, text):
    atomic_write(path, lambda f: f.write(text.encode()))


def read_checkpoint(path, map_location="cpu", trust=False) -> Dict:
    """The checkpoint's dict, or a clear error for a missing, corrupt, foreign or unsafe file.

    :param trust: load with ``weights_only=False`` (UNSAFE: a malicious file runs code); only for
        a checkpoint you made or trust, written by another program.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r} (a run folder holds {CHECKPOINT} after its first epoch)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as error:
        globals_named = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line]
        if not trust and globals_named:
            raise UntrustedCheckpoint(
                f"refused {str(path)!r}: it holds objects other than tensors and plain types, which could run code "
                f"when loaded ({globals_named[0][:200]}). If you trust the file, load it with trust=True "
                "(--trust-checkpoint); it is unsafe otherwise"
            ) from None
        raise ValueError(f"corrupt checkpoint {str(path)!r}: {type(error).__name__}: {error}") from None
    except Exception as error:
        raise ValueError(f"corrupt checkpoint {str(path)!r}: {type(error).__name__}: {error}") from None
    if not isinstance(state, dict) or state.get("format") not in _READABLE_FORMATS:
        raise ValueError(f"{str(path)!r} is not a pyrovae checkpoint (expected format {FORMAT!r})")
    return state


class RunFolderLocked(RuntimeError):
    """Another process is writing this run folder."""


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


class RunFolder:
    """One run's folder: where each file lives, and how it is written and read.

    :param config: the run's resolved config (a nested dict), saved inside each checkpoint.
    """

    def __init__(self, path: Union[str, Path], config: Optional[Dict] = None):
        self.path = Path(path)
        self.config = config
        self._locked = False

    def __repr__(self):
        return f"RunFolder({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG

    @property
    def evaluation(self) -> Path:
        return self.path / EVALUATION

    def exists(self) -> bool:
        return self.path.is_dir()

    def write_config(self, config: Dict):
        from .config import dumps

        self.config = config
        atomic_write_text(self.config_file, dumps(config))

    def save_checkpoint(self, state: Dict, path: Optional[Path] = None):
        atomic_write(path or self.checkpoint, lambda f: torch.save({"format": FORMAT, **state}, f))

    def read_checkpoint(self, map_location="cpu", trust=False, path: Optional[Path] = None) -> Dict:
        return read_checkpoint(path or self.checkpoint, map_location=map_location, trust=trust)

    def write_metrics(self, history: List[Dict]):
        atomic_write_text(self.metrics, "".join(json.dumps(row) + "\n" for row in history))

    def read_metrics(self) -> List[Dict]:
        if not self.metrics.is_file():
            raise FileNotFoundError(f"no {METRICS} in {str(self.path)!r}: train first")
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def write_json(self, name: str, value):
        atomic_write_text(self.file(name), json.dumps(value, indent=2) + "\n")

    @contextmanager
    def lock(self):
        """Holds the folder's writer lock (``.lock``, an advisory ``flock`` the OS releases when
        the process dies) for the block. A second writer gets :class:`RunFolderLocked` at once,
        naming the process that holds the folder; a lock left by a process that is gone (killed)
        is taken over with a warning, and the temporary files it left half-written are removed. Readers (``evaluate``, ``plot``, ``report``) take no lock:
        every file is replaced atomically, so they always read a whole one."""
        if self._locked:  # held already by this object (train_run holds it around fit)
            yield self
            return
        self.path.mkdir(parents=True, exist_ok=True)
        path = self.path / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunFolderLocked(
                f"run folder {str(self.path)!r} is being written by {holder}; wait for it to finish, stop it, "
                "or train into another folder"
            ) from None
        previous = os.pread(fd, 200, 0).decode(errors="replace").split()
        if previous and previous[0].startswith("pid="):
            pid = int(previous[0][4:])
            if pid != os.getpid() and not _process_alive(pid):
                warnings.warn(f"run folder {str(self.path)!r}: taking over the lock of process {pid}, which is gone "
                              "(it was stopped without releasing it)", stacklevel=3)
        for leftover in self.path.glob(".*.tmp"):  # half-written files of a writer that was killed
            leftover.unlink(missing_ok=True)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid={os.getpid()} host={socket.gethostname()} since={time.strftime('%Y-%m-%dT%H:%M:%S')}".encode(), 0)
        self._locked = True
        try:
            yield self
        finally:
            self._locked = False
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def build_vae(model_config, model_class=None):
    """A VAE from a checkpoint's model config; ``model_class`` for a subclass (which a
    checkpoint names but never imports)."""
    from .models import model_class as family

    config = dict(model_config)
    cls = model_class or family(config.pop("model", "vae"))
    config.pop("model", None)
    config["data_shape"] = tuple(config["data_shape"])
    for key in ("hidden", "middle_hidden", "baseline_hidden"):
        if key in config:
            config[key] = tuple(config[key])
    config.setdefault("activation", "relu")  # checkpoints of 0.1 had no choice
    for key in ("prior", "likelihood"):
        if config[key].get("kind") == "custom":
            raise ValueError(
                f"this run used a custom {key} object, which a checkpoint cannot rebuild; build the VAE "
                "yourself and load the state with vae.load_state_dict(read_checkpoint(run_dir)['model'])"
            )
    return cls(**config)


def load(run_dir: Union[str, Path], device: Union[str, torch.device] = "cpu", model_class: Optional[type] = None,
         trust: bool = False):
    """The trained VAE of a run folder (or a checkpoint file), in eval mode, on ``device``.

    :param model_class: the VAE subclass the run trained (a checkpoint names it, and a run of a
        subclass is refused without it rather than rebuilt as the base VAE).
    :param trust: see :func:`read_checkpoint` (unsafe).
    """
    state = read_checkpoint(run_dir, map_location=device, trust=trust)
    return vae_from_state(state, device, model_class, where=run_dir)


def vae_from_state(state: Dict, device: Union[str, torch.device] = "cpu", model_class: Optional[type] = None,
                   where=""):
    """The VAE a checkpoint's dict describes, its weights loaded, in eval mode, on ``device``
    (``model_class`` as in :func:`load`)."""
    from .models.vae import VAE
    from .models import MODELS

    saved_class = state.get("model_class", f"{VAE.__module__}.{VAE.__qualname__}")
    # and the name checkpoints of pyrovae 0.3 give the VAE (its module was pyrovae.model)
    built_in = {f"{cls.__module__}.{cls.__qualname__}" for cls in MODELS.values()} | {"pyrovae.model.VAE"}
    if model_class is None and saved_class not in built_in:
        raise ValueError(f"this run trained {saved_class}; pass model_class= (that class) to load it")
    if model_class is not None and not issubclass(model_class, VAE):
        raise TypeError(f"model_class must be a subclass of pyrovae.VAE; got {model_class!r}")
    vae = build_vae(state["model_config"], model_class)
    try:
        vae.load_state_dict(state["model"])
    except RuntimeError as error:
        raise ValueError(f"checkpoint in {str(where)!r} does not match its own model config: {error}") from None
    return vae.to(device).eval()
