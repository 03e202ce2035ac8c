"""Files written atomically: a crash, a kill or a full disk leaves the old file or the new one,
never a part, and a failed write says what is on disk and why (:class:`RunFolderWriteError`).
Below the run folder (:mod:`pyrovae.run_folder`), so that anything writing a file (the
estimators' finished pieces of a long evaluation among them) writes it this way without knowing
run folders or models."""

import errno
import os
import tempfile
from pathlib import Path

__all__ = ["RunFolderWriteError", "atomic_write", "atomic_write_text", "generation_path"]


class RunFolderWriteError(OSError):
    """A file of a run folder could not be written (a full disk, a read-only folder); what was on
    disk before is left as it was. The message names the file, the cause and how to go on."""


def generation_path(path, generation: int) -> Path:
    """``checkpoint.pt`` for generation 0, ``checkpoint.1.pt`` for 1, ...: the same stem for any
    checkpoint file name."""
    path = Path(path)
    return path if generation == 0 else path.with_name(f"{path.stem}.{generation}{path.suffix}")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _write_failure(path, error, exists):
    """The :class:`RunFolderWriteError` of a failed write of ``path``; ``exists`` says what was on
    disk before (and still is)."""
    reason = ("the disk is full" if getattr(error, "errno", None) in _NO_SPACE else
              "the folder is read-only or not writable" if getattr(error, "errno", None) in (errno.EROFS, errno.EACCES,
                                                                                             errno.EPERM) else
              "the write failed")
    before = f"the previous {Path(path).name} is intact" if exists else f"no {Path(path).name} existed before"
    return RunFolderWriteError(getattr(error, "errno", None) or errno.EIO,
                               f"could not write {str(path)!r}: {reason} ({error}); {before}")


def _temporary(path):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a run's files get the usual mode
    return fd, tmp


def _sync_folder(folder):
    """fsync a folder, so the renames in it survive a power cut (where the platform allows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write, keep_previous: int = 0):
    """Calls ``write(file)`` on a temporary file beside ``path``, flushes it to disk, then renames
    it over ``path``: readers see the old file or the new one, never a part. With
    ``keep_previous`` = g > 0 the file it replaces becomes generation 1 (``name.1.ext``, a hard
    link made before the rename, so ``path`` exists at every instant) and the older ones move one
    generation back, up to g. On any error the temporary file is removed, ``path`` is left as it
    was, and an ``OSError`` becomes a :class:`RunFolderWriteError` that says so."""
    path = Path(path)
    existed = path.exists()
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _temporary(path)
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        if keep_previous and existed:
            _rotate(path, keep_previous)
        os.replace(tmp, path)
        tmp = None
        _sync_folder(path.parent)
    except OSError as error:
        if isinstance(error, RunFolderWriteError):
            raise
        raise _write_failure(path, error, existed) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _rotate(path, generations):
    """name.(g-1).ext -> name.g.ext, ..., then name.ext linked as name.1.ext."""
    for generation in range(generations - 1, 0, -1):
        older = generation_path(path, generation)
        if older.exists():
            os.replace(older, generation_path(path, generation + 1))
    link = path.with_name(f".{path.name}.link.tmp")
    link.unlink(missing_ok=True)
    try:
        os.link(path, link)
        os.replace(link, generation_path(path, 1))
    except OSError as error:
        link.unlink(missing_ok=True)
        if error.errno in _NO_SPACE:
            raise
        os.replace(path, generation_path(path, 1))  # a filesystem without hard links: a rename


def atomic_write_text(path, text):
    atomic_write(path, lambda f: f.write(text.encode()))
