"""Deprecated: the estimators moved to :mod:`pyrovae.estimate` (``pyrovae.estimate.importance``);
this path warns and goes in pyrovae 0.5."""

from ._deprecated import moved_module_getattr

__getattr__ = moved_module_getattr(__name__, "pyrovae.estimate.importance")
