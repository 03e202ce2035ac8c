"""Train a VAE on MNIST with Pyro's SVI, report the importance-sampled log-likelihood, and draw
the learned manifold (2-D latent).

    PYROVAE_DATA=../shared/data python examples/train_mnist.py --latent-dim 2 --epochs 10
"""

import argparse

import torch

import pyrovae
from pyrovae import plots
from smoke import budget, shrink


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latent-dim", type=int, default=2)
    parser.add_argument("--hidden", type=int, nargs="*", default=[400])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--loss", default="meanfield", choices=["meanfield", "trace", "iwae"])
    parser.add_argument("--num-particles", type=int, default=1)
    parser.add_argument("--num-samples", type=int, default=1000, help="importance samples for log p(x)")
    parser.add_argument("--out", default="mnist_manifold.png")
    args = parser.parse_args()

    train = shrink(pyrovae.datasets.load("mnist", split="train"))
    test = shrink(pyrovae.datasets.load("mnist", split="test"))
    vae = pyrovae.VAE((1, 28, 28), latent_dim=args.latent_dim, hidden=tuple(args.hidden))
    pyrovae.fit(vae, train, test, epochs=budget(args.epochs, 1), loss=args.loss, num_particles=args.num_particles)

    x = pyrovae.datasets.binarize(test.data[:1000], "dynamic", generator=torch.Generator().manual_seed(0))
    x = x.to(vae.device)
    log_px, stderr = pyrovae.log_likelihood(vae, x, num_samples=budget(args.num_samples, 20), return_stderr=True, seed=0)
    print(f"log p(x) on {len(x)} test images: {log_px.mean():.2f} nats (MC error {stderr.pow(2).sum().sqrt() / len(x):.3f})")
    print(pyrovae.check_bounds(vae, x[:200], ks=budget((1, 10, 100), (1, 10)), seed=0))
    if args.latent_dim == 2:
        plots.save(plots.manifold(vae, n=20), args.out)
        print(f"manifold: {args.out}")


if __name__ == "__main__":
    main()
