"""The compiled training step: the package VAE's structural fast path under ``torch.compile``.

Two forms, the first where it applies:

- :class:`CompiledStep`, the whole step in one graph: the dynamic binarization of the batch, the
  loss, its gradient (``torch.autograd.grad`` traced into the graph), gradient-norm clipping and
  Adam's update (PyTorch's fused Adam kernel, on the optimizer's own state, so checkpoints and
  resumes are those of ``torch.optim.Adam``). One call a step: no autograd engine, no optimizer
  wrapper, no host round trip between forward, backward and update. It needs Adam with
  PyTorch's defaults besides the learning rate (read each step from the optimizer, so schedules
  apply without recompiling) and a PyTorch whose compiler traces ``torch.autograd.grad``.
- :class:`CompiledLoss`, the loss alone (forward and, through AOTAutograd, backward in compiled
  kernels), with the eager optimizer: RMSprop, or where the first form is unavailable.

A compiled run's per-epoch ELBO report is compiled too (:class:`CompiledTerms`).

It is chosen by structure, like the fast path it compiles: the built-in VAE's own model and guide
(the ``fast_weight_parts`` it offers through the model protocol), one process, no auxiliary programs and no model with
its own objective; everything else trains eager, unchanged. The compiled graph is the same function
of the same random draws (``fallback_random``: the normal and Bernoulli draws come from torch's
generator, as in eager mode), so a compiled run follows the eager one within floating-point
rounding (``tests/test_compiled.py``). On CPU it runs on faster kernels of the same functions
(:mod:`pyrovae.fast.kernels`): a vectorizable Bernoulli log density, and the linear layers on
oneDNN or on PyTorch's own (MKL), whichever this processor runs faster at the model's shapes
(measured once, cached: :mod:`pyrovae.fast.machine_choices`).
The shapes are static: the last short batch of an epoch runs eager rather than compiling another
graph, and the first step runs eager too (with Pyro's validation of the model and guide). With
several steps a call the calls keep to a grid (steps 0, S, 2S, ... of each epoch, so a resumed run
makes the uninterrupted run's calls): a step off it, or from which the call's batches would not
all be full, runs in a second graph of one step a call in a run of ``ONE_STEP_GRAPH_MIN_STEPS``
steps or more, and eager in a shorter run, where a few eager steps an epoch cost less than that
graph's compilation. ``compile="auto"`` compiles where it pays: a run of at least
``AUTO_MIN_STEPS`` steps, which amortizes the compile time, or of ``AUTO_MIN_STEPS_CACHED`` where
the same step compiled on this machine before and its kernels are in the cache
(:mod:`pyrovae.fast.compile_cache`); ``steps_per_call=0`` unrolls
:func:`auto_steps_per_call` steps into each call of every compiled run: from
``AUTO_STEPS_PER_CALL`` to ``AUTO_MAX_STEPS_PER_CALL``, the number that leaves fewest of an
epoch's full batches off the calls' grid (fewer where an epoch has fewer full batches).
"""

import contextlib
import functools
import time
import types
import warnings

import torch

from ..protocol import family, trains_with_own_objective
from .binarize import bernoulli_pixels
from .compile_cache import kernels_in_user_cache
from .kernels import cpu_kernels
from .machine_choices import layer_shapes, linear_kernel
from .precision import autocast

__all__ = ["AUTO_MIN_STEPS", "AUTO_MIN_STEPS_CACHED", "AUTO_STEPS_PER_CALL", "AUTO_MAX_STEPS_PER_CALL", "ONE_STEP_GRAPH_MIN_STEPS",
           "auto_steps_per_call", "linear_kernel_choice", "compile_reason", "whole_step_reason", "CompiledLoss", "CompiledStep",
           "CompiledTerms", "adam_update_"]

