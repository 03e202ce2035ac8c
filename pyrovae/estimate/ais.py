r"""Annealed importance sampling (Neal 2001) and bidirectional Monte Carlo (Grosse et al. 2015)
for log p(x), the target's log density read from the model's Pyro trace.

The path of distributions from a normalized base pi_0(z) to the unnormalized posterior p(x, z):

    log f_b(z) = log pi_0(z) + b [log p(x, z) - log pi_0(z)],    0 = b_0 < b_1 < ... < b_T = 1,

pi_0 = q(z | x) (the guide, ``proposal="guide"``) or p(z) (``"prior"``). A forward chain starts at
z_0 ~ pi_0, and at each t adds (b_t - b_{t-1}) g(z_{t-1}) to its log weight,
g = log p(x, z) - log pi_0(z), then moves z by an HMC transition that leaves f_{b_t} invariant.
exp(log weight) is unbiased for p(x), so its log is a stochastic lower bound (Jensen), and the
log mean over chains a tighter one. Run backward from an exact posterior draw (data simulated
from the model: (z, x) ~ p), the chain's -log weight is a stochastic upper bound of log p(x)
(Grosse et al.'s reverse AIS): BDMC sandwiches log p(x) between the two.

HMC (Neal 2011): momentum ~ N(0, I), ``num_leapfrog`` leapfrog steps, a Metropolis correction;
the step size is per example, shared by its chains, multiplied by 1.02 after a step whose
acceptance probability, averaged over the example's chains, is above ``target_accept`` and by
0.98 otherwise (Wu et al. 2017's rule). Shared, because a step size adapted to one chain's own
acceptances depends on that chain's path, and the transition then no longer leaves f_b invariant:
measured on the linear-Gaussian VAE, per-chain adaptation biased the estimate upward by 0.12-0.17
nats, above the exact log p(x) it must lower-bound. The default target, 0.9, is where that test
gave the smallest spread over chains at 100-400 steps (0.65, Wu et al.'s, gave three times it). Everything is
vectorized over examples and chains: the chains ride a particle plate, as Pyro's vectorized ELBOs
put their particles.
"""

import math
from dataclasses import dataclass
from typing import Dict, Optional, Union

import pyro
import torch
from pyro import poutine
from pyro.infer.util import get_dependent_plate_dims, torch_sum
from pyro.poutine.util import site_is_subsample

from ..infer.target import Point, per_site
from ..infer.weights import PARTICLE_PLATE
from ..program import Program, as_program, slice_examples
from ..protocol import owner_of
from ..validation import require_positive_int
from .importance import Evaluation, _seeded

__all__ = ["AISResult", "BDMCResult", "Point", "ais_log_likelihood", "bdmc", "annealing_schedule", "SCHEDULES",
           "PROPOSALS"]

SCHEDULES = ("sigmoid", "linear")
PROPOSALS = ("guide", "prior")
# Chains x examples one chunk holds by default: on 2 CPU cores the MNIST VAE's decoder works
# through the same rows as fast in chunks of this size as in one block, with the working set
# (a few (rows, 784) tensors) near the caches rather than many times larger.
ROWS_PER_CHUNK = 4096
# Density evaluations (chains x examples x steps x leapfrog steps) from which compile="auto"
# compiles a fast target: its compilation takes some 10-20 s.
COMPILE_MIN_WORK = 20_000_000


def annealing_schedule(num_steps: int, schedule: Union[str, torch.Tensor] = "sigmoid", dtype=torch.float64):
    """b_0 = 0 < ... < b_T = 1, T = ``num_steps``: ``"linear"``, or ``"sigmoid"`` (Grosse et al.
    2015: b_t proportional to sigmoid(delta (2t / T - 1)) with delta = 4, rescaled to [0, 1],
    denser near both ends), or an increasing tensor from 0 to 1 given as it is."""
    if torch.is_tensor(schedule):
        betas = schedule.to(dtype)
        if betas.dim() != 1 or len(betas) < 2 or betas[0] != 0 or betas[-1] != 1 or not bool((betas.diff() > 0).all()):
            raise ValueError("a schedule tensor must increase strictly from 0 to 1")
        return betas
    require_positive_int(num_steps, "num_steps")
    if schedule == "linear":
        return torch.linspace(0, 1, num_steps + 1, dtype=dtype)
    if schedule == "sigmoid":
        s = torch.sigmoid(4.0 * (2 * torch.arange(num_steps + 1, dtype=dtype) / num_steps - 1))
        return (s - s[0]) / (s[-1] - s[0])
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {list(SCHEDULES)} or pass a tensor of b_t")


