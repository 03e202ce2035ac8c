"""The picture that shows why a richer guide: the 784-400-2 VAE on dynamically binarized MNIST
trained with each guide family (``--epochs``), and for a few test images, draws from each q(z|x)
over the contours of that model's true posterior p(z|x) (log p(x, z) on a grid, exact for a 2-D
latent). Writes ``docs/images/guides-posterior.png``.

    PYROVAE_DATA=../shared/data python benchmarks/guides_posterior_figure.py --epochs 10
"""

import argparse
from pathlib import Path

import pyrovae
from pyrovae import config as cfg
from pyrovae import plots, runs

ROOT = Path(__file__).parent.parent
FAMILIES = {"meanfield": {"kind": "meanfield"}, "lowrank": {"kind": "lowrank"}, "planar": {"kind": "planar"},
            "iaf": {"kind": "iaf"}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default=str(ROOT / "runs" / "guides2d"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--examples", type=int, default=4)
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "guides-posterior.png"))
    args = parser.parse_args()
    vaes = {}
    for name, guide in FAMILIES.items():
        run_dir = Path(args.runs) / name
        config = cfg.validate({"data": {"dataset": "mnist"}, "model": {"latent_dim": 2, "hidden": [400], "guide": guide},
                               "train": {"epochs": args.epochs}, "logging": {"plots": False}})
        runs.train_run(config, run_dir, progress=False, resume=(run_dir / "checkpoint.pt").is_file())
        vaes[name] = pyrovae.load(run_dir)
        print(name, runs.RunFolder(run_dir).read_metrics()[-1]["test_elbo"], flush=True)
    x, _ = runs._evaluation_data(runs.read_run_config(Path(args.runs) / "meanfield"), vaes["meanfield"], "test", 100,
                                 "cpu")
    chosen = x[[0, 1, 2, 7][:args.examples]]  # a 7, a 2, a 1 and a 9
    plots.save(plots.posterior(vaes, chosen, examples=len(chosen)), args.out)
    print(args.out)


if __name__ == "__main__":
    main()
