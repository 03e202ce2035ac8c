"""Frey Face with a Gaussian likelihood of learned scale and a 2-D latent: the face manifold of
AEVB's Figure 4(a).

    PYROVAE_DATA=../shared/data python examples/frey_faces.py --epochs 300
"""

import argparse

import pyrovae
from pyrovae import plots
from smoke import budget, shrink


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--out", default="frey_manifold.png")
    args = parser.parse_args()
    train = shrink(pyrovae.datasets.load("frey", split="train"))
    test = pyrovae.datasets.load("frey", split="test")
    vae = pyrovae.VAE((1, 28, 20), latent_dim=2, hidden=(200,),
                      likelihood=pyrovae.likelihoods.Gaussian(scale="learned", mean="sigmoid"))
    epochs = budget(args.epochs, 2)
    history = pyrovae.fit(vae, train, test, epochs=epochs, batch_size=100, lr=1e-3, progress=False)
    last = history[-1]
    print(f"after {epochs} epochs: test ELBO {last['test_elbo']:.1f} nats per face, "
          f"learned pixel sigma {vae.likelihood.scale().item():.3f}")
    plots.save(plots.manifold(vae, n=20, title="learned Frey Face manifold"), args.out)
    print(f"manifold: {args.out}")


if __name__ == "__main__":
    main()
