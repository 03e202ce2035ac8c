"""pyrovae: variational autoencoders as Pyro models and guides, trained by SVI.

>>> import pyrovae
>>> vae = pyrovae.VAE(data_shape=(1, 28, 28), latent_dim=2)
>>> history = pyrovae.fit(vae, train, test=test, epochs=10, loss="meanfield")
>>> log_px = pyrovae.log_likelihood(vae, x, num_samples=1000)

Beyond the plain VAE: :class:`pyrovae.CVAE` (conditional), :class:`pyrovae.M2` (semi-supervised,
labels summed out by enumeration), :class:`pyrovae.HVAE` (two stochastic layers).
"""

from . import datasets, distributions, exact, infer, likelihoods, priors, program, protocol
from .models.vae import VAE
from .run_folder import load
from . import estimate
from .estimate import ais_log_likelihood, bdmc, check_bounds, elbo, iwae_bound, log_likelihood
from .infer import IWAE_ELBO, VAE_ELBO, log_weight_parts, make_elbo
from .program import Program, as_program
from .protocol import ModelProtocol
from .infer.objectives import ELBOLoss, KLSchedule
from .train import fit
from . import models  # noqa: E402  (the model families build on VAE and the inference core)
from .models import CVAE, HVAE, M2

__version__ = "0.4.0"


def __getattr__(name):
    # pyrovae.evaluation, the estimators' module until 0.3: imported on first use, each of its
    # names warning that it moved to pyrovae.estimate
    if name == "evaluation":
        import importlib

        return importlib.import_module(".evaluation", __name__)
    raise AttributeError(f"module 'pyrovae' has no attribute {name!r}")

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
    "estimate",
    "protocol",
    "ModelProtocol",
    "Program",
    "as_program",
    "CVAE",
    "M2",
    "HVAE",
]
