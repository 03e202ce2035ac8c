"""Training objectives by name, and KL weighting through Pyro's scale mechanism.

- ``"trace"``:     Trace_ELBO, E_q[log p(x|z) + log p(z) - log q(z|x)], KL by Monte Carlo.
- ``"meanfield"``: TraceMeanField_ELBO, E_q[log p(x|z)] - KL(q || p), KL in closed form.
- ``"iwae"``:      E[log (1/K) sum_k p(x, z_k) / q(z_k|x)], the importance-weighted bound.
"""

import math
import warnings

import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites
from torch import nn

from .priors import has_analytic_kl

__all__ = ["LOSSES", "IWAE_ELBO", "ScaleLatent", "KLSchedule", "ELBOLoss", "make_elbo", "log_importance_weights",
           "sample_latents", "kl_or_estimate"]

LOSSES = ("meanfield", "trace", "iwae")


def log_importance_weights(model_trace, guide_trace):
    """log w = sum_model log p - sum_guide log q per sample, keeping every plate dimension
    (particles, examples); site scales (KL weights) are applied as Pyro applies them."""
    log_w = 0.0
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        for site in trace.nodes.values():
            if site["type"] == "sample":
                log_p = site["log_prob"]
                if site["scale"] is not None and not (isinstance(site["scale"], float) and site["scale"] == 1.0):
                    log_p = log_p * site["scale"]
                log_w = log_w + sign * log_p
    return log_w


def sample_latents(vae, x, num_particles=None, posterior=None):
    """z = mu(x) + sigma(x) eps, eps ~ N(0, I), with ``num_particles`` draws on the left, as the
    guide draws them; returns (q(z|x) as a Normal over coordinates, z, log p(x|z), p(z))."""
    loc, scale = posterior if posterior is not None else vae.encoder(vae.check_data(x))
    q = torch.distributions.Normal(loc, scale)
    if num_particles is not None:
        q = q.expand((num_particles,) + loc.shape)
    z = q.rsample()
    return q, z, vae.likelihood(vae.decoder(z)).log_prob(x), vae.prior()


def kl_or_estimate(q, prior, z=None):
    """KL(q(z|x) || p(z)) per example: the closed form where torch registers one, else the
    one-sample estimate log q(z|x) - log p(z) at ``z`` (drawn from q when not given; the closed
    form draws nothing). ``q`` has event shape (latent_dim,)."""
    try:
        return torch.distributions.kl_divergence(q, prior.expand(q.batch_shape))
    except NotImplementedError:
        z = q.sample() if z is None else z
        return q.log_prob(z) - prior.log_prob(z)


class IWAE_ELBO(Trace_ELBO):
    """The importance-weighted bound of Burda et al. (2015), vectorized over particles:
    IWAE_K = sum_n log (1/K) sum_k w_nk, w_nk = p(x_n, z_nk) / q(z_nk | x_n).

    It equals ``RenyiELBO(alpha=0)`` for a reparameterized guide, and unlike that class it
    has ``differentiable_loss``, so it works as a module (``IWAE_ELBO(K)(model, guide)``)."""

    def __init__(self, num_particles=5, max_plate_nesting=1):
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting, vectorize_particles=True)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        guide_trace = poutine.trace(self._vectorized_num_particles(guide)).get_trace(*args, **kwargs)
        model_trace = poutine.trace(
            poutine.replay(self._vectorized_num_particles(model), trace=guide_trace)
        ).get_trace(*args, **kwargs)
        model_trace = prune_subsample_sites(model_trace)
        guide_trace = prune_subsample_sites(guide_trace)
        model_trace.compute_log_prob()
        guide_trace.compute_log_prob()
        log_w = log_importance_weights(model_trace, guide_trace)
        if self.num_particles == 1:  # Pyro adds no particle plate for one particle: IWAE_1 = ELBO
            return -log_w.sum()
        return -(torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)).sum()

    def loss(self, model, guide, *args, **kwargs):
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs):
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()


def make_elbo(loss="meanfield", num_particles=1):
    """A name from ``LOSSES`` -> a Pyro ELBO, particles vectorized on a plate at dim -2."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {list(LOSSES)}")
    if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"num_particles must be an integer >= 1; got {num_particles!r}")
    if loss == "iwae":
        return IWAE_ELBO(num_particles=num_particles)
    cls = TraceMeanField_ELBO if loss == "meanfield" else Trace_ELBO
    return cls(num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1)


class ScaleLatent(Messenger):
    """Multiplies the log-densities of latent (unobserved) sample sites by ``scale``, in model
    and guide alike, so the ELBO's KL term, and only it, is weighted: beta-VAE, warm-up."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.scale * msg["scale"]


