r"""The model protocol, declared once: what pyrovae needs of a model, what it may add, and the
defaults of everything optional.

A model is a Pyro program: a ``model(x, *args, **kwargs)`` that samples its latent sites and
scores its observed sites, and a ``guide(x, *args, **kwargs)`` that samples every latent site of
the model. That is all pyrovae *needs*: every estimator, check and picture takes

(a) a pyrovae model (:class:`pyrovae.VAE` and its families, which subclass
    :class:`ModelProtocol`),
(b) any object with ``model`` and ``guide`` callables (an ``nn.Module`` or ``PyroModule``, as Pyro's
    examples write a VAE), or a ``(model, guide)`` pair,
(c) ``model=`` and ``guide=`` keyword arguments,

and :func:`pyrovae.program.as_program` turns (b) and (c) into a :class:`~pyrovae.program.Program`,
which reads the sites, the data plate, the device and the shapes from Pyro's traces. This module
declares; it traces nothing and imports neither torch nor Pyro, so anything (the config schema
among them) may read it.

What a model family *may* declare (the members of :class:`ModelProtocol`, with their defaults):

==========================  ======================================================================
member                      meaning (default)
==========================  ======================================================================
``requires_labels``         ``model``/``guide`` take labels y as their second argument (False)
``semi_supervised``         labels are partly observed and summed out otherwise, as M2's (False)
``mean_field_guide``        each latent site's KL has a closed form given the guide (True)
``training_defaults``       config options the family trains with by default (``{}``)
``selection_metric``        the validation number best.pt is chosen by (``"valid_elbo"``)
``plot_kinds``              the figures ``pyrovae plot`` draws (:data:`PLOT_KINDS`)
``make_objective(...)``     the family's own training objective (None: the ELBO of ``loss``)
``auxiliary_programs()``    (model, guide, weight) triples whose -ELBO training adds (none)
``extra_metrics(x, y, K)``  the family's own numbers in ``evaluation.json`` (none)
``log_importance_weights``  (K, N) log weights with a discrete latent summed out (None: traces)
``elbo_terms(x)``           (reconstruction, KL) per example where traces cannot give them (None)
``fast_weight_parts``       an optimized equal of the traces' weights for (model, guide) (None)
``fast_ais_target``         an optimized equal of AIS's target densities for (model, guide) (None)
``check_labels(y, n)``      the labels of ``n`` examples checked, as the model takes them (as given)
``guide_description``       how errors name the guide family (``"guide"``)
``stopped_guide_density``   q(z|x) can be evaluated at any z with its parameters stopped, as STL and
                            DReG need (True)
==========================  ======================================================================

Readers never ask an object for these with ``getattr``: they call :func:`family`, which gives the
object itself when it subclasses :class:`ModelProtocol` and otherwise a :class:`DeclaredMembers`
whose members are the defaults, overridden by whatever the object declares under the same names.
"""

from types import MappingProxyType
from typing import Optional, Sequence

from ._deprecated import moved_module_getattr

__all__ = ["ModelProtocol", "DeclaredMembers", "family", "owner_of", "trains_with_own_objective", "PLOT_KINDS",
           "PROTOCOL_MEMBERS"]

PLOT_KINDS = ("manifold", "scatter", "reconstructions", "samples", "interpolation", "attributes", "posterior", "curves")

PROTOCOL_MEMBERS = ("requires_labels", "semi_supervised", "mean_field_guide", "training_defaults", "selection_metric",
                    "plot_kinds", "make_objective", "auxiliary_programs", "extra_metrics", "log_importance_weights",
                    "elbo_terms", "fast_weight_parts", "fast_ais_target", "check_labels", "guide_description",
                    "stopped_guide_density")


