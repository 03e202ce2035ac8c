"""Importance-sampled log p(x) over the processes of a ``torchrun`` job (:mod:`pyrovae.distributed`
holds their context): the examples dealt to the ranks in blocks, each block estimated by
:func:`pyrovae.estimate.importance.log_likelihood` seeded by its position, the pieces gathered in
order, so the numbers equal one process's."""

import torch
import torch.distributed as dist

from ..infer.psis import ImportanceDiagnostics
from .importance import log_likelihood as estimate

__all__ = ["log_likelihood"]


def log_likelihood(context, vae, x, num_samples, block_size=1024, batch_size=None, seed=0, progress=False, labels=None,
                   return_diagnostics=False):
    """Importance-sampled log p(x) with blocks of ``block_size`` examples dealt round-robin to the
    ranks and gathered in order; each batch is seeded by its position (``block_size`` a multiple of
    the batch), so the numbers equal one process's. Returns (estimate, stderr) on every rank, and
    the :class:`~pyrovae.infer.psis.ImportanceDiagnostics` with ``return_diagnostics``."""
    mine = []
    for index, start in enumerate(range(0, len(x), block_size)):
        if index % context.world_size == context.rank:
            out = estimate(vae, x[start:start + block_size], num_samples, batch_size=batch_size, return_stderr=True,
                           seed=seed, example_offset=start, progress=progress and context.is_main,
                           labels=None if labels is None else labels[start:start + block_size],
                           return_diagnostics=return_diagnostics)
            extra = (out[2].pareto_k.cpu(), out[2].ess.cpu()) if return_diagnostics else ()
            mine.append((start, out[0].cpu(), out[1].cpu(), *extra))
    if context.enabled:
        pieces = [None] * context.world_size
        dist.all_gather_object(pieces, mine)
        mine = [piece for rank_pieces in pieces for piece in rank_pieces]
    mine.sort(key=lambda piece: piece[0])
    gathered = [torch.cat([p[i] for p in mine]).to(x.device) for i in range(1, len(mine[0]))]
    if not return_diagnostics:
        return gathered[0], gathered[1]
    return gathered[0], gathered[1], ImportanceDiagnostics(gathered[2], gathered[3], num_samples)
