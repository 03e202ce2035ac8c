"""The conditional VAE (Sohn et al. 2015) as a Pyro model and guide.

model:  z ~ p(z | c) = Normal(mu(c), diag sigma(c)^2)   (the prior network),
        x ~ likelihood(decoder(z, c))
guide:  z ~ q(z | x, c) = Normal(mu(x, c), diag sigma(x, c)^2)

The condition c is either

- ``condition="quadrants"`` (the task of Pyro's CVAE tutorial): c is 1, 2 or 3 quadrants of an
  image and x the rest of its pixels. Only the rest is observed, so every bound and estimate is of
  the conditional log p(x_rest | x_given). A deterministic baseline network guesses the rest from
  the given part; its guess (not its gradient) fills the unknown pixels of the image the prior
  network and the decoder read, as in the tutorial. The baseline is itself a Pyro program,
  ``baseline_model``/``baseline_guide`` (an observed site and no latent one), trained beside the
  CVAE on its own likelihood, the way Pyro's semi-supervised example trains its classifier;
- ``condition="label"``: c = one_hot(y), the class label, given as the second argument
  ``model(x, y)``; ``sample(num, condition=labels)`` generates digits of chosen classes.

Quadrants follow the tutorial's masks: 1 = the bottom-left quadrant given, 2 = the left half,
3 = every quadrant but the bottom-right.
"""

import math
from typing import Any, Sequence, Union

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from ..guides import posterior
from ..infer.weights import log_weight_parts
from ..likelihoods import make_likelihood
from .vae import VAE
from ..networks import ACTIVATIONS, MLPDecoder, MLPEncoder
from .labels import check_labels, concat_broadcast

__all__ = ["CVAE", "quadrant_mask", "CONDITIONS"]

CONDITIONS = ("quadrants", "label")