# compile="auto" compiles a run of this many steps, or of AUTO_MIN_STEPS_CACHED where the step was
# compiled on this machine before (pyrovae.fast.compile_cache.compiled_before). The step of the MNIST
# VAE (784-400-50, batch 128, nine steps a call, 2 vCPUs, Intel Xeon): compiled first in 32-40 s,
# from the cache in about 4; an eager step costs some 1.9 ms more than a compiled one (2.0 s an epoch
# of 468 steps against 1.13), so the cached compile pays from about 2000 steps, the first one from
# about 20000. The first is taken from 5000 steps all the same: it is paid once a machine, and each
# later run of the model, short ones included, compiles from the cache (docs/benchmarks.md).
AUTO_MIN_STEPS = 5000
AUTO_MIN_STEPS_CACHED = 2500
# in the operator's name, as kernels.REVISION: a graph cached on disk by an earlier definition never replays
ADAM_REVISION = 1
# steps_per_call=0: AUTO_STEPS_PER_CALL steps a call in every compiled run. Measured in a plain
# 12-epoch fit (784-400-50, batch 128, 2 CPU cores): one step a call 2.38 s an epoch, eight 1.09 s
# (issue #26; docs/benchmarks.md), for a few seconds more compilation.
AUTO_STEPS_PER_CALL = 8
# ... or up to this many, where more divide an epoch's full batches better (auto_steps_per_call)
AUTO_MAX_STEPS_PER_CALL = 12
# Steps off the calls' grid (a few an epoch) in a one-step graph from this many steps on: an eager
# step costs about four compiled ones (some 6 ms more), the graph a few seconds of compilation.
ONE_STEP_GRAPH_MIN_STEPS = 25000


def auto_steps_per_call(full_steps: int) -> int:
    """The steps a call of ``steps_per_call=0`` for an epoch of ``full_steps`` full batches: all of
    them up to ``AUTO_STEPS_PER_CALL``; beyond, the number from ``AUTO_STEPS_PER_CALL`` to
    ``AUTO_MAX_STEPS_PER_CALL`` that leaves the fewest full batches off the calls' grid at the
    epoch's end (the smallest such number). Those batches train in steps of their own (eager in
    a run under ``ONE_STEP_GRAPH_MIN_STEPS`` steps, each some four compiled steps' time) every
    epoch, where one more step a call costs its compilation once: MNIST's 468 full batches of
    128 take 9 a call, where 8 left four eager steps an epoch, 1.2% of it (docs/benchmarks.md)."""
    if full_steps <= AUTO_STEPS_PER_CALL:
        return max(1, full_steps)
    return min(range(AUTO_STEPS_PER_CALL, AUTO_MAX_STEPS_PER_CALL + 1), key=lambda calls: (full_steps % calls, calls))


def compile_reason(trainer):
    """Why the step cannot be compiled (a string), or None where it can."""
    vae, objective = trainer.vae, trainer.objective
    if not trainer.fast_path or family(vae).fast_weight_parts(vae.model, vae.guide) is None:
        return "the model takes Pyro's trace path (a subclass's own model or guide, or fast_path=False)"
    if trainer.context.enabled:
        return "torch.distributed runs the step under DistributedDataParallel"
    if trains_with_own_objective(vae):
        return "the model trains with its own objective"
    if objective.estimator == "dreg":
        return "DReG reweights the gradient through a hook on z, which the compiler does not trace"
    if objective.kl_schedule.free_bits:
        return "free bits read the batch's KL on the host"
    return None


def linear_kernel_choice(vae, batch_size, device) -> str:
    """The kernel of a compiled CPU step's linear layers: ``"onednn"`` or ``"aten"`` (MKL), whichever
    runs the products of ``vae``'s layers at ``batch_size`` rows faster on this machine, measured
    once and cached (:func:`pyrovae.fast.machine_choices.linear_kernel`; oneDNN 1.8x faster on an
    AMD EPYC, MKL 1.4x on an Intel Xeon); ``"device"`` off the CPU, where neither applies."""
    if torch.device(device).type != "cpu":
        return "device"
    return linear_kernel(layer_shapes(vae), batch_size)


def _run_and_step_kernels(vae, batch_size, device, precision):
    """(the linear kernel's name; the run's kernels, for its float32 metrics; the training step's):
    the same under fp32; under bf16 the step's linear layers go through aten's linear, which
    autocast rounds to bfloat16."""
    choice = linear_kernel_choice(vae, batch_size, device)
    kernels = cpu_kernels(device, linear=choice == "onednn")
    return choice, kernels, kernels if precision == "fp32" else cpu_kernels(device, linear=False)


