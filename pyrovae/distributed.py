"""Data parallelism with ``torch.distributed``, as ``torchrun`` sets it up.

Under ``torchrun --nproc_per_node=N -m pyrovae train ...`` (``WORLD_SIZE > 1`` in the
environment) every process holds the data in memory, takes the rank-strided slice of each global
minibatch, and trains one model through ``DistributedDataParallel`` (NCCL on CUDA, gloo on CPU).
Every collective is bounded by a timeout, and a failure on one rank is shared with the others
before training starts, so a bad shard stops the job with its error rather than hanging it.
"""

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ._deprecated import moved_module_getattr

__all__ = ["Context", "process_context", "resolve_device", "all_reduce_sum", "agree"]

DEFAULT_TIMEOUT_SECONDS = 300


@dataclass
class Context:
    """Where this process stands: ``rank`` of ``world_size``, its ``device``."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0

    def shard(self, indices):
        """This rank's rows of a global minibatch: every world_size-th, starting at its rank."""
        return indices[self.rank::self.world_size]


def resolve_device(device):
    """``"auto"`` (or None) -> CUDA where available, else the CPU; a CUDA device asked for where
    there is none is a clear error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"unknown device {device!r}: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but CUDA is not available here; use device='cpu'")
    return device


def process_context(device="auto", timeout_seconds=None):
    """This process's :class:`Context`, the one place that answers "one process or several?":
    from the environment ``torchrun`` sets (``WORLD_SIZE > 1``: ``RANK``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``MASTER_PORT``), initializing the process group once; otherwise a single
    process on ``device``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    resolved = resolve_device(device)
    if world_size <= 1:
        return Context(0, 1, resolved)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if resolved.type == "cuda":
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        seconds = timeout_seconds or float(os.environ.get("PYROVAE_DIST_TIMEOUT", DEFAULT_TIMEOUT_SECONDS))
        dist.init_process_group(
            backend="nccl" if resolved.type == "cuda" else "gloo",
            timeout=datetime.timedelta(seconds=seconds),
            **({"device_id": resolved} if resolved.type == "cuda" else {}),
        )
    return Context(dist.get_rank(), dist.get_world_size(), resolved)


def all_reduce_sum(context, tensor):
    """The sum over ranks (the tensor itself outside distributed runs)."""
    if context.enabled:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def agree(context, error):
    """Every rank learns whether any rank failed; all raise, naming the failed ranks' errors."""
    if not context.enabled:
        if error is not None:
            raise error
        return
    messages = [None] * context.world_size
    dist.all_gather_object(messages, None if error is None else f"{type(error).__name__}: {error}")
    failed = [(rank, message) for rank, message in enumerate(messages) if message is not None]
    if failed:
        if error is not None:
            raise error
        raise RuntimeError("stopping: " + "; ".join(f"rank {rank} failed: {message}" for rank, message in failed))


# log_likelihood, the estimator over the processes, lived here until 0.4: pyrovae.estimate.distributed
__getattr__ = moved_module_getattr(__name__, None, {"log_likelihood": "pyrovae.estimate.distributed"})
