"""The package VAE's fast path: :class:`~pyrovae.infer.weights.WeightParts` computed straight
from the VAE's parts, skipping Pyro's per-call trace bookkeeping (about 15% of a CPU step).

It computes exactly what the traces of ``VAE.model`` and ``VAE.guide`` define, from the same
random draws (z = mu(x) + sigma(x) eps with eps of shape (K, N, d), as the guide's plate draws it):

    observed = log p(x | z),   latent = log p(z) - log q(z | x),   kl = KL(q(z | x) || p(z)).

It is an optimization, chosen by structure: the VAE offers it
(:meth:`pyrovae.VAE.fast_weight_parts`, a member of the model protocol) only for a model/guide
pair that are the bound methods of one :class:`~pyrovae.VAE` whose class does not override
``model`` or ``guide``, whose prior and likelihood are registered classes, and only while no
Pyro handler is active (``poutine.scale``, ``SVI``'s param capture, a user's messenger). Every
other pair takes the trace path; the inference core asks the model and knows no model class.
``tests/test_inference_core.py`` holds the two paths equal in value and gradient for every prior, likelihood, loss, particle count, KL weight and estimator.

AIS's target (:class:`VAEAISTarget`) is the same kind of optimization: log pi_0(z) and
log p(x, z) = log p(z) + log p(x | z) at a point z of the chains, and their gradients in z, from
the VAE's parts instead of a trace per leapfrog step: the proposal's parameters mu(x), sigma(x)
once per example, both gradients from one ``torch.func.grad_and_value`` each, compiled with
``torch.compile`` where asked (on CPU with the Bernoulli density's log(1 + t) form,
:mod:`pyrovae.fast.kernels`). ``tests/test_ais_psis.py`` holds it equal to the trace target.
"""

import contextlib
import math
import warnings

import torch
from torch.distributions import Independent, Normal, kl_divergence

from ..fast.kernels import cpu_kernels
from ..infer.parts import WeightParts, require_per_dim_factor, scaled_per_dim
from ..infer.target import Point
from ..priors import StandardNormal

__all__ = ["vae_weight_parts", "VAEAISTarget"]


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _centred_normal_log_prob(z, prior_scale):
    """log Normal(z; 0, s^2 I), summed over the coordinates."""
    if prior_scale == 1.0:
        return -0.5 * z.pow(2).sum(-1) - z.shape[-1] * _HALF_LOG_2PI
    return -0.5 * (z / prior_scale).pow(2).sum(-1) - z.shape[-1] * (math.log(prior_scale) + _HALF_LOG_2PI)


def _normal_log_prob_at(eps, scale):
    """log Normal(z; mu, diag sigma^2) at z = mu + sigma eps: -eps^2/2 - log sigma - log(2 pi)/2
    summed. The same value and gradient as at z itself (z - mu = sigma eps, so the quadratic term
    depends on neither mu nor sigma), in fewer operations."""
    return -(0.5 * eps.pow(2) + scale.log()).sum(-1) - eps.shape[-1] * _HALF_LOG_2PI


def _kl_to_centred_normal(loc, scale, prior_scale):
    """KL(Normal(mu, diag sigma^2) || Normal(0, s^2 I)) = 1/2 sum_j (r_j + mu_j^2 / s^2 - 1 - log r_j),
    r_j = sigma_j^2 / s^2: torch's closed form in fewer operations (each costs a CPU step time)."""
    if prior_scale == 1.0:
        ratio, mean_term = scale.pow(2), loc.pow(2)
    else:
        ratio, mean_term = (scale / prior_scale).pow(2), (loc / prior_scale).pow(2)
    return 0.5 * (ratio + mean_term - 1 - ratio.log()).sum(-1)