def quadrant_mask(height: int, width: int, given_quadrants: int) -> torch.Tensor:
    """A boolean (height, width) mask of the given pixels, as Pyro's CVAE tutorial masks them."""
    if given_quadrants not in (1, 2, 3):
        raise ValueError(f"given_quadrants must be 1, 2 or 3; got {given_quadrants!r}")
    given = torch.zeros(height, width, dtype=torch.bool)
    given[height // 2:, :width // 2] = True
    if given_quadrants >= 2:
        given[:, :width // 2] = True
    if given_quadrants == 3:
        given[:height // 2, :] = True
    return given


class CVAE(VAE):
    """A conditional VAE; see the module docstring for the two conditions.

    :param hidden: hidden widths of the recognition, prior and generation networks.
    :param condition: ``"quadrants"`` or ``"label"``.
    :param given_quadrants: 1, 2 or 3 (``condition="quadrants"``; images of shape (C, H, W)).
    :param num_classes: the number of labels (``condition="label"``).
    :param baseline_hidden: the baseline network's hidden widths (``condition="quadrants"``).
    """

    def __init__(self, data_shape: Union[int, Sequence[int]], latent_dim: int = 2,
                 hidden: Union[int, Sequence[int]] = (500, 500), likelihood: Any = "bernoulli", prior: Any = "normal",
                 network: str = "mlp", name: str = "vae", activation: str = "relu", condition: str = "quadrants",
                 given_quadrants: int = 1, num_classes: int = 10,
                 baseline_hidden: Union[int, Sequence[int]] = (500, 500), guide: Any = "meanfield",
                 guide_args: dict = None):
        if condition not in CONDITIONS:
            raise ValueError(f"unknown condition {condition!r}; choose one of {list(CONDITIONS)}")
        if (prior if isinstance(prior, str) else getattr(prior, "get", lambda k: None)("kind")) != "normal":
            raise ValueError(f"the cvae's prior p(z | c) is a network of the condition; prior must be 'normal', "
                             f"got {prior!r}")
        if network != "mlp":
            raise ValueError(f"the cvae is built of MLPs; got network={network!r}")
        super().__init__(data_shape, latent_dim=latent_dim, hidden=hidden, likelihood=likelihood, prior="normal",
                         network=network, name=name, activation=activation)
        hidden = tuple(self.config["hidden"])
        act = ACTIVATIONS[activation]
        self.condition, self.num_classes = condition, int(num_classes)
        data_dim = self.data_dim
        if condition == "quadrants":
            if len(self.data_shape) < 2:
                raise ValueError(f"condition='quadrants' needs images (C, H, W) or (H, W); "
                                 f"got data_shape={self.data_shape}")
            given = quadrant_mask(*self.data_shape[-2:], given_quadrants).expand(self.data_shape).reshape(-1)
            self.register_buffer("given_mask", given, persistent=False)
            self.register_buffer("rest_index", (~given).nonzero().squeeze(-1), persistent=False)
            rest_dim = int((~given).sum())
            baseline_hidden = (baseline_hidden,) if isinstance(baseline_hidden, int) else tuple(baseline_hidden)
            # p(x_rest | ...) is over the rest pixels only, the given ones being the condition
            self.likelihood = make_likelihood(likelihood).bind((rest_dim,))
            self.baseline = MLPDecoder((rest_dim,), data_dim, baseline_hidden, self.likelihood.num_params, act)
            condition_dim = data_dim
            self.encoder = MLPEncoder((data_dim,), latent_dim, hidden, act)
            self.decoder = MLPDecoder((rest_dim,), latent_dim + condition_dim, hidden, self.likelihood.num_params, act)
            self.config.update(given_quadrants=int(given_quadrants), baseline_hidden=list(baseline_hidden))
        else:
            if not isinstance(num_classes, int) or num_classes < 2:
                raise ValueError(f"num_classes must be an integer >= 2; got {num_classes!r}")
            condition_dim = self.num_classes
            self.encoder = MLPEncoder((data_dim + condition_dim,), latent_dim, hidden, act)
            self.decoder = MLPDecoder(self.data_shape, latent_dim + condition_dim, hidden, self.likelihood.num_params,
                                      act)
            self.config.update(num_classes=self.num_classes)
        self.prior_net = MLPEncoder((condition_dim,), latent_dim, hidden, act)
        self.config.update(model="cvae", condition=condition)
        self.bind_guide(guide, guide_args)  # on the encoder of (x, c)

    @property
    def plot_kinds(self):
        return ("completions", "curves") if self.condition == "quadrants" else ("classes", "curves")

    @property
    def requires_labels(self) -> bool:
        """Whether ``model`` and ``guide`` take the labels y as their second argument."""
        return self.condition == "label"

    def check_labels(self, labels, num_examples):
        """``labels`` as class indices in [0, num_classes), shape (num_examples,), or a ValueError."""
        return check_labels(labels, num_examples, self.num_classes)

    # -- the condition ---------------------------------------------------------------------------
    def split(self, x):
        """x -> (the image with the rest pixels zeroed, flat; the rest pixels, flat)."""
        flat = x.flatten(-len(self.data_shape))
        return flat * self.given_mask, flat[..., self.rest_index]

    def baseline_guess(self, given):
        """The baseline's mean of the rest pixels, filled into the given image (flat)."""
        guess = self.likelihood.mean(self.baseline(given))
        return given.index_copy(-1, self.rest_index, guess)

    def context(self, x, y=None):
        """What the prior network and the decoder read: the given image with the baseline's guess
        in the unknown pixels (its gradient stopped: the baseline trains on its own likelihood), or
        the one-hot label."""
        if self.condition == "quadrants":
            return self.baseline_guess(self.split(x)[0]).detach()
        if y is None:
            raise ValueError("this cvae is conditioned on labels: call model(x, y) / guide(x, y) with y of shape (N,)")
        return F.one_hot(self.check_labels(y, len(x)), self.num_classes).to(x.dtype)

    # -- the Pyro programs ------------------------------------------------------------------------
    def model(self, x: torch.Tensor, y: torch.Tensor = None) -> None:
        """p(x, z | c) = p(z | c) p(x | z, c): x the rest pixels, or the whole example."""
        self.check_data(x)
        self.register_with_pyro()
        c = self.context(x, y)
        observed = self.split(x)[1] if self.condition == "quadrants" else x
        with pyro.plate("data", x.shape[0], dim=-1):
            loc, scale = self.prior_net(c)
            z = pyro.sample("z", dist.Normal(loc, scale).to_event(1))
            pyro.sample("x", self.likelihood(self.decoder(concat_broadcast(z, c))), obs=observed)

    def guide(self, x: torch.Tensor, y: torch.Tensor = None) -> None:
        """q(z | x, c), reparameterized."""
        self.check_data(x)
        self.register_with_pyro()
        with pyro.plate("data", x.shape[0], dim=-1):
            q, infer = posterior(self.posterior, self.encoder, self.encoder_inputs(x, y))
            pyro.sample("z", q, infer=infer)

    def prior_guide(self, x: torch.Tensor, y: torch.Tensor = None) -> None:
        """z ~ p(z | c): the proposal of the tutorial's Monte Carlo estimate, log p(x | c) ~
        logmeanexp_k log p(x | z_k, c) (unbiased in p, with a far larger variance than q's)."""
        self.check_data(x)
        self.register_with_pyro()
        with pyro.plate("data", x.shape[0], dim=-1):
            loc, scale = self.prior_net(self.context(x, y))
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def baseline_model(self, x: torch.Tensor, y: torch.Tensor = None) -> None:
        """x_rest ~ likelihood(baseline(x_given)): the deterministic baseline as a Pyro program."""
        if self.condition != "quadrants":
            raise ValueError("the baseline network belongs to condition='quadrants'")
        self.check_data(x)
        self.register_with_pyro()
        given, rest = self.split(x)
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("x", self.likelihood(self.baseline(given)), obs=rest)

    def baseline_guide(self, x: torch.Tensor, y: torch.Tensor = None) -> None:
        """The baseline has no latent variable: an empty guide."""

    def auxiliary_programs(self):
        """(model, guide, weight) triples whose -ELBO the training objective adds: the baseline's
        likelihood, trained beside the CVAE."""
        return [(self.baseline_model, self.baseline_guide, 1.0)] if self.condition == "quadrants" else []

    # -- using it ---------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, num_samples: int, mean: bool = True, condition: torch.Tensor = None) -> torch.Tensor:
        """Examples under a condition: ``condition`` is labels, shape (N,) (``condition="label"``:
        returns ``(num_samples, N, *data_shape)``), or images whose given quadrants are kept
        (``condition="quadrants"``: returns completed images, ``(num_samples, N, *data_shape)``)."""
        if condition is None:
            raise ValueError("a cvae samples under a condition: sample(num, condition=labels or images)")
        if self.condition == "label":
            labels = check_labels(torch.as_tensor(condition), len(condition), self.num_classes).to(self.device)
            c = F.one_hot(labels, self.num_classes).to(self.dtype)
            x_like = torch.zeros(len(labels), *self.data_shape, device=self.device, dtype=self.dtype)
        else:
            x_like = self.check_data(condition.to(self.device, self.dtype))
            c = self.context(x_like)
        loc, scale = self.prior_net(c)
        z = dist.Normal(loc, scale).sample((num_samples,))
        params = self.decoder(concat_broadcast(z, c))
        out = self.likelihood.mean(params) if mean else self.likelihood(params).sample()
        if self.condition == "label":
            return out
        given = self.split(x_like)[0]
        return given.expand(num_samples, *given.shape).index_copy(-1, self.rest_index, out).reshape(
            num_samples, len(x_like), *self.data_shape)

    @torch.no_grad()
    def prior_log_likelihood(self, x, num_samples, labels=None, batch_size=256):
        """The tutorial's estimate, log p(x | c) ~ logmeanexp_k log p(x | z_k, c), z_k ~ p(z | c):
        importance sampling with the prior network as the proposal, from the same traces."""
        estimates = []
        with pyro.validation_enabled(False):
            for start in range(0, len(x), batch_size):
                args = (x[start:start + batch_size],) if labels is None else (
                    x[start:start + batch_size], labels[start:start + batch_size])
                log_w = torch.cat([log_weight_parts(self.model, self.prior_guide, *args, num_particles=k).log_weights
                                   for k in _pieces(num_samples, 128)])
                estimates.append(torch.logsumexp(log_w.double(), 0) - math.log(num_samples))
        return torch.cat(estimates)

    @torch.no_grad()
    def extra_metrics(self, x, labels, num_samples):
        """What the quadrant task reports beside log p(x_rest | x_given): the baseline's and the
        prior-proposal estimate (nats per example)."""
        metrics = {"prior_proposal_log_likelihood": float(self.prior_log_likelihood(x, num_samples, labels).mean())}
        if self.condition == "quadrants":
            with pyro.validation_enabled(False):
                baseline = torch.cat([log_weight_parts(self.baseline_model, self.baseline_guide,
                                                       x[i:i + 1024]).observed for i in range(0, len(x), 1024)])
            metrics["baseline_log_likelihood"] = float(baseline.double().mean())
        return metrics

    @torch.no_grad()
    def baseline_completion(self, x: torch.Tensor) -> torch.Tensor:
        """The baseline's guess of the rest pixels, filled into the given ones: ``(N, *data_shape)``."""
        return self.baseline_guess(self.split(self.check_data(x))[0]).reshape(x.shape)

    def encoder_inputs(self, x, y=None):
        """What q(z | x, c) reads: the whole image under ``condition="quadrants"`` (it holds c),
        the image and the one-hot label otherwise."""
        return x.flatten(1) if self.condition == "quadrants" else torch.cat([x.flatten(1), self.context(x, y)], -1)

    def encode(self, x, y=None):
        """(x, c) -> the mean and standard deviation of q(z | x, c) (of its base, for a flow)."""
        return self.encoder(self.encoder_inputs(x, y))


def _pieces(total, size):
    return [min(size, total - done) for done in range(0, total, size)]
