"""Denormal floats flushed to zero while a CPU training loop runs, as XLA's CPU runtime (JAX,
NumPyro) always runs.

Adam's first moment m decays by beta1 = 0.9 a step wherever a parameter's gradient is zero: the
weights from pixels that MNIST's digits rarely touch reach float32's denormal range (below
1.2e-38) within an epoch: 41,746 of the 784-400-50 VAE's 689,284 moments after the first epoch,
53,887 after the fifth. An Intel Xeon computes on a denormal through a microcode assist, many
times slower than on a normal float, and the eager epoch there grew from 2.16 s to 2.49 s over
five epochs (to 2.94 s in another run), where with the processor's flush-to-zero and
denormals-are-zero modes on it stayed at 2.10-2.25 s (issue #46; the compiled step's Adam is the
same kernel).

What it changes: a float32 value below 1.2e-38 is read and written as 0. An Adam moment that
small moves its parameter by some lr * 1e-38 / eps = 1e-33, below any float32 parameter's
rounding: three epochs of the MNIST VAE (1404 steps) end in the same parameters to the last bit
and the same ELBO with and without it (tests/test_denormals.py holds a small case to the bit).
XLA runs every CPU computation in these modes (``tsl::port::ScopedFlushDenormal`` around each
execution; openxla/xla#22858), so NumPyro's SVI, the benchmarks' peer, always has.

The modes belong to each thread (the processor's MXCSR register), and ``torch.set_flush_denormal``
sets the calling thread's only, while PyTorch's kernels run on OpenMP's pool of threads, made
before. So :func:`flushing_denormals` sets them in every thread of that pool too, by running a
parallel region of OpenMP's runtime (``GOMP_parallel``, which libgomp and Intel's runtime both
export) whose body sets the mode in its thread; where that runtime is not found (no OpenMP, another
platform), the calling thread's mode alone. They are set for the training steps of a ``fit`` and
restored after, to the calling thread's modes before (left on where the caller had them on). The
per-epoch ELBO report, every estimator and everything outside ``fit`` run in the caller's modes.
"""

import contextlib
import ctypes
import functools
import re
from pathlib import Path

import torch

__all__ = ["flushing_denormals", "denormals_flushed", "set_flush_denormal_everywhere"]

_DENORMAL = 1e-39  # below float32's smallest normal, 1.18e-38
_REGION_BODY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


@functools.lru_cache(maxsize=None)
def _openmp_parallel():
    """``GOMP_parallel`` of the OpenMP runtime loaded in this process (the one PyTorch's kernels
    run on), or None where there is none to be found."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    libraries = sorted(set(re.findall(r"(/\S*/lib[gi]omp[^/\s]*\.so[^/\s]*)", maps)))
    for library in libraries:
        try:
            parallel = ctypes.CDLL(library).GOMP_parallel
        except (OSError, AttributeError):
            continue
        parallel.argtypes = [_REGION_BODY, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        parallel.restype = None
        return parallel
    return None


def set_flush_denormal_everywhere(on: bool) -> bool:
    """``torch.set_flush_denormal(on)`` in this thread and in every thread of PyTorch's OpenMP
    pool; whether the processor supports the modes."""
    supported = torch.set_flush_denormal(on)
    parallel = _openmp_parallel()
    if supported and parallel is not None and torch.get_num_threads() > 1:
        def body(_):
            torch.set_flush_denormal(on)

        parallel(_REGION_BODY(body), None, torch.get_num_threads(), 0)
    return supported


def denormals_flushed() -> bool:
    """Whether this thread flushes float32 denormals to zero now (a denormal made from a double
    comes out as 0)."""
    return torch.tensor(_DENORMAL, dtype=torch.float32).item() == 0.0


@contextlib.contextmanager
def flushing_denormals(device):
    """Inside, on a CPU ``device``, float32 denormals are flushed to zero (where the processor
    supports it); the thread's modes are restored on the way out. Elsewhere a no-op."""
    if torch.device(device).type != "cpu":
        yield
        return
    before = denormals_flushed()
    if not set_flush_denormal_everywhere(True):
        yield
        return
    try:
        yield
    finally:
        set_flush_denormal_everywhere(before)
