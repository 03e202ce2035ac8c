"""Burda et al.'s two stochastic layers (x -> 200-200 -> z1 (100) -> 100-100 -> z2 (50), tanh),
trained with the IWAE bound and evaluated by importance sampling over both layers.

    PYROVAE_DATA=../shared/data python examples/two_layer_vae.py --epochs 20 --num-particles 5
"""

import argparse

import torch
from smoke import budget, shrink

import pyrovae
from pyrovae import plots
from pyrovae.models import HVAE


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--num-particles", type=int, default=5)
    parser.add_argument("--num-samples", type=int, default=1000)
    args = parser.parse_args()
    train = shrink(pyrovae.datasets.load("mnist", split="train"))
    test = shrink(pyrovae.datasets.load("mnist", split="test"), 200)
    x = pyrovae.datasets.binarize(test.data[:2000], "dynamic", generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    hvae = HVAE((1, 28, 28), latent_dim=50, hidden=(200, 200), middle_dim=100, middle_hidden=(100, 100),
                activation="tanh")
    history = pyrovae.fit(hvae, train, epochs=budget(args.epochs, 1), loss="iwae", num_particles=args.num_particles,
                          progress=False, seed=0)
    samples = budget(args.num_samples, 10)
    ll = pyrovae.log_likelihood(hvae, x, num_samples=samples, seed=0).mean().item()
    plots.save(plots.samples(hvae), "hvae_samples.png")
    print(f"two-layer VAE, IWAE k={args.num_particles}, {len(history)} epochs: train ELBO "
          f"{history[-1]['train_elbo']:.2f}, test log p(x) {ll:.2f} nats (K = {samples}, {len(x)} images)")


if __name__ == "__main__":
    main()
