"""Priors p(z) over the latent space: each ``forward()`` returns a Pyro distribution with
``batch_shape == ()`` and ``event_shape == (latent_dim,)``. Learnable ones hold their
parameters as module parameters, so they train with the encoder and decoder."""

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import nn
from torch.distributions import kl_divergence

from .distributions import DiagonalNormalMixture
from .registry import Component, Registry, hold_callable

__all__ = [
    "PRIORS",
    "Prior",
    "StandardNormal",
    "Laplace",
    "StudentT",
    "Mixture",
    "VampPrior",
    "Flow",
    "CallablePrior",
    "make_prior",
    "has_analytic_kl",
]

PRIORS = Registry("prior")


class Prior(Component):
    """Base class. ``bind(latent_dim, vae)`` is called once by the VAE before any use."""

    def bind(self, latent_dim, vae=None):
        self.latent_dim = int(latent_dim)
        self.register_buffer("_zeros", torch.zeros(self.latent_dim), persistent=False)
        return self

    def forward(self):
        raise NotImplementedError


class _LocationScalePrior(Prior):
    family = None

    def __init__(self, scale=1.0):
        super().__init__()
        if not float(scale) > 0:
            raise ValueError(f"prior scale must be positive; got scale={scale}")
        self.scale = float(scale)

    def forward(self):
        return self.family(self._zeros, self._zeros + self.scale).to_event(1)


@PRIORS.register("normal")
class StandardNormal(_LocationScalePrior):
    """z ~ Normal(0, scale^2 I): the AEVB prior; the KL against q(z|x) is analytic."""

    family = dist.Normal


@PRIORS.register("laplace")
class Laplace(_LocationScalePrior):
    """z_j ~ Laplace(0, scale) independently: sparser codes than the Gaussian."""

    family = dist.Laplace


@PRIORS.register("student_t")
class StudentT(Prior):
    """z_j ~ StudentT(df, 0, scale) independently: heavy tails keep outliers near the bulk."""

    def __init__(self, df=3.0, scale=1.0):
        super().__init__()
        if not float(df) > 0 or not float(scale) > 0:
            raise ValueError(f"student_t needs df > 0 and scale > 0; got df={df}, scale={scale}")
        self.df, self.scale = float(df), float(scale)

    def forward(self):
        return dist.StudentT(self.df, self._zeros, self._zeros + self.scale).to_event(1)


@PRIORS.register("mixture")
class Mixture(Prior):
    """z ~ sum_k pi_k Normal(m_k, diag s_k^2), with pi, m, s learned (a Gaussian-mixture prior)."""

    def __init__(self, components=10, init_spread=1.0):
        super().__init__()
        if int(components) < 1:
            raise ValueError(f"mixture needs components >= 1; got components={components}")
        self.components = int(components)
        self.init_spread = float(init_spread)

    def bind(self, latent_dim, vae=None):
        super().bind(latent_dim, vae)
        k = self.components
        self.logits = nn.Parameter(torch.zeros(k))
        self.locs = nn.Parameter(self.init_spread * torch.randn(k, self.latent_dim))
        self.log_scales = nn.Parameter(torch.zeros(k, self.latent_dim))
        return self

    def forward(self):
        return DiagonalNormalMixture(self.logits, self.locs, self.log_scales.exp())


@PRIORS.register("vamp")
class VampPrior(Prior):
    """z ~ (1/K) sum_k q(z | u_k): the encoder's posteriors at K learned pseudo-inputs u_k
    (Tomczak & Welling 2018)."""

    def __init__(self, components=50):
        super().__init__()
        if int(components) < 1:
            raise ValueError(f"vamp needs components >= 1; got components={components}")
        self.components = int(components)

    def bind(self, latent_dim, vae=None):
        super().bind(latent_dim, vae)
        if vae is None:
            raise ValueError("the vamp prior needs the VAE's encoder; build it through pyrovae.VAE")
        # A plain attribute, not a submodule: the encoder belongs to the VAE, not to the prior.
        self.__dict__["_encoder"] = vae.encoder
        self.pseudo_inputs = nn.Parameter(0.5 + 0.05 * torch.randn(self.components, *vae.data_shape))
        return self

    def forward(self):
        loc, scale = self.__dict__["_encoder"](self.pseudo_inputs)
        uniform = torch.zeros(self.components, device=loc.device, dtype=loc.dtype)
        return DiagonalNormalMixture(uniform, loc, scale)


