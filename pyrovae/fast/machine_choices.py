"""Kernel choices measured on this machine, made once and kept in the user's cache.

Which kernel computes a product fastest depends on the processor, not on the model alone. At the
MNIST VAE's layer shapes (a batch of 128; layers of 784, 400 and 50 units) the three products of
a linear layer's training step, y = x W^T + b, g W and g^T x, ran

- on oneDNN's inner product about 1.8x faster than on MKL's sgemm on a 2-vCPU AMD EPYC (where MKL
  does not take its fastest code path), and 1.4x *slower* on a 2-vCPU Intel Xeon (where MKL does);
- in bfloat16 (oneDNN's AVX512-BF16 kernel, the weights rounded each step) in 0.8x float32's time
  on the AMD, and in 1.8x on the Intel (docs/benchmarks.md, issue #46).

So where a choice matters it is measured: the first time a run needs it, a short timing of both
candidates at the run's own shapes (a fraction of a second), interleaved and repeated, the median
kept; recorded in ``machine-choices.json`` in the user's cache folder (:mod:`pyrovae.user_cache`)
under the processor's name, torch's version and the number of threads, and read from there by every
later run. A different processor, torch or thread count is another machine: measured again. The
file is a cache: a damaged or unreadable one is measured anew and rewritten (atomically), and a
folder that cannot be written costs the measurement again next time, nothing more.
"""

import datetime
import functools
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from ..atomic_files import atomic_write_text
from ..user_cache import cache_dir
from .kernels import available as onednn_available
from .kernels import linear_products

__all__ = ["FILE_NAME", "choices_path", "cpuinfo", "processor_name", "machine", "machine_key", "lookup", "record", "recorded", "layer_shapes",
           "linear_kernel", "bf16_timing"]

FILE_NAME = "machine-choices.json"
FORMAT = 1
# oneDNN is taken only where it is this much faster: a near tie keeps PyTorch's own kernel
ONEDNN_MARGIN = 0.95
ROUNDS, CALLS = 7, 5


def choices_path() -> Path:
    return cache_dir() / FILE_NAME


@functools.lru_cache(maxsize=None)
def cpuinfo() -> Dict[str, str]:
    """The first processor's fields in Linux's /proc/cpuinfo (``"model name"``, ``"flags"``, ...),
    or {} where there is no such file."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def processor_name() -> str:
    """The processor's model name (Linux's /proc/cpuinfo), else what ``platform`` says."""
    return cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown processor"


def machine() -> Dict:
    """What makes two runs' measurements comparable: processor, torch's version, threads."""
    return {"processor": processor_name(), "torch": torch.__version__, "threads": torch.get_num_threads()}


def machine_key() -> str:
    description = machine()
    return f"{description['processor']} | torch {description['torch']} | {description['threads']} threads"


def _read() -> Dict:
    try:
        data = json.loads(choices_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("format") == FORMAT else {}


def _write(data: Dict) -> None:
    try:
        atomic_write_text(choices_path(), json.dumps(data, indent=1, sort_keys=True) + "\n")
    except OSError:  # a read-only home: measured again next time, nothing else lost
        pass


def lookup(name: str) -> Optional[Dict]:
    """The record ``name`` of this machine in the cache file, or None."""
    record = _read().get("machines", {}).get(machine_key(), {}).get("choices", {}).get(name)
    return record if isinstance(record, dict) else None


def record(name: str, values: Dict) -> Dict:
    """Keeps ``values`` (stamped with the time) as this machine's record ``name``, replacing any."""
    values = dict(values, measured_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    data = _read() or {"format": FORMAT}  # read again: another process may have added its own records
    machines = data.setdefault("machines", {})
    machines.setdefault(machine_key(), dict(machine(), choices={})).setdefault("choices", {})[name] = values
    _write(data)
    return values


def recorded(name: str, measure: Callable[[], Dict]) -> Dict:
    """The record of choice ``name`` on this machine: read from the cache file, or made by
    ``measure()`` (a dict) and added to it."""
    found = lookup(name)
    return found if found is not None else record(name, measure())


def layer_shapes(module: nn.Module) -> Tuple[Tuple[int, int], ...]:
    """(in, out) of each ``nn.Linear`` in ``module``, in order."""
    return tuple((layer.in_features, layer.out_features) for layer in module.modules() if isinstance(layer, nn.Linear))


def _median_seconds(candidates: Dict[str, Callable[[], None]]) -> Dict[str, float]:
    """Each candidate's median time a call, from ROUNDS interleaved rounds of CALLS calls (after
    one warm-up call each: oneDNN builds its primitives on the first)."""
    for run in candidates.values():
        run()
    times = {name: [] for name in candidates}
    for _ in range(ROUNDS):
        for name, run in candidates.items():
            started = time.perf_counter()
            for _ in range(CALLS):
                run()
            times[name].append((time.perf_counter() - started) / CALLS)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def _layers_tensors(layers, batch):
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(batch, n_in, generator=generator), torch.randn(n_out, n_in, generator=generator) * 0.05,
             torch.randn(n_out, generator=generator), torch.randn(batch, n_out, generator=generator))
            for n_in, n_out in layers]


