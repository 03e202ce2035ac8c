"""Deprecated: AIS and BDMC moved to :mod:`pyrovae.estimate.ais`; this path warns and goes in
pyrovae 0.5."""

from .._deprecated import moved_module_getattr

__getattr__ = moved_module_getattr(__name__, "pyrovae.estimate.ais")
