"""The quadrant task of Pyro's CVAE tutorial: given 1, 2 or 3 quadrants of an MNIST digit, complete
the rest. For each, a CVAE (its baseline network trained beside it) and a table of the conditional
-log p(x_rest | x_given) on test digits: the baseline's, the CVAE's by importance sampling with
q(z | x, c), and by the tutorial's Monte Carlo average over the prior network.

    PYROVAE_DATA=../shared/data python examples/cvae_quadrants.py --epochs 10
"""

import argparse

import torch
from smoke import budget, shrink

import pyrovae
from pyrovae import plots
from pyrovae.models import CVAE


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--test-examples", type=int, default=2000)
    args = parser.parse_args()
    train = shrink(pyrovae.datasets.load("mnist", split="train"))
    test = shrink(pyrovae.datasets.load("mnist", split="test"), 200)
    x = pyrovae.datasets.binarize(test.data[: args.test_examples], "dynamic", generator=torch.Generator().manual_seed(0))
    epochs, samples = budget(args.epochs, 1), budget(args.num_samples, 10)
    rows = []
    for given in (1, 2, 3):
        torch.manual_seed(0)
        cvae = CVAE((1, 28, 28), latent_dim=budget(200, 20), hidden=budget((500, 500), (64,)), given_quadrants=given,
                    baseline_hidden=budget((500, 500), (64,)))
        pyrovae.fit(cvae, train, epochs=epochs, loss="meanfield", progress=False, seed=0)
        metrics = cvae.extra_metrics(x, None, samples)
        ll = pyrovae.log_likelihood(cvae, x, num_samples=samples, seed=0).mean().item()
        rows.append((given, -metrics["baseline_log_likelihood"], -ll, -metrics["prior_proposal_log_likelihood"]))
        plots.save(plots.completions(cvae, x), f"cvae_completions_{given}.png")
        print(f"{given} quadrant(s): trained {epochs} epochs", flush=True)
    print(f"\n-log p(x_rest | x_given), nats, {len(x)} binarized test digits, K = {samples}")
    print("| quadrants given | baseline | CVAE (IS with q) | CVAE (MC over the prior) |\n| --- | --- | --- | --- |")
    for given, baseline, cvae_nll, prior_nll in rows:
        print(f"| {given} | {baseline:.2f} | {cvae_nll:.2f} | {prior_nll:.2f} |")


if __name__ == "__main__":
    main()
