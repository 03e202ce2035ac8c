"""Estimators of log p(x) and their checks, for any Pyro model and guide: importance sampling with
PSIS diagnostics, the IWAE bound and the ELBO, the bound ordering check
(:mod:`pyrovae.estimate.importance`), annealed importance sampling and BDMC
(:mod:`pyrovae.estimate.ais`), the per-word perplexity of a bag-of-words model
(:mod:`pyrovae.estimate.perplexity`), and ``METHODS``, the table from ``--method`` to estimator and
summary (:mod:`pyrovae.estimate.methods`)."""

from .importance import (BoundCheck, BoundViolationWarning, Evaluation, check_bounds, elbo, elbo_terms,
                         evaluation_of, iwae_bound, log_likelihood, log_weights)
from .ais import AISResult, BDMCResult, ais_log_likelihood, annealing_schedule, bdmc
from .perplexity import log_multinomial_coefficient, perplexity
from .methods import METHODS, ImportanceSamplingWarning, Method, ais_summary, bdmc_summary, evaluate_examples

__all__ = ["log_likelihood", "log_weights", "elbo", "elbo_terms", "iwae_bound", "check_bounds", "BoundCheck",
           "BoundViolationWarning", "Evaluation", "evaluation_of", "ais_log_likelihood", "bdmc", "annealing_schedule",
           "AISResult", "BDMCResult", "METHODS", "Method", "ais_summary", "bdmc_summary", "evaluate_examples",
           "ImportanceSamplingWarning", "perplexity", "log_multinomial_coefficient"]
