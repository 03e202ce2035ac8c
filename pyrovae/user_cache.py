"""The user's cache folder for pyrovae: ``$XDG_CACHE_HOME/pyrovae`` (default ``~/.cache/pyrovae``).

It holds what can be rebuilt but is worth keeping between runs: downloaded datasets
(:mod:`pyrovae.datasets`), the kernel choices measured on this machine
(:mod:`pyrovae.fast.machine_choices`) and compiled training steps
(:mod:`pyrovae.fast.compile_cache`). Deleting it loses nothing but time."""

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/pyrovae``, or ``~/.cache/pyrovae`` where the variable is unset (read at each call)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "pyrovae"
