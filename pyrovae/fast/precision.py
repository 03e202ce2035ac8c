"""Training precision: ``"fp32"`` (the default) or ``"bf16"``, bfloat16 matrix products where the
processor computes them natively.

Under ``"bf16"`` the training step runs in ``torch.autocast(dtype=torch.bfloat16)``: the linear
layers' and convolutions' inputs are rounded to bfloat16 (8 bits of mantissa) and multiplied with
float32 accumulation, their outputs bfloat16; the parameters, their gradients and the optimizer's
state stay float32, and autocast keeps the losses' reductions it lists (the binary cross-entropy)
in float32. Everything that reports a number (the per-epoch ELBO, ``evaluate``, every estimator)
runs outside it, in float32: bf16 changes how a model is trained, never how it is measured.

On a CPU, bfloat16 products are fast only with AVX512-BF16 (or AMX) instructions; without them
oneDNN emulates them, slower than float32, so ``"bf16"`` is refused there with an error naming
the missing instructions. On CUDA it needs a device that supports bfloat16 (compute capability 8.0).

Having the instructions is not enough for bfloat16 to pay: at the MNIST VAE's shapes oneDNN's
AVX512-BF16 kernel ran the step's products in 0.8x float32's time on an AMD EPYC and in 1.8x on an
Intel Xeon, where MKL's float32 sgemm is the faster kernel (issue #46). So a CPU run in bf16
measures both once on its machine (:func:`pyrovae.fast.machine_choices.bf16_timing`, cached) and
warns with the figures (:class:`PrecisionWarning`) where bfloat16 is the slower; it trains in
bf16 all the same, as asked.
"""

import contextlib
import functools
import warnings
from typing import Optional

import torch

from .machine_choices import bf16_timing, choices_path, cpuinfo, processor_name

__all__ = ["PRECISIONS", "PrecisionWarning", "cpu_bf16_instructions", "check_precision", "warn_if_bf16_is_slower",
           "autocast"]

PRECISIONS = ("fp32", "bf16")
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=None)
def cpu_bf16_instructions() -> tuple:
    """The bfloat16 instruction sets this CPU reports (Linux's /proc/cpuinfo flags), or ()."""
    flags = set(cpuinfo().get("flags", "").split())
    return tuple(flag for flag in _CPU_BF16_FLAGS if flag in flags)


def check_precision(precision: str, device) -> None:
    """Raises ValueError for an unknown precision, or bf16 where ``device`` lacks bfloat16 arithmetic."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    if precision == "fp32":
        return
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            raise ValueError(f"precision='bf16' needs a GPU with bfloat16 arithmetic (compute capability 8.0 or "
                             f"later); {torch.cuda.get_device_name(device)} has none: use precision='fp32'")
        return
    if device.type != "cpu":
        raise ValueError(f"precision='bf16' runs on CPU or CUDA; got device {device.type!r}")
    if not cpu_bf16_instructions():
        raise ValueError("precision='bf16' needs a CPU with bfloat16 instructions (AVX512-BF16 or AMX-BF16), which "
                         "this one does not report in /proc/cpuinfo; without them bfloat16 products are emulated, "
                         "slower than float32: use precision='fp32'")


class PrecisionWarning(UserWarning):
    """``precision="bf16"`` measured slower than float32 on this machine."""


def warn_if_bf16_is_slower(layers, batch_size: int, device) -> Optional[dict]:
    """On CPU, the measured timing of bf16 against fp32 for linear layers of these (in, out)
    shapes at ``batch_size`` rows (:func:`~pyrovae.fast.machine_choices.bf16_timing`), with a
    :class:`PrecisionWarning` where bf16 is the slower; None off the CPU or without linear layers."""
    if torch.device(device).type != "cpu" or not layers:
        return None
    timing = bf16_timing(layers, batch_size)
    if timing["bf16_ms"] > timing["fp32_ms"]:
        warnings.warn(
            f"precision='bf16' is slower than float32 on this processor ({processor_name()}): the forward and "
            f"backward products of this model's linear layers at batches of {batch_size} took "
            f"{timing['bf16_ms']:.2f} ms in bfloat16 against {timing['fp32_ms']:.2f} ms in float32 (measured once, "
            f"kept in {choices_path()}). Training in bf16 as asked; precision='fp32' trains faster here.",
            PrecisionWarning, stacklevel=3)
    return timing


def autocast(precision: str, device):
    """A fresh context in which a training step runs at ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
