r"""Posterior families q(z|x) for the guide, by name like priors and likelihoods: each turns the
encoder's outputs (mu(x), sigma(x)) and its last hidden layer h(x) into a Pyro distribution over z
with ``event_shape == (latent_dim,)``, which the guide samples at the latent site.

- ``meanfield``: q = Normal(mu, diag sigma^2) (the default; the fast path and the compiled step).
- ``lowrank``: q = Normal(mu, diag sigma^2 + F F^T), F = W h(x) of rank r (``rank``, the latent's
  dimension by default: a full covariance), Pyro's ``LowRankMultivariateNormal``. Its KL against
  a Normal prior is in closed form.
- ``planar``: z = f_k o ... o f_1(z_0), z_0 ~ Normal(mu, diag sigma^2),
  f(z) = z + u tanh(w^T z + b) with (u, w, b) affine in h(x) (Rezende & Mohamed 2015), ``steps``
  of them; ``log q(z) = log N(z_0) - sum_k log |1 + psi_k^T u_k|``. It has no inverse: its density is
  known at its own draws only (importance sampling, the ELBOs; not AIS from the guide, not STL).
- ``iaf``: ``steps`` affine autoregressive steps z_k = mu_k(z_{k-1}, h) + sigma_k(z_{k-1}, h) z_{k-1}
  (Kingma et al. 2016), each a masked network (``hidden`` widths) that also reads h(x), the order
  of the coordinates reversed between steps; log q(z) = log N(z_0) - sum_k sum_i log sigma_{k,i}.

A user plugs in a callable ``(loc, scale, h) -> Distribution`` or a Pyro conditional transform
(``pyro.distributions.transforms.ConditionalTransformModule``, applied to Normal(mu, sigma) given h).
"""

import functools

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro.distributions import ConditionalTransformModule
from pyro.nn import ConditionalAutoRegressiveNN
from torch import nn

from .registry import Component, Registry, hold_callable

__all__ = ["GUIDES", "Guide", "MeanField", "LowRank", "Planar", "IAF", "CallableGuide", "ConditionalFlowGuide",
           "make_guide", "posterior", "STOPPED_LOG_PROB"]

GUIDES = Registry("guide")