def _shapes_name(layers, batch) -> str:
    return f"batch {batch}: " + ", ".join(f"{n_in}->{n_out}" for n_in, n_out in layers)


def linear_kernel(layers: Sequence[Tuple[int, int]], batch: int) -> str:
    """``"onednn"`` or ``"aten"``: the faster kernel on this machine for the products of linear
    layers of these (in, out) shapes on batches of ``batch`` rows (float32, CPU), measured once
    (:func:`recorded`); ``"aten"`` where this PyTorch has no oneDNN linear kernel."""
    layers = tuple((int(n_in), int(n_out)) for n_in, n_out in layers)
    if not layers or not onednn_available():
        return "aten"

    def measure():
        tensors = _layers_tensors(layers, batch)
        with torch.no_grad():
            seconds = _median_seconds({kernel: functools.partial(_all_products, kernel, tensors)
                                       for kernel in ("onednn", "aten")})
        faster = "onednn" if seconds["onednn"] < ONEDNN_MARGIN * seconds["aten"] else "aten"
        return {"choice": faster, "onednn_ms": round(seconds["onednn"] * 1e3, 4),
                "aten_ms": round(seconds["aten"] * 1e3, 4)}

    return recorded(f"linear kernel, {_shapes_name(layers, batch)}", measure)["choice"]


def _all_products(kernel, tensors):
    for x, weight, bias, grad in tensors:
        linear_products(kernel, x, weight, bias, grad)


def bf16_timing(layers: Sequence[Tuple[int, int]], batch: int) -> Dict:
    """``{"bf16_ms", "fp32_ms"}``: the median time of a forward and backward pass through linear
    layers of these shapes on CPU, under ``torch.autocast(dtype=torch.bfloat16)`` (as
    ``precision="bf16"`` trains: the weights rounded to bfloat16 each step) and in float32 on
    PyTorch's own kernels, measured once on this machine (:func:`recorded`)."""
    layers = tuple((int(n_in), int(n_out)) for n_in, n_out in layers)

    def measure():
        tensors = [(x.requires_grad_(), weight.requires_grad_(), bias.requires_grad_(), grad)
                   for x, weight, bias, grad in _layers_tensors(layers, batch)]

        def passes(bf16):
            for x, weight, bias, grad in tensors:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    y = nn.functional.linear(x, weight, bias)
                y.backward(grad.to(y.dtype))
                x.grad = weight.grad = bias.grad = None

        seconds = _median_seconds({"bf16": functools.partial(passes, True), "fp32": functools.partial(passes, False)})
        return {"bf16_ms": round(seconds["bf16"] * 1e3, 4), "fp32_ms": round(seconds["fp32"] * 1e3, 4)}

    return recorded(f"bf16 against fp32, {_shapes_name(layers, batch)}", measure)