class KLSchedule:
    """The KL weight at a point of training: beta * min(1, epochs_done / warmup_epochs), and
    free bits: the weight drops to 0 on a minibatch whose mean KL is under ``free_bits`` nats
    per latent dimension (the gradient of max(lambda, KL))."""

    def __init__(self, beta=1.0, warmup_epochs=0.0, free_bits=0.0):
        if not float(beta) >= 0:
            raise ValueError(f"beta must be >= 0; got beta={beta}")
        if not float(warmup_epochs) >= 0:
            raise ValueError(f"warmup_epochs must be >= 0; got warmup_epochs={warmup_epochs}")
        if not float(free_bits) >= 0:
            raise ValueError(f"free_bits must be >= 0; got free_bits={free_bits}")
        self.beta, self.warmup_epochs, self.free_bits = float(beta), float(warmup_epochs), float(free_bits)

    @property
    def is_identity(self):
        return self.beta == 1.0 and self.warmup_epochs == 0 and self.free_bits == 0

    def weight(self, epochs_done):
        if self.warmup_epochs == 0:
            return self.beta
        return self.beta * min(1.0, epochs_done / self.warmup_epochs)


class ELBOLoss(nn.Module):
    """The negative ELBO of a VAE as a module: ``loss = ELBOLoss(vae, "meanfield")(x)`` is
    -sum_n ELBO(x_n), differentiable, so any torch optimizer (or DistributedDataParallel)
    can drive it.

    With ``direct=True`` (the default) the first call computes the loss twice from the same
    random draws, once by Pyro's ELBO over traces of ``vae.model`` and ``vae.guide`` and once
    directly from the VAE's encoder, prior, decoder and likelihood, and checks they agree;
    later calls take the direct path, which skips Pyro's per-step trace bookkeeping (about 15%
    of a CPU step). Where the two disagree (a subclass with its own model or guide), it warns
    and stays on Pyro's path.
    """

    def __init__(self, vae, loss="meanfield", num_particles=1, kl_schedule=None, direct=True):
        super().__init__()
        self.vae = vae
        self.loss_name = loss
        self.num_particles = num_particles
        self.elbo = make_elbo(loss, num_particles)
        self.kl_schedule = kl_schedule or KLSchedule()
        self.kl_weight = self.kl_schedule.weight(0.0)
        self.analytic_kl = has_analytic_kl(vae.prior())
        self.verified = None if direct else False
        if loss == "meanfield" and not self.analytic_kl:
            warnings.warn(
                f"loss='meanfield': KL(q || {vae.config['prior']['kind']} prior) has no closed form; "
                "the KL term is estimated by Monte Carlo instead",
                stacklevel=2,
            )

    def set_progress(self, epochs_done):
        """Updates the KL weight to the schedule's value after ``epochs_done`` (fractional) epochs."""
        self.kl_weight = self.kl_schedule.weight(epochs_done)

    def _minibatch_kl(self, x):
        with torch.no_grad():
            loc, scale = self.vae.encoder(x)
            q = torch.distributions.Independent(torch.distributions.Normal(loc, scale), 1)
            return kl_or_estimate(q, self.vae.prior()).mean()

    def pyro_loss(self, x, weight=1.0):
        """-ELBO by Pyro's estimator over traces of ``vae.model`` and ``vae.guide``."""
        if weight == 1.0:
            return self.elbo.differentiable_loss(self.vae.model, self.vae.guide, x)
        with ScaleLatent(weight):
            return self.elbo.differentiable_loss(self.vae.model, self.vae.guide, x)

    def direct_loss(self, x, weight=1.0):
        """The same estimator and the same random draws as :meth:`pyro_loss`, computed from the
        VAE's parts: z = mu + sigma * eps, log w = log p(x|z) + w_KL (log p(z) - log q(z|x))."""
        k = self.num_particles
        vectorized = k > 1 or self.loss_name == "iwae"
        q, z, log_px, prior = sample_latents(self.vae, x, k if vectorized else None)
        if self.loss_name == "meanfield" and self.analytic_kl:
            q_event = torch.distributions.Independent(q, 1)
            latent_term = -torch.distributions.kl_divergence(q_event, prior.expand(q_event.batch_shape))
        else:
            latent_term = prior.log_prob(z) - q.log_prob(z).sum(-1)
        log_w = log_px + weight * latent_term
        if self.loss_name == "iwae":
            return -(torch.logsumexp(log_w, 0) - math.log(k)).sum()
        return -log_w.sum() / k

    def _verify(self, x, weight):
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            reference = self.pyro_loss(x, weight)
        loss = self.direct_loss(x, weight)
        self.verified = bool(torch.allclose(loss.detach(), reference.detach(), rtol=1e-4, atol=1e-3))
        if not self.verified:
            warnings.warn(
                f"the direct VAE loss ({loss.item():.6g}) disagrees with Pyro's {self.loss_name} ELBO "
                f"({reference.item():.6g}) on the same draws; training on Pyro's path",
                stacklevel=3,
            )
            return reference
        return loss

    def forward(self, x):
        weight = self.kl_weight
        if self.kl_schedule.free_bits > 0 and self._minibatch_kl(x) < self.kl_schedule.free_bits * self.vae.latent_dim:
            weight = 0.0
        if self.verified is None:
            return self._verify(x, weight)
        if self.verified:
            return self.direct_loss(x, weight)
        return self.pyro_loss(x, weight)
