"""The compiled training step: the loss of the package VAE's structural fast path under
``torch.compile`` (forward and, through AOTAutograd, backward in compiled kernels) and Adam's
fused kernel for the update.

It is chosen by structure, like the fast path it compiles: the built-in VAE's own model and guide
(:func:`~pyrovae.infer.fast_path.fast_vae`), one process, no auxiliary programs and no model with
its own objective; everything else trains eager, unchanged. The compiled graph is the same function
of the same random draws (``fallback_random``: the normal and Bernoulli draws come from torch's
generator, as in eager mode), so a compiled run follows the eager one within floating-point
rounding (``tests/test_compiled.py``). On CPU it runs on faster kernels of the same functions
(oneDNN's linear layers, a vectorizable Bernoulli log density: :mod:`pyrovae.infer.cpu_kernels`).
The shapes are static: the last short batch of an epoch runs eager rather than compiling a second
graph, and the first step runs eager too (with Pyro's validation of the model and guide).
``compile="auto"`` compiles where it pays: a run of at least ``AUTO_MIN_STEPS`` steps, which
amortizes the compile time (about 20 s on 2 CPU cores).
"""

import time
import warnings

import torch

from ..infer.cpu_kernels import cpu_kernels
from ..infer.fast_path import fast_vae

__all__ = ["AUTO_MIN_STEPS", "compile_reason", "CompiledLoss"]

AUTO_MIN_STEPS = 5000


def compile_reason(trainer):
    """Why the step cannot be compiled (a string), or None where it can."""
    vae, objective = trainer.vae, trainer.objective
    if not trainer.fast_path or fast_vae(vae.model, vae.guide) is None:
        return "the model takes Pyro's trace path (a subclass's own model or guide, or fast_path=False)"
    if trainer.context.enabled:
        return "torch.distributed runs the step under DistributedDataParallel"
    if getattr(vae, "make_objective", None) is not None or getattr(vae, "auxiliary_programs", None) is not None:
        return "the model trains with its own objective"
    if objective.estimator == "dreg":
        return "DReG reweights the gradient through a hook on z, which the compiler does not trace"
    if objective.kl_schedule.free_bits:
        return "free bits read the batch's KL on the host"
    return None


class CompiledLoss:
    """``objective(x)`` compiled for one batch shape, with the time its first call took (the
    compilation) and a fallback to the eager objective, with a warning, where the compiler fails.
    On CPU it runs under :func:`~pyrovae.infer.cpu_kernels.cpu_kernels` (``kernels``, which the
    run's per-epoch metrics enter too)."""

    def __init__(self, objective, device="cpu"):
        self.objective = objective
        self.kernels = kernels = cpu_kernels(device)

        def objective_on_fast_kernels(x):
            with kernels:
                return objective(x)

        self.compiled = torch.compile(objective_on_fast_kernels, dynamic=False, options={"fallback_random": True})
        self.compile_seconds = None
        self.failed = False

    def __call__(self, x):
        if self.failed:
            return self.objective(x)
        if self.compile_seconds is not None:
            return self.compiled(x)
        started = time.perf_counter()
        try:
            loss = self.compiled(x)
        except Exception as error:  # no C++ compiler, an unsupported platform: train eager
            self.failed = True
            warnings.warn(f"torch.compile is unavailable here ({type(error).__name__}: {str(error)[:200]}); "
                          "training eager (compile='off' silences this)", RuntimeWarning, stacklevel=2)
            return self.objective(x)
        self.compile_seconds = time.perf_counter() - started
        return loss
