"""The one definition behind every number: per-example log importance weights from Pyro traces.

For a model p(x, z) and a guide q(z | x), one draw z ~ q gives

    log w = log p(x, z) - log q(z | x) = [sum over observed sites log p] + [sum over latent sites
            log p - sum over guide sites log q],

each site's ``log_prob`` taken from Pyro's trace, where it already carries the site's scale and
mask (``poutine.scale``, subsampling), so every scale is applied exactly once, as Pyro's own
ELBOs apply it. Plates common to every site (the ``"data"`` plate) are kept, every other plate
dimension is summed, as :class:`pyro.infer.RenyiELBO` does; so the weights are per example, with
the particles (``num_particles``) on the left. Every objective (:mod:`pyrovae.infer.elbo`) and
every estimate (:mod:`pyrovae.estimate`) is computed from :class:`WeightParts`.

:func:`log_weight_parts` takes a fast path where the model offers one for this model/guide pair
(``fast_weight_parts`` of the model protocol, :mod:`pyrovae.protocol`: the package VAE's, decided
by structure, never by comparing numbers), and Pyro's traces otherwise; tests hold the two equal
in value and gradient. This module knows no model class.
"""

from typing import Optional

import pyro
import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import get_dependent_plate_dims, torch_sum

from ..program import as_program
from ..protocol import owner_of
from .parts import WeightParts, closed_form_kl, detach_distribution, require_per_dim_factor, scaled_per_dim

STOPPED_LOG_PROB = "pyrovae_stopped_log_prob"  # a guide site's infer key: log q at z with q's parameters stopped

__all__ = ["WeightParts", "log_weight_parts", "trace_weight_parts", "ESTIMATORS", "PARTICLE_PLATE"]

ESTIMATORS = ("standard", "stl", "dreg")
PARTICLE_PLATE = "num_particles_vectorized"  # the name Pyro's own ELBOs give the particle plate


def _check_guide_site(name, site, estimator):
    if estimator is None:  # no gradient is taken (an estimate of log p(x)): any guide distribution
        return
    if not site["fn"].has_rsample:
        raise ValueError(
            f"guide site {name!r} ({type(site['fn']).__name__}) is not reparameterized; pyrovae's ELBOs and "
            f"estimators need z = g(eps, x) (use Pyro's TraceGraph_ELBO or TraceEnum_ELBO for discrete sites)"
        )


def trace_weight_parts(model, guide, args=(), kwargs=None, num_particles=None, max_plate_nesting=1,
                       analytic_kl=False, per_dim=False, estimator="standard", set_guide_sites=()):
    """:class:`WeightParts` from one guide trace and the model replayed on it, through Pyro's own
    ``get_importance_trace`` (with its model/guide checks when validation is on). ``num_particles``
    draws are vectorized on a plate at dim ``-(max_plate_nesting + 1)``; ``None`` draws once with no
    particle dimension. ``set_guide_sites`` names guide sites whose values the caller set (by
    ``poutine.condition``) to sum them out itself: their log q is left out of the weight, their
    log p kept, as in a weight p(x, z, y) / q(z | x, y) for each value y of a summed label."""
    kwargs = kwargs or {}
    if num_particles is not None:
        plate = pyro.plate(PARTICLE_PLATE, num_particles, dim=-(max_plate_nesting + 1))
        model, guide = plate(model), plate(guide)
        max_plate_nesting += 1  # the particle plate is one more
    model_trace, guide_trace = get_importance_trace("flat", max_plate_nesting, model, guide, args, kwargs)
    sum_dims = get_dependent_plate_dims(model_trace.nodes.values())

    def reduce(value):
        return torch_sum(value, sum_dims) if torch.is_tensor(value) else value

    observed, latent, kl, kl_per_dim, latent_values = 0.0, 0.0, 0.0, {}, []
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            observed = observed + reduce(site["log_prob"])
            continue
        latent = latent + reduce(site["log_prob"])
        guide_site = guide_trace.nodes.get(name)
        if guide_site is None:
            raise ValueError(f"latent site {name!r} of the model has no site in the guide")
        if analytic_kl:
            try:
                site_kl = scale_and_mask(closed_form_kl(guide_site["fn"], site["fn"]), guide_site["scale"],
                                         guide_site["mask"])
            except NotImplementedError:
                site_kl = guide_site["log_prob"] - site["log_prob"]
            kl = kl + reduce(site_kl)
        if per_dim:
            kl_per_dim[name] = _site_kl_per_dim(name, site, guide_site, analytic_kl)
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or name in set_guide_sites:
            continue
        _check_guide_site(name, site, estimator)
        log_q = site["log_prob"]
        if estimator not in ("standard", None):
            stopped = site["infer"].get(STOPPED_LOG_PROB)  # a flow: its own density with parameters stopped
            value = stopped(site["value"]) if stopped is not None else \
                detach_distribution(site["fn"]).log_prob(site["value"])
            log_q = scale_and_mask(value, site["scale"], site["mask"])
            latent_values.append(site["value"])
        latent = latent - reduce(log_q)
    like = observed if torch.is_tensor(observed) else latent
    return WeightParts(
        observed=_as_tensor(observed, like),
        latent=_as_tensor(latent, like),
        kl=_as_tensor(kl, like) if analytic_kl else None,
        kl_per_dim=kl_per_dim if per_dim else None,
        latent_values=latent_values,
    )


def _as_tensor(value, like):
    if torch.is_tensor(value):
        return value
    return torch.full_like(like, float(value)) if torch.is_tensor(like) else torch.tensor(float(value))


def _site_kl_per_dim(name, model_site, guide_site, analytic):
    p = require_per_dim_factor(model_site["fn"], f"the prior at site {name!r}")
    q = require_per_dim_factor(guide_site["fn"], f"the guide at site {name!r}")
    try:
        if not analytic:
            raise NotImplementedError
        per_dim = closed_form_kl(q, p)
    except NotImplementedError:
        z = guide_site["value"]
        per_dim = q.log_prob(z) - p.log_prob(z)
    return scaled_per_dim(per_dim, guide_site["scale"], guide_site["mask"])


def fast_weight_parts(model, guide):
    """The fast path the owner of ``model`` offers for this pair (the model protocol's
    ``fast_weight_parts``), or None."""
    owner = owner_of(model)
    return owner.fast_weight_parts(model, guide) if owner is not None else None


def log_weight_parts(model, guide=None, *args, num_particles: Optional[int] = None,
                     max_plate_nesting: int = 1, analytic_kl: bool = False, per_dim: bool = False,
                     estimator: str = "standard", **kwargs) -> WeightParts:
    """:class:`WeightParts` of ``model`` and ``guide`` at ``args``: by the fast path the model
    offers for the pair (:func:`fast_weight_parts`), else by Pyro's traces. ``model`` may also be
    an object with ``model`` and ``guide`` (a pyrovae model, a user's ``nn.Module``), the data then
    following it: ``log_weight_parts(vae, x)``."""
    if torch.is_tensor(guide) or guide is None:  # the object form: (program, x, *args)
        program = as_program(model)
        args = (guide, *args) if guide is not None else args
        model, guide = program.model, program.guide
    fast = fast_weight_parts(model, guide)
    if fast is not None and len(args) == 1 and not kwargs:
        return fast(args[0], num_particles=num_particles, analytic_kl=analytic_kl, per_dim=per_dim,
                    estimator=estimator)
    return trace_weight_parts(model, guide, args, kwargs, num_particles=num_particles,
                              max_plate_nesting=max_plate_nesting, analytic_kl=analytic_kl, per_dim=per_dim,
                              estimator=estimator)

