"""The run folder as an object that knows its files, writes each of them atomically (a crash
never leaves half a file), and reads checkpoints safely.

    config.toml       the resolved run config
    checkpoint.pt     the newest checkpoint (written every epoch)
    checkpoint.1.pt   the one before it (``keep_checkpoints`` generations in all, 2 by default)
    best.pt           the best validation epoch, where the run has a validation set
    metrics.jsonl     one JSON object per epoch
    evaluation.json   what ``pyrovae evaluate`` measured
    figures           ``*.png`` and ``report.html``

Checkpoints hold tensors and plain types only, and every reader loads them with
``torch.load(weights_only=True)``: a checkpoint carrying any other object (a pickle that could
run code) is refused unless the caller passes ``trust=True`` for a file they trust.

**Integrity.** A checkpoint is torch's serialized bytes followed by one line, the SHA-256 of those
bytes (:data:`DIGEST_PREFIX`), written in the same atomic rename; every read verifies it, so a
flipped byte is :class:`CheckpointCorrupt` ("does not match its digest"), never silently used.
A checkpoint of pyrovae 0.3 (no digest line) loads with a note. **Generations.** A new checkpoint
becomes ``checkpoint.pt`` and the one it replaces ``checkpoint.1.pt`` (a hard link, so
``checkpoint.pt`` exists at every instant); reading a run folder falls back to the newest intact
generation with a warning naming the file it skipped and why. **Failed writes** (a full disk, a
read-only folder) raise :class:`RunFolderWriteError`, which names the file, the cause, what is on
disk, and how to go on; what was on disk before stays as it was.
"""

import fcntl
import hashlib
import json
import os
import pickle
import socket
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch

from .atomic_files import RunFolderWriteError, atomic_write, atomic_write_text, generation_path  # noqa: F401
from .config import dumps
from .models import MODELS, VAE
from .models import model_class as model_class_named

__all__ = ["RunFolder", "RunFolderLocked", "RunFolderWriteError", "CheckpointCorrupt", "CheckpointFallbackWarning", "atomic_write",
           "atomic_write_text", "load", "vae_from_state", "read_checkpoint", "read_checkpoint_file", "write_checkpoint", "UntrustedCheckpoint",
           "CHECKPOINT", "METRICS", "CONFIG", "EVALUATION", "FORMAT", "DIGEST_PREFIX", "generation_path"]

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
CONFIG = "config.toml"
EVALUATION = "evaluation.json"
FORMAT = "pyrovae-checkpoint-v3"  # v3: the digest line; v1, v2 (pyrovae <= 0.3) have none
_READABLE_FORMATS = ("pyrovae-checkpoint-v1", "pyrovae-checkpoint-v2", FORMAT)
DIGEST_PREFIX = b"\n#pyrovae-sha256:"
_DIGEST_LINE = len(DIGEST_PREFIX) + 64 + 1  # prefix, 64 hex digits, newline


class UntrustedCheckpoint(ValueError):
    """A checkpoint holds objects other than tensors and plain types; loading it could run code."""


class CheckpointCorrupt(ValueError):
    """A checkpoint cannot be read as written: truncated, damaged, or not matching its digest."""


class CheckpointFallbackWarning(UserWarning):
    """The newest checkpoint was not intact; an earlier generation was read instead."""


class _HashingWriter:
    """A file that hashes what torch writes into it and keeps the ``OSError`` of a failed write
    (torch's writer turns it into a RuntimeError of its own)."""

    def __init__(self, file):
        self.file, self.hash, self.error = file, hashlib.sha256(), None

    def write(self, data):
        try:
            written = self.file.write(data)
        except OSError as error:
            self.error = error
            raise
        self.hash.update(data)
        return written

    def flush(self):
        self.file.flush()


def write_checkpoint(file, state: Dict):
    """Writes a checkpoint into the open binary ``file``: torch's serialization of ``state``,
    hashed as it is written, then its digest line. A full disk is the write's ``OSError``, not
    torch's RuntimeError."""
    writer = _HashingWriter(file)
    try:
        torch.save(state, writer)
    except Exception:
        if writer.error is not None:
            raise writer.error from None
        raise
    file.write(DIGEST_PREFIX + writer.hash.hexdigest().encode() + b"\n")


