"""Pyro ELBOs over :func:`~pyrovae.infer.weights.log_weight_parts`, one class for every objective
and gradient estimator, usable both ways Pyro trains a model:

    SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), make_elbo("iwae", 5, estimator="dreg")).step(x)
    loss_fn = make_elbo("meanfield")(model, guide); loss_fn(x).backward()   # with any torch.optim

Objectives, per example (log w = log p(x, z) - log q(z|x), z ~ q(z|x), K particles):

- ``"trace"``:     ELBO = E_q[log p(x|z)] + beta E_q[log p(z) - log q(z|x)]    (Monte Carlo KL)
- ``"meanfield"``: ELBO = E_q[log p(x|z)] - beta KL(q(z|x) || p(z))            (closed-form KL)
- ``"iwae"``:      IWAE_K = E[log (1/K) sum_k w_k]                            (Burda et al. 2015)

beta is the KL weight (``kl_weight``; 1 gives the bound itself). Free bits (Kingma et al. 2016)
replace the KL term by sum_j max(lambda, E_batch KL_j) over latent coordinates j.

Gradient estimators (all unbiased for their objective except STL on IWAE with K > 1, which
Tucker et al. 2018 show is biased; ``tests/test_estimators.py`` measures each):

- ``"standard"``: the reparameterization gradient of the objective itself;
- ``"stl"``: sticking the landing (Roeder et al. 2017): log q(z|x) sees the guide's parameters only
  through z, the score term's gradient (zero in expectation) removed;
- ``"dreg"``: doubly reparameterized IWAE (Tucker et al. 2018): the guide's gradient
  sum_k w~_k^2 d log w_k / dz dz/dphi, w~ the normalized weights; the model's is IWAE's own.
"""

import math

import torch
from pyro.infer import ELBO
from pyro.infer.enum import get_importance_trace

from ..validation import require_positive_int
from .weights import ESTIMATORS, log_weight_parts

__all__ = ["LOSSES", "ESTIMATOR_LOSSES", "VAE_ELBO", "IWAE_ELBO", "make_elbo", "check_estimator"]

LOSSES = ("meanfield", "trace", "iwae")
# the objectives each gradient estimator applies to
ESTIMATOR_LOSSES = {"standard": LOSSES, "stl": ("trace", "iwae"), "dreg": ("iwae",)}


