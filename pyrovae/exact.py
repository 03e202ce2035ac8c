"""Closed forms for the linear-Gaussian VAE, the ground truth the estimators are tested against.

Decoder x = W z + b + sigma * eps, prior z ~ Normal(0, s^2 I):
    p(x)     = Normal(b, s^2 W W^T + sigma^2 I)
    p(z | x) = Normal(S W^T (x - b) / sigma^2, S),  S = (I / s^2 + W^T W / sigma^2)^-1

The conditional VAE with an affine decoder x = W_z z + W_c c + b + sigma * eps and the prior
network's z | c ~ Normal(m(c), diag s(c)^2) (any network of c: c is given)::

    p(x | c) = Normal(W_z m(c) + W_c c + b, W_z diag s(c)^2 W_z^T + sigma^2 I)
"""

import torch
from torch.distributions import MultivariateNormal

from .likelihoods import Gaussian
from .networks import MLPDecoder
from .priors import StandardNormal

__all__ = ["linear_gaussian_parameters", "linear_gaussian_log_likelihood", "linear_gaussian_posterior",
           "linear_gaussian_conditional_log_likelihood"]


def _linear_gaussian_problems(vae):
    problems = []
    if not isinstance(vae.decoder, MLPDecoder) or vae.config["hidden"]:
        problems.append("the decoder must be an MLP with hidden=() (affine)")
    likelihood = vae.likelihood
    if not isinstance(likelihood, Gaussian) or likelihood.scale.mode != "fixed" or likelihood.mean_fn != "identity":
        problems.append("the likelihood must be Gaussian with a fixed scale and identity mean")
    return problems


def linear_gaussian_parameters(vae):
    """(W, b, sigma, s) in float64, or a ValueError saying why the VAE is not linear-Gaussian."""
    problems = _linear_gaussian_problems(vae)
    if not isinstance(vae.prior, StandardNormal):
        problems.append("the prior must be 'normal'")
    if problems:
        raise ValueError("no closed form for this VAE: " + "; ".join(problems))
    linear = vae.decoder.net[0]
    weight = linear.weight.detach().double()
    bias = linear.bias.detach().double()
    sigma = vae.likelihood.scale().detach().double()
    return weight, bias, sigma, float(vae.prior.scale)


def linear_gaussian_log_likelihood(vae, x):
    """Exact log p(x_n) per example, in nats (float64)."""
    vae.check_data(x)
    weight, bias, sigma, s = linear_gaussian_parameters(vae)
    cov = s**2 * weight @ weight.T + sigma**2 * torch.eye(len(bias), dtype=weight.dtype, device=weight.device)
    return MultivariateNormal(bias, covariance_matrix=cov).log_prob(x.flatten(1).double())


def linear_gaussian_posterior(vae, x):
    """Exact posterior p(z | x_n): its means (N, d) and the shared covariance (d, d), float64."""
    vae.check_data(x)
    weight, bias, sigma, s = linear_gaussian_parameters(vae)
    eye = torch.eye(weight.shape[1], dtype=weight.dtype, device=weight.device)
    cov = torch.linalg.inv(eye / s**2 + weight.T @ weight / sigma**2)
    loc = (x.flatten(1).double() - bias) @ weight @ cov / sigma**2
    return loc, cov


@torch.no_grad()
def linear_gaussian_conditional_log_likelihood(cvae, x, labels=None):
    """Exact log p(x_n | c_n) of a :class:`~pyrovae.models.CVAE` with an affine decoder and a
    fixed-scale Gaussian likelihood, per example (float64): x the rest pixels under
    ``condition="quadrants"``, the whole example under ``"label"`` (``labels`` giving c)."""
    problems = _linear_gaussian_problems(cvae)
    if problems:
        raise ValueError("no closed form for this CVAE: " + "; ".join(problems))
    cvae.check_data(x)
    c = cvae.context(x, labels)
    loc, scale = (t.double() for t in cvae.prior_net(c))
    linear = cvae.decoder.net[0]
    latent_dim = loc.shape[-1]
    weight_z = linear.weight.detach().double()[:, :latent_dim]
    offset = c.double() @ linear.weight.detach().double()[:, latent_dim:].T + linear.bias.detach().double()
    observed = cvae.split(x)[1] if cvae.condition == "quadrants" else x.flatten(1)
    sigma = cvae.likelihood.scale().detach().double()
    eye = torch.eye(weight_z.shape[0], dtype=torch.float64, device=weight_z.device)
    cov = torch.einsum("ij,nj,kj->nik", weight_z, scale**2, weight_z) + sigma**2 * eye
    return MultivariateNormal(loc @ weight_z.T + offset, covariance_matrix=cov).log_prob(observed.double())
