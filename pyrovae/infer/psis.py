r"""How far an importance-sampling estimate can be trusted, per example, from its own weights.

- **Pareto k** (Vehtari et al. 2015/2024, "Pareto smoothed importance sampling"): the shape of a
  generalized Pareto distribution fitted (Zhang & Stephens 2009) to the largest
  M = min(K / 5, 3 sqrt(K)) weights. The weights' distribution has finite moments of order < 1/k:
  k < 0.5, a finite variance, the estimate converges at the usual rate; 0.5 <= k < 0.7, a finite
  mean but an infinite variance, the estimate converges slowly and its standard error is not to
  be trusted; k >= 0.7, the estimate may be far off and more samples will not fix it soon (the
  proposal q(z|x) is too narrow for the posterior). The fit is ArviZ's (``arviz_stats``), the
  reference implementation of PSIS.
- **Effective sample size** of the self-normalized weights, (sum w)^2 / sum w^2 = 1 / sum w~^2:
  near K where q(z|x) is the posterior, near 1 where one draw dominates.
"""

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["ImportanceDiagnostics", "pareto_k", "effective_sample_size", "PARETO_K_BAD", "PARETO_K_SLOW"]

PARETO_K_SLOW = 0.5  # above: an infinite variance, slow convergence
PARETO_K_BAD = 0.7  # above: not to be trusted (Vehtari et al.'s threshold for large K)


@dataclass
class ImportanceDiagnostics:
    """Per example: ``pareto_k`` and ``ess`` (effective sample size, out of ``num_samples``);
    ``weighting`` says how the weights were formed where a choice was made (a discrete latent
    summed over its values or sampled from the guide; the samples drawn on a particle plate or as
    repeats of the batch)."""

    pareto_k: torch.Tensor
    ess: torch.Tensor
    num_samples: int
    weighting: dict = field(default_factory=dict)

    def summary(self):
        """The numbers a report gives: the share and count of examples with k > 0.7, of those
        with 0.5 < k <= 0.7, the worst and median k, the median ESS."""
        k = self.pareto_k.double()
        bad = k > PARETO_K_BAD
        slow = (k > PARETO_K_SLOW) & ~bad
        fitted = not bool(k.isnan().all())  # K < 25: no fit (NaN throughout)
        worst, median = float(k.nan_to_num(-float("inf")).max()), float(k.nanmedian())
        return {"pareto_k_above_0.7": int(bad.sum()), "pareto_k_above_0.7_share": float(bad.double().mean()),
                "pareto_k_0.5_to_0.7": int(slow.sum()),
                # -inf (all weights equal, an exact proposal) is not JSON: reported as None with the count
                "pareto_k_max": worst if fitted and math.isfinite(worst) else None,
                "pareto_k_median": median if fitted and math.isfinite(median) else None,
                "pareto_k_exact": int(torch.isneginf(k).sum()),
                "ess_median": float(self.ess.double().median()), "num_samples": self.num_samples,
                **({"weighting": dict(self.weighting)} if self.weighting else {})}


def _arviz_psis():
    """ArviZ's array functions, or None where arviz-stats is missing (it needs Python 3.11)."""
    try:
        from arviz_stats.base.array import array_stats
    except ImportError:
        warnings.warn("the Pareto k diagnostic needs arviz-stats (pip install arviz-stats; Python >= 3.11): k is "
                      "reported as NaN", RuntimeWarning, stacklevel=3)
        return None
    return array_stats


def pareto_k(log_weights: torch.Tensor) -> torch.Tensor:
    """The PSIS shape k per example of log weights shaped (K, N) (samples first), by ArviZ's
    generalized Pareto fit to the largest weights; NaN where K < 25 leaves fewer than the five
    tail draws the fit needs."""
    if log_weights.dim() != 2:
        raise ValueError(f"log_weights must be (num_samples, num_examples); got shape {tuple(log_weights.shape)}")
    too_few = min(len(log_weights) / 5, 3 * len(log_weights) ** 0.5) < 5  # draws for a tail of 5
    psis = None if too_few else _arviz_psis()
    if psis is None:
        return torch.full(log_weights.shape[1:], float("nan"), dtype=torch.float64, device=log_weights.device)
    array = log_weights.detach().double().cpu().numpy()
    # arviz's psislw takes the negated log ratios (its LOO convention: ratios 1 / p(y_i | theta))
    try:
        with np.errstate(divide="ignore", invalid="ignore"):  # the examples' own tails are checked below
            _, k = psis.psislw(-array, r_eff=1.0, axis=0)
    except ValueError:  # "All tail values are the same" for some example: fit the others one by one
        k = np.array([_column_k(psis, array[:, n]) for n in range(array.shape[1])])
    return torch.as_tensor(np.asarray(k, dtype=np.float64), device=log_weights.device)


def _column_k(psis, column):
    """k of one example's log weights; -inf where the largest weights are all equal (a proposal
    that is the posterior itself gives every draw the same weight: every moment is finite)."""
    try:
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(psis.psislw(-column, r_eff=1.0, axis=0)[1])
    except ValueError:
        return -np.inf


def effective_sample_size(log_weights: torch.Tensor) -> torch.Tensor:
    """(sum_k w_k)^2 / sum_k w_k^2 per example of log weights shaped (K, N)."""
    lw = log_weights.double()
    return torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0))
