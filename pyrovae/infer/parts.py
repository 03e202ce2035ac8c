"""What the log weights are made of: :class:`WeightParts`, and the helpers both paths use to build
them (per-coordinate KL for free bits, distributions with stopped parameters for STL and DReG)."""

from typing import Dict, List, Optional, Tuple

import torch
from pyro.distributions.util import scale_and_mask
from torch.distributions import Independent, LowRankMultivariateNormal, Normal, kl_divergence

__all__ = ["WeightParts", "detach_distribution", "per_dim_factor", "require_per_dim_factor", "scaled_per_dim",
           "closed_form_kl"]


class WeightParts:
    """The terms of log w per draw and example, each of shape ``(K, N)`` with particles
    (``(N,)`` without).

    :ivar observed: sum over observed sites of log p(x | z): the reconstruction term.
    :ivar latent: sum over latent sites of log p(z) - log q(z | x); under ``estimator="stl"`` or
        ``"dreg"`` log q is evaluated with the guide's parameters stopped (same value, the score
        term's gradient removed). It may be given as a function, computed when first read (the
        fast path skips it where a closed-form KL is all an objective reads).
    :ivar kl: KL(q(z | x) || p(z)) summed over latent sites, in closed form for each site that
        has one and ``log q - log p`` at the drawn z for the others (``None`` unless asked for).
    :ivar kl_per_dim: per latent site, ``(kl, weight)``: the KL per latent coordinate, shape
        ``(K, N, d)``, and each example's scale, shape ``(K, N)``, for free bits (``None`` unless
        asked for).
    :ivar latent_values: the guide's reparameterized draws, for estimators that reweight the
        gradient flowing through z (DReG).
    """

    def __init__(self, observed: torch.Tensor, latent, kl: Optional[torch.Tensor] = None,
                 kl_per_dim: Optional[Dict[str, Tuple[torch.Tensor, torch.Tensor]]] = None,
                 latent_values: Optional[List[torch.Tensor]] = None):
        self.observed = observed
        self._latent = latent
        self.kl = kl
        self.kl_per_dim = kl_per_dim
        self.latent_values = latent_values or []

    @property
    def latent(self) -> torch.Tensor:
        if callable(self._latent):
            self._latent = self._latent()
        return self._latent

    @property
    def log_weights(self) -> torch.Tensor:
        """log w = log p(x, z) - log q(z | x)."""
        return self.observed + self.latent


def detach_distribution(d):
    """The same distribution with its parameters cut from the graph: log q(z) of it keeps the
    gradient through z (the path term) and drops the one through q's parameters (the score term)."""
    if isinstance(d, Independent):
        return Independent(detach_distribution(d.base_dist), d.reinterpreted_batch_ndims)
    params = {name: d.__dict__[name].detach() for name in d.arg_constraints if name in d.__dict__}
    try:
        return type(d)(**params, validate_args=False)
    except TypeError as error:
        raise ValueError(
            f"estimator 'stl'/'dreg' needs a guide distribution that can be rebuilt from its parameters; "
            f"{type(d).__name__} cannot ({error})"
        ) from None


def per_dim_factor(d):
    """The factor over latent coordinates of a distribution with event shape (d,), or None where
    it does not factorize (a mixture, a flow)."""
    if isinstance(d, Independent) and d.reinterpreted_batch_ndims == 1 and d.base_dist.event_shape == ():
        return d.base_dist
    return None


def require_per_dim_factor(d, what):
    """:func:`per_dim_factor` of ``d``, or the ValueError free bits give where there is none;
    ``what`` names the distribution (``"the 'mixture' prior"``)."""
    base = per_dim_factor(d)
    if base is None:
        raise ValueError(
            "free bits per latent dimension need p(z) and q(z|x) that factorize over the coordinates of z; "
            f"{what} does not (it is a {type(d).__name__}; use a normal, laplace or student_t prior, or free_bits=0)"
        )
    return base


def scaled_per_dim(per_dim, scale, mask):
    """(the per-coordinate KL with the site's scale and mask applied, and the same scale and mask
    over the site's examples: the weight of the free-bits threshold)."""
    examples = scale_and_mask(torch.ones_like(per_dim[..., 0]), scale, mask)
    return per_dim * examples.unsqueeze(-1), examples


def closed_form_kl(q, p):
    """KL(q || p) in closed form: torch's registered pairs, and a low-rank Gaussian against a
    diagonal Normal (the latter written as a low-rank Gaussian of rank 1 with a zero factor, so
    torch's own low-rank formula computes it). NotImplementedError where there is none."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        if (isinstance(q, LowRankMultivariateNormal) and isinstance(p, Independent)
                and p.reinterpreted_batch_ndims == 1 and isinstance(p.base_dist, Normal)):
            loc, scale = p.base_dist.loc, p.base_dist.scale
            loc, scale = torch.broadcast_tensors(loc, scale)
            diagonal = LowRankMultivariateNormal(loc, torch.zeros_like(loc).unsqueeze(-1), scale.pow(2))
            return kl_divergence(q, diagonal)
        raise
