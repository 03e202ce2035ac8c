"""A user's Pyro program as pyrovae reads it: :func:`as_program` turns the protocol's accepted forms
(an object with ``model`` and ``guide``, a ``(model, guide)`` pair, ``model=``/``guide=`` callables)
into a :class:`Program`, which traces the program once for what the estimators and pictures need:
the data plate (sized, sizeless or subsampled, found by the extent of the observed sites), the
latent and observed sites, the device of its parameters, and an encoder and decoder read from
the guide's latent site and the model's observed site (``poutine.condition``).

It knows the protocol (:mod:`pyrovae.protocol`), whose defaults a program takes with the members
its owner declares, and nothing of the estimators, the model classes or training.
"""

import math
import warnings
from typing import Callable, Optional

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from .protocol import DeclaredMembers, ModelProtocol

__all__ = ["Program", "ProgramSites", "as_program", "slice_examples", "repeat_examples", "PROBE_EXAMPLES"]

PROBE_EXAMPLES = 64  # examples a user's program is first traced on, for its sites and its named errors


def as_program(model=None, guide=None, *, owner=None, data_plate: Optional[str] = None,
               latent_site: Optional[str] = None, obs_site: Optional[str] = None, image_shape=None,
               input_shape=None):
    """The three accepted forms as one object with ``model`` and ``guide``:

    - a pyrovae model (a :class:`ModelProtocol`): returned as it is;
    - an object with ``model`` and ``guide`` callables, or a ``(model, guide)`` pair: a :class:`Program`;
    - ``model`` and ``guide`` callables (``as_program(model=..., guide=...)``): a :class:`Program`.

    ``data_plate``, ``latent_site``, ``obs_site`` name what the traces cannot settle alone (several
    plates of the batch's size, several latent or observed sites); ``image_shape`` says how a flat
    observation is drawn, ``input_shape`` the shape of one example as the model takes it (for
    pictures drawn without data)."""
    options = dict(data_plate=data_plate, latent_site=latent_site, obs_site=obs_site, image_shape=image_shape,
                   input_shape=input_shape)
    if isinstance(model, Program):
        return model.with_options(**options) if any(v is not None for v in options.values()) else model
    if isinstance(model, ModelProtocol):
        if guide is not None:
            raise TypeError("give a pyrovae model alone, or model= and guide= callables; not both")
        return model
    if isinstance(model, (tuple, list)) and len(model) == 2 and guide is None:
        model, guide = model
    elif guide is None and model is not None and not torch.is_tensor(model):
        owner = model
        program_model, program_guide = getattr(model, "model", None), getattr(model, "guide", None)
        if not (callable(program_model) and callable(program_guide)):
            raise TypeError(
                f"expected a pyrovae model, an object with model and guide methods (as Pyro's examples write a "
                f"VAE), a (model, guide) pair, or model= and guide= keyword arguments; got a "
                f"{type(model).__name__} without {'model' if not callable(program_model) else 'guide'}")
        model, guide = program_model, program_guide
    if not (callable(model) and callable(guide)):
        raise TypeError(
            "expected a pyrovae model, an object with model and guide methods (as Pyro's examples write a VAE), a "
            f"(model, guide) pair, or model= and guide= callables; got model={type(model).__name__}, "
            f"guide={type(guide).__name__}")
    return Program(model, guide, owner=owner, **options)


def slice_examples(value, num_examples, start, stop):
    """``value[start:stop]`` where ``value`` is a tensor over the ``num_examples`` examples
    (leading dimension of that size); any other argument as it is. Tuples, lists and dicts are
    sliced item by item."""
    if torch.is_tensor(value):
        return value[start:stop] if value.dim() >= 1 and value.shape[0] == num_examples else value
    if isinstance(value, (tuple, list)):
        return type(value)(slice_examples(v, num_examples, start, stop) for v in value)
    if isinstance(value, dict):
        return {k: slice_examples(v, num_examples, start, stop) for k, v in value.items()}
    return value


