"""The table from ``--method`` to estimator and ``evaluation.json`` entry: importance sampling
with its PSIS diagnostics (always run), annealed importance sampling, and the BDMC sandwich.
Each summary takes the model in any of the protocol's forms (:mod:`pyrovae.protocol`)."""

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from ..program import Program
from ..atomic_files import atomic_write
from ..protocol import family
from .ais import ais_log_likelihood, bdmc
from .distributed import log_likelihood as distributed_log_likelihood
from .importance import check_bounds, elbo, log_likelihood

__all__ = ["Method", "METHODS", "ais_summary", "bdmc_summary", "evaluate_examples", "ImportanceSamplingWarning"]


class ImportanceSamplingWarning(UserWarning):
    """Some examples' importance weights have a Pareto k above 0.7."""


@dataclass(frozen=True)
class Method:
    """An estimator of log p(x): the function that estimates it per example, the function that
    writes its entry of ``evaluation.json`` (None: the importance-sampling entries every
    evaluation has), and a line of help."""

    estimate: Callable
    summary: Optional[Callable]
    help: str


def _ais_per_example(program, x, labels, **options):
    """AIS log p(x_n) per example through the model's own model and guide; for a model that sums
    a discrete label out (m2), AIS over z given each class, and log p(x) = logsumexp_y log p(x, y)
    (p(y) inside the model's observed y site). Returns (estimate, chain sd, acceptance), each (N,)."""
    members = family(program)
    if members.semi_supervised:
        per_class = [ais_log_likelihood(program.model, program.guide, x,
                                        torch.full((len(x),), c, device=x.device), **options)
                     for c in range(program.num_classes)]
        stacked = torch.stack([r.log_likelihood for r in per_class])
        return (torch.logsumexp(stacked, 0), torch.stack([r.chain_sd for r in per_class]).amax(0),
                torch.stack([r.acceptance for r in per_class]).mean(0))
    result = ais_log_likelihood(program.model, program.guide, x, *(() if labels is None else (labels,)), **options)
    return result.log_likelihood, result.chain_sd, result.acceptance


# Examples of one AIS block: each block draws from its own seed (seed + its first index) and, with a
# folder for the pieces, is written there atomically as it finishes.
AIS_BLOCK_EXAMPLES = 100


def _read_piece(path):
    try:
        piece = torch.load(path, weights_only=True)
    except Exception:  # noqa: BLE001 (a piece cut short by a kill before its rename cannot be; any other damage: redo it)
        return None
    return piece if isinstance(piece, dict) and {"estimate", "chain_sd", "acceptance"} <= set(piece) else None


def ais_summary(program, x, labels, num_chains, num_steps, num_leapfrog, seed, num_samples=None,
                pieces: Optional[Path] = None):
    """``evaluation.json``'s ``ais`` entry: the AIS estimate of the set's mean log p(x), its
    spread, the acceptance, the wall-clock. The examples run in blocks of
    :data:`AIS_BLOCK_EXAMPLES`, each seeded by its position; with a folder ``pieces`` each finished
    block is written there atomically and read back by a later call with the same folder, so an
    evaluation killed after hours continues where it stopped, with the same numbers."""
    started = time.perf_counter()
    blocks, reused = [], 0
    for start in range(0, len(x), AIS_BLOCK_EXAMPLES):
        stop = min(start + AIS_BLOCK_EXAMPLES, len(x))
        path = None if pieces is None else Path(pieces) / f"block-{start:08d}-{stop:08d}.pt"
        block = _read_piece(path) if path is not None and path.is_file() else None
        if block is None:
            estimate, chain_sd, acceptance = _ais_per_example(
                program, x[start:stop], None if labels is None else labels[start:stop], num_chains=num_chains,
                num_steps=num_steps, num_leapfrog=num_leapfrog, seed=seed + start)
            block = {"estimate": estimate.detach().cpu(), "chain_sd": chain_sd.detach().cpu(),
                     "acceptance": acceptance.detach().cpu()}
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, lambda f: torch.save(block, f))
        else:
            reused += 1
        blocks.append(block)
    estimate, chain_sd, acceptance = (torch.cat([b[key] for b in blocks])
                                      for key in ("estimate", "chain_sd", "acceptance"))
    estimate = estimate.double()
    return {"log_likelihood": float(estimate.mean()),
            "stderr": float(estimate.std() / math.sqrt(len(x))) if len(x) > 1 else 0.0,
            "chain_sd_median": float(chain_sd.double().median()), "acceptance": float(acceptance.double().mean()),
            "num_chains": num_chains, "num_steps": num_steps, "num_leapfrog": num_leapfrog,
            "seconds": time.perf_counter() - started, "blocks": len(blocks), "blocks_read_back": reused}


def _simulated(program, x, args):
    """(simulated x, the exact posterior draw that made it): every site of the model drawn, under
    ``poutine.uncondition``, with the data's shape; the model's one observed site must score x."""
    if isinstance(program, Program):
        observed = program.prepare(x, args)[3].observed
    else:
        observed = ["x"]
    if len(observed) != 1:
        raise ValueError(f"BDMC simulates the data from the model: it needs one observed site scoring x; this model "
                         f"has {observed}")
    trace = poutine.trace(poutine.uncondition(program.model)).get_trace(x, *args)
    simulated_x = trace.nodes[observed[0]]["value"].detach()
    if simulated_x.numel() != x.numel():
        raise ValueError(f"BDMC simulates the data from the model: its observed site {observed[0]!r} must score the "
                         f"first argument x (shape {tuple(x.shape)}); it holds {tuple(simulated_x.shape)}")
    latents = {name: site["value"] for name, site in trace.nodes.items()
               if site["type"] == "sample" and not site_is_subsample(site) and name != observed[0]}
    return simulated_x.reshape(x.shape), latents


