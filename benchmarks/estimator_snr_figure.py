"""The SNR-against-K figure and table of docs/evaluation.md, from the JSON that
benchmarks/estimators_mnist.py writes.

    python benchmarks/estimator_snr_figure.py benchmarks/results-estimators-cpu.json
"""

import json
import sys
from pathlib import Path

from matplotlib.figure import Figure

ROOT = Path(__file__).parent.parent


def main(path):
    results = json.loads(Path(path).read_text())
    rows = results["snr"]
    fig = Figure(figsize=(8, 3.4))
    axes = fig.subplots(1, 2, sharey=False)
    for ax, group in zip(axes, ("encoder", "decoder")):
        for estimator, style in (("standard", "o-"), ("stl", "s--"), ("dreg", "^-")):
            points = [(r["k"], r[f"{group}_snr_median"]) for r in rows if r["estimator"] == estimator]
            ax.plot(*zip(*points), style, label=estimator)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("K (importance samples)")
        ax.set_title(f"{group} gradient SNR (median over coordinates)", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "images" / "estimator-snr.png", dpi=110)
    print("| K | estimator | encoder SNR | decoder SNR |\n| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['k']} | {r['estimator']} | {r['encoder_snr_median']:.3f} | {r['decoder_snr_median']:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1])