def repeat_examples(value, num_examples, copies):
    """``value`` with its examples repeated ``copies`` times as whole blocks (example j of copy r at
    ``r * num_examples + j``) where it is a tensor over the ``num_examples`` examples; any other
    argument as it is. Tuples, lists and dicts item by item."""
    if torch.is_tensor(value):
        if value.dim() >= 1 and value.shape[0] == num_examples:
            return value.repeat(copies, *([1] * (value.dim() - 1)))
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(repeat_examples(v, num_examples, copies) for v in value)
    if isinstance(value, dict):
        return {k: repeat_examples(v, num_examples, copies) for k, v in value.items()}
    return value


class ProgramSites:
    """What one trace of a program says about it: the data plate (name, dim), the latent sites
    (model sites the guide samples), the observed sites, the deepest plate nesting, the floats
    per example of its widest site, and the guide's discrete latent sites: for each, its support
    as ``(C, *event)`` values where the guide draws one value per example from a distribution that
    enumerates its support (a label), else None."""

    def __init__(self, data_plate, data_dim, latent, observed, max_plate_nesting, width, latent_shapes,
                 observed_shapes, discrete=None):
        self.data_plate, self.data_dim = data_plate, data_dim
        self.latent, self.observed = latent, observed
        self.max_plate_nesting, self.width = max_plate_nesting, width
        self.latent_shapes, self.observed_shapes = latent_shapes, observed_shapes
        self.discrete = dict(discrete or {})


def _sample_sites(trace):
    return [(name, site) for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site)]


def _per_example_support(site, num_examples):
    """The support of a discrete guide site as ``(C, *event)`` values, where it draws one value per
    example (batch shape ``(num_examples,)``) and can enumerate its support; else None."""
    fn = site["fn"]
    if not fn.has_enumerate_support or tuple(fn.batch_shape) != (num_examples,):
        return None
    try:
        support = fn.enumerate_support(expand=False)
    except NotImplementedError:
        return None
    return support.reshape((support.shape[0],) + tuple(fn.event_shape))


def _frames(site):
    return [frame for frame in site["cond_indep_stack"] if frame.vectorized]