@dataclass
class AISResult:
    """Per example (nats): ``log_likelihood`` the log mean over chains of exp(log weight) (for a
    forward run a stochastic lower bound of log p(x); for a reverse one, minus a stochastic upper
    bound), ``chain_log_weights`` (C, N), ``chain_sd`` their spread over chains, ``acceptance`` the
    mean HMC acceptance probability per example, ``step_size`` the adapted step sizes' mean."""

    log_likelihood: torch.Tensor
    chain_log_weights: torch.Tensor
    chain_sd: torch.Tensor
    acceptance: torch.Tensor
    step_size: torch.Tensor


def _sample_sites(trace):
    """(name, site) of the sample sites of ``trace``, a plate's subsample site left out."""
    return [(name, site) for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site)]


class _TraceTarget:
    """log pi_0(z) and log p(x, z) per (chain, example) at latent values ``z`` (a dict of site ->
    (C, N, *event)), from the model's (and, for the guide proposal, the guide's) Pyro traces with
    the latent sites conditioned on ``z``. A guide with one sample site is traced once: that
    site's distribution depends on x alone, so its density at any z is read from the same
    distribution object (the proposal's parameters computed once per example)."""

    def __init__(self, model, guide, args, kwargs, num_chains, proposal, max_plate_nesting=1):
        plate = pyro.plate(PARTICLE_PLATE, num_chains, dim=-(max_plate_nesting + 1))
        self.model, self.guide = plate(model), plate(guide)
        self.args, self.kwargs, self.proposal = args, kwargs, proposal
        self._proposal_trace = None

    def _reduced(self, trace, sites):
        trace.compute_log_prob()
        dims = get_dependent_plate_dims([trace.nodes[name] for name in sites])
        return sum(torch_sum(trace.nodes[name]["log_prob"], dims) for name in sites)

    def initial(self):
        """z_0 ~ pi_0, as a dict of latent site values (C, N, *event)."""
        with torch.no_grad():
            program = self.guide if self.proposal == "guide" else self.model
            trace = poutine.trace(program).get_trace(*self.args, **self.kwargs)
        sample_sites = _sample_sites(trace)
        sites = [name for name, site in sample_sites if not site["is_observed"]]
        for name in sites:
            fn = trace.nodes[name]["fn"]
            if not getattr(fn, "has_rsample", False) or fn.support.is_discrete:
                raise ValueError(f"AIS moves the latent sites by HMC, which needs continuous ones; site {name!r} is "
                                 f"{type(fn).__name__} (discrete). For a model that sums a discrete latent (m2), run "
                                 "AIS given each value and sum p(x, y) over them (pyrovae evaluate --method ais does)")
        if self.proposal == "guide" and len(sample_sites) == 1:
            self._proposal_trace = trace
        return {name: trace.nodes[name]["value"].detach() for name in sites}

    def _guide_density(self, z):
        if self._proposal_trace is not None:
            trace = self._proposal_trace
            for name, value in z.items():  # the same distribution, read at the new value
                site = trace.nodes[name]
                site["value"] = value
                for key in ("log_prob", "unscaled_log_prob", "log_prob_sum"):
                    site.pop(key, None)
        else:
            trace = poutine.trace(poutine.condition(self.guide, data=z)).get_trace(*self.args, **self.kwargs)
        return self._reduced(trace, [name for name, _ in _sample_sites(trace)])

    def log_densities(self, z: Dict[str, torch.Tensor]):
        """(log pi_0(z), log p(x, z)), each (C, N)."""
        model_trace = poutine.trace(poutine.condition(self.model, data=z)).get_trace(*self.args, **self.kwargs)
        names = [name for name, _ in _sample_sites(model_trace)]
        missing = set(z) - set(names)
        if missing:
            raise ValueError(f"latent sites {sorted(missing)} of the proposal are not sites of the model")
        joint = self._reduced(model_trace, names)
        if self.proposal == "prior":
            return self._reduced(model_trace, list(z)), joint
        try:
            return self._guide_density(z), joint
        except (KeyError, NotImplementedError):  # a flow without an inverse (planar)
            raise ValueError("AIS from the guide needs q(z|x) at points it did not draw; this guide's density is "
                             "known at its own draws only (a planar flow has no inverse): run AIS with "
                             "proposal='prior'") from None

    def point(self, z) -> Point:
        """The densities at ``z`` and their gradients (two backward passes: log p(x, z)'s through
        the decoder, log pi_0's)."""
        with torch.enable_grad():
            z = {name: value.detach().requires_grad_(True) for name, value in z.items()}
            base, joint = self.log_densities(z)
            values = list(z.values())
            grad_joint = torch.autograd.grad(joint.sum(), values, retain_graph=base.requires_grad)
            grad_base = (torch.autograd.grad(base.sum(), values, allow_unused=True) if base.requires_grad
                         else (None,) * len(values))
        grad_base = [torch.zeros_like(v) if g is None else g for v, g in zip(values, grad_base)]
        return Point(base.detach(), joint.detach(), dict(zip(z, grad_base)), dict(zip(z, grad_joint)))