def vae_weight_parts(vae, x, num_particles=None, analytic_kl=False, per_dim=False, estimator="standard"):
    """:class:`WeightParts` of ``vae.model``/``vae.guide`` at ``x`` from the VAE's parts; terms no
    objective asked for are left to be computed on first read."""
    vae.check_data(x)
    loc, scale = vae.encoder(x)
    # z = mu + sigma eps with eps drawn as Normal.rsample draws it under the guide's plates
    shape = loc.shape if num_particles is None else (num_particles,) + loc.shape
    eps = torch.empty(shape, dtype=loc.dtype, device=loc.device).normal_()
    z = loc + eps * scale
    q = Normal(loc, scale)
    prior = vae.prior()
    observed = vae.likelihood(vae.decoder(z)).log_prob(x)

    def latent():
        if estimator == "standard" and isinstance(vae.prior, StandardNormal):
            return _centred_normal_log_prob(z, vae.prior.scale) - _normal_log_prob_at(eps, scale)
        q_for_latent = Normal(loc.detach(), scale.detach()) if estimator != "standard" else q
        return prior.log_prob(z) - q_for_latent.log_prob(z).sum(-1)

    kl = None
    if analytic_kl:
        if isinstance(vae.prior, StandardNormal):
            kl = _kl_to_centred_normal(loc, scale, vae.prior.scale)
        else:
            q_event = Independent(q, 1)
            try:
                kl = kl_divergence(q_event, prior.expand(q_event.batch_shape))
            except NotImplementedError:
                kl = q.log_prob(z).sum(-1) - prior.log_prob(z)
        if kl.shape != observed.shape:
            kl = kl.expand(observed.shape)
    kl_per_dim = None
    if per_dim:
        base = require_per_dim_factor(prior, "the prior at site 'z'")
        try:
            if not analytic_kl:
                raise NotImplementedError
            values = kl_divergence(Normal(loc, scale), base.expand(loc.shape)).expand(z.shape)
        except NotImplementedError:
            values = q.log_prob(z) - base.log_prob(z)
        kl_per_dim = {"z": scaled_per_dim(values, 1.0, None)}
    return WeightParts(observed=observed, latent=latent, kl=kl, kl_per_dim=kl_per_dim,
                       latent_values=[z] if estimator != "standard" else [])


def _vae_point(vae, x, loc, scale, z, kernels):
    """(log pi_0(z), log p(x, z), their gradients in z) for z (C, N, d); pi_0 = Normal(loc, scale)
    (the guide) where ``loc`` is given, the prior otherwise."""

    def joint(z):
        value = vae.prior().log_prob(z) + vae.likelihood(vae.decoder(z)).log_prob(x)
        return value.sum(), value

    def base(z):
        value = Normal(loc, scale).log_prob(z).sum(-1) if loc is not None else vae.prior().log_prob(z)
        return value.sum(), value

    with kernels:
        grad_joint, (_, joint_value) = torch.func.grad_and_value(joint, has_aux=True)(z)
        grad_base, (_, base_value) = torch.func.grad_and_value(base, has_aux=True)(z)
    return base_value, joint_value, grad_base, grad_joint


_compiled_point = {"function": None, "failed": False}  # one compiled function, made on first use


class VAEAISTarget:
    """AIS's target for ``vae.model``/``vae.guide`` (see the module docstring) on the examples
    ``x`` with ``num_chains`` chains each; ``proposal`` ``"guide"`` or ``"prior"``."""

    def __init__(self, vae, x, num_chains, proposal, compiled=False):
        vae.check_data(x)
        self.vae, self.x, self.proposal = vae, x, proposal
        self.shape = (num_chains, x.shape[0], vae.latent_dim)
        with torch.no_grad():
            self.loc, self.scale = vae.encoder(x) if proposal == "guide" else (None, None)
        self.compiled = compiled
        self.kernels = cpu_kernels(x.device, linear=False) if compiled else contextlib.nullcontext()

    def initial(self):
        """z_0 ~ pi_0, drawn as the guide's (or the model's) plates draw it: the same numbers as
        the trace of ``vae.guide`` (``vae.model``) under the chains' plate gives."""
        with torch.no_grad():
            if self.proposal == "guide":
                z = Normal(self.loc, self.scale).expand(self.shape).rsample()
            else:
                z = self.vae.prior().expand(self.shape[:-1]).sample()
        return {"z": z}

    def _function(self):
        if not self.compiled or _compiled_point["failed"]:
            return _vae_point
        if _compiled_point["function"] is None:
            _compiled_point["function"] = torch.compile(_vae_point, dynamic=False)
        return _compiled_point["function"]

    def point(self, z):
        args = (self.vae, self.x, self.loc, self.scale, z["z"], self.kernels)
        with torch.no_grad():
            try:
                base, joint, grad_base, grad_joint = self._function()(*args)
            except Exception as error:  # no C++ compiler, an unsupported platform
                if not self.compiled or _compiled_point["failed"]:
                    raise
                _compiled_point["failed"] = True
                warnings.warn(f"torch.compile is unavailable here ({type(error).__name__}); AIS runs eager",
                              RuntimeWarning, stacklevel=2)
                base, joint, grad_base, grad_joint = _vae_point(*args[:-1], contextlib.nullcontext())
        return Point(base, joint, {"z": grad_base}, {"z": grad_joint})