@PRIORS.register("flow")
class Flow(Prior):
    """z = f_L o ... o f_1(e), e ~ Normal(0, I), with learned invertible f (normalizing flow);
    log p(z) = log N(f^-1(z)) + log|det d f^-1 / dz|."""

    TRANSFORMS = ("affine_autoregressive", "spline_coupling")

    def __init__(self, depth=2, transform="affine_autoregressive", hidden=64):
        super().__init__()
        if int(depth) < 1:
            raise ValueError(f"flow needs depth >= 1; got depth={depth}")
        if transform not in self.TRANSFORMS:
            raise ValueError(f"unknown flow transform {transform!r}; choose one of {list(self.TRANSFORMS)}")
        self.depth, self.transform, self.hidden = int(depth), transform, int(hidden)

    def bind(self, latent_dim, vae=None):
        super().bind(latent_dim, vae)
        if self.latent_dim < 2:
            raise ValueError(f"a flow prior needs latent_dim >= 2; got latent_dim={self.latent_dim}")
        layers = []
        for i in range(self.depth):
            if self.transform == "affine_autoregressive":
                layers.append(T.affine_autoregressive(self.latent_dim, hidden_dims=[self.hidden, self.hidden]))
            else:
                layers.append(T.spline_coupling(self.latent_dim, hidden_dims=[self.hidden, self.hidden]))
            if i < self.depth - 1:
                # reversing the coordinates lets the next layer condition the other way round
                layers.append(T.Permute(torch.arange(self.latent_dim - 1, -1, -1)))
        self.layers = nn.ModuleList([layer for layer in layers if isinstance(layer, nn.Module)])
        self._transforms = layers
        return self

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        # Permute keeps its index tensor outside the module tree; move it with the rest.
        for layer in self._transforms:
            if isinstance(layer, T.Permute):
                layer.permutation = fn(layer.permutation)
                layer.__dict__.pop("inv_permutation", None)
        return self

    def forward(self):
        base = dist.Normal(self._zeros, self._zeros + 1.0).to_event(1)
        return dist.TransformedDistribution(base, self._transforms)


class CallablePrior(Prior):
    """Wraps a user's zero-argument callable (or module) returning a Distribution over z."""

    def __init__(self, fn):
        super().__init__()
        hold_callable(self, fn)

    def forward(self):
        return self.fn()


def make_prior(spec):
    """A name, a ``{"kind": ...}`` table, a ``Prior``, or a callable returning a Distribution."""
    if isinstance(spec, Prior):
        return spec
    if callable(spec) and not isinstance(spec, (str, dict)):
        return CallablePrior(spec)
    return PRIORS.build(spec)


def check_prior_distribution(d, latent_dim):
    """A prior must give a Distribution with event shape (latent_dim,) and no batch shape."""
    if not isinstance(d, torch.distributions.Distribution):
        raise TypeError(f"a prior must return a pyro.distributions.Distribution; got {type(d).__name__}")
    if tuple(d.event_shape) != (latent_dim,) or tuple(d.batch_shape) != ():
        raise ValueError(
            f"the prior's distribution must have batch_shape () and event_shape ({latent_dim},); "
            f"got batch_shape {tuple(d.batch_shape)} and event_shape {tuple(d.event_shape)} "
            "(use .to_event(1) on a distribution over the latent coordinates)"
        )
    return d


def has_analytic_kl(prior_distribution):
    """Whether KL(Normal(mu, diag sigma^2) || prior) has a registered closed form."""
    d = prior_distribution.event_shape[0]
    # the probe's draw (its device) comes from a stream of its own: asking must not move the caller's noise
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        zeros = torch.zeros(d, device=prior_distribution.sample().device)
    q = dist.Normal(zeros, zeros + 1.0).to_event(1)
    try:
        kl_divergence(q, prior_distribution)
    except NotImplementedError:
        return False
    return True

