"""The semi-supervised M2 table: ``configs/m2-mnist-N.toml`` trained at its full budget for each
number of labels and label draw (the seed draws the labelled examples, the validation split and
the weights), the test accuracy of q(y|x) at the epoch of best validation accuracy (``best.pt``,
what ``pyrovae evaluate`` reads for m2) recorded in ``benchmarks/results-m2-cpu.json`` as each
run lands. Runs one after another; a row already recorded is skipped.

    PYROVAE_DATA=../shared/data python benchmarks/m2_table.py --labels 100 --seeds 0,1,2
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


def run_row(labels, seed, epochs=None):
    config = cfg.validate(cfg.load_toml(ROOT / "configs" / f"m2-mnist-{labels}.toml"))
    config["train"]["seed"] = seed
    if epochs:
        config["train"]["epochs"] = epochs
    config["logging"]["plots"] = seed == 0
    out = ROOT / "runs" / f"m2-mnist-{labels}-seed{seed}"
    started = time.perf_counter()
    _, history = runs.train_run(config, out, resume=(out / "checkpoint.pt").is_file(), progress=False)
    index, valid_accuracy = best_epoch(history, "valid_accuracy")
    return {"labels": labels, "seed": seed, "epochs": len(history), "config_epochs": 50,
            "best_epoch": index + 1, "valid_accuracy": valid_accuracy,
            "test_accuracy": history[index]["test_accuracy"], "last_test_accuracy": history[-1]["test_accuracy"],
            "train_seconds": time.perf_counter() - started, "run": str(out.relative_to(ROOT)),
            "curve": [{k: row[k] for k in ("epoch", "valid_accuracy", "test_accuracy")} for row in history]}


def table(results):
    lines = ["| labels | draws | epochs | test accuracy at best validation, % (mean +- sd) | each draw | Pyro's tutorial |",
             "| --- | --- | --- | --- | --- | --- |"]
    by_labels = {}
    for row in results["rows"].values():
        by_labels.setdefault(row["labels"], []).append(row)
    for labels in sorted(by_labels):
        rows = sorted(by_labels[labels], key=lambda r: r["seed"])
        accuracies = [100 * r["test_accuracy"] for r in rows]
        spread = f" +- {statistics.stdev(accuracies):.2f}" if len(accuracies) > 1 else ""
        lines.append(f"| {labels} | {len(rows)} | {', '.join(str(r['epochs']) for r in rows)} | **{statistics.mean(accuracies):.2f}**{spread} | "
                     f"{', '.join(f'{a:.2f}' for a in accuracies)} | {PYRO_TUTORIAL[labels]} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=int, choices=sorted(PYRO_TUTORIAL), default=100)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, help="a smaller budget than the config's 50")
    parser.add_argument("--table", action="store_true", help="print the recorded rows")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"rows": {}}
    if args.table:
        print(table(results))
        return
    for seed in (int(s) for s in args.seeds.split(",")):
        key = f"{args.labels}-seed{seed}"
        if key in results["rows"] and results["rows"][key]["epochs"] >= (args.epochs or 50):
            continue
        row = run_row(args.labels, seed, args.epochs)
        print(key, {k: v for k, v in row.items() if k != "curve"}, flush=True)
        results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"rows": {}}
        results["machine"] = machine()
        results["rows"][key] = row
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
