"""Log-likelihood you can trust, on MNIST: one trained VAE's test log-likelihood by importance
sampling (K = 5000, with its Pareto k diagnostics), by AIS at two budgets, and the BDMC gap on
as many images simulated from the model, each with its wall-clock. Records
``benchmarks/results-ais-mnist-cpu.json`` and prints the table of docs/evaluation.md.

    PYROVAE_DATA=../shared/data python benchmarks/ais_mnist.py --run runs/mnist50 --examples 1000

The run folder is trained first where it does not exist (the 784-400-50 VAE, ``--epochs``).
"""

import argparse
import json
import time
from pathlib import Path

import torch

import pyrovae
from pyrovae import config as cfg
from pyrovae import runs

from common import machine

ROOT = Path(__file__).parent.parent
RESULTS = Path(__file__).parent / "results-ais-mnist-cpu.json"


def trained(run_dir, epochs):
    if not (run_dir / "checkpoint.pt").is_file():
        config = cfg.validate({"data": {"dataset": "mnist"}, "model": {"latent_dim": 50, "hidden": [400]},
                               "train": {"epochs": epochs, "loss": "meanfield"}, "logging": {"plots": False}})
        runs.train_run(config, run_dir, progress=False)
    return pyrovae.load(run_dir)


def test_images(run_dir, vae, examples):
    config = runs.read_run_config(run_dir)
    x, _ = runs._evaluation_data(config, vae, "test", examples, vae.device)
    return x


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default=str(ROOT / "runs" / "mnist50"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--steps", default="100,1000", help="the AIS budgets (intermediate distributions)")
    parser.add_argument("--leapfrog", type=int, default=10)
    parser.add_argument("--samples", type=int, default=5000)
    args = parser.parse_args()
    run_dir = Path(args.run)
    vae = trained(run_dir, args.epochs)
    x = test_images(run_dir, vae, args.examples)
    rows = {"examples": len(x), "run": str(run_dir), "machine": machine(), "threads": torch.get_num_threads()}
    (ll, se, diagnostics), seconds = timed(lambda: pyrovae.log_likelihood(
        vae, x, args.samples, return_stderr=True, return_diagnostics=True, seed=0))
    rows["is"] = {"K": args.samples, "log_likelihood": float(ll.double().mean()), "seconds": seconds,
                  **diagnostics.summary()}
    print("IS", rows["is"], flush=True)
    rows["ais"] = []
    for steps in (int(s) for s in args.steps.split(",")):
        result, seconds = timed(lambda: pyrovae.ais_log_likelihood(
            vae.model, vae.guide, x, num_chains=args.chains, num_steps=steps, num_leapfrog=args.leapfrog, seed=0))
        row = {"steps": steps, "chains": args.chains, "leapfrog": args.leapfrog,
               "log_likelihood": float(result.log_likelihood.double().mean()),
               "minus_is": float((result.log_likelihood.double() - ll.double()).mean()),
               "chain_sd_median": float(result.chain_sd.double().median()),
               "acceptance": float(result.acceptance.double().mean()), "seconds": seconds}
        rows["ais"].append(row)
        print("AIS", row, flush=True)
    steps = max(int(s) for s in args.steps.split(","))
    summary, seconds = timed(lambda: runs.bdmc_summary(vae, x, None, args.chains, steps, args.leapfrog, 0,
                                                       args.samples))
    rows["bdmc"] = {**summary, "seconds": seconds}
    print("BDMC", rows["bdmc"], flush=True)
    RESULTS.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