class CompiledLoss:
    """``objective(x)`` compiled for one batch shape, with the time its first call took (the
    compilation) and a fallback to the eager objective, with a warning, where the compiler fails.
    On CPU it runs under :func:`~pyrovae.fast.kernels.cpu_kernels` (``kernels``, which the
    run's per-epoch metrics enter too)."""

    def __init__(self, objective, device="cpu", precision="fp32", batch_size=128):
        self.objective = objective
        self.linear_kernel, self.kernels, kernels = _run_and_step_kernels(objective.vae, batch_size, device, precision)

        def objective_on_fast_kernels(x):
            with kernels, autocast(precision, device):
                return objective(x)

        self.structure = _structure(objective.vae, objective.loss_name, objective.num_particles, objective.estimator,
                                    str(device), precision, self.linear_kernel)
        self.compiled = _compiled(objective_on_fast_kernels, self.structure)
        self.compile_seconds = None
        self.failed = False

    def __call__(self, x):
        if self.failed:
            return self.objective(x)
        if self.compile_seconds is not None:
            return self.compiled(x)
        started = time.perf_counter()
        try:
            with kernels_in_user_cache():
                loss = self.compiled(x)
        except Exception as error:  # no C++ compiler, an unsupported platform: train eager
            self.failed = True
            _compile_failed(error)
            return self.objective(x)
        self.compile_seconds = time.perf_counter() - started
        return loss


# one code object per (function, structure): see _compiled
_CODE_COPIES = {}


def _compiled(function, structure):
    """``function`` under ``torch.compile`` (static shapes; torch's generator draws the random
    numbers, as in eager mode), on a code object of its own for each ``structure`` (a hashable
    summary of what shapes the graph: the model's config, the loss, the step's options). Dynamo
    keeps compiled graphs, and its limit of recompilations (8), per code object, and every
    instance of these classes defines its function from the same code: with one code object a
    process that compiles more than eight differently shaped models (a sweep) would train the
    later ones eagerly; with one per structure, runs of one structure share their graphs (no
    recompilation) and each other structure has a cache of its own."""
    code = _CODE_COPIES.setdefault((function.__code__, structure), function.__code__.replace())
    own = types.FunctionType(code, function.__globals__, function.__name__, function.__defaults__,
                             function.__closure__)
    return torch.compile(own, dynamic=False, options={"fallback_random": True})


def _structure(vae, *options):
    """What shapes a compiled graph of ``vae``, for :func:`_compiled`."""
    return (type(vae).__qualname__, repr(sorted(vae.config.items())), *options)


def _compile_failed(error):
    warnings.warn(f"torch.compile is unavailable here ({type(error).__name__}: {str(error)[:200]}); "
                  "training eager (compile='off' silences this)", RuntimeWarning, stacklevel=3)


@functools.lru_cache(maxsize=None)
def _adam_operator():
    """``pyrovae::adam_update_``, registered on first use (importing pyrovae registers nothing):
    PyTorch's fused Adam kernel as one opaque, mutating operator, so a compiled graph calls the
    very kernel that ``torch.optim.Adam(fused=True)`` calls (the compiler has no lowering of
    ``_fused_adam_``, and the Adam it generates from the formula compiles six times longer and
    runs slower). Defined on ``torch.library.Library`` with a CPU, a CUDA and a fake kernel, as the
    linear layers are (:func:`pyrovae.fast.kernels._operators`): a call costs a few us over
    the kernel, against some 25 us through ``torch.library.custom_op``'s Python layers. Returns
    ``(operator, library)``; the library lives in the cache, as dropping it deregisters the op."""
    library = torch.library.Library("pyrovae", "FRAGMENT")
    name = f"adam_update_r{ADAM_REVISION}_"
    library.define(name + "(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, "
                   "Tensor[] steps, Tensor lr, Tensor found_inf, float beta1, float beta2, float eps) -> ()")

    def adam_update(params, grads, exp_avgs, exp_avg_sqs, steps, lr, found_inf, beta1, beta2, eps):
        # on CPU torch.optim.Adam hands the kernel its rate as a float; on CUDA a tensor may stay one
        torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, lr=lr.item() if lr.device.type == "cpu"
                           else lr, beta1=beta1, beta2=beta2, weight_decay=0.0, eps=eps, amsgrad=False,
                           maximize=False, grad_scale=None, found_inf=found_inf)

    for device in ("CPU", "CUDA"):
        library.impl(name, adam_update, device)
    torch.library.register_fake(f"pyrovae::{name}", lambda *args: None, lib=library)
    return getattr(torch.ops.pyrovae, name).default, library


