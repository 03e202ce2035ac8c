"""pyrovae: variational autoencoders as Pyro models and guides, trained by SVI.

>>> import pyrovae
>>> vae = pyrovae.VAE(data_shape=(1, 28, 28), latent_dim=2)
>>> history = pyrovae.fit(vae, train, test=test, epochs=10, loss="meanfield")
>>> log_px = pyrovae.log_likelihood(vae, x, num_samples=1000)

Beyond the plain VAE: :class:`pyrovae.CVAE` (conditional), :class:`pyrovae.M2` (semi-supervised,
labels summed out by enumeration), :class:`pyrovae.HVAE` (two stochastic layers).
"""

# the VAE before the inference core: its fast path recognizes the VAE's own model and guide, and
# the other model families (imported with pyrovae.models) read the core
from .models.vae import VAE
from . import datasets, distributions, exact, infer, likelihoods, priors
from .run_folder import load
from .evaluation import check_bounds, elbo, iwae_bound, log_likelihood
from .infer.ais import ais_log_likelihood, bdmc
from .infer import IWAE_ELBO, VAE_ELBO, log_weight_parts, make_elbo
from .infer.objectives import ELBOLoss, KLSchedule
from .train import fit
from . import models  # noqa: E402  (the model families build on VAE and the inference core)
from .models import CVAE, HVAE, M2

__version__ = "0.3.0"

__all__ = [
    "VAE",
    "fit",
    "load",
    "log_likelihood",
    "ais_log_likelihood",
    "bdmc",
    "elbo",
    "iwae_bound",
    "check_bounds",
    "datasets",
    "likelihoods",
    "priors",
    "exact",
    "infer",
    "ELBOLoss",
    "IWAE_ELBO",
    "VAE_ELBO",
    "log_weight_parts",
    "KLSchedule",
    "make_elbo",
    "models",
    "CVAE",
    "M2",
    "HVAE",
]