class Program(DeclaredMembers):
    """A user's Pyro model and guide (see :func:`as_program`), with the protocol's defaults and
    the members the owner declares, and what pyrovae reads of a program from its traces:
    :meth:`sites` (the data plate and the latent and observed sites), the device of its
    parameters, and the encoder and decoder the pictures use (the guide's latent site given x;
    the observed site's distribution given the latent site, by ``poutine.condition``)."""

    def __init__(self, model: Callable, guide: Callable, owner=None, data_plate=None, latent_site=None,
                 obs_site=None, image_shape=None, input_shape=None):
        super().__init__(owner)  # the owner's declared protocol members win over the defaults
        self.model, self.guide = model, guide
        self.data_plate, self.latent_site, self.obs_site = data_plate, latent_site, obs_site
        self.image_shape = None if image_shape is None else tuple(int(s) for s in image_shape)
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self._sites = None
        self._picture = None

    def with_options(self, **options):
        merged = {key: getattr(self, key) for key in ("data_plate", "latent_site", "obs_site", "image_shape",
                                                     "input_shape")}
        merged.update({key: value for key, value in options.items() if value is not None})
        return Program(self.model, self.guide, owner=self.owner, **merged)

    def __repr__(self):
        name = type(self.owner).__name__ if self.owner is not None else getattr(self.model, "__name__", "model")
        return f"Program({name})"

    # -- where it runs -----------------------------------------------------------------------------
    def parameters(self):
        """The parameters of the owner (an ``nn.Module``), else those in Pyro's param store."""
        if isinstance(self.owner, torch.nn.Module):
            return list(self.owner.parameters())
        for fn in (self.model, self.guide):
            module = getattr(fn, "__self__", None)
            if isinstance(module, torch.nn.Module):
                return list(module.parameters())
        return [p for _, p in pyro.get_param_store().named_parameters()]

    def device_for(self, x):
        """The device of the program's parameters, or the data's where it has none."""
        parameters = self.parameters()
        return parameters[0].device if parameters else x.device

    @property
    def device(self):
        parameters = self.parameters()
        return parameters[0].device if parameters else torch.device("cpu")

    def eval(self):
        if isinstance(self.owner, torch.nn.Module):
            self.owner.eval()
        return self

    def prepare_data(self, x):
        """``x`` checked (a tensor with a batch dimension) and moved to the parameters' device;
        its dtype is the user's."""
        if not torch.is_tensor(x):
            raise TypeError(f"x must be a torch.Tensor whose first dimension is the examples; got {type(x).__name__}")
        if x.dim() < 1 or len(x) == 0:
            raise ValueError(f"x must have a first dimension of examples (at least one); got shape {tuple(x.shape)}")
        if self.input_shape is None:
            self.input_shape = tuple(x.shape[1:])
        return x.to(self.device_for(x))

    def prepare(self, x, args=(), kwargs=None):
        """``(x, args, kwargs, sites)``: the data and the further program arguments on the
        parameters' device, and :meth:`sites` from one trace of the first :data:`PROBE_EXAMPLES`
        examples, with Pyro's validation on (its support checks), so a program the estimators
        cannot weigh per example fails here, by name, before any work."""
        x = self.prepare_data(x)
        args = tuple(a.to(x.device) if torch.is_tensor(a) else a for a in args)
        kwargs = {k: v.to(x.device) if torch.is_tensor(v) else v for k, v in (kwargs or {}).items()}
        probe = min(len(x), PROBE_EXAMPLES)
        with torch.no_grad(), pyro.validation_enabled(True):
            sites = self.sites((x[:probe],) + slice_examples(args, len(x), 0, probe),
                               slice_examples(kwargs, len(x), 0, probe), examples_passed=len(x))
        return x, args, kwargs, sites

    # -- its sites ---------------------------------------------------------------------------------
    def sites(self, args, kwargs=None, refresh=False, examples_passed=None) -> ProgramSites:
        """The program's sites from one trace of the guide and the model replayed on it at
        ``args`` (the first a tensor of examples, the first of ``examples_passed`` where the
        caller probes a few): the named errors of a program the estimators cannot weigh per
        example are raised here."""
        if self._sites is not None and not refresh:
            return self._sites
        kwargs = kwargs or {}
        num_examples = len(args[0])
        with torch.no_grad(), poutine.block():
            guide_trace = poutine.trace(self.guide).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(self.model, trace=guide_trace)).get_trace(*args, **kwargs)
        model_sites, guide_sites = _sample_sites(model_trace), dict(_sample_sites(guide_trace))
        observed = [name for name, site in model_sites if site["is_observed"]]
        if not observed:
            raise ValueError("the model has no observed site (pyro.sample(..., obs=x)): there is no p(x) to estimate")
        latent = [name for name, site in model_sites if not site["is_observed"]]
        for name, site in model_sites:
            if site["is_observed"] or name in guide_sites:
                continue
            fn = site["fn"]
            if fn.support.is_discrete:
                marked = site["infer"].get("enumerate")
                raise ValueError(
                    f"latent site {name!r} of the model is discrete and the guide does not sample it"
                    + (" (it is marked for enumeration)" if marked else "")
                    + ": pyrovae weighs a user's program by importance sampling, which needs every latent site "
                    "drawn by the guide; sample it in the guide, or give the model a "
                    "log_importance_weights(x, num_samples) method that sums it out (as pyrovae's M2 does)")
            raise ValueError(f"the guide misses latent site {name!r} of the model: sample it in the guide")
        extra = [name for name in guide_sites if name not in dict(model_sites)]
        if extra:
            raise ValueError(f"guide sites {extra} are not sites of the model")
        plate = self._data_plate(model_sites, observed, num_examples, examples_passed or num_examples)
        for name, site in model_sites:
            for frame in _frames(site):
                if frame.name == plate[0] and frame.full_size not in (None, -1, frame.size):
                    raise ValueError(
                        f"the data plate {plate[0]!r} subsamples {frame.size} of {frame.full_size} examples, so Pyro "
                        f"scales site {name!r} by {frame.full_size}/{frame.size}: a per-example log p(x) would carry "
                        "that factor; evaluate with the plate over the examples passed (pyro.plate('data') or "
                        "pyro.plate('data', len(x)))")
        for name in latent:
            site = guide_sites[name]
            if plate[0] not in {f.name for f in _frames(site)}:
                raise ValueError(
                    f"latent site {name!r} is outside the data plate {plate[0]!r}: a global latent couples the "
                    "examples, so log p(x) does not split into one importance-sampled term per example; put it inside "
                    "the plate (an amortized latent per example) or evaluate the whole data set as one example")
        nesting = max([-f.dim for _, site in model_sites for f in _frames(site)]
                      + [-f.dim for site in guide_sites.values() for f in _frames(site)] + [1])
        width = 1
        for _, site in list(model_sites) + list(guide_sites.items()):
            value = site["value"]
            if torch.is_tensor(value) and value.dim() >= 1 and value.shape[:1] == (num_examples,):
                width = max(width, value[0].numel())
            elif torch.is_tensor(value):
                width = max(width, math.ceil(value.numel() / num_examples))
        discrete = {name: _per_example_support(guide_sites[name], num_examples) for name in latent
                    if guide_sites[name]["fn"].support.is_discrete}
        sites = ProgramSites(plate[0], plate[1], latent, observed, nesting, 2 * width,
                             {name: tuple(guide_sites[name]["fn"].event_shape) for name in latent},
                             {name: tuple(dict(model_sites)[name]["fn"].event_shape) for name in observed},
                             discrete)
        self._sites = sites
        return sites

    def _data_plate(self, model_sites, observed, num_examples, examples_passed):
        """(name, dim) of the plate over the examples: of the vectorized plates that hold every
        observed site, the one whose extent in those sites is the batch's. The extent, not the
        plate's declared size: a sizeless ``pyro.plate("data")`` has size -1 in the trace (Pyro's
        "any size"), and a subsampled plate the size of the whole data set."""
        shared = None
        for name, site in model_sites:
            if name in observed:
                batch_shape = site["fn"].batch_shape
                frames = {(f.name, f.dim, batch_shape[f.dim] if -f.dim <= len(batch_shape) else 1)
                          for f in _frames(site)}
                shared = frames if shared is None else shared & frames
        shared = shared or set()
        if self.data_plate is not None:
            named = [f for f in shared if f[0] == self.data_plate]
            if not named:
                raise ValueError(f"data_plate={self.data_plate!r}: no plate of that name holds every observed site "
                                 f"(plates there: {sorted(f[0] for f in shared) or 'none'})")
            return named[0][0], named[0][1]
        candidates = [f for f in shared if f[2] == num_examples]
        if len(candidates) == 1:
            return candidates[0][0], candidates[0][1]
        if not candidates:
            held = ", ".join(f"{name!r} over {extent}" for name, _, extent in sorted(shared)) or "none"
            probed = f", traced on the first {num_examples}" if examples_passed != num_examples else ""
            raise ValueError(
                f"no plate holds every observed site with one entry per example ({examples_passed} examples "
                f"passed{probed}; plates there: {held}): wrap the model's and guide's sites in pyro.plate('data', len(x)) or "
                "pyro.plate('data') (a vectorized plate), or name it with data_plate=")
        raise ValueError(f"several plates of the batch's size hold the observed sites "
                         f"({sorted(f[0] for f in candidates)}): name the examples' plate with data_plate=")

    # -- encoding and decoding, for the pictures ---------------------------------------------------
    def _the_site(self, names, given, what, argument):
        if given is not None:
            if given not in names:
                raise ValueError(f"{argument}={given!r} is not a {what} site of the program; its {what} sites: {names}")
            return given
        if len(names) != 1:
            raise ValueError(f"the program has {len(names)} {what} sites {names}: name the one to draw with "
                             f"{argument}=")
        return names[0]

    def _picture_sites(self, args, kwargs):
        """(latent site, observed site) the pictures draw: the guide's sample sites are the latent
        ones, the model's other sample sites the observed ones (observed or not: a model called
        without its observation, as a CVAE's without ys, samples it)."""
        if self._picture is None:
            with torch.no_grad(), poutine.block():
                guide_trace = poutine.trace(self.guide).get_trace(*args, **kwargs)
                model_trace = poutine.trace(poutine.replay(self.model, trace=guide_trace)).get_trace(*args, **kwargs)
            guide_sites = dict(_sample_sites(guide_trace))
            model_sites = dict(_sample_sites(model_trace))
            latents = [name for name in model_sites if name in guide_sites]
            observed = [name for name in model_sites if name not in guide_sites]
            latent = self._the_site(latents, self.latent_site, "latent", "latent_site")
            obs = self._the_site(observed, self.obs_site, "observed", "obs_site")
            shape = tuple(guide_sites[latent]["fn"].event_shape)
            if len(shape) != 1:
                raise ValueError(f"the pictures draw a latent site with one event dimension; {latent!r} has event "
                                 f"shape {shape}")
            self._picture = (latent, obs, shape[0], tuple(model_sites[obs]["fn"].event_shape))
        return self._picture[:2]

    @torch.no_grad()
    def encode(self, x, *args, **kwargs):
        """(mean, standard deviation) of the guide's latent site given ``x``: the distribution's
        own where it has them, else those of 256 draws."""
        x = self.prepare_data(x)
        latent, _ = self._picture_sites((x, *args), kwargs)
        with poutine.block():
            site = poutine.trace(self.guide).get_trace(x, *args, **kwargs).nodes[latent]
        fn = site["fn"]
        try:
            return fn.mean, fn.stddev
        except NotImplementedError:
            draws = fn.sample((256,))
            return draws.mean(0), draws.std(0)

    def _dummy_input(self, num):
        shape = self.input_shape or self.image_shape
        if shape is None:
            raise ValueError("decoding a latent point runs the model, which takes data: give the shape of one "
                             "example, image_shape=(28, 28) or input_shape=(784,), or draw from data first")
        parameters = self.parameters()
        dtype = parameters[0].dtype if parameters else torch.get_default_dtype()
        return torch.zeros((num, *shape), dtype=dtype, device=self.device)

    @torch.no_grad()
    def observed_distribution(self, z, *args, x=None, **kwargs):
        """The model's observed site's distribution with its latent site set to ``z`` (N, d), by
        ``poutine.condition``; ``x`` (the model's first argument) defaults to zeros of the
        example's shape (the observed value does not change the distribution)."""
        x = self._dummy_input(len(z)) if x is None else x
        latent, observed = self._picture_sites((x, *args), kwargs)
        conditioned = poutine.condition(self.model, data={latent: z.to(x.device)})
        with poutine.block():
            trace = poutine.trace(conditioned).get_trace(x, *args, **kwargs)
        return trace.nodes[observed]["fn"]

    def decode(self, z, *args, x=None, **kwargs):
        """E[x | z]: the observed site's mean (its ``probs`` where it has no mean) at ``z``."""
        fn = self.observed_distribution(z, *args, x=x, **kwargs)
        try:
            return fn.mean
        except NotImplementedError:
            base = getattr(fn, "base_dist", fn)
            if hasattr(base, "probs"):
                return base.probs
            raise ValueError(f"the observed site's {type(fn).__name__} has no mean to draw") from None

    @torch.no_grad()
    def reconstruct(self, x, *args, **kwargs):
        x = self.prepare_data(x)
        return self.decode(self.encode(x, *args, **kwargs)[0], *args, x=x, **kwargs)

    @torch.no_grad()
    def prior_latents(self, num, *args, **kwargs):
        """z ~ p(z): the model's latent site traced with nothing conditioned."""
        x = self._dummy_input(num)
        latent, _ = self._picture_sites((x, *args), kwargs)
        with poutine.block():
            return poutine.trace(self.model).get_trace(x, *args, **kwargs).nodes[latent]["value"]

    @property
    def latent_dim(self):
        self._picture_sites((self._dummy_input(1),), {})
        return self._picture[2]

    @property
    def data_shape(self):
        """The shape an observation is drawn in: ``image_shape`` where given, else the observed
        site's event shape (a flat one of a square size drawn as a square image)."""
        if self.image_shape is not None:
            return self.image_shape
        self._picture_sites((self._dummy_input(1),), {})
        shape = self._picture[3]
        if len(shape) == 1 and math.isqrt(shape[0]) ** 2 == shape[0] and shape[0] >= 16:
            side = math.isqrt(shape[0])
            warnings.warn(f"drawing the flat observation of {shape[0]} values as a {side}x{side} image; pass "
                          "image_shape= to say how", UserWarning, stacklevel=3)
            self.image_shape = (side, side)
            return self.image_shape
        return shape

    @property
    def prior_name(self):
        return "model's"