def adam_update_(params, grads, exp_avgs, exp_avg_sqs, steps, lr, found_inf, beta1, beta2, eps):
    """One step of ``torch.optim.Adam(fused=True)`` (no weight decay, no AMSGrad) on its state
    tensors, in place, as its ``step`` makes it (``torch/optim/adam.py``, ``_fused_adam``): the
    step counts advance, then the fused kernel updates. Where ``found_inf`` is 1, nothing changes:
    the counts stay and the kernel skips the update, as under a gradient scaler."""
    _adam_step(_adam_operator()[0], params, grads, exp_avgs, exp_avg_sqs, steps, lr, found_inf, beta1, beta2, eps)


def _adam_step(operator, params, grads, exp_avgs, exp_avg_sqs, steps, lr, found_inf, beta1, beta2, eps):
    torch._foreach_add_(steps, [1 - found_inf] * len(steps))
    operator(params, grads, exp_avgs, exp_avg_sqs, steps, lr, found_inf, beta1, beta2, eps)


_ADAM_DEFAULTS = {"weight_decay": 0.0, "amsgrad": False, "maximize": False, "decoupled_weight_decay": False}


def whole_step_reason(optimizer):
    """Why :class:`CompiledStep` cannot run ``optimizer``'s step (a string), or None where it can."""
    if not hasattr(torch._dynamo.config, "trace_autograd_ops"):
        return "this PyTorch's compiler does not trace torch.autograd.grad"
    if type(optimizer) is not torch.optim.Adam or not optimizer.defaults.get("fused"):
        return "the optimizer is not Adam's fused kernel"
    groups = optimizer.param_groups
    if len(groups) != 1 or any(groups[0].get(key, value) != value for key, value in _ADAM_DEFAULTS.items()):
        return "Adam has options besides its learning rate and betas"
    params = groups[0]["params"]
    if len({(p.device, p.dtype) for p in params}) != 1:
        return "the parameters live on more than one device or dtype"
    return None


@contextlib.contextmanager
def _tracing_autograd_ops():
    """Dynamo's ``trace_autograd_ops`` on for the call: the flag matters only while the compiler
    traces, but a guard that fails later (say the Pyro validation flag the objective reads) makes
    it trace again, and without the flag the gradient would split the step into several graphs.
    Set and restored by hand: ``config.patch`` costs 17 us a call, this 3."""
    config = torch._dynamo.config
    before = config.trace_autograd_ops
    config.trace_autograd_ops = True
    try:
        yield
    finally:
        config.trace_autograd_ops = before


