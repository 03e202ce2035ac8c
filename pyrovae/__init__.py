"""pyrovae: variational autoencoders as Pyro models and guides, trained by SVI.

>>> import pyrovae
>>> vae = pyrovae.VAE(data_shape=(1, 28, 28), latent_dim=2)
>>> history = pyrovae.fit(vae, train, test=test, epochs=10, loss="meanfield")
>>> ll = pyrovae.log_likelihood(vae, test[:100], num_samples=1000)
"""

from . import datasets, likelihoods, priors
from .model import VAE
from .objectives import ELBOLoss, IWAE_ELBO, KLSchedule, make_elbo
from .train import fit
from .checkpoint import load

__version__ = "0.1.0"

__all__ = ["VAE", "fit", "load", "datasets", "likelihoods", "priors", "ELBOLoss", "IWAE_ELBO", "KLSchedule", "make_elbo"]
