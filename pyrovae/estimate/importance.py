"""Per-example bounds and estimates of log p(x), all from the per-example log weights of
:func:`pyrovae.infer.log_weight_parts` (a model's fast path where its structure allows, Pyro's
traces otherwise), so they hold for every prior, likelihood and user model.

- ``elbo``:           E_q[log p(x, z) - log q(z|x)]                        <= log p(x)
- ``iwae_bound``:     E[log (1/k) sum_j p(x, z_j) / q(z_j|x)], z_j ~ q      (non-decreasing in k)
- ``log_likelihood``: log (1/K) sum_j p(x, z_j) / q(z_j|x), K large     (-> log p(x) as K grows)

Each takes the model in any of the protocol's three forms (:mod:`pyrovae.protocol`): a pyrovae
model, an object with ``model`` and ``guide`` (``log_likelihood(my_vae, x)``), or ``model=`` and
``guide=`` callables (``log_likelihood(x=x, model=model, guide=guide)``); ``args``/``kwargs`` are
further arguments of the user's program, sliced with the examples where their first dimension is
the examples'. For a user's program the data plate and the sites are read from one trace
(:meth:`pyrovae.protocol.Program.sites`), which also raises the named errors of a program whose
log p(x) does not split over examples.
"""

import contextlib
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence

import pyro
import torch
from pyro import poutine

from ..fast.kernels import cpu_kernels
from ..infer.psis import ImportanceDiagnostics, effective_sample_size, pareto_k
from ..infer.weights import log_weight_parts, trace_weight_parts
from ..program import Program, as_program, repeat_examples, slice_examples
from ..protocol import family
from ..validation import require_positive_int

__all__ = [
    "log_weights",
    "log_likelihood",
    "elbo",
    "elbo_terms",
    "iwae_bound",
    "check_bounds",
    "BoundCheck",
    "BoundViolationWarning",
    "Evaluation",
    "evaluation_of",
]

# Floats in the widest per-chunk tensor (samples x examples x data dimensions): 8 MB; larger
# chunks were slower here (fresh pages for every tensor), smaller ones pay Pyro per chunk.
DEFAULT_CHUNK_ELEMENTS = 2**21


class BoundViolationWarning(UserWarning):
    """ELBO <= IWAE_k <= IWAE_2k failed beyond Monte Carlo error: a bug or a broken model."""


@contextmanager
def _seeded(seed, device):
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


# A user's discrete latent sites (a label the guide samples) with at most this many values in all
# are summed out exactly: each weight is the sum over the values of p(x, z, y) / q(z | x, y), one
# draw of the continuous latents per value; beyond it they are sampled from the guide.
MAX_SUMMED_VALUES = 256
# Examples the probe that decides how a user's program draws its samples is traced on.
VECTORIZE_PROBE_EXAMPLES = 4