def bdmc_summary(program, x, labels, num_chains, num_steps, num_leapfrog, seed, num_samples, pieces=None):
    """``evaluation.json``'s ``bdmc`` entry: as many examples as ``x`` simulated from the model
    ((z, x) ~ p, the data's shape), the BDMC lower and upper bounds of their log p(x), the gap,
    and the importance-sampled estimate on the same simulated data, so the gap says how far the
    estimators are from the truth on data like the model's own."""
    if family(program).semi_supervised:
        raise ValueError("--method bdmc needs a model whose latents are all continuous; m2's y is discrete (use "
                         "--method ais, which sums y exactly)")
    started = time.perf_counter()
    args = () if labels is None else (labels,)
    with torch.no_grad(), torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed + 3)
        sim_x, simulated = _simulated(program, x, args)
    result = bdmc(program.model, program.guide, sim_x, simulated, *args, num_chains=num_chains, num_steps=num_steps,
                  num_leapfrog=num_leapfrog, seed=seed)
    is_estimate, _, diagnostics = log_likelihood(program, sim_x, num_samples, seed=seed, return_stderr=True,
                                                 return_diagnostics=True, labels=labels)
    lower, upper = result.lower.double(), result.upper.double()
    return {"examples": len(x), "lower": float(lower.mean()), "upper": float(upper.mean()),
            "gap": float((upper - lower).mean()), "gap_median": float((upper - lower).median()),
            "importance_sampling": float(is_estimate.double().mean()),
            "importance_sampling_below_lower": float((lower - is_estimate.double()).mean()),
            "pareto_k_above_0.7_share": diagnostics.summary()["pareto_k_above_0.7_share"],
            "num_chains": num_chains, "num_steps": num_steps, "num_leapfrog": num_leapfrog,
            "seconds": time.perf_counter() - started}


METHODS = {
    "is": Method(log_likelihood, None, "importance sampling with q(z|x) and its Pareto k diagnostics (always run)"),
    "ais": Method(ais_log_likelihood, ais_summary, "also annealed importance sampling (HMC)"),
    "bdmc": Method(bdmc, bdmc_summary, "also the BDMC sandwich on data simulated from the model"),
}


def evaluate_examples(context, program, x, labels, num_samples, seeds: Sequence[int], progress=False, ks=None,
                      check_examples=200):
    """The importance-sampling entries of ``evaluation.json`` for examples ``x`` (any form of
    model), and the :class:`~pyrovae.estimate.importance.BoundCheck` behind them: log p(x) with
    its standard error and PSIS diagnostics (one estimate per seed of ``seeds``: their mean and
    sd), the ELBO, the bound ordering checked on the first ``check_examples`` examples, and the
    IS estimate checked against the ELBO of the same examples. ``context`` deals the examples to
    the processes (:mod:`pyrovae.distributed`); ranks other than 0 get ``(None, None)``."""
    ll, se, diagnostics = distributed_log_likelihood(context, program, x, num_samples, seed=seeds[0],
                                                     progress=progress, labels=labels, return_diagnostics=True)
    repeated = [float(ll.double().mean())]
    for seed in seeds[1:]:
        again, _ = distributed_log_likelihood(context, program, x, num_samples, seed=seed, progress=progress,
                                              labels=labels)
        repeated.append(float(again.double().mean()))
    if not context.is_main:
        return None, None
    seed = seeds[0]
    elbo_values = elbo(program, x, num_particles=10, seed=seed + 1, labels=labels)
    ks = ks or sorted({1, 10, 100, num_samples} | ({1000} if num_samples >= 1000 else set()))
    # the ordering check on a subset: it needs replicated draws for every k, through traces
    subset = x[: min(len(x), check_examples)]
    check = check_bounds(program, subset, ks=[k for k in ks if k <= num_samples], samples_per_k=2000, seed=seed,
                         labels=None if labels is None else labels[:len(subset)])
    mean_ll, mean_elbo = sum(repeated) / len(repeated), float(elbo_values.double().mean())
    # the IS estimate below the ELBO of the same examples, beyond the paired error, is a violation too
    gap = (ll.to(elbo_values.device) - elbo_values).double()
    below = float(gap.mean()) < -4 * float(gap.std()) / math.sqrt(len(x)) - 1e-3 if len(x) > 1 else float(gap[0]) < -1e-3
    result = {
        "num_examples": len(x),
        "num_samples": num_samples,
        "log_likelihood": mean_ll,
        "log_likelihood_stderr": float((se.double() ** 2).sum().sqrt() / len(x)),
        "log_likelihood_sd": float(torch.tensor(repeated, dtype=torch.float64).std()) if len(seeds) > 1 else None,
        "repeats": repeated,
        "nll": -mean_ll,
        "elbo": mean_elbo,
        "jensen_gap": mean_ll - mean_elbo,
        "bits_per_dim": -mean_ll / (x[0].numel() * math.log(2)),
        "bound_check": "violated" if not check.ok or below else "ok",
        "bounds": {**check.as_dict(), "examples": len(subset)},
        "importance_diagnostics": diagnostics.summary(),
    }
    flagged = result["importance_diagnostics"]["pareto_k_above_0.7"]
    if flagged:
        warnings.warn(f"{flagged} of {len(x)} examples have a Pareto k above 0.7 (worst "
                      f"{result['importance_diagnostics']['pareto_k_max']:.2f}): their importance-sampled log p(x) is "
                      "not to be trusted (q(z|x) too narrow for the posterior); more samples help slowly, AIS "
                      "(--method ais) more", ImportanceSamplingWarning, stacklevel=3)
    return result, check
