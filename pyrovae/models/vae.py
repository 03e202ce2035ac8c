"""The VAE as a Pyro model/guide pair.

model:  z ~ p(z),  x ~ p(x | decoder(z))          (the generative model, p_theta)
guide:  z ~ q(z | x), by default Normal(mu(x), diag sigma(x)^2)   (the inference network, q_phi;
        a richer family by name: lowrank, planar, iaf, :mod:`pyrovae.guides`)
"""

import functools
import math
from typing import Any, Sequence, Tuple, Union

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from pyro.params import param_with_module_name
from pyro.poutine.runtime import _PYRO_STACK

from ..guides import MeanField, make_guide, posterior
from ..likelihoods import LIKELIHOODS, make_likelihood
from ..networks import build_networks
from ..priors import PRIORS, check_prior_distribution, make_prior
from ..protocol import ModelProtocol
from ..validation import require_positive_int
from .vae_fast_path import VAEAISTarget, vae_weight_parts

__all__ = ["VAE", "fast_vae"]

def fast_vae(model, guide):
    """The :class:`VAE` behind ``model`` and ``guide`` where its fast path
    (:mod:`pyrovae.models.vae_fast_path`) computes exactly what their traces define, else None."""
    vae = getattr(model, "__self__", None)
    if not isinstance(vae, VAE) or vae.fast_weight_parts(model, guide) is None:
        return None
    return vae