def _per_example(tensor, batch_dims=2):
    """Sums a site-shaped tensor (C, N, *event) to (C, N)."""
    return tensor.flatten(batch_dims).sum(-1) if tensor.dim() > batch_dims else tensor


def _hmc(target, z, beta, step_size, num_leapfrog, current: Point):
    """One HMC transition leaving f_beta invariant; returns (z, the point at z, acceptance
    probability (C, N))."""
    log_f, grad = current.log_f(beta), current.grad(beta)
    expand = {name: per_site(step_size, value) for name, value in z.items()}
    momentum = {name: torch.randn_like(value) for name, value in z.items()}
    kinetic = sum(_per_example(p.square()) for p in momentum.values()) / 2
    new_z, p = dict(z), {name: value + expand[name] / 2 * grad[name] for name, value in momentum.items()}
    for step in range(num_leapfrog):
        new_z = {name: value + expand[name] * p[name] for name, value in new_z.items()}
        new_point = target.point(new_z)
        new_grad = new_point.grad(beta)
        scale = 1.0 if step < num_leapfrog - 1 else 0.5
        p = {name: value + scale * expand[name] * new_grad[name] for name, value in p.items()}
    new_kinetic = sum(_per_example(value.square()) for value in p.values()) / 2
    log_accept = (new_point.log_f(beta) - new_kinetic) - (log_f - kinetic)
    log_accept = torch.where(torch.isfinite(log_accept), log_accept, torch.full_like(log_accept, -math.inf))
    accept_prob = log_accept.clamp(max=0).exp()
    accepted = torch.rand_like(accept_prob) < accept_prob
    chosen = {name: torch.where(per_site(accepted, value), new_z[name], value) for name, value in z.items()}
    return chosen, current.where(accepted, new_point), accept_prob


def _run(target, z, betas, num_leapfrog, step_size, target_accept, reverse):
    """The forward (or reverse) chain from ``z``; returns (log weights (C, N), mean acceptance
    (C, N), final step sizes (C, N))."""
    beta_index = range(len(betas) - 1, 0, -1) if reverse else range(1, len(betas))
    current = target.point(z)
    shape = current.base.shape
    step = torch.full(shape[1:], float(step_size), dtype=current.base.dtype, device=current.base.device).expand(shape)
    log_w = torch.zeros(shape, dtype=torch.float64, device=current.base.device)
    accept_sum = torch.zeros_like(log_w)
    for t in beta_index:
        beta, delta = float(betas[t]), float(betas[t] - betas[t - 1])
        if not reverse:
            log_w += delta * current.g.double()
        z, current, accept = _hmc(target, z, beta, step, num_leapfrog, current)
        step = torch.where(accept.mean(0) > target_accept, step[0] * 1.02, step[0] * 0.98).expand(shape)
        accept_sum += accept.double()
        if reverse:
            log_w -= delta * current.g.double()  # at the moved z: the forward chain's z_{t-1}
    return log_w, accept_sum / (len(betas) - 1), step


def _summarize(log_w, accept, step):
    num_chains = log_w.shape[0]
    estimate = torch.logsumexp(log_w, 0) - math.log(num_chains)
    sd = log_w.std(0) if num_chains > 1 else torch.zeros_like(estimate)
    return AISResult(estimate, log_w, sd, accept.mean(0), step.mean(0))


def _check(num_chains, num_steps, num_leapfrog, step_size, target_accept, proposal):
    require_positive_int(num_chains, "num_chains")
    require_positive_int(num_steps, "num_steps")
    require_positive_int(num_leapfrog, "num_leapfrog")
    if not (isinstance(step_size, (int, float)) and step_size > 0):
        raise ValueError(f"step_size must be a positive number; got {step_size!r}")
    if not (isinstance(target_accept, (int, float)) and 0 < target_accept < 1):
        raise ValueError(f"target_accept must be in (0, 1); got {target_accept!r}")
    if proposal not in PROPOSALS:
        raise ValueError(f"unknown proposal {proposal!r}; choose one of {list(PROPOSALS)}")


