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

__all__ = ["Context", "setup", "single_process", "all_reduce_sum", "agree", "gather_rows", "log_likelihood"]

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


def single_process(device):
    return Context(0, 1, device)


def setup(device="auto", timeout_seconds=None):
    """A Context from the environment ``torchrun`` sets (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``), initializing the process group once;
    ``Context(0, 1, device)`` outside torchrun."""
    from .train import resolve_device

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return single_process(resolve_device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    resolved = resolve_device(device)
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


def gather_rows(context, tensor):
    """Concatenates each rank's rows in rank order (tensors may differ in length)."""
    if not context.enabled:
        return tensor
    pieces = [None] * context.world_size
    dist.all_gather_object(pieces, tensor.cpu())
    return torch.cat(pieces).to(tensor.device)


def log_likelihood(context, vae, x, num_samples, batch_size=1000, seed=0, progress=False):
    """Importance-sampled log p(x) with example batches dealt round-robin to the ranks and
    gathered in order; each batch is seeded by its position, so the numbers equal one process's.
    Returns (estimate, stderr) on every rank."""
    from .evaluation import log_likelihood as estimate

    mine = []
    for index, start in enumerate(range(0, len(x), batch_size)):
        if index % context.world_size == context.rank:
            ll, se = estimate(vae, x[start:start + batch_size], num_samples, batch_size=batch_size, return_stderr=True,
                              seed=seed, example_offset=start, progress=progress and context.is_main)
            mine.append((start, ll.cpu(), se.cpu()))
    if context.enabled:
        pieces = [None] * context.world_size
        dist.all_gather_object(pieces, mine)
        mine = [piece for rank_pieces in pieces for piece in rank_pieces]
    mine.sort(key=lambda piece: piece[0])
    return torch.cat([p[1] for p in mine]).to(x.device), torch.cat([p[2] for p in mine]).to(x.device)
