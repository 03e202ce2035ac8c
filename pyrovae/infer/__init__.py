"""Inference: the per-example log weights every number comes from, the VAE's fast path for
them, and the Pyro ELBOs (objectives and gradient estimators) built on them."""

from .elbo import ESTIMATOR_LOSSES, IWAE_ELBO, LOSSES, VAE_ELBO, check_estimator, make_elbo
from .weights import ESTIMATORS, WeightParts, log_weight_parts, trace_weight_parts

__all__ = ["WeightParts", "log_weight_parts", "trace_weight_parts", "ESTIMATORS", "LOSSES", "ESTIMATOR_LOSSES",
           "VAE_ELBO", "IWAE_ELBO", "make_elbo", "check_estimator"]
