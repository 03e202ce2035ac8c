"""Quality at an equal training budget: pyrovae's default MNIST model (784-400-50, Bernoulli,
meanfield) against the plain PyTorch loop of benchmarks/common.py, same epochs, same batches;
test ELBO and importance-sampled log-likelihood of each, and the wall-clock each took.

    PYROVAE_DATA=../shared/data python benchmarks/quality.py --epochs 10
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import PlainVAE, machine, mnist, plain_epoch  # noqa: E402

import pyrovae  # noqa: E402


@torch.no_grad()
def plain_log_likelihood(model, x, num_samples, chunk=50):
    """The same importance-sampling estimator, written out for the plain model."""
    x = x.flatten(1)
    loc, scale = model.encode(x)
    out = []
    for i in range(len(x)):
        lw = []
        for _ in range(0, num_samples, chunk):
            eps = torch.randn(chunk, loc.shape[1])
            z = loc[i] + scale[i] * eps
            logits = model.dec2(torch.relu(model.dec1(z)))
            log_px = model.log_px_given_z(logits, x[i])
            log_pz = -0.5 * (z**2).sum(-1) - 0.5 * z.shape[1] * math.log(2 * math.pi)
            log_qz = (-0.5 * eps**2 - torch.log(scale[i]) - 0.5 * math.log(2 * math.pi)).sum(-1)
            lw.append(log_px + log_pz - log_qz)
        lw = torch.cat(lw)[:num_samples]
        out.append(torch.logsumexp(lw, 0) - math.log(num_samples))
    return torch.stack(out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--test-examples", type=int, default=1000)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--json")
    args = parser.parse_args()
    train, test = mnist("train"), mnist("test")
    x = pyrovae.datasets.binarize(test[: args.test_examples], "dynamic", generator=torch.Generator().manual_seed(0))

    torch.manual_seed(0)
    vae = pyrovae.VAE((1, 28, 28), latent_dim=50, hidden=(400,))
    start = time.perf_counter()
    pyrovae.fit(vae, train, epochs=args.epochs, progress=False, seed=0)
    pyro_seconds = time.perf_counter() - start
    pyro_elbo = float(pyrovae.elbo(vae, x, num_particles=10, seed=1).mean())
    pyro_ll = float(pyrovae.log_likelihood(vae, x, num_samples=args.num_samples, seed=2).mean())

    torch.manual_seed(0)
    plain = PlainVAE()
    optimizer = torch.optim.Adam(plain.parameters(), lr=1e-3, foreach=True)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        plain_epoch(plain, optimizer, train, 128, "meanfield", 1, epoch)
    plain_seconds = time.perf_counter() - start
    with torch.no_grad():
        torch.manual_seed(1)
        plain_elbo = float(torch.stack([-plain.loss(x[i:i + 1], "trace", 10) for i in range(len(x))]).mean())
    torch.manual_seed(2)
    plain_ll = float(plain_log_likelihood(plain, x, args.num_samples).mean())

    result = {
        "epochs": args.epochs, "test_examples": len(x), "num_samples": args.num_samples,
        "pyrovae": {"seconds": pyro_seconds, "test_elbo": pyro_elbo, "test_log_likelihood": pyro_ll},
        "plain": {"seconds": plain_seconds, "test_elbo": plain_elbo, "test_log_likelihood": plain_ll},
        "machine": machine(),
    }
    print(f"{args.epochs} epochs | pyrovae: {pyro_seconds:.0f} s, test ELBO {pyro_elbo:.2f}, log p(x) {pyro_ll:.2f} | "
          f"plain: {plain_seconds:.0f} s, test ELBO {plain_elbo:.2f}, log p(x) {plain_ll:.2f} | "
          f"difference in log p(x): {pyro_ll - plain_ll:+.2f} nats")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
