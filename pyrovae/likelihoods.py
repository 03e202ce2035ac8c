"""Observation models p(x|z): each maps the decoder's raw output to a Pyro distribution over
one whole example (``event_dim = len(data_shape)``) and checks that data lie in its support.

The decoder gives ``params`` of shape ``(..., num_params, *data_shape)``; ``num_params`` is how
many numbers per data dimension the likelihood consumes (1 for a Bernoulli's logits, 2 for a
Beta's two concentrations).
"""

import math

import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch import nn
from torch.distributions import constraints
from torch.nn.functional import binary_cross_entropy_with_logits, softplus

from .registry import Component, Registry, hold_callable
from .validation import require

__all__ = [
    "LIKELIHOODS",
    "Likelihood",
    "Bernoulli",
    "ContinuousBernoulli",
    "Gaussian",
    "Laplace",
    "Beta",
    "Logistic256",
    "DiscretizedLogistic",
    "BernoulliLogits",
    "CallableLikelihood",
    "make_likelihood",
]

LIKELIHOODS = Registry("likelihood")


def _raise_first_violation(x, ok, what):
    require(x, ok, f"data outside the likelihood's support: {what}")


class Likelihood(Component):
    """Base class: ``forward(params)`` is p(x|z), ``mean(params)`` is E[x|z]."""

    num_params = 1
    def bind(self, data_shape):
        """Called once by the VAE with the shape of one example."""
        self.data_shape = tuple(data_shape)
        self.event_dim = len(self.data_shape)
        return self

    def _split(self, params):
        return params.unbind(-self.event_dim - 1) if self.num_params > 1 else (params.squeeze(-self.event_dim - 1),)

    def forward(self, params):
        raise NotImplementedError

    def mean(self, params):
        return self(params).mean

    def check_support(self, x):
        """Raises ValueError naming the first value of ``x`` outside the support."""
        _raise_first_violation(x, torch.isfinite(x), "values must be finite")


class BernoulliLogits(TorchDistribution):
    """Independent Bernoulli(sigmoid(l_d)) over a whole example (event_shape = the data shape):
    log p(x) = sum_d [x_d l_d - softplus(l_d)], the same number as
    ``Bernoulli(logits=l).to_event(k).log_prob(x)`` in one fused pass over memory. With
    ``grey=True`` its support is [0, 1]: the same formula scores grey values (a cross-entropy,
    not a normalized density of grey data)."""

    arg_constraints = {"logits": constraints.real}
    has_rsample = False

    def __init__(self, logits, event_dim, validate_args=None, grey=False):
        self.logits = logits
        self._event_dims = event_dim
        self.grey = grey
        split = logits.dim() - event_dim
        super().__init__(logits.shape[:split], logits.shape[split:], validate_args=validate_args)

    @constraints.dependent_property
    def support(self):
        return constraints.independent(constraints.unit_interval if self.grey else constraints.boolean,
                                       self._event_dims)

    def expand(self, batch_shape, _instance=None):
        logits = self.logits.expand(torch.Size(batch_shape) + self.event_shape)
        return BernoulliLogits(logits, self._event_dims, validate_args=False, grey=self.grey)

    @property
    def mean(self):
        return torch.sigmoid(self.logits)

    @property
    def variance(self):
        p = torch.sigmoid(self.logits)
        return p * (1 - p)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            probs = torch.sigmoid(self.logits).expand(self._extended_shape(sample_shape))
            return torch.bernoulli(probs)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        logits, value = torch.broadcast_tensors(self.logits, value)
        # one fused kernel each way: -BCE(l, x) = x l - softplus(l), exactly, for any x
        log_p = -binary_cross_entropy_with_logits(logits, value, reduction="none")
        return log_p.flatten(-self._event_dims).sum(-1) if self._event_dims else log_p