def _positive_int(value, what, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer; got {value!r}")
    return value


class Guide(Component):
    """Base class. ``bind(latent_dim, context_dim)`` is called once by the model before any use;
    ``forward(loc, scale, context)`` gives q(z | x).

    :cvar needs_context: whether the family reads the encoder's hidden layer.
    :cvar invertible: whether its density is known at any z (not only at its own draws).
    :cvar analytic_kl: whether its KL against a Normal prior has a closed form.
    """

    needs_context = False
    invertible = True
    analytic_kl = False

    def bind(self, latent_dim, context_dim):
        self.latent_dim, self.context_dim = int(latent_dim), int(context_dim)
        return self

    def forward(self, loc, scale, context=None):
        raise NotImplementedError

    def stopped_log_prob(self, loc, scale, context, z):
        """log q(z) with every parameter of q stopped (the encoder's outputs and this module's
        weights), the gradient through z kept: what STL and DReG read."""
        if not self.invertible:
            raise ValueError(f"estimator 'stl'/'dreg' evaluates q(z|x) at z with its parameters stopped; the "
                             f"{self.spec.get('kind', type(self).__name__)!r} guide has no inverse to do so: use "
                             "estimator='standard', or the 'iaf' or 'lowrank' guide")
        detached = {name: p.detach() for name, p in self.named_parameters()}
        args = tuple(None if t is None else t.detach() for t in (loc, scale, context))
        return torch.func.functional_call(self, detached, args, {"at": z})


@GUIDES.register("meanfield")
class MeanField(Guide):
    """q(z|x) = Normal(mu(x), diag sigma(x)^2)."""

    analytic_kl = True

    def forward(self, loc, scale, context=None, at=None):
        q = dist.Normal(loc, scale).to_event(1)
        return q if at is None else q.log_prob(at)


@GUIDES.register("lowrank")
class LowRank(Guide):
    """q(z|x) = Normal(mu, diag sigma^2 + F F^T), F = W h(x) + c, shape (latent_dim, rank); ``rank``
    defaults to the latent's dimension (a full covariance)."""

    needs_context = True
    analytic_kl = True

    def __init__(self, rank=None):
        super().__init__()
        self.rank = _positive_int(rank, "lowrank's rank", allow_none=True)

    def bind(self, latent_dim, context_dim):
        super().bind(latent_dim, context_dim)
        rank = self.rank or self.latent_dim
        if rank > self.latent_dim:
            raise ValueError(f"lowrank's rank ({rank}) exceeds the latent's dimension ({self.latent_dim})")
        self.factor_rank = rank
        self.factor = nn.Linear(self.context_dim, self.latent_dim * rank)
        with torch.no_grad():  # starts near the mean-field guide, F small
            self.factor.weight.mul_(0.01)
            self.factor.bias.zero_()
        return self

    def forward(self, loc, scale, context=None, at=None):
        # divided by sqrt(rank): F F^T sums r squares, so each unit of F moves the covariance as at rank 1
        # (unscaled, a full rank learned 14 nats slower than rank 2 over MNIST's first two epochs)
        factor = self.factor(context).reshape(*context.shape[:-1], self.latent_dim, self.factor_rank)
        q = dist.LowRankMultivariateNormal(loc, factor / self.factor_rank ** 0.5, scale.pow(2))
        return q if at is None else q.log_prob(at)


class _AffineHypernet(nn.Module):
    """h -> (b, u, w) of a planar step, affine in h (as Rezende & Mohamed's amortized flows)."""

    def __init__(self, context_dim, latent_dim):
        super().__init__()
        self.latent_dim = latent_dim
        self.linear = nn.Linear(context_dim, 1 + 2 * latent_dim)
        with torch.no_grad():
            self.linear.weight.mul_(0.01)

    def forward(self, context):
        out = self.linear(context)
        return out[..., :1], out[..., 1:1 + self.latent_dim], out[..., 1 + self.latent_dim:]


class _Flow(Guide):
    """Normal(mu, diag sigma^2) pushed through conditional transforms given h."""

    needs_context = True

    def transforms(self, context):
        raise NotImplementedError

    def forward(self, loc, scale, context=None, at=None):
        q = dist.TransformedDistribution(dist.Normal(loc, scale).to_event(1), self.transforms(context))
        return q if at is None else q.log_prob(at)


@GUIDES.register("planar")
class Planar(_Flow):
    """``steps`` planar steps, each's (u, w, b) affine in h(x)."""

    invertible = False

    def __init__(self, steps=4):
        super().__init__()
        self.steps = _positive_int(steps, "planar's steps")

    def bind(self, latent_dim, context_dim):
        super().bind(latent_dim, context_dim)
        self.flows = nn.ModuleList(T.ConditionalPlanar(_AffineHypernet(self.context_dim, self.latent_dim))
                                   for _ in range(self.steps))
        return self

    def transforms(self, context):
        return [flow.condition(context) for flow in self.flows]


@GUIDES.register("iaf")
class IAF(_Flow):
    """``steps`` affine autoregressive steps conditioned on h(x) (masked networks of ``hidden``
    widths, default one layer of max(2 latent_dim, 16)), the order reversed between steps.

    ``gated=True`` takes Kingma et al.'s numerically stable form, the one van den Berg et al.'s
    code uses: z_k = g z_{k-1} + (1 - g) m, g = sigmoid(s + ``forget_bias``), log-determinant
    sum_i log g_i (Pyro's ``stable=True``; the forget bias 1 of their code starts each step near
    z_k = 0.73 z_{k-1} + 0.27 m). Off: z_k = m + exp(s) z_{k-1}, Pyro's default. ``activation``:
    the masked networks' units, tanh by default (bounded: q keeps the base's Gaussian tails far
    from the data), elu as van den Berg et al.'s, or relu. ``init``: the masked layers' weights,
    PyTorch's default for a linear layer (``"pyro"``), or ``"kaiming-out"``: N(0, 2 / out width),
    biases 0, as van den Berg et al.'s masked layers draw them (Kaiming-normal over a weight stored
    (in, out), whose fan PyTorch reads as the output width): a step far from the identity at the
    start, which on their static-MNIST recipe reached a 2.6 nats higher validation ELBO in four
    epochs (three seeds; issue #42)."""

    ACTIVATIONS = {"tanh": nn.Tanh, "elu": nn.ELU, "relu": nn.ReLU}

    INITS = ("pyro", "kaiming-out")

    def __init__(self, steps=2, hidden=None, gated=False, forget_bias=1.0, activation="tanh", init="pyro"):
        super().__init__()
        if activation not in self.ACTIVATIONS:
            raise ValueError(f"iaf's activation must be one of {sorted(self.ACTIVATIONS)}; got {activation!r}")
        if init not in self.INITS:
            raise ValueError(f"iaf's init must be one of {list(self.INITS)}; got {init!r}")
        self.activation, self.init = activation, init
        self.steps = _positive_int(steps, "iaf's steps")
        if hidden is not None:
            hidden = [int(h) for h in ([hidden] if isinstance(hidden, int) else hidden)]
        self.hidden = hidden
        if not isinstance(gated, bool):
            raise ValueError(f"iaf's gated must be true or false; got {gated!r}")
        if isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float)):
            raise ValueError(f"iaf's forget_bias must be a number; got {forget_bias!r}")
        self.gated, self.forget_bias = gated, float(forget_bias)

    def bind(self, latent_dim, context_dim):
        super().bind(latent_dim, context_dim)
        if self.latent_dim < 2:
            raise ValueError("the 'iaf' guide needs a latent of at least 2 dimensions (an autoregressive step over "
                             "one coordinate is an affine map: use 'meanfield')")
        hidden = self.hidden or [max(2 * self.latent_dim, 16)]
        if min(hidden) < self.latent_dim:
            raise ValueError(f"iaf's hidden widths {hidden} must be at least the latent's dimension ({self.latent_dim})")
        # tanh units: mu and log sigma stay bounded far from the data, so q keeps the base's Gaussian tails
        # (ReLU units extrapolate linearly and gave tails lighter than the posterior's: Pareto k > 0.7)
        form = {"stable": True, "sigmoid_bias": self.forget_bias} if self.gated else {}
        self.flows = nn.ModuleList(
            T.ConditionalAffineAutoregressive(ConditionalAutoRegressiveNN(self.latent_dim, self.context_dim, hidden,
                                                                          nonlinearity=self.ACTIVATIONS[self.activation]()),
                                              **form)
            for _ in range(self.steps))
        if self.init == "kaiming-out":
            with torch.no_grad():
                for layer in self.flows.modules():
                    if isinstance(layer, nn.Linear):  # Pyro's masked layers are linear layers with a mask
                        layer.weight.normal_(0.0, (2.0 / layer.out_features) ** 0.5)
                        layer.bias.zero_()
        self.register_buffer("reverse", torch.arange(self.latent_dim - 1, -1, -1), persistent=False)
        return self

    def transforms(self, context):
        steps = []
        for i, flow in enumerate(self.flows):
            if i:
                steps.append(T.Permute(self.reverse))
            steps.append(flow.condition(context))
        return steps


