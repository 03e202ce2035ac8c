"""The compiled steps' kernels kept between processes, and what compiling a step cost here.

``torch.compile`` keeps what it builds (Inductor's generated and compiled C++ kernels, AOTAutograd's
graphs) in a cache folder, ``$TORCHINDUCTOR_CACHE_DIR``: a process that compiles a graph compiled
before loads it instead of building it again. For the MNIST VAE's whole step (nine steps a call),
on a 2-vCPU Intel Xeon: 40 s the first time, most of it building some thirty C++ kernels, and 4 s
from the cache (Dynamo's tracing, which no cache skips). Inductor's default folder is
``/tmp/torchinductor_<user>``, which many systems empty at boot, so pyrovae compiles its steps with
that folder in the user's cache (:mod:`pyrovae.user_cache`, ``compiled/``): set while a graph of
pyrovae's compiles (:func:`kernels_in_user_cache`), restored after, and left alone where the user
named a folder of their own in ``TORCHINDUCTOR_CACHE_DIR``.

Each compile's time is kept with the step's structure in the machine's records
(:mod:`pyrovae.fast.machine_choices`), so that ``compile="auto"`` knows a step compiled here
before (:func:`compiled_before`): a run of that step pays the cached compile only, and compiles
from fewer steps (``pyrovae.fast.compiled.AUTO_MIN_STEPS_CACHED``).
"""

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Optional

from ..user_cache import cache_dir
from .machine_choices import lookup, record

__all__ = ["kernels_folder", "kernels_in_user_cache", "structure_name", "record_compile", "compiled_before"]


def kernels_folder() -> Path:
    """Where pyrovae's compiled steps keep torch's compile caches: ``<user cache>/compiled``."""
    return cache_dir() / "compiled"


def _user_named_folder() -> Optional[str]:
    """``TORCHINDUCTOR_CACHE_DIR`` where it names a folder other than torch's default (which torch
    itself writes into the variable on first use), else None."""
    named = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if named is None:
        return None
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:
        return named
    return None if os.path.abspath(named) == os.path.abspath(default_cache_dir()) else named


@contextlib.contextmanager
def kernels_in_user_cache():
    """Inside, torch's compile caches live in :func:`kernels_folder` (unless the user named a
    folder); torch's own context for this (``temporary_cache_dir``, which also drops the in-memory
    lookups of the old folder) where this PyTorch has it, else nothing changes."""
    try:
        from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir
    except ImportError:
        temporary_cache_dir = None
    if temporary_cache_dir is None or _user_named_folder() is not None:
        yield
        return
    folder = kernels_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: torch's default folder serves
        yield
        return
    with temporary_cache_dir(str(folder)):
        yield


def structure_name(structure) -> str:
    """A stable name for a compiled graph's structure (the tuple the compiled step is keyed by)."""
    return "compiled " + hashlib.sha256(repr(structure).encode()).hexdigest()[:20]


def _folder_in_use() -> str:
    return _user_named_folder() or str(kernels_folder())


def record_compile(structure, seconds: float) -> None:
    """Keeps that a graph of ``structure`` compiled on this machine in ``seconds``, and where its kernels are."""
    previous = lookup(structure_name(structure)) or {}
    record(structure_name(structure), {
        "first_compile_seconds": previous.get("first_compile_seconds", round(float(seconds), 2)),
        "last_compile_seconds": round(float(seconds), 2), "kernels": _folder_in_use(),
        "structure": repr(structure)[:500]})


def compiled_before(structure) -> bool:
    """Whether a graph of ``structure`` was compiled on this machine (this processor, torch and
    thread count) and the folder its kernels went to still holds a cache."""
    found = lookup(structure_name(structure))
    if found is None:
        return False
    folder = Path(found.get("kernels", ""))
    return folder == Path(_folder_in_use()) and folder.is_dir() and any(folder.iterdir())
