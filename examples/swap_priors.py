"""The same MNIST model trained with four priors for the same budget; a table of test ELBO and
importance-sampled log-likelihood.

    PYROVAE_DATA=../shared/data python examples/swap_priors.py --epochs 10
"""

import argparse
import time
import warnings

import torch

import pyrovae
from smoke import budget, shrink

PRIORS = {
    "normal": "normal",
    "mixture": {"kind": "mixture", "components": 10},
    "vamp": {"kind": "vamp", "components": 100},
    "flow": {"kind": "flow", "depth": 2},
}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--latent-dim", type=int, default=20)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--test-examples", type=int, default=2000)
    args = parser.parse_args()
    train = shrink(pyrovae.datasets.load("mnist", split="train"))
    test = shrink(pyrovae.datasets.load("mnist", split="test"), 200)
    x = pyrovae.datasets.binarize(test.data[: args.test_examples], "dynamic", generator=torch.Generator().manual_seed(0))
    args.epochs, args.num_samples = budget(args.epochs, 1), budget(args.num_samples, 20)
    rows = []
    for name, prior in PRIORS.items():
        torch.manual_seed(0)
        vae = pyrovae.VAE((1, 28, 28), latent_dim=args.latent_dim, hidden=(400,), prior=prior)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*no closed form.*")  # said once in the table below
            pyrovae.fit(vae, train, epochs=args.epochs, loss="trace", progress=False, seed=0)
        seconds = time.perf_counter() - start
        elbo = pyrovae.elbo(vae, x, num_particles=10, seed=1).mean().item()
        ll, se = pyrovae.log_likelihood(vae, x, num_samples=args.num_samples, return_stderr=True, seed=0)
        rows.append((name, elbo, ll.mean().item(), (se.pow(2).sum().sqrt() / len(x)).item(), seconds))
        print(f"{name}: done in {seconds:.0f} s", flush=True)
    print(f"\nMNIST, 784-400-{args.latent_dim} MLP, Bernoulli likelihood, loss='trace' (Monte Carlo KL for every prior), "
          f"{args.epochs} epochs; {len(x)} test images, K={args.num_samples}")
    print("| prior | test ELBO | test log p(x) (IS) | MC error | train seconds |\n| --- | --- | --- | --- | --- |")
    for name, elbo, ll, se, seconds in rows:
        print(f"| {name} | {elbo:.2f} | {ll:.2f} | {se:.3f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