class CompiledStep:
    """One training step of ``objective`` with ``optimizer`` (fused Adam), compiled whole::

        x = 1[u < x], u ~ U[0, 1)              (binarize: the run's dynamic binarization)
        L = objective(x);  g = dL/dtheta        (the fast path's loss, its gradient in the graph)
        g <- g min(1, c / (||g|| + 1e-6))       (grad_clip c > 0: clip_grad_norm_'s rule)
        theta <- Adam(theta, g)                 (PyTorch's fused kernel, the optimizer's state)

    One call trains ``steps_per_call`` such steps in turn, unrolled into the one graph: the call's
    fixed costs (Dynamo's guards on some 50 tensors, the graph's runtime wrapper, the Trainer's loop)
    are paid once for all of them, at a compile time that grows with their number.
    ``step(data, indices)`` trains on ``data[indices[i]]`` (each batch gathered inside the graph)
    and returns the steps' losses, the first non-finite one and the norms (where clipping computed
    them), and it leaves the last step's g in each parameter's ``.grad``, as ``backward`` and
    clipping leave it. A non-finite L leaves the parameters and the optimizer's state as they were
    (that update and every later one of the call are skipped in the graph), so the Trainer's
    divergence error keeps the last good state, as the eager step does.
    The draws are torch's generator's, in the eager step's order (``fallback_random``), so a
    compiled run follows the eager one within floating-point rounding. The optimizer's state must
    exist (the Trainer's first step is eager) and is read at every call, so a resumed
    optimizer's tensors are the ones updated.
    """

    def __init__(self, objective, optimizer, binarize=False, grad_clip=0.0, device="cpu", steps_per_call=1,
                 precision="fp32", batch_size=128):
        self.objective, self.optimizer = objective, optimizer
        self.steps_per_call = steps_per_call = int(steps_per_call)
        self.linear_kernel, self.kernels, kernels = _run_and_step_kernels(objective.vae, batch_size, device, precision)
        group = optimizer.param_groups[0]
        self.params = params = list(group["params"])
        self._lr_float = float(group["lr"])
        # shape (1,), not 0-d: Dynamo reads a 0-d float tensor input as a Python float (a symbol),
        # which its scalar pass then specializes, restarting the whole trace: 14 s of compilation
        # with Inductor's cache warm, 8.5 without the restart (12-epoch fit, 8 steps a call)
        self.lr = torch.tensor([self._lr_float], dtype=torch.float64, device=params[0].device)
        beta1, beta2 = (float(b) for b in group["betas"])
        eps, clip = float(group["eps"]), float(grad_clip)
        adam = _adam_operator()[0]  # registered before compiling: the graph only calls it

        def one_step(x, lr, exp_avgs, exp_avg_sqs, steps, skipped):
            if binarize:
                x = bernoulli_pixels(x)
            with torch.enable_grad():
                with kernels, autocast(precision, device):
                    loss = objective(x)
                grads = torch.autograd.grad(loss, params)
            norm = None
            if clip > 0:
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
                factor = torch.clamp(clip / (norm + 1e-6), max=1.0)
                grads = [g * factor for g in grads]
            # the fused Adam kernel reads a gradient in its parameter's memory layout; eager backward
            # gives it that layout (autograd's gradient layout contract), while a traced
            # torch.autograd.grad may return a view (a parameter used transposed: its gradient is a
            # transposed product), which clipping keeps
            grads = [g if g.stride() == p.stride() else torch.empty_like(p).copy_(g) for g, p in zip(grads, params)]
            # once a step is not finite, it and every later step of the call leave the state alone
            skipped = torch.maximum(skipped, (~torch.isfinite(loss)).to(params[0].dtype))
            _adam_step(adam, params, grads, exp_avgs, exp_avg_sqs, steps, lr, skipped, beta1, beta2, eps)
            return loss.detach(), skipped, norm, grads

        def step(data, indices, lr, exp_avgs, exp_avg_sqs, steps):
            skipped = torch.zeros((), dtype=params[0].dtype, device=params[0].device)
            losses, skips, norms = [], [], []
            for index in indices.unbind(0):
                x = data[index]  # the gather fuses with the binarization: the batch is written once
                loss, skipped, norm, grads = one_step(x, lr, exp_avgs, exp_avg_sqs, steps, skipped)
                losses.append(loss)
                skips.append(skipped)
                norms.append(norm)
            norms = torch.stack(norms) if clip > 0 else None
            return torch.stack(losses), torch.stack(skips), norms, grads

        # a graph for calls of steps_per_call steps and one for single steps (off the calls' grid):
        # shapes are static, so each is compiled once, on its first call
        self.structure = _structure(objective.vae, objective.loss_name, objective.num_particles, objective.estimator,
                                    binarize, clip, steps_per_call, beta1, beta2, eps, str(device), precision,
                                    self.linear_kernel)
        self.compiled = _compiled(step, self.structure)
        self.compile_seconds = None  # all graphs' compilation so far
        self.compiled_calls = set()  # the numbers of steps a call whose graphs exist
        self.failed = False

    def state_lists(self):
        """The optimizer's exp_avg, exp_avg_sq and step tensors in parameter order, or None
        before its first step."""
        state = self.optimizer.state
        if any(p not in state for p in self.params):
            return None
        return ([state[p]["exp_avg"] for p in self.params], [state[p]["exp_avg_sq"] for p in self.params],
                [state[p]["step"] for p in self.params])

    def __call__(self, data, indices):
        """``steps_per_call`` steps (or one), on the batches ``data[indices[i]]`` in turn
        (``indices`` of shape ``(steps_per_call, batch)`` or ``(1, batch)``): ``(losses, diverged,
        grad_norms)`` after them, the losses and (where clipping computes them) the norms per step,
        and ``diverged`` the first step whose loss was not finite, which and every later step of
        the call left the state alone, or None; or None where the steps should run eager (the
        compiler failed, or the optimizer has no state yet)."""
        if indices.dim() != 2 or len(indices) not in (1, self.steps_per_call):
            raise ValueError(f"indices must have shape ({self.steps_per_call}, batch) or (1, batch), "
                             f"got {tuple(indices.shape)}")
        lists = None if self.failed else self.state_lists()
        if lists is None:
            return None
        lr = self.optimizer.param_groups[0]["lr"]
        if lr != self._lr_float:  # a schedule's new rate: an input of the graph, not a constant
            self.lr.fill_(lr)
            self._lr_float = lr
        with torch.no_grad(), _tracing_autograd_ops():
            if len(indices) in self.compiled_calls:
                return self._publish(*self.compiled(data, indices, self.lr, *lists))
            started = time.perf_counter()
            try:
                with kernels_in_user_cache():
                    out = self.compiled(data, indices, self.lr, *lists)
            except Exception as error:  # no C++ compiler, an unsupported platform: train eager
                self.failed = True
                _compile_failed(error)
                return None
        self.compile_seconds = (self.compile_seconds or 0.0) + time.perf_counter() - started
        self.compiled_calls.add(len(indices))
        return self._publish(*out)

    def _publish(self, losses, skipped, norms, grads):
        for parameter, grad in zip(self.params, grads):
            parameter.grad = grad
        diverged = None
        if skipped[-1].item():
            diverged = int(skipped.nonzero()[0, 0])
        return losses, diverged, norms


