"""The semi-supervised M2 table: ``configs/m2-mnist-N.toml`` trained at its full budget for each
number of labels and label draw (the seed draws the labelled examples, the validation split and
the weights), the test accuracy of q(y|x) at the epoch of best validation accuracy (``best.pt``,
what ``pyrovae evaluate`` reads for m2) recorded in ``benchmarks/results-m2-cpu.json`` as each
run lands. Runs one after another; a row already recorded at the budget is skipped, and a run
folder holding fewer epochs than the budget is resumed (the same run as one trained uninterrupted).

``--model m1m2`` runs Kingma et al.'s M1+M2 instead (``configs/m1m2-mnist-N.toml``: M2 on the
latent means of the M1 run ``configs/m1-mnist.toml`` trains into ``runs/m1-mnist``, first where
it is missing; one M1 for every draw, trained on the split of seed 0, so a later draw's validation
images may be among M1's unlabelled training images; the test images never are).

    PYROVAE_DATA=../shared/data python benchmarks/m2_table.py --labels 100 --seeds 0,1,2 [--model m1m2]
    python benchmarks/m2_table.py --table
"""

import argparse
import json
import statistics
import time
from pathlib import Path

from pyrovae import config as cfg
from pyrovae import runs
from pyrovae.train.callbacks import best_epoch

from common import machine

ROOT = Path(__file__).parent.parent
RESULTS = Path(__file__).parent / "results-m2-cpu.json"
PYRO_TUTORIAL = {100: 93.19, 600: 94.37, 1000: 94.87, 3000: 95.82}
KINGMA_M1_M2 = {100: 96.67, 600: 97.41, 1000: 97.60, 3000: 97.82}
ANCHORS = {"m2": ("Pyro's tutorial", PYRO_TUTORIAL), "m1m2": ("Kingma et al.'s M1+M2", KINGMA_M1_M2)}


def train_m1():
    """The M1 run whose latent means the m1m2 configs read, trained where missing (or resumed)."""
    out = ROOT / "runs" / "m1-mnist"
    config = cfg.validate(cfg.load_toml(ROOT / "configs" / "m1-mnist.toml"))
    if (out / "checkpoint.pt").is_file() and len(runs.RunFolder(out).read_metrics()) >= config["train"]["epochs"]:
        return
    config["logging"]["plots"] = False
    runs.train_run(config, out, resume=(out / "checkpoint.pt").is_file(), progress=False)


def row_config(model, labels):
    """The validated config of a row, ``configs/MODEL-mnist-LABELS.toml``."""
    return cfg.validate(cfg.load_toml(ROOT / "configs" / f"{model}-mnist-{labels}.toml"))


def run_row(labels, seed, epochs=None, model="m2"):
    config = row_config(model, labels)
    config["train"]["seed"] = seed
    config_epochs = config["train"]["epochs"]
    if epochs:
        config["train"]["epochs"] = epochs
    config["logging"]["plots"] = seed == 0
    if model == "m1m2":
        train_m1()
        config["data"]["features"] = str(ROOT / "runs" / "m1-mnist")
    out = ROOT / "runs" / f"{model}-mnist-{labels}-seed{seed}"
    started = time.perf_counter()
    _, history = runs.train_run(config, out, resume=(out / "checkpoint.pt").is_file(), progress=False)
    index, valid_accuracy = best_epoch(history, "valid_accuracy")
    return {"model": model, "labels": labels, "seed": seed, "epochs": len(history), "config_epochs": config_epochs,
            "best_epoch": index + 1, "valid_accuracy": valid_accuracy,
            "test_accuracy": history[index]["test_accuracy"], "last_test_accuracy": history[-1]["test_accuracy"],
            "train_seconds": time.perf_counter() - started, "run": str(out.relative_to(ROOT)),
            "curve": [{k: row[k] for k in ("epoch", "valid_accuracy", "test_accuracy")} for row in history]}


def table(results):
    lines = ["| model | labels | draws | epochs | test accuracy at best validation, % (mean +- sd) | each draw | anchor |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    groups = {}
    for row in results["rows"].values():
        groups.setdefault((row.get("model", "m2"), row["labels"]), []).append(row)
    for model, labels in sorted(groups):
        rows = sorted(groups[model, labels], key=lambda r: r["seed"])
        accuracies = [100 * r["test_accuracy"] for r in rows]
        spread = f" +- {statistics.stdev(accuracies):.2f}" if len(accuracies) > 1 else ""
        name, anchor = ANCHORS[model]
        lines.append(f"| {model} | {labels} | {len(rows)} | {', '.join(str(r['epochs']) for r in rows)} | "
                     f"**{statistics.mean(accuracies):.2f}**{spread} | {', '.join(f'{a:.2f}' for a in accuracies)} | "
                     f"{name} {anchor[labels]} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=int, choices=sorted(PYRO_TUTORIAL), default=100)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, help="another budget than the config's")
    parser.add_argument("--model", choices=sorted(ANCHORS), default="m2", help="m1m2: M2 on M1's latent means")
    parser.add_argument("--table", action="store_true", help="print the recorded rows")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"rows": {}}
    if args.table:
        print(table(results))
        return
    for seed in (int(s) for s in args.seeds.split(",")):
        key = f"{args.labels}-seed{seed}" if args.model == "m2" else f"{args.model}-{args.labels}-seed{seed}"
        budget = args.epochs or row_config(args.model, args.labels)["train"]["epochs"]
        if key in results["rows"] and results["rows"][key]["epochs"] >= budget:
            continue
        row = run_row(args.labels, seed, args.epochs, args.model)
        print(key, {k: v for k, v in row.items() if k != "curve"}, flush=True)
        results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"rows": {}}
        results["machine"] = machine()
        results["rows"][key] = row
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
