"""Seconds per MNIST epoch: pyrovae.fit against the plain PyTorch VAE of benchmarks/common.py,
the two interleaved in one process so machine noise hits both alike. Two columns each: the
training steps alone, and the whole run (fit's call from start to end: data checks, the epoch,
and the ELBO report at its end; for the plain loop the epoch and the same report).

    PYROVAE_DATA=../shared/data python benchmarks/train_speed.py [--repeats 3] [--device cpu]

Prints, for each row, the median, min and max seconds of each and the ratio pyrovae / plain,
and the fraction of the GEMM floor (the epoch's matrix products at the measured matmul rate).
Run it alone: another PyTorch process on the same cores distorts both columns.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import (PlainVAE, machine, matmul_gflops, mnist, plain_epoch, plain_evaluation,  # noqa: E402
                    vae_flops_per_example)

import pyrovae  # noqa: E402

ROWS = [
    # (label, loss, particles, batch size, latent dim)
    ("meanfield b128", "meanfield", 1, 128, 50),
    ("meanfield b256", "meanfield", 1, 256, 50),
    ("trace b128", "trace", 1, 128, 50),
    ("iwae K=5 b128", "iwae", 5, 128, 50),
    ("meanfield 2-D b128", "meanfield", 1, 128, 2),
]


def pyrovae_epoch(data, loss, particles, batch_size, latent_dim, seed, device):
    vae = pyrovae.VAE((1, 28, 28), latent_dim=latent_dim, hidden=(400,))
    started = time.perf_counter()
    history = pyrovae.fit(vae, data, epochs=1, batch_size=batch_size, loss=loss, num_particles=particles,
                          progress=False, seed=seed, device=device)
    return history[0]["train_seconds"], time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", default=None, help="comma-separated row labels to run")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    device = torch.device(args.device)
    data = mnist("train").to(device)
    gflops = matmul_gflops()
    rows = [r for r in ROWS if args.rows is None or r[0] in args.rows.split(",")]
    results = []
    for label, loss, particles, batch_size, latent_dim in rows:
        times = {"pyrovae": [], "plain": []}
        whole = {"pyrovae": [], "plain": []}
        for repeat in range(args.repeats):
            for name in ("plain", "pyrovae") if repeat % 2 else ("pyrovae", "plain"):
                if name == "pyrovae":
                    seconds, run_seconds = pyrovae_epoch(data, loss, particles, batch_size, latent_dim, repeat, device)
                else:
                    torch.manual_seed(repeat)
                    model = PlainVAE(latent_dim=latent_dim).to(device)
                    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
                    started = time.perf_counter()
                    seconds, _ = plain_epoch(model, optimizer, data, batch_size, loss, particles, repeat)
                    plain_evaluation(model, data)
                    run_seconds = time.perf_counter() - started
                times[name].append(seconds)
                whole[name].append(run_seconds)
        floor = 3 * vae_flops_per_example(latent_dim=latent_dim, particles=particles) * len(data) / (gflops * 1e9)
        row = {
            "row": label,
            **{f"{k}_{stat}": getattr(statistics, stat)(v) if stat == "median" else (min(v) if stat == "min" else max(v))
               for k, v in times.items() for stat in ("median", "min", "max")},
            "ratio": statistics.median(times["pyrovae"]) / statistics.median(times["plain"]),
            "pyrovae_whole_run_median": statistics.median(whole["pyrovae"]),
            "plain_whole_run_median": statistics.median(whole["plain"]),
            "whole_run_ratio": statistics.median(whole["pyrovae"]) / statistics.median(whole["plain"]),
            "gemm_floor_s": floor,
        }
        row["pyrovae_fraction_of_floor"] = floor / row["pyrovae_median"]
        row["plain_fraction_of_floor"] = floor / row["plain_median"]
        results.append(row)
        print(f"{label:20s} pyrovae {row['pyrovae_median']:6.2f} s [{row['pyrovae_min']:.2f}, {row['pyrovae_max']:.2f}]"
              f"  plain {row['plain_median']:6.2f} s [{row['plain_min']:.2f}, {row['plain_max']:.2f}]"
              f"  ratio {row['ratio']:.3f} (whole run {row['whole_run_ratio']:.3f})  GEMM floor {floor:.2f} s (pyrovae {row['pyrovae_fraction_of_floor']:.0%},"
              f" plain {row['plain_fraction_of_floor']:.0%})", flush=True)
    summary = {"machine": machine(), "device": str(device), "matmul_gflops": gflops, "rows": results, "time": time.ctime()}
    print(json.dumps(summary["machine"]), f"matmul {gflops:.0f} GFLOP/s")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