def _resolve(model, guide, x, args, kwargs, data_plate):
    """(model, guide, x on the program's device, args, the plate nesting) from the accepted forms:
    ``(model, guide, x, *args)``, ``(obj, x, *args)`` with ``obj.model``/``obj.guide``, or the
    keywords; a user's program is traced once first for its named errors."""
    if guide is None or torch.is_tensor(guide):  # the object form: the tensor after it is x
        if guide is not None:
            args = ((x,) if x is not None else ()) + tuple(args)
            x = guide
        program = as_program(model, data_plate=data_plate)
    else:
        program = as_program(model, guide, data_plate=data_plate)
    if x is None:
        raise TypeError("the data x is missing: pass x (its first dimension the examples)")
    if isinstance(program, Program):
        run = Evaluation(program, x, args, kwargs)  # traced once, and probed for the chains' dimension
        if not run.vectorized:
            raise ValueError(
                "AIS runs its chains on a plate left of the program's plates, and this program cannot take that "
                "dimension (traced with two particles it failed, or gave weights of another shape: boolean indexing, "
                "a batch norm or a softmax over the examples' dimension); importance sampling "
                "(pyrovae.log_likelihood) weighs it, drawing its samples as repeats of the batch")
        return program.model, program.guide, run.x, run.args, run.kwargs, run.max_plate_nesting
    x = program.prepare_data(x)
    args = tuple(a.to(x.device) if torch.is_tensor(a) else a for a in args)
    kwargs = {k: v.to(x.device) if torch.is_tensor(v) else v for k, v in kwargs.items()}
    return program.model, program.guide, x, args, kwargs, 1


def _fast_target(model, guide):
    """The fast target the owner of ``model`` offers for this pair (the model protocol's
    ``fast_ais_target``), or None."""
    owner = owner_of(model)
    return owner.fast_ais_target(model, guide) if owner is not None else None


def _make_target(model, guide, args, kwargs, num_chains, proposal, nesting, compiled):
    fast = _fast_target(model, guide)
    if fast is not None and not kwargs and len(args) == 1:
        return fast(args[0], num_chains, proposal, compiled)
    return _TraceTarget(model, guide, args, kwargs, num_chains, proposal, nesting)


def _resolve_compile(compile, num_chains, num_examples, num_steps, num_leapfrog):
    if compile == "auto":
        return num_chains * num_examples * num_steps * num_leapfrog >= COMPILE_MIN_WORK
    if not isinstance(compile, bool):
        raise ValueError(f"compile must be True, False or 'auto'; got {compile!r}")
    return compile


