"""Posterior families on MNIST: the 784-400-50 VAE on dynamically binarized MNIST trained with each
guide (``pyrovae train --guide NAME``, the family's default loss: the closed-form KL for meanfield
and lowrank, the Monte Carlo KL for the flows), then on the first ``--examples`` test images: the
test ELBO, importance sampling at K = ``--samples`` with the share of images whose Pareto k > 0.7
and the median ESS, AIS on the first ``--ais-examples`` of them (from the guide; from the prior for
planar, whose density is known at its own draws only), and the training epoch's time. Records
``benchmarks/results-guides-mnist-cpu.json`` after each family.

    PYROVAE_DATA=../shared/data python benchmarks/guides_mnist.py --epochs 20
"""

import argparse
import json
import time
from pathlib import Path


import pyrovae
from pyrovae import config as cfg
from pyrovae import runs

from common import machine

ROOT = Path(__file__).parent.parent
RESULTS = Path(__file__).parent / "results-guides-mnist-cpu.json"
FAMILIES = {"meanfield": {"kind": "meanfield"}, "lowrank": {"kind": "lowrank"}, "planar": {"kind": "planar", "steps": 4},
            "iaf": {"kind": "iaf", "steps": 2}}


def trained(run_dir, guide, epochs):
    """The family's run, trained (or resumed) to ``epochs``."""
    config = cfg.validate({"data": {"dataset": "mnist"}, "model": {"latent_dim": 50, "hidden": [400], "guide": guide},
                           "train": {"epochs": epochs}, "logging": {"plots": False}})
    runs.train_run(config, run_dir, progress=False, resume=(run_dir / "checkpoint.pt").is_file())
    return pyrovae.load(run_dir)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default=str(ROOT / "runs" / "guides"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--ais-examples", type=int, default=20)
    parser.add_argument("--ais-steps", type=int, default=500)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--only", default=",".join(FAMILIES))
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results["machine"] = machine()
    results["setup"] = {"epochs": args.epochs, "examples": args.examples, "samples": args.samples,
                        "ais_examples": args.ais_examples, "ais_steps": args.ais_steps, "ais_chains": 16,
                        "ais_leapfrog": 5}
    for name in args.only.split(","):
        run_dir = Path(args.runs) / name
        vae = trained(run_dir, FAMILIES[name], args.epochs)
        history = runs.RunFolder(run_dir).read_metrics()
        config = runs.read_run_config(run_dir)
        x, _ = runs._evaluation_data(config, vae, "test", args.examples, vae.device)
        started = time.perf_counter()
        log_px, _, diagnostics = pyrovae.log_likelihood(vae, x, args.samples, seed=0, return_stderr=True,
                                                        return_diagnostics=True)
        is_seconds = time.perf_counter() - started
        elbo = pyrovae.elbo(vae, x, 100, seed=1)
        proposal = "prior" if name == "planar" else "guide"
        steps = args.ais_steps * (4 if proposal == "prior" else 1)
        started = time.perf_counter()
        ais = pyrovae.ais_log_likelihood(vae, x[:args.ais_examples], num_chains=16, num_steps=steps, num_leapfrog=5,
                                         proposal=proposal, seed=0)
        ais_seconds = time.perf_counter() - started
        summary = diagnostics.summary()
        results[name] = {
            "guide": FAMILIES[name], "loss": config["train"]["loss"], "epochs": len(history),
            "epoch_seconds_median": sorted(r["train_seconds"] for r in history)[len(history) // 2],
            "test_elbo": float(elbo.double().mean()), "is_log_likelihood": float(log_px.double().mean()),
            "is_seconds": is_seconds, "pareto_k_above_0.7_share": summary["pareto_k_above_0.7_share"],
            "pareto_k_median": summary["pareto_k_median"], "ess_median": summary["ess_median"],
            "ais_proposal": proposal, "ais_steps": steps, "ais_log_likelihood": float(ais.log_likelihood.double().mean()),
            "is_same_images": float(log_px[:args.ais_examples].double().mean()),
            "elbo_same_images": float(elbo[:args.ais_examples].double().mean()),
            "ais_seconds": ais_seconds, "ais_acceptance": float(ais.acceptance.double().mean()),
        }
        results[name]["elbo_to_ais_gap"] = results[name]["ais_log_likelihood"] - results[name]["elbo_same_images"]
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print(name, json.dumps(results[name]), flush=True)


if __name__ == "__main__":
    main()
