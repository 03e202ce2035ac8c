"""IWAE (K = 5) on MNIST with the standard gradient and with DReG, at equal epochs: test
log-likelihood (K = 5000) of each, and the gradient signal-to-noise table (K = 1, 5, 50; standard,
STL, DReG; encoder and decoder) at the standard run's final weights.

    PYROVAE_DATA=../shared/data python benchmarks/estimators_mnist.py --epochs 30 --json benchmarks/results-estimators-cpu.json
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

import pyrovae  # noqa: E402
from pyrovae import runs  # noqa: E402
from pyrovae.config import validate  # noqa: E402
from pyrovae.infer import make_elbo  # noqa: E402
from pyrovae.infer.diagnostics import gradient_moments  # noqa: E402


def snr_table(vae, x, draws, ks=(1, 5, 50)):
    groups = {"encoder": list(vae.encoder.parameters()), "decoder": list(vae.decoder.parameters())}
    rows = []
    for k in ks:
        for estimator in ("standard", "stl", "dreg"):
            moments = gradient_moments(make_elbo("iwae", k, estimator), vae.model, vae.guide, x, groups,
                                       num_draws=draws, draws_per_pass=100, seed=k)
            rows.append({"k": k, "estimator": estimator,
                         **{f"{g}_snr_median": float(moments.snr(g).median()) for g in groups}})
            print(rows[-1], flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--out", default="runs/estimators")
    parser.add_argument("--snr-draws", type=int, default=2000)
    parser.add_argument("--json")
    args = parser.parse_args()
    results = {"machine": machine(), "epochs": args.epochs, "num_samples": args.num_samples, "runs": {}}
    for estimator in ("standard", "dreg"):
        config = validate({
            "data": {"dataset": "mnist"},
            "model": {"latent_dim": 50, "hidden": [400]},
            "train": {"loss": "iwae", "num_particles": 5, "estimator": estimator, "epochs": args.epochs, "seed": 0},
            "logging": {"plots": False},
        })
        out = Path(args.out) / estimator
        started = time.perf_counter()
        vae, history = runs.train_run(config, out, progress=False)
        train_seconds = time.perf_counter() - started
        evaluation = runs.evaluate_run(out, num_samples=args.num_samples, progress=False)
        results["runs"][estimator] = {
            "test_log_likelihood": evaluation["log_likelihood"],
            "test_log_likelihood_stderr": evaluation["log_likelihood_stderr"],
            "test_elbo": evaluation["elbo"],
            "bound_check": evaluation["bound_check"],
            "train_seconds": train_seconds,
            "final_train_objective": history[-1]["train_elbo"],
        }
        print(estimator, results["runs"][estimator], flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    vae = pyrovae.load(Path(args.out) / "standard")
    x = pyrovae.datasets.binarize(pyrovae.datasets.load("mnist", split="test").data[:1],
                                  "dynamic", generator=torch.Generator().manual_seed(0))
    results["snr"] = snr_table(vae, x, args.snr_draws)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
