"""The model families, each a Pyro model/guide pair: the plain VAE (:mod:`pyrovae.models.vae`,
:class:`pyrovae.VAE`) and, built on it, the conditional VAE, the semi-supervised M2 and the
two-layer VAE. Their programs override the VAE's, so every loss, bound and estimate reads Pyro's
traces.

``MODELS`` maps the names of ``[model] model = ...`` (``--model``) to the classes; ``MODEL_OPTIONS``
names the config keys each family takes beyond the VAE's.
"""

from .vae import VAE
from .cvae import CVAE, quadrant_mask
from .hvae import HVAE
from .labels import balanced_labelled_subset, check_labels
from .m2 import M2, M2Loss

__all__ = ["VAE", "CVAE", "M2", "M2Loss", "HVAE", "MODELS", "MODEL_OPTIONS", "model_class", "quadrant_mask",
           "balanced_labelled_subset", "check_labels"]

MODELS = {"vae": VAE, "cvae": CVAE, "m2": M2, "hvae": HVAE}
MODEL_OPTIONS = {
    "vae": (),
    "cvae": ("condition", "given_quadrants", "num_classes", "baseline_hidden"),
    "m2": ("num_classes", "init_std"),
    "hvae": ("middle_dim", "middle_hidden"),
}


def model_class(name):
    """The class of a model family's name, or a ValueError naming the families."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {list(MODELS)}")
    return MODELS[name]
