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
"""

import contextlib
import functools
from pathlib import Path

import torch

__all__ = ["PRECISIONS", "cpu_bf16_instructions", "check_precision", "autocast"]

PRECISIONS = ("fp32", "bf16")
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=None)
def cpu_bf16_instructions() -> tuple:
    """The bfloat16 instruction sets this CPU reports (Linux's /proc/cpuinfo flags), or ()."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
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


def autocast(precision: str, device):
    """A fresh context in which a training step runs at ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
