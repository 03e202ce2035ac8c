"""The training objective of a VAE as a ``torch.nn.Module`` over a Pyro ELBO, and the KL
weighting schedule (beta, warm-up, free bits) it follows during training."""

import warnings

import torch
from torch import nn

from .elbo import IWAE_ELBO, LOSSES, VAE_ELBO, make_elbo
from .weights import fast_weight_parts
from ..protocol import family
from .parts import require_per_dim_factor
from ..priors import has_analytic_kl

__all__ = ["LOSSES", "IWAE_ELBO", "VAE_ELBO", "KLSchedule", "ELBOLoss", "make_elbo", "check_training_options"]


def check_training_options(vae, loss, num_particles, estimator, free_bits):
    """Raises the ValueError a bad combination would raise mid-run, before anything is written:
    an estimator that does not apply to the loss, free bits under IWAE or with a prior that does
    not factorize over the latent coordinates (checked where the VAE's own model says so)."""
    make_elbo(loss, num_particles, estimator, free_bits=free_bits)
    members = family(vae)
    if loss == "meanfield" and not members.mean_field_guide:
        raise ValueError(f"loss='meanfield' takes each latent site's KL in closed form, which needs a mean-field guide "
                         f"(or a low-rank one); the {type(vae).__name__}'s {members.guide_description} has none: use "
                         "loss='trace' (the Monte Carlo KL) or 'iwae'")
    if estimator != "standard" and not members.stopped_guide_density:
        raise ValueError(f"estimator={estimator!r} evaluates q(z|x) at z with its parameters stopped; the "
                         f"{members.guide_description} has no inverse to do so: use estimator='standard', or the "
                         "'iaf' or 'lowrank' guide")
    if free_bits and fast_weight_parts(vae.model, vae.guide) is not None:
        require_per_dim_factor(vae.prior(), f"the {vae.config['prior']['kind']!r} prior")


class KLSchedule:
    """The KL weight at a point of training, beta * min(1, epochs_done / warmup_epochs), and the
    free bits lambda (nats per latent coordinate) of the objective
    E_q[log p(x|z)] - weight * sum_j max(lambda, E_batch KL_j)."""

    def __init__(self, beta=1.0, warmup_epochs=0.0, free_bits=0.0):
        for name, value in (("beta", beta), ("warmup_epochs", warmup_epochs), ("free_bits", free_bits)):
            if not float(value) >= 0:
                raise ValueError(f"{name} must be >= 0; got {name}={value}")
        self.beta, self.warmup_epochs, self.free_bits = float(beta), float(warmup_epochs), float(free_bits)

    @property
    def is_constant(self):
        """Whether the weight never changes during training."""
        return self.warmup_epochs == 0

    def weight(self, epochs_done):
        if self.warmup_epochs == 0:
            return self.beta
        return self.beta * min(1.0, epochs_done / self.warmup_epochs)


class ELBOLoss(nn.Module):
    """The negative training objective of a VAE as a module: ``ELBOLoss(vae, "meanfield")(x)``
    is -sum_n ELBO(x_n) (KL weighted by the schedule), differentiable, so any torch optimizer (or
    DistributedDataParallel) can drive it. It is :class:`~pyrovae.infer.elbo.VAE_ELBO` applied to
    ``vae.model`` and ``vae.guide``: the package VAE's fast path where the structure allows it,
    Pyro's traces otherwise (a subclass's own model, a user's handler), or always with
    ``fast_path=False``. A model with ``auxiliary_programs()`` (the CVAE's baseline network) adds
    each program's weighted -ELBO, from the same core; a model conditioned on labels takes them as
    ``forward(x, y)``.
    """

    def __init__(self, vae, loss="meanfield", num_particles=1, kl_schedule=None, estimator="standard",
                 fast_path=True):
        super().__init__()
        self.vae = vae
        self.kl_schedule = kl_schedule or KLSchedule()
        self.elbo = make_elbo(loss, num_particles, estimator, self.kl_schedule.weight(0.0), self.kl_schedule.free_bits)
        self.loss_name, self.num_particles, self.estimator = loss, num_particles, estimator
        self._auxiliary_elbo = VAE_ELBO("trace")  # an auxiliary program has observed sites only
        if fast_path:
            self._model, self._guide = vae.model, vae.guide
        else:  # plain functions, not the VAE's bound methods: the structural test sends them through traces
            self._model = lambda *args, **kwargs: vae.model(*args, **kwargs)
            self._guide = lambda *args, **kwargs: vae.guide(*args, **kwargs)
        if loss == "meanfield" and not has_analytic_kl(vae.prior()):
            warnings.warn(
                f"loss='meanfield': KL(q || {vae.config['prior']['kind']} prior) has no closed form; "
                "the KL term is estimated by Monte Carlo instead",
                stacklevel=2,
            )

    @property
    def kl_weight(self) -> float:
        return float(self.elbo.kl_weight)

    def set_progress(self, epochs_done):
        """Sets the KL weight to the schedule's value after ``epochs_done`` (fractional) epochs
        (in place where it is a tensor: see :meth:`weight_as_tensor`)."""
        weight = self.kl_schedule.weight(epochs_done)
        if torch.is_tensor(self.elbo.kl_weight):
            self.elbo.kl_weight.fill_(weight)
        else:
            self.elbo.kl_weight = weight

    def weight_as_tensor(self, device):
        """Holds a scheduled KL weight in a 0-d tensor, which a compiled objective reads as an input
        (a float would be compiled in as a constant, once per value)."""
        if not self.kl_schedule.is_constant:
            self.elbo.kl_weight = torch.tensor(float(self.elbo.kl_weight), dtype=torch.float64, device=device)

    def forward(self, *args):
        loss = self.elbo.differentiable_loss(self._model, self._guide, *args)
        for model, guide, weight in self._auxiliary():
            loss = loss + weight * self._auxiliary_elbo.differentiable_loss(model, guide, *args)
        return loss

    def _auxiliary(self):
        return family(self.vae).auxiliary_programs()
