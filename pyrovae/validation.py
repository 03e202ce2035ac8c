"""The one check behind every "bad value" error: name the first offending entry."""

import torch

__all__ = ["first_violation", "require", "require_finite", "require_positive_int"]


def first_violation(x, ok):
    """(index, value, count) of the first entry of ``x`` where ``ok`` is False, or None."""
    bad = ~ok
    if not bool(bad.any()):
        return None
    index = tuple(int(i) for i in bad.nonzero()[0])
    return index, float(x[index]), int(bad.sum())


def require(x, ok, message):
    """Raises ValueError(``message``: the first offending value, its index and how many) unless
    ``ok`` holds everywhere."""
    found = first_violation(x, ok)
    if found is not None:
        index, value, count = found
        raise ValueError(f"{message}; found {value!r} at index {index} ({count} of {x.numel()} values break it)")


def require_finite(x, what):
    require(x, torch.isfinite(x), f"{what}: values must not be NaN or infinite")


def require_positive_int(value, name):
    """Raises ValueError unless ``value`` is an integer >= 1 (a bool is not); returns it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return value