class Evaluation:
    """One estimator call's model and data: the program (a pyrovae model or a
    :class:`~pyrovae.program.Program`), ``x`` on its device, the further program arguments, and
    what the weights of a slice of the examples are.

    A user's program is weighed as its traces define, in the form it can run:

    - its samples on a particle plate left of its plates, as Pyro's vectorized ELBOs draw them, or,
      where the program cannot take that dimension (found by one probe trace: an error, or weights
      not of shape (K, N); Pyro's CVAE example picks its observed pixels by boolean indexing), as K
      repeats of the batch in one trace, example n of repeat k at k N + n;
    - a discrete latent site its guide samples, one value per example from a distribution that
      enumerates its support (``OneHotCategorical``, ``Categorical``, ``Bernoulli``), summed out
      exactly where all such sites have at most :data:`MAX_SUMMED_VALUES` values together: the
      guide and the model conditioned on each value in turn (the values as repeats of the batch,
      one trace), the weight ``sum_y p(x, z_y, y) / q(z_y | x, y)``, z_y ~ q(z | x, y), whose mean
      is p(x) and whose variance is the continuous latents' alone. Otherwise sampled, as the trace
      draws it. :attr:`weighting` says which, and the diagnostics carry it.

    :ivar args: the positional arguments after ``x`` (the labels of a label-conditioned model
        among them); ``kwargs`` the keyword arguments.
    """

    def __init__(self, program, x, args=(), kwargs=None, labels=None):
        self.program = program
        self.is_user_program = isinstance(program, Program)
        # a user's object that sums a discrete latent out itself (the protocol's log_importance_weights)
        self.own_weights = self.is_user_program and program.declares("log_importance_weights")
        self.x = program.prepare_data(x)
        labels = _check_labels(program, self.x, labels)
        self.args = tuple(args) + (() if labels is None else (labels,))
        self.kwargs = dict(kwargs or {})
        self.max_plate_nesting = 1
        if self.own_weights:
            self.width = 2 * self.x[0].numel()
        self.summed, self.vectorized = {}, True
        self.num_examples = len(self.x)
        if self.own_weights:
            pass
        elif self.is_user_program:
            self.x, self.args, self.kwargs, sites = program.prepare(self.x, self.args, self.kwargs)
            self.max_plate_nesting = sites.max_plate_nesting
            self.summed = _summed_values(sites.discrete)
            self.width = sites.width * self.num_values
            self.vectorized = self._vectorizes()
        else:
            self.width = program.evaluation_width()
        self.sampled_discrete = [] if not self.is_user_program or self.own_weights else \
            [name for name in sites.discrete if name not in self.summed]

    @property
    def num_values(self):
        """The joint values of the summed discrete sites (1 where none is summed)."""
        return len(next(iter(self.summed.values()))) if self.summed else 1

    @property
    def weighting(self) -> dict:
        """How a user's program's weights are formed, for the diagnostics (empty for a pyrovae
        model, whose own structure decides)."""
        if not self.is_user_program or self.own_weights:
            return {}
        out = {"samples": "particle plate" if self.vectorized else "repeats of the batch"}
        if self.summed or self.sampled_discrete:
            out["discrete_sites"] = {**{name: f"summed over {self.num_values} values" for name in self.summed},
                                     **{name: "sampled from the guide" for name in self.sampled_discrete}}
        return out

    def _vectorizes(self):
        """Whether the program runs with its samples on a particle plate: one trace of two
        particles on the first few examples gives weights of shape (2, n) without an error."""
        count = min(VECTORIZE_PROBE_EXAMPLES, len(self.x))
        args, kwargs = self.sliced(0, count)
        try:
            with torch.no_grad(), pyro.validation_enabled(False), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                log_w = self._program_log_weights(args, kwargs, 2, vectorized=True)
        except Exception:  # noqa: BLE001 (any error of the program under the plate: it cannot broadcast)
            return False
        return tuple(log_w.shape) == (2, count)

    def _program_log_weights(self, args, kwargs, num_samples, vectorized):
        """log w (K, n) of a user's program at ``args`` (see the class docstring)."""
        n, values = len(args[0]), self.num_values
        copies = values * (1 if vectorized else num_samples)
        model, guide = self.program.model, self.program.guide
        if copies > 1:
            args, kwargs = repeat_examples(args, n, copies), repeat_examples(kwargs, n, copies)
        if self.summed:
            data = {}
            for name, support in self.summed.items():
                each = support.to(args[0].device).repeat_interleave(n, 0)  # value c for examples c n .. c n + n - 1
                data[name] = each.repeat(copies // values, *([1] * (each.dim() - 1)))
            model, guide = poutine.condition(model, data=data), poutine.condition(guide, data=data)
        log_w = trace_weight_parts(model, guide, args, kwargs, num_particles=num_samples if vectorized else None,
                                   max_plate_nesting=self.max_plate_nesting, estimator=None,
                                   set_guide_sites=tuple(self.summed)).log_weights
        if log_w.numel() != num_samples * values * n:
            raise ValueError(
                f"per-example log weights need every sample site of the model inside its data plate; got weights "
                f"of shape {tuple(log_w.shape)} for {num_samples} samples of {n} examples")
        log_w = log_w.reshape(num_samples, values, n)
        return torch.logsumexp(log_w, 1) if values > 1 else log_w[:, 0]

    @property
    def device(self):
        return self.x.device

    def sliced(self, start, stop):
        """``((x, *args), kwargs)`` of examples ``start:stop``."""
        n = self.num_examples
        return ((self.x[start:stop],) + slice_examples(self.args, n, start, stop),
                slice_examples(self.kwargs, n, start, stop))

    def log_weights(self, start, stop, num_samples):
        """log w (K, N) of examples ``start:stop``: the model's own sum over a discrete latent
        where it declares one, a user's program in the form it can run (see the class docstring),
        else the traces (or the pyrovae model's fast path)."""
        args, kwargs = self.sliced(start, stop)
        with torch.no_grad(), pyro.validation_enabled(False):
            if self.is_user_program and not self.own_weights:
                return self._program_log_weights(args, kwargs, num_samples, self.vectorized)
            log_w = family(self.program).log_importance_weights(args[0], num_samples)
            if log_w is None:
                log_w = log_weight_parts(self.program.model, self.program.guide, *args, num_particles=num_samples,
                                         max_plate_nesting=self.max_plate_nesting,
                                         estimator=None if self.is_user_program else "standard",
                                         **kwargs).log_weights
        count = stop - start if stop is not None else self.num_examples - start
        count = min(count, self.num_examples - start)
        if log_w.numel() == num_samples * count and log_w.shape[0] == num_samples:
            return log_w.reshape(num_samples, count)
        raise ValueError(
            f"per-example log weights need every sample site of the model inside its data plate; got weights of "
            f"shape {tuple(log_w.shape)} for {num_samples} samples of {count} examples")


def _summed_values(discrete):
    """{site: (C, *event) values} of the discrete sites summed out, each site's values over the
    joint support (every combination, the first site's slowest), or {} where a site cannot
    enumerate its support or the combinations exceed :data:`MAX_SUMMED_VALUES`."""
    if not discrete or any(support is None for support in discrete.values()):
        return {}
    sizes = [len(support) for support in discrete.values()]
    if math.prod(sizes) > MAX_SUMMED_VALUES:
        return {}
    combos = torch.cartesian_prod(*(torch.arange(size) for size in sizes)).reshape(-1, len(sizes))
    return {name: support[combos[:, i]] for i, (name, support) in enumerate(discrete.items())}


def evaluation_of(vae, x, model=None, guide=None, args=(), kwargs=None, labels=None, data_plate=None) -> Evaluation:
    """The :class:`Evaluation` of the three accepted forms of a model (see the module docstring)."""
    if vae is not None and (model is not None or guide is not None):
        raise TypeError("give the model as one object or as model= and guide= callables; not both")
    if x is None:
        raise TypeError("the data x is missing: pass x (its first dimension the examples)")
    program = as_program(vae, data_plate=data_plate) if vae is not None else as_program(model, guide,
                                                                                       data_plate=data_plate)
    return Evaluation(program, x, args, kwargs, labels)


def _check_inputs(num_samples, what="num_samples"):
    require_positive_int(num_samples, what)


def log_weights(vae=None, x: torch.Tensor = None, num_samples: int = 1, labels: Optional[torch.Tensor] = None, *,
                model=None, guide=None, args=(), kwargs=None, data_plate=None) -> torch.Tensor:
    """log w_kn = log p(x_n, z_kn) - log q(z_kn | x_n), z_kn ~ q(z | x_n): shape (K, N).
    ``labels``: the second argument of a model conditioned on labels (a label CVAE)."""
    _check_inputs(num_samples)
    run = evaluation_of(vae, x, model, guide, args, kwargs, labels, data_plate)
    return run.log_weights(0, run.num_examples, num_samples)


def _check_labels(vae, x, labels):
    if not family(vae).requires_labels:
        if labels is not None and not isinstance(vae, Program):
            raise ValueError(f"this {type(vae).__name__} takes no labels; leave labels=None")
        return None if labels is None else torch.as_tensor(labels).to(x.device)
    if labels is None:
        raise ValueError(f"this {type(vae).__name__} is conditioned on labels: pass labels= (shape (N,))")
    return family(vae).check_labels(torch.as_tensor(labels), len(x)).to(x.device)


# Examples x samples from which compile="auto" compiles the estimator: on 2 CPU cores the MNIST
# VAE's eager estimator does 120k example-samples a second, the compiled one 356k, and the
# compilation (a graph per chunk shape) takes some 5-10 s: break-even near 2e6; 5e6 leaves margin.
COMPILE_MIN_WORK = 5_000_000


def _fast_path_weights(fast, x, num_samples, kernels):
    """The log weights of ``fast``, the fast path the model offered eagerly
    (:func:`_compiled_weights`): under Dynamo a bound method's ``__self__`` is not the module, so
    the structural choice cannot be made inside."""
    with kernels:
        return fast(x, num_particles=num_samples).log_weights


_compiled_state = {"function": None, "failed": False}  # one compiled function, made on first use


def _compiled_weights(run):
    """The weights of a batch with the VAE's fast path under torch.compile, or None where the fast
    path does not apply (the trace path stays eager) or the compiler failed (said once, as a
    warning)."""
    program = run.program
    if _compiled_state["failed"] or run.is_user_program:
        return None
    fast = family(program).fast_weight_parts(program.model, program.guide)
    if fast is None:
        return None
    if _compiled_state["function"] is None:
        _compiled_state["function"] = torch.compile(_fast_path_weights, dynamic=False,
                                                    options={"fallback_random": True})

    def weights(start, stop, num_samples):
        with torch.no_grad(), pyro.validation_enabled(False):
            if not _compiled_state["failed"]:
                try:
                    return _compiled_state["function"](fast, run.x[start:stop], num_samples, cpu_kernels(run.device))
                except Exception as error:  # no C++ compiler, an unsupported platform
                    _compiled_state["failed"] = True
                    warnings.warn(f"torch.compile is unavailable here ({type(error).__name__}); the estimator "
                                  "runs eager", RuntimeWarning, stacklevel=3)
        return run.log_weights(start, stop, num_samples)

    return weights


# Samples per chunk the automatic batch aims at: the encoder runs once per chunk, on the batch's
# examples only, so with 128 draws per example it costs under 1% of the decoder's work.
SAMPLES_PER_CHUNK = 128
# Batches are powers of two up to this, so the distributed estimator's blocks (a multiple of it)
# split into the same batches, with the same seeds, as one process.
MAX_BATCH = 1024


def _chunks(width, num_examples, num_samples, batch_size, chunk_elements):
    """(examples per batch, samples per chunk) so one chunk's widest tensor has about
    ``chunk_elements`` floats (``width`` floats per example and sample), with many samples per
    chunk (the encoder's share small)."""
    if batch_size is None:
        fits = max(1, chunk_elements // (width * min(num_samples, SAMPLES_PER_CHUNK)))
        batch_size = min(num_examples, MAX_BATCH, 2 ** (fits.bit_length() - 1))
    sample_chunk = max(1, min(num_samples, chunk_elements // (batch_size * width)))
    return batch_size, sample_chunk


def _progress(total, desc, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


def _return_freed_heap_to_os():
    """Hands freed heap memory back to the OS between batches. glibc raises its mmap threshold
    after the first large frees, so chunk-sized tensors then come from the heap, and its
    fragments would otherwise grow the resident size with every batch (3 GB for the MNIST test
    set at K = 1000, 0.8 GB with this)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc():
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None  # glibc only; musl has none


_LIBC = _load_libc()


def log_likelihood(vae=None, x: torch.Tensor = None, num_samples: int = 1000, batch_size: Optional[int] = None,
                   return_stderr: bool = False, seed: Optional[int] = None,
                   chunk_elements: int = DEFAULT_CHUNK_ELEMENTS, progress: bool = False, example_offset: int = 0,
                   labels: Optional[torch.Tensor] = None, compile: str = "auto", return_diagnostics: bool = False,
                   *, model=None, guide=None, args=(), kwargs=None, data_plate: Optional[str] = None):
    """Importance-sampled log p(x_n) ~ logsumexp_k log w_kn - log K, per example, in nats
    (log p(x_n | y_n) for a model conditioned on ``labels``).

    ``vae`` is a pyrovae model or any object with ``model`` and ``guide`` (or pass ``model=`` and
    ``guide=``); ``args``/``kwargs`` are the program's further arguments (see the module
    docstring), ``data_plate`` the name of the examples' plate where the trace leaves it open.

    ``compile``: ``"on"`` computes the package VAE's weights (its structural fast path) under
    ``torch.compile``, the same draws as eager (``fallback_random``), one graph per chunk shape;
    ``"auto"`` does so where the work pays for the compilation (N K >= ``COMPILE_MIN_WORK``);
    ``"off"`` never. A user's program runs eager.

    Chunked over examples (``batch_size``) and samples so memory stays bounded whatever K is.
    With ``return_stderr`` also gives the delta-method standard error of the estimate,
    sqrt((mean w^2 / (mean w)^2 - 1) / K), from the same weights. With a ``seed`` each batch of
    examples draws from ``seed + example_offset + its first index``, so a dataset split into
    pieces (``example_offset`` = each piece's start, on a batch boundary) gives the same numbers.

    With ``return_diagnostics`` also gives :class:`~pyrovae.infer.psis.ImportanceDiagnostics`:
    per example the Pareto k of the weights (k > 0.7: not to be trusted; 0.5-0.7: slow
    convergence, the standard error understated) and their effective sample size, from each
    batch's weights as they are made (the weights of the whole set are never held at once).
    Returns the estimate, then the stderr and the diagnostics where asked, in that order.
    """
    _check_inputs(num_samples)
    run = evaluation_of(vae, x, model, guide, args, kwargs, labels, data_plate)
    x = run.x
    batch, sample_chunk = _chunks(run.width, len(x), num_samples, batch_size, chunk_elements)
    weights = run.log_weights
    if compile == "on" or (compile == "auto" and len(x) * num_samples >= COMPILE_MIN_WORK):
        weights = _compiled_weights(run) or run.log_weights
    estimates, stderrs, ks, sizes = [], [], [], []
    with _seeded(seed, x.device), _progress(len(x) * num_samples, "log p(x)", progress) as bar, \
            torch.no_grad(), pyro.validation_enabled(False):
        for start in range(0, len(x), batch):
            if seed is not None:
                torch.manual_seed(seed + example_offset + start)
            stop = min(start + batch, len(x))
            # one buffer for the batch's weights: small tensors kept alive between the chunks'
            # large temporaries would fragment the heap
            lw = torch.empty(num_samples, stop - start, dtype=torch.float64, device=x.device)
            for done in range(0, num_samples, sample_chunk):
                k = min(sample_chunk, num_samples - done)
                lw[done:done + k] = weights(start, stop, k)
                bar.update(k * (stop - start))
            lse1 = torch.logsumexp(lw, 0)
            lse2 = torch.logsumexp(2 * lw, 0)
            estimates.append(lse1 - math.log(num_samples))
            # mean(w^2) / mean(w)^2 = exp(lse2 - 2 lse1 + log K) >= 1
            ratio = torch.exp(lse2 - 2 * lse1 + math.log(num_samples))
            stderrs.append(((ratio - 1).clamp_min(0) / num_samples).sqrt())
            if return_diagnostics:
                ks.append(pareto_k(lw))
                sizes.append(effective_sample_size(lw))
            if (start // batch) % max(1, MAX_BATCH // batch) == 0:  # about every thousand examples
                _return_freed_heap_to_os()
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    estimate = torch.cat(estimates).to(dtype)
    out = (estimate,) + ((torch.cat(stderrs).to(dtype),) if return_stderr else ())
    if return_diagnostics:
        out += (ImportanceDiagnostics(torch.cat(ks), torch.cat(sizes), num_samples, run.weighting),)
    return out if len(out) > 1 else estimate


def _replicated_bound(run, k, num_replicates, batch_size, chunk_elements):
    """IWAE_k per example and replicate, shape (R, N)."""
    x = run.x
    batch, sample_chunk = _chunks(run.width, len(x), k * num_replicates, batch_size, chunk_elements)
    replicates_per_chunk = max(1, sample_chunk // k)
    rows = []
    with torch.no_grad(), pyro.validation_enabled(False):
        for start in range(0, len(x), batch):
            stop = min(start + batch, len(x))

            def weights(num):
                return run.log_weights(start, stop, num)

            parts = []
            for done in range(0, num_replicates, replicates_per_chunk):
                r = min(replicates_per_chunk, num_replicates - done)
                if r * k <= sample_chunk:
                    lw = weights(r * k).double().reshape(r, k, stop - start)
                    parts.append(torch.logsumexp(lw, 1) - math.log(k))
                else:  # one replicate needs more samples than a chunk holds: stream over its samples
                    lse = torch.full((stop - start,), -math.inf, dtype=torch.float64, device=x.device)
                    for taken in range(0, k, sample_chunk):
                        lw = weights(min(sample_chunk, k - taken)).double()
                        lse = torch.logaddexp(lse, torch.logsumexp(lw, 0))
                    parts.append((lse - math.log(k)).unsqueeze(0))
            rows.append(torch.cat(parts, 0))
    return torch.cat(rows, 1)


def _float_dtype(x):
    return x.dtype if x.is_floating_point() else torch.get_default_dtype()


def iwae_bound(vae=None, x: torch.Tensor = None, k: int = 1, num_replicates: int = 1,
               batch_size: Optional[int] = None, return_stderr: bool = False, seed: Optional[int] = None,
               chunk_elements: int = DEFAULT_CHUNK_ELEMENTS, labels: Optional[torch.Tensor] = None, *,
               model=None, guide=None, args=(), kwargs=None, data_plate: Optional[str] = None):
    """IWAE_k(x_n) = E[log (1/k) sum_j w_jn], averaged over ``num_replicates`` independent draws;
    the stderr (``num_replicates >= 2``) is the Monte Carlo error of that average. The model in
    any of the three forms, as :func:`log_likelihood` takes it."""
    _check_inputs(k, "k")
    _check_inputs(num_replicates, "num_replicates")
    run = evaluation_of(vae, x, model, guide, args, kwargs, labels, data_plate)
    if return_stderr and num_replicates < 2:
        raise ValueError("a standard error needs num_replicates >= 2")
    with _seeded(seed, run.device):
        values = _replicated_bound(run, k, num_replicates, batch_size, chunk_elements)
    dtype = _float_dtype(run.x)
    mean = values.mean(0).to(dtype)
    if not return_stderr:
        return mean
    return mean, (values.std(0) / math.sqrt(num_replicates)).to(dtype)


def elbo(vae=None, x: torch.Tensor = None, num_particles: int = 1, batch_size: Optional[int] = None,
         return_stderr: bool = False, seed: Optional[int] = None, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
         labels: Optional[torch.Tensor] = None, *, model=None, guide=None, args=(), kwargs=None,
         data_plate: Optional[str] = None):
    """ELBO(x_n) = E_q[log p(x_n, z) - log q(z | x_n)] by Monte Carlo over ``num_particles``."""
    return iwae_bound(vae, x, 1, num_particles, batch_size, return_stderr, seed, chunk_elements, labels,
                      model=model, guide=guide, args=args, kwargs=kwargs, data_plate=data_plate)


def elbo_terms(vae=None, x: torch.Tensor = None, batch_size: int = 1000, labels: Optional[torch.Tensor] = None, *,
               model=None, guide=None, args=(), kwargs=None, data_plate: Optional[str] = None
               ) -> Dict[str, torch.Tensor]:
    """Per example, from one draw z ~ q(z|x): ``reconstruction`` log p(x|z) (every observed site),
    ``kl`` KL(q(z|x) || p(z)) (closed form where the sites have one, else log q - log p at z),
    and ``elbo`` their difference. A model that sums a discrete latent out gives its own terms
    (its protocol's ``elbo_terms``, from the same traces)."""
    run = evaluation_of(vae, x, model, guide, args, kwargs, labels, data_plate)
    members = family(run.program)
    recon, kl = [], []
    with torch.no_grad():
        for start in range(0, run.num_examples, batch_size):
            stop = min(start + batch_size, run.num_examples)
            program_args, program_kwargs = run.sliced(start, stop)
            terms = None if run.is_user_program else members.elbo_terms(program_args[0])
            if terms is None:
                # closed-form KL per site where the guide is mean-field, else log q - log p at the draw
                analytic = members.mean_field_guide
                with (pyro.validation_enabled(False) if run.is_user_program else contextlib.nullcontext()):
                    parts = log_weight_parts(run.program.model, run.program.guide, *program_args,
                                             analytic_kl=analytic, max_plate_nesting=run.max_plate_nesting,
                                             estimator=None if run.is_user_program else "standard",
                                             **program_kwargs)
                terms = parts.observed, parts.kl if analytic else -parts.latent
            recon.append(terms[0].reshape(stop - start))
            kl.append(terms[1].reshape(stop - start))
    recon, kl = torch.cat(recon), torch.cat(kl)
    return {"reconstruction": recon, "kl": kl, "elbo": recon - kl}


@dataclass
class BoundCheck:
    """ELBO and IWAE_k (dataset means, nats per example) with their Monte Carlo errors."""

    ks: list
    values: list
    stderrs: list
    num_examples: int
    violations: list = field(default_factory=list)
    exact: float = None

    @property
    def elbo(self):
        return self.values[0]

    @property
    def log_likelihood(self):
        """The best estimate of log p(x): the exact value where known, else the largest-k bound."""
        return self.exact if self.exact is not None else self.values[-1]

    @property
    def jensen_gap(self):
        """log p(x) - ELBO >= 0: what Jensen's inequality costs the single-sample bound."""
        return self.log_likelihood - self.elbo

    @property
    def ok(self):
        return not self.violations

    def as_dict(self):
        return {
            "ks": list(self.ks),
            "values": list(self.values),
            "stderrs": list(self.stderrs),
            "num_examples": self.num_examples,
            "elbo": self.elbo,
            "log_likelihood": self.log_likelihood,
            "exact": self.exact,
            "jensen_gap": self.jensen_gap,
            "bound_check": "ok" if self.ok else "violated",
            "violations": list(self.violations),
        }

    def __str__(self):
        rows = [f"{'k':>7}  {'bound (nats)':>14}  {'MC error':>9}"]
        rows += [f"{k:>7}  {v:>14.4f}  {s:>9.4f}" for k, v, s in zip(self.ks, self.values, self.stderrs)]
        if self.exact is not None:
            rows.append(f"{'exact':>7}  {self.exact:>14.4f}")
        rows.append(f"Jensen gap log p(x) - ELBO = {self.jensen_gap:.4f} nats; bounds {'ok' if self.ok else 'VIOLATED'}")
        rows += [f"  violation: {v}" for v in self.violations]
        return "\n".join(rows)


def check_bounds(vae=None, x: torch.Tensor = None, ks: Sequence[int] = (1, 10, 100, 1000),
                 samples_per_k: Optional[int] = None, exact: Optional[float] = None, tolerance: float = 4.0,
                 seed: Optional[int] = None, strict: bool = False, batch_size: Optional[int] = None,
                 labels: Optional[torch.Tensor] = None, *, model=None, guide=None, args=(), kwargs=None,
                 data_plate: Optional[str] = None) -> "BoundCheck":
    """Estimates ELBO = IWAE_1 <= IWAE_k1 <= IWAE_k2 <= ... <= log p(x) and checks the ordering.

    Each IWAE_k is averaged over ``ceil(samples_per_k / k)`` (at least 2) independent replicates,
    which give its Monte Carlo error. A step down by more than ``tolerance`` combined standard
    errors (or a bound above ``exact``, the true mean log p(x) where known) is a violation:
    it is warned about with :class:`BoundViolationWarning`, or raised with ``strict=True``.
    The model in any of the three forms, as :func:`log_likelihood` takes it.
    """
    run = evaluation_of(vae, x, model, guide, args, kwargs, labels, data_plate)
    x = run.x
    ks = sorted({int(k) for k in ks} | {1})
    if ks[0] < 1:
        raise ValueError(f"every k must be >= 1; got ks={ks}")
    samples_per_k = samples_per_k or 2 * ks[-1]
    values, stderrs = [], []
    with _seeded(seed, x.device):
        for k in ks:
            replicates = max(2, -(-samples_per_k // k))
            values_k = _replicated_bound(run, k, replicates, batch_size, DEFAULT_CHUNK_ELEMENTS)
            mean, se = values_k.mean(0), values_k.std(0) / math.sqrt(replicates)
            values.append(float(mean.mean()))
            stderrs.append(float((se ** 2).sum().sqrt() / len(x)))
    result = BoundCheck(ks, values, stderrs, len(x), exact=None if exact is None else float(exact))
    for i in range(len(ks) - 1):
        drop = values[i] - values[i + 1]
        allowed = tolerance * math.hypot(stderrs[i], stderrs[i + 1]) + 1e-6 * abs(values[i])
        if drop > allowed:
            result.violations.append(
                f"IWAE_{ks[i + 1]} = {values[i + 1]:.4f} < IWAE_{ks[i]} = {values[i]:.4f} by {drop:.4f} nats (allowed {allowed:.4f})"
            )
    if exact is not None:
        for k, v, s in zip(ks, values, stderrs):
            if v - float(exact) > tolerance * s + 1e-6 * abs(float(exact)):
                result.violations.append(f"IWAE_{k} = {v:.4f} exceeds the exact log p(x) = {float(exact):.4f}")
    if result.violations:
        message = "bound ordering ELBO <= IWAE_k <= log p(x) violated:\n" + "\n".join(result.violations)
        if strict:
            raise AssertionError(message)
        warnings.warn(message, BoundViolationWarning, stacklevel=2)
    return result
