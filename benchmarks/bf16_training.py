"""bfloat16 training against float32: the default MNIST VAE (784-400-50, ``fit``'s defaults, 20
epochs) trained at ``precision="fp32"`` and ``"bf16"`` with several seeds each, processes
interleaved (fp32 seed 0, bf16 seed 0, fp32 seed 1, ...). Per epoch: the held-out ELBO of the
epoch's report (always float32) and the training seconds. The question: is bf16's curve inside
fp32's run-to-run spread (the range over seeds), and how much faster is its epoch?

    PYROVAE_DATA=../shared/data python benchmarks/bf16_training.py [--epochs 20] [--seeds 3]

Run it alone.
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
RESULTS = ROOT / "benchmarks" / "results-bf16-training-cpu.json"

CHILD = r"""
import json, sys, torch, pyrovae
train = pyrovae.datasets.load("mnist", split="train")
test = pyrovae.datasets.load("mnist", split="test")
torch.manual_seed({seed})
vae = pyrovae.VAE((1, 28, 28), latent_dim=50, hidden=(400,))
history = pyrovae.fit(vae, train, test, epochs={epochs}, precision={precision!r}, seed={seed}, progress=False)
print("RESULT", json.dumps([dict(epoch=r["epoch"], test_elbo=r["test_elbo"], train_seconds=r["train_seconds"],
                                 compile_seconds=r.get("compile_seconds")) for r in history]))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS), help="the results file (one per processor met: the AMD "
                        "EPYC run is results-bf16-training-cpu.json)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import machine

    runs = {"fp32": [], "bf16": []}
    for seed in range(args.seeds):
        for precision in ("fp32", "bf16"):
            code = CHILD.format(seed=seed, epochs=args.epochs, precision=precision)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            rows = json.loads(out.split("RESULT", 1)[1])
            runs[precision].append(rows)
            print(precision, seed, [round(r["test_elbo"], 2) for r in rows], flush=True)
    summary = {}
    for precision, seeds in runs.items():
        epochs = list(zip(*seeds))
        summary[precision] = {
            "test_elbo_mean": [statistics.mean(r["test_elbo"] for r in rows) for rows in epochs],
            "test_elbo_min": [min(r["test_elbo"] for r in rows) for rows in epochs],
            "test_elbo_max": [max(r["test_elbo"] for r in rows) for rows in epochs],
            "epoch_seconds_median": statistics.median(r["train_seconds"] for rows in epochs[1:] for r in rows)}
    fp32, bf16 = summary["fp32"], summary["bf16"]
    inside = [lo - 1e-9 <= m <= hi + 1e-9 for m, lo, hi in zip(bf16["test_elbo_mean"], fp32["test_elbo_min"],
                                                                 fp32["test_elbo_max"])]
    summary["bf16_mean_inside_fp32_range"] = inside
    summary["final_difference"] = bf16["test_elbo_mean"][-1] - fp32["test_elbo_mean"][-1]
    summary["final_fp32_spread"] = fp32["test_elbo_max"][-1] - fp32["test_elbo_min"][-1]
    summary["speedup"] = fp32["epoch_seconds_median"] / bf16["epoch_seconds_median"]
    Path(args.out).write_text(json.dumps({"machine": machine(), "epochs": args.epochs, "seeds": args.seeds,
                                   "summary": summary, "runs": runs}, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k not in ("fp32", "bf16")}, indent=1))
    print("epoch seconds: fp32", fp32["epoch_seconds_median"], "bf16", bf16["epoch_seconds_median"])


if __name__ == "__main__":
    main()