def check_estimator(loss, estimator):
    """A ValueError listing the combinations that work, unless ``estimator`` applies to ``loss``."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {list(LOSSES)}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {list(ESTIMATORS)}")
    if loss not in ESTIMATOR_LOSSES[estimator]:
        combos = ", ".join(f"{e} with {'/'.join(ls)}" for e, ls in ESTIMATOR_LOSSES.items())
        raise ValueError(f"estimator {estimator!r} does not apply to loss {loss!r}; the combinations that work: {combos}")


def _weighted(weight, term):
    """``weight * term``; the term itself at a weight of exactly 1 (a float). The weight may be a
    0-d tensor, updated in place by a schedule, so a compiled objective reads it as an input
    instead of recompiling for each value."""
    if not torch.is_tensor(weight) and weight == 1.0:
        return term
    return weight * term


class VAE_ELBO(ELBO):
    """A Pyro ELBO whose every number is computed from the per-example log weights of
    :func:`~pyrovae.infer.weights.log_weight_parts` (fast path for the package's VAE, Pyro's
    traces for anything else).

    :param str loss: ``"meanfield"``, ``"trace"`` or ``"iwae"``.
    :param int num_particles: K draws per example, vectorized on a plate left of the data plate.
    :param str estimator: ``"standard"``, ``"stl"`` or ``"dreg"`` (see the module docstring).
    :param float kl_weight: beta, the weight of the latent term (beta-VAE, warm-up).
    :param float free_bits: lambda, nats per latent coordinate (``"trace"`` and ``"meanfield"``).
    """

    def __init__(self, loss: str = "meanfield", num_particles: int = 1, estimator: str = "standard",
                 kl_weight: float = 1.0, free_bits: float = 0.0, max_plate_nesting: int = 1):
        check_estimator(loss, estimator)
        require_positive_int(num_particles, "num_particles")
        if not float(free_bits) >= 0:
            raise ValueError(f"free_bits must be >= 0; got free_bits={free_bits}")
        if free_bits and loss == "iwae":
            raise ValueError("free bits act on the ELBO's KL term, which loss='iwae' does not have; "
                             "use loss='trace' or 'meanfield' with free_bits")
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=True)
        self.data_plate_nesting = max_plate_nesting  # Pyro's ELBO adds one to its own for the particles
        self.loss_name, self.estimator = loss, estimator
        self.kl_weight, self.free_bits = float(kl_weight), float(free_bits)

    def _get_trace(self, model, guide, args, kwargs):
        """One (model trace, guide trace) pair, as Pyro's ``Trace_ELBO`` draws it."""
        return get_importance_trace("flat", self.max_plate_nesting, model, guide, args, kwargs)

    def _particles(self):
        return self.num_particles if self.num_particles > 1 or self.loss_name == "iwae" else None

    def parts(self, model, guide, *args, **kwargs):
        """The :class:`~pyrovae.infer.weights.WeightParts` this ELBO reads."""
        return log_weight_parts(model, guide, *args, num_particles=self._particles(),
                                max_plate_nesting=self.data_plate_nesting,
                                analytic_kl=self.loss_name == "meanfield", per_dim=self.free_bits > 0,
                                estimator=self.estimator, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """-(the objective) summed over examples, differentiable; its gradient is the estimator's."""
        parts = self.parts(model, guide, *args, **kwargs)
        if self.loss_name == "iwae":
            return self._iwae_loss(parts)
        k = self.num_particles
        if self.free_bits > 0:
            return -parts.observed.sum() / k + self.kl_weight * self._free_bits_kl(parts, k)
        if self.loss_name == "meanfield":
            log_w = parts.observed - _weighted(self.kl_weight, parts.kl)
        else:
            log_w = parts.observed + _weighted(self.kl_weight, parts.latent)
        return -log_w.sum() if k == 1 else -log_w.sum() / k

    def _free_bits_kl(self, parts, k):
        """sum over sites and coordinates j of max(lambda n, sum_batch KL_j), n the examples' total
        scale: n times Kingma et al.'s sum_j max(lambda, E_batch KL_j)."""
        total = 0.0
        for values, examples in parts.kl_per_dim.values():
            per_dim = values.reshape(-1, values.shape[-1]).sum(0) / k
            total = total + per_dim.clamp_min(self.free_bits * float(examples.sum()) / k).sum()
        return total

    def _iwae_loss(self, parts):
        log_w = parts.observed + _weighted(self.kl_weight, parts.latent)
        value = -(torch.logsumexp(log_w, 0) - math.log(self.num_particles)).sum()
        if self.estimator != "dreg" or not torch.is_grad_enabled():
            return value
        normalized = torch.softmax(log_w.detach(), 0)
        for z in parts.latent_values:
            if z.requires_grad:
                if tuple(z.shape[: normalized.dim()]) != tuple(normalized.shape):
                    raise ValueError(f"estimator 'dreg' needs guide sites inside the plates of the weights; "
                                     f"a draw of shape {tuple(z.shape)} against weights {tuple(normalized.shape)}")
                factor = normalized.reshape(normalized.shape + (1,) * (z.dim() - normalized.dim()))
                # the gradient reaching the guide through z gets w~ once more: w~^2 in all
                z.register_hook(lambda grad, factor=factor: grad * factor)
        surrogate = -(normalized * log_w).sum()
        return value.detach() + surrogate - surrogate.detach()

    def loss(self, model, guide, *args, **kwargs):
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs):
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward()
        return loss.item()


class IWAE_ELBO(VAE_ELBO):
    """The importance-weighted bound, IWAE_K = sum_n log (1/K) sum_k w_nk (Burda et al. 2015):
    ``RenyiELBO(alpha=0)`` in value and gradient, with ``differentiable_loss`` (so it works as a
    module) and the STL and DReG estimators."""

    def __init__(self, num_particles: int = 5, estimator: str = "standard", kl_weight: float = 1.0,
                 max_plate_nesting: int = 1):
        super().__init__("iwae", num_particles, estimator, kl_weight, 0.0, max_plate_nesting)


def make_elbo(loss: str = "meanfield", num_particles: int = 1, estimator: str = "standard", kl_weight: float = 1.0,
              free_bits: float = 0.0) -> VAE_ELBO:
    """A loss name -> a Pyro ELBO (:class:`VAE_ELBO`), particles vectorized on a plate."""
    return VAE_ELBO(loss, num_particles, estimator, kl_weight, free_bits)
