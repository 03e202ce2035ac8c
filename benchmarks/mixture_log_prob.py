"""The mixture priors' log density two ways, side by side in one process: Pyro's
``MixtureSameFamily(Categorical, Normal(...).to_event(1))`` (an (N, K, D) tensor, what the
``mixture`` and ``vamp`` priors returned before) against ``pyrovae.distributions.DiagonalNormalMixture``
(two (N, D) x (D, K) float64 products). Two measurements: log p(z) alone at the VampPrior's size
(500 components, 40 dimensions) with its gradient, and the importance-sampled log p(x) (K = 200
on 1000 static-MNIST test images) of the gated VampPrior VAE of ``configs/static-mnist-vamp.toml``.

    PYROVAE_DATA=../shared/data python benchmarks/mixture_log_prob.py

Writes benchmarks/results-mixture-log-prob-cpu.json. Run it alone: nothing else on the cores.
"""

import json
import statistics
import sys
import time
from pathlib import Path

import pyro.distributions as dist
import torch

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from pyrovae import config as cfg  # noqa: E402
from pyrovae import estimate, priors, runs  # noqa: E402
from pyrovae.distributions import DiagonalNormalMixture  # noqa: E402


def torch_mixture(logits, locs, scales):
    return dist.MixtureSameFamily(dist.Categorical(logits=logits), dist.Normal(locs, scales).to_event(1))


def timed(function, repeats):
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        value = function()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), value


def log_prob_alone(make, num_points, repeats=5):
    g = torch.Generator().manual_seed(0)
    logits = torch.zeros(500, requires_grad=True)
    locs = torch.randn(500, 40, generator=g).requires_grad_()
    scales = (0.05 + torch.rand(500, 40, generator=g)).requires_grad_()
    z = torch.randn(num_points, 40, generator=g).requires_grad_()

    def run():
        value = make(logits, locs, scales).log_prob(z)
        torch.autograd.grad(value.sum(), [z, locs, scales])
        return value.detach()

    return timed(run, repeats)


def main():
    results = {"machine": machine(), "log_prob_with_gradient": {}, "estimator": {}}
    for points in (100, 2500):
        old, old_value = log_prob_alone(torch_mixture, points)
        new, new_value = log_prob_alone(DiagonalNormalMixture, points)
        results["log_prob_with_gradient"][str(points)] = {
            "MixtureSameFamily_ms": old * 1e3, "DiagonalNormalMixture_ms": new * 1e3, "ratio": new / old,
            "max_abs_difference": float((old_value - new_value).abs().max())}
        print(points, "points:", results["log_prob_with_gradient"][str(points)], flush=True)

    config = cfg.validate(cfg.load_toml(ROOT / "configs" / "static-mnist-vamp.toml"))
    torch.manual_seed(0)
    train, _ = runs.load_train_valid(config)
    vae = runs.build_model(config, train)
    x = runs._load_test(config).data[::10]
    built_in = priors.VampPrior.forward

    def torch_forward(prior):  # the same parameters, in the (N, K, D) form
        mixture = built_in(prior)
        return torch_mixture(mixture.logits, mixture.locs, mixture.scales)

    seconds = {}
    try:
        for name, forward in (("MixtureSameFamily", torch_forward), ("DiagonalNormalMixture", built_in)):
            priors.VampPrior.forward = forward
            seconds[name], value = timed(lambda: estimate.log_likelihood(vae, x, num_samples=200, seed=0), 1)
            results["estimator"][f"{name}_s"] = seconds[name]
            results["estimator"][f"{name}_log_likelihood"] = float(value.mean())
    finally:
        priors.VampPrior.forward = built_in
    results["estimator"]["ratio"] = seconds["DiagonalNormalMixture"] / seconds["MixtureSameFamily"]
    print("K = 200 on 1000 images:", results["estimator"], flush=True)
    out = Path(__file__).parent / "results-mixture-log-prob-cpu.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