class CompiledTerms:
    """The per-epoch ELBO report of a compiled run: per example, from one draw z ~ q(z|x),
    ``reconstruction`` log p(x|z), ``kl`` KL(q(z|x) || p(z)) and ``elbo`` their difference, as
    :func:`pyrovae.estimate.elbo_terms` gives them for the package VAE (its fast path, the
    closed-form KL where the prior has one), compiled for batches of ``batch_size`` on the run's
    kernels: the metrics cost a tenth of an epoch eagerly. A last short batch runs the same
    function eagerly; after a compiler failure (warned once) every batch does.
    """

    def __init__(self, vae, kernels, batch_size=1000):
        self.vae, self.kernels, self.batch_size = vae, kernels, batch_size
        fast = family(vae).fast_weight_parts(vae.model, vae.guide)  # chosen eagerly, as the step's is
        if fast is None:
            raise ValueError(f"the {type(vae).__name__}'s model and guide take Pyro's trace path: no compiled report")

        def terms(x):
            with kernels:
                parts = fast(x, analytic_kl=True)
            return parts.observed, parts.kl

        self.terms = terms
        self.compiled = _compiled(terms, _structure(vae, batch_size))
        self.failed = False
        self.compile_seconds = None  # of the first compiled batch

    def __call__(self, x):
        recon, kl = [], []
        with torch.no_grad():
            for start in range(0, len(x), self.batch_size):
                xb = x[start:start + self.batch_size]
                started = time.perf_counter()
                compiled = len(xb) == self.batch_size and not self.failed
                first = compiled and self.compile_seconds is None
                try:
                    with kernels_in_user_cache() if first else contextlib.nullcontext():
                        observed, divergence = (self.compiled if compiled else self.terms)(xb)
                except Exception as error:  # the step compiled, so this is rare: report it, stay correct
                    self.failed = True
                    _compile_failed(error)
                    observed, divergence = self.terms(xb)
                if self.compile_seconds is None and compiled and not self.failed:
                    self.compile_seconds = time.perf_counter() - started
                recon.append(observed)
                kl.append(divergence)
        recon, kl = torch.cat(recon), torch.cat(kl)
        return {"reconstruction": recon, "kl": kl, "elbo": recon - kl}
