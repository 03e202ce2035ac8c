"""Two stochastic layers (Burda et al. 2015, section 5.1), as a Pyro model and guide.

model:  z2 ~ p(z2),  z1 ~ Normal(mu(z2), diag sigma(z2)^2),  x ~ likelihood(decoder(z1))
guide:  z1 ~ Normal(mu(x), diag sigma(x)^2),  z2 ~ Normal(mu(z1), diag sigma(z1)^2)

so log w = log p(x|z1) + log p(z1|z2) + log p(z2) - log q(z1|x) - log q(z2|z1), both layers drawn
by reparameterization. The model overrides :class:`~pyrovae.models.vae.VAE`'s, so every loss, bound and
estimate takes Pyro's traces (:func:`pyrovae.infer.log_weight_parts`), IWAE and DReG included.
Burda et al.'s networks: x -> 200-200 -> z1 (100) -> 100-100 -> z2 (50) and back, tanh units:
``HVAE(784, latent_dim=50, hidden=(200, 200), middle_dim=100, middle_hidden=(100, 100),
activation="tanh")``.
"""

from typing import Any, Sequence, Tuple, Union

import pyro
import pyro.distributions as dist
import torch

from .vae import VAE
from ..networks import ACTIVATIONS, MLPEncoder
from ..guides import make_guide, posterior
from ..priors import check_prior_distribution, make_prior
from ..validation import require_positive_int

__all__ = ["HVAE"]


class HVAE(VAE):
    """A VAE with two Gaussian stochastic layers: ``latent_dim`` is the top layer z2 (drawn from
    the prior), ``middle_dim`` the layer z1 between it and the data. ``hidden`` are the widths
    between x and z1, ``middle_hidden`` those between z1 and z2 (both directions).
    ``encode``/``decode`` work on z2, so the pictures (manifold, scatter, interpolation) show the
    top layer; z1 is taken at its mean on the way."""

    # q(z2 | z1) depends on the draw of z1, so a per-site closed-form KL (TraceMeanField_ELBO's)
    # integrates z1 with z2 held fixed: biased. The KL is estimated by Monte Carlo instead.
    mean_field_guide = False  # q(z2 | z1) given a draw of z1: no closed-form KL of the pair
    guide_description = "guide (z2 drawn given a draw of z1)"
    training_defaults = {"loss": "trace"}

    def __init__(self, data_shape: Union[int, Sequence[int]], latent_dim: int = 50,
                 hidden: Union[int, Sequence[int]] = (200, 200), likelihood: Any = "bernoulli", prior: Any = "normal",
                 network: str = "mlp", name: str = "vae", activation: str = "tanh", middle_dim: int = 100,
                 middle_hidden: Union[int, Sequence[int]] = (100, 100), guide: Any = "meanfield",
                 guide_args: dict = None):
        require_positive_int(latent_dim, "latent_dim")
        require_positive_int(middle_dim, "middle_dim")
        if network != "mlp":
            raise ValueError(f"the hvae is built of MLPs (Burda et al.); got network={network!r}")
        if _kind(prior) == "vamp":
            raise ValueError("the vamp prior maps pseudo-inputs through a one-layer encoder; the hvae's top "
                             "layer is two encoders away from the data: use another prior")
        # the base VAE's encoder and decoder are the bottom layer, x <-> z1
        super().__init__(data_shape, latent_dim=middle_dim, hidden=hidden, likelihood=likelihood, prior="normal",
                         network=network, name=name, activation=activation, guide=guide, guide_args=guide_args)
        middle_hidden = (middle_hidden,) if isinstance(middle_hidden, int) else tuple(int(h) for h in middle_hidden)
        act = ACTIVATIONS[activation]
        self.middle_dim, self.latent_dim = int(middle_dim), int(latent_dim)
        self.top_encoder = MLPEncoder((middle_dim,), latent_dim, middle_hidden, act)  # q(z2 | z1)
        # each layer's q of the same family: q(z1 | x) on the bottom encoder, q(z2 | z1) on the top one
        self.top_posterior = make_guide(guide, guide_args).bind(latent_dim, self.top_encoder.hidden_width)
        self.top_decoder = MLPEncoder((latent_dim,), middle_dim, middle_hidden, act)  # p(z1 | z2)
        self.prior = make_prior(prior).bind(latent_dim, self)
        check_prior_distribution(self.prior(), latent_dim)
        self.config.update(model="hvae", latent_dim=self.latent_dim, middle_dim=self.middle_dim,
                           middle_hidden=list(middle_hidden),
                           prior=dict(getattr(self.prior, "spec", {"kind": "custom"})))
        self._record_guide()

    def model(self, x: torch.Tensor) -> None:
        """p(x, z1, z2) = p(z2) p(z1 | z2) p(x | z1)."""
        self.check_data(x)
        self.register_with_pyro()
        with pyro.plate("data", x.shape[0], dim=-1):
            z2 = pyro.sample("z2", self.prior())
            loc, scale = self.top_decoder(z2)
            z1 = pyro.sample("z1", dist.Normal(loc, scale).to_event(1))
            pyro.sample("x", self.likelihood(self.decoder(z1)), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """q(z1, z2 | x) = q(z1 | x) q(z2 | z1), both reparameterized."""
        self.check_data(x)
        self.register_with_pyro()
        with pyro.plate("data", x.shape[0], dim=-1):
            q, infer = posterior(self.posterior, self.encoder, x)
            z1 = pyro.sample("z1", q, infer=infer)
            q, infer = posterior(self.top_posterior, self.top_encoder, z1)
            pyro.sample("z2", q, infer=infer)

    @property
    def posterior_dim(self) -> int:
        return self.middle_dim if hasattr(self, "middle_dim") else self.latent_dim

    def encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """x -> the mean and standard deviation of q(z2 | z1 = mu(x)) (of its base, for a flow)."""
        return self.top_encoder(self.encoder(self.check_data(x))[0])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z2 -> E[x | z1 = mu(z2)]."""
        return self.likelihood.mean(self.decoder(self.top_decoder(z)[0]))

    def likelihood_distribution(self, z: torch.Tensor):
        """z2 -> p(x | z1 = mu(z2))."""
        return self.likelihood(self.decoder(self.top_decoder(z)[0]))


def _kind(spec):
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict):
        return spec.get("kind")
    return getattr(spec, "spec", {}).get("kind")
