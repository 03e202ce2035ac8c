"""pyrovae's numbers on a user's own program, against references that are not pyrovae.

1. Pyro's examples/vae/vae.py VAE (784-400-50, softplus, Bernoulli on the grey MNIST pixels,
   ``validate_args=False``, as the example scores them), written here in its style and trained by
   Pyro's own ``SVI(..., Trace_ELBO())`` with ``pyro.optim.Adam`` (lr 1e-3, batch 256) for
   ``--epochs`` epochs. On the first ``--examples`` test images: ``pyrovae.log_likelihood`` at K
   against importance sampling written out by hand from the same networks with
   torch.distributions, (a) draw for draw (the same standard-normal draws), (b) with independent
   draws (the difference in units of the two estimates' combined standard error); the PSIS
   diagnostics, the bound check, and AIS on a few images.
2. A linear-Gaussian program in plain Pyro whose guide is the exact posterior (a
   MultivariateNormal): the importance-sampled log p(x) against the closed form, per example.

    PYROVAE_DATA=../shared/data python benchmarks/user_program.py --out benchmarks/results-user-program-cpu.json
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import pyro
import torch
from torch.distributions import Bernoulli, Normal

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).parent.parent))

import pyrovae  # noqa: E402
from pyro_style_programs import PyroExampleVAE  # noqa: E402
from test_user_programs import LinearGaussian  # noqa: E402


def hand_weights(net, x, eps):
    with torch.no_grad():
        flat = x.reshape(len(x), -1)
        loc, scale = net.encoder(flat)
        z = loc + scale * eps
        return (Normal(0.0, 1.0).log_prob(z).sum(-1) + Bernoulli(probs=net.decoder(z), validate_args=False).log_prob(flat).sum(-1)
                - Normal(loc, scale).log_prob(z).sum(-1)).double()


def logmeanexp_se(log_w):
    k = len(log_w)
    lse1, lse2 = torch.logsumexp(log_w, 0), torch.logsumexp(2 * log_w, 0)
    return lse1 - math.log(k), ((torch.exp(lse2 - 2 * lse1 + math.log(k)) - 1).clamp_min(0) / k).sqrt()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--out", default="benchmarks/results-user-program-cpu.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    train = pyrovae.datasets.load("mnist", split="train").data.reshape(-1, 784)
    test = pyrovae.datasets.load("mnist", split="test").data.reshape(-1, 784)[:args.examples]
    net = PyroExampleVAE(z_dim=50, hidden_dim=400, x_dim=784)
    svi = pyro.infer.SVI(net.model, net.guide, pyro.optim.Adam({"lr": 1e-3}), pyro.infer.Trace_ELBO())
    started = time.perf_counter()
    for epoch in range(args.epochs):
        order = torch.randperm(len(train))
        total = sum(svi.step(train[order[i:i + 256]]) for i in range(0, len(train), 256))
        print(f"epoch {epoch + 1}: -ELBO per image {total / len(train):.2f}", flush=True)
    train_seconds = time.perf_counter() - started
    result = {"program": "Pyro's examples/vae/vae.py VAE, 784-400-50, trained by Pyro's SVI + Trace_ELBO",
              "epochs": args.epochs, "train_seconds": train_seconds, "examples": len(test), "samples": args.samples}

    # (a) draw for draw: one batch of <= 1024 examples, one chunk of the samples
    x = test[:100]
    k = 200
    started = time.perf_counter()
    ours = pyrovae.log_likelihood(net, x, k, seed=0, chunk_elements=2**30)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        eps = torch.empty(k, len(x), 50).normal_()
    reference = torch.logsumexp(hand_weights(net, x, eps), 0) - math.log(k)
    result["draw_for_draw"] = {"examples": len(x), "samples": k,
                               "max_abs_difference": float((ours.double() - reference).abs().max()),
                               "mean_abs_difference": float((ours.double() - reference).abs().mean())}

    # (b) independent draws, the whole set
    started = time.perf_counter()
    ours, stderr, diagnostics = pyrovae.log_likelihood(net, test, args.samples, seed=0, return_stderr=True,
                                                       return_diagnostics=True)
    seconds = time.perf_counter() - started
    refs, ref_ses = [], []
    g = torch.Generator().manual_seed(1)
    for i in range(0, len(test), 100):
        xb = test[i:i + 100]
        log_w = torch.cat([hand_weights(net, xb, torch.randn(100, len(xb), 50, generator=g))
                           for _ in range(args.samples // 100)])
        ref, ref_se = logmeanexp_se(log_w)
        refs.append(ref)
        ref_ses.append(ref_se)
    reference, reference_se = torch.cat(refs), torch.cat(ref_ses)
    z_scores = (ours.double() - reference) / (stderr.double() ** 2 + reference_se ** 2).sqrt()
    result["independent_draws"] = {
        "pyrovae_mean": float(ours.double().mean()), "hand_mean": float(reference.mean()),
        "mean_difference": float((ours.double() - reference).mean()),
        "max_abs_difference": float((ours.double() - reference).abs().max()),
        "median_abs_z": float(z_scores.abs().median()), "share_abs_z_above_3": float((z_scores.abs() > 3).double().mean()),
        "pyrovae_seconds": seconds, "diagnostics": diagnostics.summary()}
    check = pyrovae.check_bounds(net, test[:200], ks=(1, 10, 100, 1000), seed=0)
    result["bound_check"] = check.as_dict()
    started = time.perf_counter()
    ais = pyrovae.ais_log_likelihood(net, test[:10], num_chains=16, num_steps=500, num_leapfrog=5, seed=0)
    result["ais_10_images"] = {"ais_mean": float(ais.log_likelihood.double().mean()),
                               "is_mean_same_images": float(ours[:10].double().mean()),
                               "seconds": time.perf_counter() - started, "num_steps": 500, "num_chains": 16}

    # 2. the linear-Gaussian program with the exact posterior as its guide
    program = LinearGaussian(data_dim=20, latent_dim=5)
    with torch.no_grad():
        xs = program.marginal().sample((1000,))
        exact = program.marginal().log_prob(xs)
    estimate, lg_diag = pyrovae.log_likelihood(program, xs, 1000, seed=0, return_diagnostics=True)
    result["linear_gaussian_exact_guide"] = {
        "examples": 1000, "samples": 1000, "max_abs_error": float((estimate - exact).abs().max()),
        "diagnostics": lg_diag.summary()}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