def _chunk_bounds(num_examples, num_chains, batch_size):
    if batch_size is None:
        batch_size = max(1, ROWS_PER_CHUNK // num_chains)
    else:
        require_positive_int(batch_size, "batch_size")
    return [(start, min(start + batch_size, num_examples)) for start in range(0, num_examples, batch_size)]


def _chunked_run(model, guide, x, args, kwargs, nesting, num_chains, proposal, compiled, batch_size, run):
    """``run(target)`` -> (log weights, acceptance, step sizes), each (C, n), over the examples
    in chunks of ``batch_size`` (tensors in ``args``/``kwargs`` over the examples sliced with
    them), concatenated along the examples."""
    parts = []
    for start, stop in _chunk_bounds(x.shape[0], num_chains, batch_size):
        chunk_args = slice_examples((x, *args), x.shape[0], start, stop)
        chunk_kwargs = slice_examples(kwargs, x.shape[0], start, stop)
        target = _make_target(model, guide, chunk_args, chunk_kwargs, num_chains, proposal, nesting, compiled)
        parts.append(run(target, start, stop))
    return tuple(torch.cat(values, dim=1) for values in zip(*parts))


def ais_log_likelihood(model, guide=None, x: torch.Tensor = None, *args, num_chains: int = 16,
                       num_steps: int = 1000, schedule: Union[str, torch.Tensor] = "sigmoid",
                       proposal: str = "guide", num_leapfrog: int = 10, step_size: float = 0.05,
                       target_accept: float = 0.9, seed: Optional[int] = None, data_plate: Optional[str] = None,
                       batch_size: Optional[int] = None, compile: Union[bool, str] = "auto",
                       **kwargs) -> AISResult:
    """AIS estimate of log p(x_n) per example (see the module docstring) for any Pyro ``model``
    and ``guide`` taking ``(x, *args, **kwargs)``, every latent site continuous and inside the
    data plate: ``num_chains`` chains per example, ``num_steps`` intermediate distributions, each
    with one HMC transition of ``num_leapfrog`` leapfrog steps. The model may also be given as one
    object with ``model`` and ``guide`` (a pyrovae model, a user's module):
    ``ais_log_likelihood(vae, x)``.

    The examples run in chunks of ``batch_size`` (default: ``ROWS_PER_CHUNK`` chains x examples),
    one after another from one random stream. Where the model's owner offers a fast target for
    the pair (``fast_ais_target``, the package VAE's), the densities come from it, compiled with
    ``torch.compile`` where ``compile`` is True (``"auto"``: for runs of ``COMPILE_MIN_WORK``
    density evaluations or more), else from Pyro's traces."""
    _check(num_chains, num_steps, num_leapfrog, step_size, target_accept, proposal)
    model, guide, x, args, kwargs, nesting = _resolve(model, guide, x, args, kwargs, data_plate)
    betas = annealing_schedule(num_steps, schedule)
    compiled = _resolve_compile(compile, num_chains, x.shape[0], num_steps, num_leapfrog)

    def forward(target, start, stop):
        return _run(target, target.initial(), betas, num_leapfrog, step_size, target_accept, reverse=False)

    with _seeded(seed, x.device), pyro.validation_enabled(False):
        log_w, accept, step = _chunked_run(model, guide, x, args, kwargs, nesting, num_chains, proposal, compiled,
                                           batch_size, forward)
    return _summarize(log_w, accept, step)


@dataclass
class BDMCResult:
    """Per example (nats): ``lower`` the forward AIS estimate (log mean over chains of the
    weights: a stochastic lower bound of log p(x)), ``upper`` the reverse one (minus the log mean
    of the reverse weights: a stochastic upper bound), ``gap = upper - lower``; and both runs."""

    lower: torch.Tensor
    upper: torch.Tensor
    gap: torch.Tensor
    forward: AISResult
    reverse: AISResult


def bdmc(model, guide=None, x: torch.Tensor = None, z: Dict[str, torch.Tensor] = None, *args, num_chains: int = 16,
         num_steps: int = 1000, schedule: Union[str, torch.Tensor] = "sigmoid", proposal: str = "guide",
         num_leapfrog: int = 10, step_size: float = 0.05, target_accept: float = 0.9, seed: Optional[int] = None,
         data_plate: Optional[str] = None, batch_size: Optional[int] = None, compile: Union[bool, str] = "auto",
         **kwargs) -> BDMCResult:
    """Bidirectional Monte Carlo on data simulated from the model, ``(z, x) ~ p``: ``z`` (a dict
    of latent site -> ``(N, *event)``) is an exact draw of p(z | x), from which the reverse chain
    starts. The reverse weights W' have E[W'] = 1 / p(x), so -log mean W' is a stochastic upper
    bound as the forward log mean is a lower one; their gap bounds how far either estimator is
    from log p(x) on such data (:class:`BDMCResult`). The model in any accepted form, as
    :func:`ais_log_likelihood` takes it (and its ``batch_size`` and ``compile``): ``bdmc(vae, x, z)``."""
    _check(num_chains, num_steps, num_leapfrog, step_size, target_accept, proposal)
    if torch.is_tensor(guide):  # bdmc(obj, x, z, *args)
        model, guide, x, z = model, None, guide, x
    if not isinstance(z, dict):
        raise TypeError(f"z must be a dict of latent site -> an exact posterior draw (N, *event); got {type(z).__name__}")
    model, guide, x, args, kwargs, nesting = _resolve(model, guide, x, args, kwargs, data_plate)
    z = {name: value.to(x.device) for name, value in z.items()}
    betas = annealing_schedule(num_steps, schedule)
    compiled = _resolve_compile(compile, num_chains, x.shape[0], 2 * num_steps, num_leapfrog)

    def both(target, start, stop):
        forward = _run(target, target.initial(), betas, num_leapfrog, step_size, target_accept, reverse=False)
        begin = {name: value[start:stop].detach().expand((num_chains,) + value[start:stop].shape).clone()
                 for name, value in z.items()}
        reverse = _run(target, begin, betas, num_leapfrog, step_size, target_accept, reverse=True)
        return forward + reverse

    with _seeded(seed, x.device), pyro.validation_enabled(False):
        parts = _chunked_run(model, guide, x, args, kwargs, nesting, num_chains, proposal, compiled, batch_size, both)
    forward, reverse = _summarize(*parts[:3]), _summarize(*parts[3:])
    upper = -reverse.log_likelihood
    return BDMCResult(forward.log_likelihood, upper, upper - forward.log_likelihood, forward, reverse)