class ModelProtocol:
    """The optional members of a pyrovae model with their defaults (see the module docstring).
    :class:`pyrovae.VAE` subclasses it; a user's own program need not."""

    requires_labels: bool = False
    semi_supervised: bool = False
    mean_field_guide: bool = True
    training_defaults = MappingProxyType({})
    selection_metric: str = "valid_elbo"
    plot_kinds: Sequence[str] = PLOT_KINDS
    guide_description: str = "guide"
    stopped_guide_density: bool = True

    def make_objective(self, *args, **kwargs):
        """The family's own training objective (an ``nn.Module`` giving the loss of a batch), or
        None: the ELBO the run's ``loss`` names."""
        return None

    def auxiliary_programs(self):
        """(model, guide, weight) triples whose -ELBO the training objective adds to the model's."""
        return ()

    def extra_metrics(self, x, labels, num_samples):
        """The family's own numbers for ``evaluation.json`` (M2's accuracy)."""
        return {}

    def log_importance_weights(self, x, num_samples):
        """(K, N) log weights of p(x) where the model sums a discrete latent out, or None: the
        weights come from the traces of ``model`` and ``guide``."""
        return None

    def elbo_terms(self, x):
        """(reconstruction, KL) per example where the traces of one draw do not give them (a
        latent summed out), or None."""
        return None

    def fast_weight_parts(self, model, guide):
        """A function ``(x, num_particles, analytic_kl, per_dim, estimator) -> WeightParts`` equal
        to the traces' weights of this ``model``/``guide`` pair (an optimization, chosen by
        structure and held equal by tests), or None."""
        return None

    def fast_ais_target(self, model, guide):
        """A function ``(x, num_chains, proposal, compile) -> target`` whose ``initial()`` draws
        z_0 ~ pi_0 and whose ``point(z)`` gives log pi_0(z), log p(x, z) and their gradients in z,
        equal to what AIS reads from the traces of this ``model``/``guide`` pair (an optimization,
        chosen by structure and held equal by tests), or None."""
        return None


    def check_labels(self, labels, num_examples):
        """The labels of ``num_examples`` examples as the model takes them, or the named error of
        labels it cannot take; the default takes them as given."""
        return labels


class DeclaredMembers(ModelProtocol):
    """The protocol members of an object that does not subclass :class:`ModelProtocol` (a user's
    ``nn.Module`` with ``model`` and ``guide``): the defaults, overridden by whatever ``owner``
    declares under the same names (None: the defaults alone)."""

    def __init__(self, owner=None):
        self.owner = owner
        if owner is not None:
            for name in PROTOCOL_MEMBERS:
                if name in dir(type(owner)) or name in getattr(owner, "__dict__", {}):
                    object.__setattr__(self, name, getattr(owner, name))

    def declares(self, name) -> bool:
        """Whether the owner declares member ``name`` itself (not the default)."""
        return name in PROTOCOL_MEMBERS and name in vars(self)


def owner_of(model) -> Optional[ModelProtocol]:
    """The pyrovae model whose bound method ``model`` is (the object offering the protocol's fast
    paths for its own model/guide pair), or None for any other callable."""
    owner = getattr(model, "__self__", None)
    return owner if isinstance(owner, ModelProtocol) else None


def family(model) -> ModelProtocol:
    """The protocol members of ``model``: the object itself where it subclasses
    :class:`ModelProtocol` (a pyrovae model, a :class:`~pyrovae.program.Program`), else a
    :class:`DeclaredMembers` with the defaults and whatever members the object declares (none for
    a ``(model, guide)`` pair of callables)."""
    if isinstance(model, ModelProtocol):
        return model
    if isinstance(model, (tuple, list)) or callable(model) and not hasattr(model, "guide"):
        return DeclaredMembers()
    return DeclaredMembers(model)


def trains_with_own_objective(model) -> bool:
    """Whether ``model`` trains with its own objective (``make_objective``) or adds auxiliary
    programs to the ELBO: then no compiled ELBO step stands for its training."""
    member = family(model)
    return (type(member).make_objective is not ModelProtocol.make_objective
            or bool(tuple(member.auxiliary_programs())))


# Program, as_program, slice_examples and the probe's size lived here until 0.4: pyrovae.program
__getattr__ = moved_module_getattr(__name__, None, {name: "pyrovae.program" for name in (
    "Program", "ProgramSites", "as_program", "slice_examples", "PROBE_EXAMPLES")})
