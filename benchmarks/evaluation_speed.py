"""Evaluation at the speed of training: importance sampling and AIS on the MNIST VAE (784-400-50,
``benchmarks/ais_mnist.py``'s run folder, trained there where it does not exist), each against
this machine's measured matrix-product peak, and the AIS numbers of the fast target beside those
of Pyro's traces on the same images with the same seed.

- ``peak``: the GFLOP/s of the decoder's big product (rows x 400 x 784, float32) on the threads
  the process has, the best of several repeats.
- ``is``: ``pyrovae.log_likelihood`` with K samples on the test images (compiled, as the
  estimator runs by default at this size), called twice: the first call compiles; work = 2 x (784 x 400 + 400 x 50) multiply-adds per
  sample and image (the decoder; the encoder runs once per batch of draws).
- ``ais``: ``pyrovae.ais_log_likelihood`` (16 chains, 1000 steps, 5 leapfrog steps, the fast
  target compiled) on ``--examples`` test images; work = 4 x 333,600 flops per chain, image and
  density evaluation (the decoder forward and its input gradient), 5 evaluations a step.
- ``ais_check``: on ``--check-examples`` images, the same AIS run by the fast target and by
  Pyro's traces (the VAE's model and guide behind plain callables): their per-image difference
  against the chains' Monte Carlo error.

    PYROVAE_DATA=../shared/data python benchmarks/evaluation_speed.py [--examples 1000]

Run it alone.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from ais_mnist import test_images, timed, trained  # noqa: E402
from common import machine  # noqa: E402

import pyrovae  # noqa: E402
from pyrovae.run_folder import atomic_write_text  # noqa: E402

ROOT = Path(__file__).parent.parent
RESULTS = Path(__file__).parent / "results-evaluation-speed-cpu.json"
DECODER_FLOPS = 2 * (50 * 400 + 400 * 784)  # one forward pass of one row


def matmul_peak(rows=2048, repeats=30):
    a, b = torch.randn(rows, 400), torch.randn(400, 784)
    best = math.inf
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, (time.perf_counter() - started) / repeats)
    return 2 * rows * 400 * 784 / best / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default=str(ROOT / "runs" / "mnist50"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--check-examples", type=int, default=100)
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--leapfrog", type=int, default=5)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: is, ais, ais_check")
    args = parser.parse_args()
    skip = set(args.skip.split(",")) - {""}
    run_dir = Path(args.run)
    vae = trained(run_dir, args.epochs)
    x = test_images(run_dir, vae, args.examples)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.update(machine=machine(), threads=torch.get_num_threads(), run=str(run_dir))
    results["peak_gflops"] = peak = matmul_peak()
    print(f"matmul peak {peak:.1f} GFLOP/s", flush=True)

    def save():
        atomic_write_text(RESULTS, json.dumps(results, indent=2) + "\n")

    if "is" not in skip:  # twice: the first call compiles the estimator's graphs, the second finds them
        log_px, first_seconds = timed(lambda: pyrovae.log_likelihood(vae, x, args.samples, seed=0))
        log_px, seconds = timed(lambda: pyrovae.log_likelihood(vae, x, args.samples, seed=0))
        gflops = DECODER_FLOPS * args.samples * len(x) / seconds / 1e9
        results["is"] = {"examples": len(x), "K": args.samples, "first_call_seconds": first_seconds,
                         "seconds": seconds, "log_likelihood": float(log_px.double().mean()), "gflops": gflops,
                         "share_of_peak": gflops / peak, "peak_gflops": peak}
        print("IS", results["is"], flush=True)
        save()
    options = dict(num_chains=args.chains, num_steps=args.steps, num_leapfrog=args.leapfrog, seed=0)
    work = 2 * DECODER_FLOPS * args.chains * args.steps * args.leapfrog
    if "ais" not in skip:
        result, seconds = timed(lambda: pyrovae.ais_log_likelihood(vae, x, **options))
        gflops = work * len(x) / seconds / 1e9
        results["ais"] = {"examples": len(x), **{k: v for k, v in options.items() if k != "seed"},
                          "seconds": seconds, "minutes": seconds / 60,
                          "log_likelihood": float(result.log_likelihood.double().mean()),
                          "chain_sd_median": float(result.chain_sd.double().median()),
                          "acceptance": float(result.acceptance.double().mean()), "gflops": gflops,
                          "share_of_peak": gflops / peak, "peak_gflops": peak}
        print("AIS", results["ais"], flush=True)
        save()
    if "ais_check" not in skip:
        few = x[:args.check_examples]
        fast, fast_seconds = timed(lambda: pyrovae.ais_log_likelihood(vae, few, **options))
        traces, trace_seconds = timed(lambda: pyrovae.ais_log_likelihood(
            lambda x: vae.model(x), lambda x: vae.guide(x), few, **options))
        difference = (fast.log_likelihood - traces.log_likelihood).double()
        # each estimate's Monte Carlo error: the chains' spread over sqrt(chains)
        error = ((fast.chain_sd.double() ** 2 + traces.chain_sd.double() ** 2) / args.chains).sqrt()
        results["ais_check"] = {
            "examples": len(few), "fast": float(fast.log_likelihood.double().mean()),
            "traces": float(traces.log_likelihood.double().mean()), "mean_difference": float(difference.mean()),
            "mean_difference_stderr": float(difference.std() / math.sqrt(len(few))),
            "max_abs_difference": float(difference.abs().max()),
            "share_within_2_mc_errors": float((difference.abs() <= 2 * error).double().mean()),
            "fast_seconds": fast_seconds, "trace_seconds": trace_seconds}
        print("check", results["ais_check"], flush=True)
        save()


if __name__ == "__main__":
    main()