class ConditionalFlowGuide(_Flow):
    """A user's Pyro conditional transform (or several), applied to Normal(mu, sigma) given h(x)."""

    def __init__(self, transforms):
        super().__init__()
        transforms = list(transforms) if isinstance(transforms, (list, tuple)) else [transforms]
        self.flows = nn.ModuleList(transforms)
        self.__dict__["_spec"] = {"kind": "custom", "transform": type(transforms[0]).__name__}

    def transforms(self, context):
        return [flow.condition(context) if isinstance(flow, ConditionalTransformModule) else flow
                for flow in self.flows]


class CallableGuide(Guide):
    """A user's ``fn(loc, scale, h) -> Distribution`` over z (event shape ``(latent_dim,)``); a
    module's parameters train with the model."""

    needs_context = True
    invertible = True

    def __init__(self, fn):
        super().__init__()
        hold_callable(self, fn)

    def forward(self, loc, scale, context=None, at=None):
        q = self.fn(loc, scale, context)
        if not isinstance(q, torch.distributions.Distribution) or tuple(q.event_shape) != (loc.shape[-1],):
            raise ValueError(f"a guide callable must return a Distribution with event shape ({loc.shape[-1]},); got "
                             f"{type(q).__name__} with event shape {tuple(getattr(q, 'event_shape', ()))}")
        return q if at is None else q.log_prob(at)


def make_guide(spec, guide_args=None):
    """A name, a ``{"kind": ...}`` table, a :class:`Guide`, a Pyro conditional transform (or a
    list of them), or a callable ``(loc, scale, h) -> Distribution``; ``guide_args`` are the
    named family's arguments (``make_guide("iaf", {"steps": 4})``)."""
    if guide_args:
        if not isinstance(spec, (str, dict)):
            raise ValueError("guide_args go with a guide named by a string or a table; an object carries its own")
        spec = {"kind": spec, **guide_args} if isinstance(spec, str) else {**spec, **guide_args}
    if isinstance(spec, Guide):
        return spec
    if isinstance(spec, ConditionalTransformModule) or (
            isinstance(spec, (list, tuple)) and spec and all(isinstance(t, nn.Module) for t in spec)):
        return ConditionalFlowGuide(spec)
    if callable(spec) and not isinstance(spec, (str, dict)):
        return CallableGuide(spec)
    return GUIDES.build(spec)


def guide_kind(guide) -> str:
    return guide.spec.get("kind", "custom")


STOPPED_LOG_PROB = "pyrovae_stopped_log_prob"  # the site's infer key: log q at z, q's parameters stopped


def posterior(guide, encoder, inputs):
    """(q(z | inputs), the ``infer`` dict of its sample site) for ``guide`` from ``encoder``: its
    heads (mu, sigma) and, where the family reads it, its last hidden layer. The infer dict holds,
    for a family other than the mean-field one, the function STL and DReG read log q with (its
    parameters stopped)."""
    if not guide.needs_context:
        loc, scale = encoder(inputs)
        h = None
    else:
        h = encoder.features(inputs)
        loc, scale = encoder.heads(h)
    q = guide(loc, scale, h)
    if isinstance(guide, MeanField):
        return q, {}
    return q, {STOPPED_LOG_PROB: functools.partial(guide.stopped_log_prob, loc, scale, h)}