@LIKELIHOODS.register("bernoulli")
class Bernoulli(Likelihood):
    """x_d ~ Bernoulli(sigmoid(l_d)), parameterized by logits l: for binary {0, 1} data.

    :param grey: also score grey values x_d in [0, 1] by the same formula,
        x_d log p_d + (1 - x_d) log(1 - p_d), as Pyro's semi-supervised example (``ss_vae_M2.py``)
        scores MNIST's grey pixels. That is a cross-entropy, not a density of grey data: its
        "log-likelihood" is comparable only with other runs on the same grey data, never with a
        binarized MNIST's. Data are then used as they are (``binarize="auto"`` means ``"none"``).
    """

    def __init__(self, grey: bool = False):
        super().__init__()
        if not isinstance(grey, bool):
            raise ValueError(f"bernoulli's grey must be true or false; got {grey!r}")
        self.grey = grey

    def forward(self, params):
        (logits,) = self._split(params)
        return BernoulliLogits(logits, self.event_dim, grey=self.grey)

    def mean(self, params):
        return torch.sigmoid(self._split(params)[0])

    def check_support(self, x):
        if self.grey:
            _raise_first_violation(x, (x >= 0) & (x <= 1), "bernoulli with grey = true needs values in [0, 1]")
        else:
            _raise_first_violation(x, (x == 0) | (x == 1), "bernoulli needs binary values in {0, 1} (binarize grey "
                                   "data, or score grey values with likelihood bernoulli, grey = true)")


@LIKELIHOODS.register("continuous_bernoulli")
class ContinuousBernoulli(Likelihood):
    """x_d ~ CB(lambda_d): C(lambda) lambda^x (1-lambda)^(1-x) on [0, 1], normalizer included."""

    def forward(self, params):
        (logits,) = self._split(params)
        return dist.ContinuousBernoulli(logits=logits).to_event(self.event_dim)

    def check_support(self, x):
        _raise_first_violation(x, (x >= 0) & (x <= 1), "continuous_bernoulli needs values in [0, 1]")


class _ScaleParameter(nn.Module):
    """A positive observation scale: fixed (a number), ``"learned"`` (one scalar) or
    ``"learned_per_dim"`` (one per data dimension), stored as log sigma."""

    def __init__(self, scale, init_scale):
        super().__init__()
        if isinstance(scale, (int, float)) and not isinstance(scale, bool):
            if not scale > 0:
                raise ValueError(f"scale must be positive; got scale={scale}")
            self.mode = "fixed"
            self.register_buffer("log_scale", torch.tensor(math.log(scale)))
        elif scale in ("learned", "learned_per_dim"):
            if not init_scale > 0:
                raise ValueError(f"init_scale must be positive; got init_scale={init_scale}")
            self.mode = scale
            self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        else:
            raise ValueError(f"scale must be a positive number, 'learned' or 'learned_per_dim'; got {scale!r}")

    def bind(self, data_shape):
        if self.mode == "learned_per_dim" and self.log_scale.dim() == 0:
            self.log_scale = nn.Parameter(self.log_scale.detach().expand(data_shape).clone())

    def forward(self):
        return self.log_scale.exp()


class _LocationScale(Likelihood):
    def __init__(self, scale=0.1, init_scale=0.2, mean="identity"):
        super().__init__()
        if mean not in ("identity", "sigmoid"):
            raise ValueError(f"mean must be 'identity' or 'sigmoid'; got {mean!r}")
        self.scale = _ScaleParameter(scale, init_scale)
        self.mean_fn = mean

    def bind(self, data_shape):
        super().bind(data_shape)
        self.scale.bind(self.data_shape)
        return self

    def _loc(self, params):
        (loc,) = self._split(params)
        return torch.sigmoid(loc) if self.mean_fn == "sigmoid" else loc

    def mean(self, params):
        return self._loc(params)


@LIKELIHOODS.register("gaussian")
class Gaussian(_LocationScale):
    """x_d ~ Normal(mu_d(z), sigma), sigma fixed, learned, or learned per dimension."""

    def forward(self, params):
        loc = self._loc(params)
        return dist.Normal(loc, self.scale().expand(loc.shape)).to_event(self.event_dim)


@LIKELIHOODS.register("laplace")
class Laplace(_LocationScale):
    """x_d ~ Laplace(mu_d(z), b): heavier tails than the Gaussian, an L1 reconstruction."""

    def forward(self, params):
        loc = self._loc(params)
        return dist.Laplace(loc, self.scale().expand(loc.shape)).to_event(self.event_dim)


@LIKELIHOODS.register("beta")
class Beta(Likelihood):
    """x_d ~ Beta(a_d(z), b_d(z)) on the open interval (0, 1); a, b = softplus(outputs) + eps."""

    num_params = 2

    def __init__(self, epsilon=1e-3):
        super().__init__()
        self.epsilon = float(epsilon)

    def forward(self, params):
        a, b = self._split(params)
        return dist.Beta(softplus(a) + self.epsilon, softplus(b) + self.epsilon).to_event(self.event_dim)

    def check_support(self, x):
        _raise_first_violation(x, (x > 0) & (x < 1), "beta needs values strictly inside (0, 1) (squash 0 and 1 first)")