class VAE(PyroModule, ModelProtocol):
    """A variational autoencoder whose ``model`` is the decoder and whose ``guide`` is the encoder.

    The weights are module parameters (``vae.parameters()``). ``model`` and ``guide`` register
    them with Pyro (``pyro.module``, as Pyro's own VAE example does), so both of Pyro's
    interfaces train the VAE: the classic ``SVI(vae.model, vae.guide, pyro.optim.Adam(...),
    Trace_ELBO())``, and the module interface ``Trace_ELBO()(vae.model, vae.guide)`` with any
    ``torch.optim`` optimizer over ``vae.parameters()``; :func:`pyrovae.fit` uses the latter.

    :param data_shape: shape of one example, e.g. ``(1, 28, 28)`` or ``(784,)``.
    :param latent_dim: dimension of z, at least 1.
    :param hidden: hidden layer widths; ``()`` makes encoder and decoder affine.
    :param likelihood: a name from ``pyrovae.likelihoods.LIKELIHOODS``, a ``{"kind": ...}``
        table, or a :class:`~pyrovae.likelihoods.Likelihood`.
    :param prior: a name from ``pyrovae.priors.PRIORS``, a table, a
        :class:`~pyrovae.priors.Prior`, or a callable returning a Distribution over z.
    :param guide: the posterior family q(z|x): a name from ``pyrovae.guides.GUIDES``
        (``"meanfield"``, ``"lowrank"``, ``"planar"``, ``"iaf"``), a ``{"kind": ...}`` table, a
        :class:`~pyrovae.guides.Guide`, a Pyro conditional transform, or a callable
        ``(loc, scale, h) -> Distribution``; ``guide_args`` the named family's arguments.
    :param network: ``"mlp"``, ``"conv"``, ``"gated"`` (Tomczak & Welling's gated units) or
        ``"gated-conv"`` (van den Berg et al.'s gated convolutional networks; ``hidden=(256,)``
        and ``activation="identity"`` give theirs).
    :param activation: ``"relu"``, ``"tanh"`` or ``"identity"`` between hidden layers.
    :param name: the prefix of the parameters' names in Pyro's param store.
    """

    def __init__(self, data_shape: Union[int, Sequence[int]], latent_dim: int = 2, hidden: Union[int, Sequence[int]] = (400,),
                 likelihood: Any = "bernoulli", prior: Any = "normal", network: str = "mlp", name: str = "vae",
                 activation: str = "relu", guide: Any = "meanfield", guide_args: dict = None):
        super().__init__()
        if not isinstance(name, str) or not name or "$$$" in name:
            raise ValueError(f"name must be a non-empty string without '$$$'; got {name!r}")
        self.param_prefix = name
        if isinstance(data_shape, int):
            data_shape = (data_shape,)
        data_shape = tuple(data_shape)
        if not data_shape or any(not isinstance(s, int) or s < 1 for s in data_shape):
            raise ValueError(f"data_shape must be a tuple of positive integers; got {data_shape}")
        require_positive_int(latent_dim, "latent_dim")
        if isinstance(hidden, int):
            hidden = (hidden,)
        self.data_shape = data_shape
        self.latent_dim = latent_dim
        self.likelihood = make_likelihood(likelihood).bind(data_shape)
        self.encoder, self.decoder = build_networks(network, data_shape, latent_dim, hidden, self.likelihood.num_params,
                                                    activation)
        self.prior = make_prior(prior).bind(latent_dim, self)
        check_prior_distribution(self.prior(), latent_dim)
        self.bind_guide(guide, guide_args)
        self.config = {
            "data_shape": list(data_shape),
            "latent_dim": latent_dim,
            "hidden": [int(h) for h in hidden],
            "network": network,
            "activation": activation,
            "likelihood": dict(getattr(self.likelihood, "spec", {"kind": "custom"})),
            "prior": dict(getattr(self.prior, "spec", {"kind": "custom"})),
        }
        self._record_guide()

    def bind_guide(self, guide: Any = "meanfield", guide_args: dict = None) -> None:
        """The posterior family q(z|x) on the encoder as it is now (a family that replaces the
        encoder binds it again): ``self.posterior``."""
        self.posterior = make_guide(guide, guide_args).bind(self.posterior_dim, self.encoder.hidden_width)
        if hasattr(self, "config"):
            self._record_guide()

    @property
    def posterior_dim(self) -> int:
        """The dimension of the latent site the encoder's guide draws (z; the hvae's z1)."""
        return self.latent_dim

    @property
    def guide_description(self) -> str:
        """How errors name the guide family: ``"'planar' guide"``."""
        return f"{self.posterior.spec.get('kind')!r} guide"

    @property
    def stopped_guide_density(self) -> bool:
        """Whether q(z|x) can be evaluated at any z with its parameters stopped (STL, DReG): the
        posterior family has an inverse (every named family but planar)."""
        return self.posterior.invertible

    def _record_guide(self):
        self.config.pop("guide", None)
        if not isinstance(self.posterior, MeanField):  # (a mean-field run's config reads as before)
            self.config["guide"] = dict(self.posterior.spec)

    @property
    def device(self) -> torch.device:
        """Where the VAE's parameters are (the CPU for a VAE without any)."""
        parameter = next(self.parameters(), None)
        return torch.device("cpu") if parameter is None else parameter.device

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point type of the VAE's parameters (data is converted to it)."""
        parameter = next(self.parameters(), None)
        return torch.get_default_dtype() if parameter is None else parameter.dtype

    @property
    def data_dim(self) -> int:
        return math.prod(self.data_shape)

    def check_data(self, x: torch.Tensor) -> torch.Tensor:
        """Raises a ValueError unless ``x`` is a float tensor of shape ``(N, *data_shape)``."""
        if not torch.is_tensor(x):
            raise TypeError(f"x must be a torch.Tensor of shape (N, {', '.join(map(str, self.data_shape))}); got {type(x).__name__}")
        if tuple(x.shape[1:]) != self.data_shape or x.dim() != len(self.data_shape) + 1:
            raise ValueError(
                f"x must have shape (N, {', '.join(map(str, self.data_shape))}) for this VAE; got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating-point tensor; got dtype {x.dtype}")
        return x

    def prepare_data(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` checked (:meth:`check_data`, the likelihood's support) and on the VAE's device."""
        self.check_data(x)
        x = x.to(self.device)
        self.likelihood.check_support(x)
        return x

    def evaluation_width(self) -> int:
        """Floats per example and sample in the widest tensor of one evaluation of the weights:
        what the estimators size their chunks by."""
        width = max(self.data_dim * self.likelihood.num_params, max(self.config["hidden"], default=1))
        return width * (self.num_classes if self.semi_supervised else 1)  # a decoder pass per class

    def fast_weight_parts(self, model, guide):
        """The fast path (:mod:`pyrovae.models.vae_fast_path`) where ``model`` and ``guide`` are
        this VAE's own, not overridden by a subclass, with a registered prior and likelihood, and
        no Pyro handler active; else None (the traces)."""
        if _PYRO_STACK or getattr(model, "__self__", None) is not self or getattr(guide, "__self__", None) is not self:
            return None
        if getattr(model, "__func__", None) is not VAE.model or getattr(guide, "__func__", None) is not VAE.guide:
            return None
        if type(self).model is not VAE.model or type(self).guide is not VAE.guide:
            return None
        if not isinstance(self.posterior, MeanField):  # a richer posterior: Pyro's traces
            return None
        if not (PRIORS.holds(type(self.prior)) and LIKELIHOODS.holds(type(self.likelihood))):
            return None
        return functools.partial(vae_weight_parts, self)

    def fast_ais_target(self, model, guide):
        """AIS's fast target (:class:`~pyrovae.models.vae_fast_path.VAEAISTarget`) for the pair the
        fast path serves (:meth:`fast_weight_parts`), else None (the traces)."""
        if self.fast_weight_parts(model, guide) is None:
            return None
        return functools.partial(VAEAISTarget, self)

    def register_with_pyro(self) -> None:
        """``pyro.module(name, self)``: every parameter becomes a ``param`` site, which is how
        ``SVI`` with a ``pyro.optim`` optimizer finds what to train. An entry of the same name that
        another module left in the param store (a VAE built earlier in the process) is replaced
        first: the module's own parameters are always the ones trained."""
        store = pyro.get_param_store()
        held = dict(store.named_parameters())
        for name, parameter in self.named_parameters():
            full_name = param_with_module_name(self.param_prefix, name)
            if full_name in held and held[full_name] is not parameter:
                del store[full_name]
        pyro.module(self.param_prefix, self)

    def model(self, x: torch.Tensor) -> None:
        """p(x, z) = p(z) p(x | z): z ~ prior, x ~ likelihood(decoder(z)), one ``data`` plate."""
        self.check_data(x)
        self.register_with_pyro()
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """q(z | x): Normal(mu(x), diag sigma(x)^2) or the family ``guide`` names, reparameterized."""
        self.check_data(x)
        self.register_with_pyro()
        with pyro.plate("data", x.shape[0], dim=-1):
            q, infer = posterior(self.posterior, self.encoder, x)
            pyro.sample("z", q, infer=infer)

    @property
    def training_defaults(self):
        """The loss a run trains with by default: the closed-form KL where the guide has one
        (``meanfield``), the Monte Carlo KL (``trace``) for a flow."""
        return {} if self.posterior.analytic_kl else {"loss": "trace"}

    @property
    def mean_field_guide(self) -> bool:
        """Whether KL(q(z|x) || p(z)) has a closed form for the guide's family (meanfield, lowrank)."""
        return self.posterior.analytic_kl

    def encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """x -> (mu(x), sigma(x)), the posterior mean and standard deviation (a low-rank guide:
        its mean and marginal deviations; a flow: its base's mean pushed through the flow, and the
        base's deviation)."""
        x = self.check_data(x)
        if isinstance(self.posterior, MeanField):
            return self.encoder(x)
        q, _ = posterior(self.posterior, self.encoder, x)
        if isinstance(q, dist.LowRankMultivariateNormal):
            return q.loc, q.variance.sqrt()
        base = q.base_dist.base_dist if isinstance(q, dist.TransformedDistribution) else q
        if isinstance(q, dist.TransformedDistribution):
            z = base.loc
            for transform in q.transforms:
                z = transform(z)
            return z, base.scale
        return q.mean, q.stddev

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z -> E[x | z], the likelihood's mean."""
        return self.likelihood.mean(self.decoder(z))

    def likelihood_distribution(self, z: torch.Tensor):
        """z -> p(x | z) as a Distribution over whole examples."""
        return self.likelihood(self.decoder(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """x -> E[x | z = mu(x)]: the decoded posterior mean."""
        return self.decode(self.encode(x)[0])

    @torch.no_grad()
    def prior_latents(self, num: int) -> torch.Tensor:
        """z ~ p(z), ``(num, latent_dim)``."""
        return self.prior().sample((num,))

    @property
    def prior_name(self) -> str:
        return self.config["prior"].get("kind", "custom")

    @torch.no_grad()
    def sample(self, num_samples: int, mean: bool = True) -> torch.Tensor:
        """Draws z ~ p(z) and returns E[x | z] (``mean=True``) or a draw x ~ p(x | z)."""
        z = self.prior().sample((num_samples,))
        return self.decode(z) if mean else self.likelihood_distribution(z).sample()