def read_checkpoint(path, map_location="cpu", trust=False) -> Dict:
    """The checkpoint's dict, or a clear error for a missing, corrupt, foreign or unsafe file. A
    run folder (or its ``checkpoint.pt``) falls back to the newest intact generation
    (:meth:`RunFolder.read_checkpoint`).

    :param trust: load with ``weights_only=False`` (UNSAFE: a malicious file runs code); only for
        a checkpoint you made or trust, written by another program.
    """
    path = Path(path)
    if path.is_dir():
        return RunFolder(path).read_checkpoint(map_location=map_location, trust=trust)
    return read_checkpoint_file(path, map_location, trust)


def read_checkpoint_file(path, map_location="cpu", trust=False) -> Dict:
    """One checkpoint file's dict, its digest verified (:class:`CheckpointCorrupt` where it does
    not match), or a clear error for a missing, foreign or unsafe file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r} (a run folder holds {CHECKPOINT} after its first epoch)")
    verified = False
    with open(path, "rb") as file:  # hashed in pieces: a large checkpoint is never held twice
        size = file.seek(0, os.SEEK_END)
        if size >= _DIGEST_LINE:
            file.seek(size - _DIGEST_LINE)
            digest_line = file.read(_DIGEST_LINE)
            if digest_line.startswith(DIGEST_PREFIX) and digest_line.endswith(b"\n"):
                file.seek(0)
                digest, left = hashlib.sha256(), size - _DIGEST_LINE
                while left:
                    piece = file.read(min(left, 1 << 22))
                    if not piece:
                        break
                    digest.update(piece)
                    left -= len(piece)
                if digest.hexdigest().encode() != digest_line[len(DIGEST_PREFIX):-1]:
                    raise CheckpointCorrupt(f"checkpoint {str(path)!r} does not match its digest: its bytes changed "
                                            "after it was written (a damaged disk or copy)")
                verified = True
    try:  # torch's zip reader finds its directory before the digest line
        state = torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as error:
        globals_named = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line]
        if not trust and globals_named:
            raise UntrustedCheckpoint(
                f"refused {str(path)!r}: it holds objects other than tensors and plain types, which could run code "
                f"when loaded ({globals_named[0][:200]}). If you trust the file, load it with trust=True "
                "(--trust-checkpoint); it is unsafe otherwise"
            ) from None
        raise CheckpointCorrupt(f"corrupt checkpoint {str(path)!r}: {type(error).__name__}: {error}") from None
    except Exception as error:
        first = str(error).splitlines()[0] if str(error) else ""
        raise CheckpointCorrupt(f"corrupt checkpoint {str(path)!r} (truncated or damaged): {type(error).__name__}: "
                                f"{first}") from None
    if not isinstance(state, dict) or state.get("format") not in _READABLE_FORMATS:
        raise ValueError(f"{str(path)!r} is not a pyrovae checkpoint (expected format {FORMAT!r})")
    if state["format"] == FORMAT and not verified and not trust:
        raise CheckpointCorrupt(f"checkpoint {str(path)!r} has lost its digest line (its end is damaged); it cannot "
                                "be verified")
    if not verified:
        warnings.warn(f"checkpoint {str(path)!r} was written by pyrovae 0.3 or earlier and carries no digest: loaded "
                      "unverified", UserWarning, stacklevel=3)
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

    def __init__(self, path: Union[str, Path], config: Optional[Dict] = None, keep_checkpoints: int = 2):
        self.path = Path(path)
        self.config = config
        self.keep_checkpoints = keep_checkpoints
        self.loaded_from = None
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
        self.config = config
        atomic_write_text(self.config_file, dumps(config))

    def save_checkpoint(self, state: Dict, path: Optional[Path] = None, keep: Optional[int] = None):
        """Writes a checkpoint with its digest, atomically. ``checkpoint.pt`` keeps ``keep``
        generations (``self.keep_checkpoints`` by default: the newest and the one before);
        another ``path`` (``best.pt``) is written alone."""
        path = Path(path) if path is not None else self.checkpoint
        keep = self.keep_checkpoints if keep is None else keep
        atomic_write(path, lambda f: write_checkpoint(f, {"format": FORMAT, **state}),
                     keep_previous=keep - 1 if path == self.checkpoint else 0)

    def checkpoint_generations(self) -> List[Path]:
        """The checkpoint files on disk, newest first: ``checkpoint.pt``, ``checkpoint.1.pt``, ..."""
        found = {0: self.checkpoint} if self.checkpoint.exists() else {}
        for file in self.path.glob(f"{self.checkpoint.stem}.*{self.checkpoint.suffix}"):
            middle = file.name[len(self.checkpoint.stem) + 1:-len(self.checkpoint.suffix)]
            if middle.isdigit():
                found[int(middle)] = file
        return [found[g] for g in sorted(found)]

    def read_checkpoint(self, map_location="cpu", trust=False, path: Optional[Path] = None) -> Dict:
        """The newest intact checkpoint (or the file ``path``, alone, where it is another one):
        a generation that is truncated, damaged or does not match its digest is skipped with a
        warning naming it and why; none intact is a :class:`CheckpointCorrupt` naming each."""
        if path is not None and Path(path) != self.checkpoint:
            return read_checkpoint_file(path, map_location=map_location, trust=trust)
        generations = self.checkpoint_generations()
        if not generations:
            raise FileNotFoundError(f"no checkpoint in {str(self.path)!r} (a run folder holds {CHECKPOINT} after its "
                                    "first epoch)")
        skipped = [] if generations[0] == self.checkpoint else [(self.checkpoint, "missing")]
        for file in generations:
            try:
                state = read_checkpoint_file(file, map_location=map_location, trust=trust)
            except UntrustedCheckpoint:
                raise
            except (ValueError, OSError) as error:  # corrupt, foreign, unreadable: the next generation
                skipped.append((file, error))
                continue
            if skipped:
                warnings.warn("; ".join(f"skipped {f.name}: {e}" for f, e in skipped)
                              + f"; using {file.name} (epoch {state.get('epoch')}, step {state.get('step', 0)}): "
                              "at most one checkpoint interval is lost", CheckpointFallbackWarning, stacklevel=2)
            self.loaded_from = file
            return state
        raise CheckpointCorrupt(f"no intact checkpoint in {str(self.path)!r}: "
                                + "; ".join(f"{f.name}: {e}" for f, e in skipped)
                                + ". The run cannot be resumed from it: train again into a new folder")

    def write_metrics(self, history: List[Dict]):
        atomic_write_text(self.metrics, "".join(json.dumps(row) + "\n" for row in history))

    def read_metrics(self) -> List[Dict]:
        """The rows of ``metrics.jsonl``; a damaged file is a named error (the checkpoint holds the
        history too, and training rewrites the file from it at every epoch's end)."""
        if not self.metrics.is_file():
            raise FileNotFoundError(f"no {METRICS} in {str(self.path)!r}: train first")
        rows = []
        for number, line in enumerate(self.metrics.read_bytes().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as error:
                raise ValueError(f"{str(self.metrics)!r} is damaged at line {number} ({error}); the checkpoint holds "
                                 "the history: a resumed run rewrites the file at its next epoch") from None
            if not isinstance(row, dict):
                raise ValueError(f"{str(self.metrics)!r} is damaged at line {number}: not a JSON object")
            rows.append(row)
        return rows

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
    config = dict(model_config)
    cls = model_class or model_class_named(config.pop("model", "vae"))
    config.pop("model", None)
    config["data_shape"] = tuple(config["data_shape"])
    for key in ("hidden", "middle_hidden", "baseline_hidden"):
        if key in config:
            config[key] = tuple(config[key])
    config.setdefault("activation", "relu")  # checkpoints of 0.1 had no choice
    for key in ("prior", "likelihood", "guide"):
        if config.get(key, {}).get("kind") == "custom":
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