class DiscretizedLogistic(TorchDistribution):
    """Logistic(loc, scale) integrated over the bin of width 1/255 around x in {0, 1/255, ..., 1};
    the edge bins take the tails (PixelCNN++, Salimans et al. 2017)."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.unit_interval
    has_rsample = False
    half_bin = 1.0 / 510.0

    def __init__(self, loc, scale, validate_args=None):
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(DiscretizedLogistic, _instance)
        new.loc = self.loc.expand(batch_shape)
        new.scale = self.scale.expand(batch_shape)
        super(DiscretizedLogistic, new).__init__(torch.Size(batch_shape), validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self):
        return self.loc.clamp(0.0, 1.0)

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device).clamp(1e-6, 1 - 1e-6)
            x = self.loc + self.scale * (torch.log(u) - torch.log1p(-u))
            return (x.clamp(0.0, 1.0) * 255.0).round() / 255.0

    def log_prob(self, value):
        inv_scale = self.scale.reciprocal()
        centered = value - self.loc
        upper = (centered + self.half_bin) * inv_scale
        lower = (centered - self.half_bin) * inv_scale
        log_cdf_upper = upper - softplus(upper)  # log sigmoid(upper): the left edge bin
        log_survival_lower = -softplus(lower)  # log(1 - sigmoid(lower)): the right edge bin
        bin_mass = torch.sigmoid(upper) - torch.sigmoid(lower)
        # Where the bin's mass underflows, its density at the centre times the width is exact to O(width^3).
        mid = centered * inv_scale
        log_density_mid = mid - 2.0 * softplus(mid) - torch.log(self.scale) + math.log(2 * self.half_bin)
        inner = torch.where(bin_mass > 1e-5, torch.log(bin_mass.clamp_min(1e-12)), log_density_mid)
        return torch.where(value < 0.001, log_cdf_upper, torch.where(value > 0.999, log_survival_lower, inner))


@LIKELIHOODS.register("logistic256")
class Logistic256(Likelihood):
    """x_d ~ discretized Logistic(mu_d(z), s_d(z)) over 256 levels: 8-bit data, so bits per
    dimension compare with the image-modelling literature."""

    num_params = 2

    def forward(self, params):
        loc, log_scale = self._split(params)
        scale = torch.exp(log_scale.clamp(-7.0, 5.0))
        return DiscretizedLogistic(loc, scale).to_event(self.event_dim)

    def mean(self, params):
        return self._split(params)[0].clamp(0.0, 1.0)

    def check_support(self, x):
        levels = x * 255.0
        ok = (x >= 0) & (x <= 1) & ((levels - levels.round()).abs() < 1e-3)
        _raise_first_violation(x, ok, "logistic256 needs 8-bit values k/255 in [0, 1]")


class CallableLikelihood(Likelihood):
    """Wraps a user's function ``params -> Distribution`` (one decoder output per data dimension,
    ``params`` of shape ``(..., *data_shape)``); the distribution's event shape must be the data shape."""

    def __init__(self, fn):
        super().__init__()
        hold_callable(self, fn)

    def bind(self, data_shape):
        super().bind(data_shape)
        probe = self.fn(torch.zeros(2, *self.data_shape))
        if not isinstance(probe, torch.distributions.Distribution) or tuple(probe.event_shape) != self.data_shape:
            raise ValueError(
                f"a likelihood function must return a Distribution with event_shape {self.data_shape} "
                f"(use .to_event({self.event_dim})); got {type(probe).__name__} with event_shape "
                f"{tuple(getattr(probe, 'event_shape', ()))}"
            )
        self._support = probe.support
        return self

    def forward(self, params):
        return self.fn(self._split(params)[0])

    def check_support(self, x):
        super().check_support(x)
        support = self._support
        while isinstance(support, constraints.independent):
            support = support.base_constraint
        _raise_first_violation(x, support.check(x), f"values must lie in {support}")


def make_likelihood(spec):
    """A name, a ``{"kind": ...}`` table, a ``Likelihood``, or a function ``params -> Distribution``."""
    if isinstance(spec, Likelihood):
        return spec
    if callable(spec) and not isinstance(spec, (str, dict)):
        return CallableLikelihood(spec)
    return LIKELIHOODS.build(spec)
