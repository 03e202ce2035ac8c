"""What integrity and generations cost: an MNIST VAE's checkpoint (784-400-2 and Adam's state)
written the 0.3 way (torch.save into the atomic temporary file) and the 0.4 way (serialized in
memory with its digest line, the previous generation hard-linked), and read by torch.load alone
and by the verifying reader. Medians of ``--repeats`` in a run folder on this disk.

    python benchmarks/checkpoint_cost.py --out benchmarks/results-checkpoint-cost-cpu.json
"""

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import pyrovae
from pyrovae.run_folder import FORMAT, RunFolder, atomic_write, read_checkpoint_file


def median_seconds(function, repeats):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default="benchmarks/results-checkpoint-cost-cpu.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    vae = pyrovae.VAE((1, 28, 28), latent_dim=2, hidden=(400,))
    optimizer = torch.optim.Adam(vae.parameters())
    loss = pyrovae.make_elbo("meanfield")(vae.model, vae.guide)((torch.rand(8, 1, 28, 28) > 0.5).float())
    loss.backward()
    optimizer.step()
    state = {"format": FORMAT, "model": vae.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 1}
    with tempfile.TemporaryDirectory(dir=".") as folder:
        run = RunFolder(folder)
        old = Path(folder) / "old.pt"
        write_old = median_seconds(lambda: atomic_write(old, lambda f: torch.save(state, f)), args.repeats)
        write_one = median_seconds(lambda: run.save_checkpoint(state, keep=1), args.repeats)
        write_two = median_seconds(lambda: run.save_checkpoint(state), args.repeats)
        read_old = median_seconds(lambda: torch.load(old, weights_only=True), args.repeats)
        read_new = median_seconds(lambda: read_checkpoint_file(run.checkpoint), args.repeats)
        read_fallback = median_seconds(lambda: run.read_checkpoint(), args.repeats)
        size = run.checkpoint.stat().st_size
    buffer = io.BytesIO()
    torch.save(state, buffer)
    result = {"checkpoint_bytes": size, "repeats": args.repeats,
              "write_seconds": {"0.3: torch.save into the atomic file": write_old,
                                "0.4: digest, one generation": write_one,
                                "0.4: digest, two generations (default)": write_two},
              "read_seconds": {"torch.load alone": read_old, "verifying reader (digest)": read_new,
                               "run folder reader (newest intact generation)": read_fallback},
              "write_ratio_two_generations": write_two / write_old, "read_ratio": read_fallback / read_old}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
