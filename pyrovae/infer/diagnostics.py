r"""Gradient diagnostics: the signal-to-noise ratio of an ELBO's gradient estimator.

For one example x and a gradient estimator g (a random vector: one draw of the K particles),
Rainforth et al. (2018) define, per parameter coordinate,

.. math:: \mathrm{SNR} = |\mathbb{E}[g]| / \mathrm{sd}(g).

The standard IWAE estimator's SNR for the guide's parameters falls like 1/sqrt(K) while the model's
rises like sqrt(K); DReG's (Tucker et al. 2018) rises for both.
"""

from dataclasses import dataclass
from typing import Dict, Sequence

import pyro
import torch

__all__ = ["GradientMoments", "gradient_moments"]


@dataclass
class GradientMoments:
    """Per-coordinate mean and standard deviation of one draw of a gradient estimator, for each
    named group of parameters, over ``num_draws`` draws."""

    mean: Dict[str, torch.Tensor]
    std: Dict[str, torch.Tensor]
    num_draws: int

    def stderr(self, group):
        """The Monte Carlo error of ``mean[group]``."""
        return self.std[group] / self.num_draws ** 0.5

    def snr(self, group):
        r""":math:`|\mathbb{E} g| / \mathrm{sd}(g)` for each coordinate of the group that varies at all (a coordinate whose
        gradient is always exactly zero, such as a weight on a pixel that is 0, has no SNR)."""
        varies = self.std[group] > 0
        return self.mean[group][varies].abs() / self.std[group][varies]


def gradient_moments(elbo, model, guide, x, groups: Dict[str, Sequence[torch.nn.Parameter]], num_draws=2000,
                     draws_per_pass=100, seed=0) -> GradientMoments:
    """Moments of the gradient of ``elbo.differentiable_loss(model, guide, x_1)`` for the one example
    ``x`` (shape ``(1, ...)``), from ``num_draws`` independent draws.

    Draws are taken ``draws_per_pass`` at a time as a batch of copies of ``x``: the gradient of the
    batch's loss is the sum of that many independent single-example gradients, so passes give
    independent means of ``draws_per_pass`` draws, whose spread times sqrt(draws_per_pass) is the
    spread of one draw."""
    if x.shape[0] != 1:
        raise ValueError(f"gradient_moments takes one example, shape (1, ...); got {tuple(x.shape)}")
    if num_draws % draws_per_pass:
        raise ValueError(f"num_draws ({num_draws}) must be a multiple of draws_per_pass ({draws_per_pass})")
    batch = x.expand(draws_per_pass, *x.shape[1:])
    passes = {name: [] for name in groups}
    pyro.set_rng_seed(seed)
    for _ in range(num_draws // draws_per_pass):
        parameters = [p for group in groups.values() for p in group]
        for p in parameters:
            p.grad = None
        elbo.differentiable_loss(model, guide, batch).backward()
        for name, group in groups.items():
            passes[name].append(torch.cat([
                (torch.zeros_like(p) if p.grad is None else p.grad).flatten() for p in group
            ]) / draws_per_pass)
    mean, std = {}, {}
    for name, rows in passes.items():
        rows = torch.stack(rows).double()
        mean[name] = rows.mean(0)
        std[name] = rows.std(0) * draws_per_pass ** 0.5
    return GradientMoments(mean, std, num_draws)
