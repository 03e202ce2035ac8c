"""Old import paths of names that moved, kept for one minor version: each access warns with a
DeprecationWarning naming the new path."""

import importlib
import warnings

__all__ = ["moved_module_getattr"]


def moved_module_getattr(old, new, names=None):
    """A module ``__getattr__`` for module ``old`` whose public names now live in module ``new``
    (all of them, or those in ``names`` mapped to their new modules)."""

    def __getattr__(name):
        target = new if names is None else names.get(name)
        if target is None or name.startswith("__"):
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        warnings.warn(f"{old}.{name} moved to {target}.{name}; the old path goes in pyrovae 0.5", DeprecationWarning,
                      stacklevel=2)
        return getattr(importlib.import_module(target), name)

    return __getattr__
