"""Importance-sampled log-likelihood speed: K = 1000 and 5000 samples on 1000 and 10000 MNIST
test images; seconds, examples x samples per second, peak memory, and the fraction of this
CPU's float32 matmul throughput (measured in the same run: the faster of PyTorch's default GEMM
and oneDNN's, which the compiled estimator uses) that the estimator reaches, eager and compiled
(``log_likelihood(compile="on")``; its seconds include the compilation).

    PYROVAE_DATA=../shared/data python benchmarks/loglik_speed.py --run runs/mnist50 [--rows 10000,1000]

Each row runs in a child process so its peak resident memory is its own.
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, matmul_gflops, mnist, vae_flops_per_example  # noqa: E402

import pyrovae  # noqa: E402

ROWS = [(1000, 1000), (1000, 5000), (10000, 1000), (10000, 5000)]


def one_row(run, examples, samples, compile_mode):
    vae = pyrovae.load(run)
    x = pyrovae.datasets.binarize(mnist("test")[:examples], "dynamic", generator=torch.Generator().manual_seed(1))
    start = time.perf_counter()
    ll = pyrovae.log_likelihood(vae, x, num_samples=samples, seed=0, compile=compile_mode)
    seconds = time.perf_counter() - start
    flops = examples * samples * (vae_flops_per_example(latent_dim=vae.latent_dim, particles=1)
                                  - vae_flops_per_example(latent_dim=vae.latent_dim, particles=0))
    return {
        "compile": compile_mode,
        "examples": examples,
        "samples": samples,
        "seconds": seconds,
        "samples_per_second": examples * samples / seconds,
        "decoder_gflops": flops / seconds / 1e9,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "log_likelihood": float(ll.mean()),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", required=True, help="a trained 784-400-d MLP run folder")
    parser.add_argument("--row", help="examples,samples,compile (internal: one row in this process)")
    parser.add_argument("--rows", help="examples,samples;... (default: the four rows)")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.row:
        examples, samples, compile_mode = args.row.split(",")
        print(json.dumps(one_row(args.run, int(examples), int(samples), compile_mode)))
        return
    # the fraction of the machine's matmul peak: the faster of PyTorch's default GEMM and oneDNN's
    peaks = {kernel: matmul_gflops(kernel=kernel) for kernel in ("torch", "onednn")}
    peak = max(peaks.values())
    rows = []
    wanted = [tuple(int(v) for v in row.split(",")) for row in args.rows.split(";")] if args.rows else ROWS
    for (examples, samples), compile_mode in ((row, mode) for row in wanted for mode in ("off", "on")):
        out = subprocess.run([sys.executable, __file__, "--run", args.run, "--row", f"{examples},{samples},{compile_mode}"],
                             check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        row["fraction_of_matmul"] = row["decoder_gflops"] / peak
        rows.append(row)
        print(f"compile={compile_mode:>3} N={examples:>5} K={samples:>4}: {row['seconds']:7.1f} s  {row['samples_per_second'] / 1e3:6.0f}k samples/s  "
              f"{row['decoder_gflops']:5.0f} GFLOP/s = {row['fraction_of_matmul']:.0%} of matmul  "
              f"peak {row['peak_rss_mb']:5.0f} MB  log p(x) {row['log_likelihood']:.3f}", flush=True)
    print(json.dumps(machine()), "matmul GFLOP/s:", {kernel: round(value) for kernel, value in peaks.items()})
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "matmul_gflops": peak, "matmul_gflops_by_kernel": peaks,
                                               "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
