"""Deprecated: the VAE's fast path moved to the model (:mod:`pyrovae.models.vae_fast_path`, offered
by :meth:`pyrovae.VAE.fast_weight_parts`); this path warns and goes in pyrovae 0.5."""

from .._deprecated import moved_module_getattr

__getattr__ = moved_module_getattr(__name__, None, {"fast_vae": "pyrovae.models.vae",
                                                    "vae_weight_parts": "pyrovae.models.vae_fast_path"})
