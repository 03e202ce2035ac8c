"""The sweep report: one self-contained HTML page, in the style of a run's report, for a sweep
folder (:mod:`pyrovae.sweep`): the trials ranked by held-out log p(x) with their Pareto k share,
the objective against each searched option, the parameter importances Optuna computes,
and the best runs' manifolds side by side."""

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .report import STYLE, _card
from .atomic_files import atomic_write
from .sweep import load_sweep, require_optuna, trials_table

__all__ = ["report_sweep", "objective_figure", "importance_figure"]

BEST_RUNS_SHOWN = 3


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _image(data, title, caption=""):
    return (f"<figure><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def objective_figure(rows, searches) -> Figure:
    """Held-out log p(x) of each complete trial against each searched option: a scatter over a
    range (a log axis for a log-uniform one), a strip per choice otherwise."""
    names = list(searches)
    complete = [r for r in rows if r["state"] == "COMPLETE" and r["value"] is not None]
    columns = min(3, max(1, len(names)))
    lines = math.ceil(len(names) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.2 * lines))
    for index, name in enumerate(names):
        ax = figure.add_subplot(lines, columns, index + 1)
        search = searches[name]
        values = [r["params"].get(name) for r in complete]
        y = [r["value"] for r in complete]
        if "choices" in search:
            labels = [c if isinstance(c, str) else json.dumps(c) for c in search["choices"]]
            position = {label: i for i, label in enumerate(labels)}
            jitter = np.random.default_rng(0).uniform(-0.12, 0.12, len(values))
            x = [position.get(v if isinstance(v, str) else json.dumps(v), np.nan) + j for v, j in zip(values, jitter)]
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        else:
            x = values
            if search.get("log"):
                ax.set_xscale("log")
        ax.scatter(x, y, s=22, color="#1f5fbf", alpha=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("held-out log p(x) (nats)", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def importance_figure(importances) -> Figure:
    names = list(importances)[::-1]
    figure = Figure(figsize=(6, 0.45 * len(names) + 1.2))
    ax = figure.add_subplot(1, 1, 1)
    ax.barh(names, [importances[n] for n in names], color="#1f5fbf")
    ax.set_xlabel("importance (normalized to sum to 1)", fontsize=8)
    ax.tick_params(labelsize=8)
    figure.tight_layout()
    return figure


def _fmt(value, spec="{:.3f}"):
    return "" if value is None else (spec.format(value) if isinstance(value, (int, float)) else str(value))


def report_sweep(sweep_dir) -> Path:
    """Writes ``SWEEP_DIR/report.html`` atomically and returns its path."""
    optuna = require_optuna()
    sweep_dir = Path(sweep_dir)
    study, record = load_sweep(sweep_dir)
    rows = trials_table(study)
    complete = [r for r in rows if r["state"] == "COMPLETE" and r["value"] is not None]
    states = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>pyrovae sweep {html.escape(sweep_dir.name)}</title><style>{STYLE}</style></head><body><main>",
             f"<h1>pyrovae sweep <code>{html.escape(sweep_dir.name)}</code></h1>",
             f"<p class='sub'>study {html.escape(record['study_name'])} in {html.escape(record['storage'])}; "
             f"trials judged by the importance-sampled log p(x) of {record['eval_examples']} held-out examples "
             f"(K = {record['num_samples']}), pruned on the per-epoch {html.escape(record['metric'])}.</p>",
             "<div class='cards'>"]
    best = complete[0] if complete else None
    parts.append(_card(_fmt(best["value"], "{:.2f}") if best else "—", "best held-out log p(x), nats"))
    parts += [_card(str(count), f"{state.lower()} trials") for state, count in sorted(states.items())]
    parts.append("</div>")
    names = list(record["searches"])
    parts.append("<h2>Trials, best first</h2><div class='scroll'><table><tr><th>trial</th><th>state</th>"
                 "<th>log p(x)</th><th>± se</th><th>k &gt; 0.7</th><th>ELBO</th><th>epochs</th>"
                 + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "<th>run folder</th><th>seconds</th></tr>")
    for r in rows:
        share = r.get("pareto_k_above_0.7_share")
        parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in [
            str(r["number"]), r["state"].lower(), _fmt(r["value"]), _fmt(r.get("log_likelihood_stderr")),
            "" if share is None else f"{100 * share:.0f}%", _fmt(r.get("elbo")),
            "" if r["last_epoch"] is None else str(r["last_epoch"]),
            *[_fmt(r["params"].get(n), "{:.3g}") for n in names], str(r.get("run_dir", "")),
            _fmt(r["seconds"], "{:.0f}")]) + "</tr>")
    parts.append("</table></div>")
    if complete:
        parts.append("<h2>The objective against each option</h2>")
        parts.append(_image(_png(objective_figure(rows, record["searches"])), "objective",
                            "each complete trial's held-out log p(x)"))
    # PED-ANOVA (Optuna's default since 4.x, and no scikit-learn needed): how far each option's
    # distribution among the best trials is from its distribution over all of them
    evaluator_class = getattr(optuna.importance, "PedAnovaImportanceEvaluator", None)
    evaluator = evaluator_class() if evaluator_class is not None else None
    try:
        importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError, ImportError) as error:  # too few complete trials, nothing varied
        importances, why = None, str(error)
    if importances:
        name = type(evaluator).__name__ if evaluator is not None else "its default evaluator"
        parts.append("<h2>Parameter importances</h2>")
        parts.append(_image(_png(importance_figure(importances)), "importances",
                            f"Optuna's {name} over the complete trials: how far each option's values among the best "
                            "trials are from its values over all of them (with a dozen trials, a rough guide)"))
    elif complete:
        parts.append(f"<h2>Parameter importances</h2><p class='sub'>Not computed: {html.escape(why)}</p>")
    shown = []
    for r in complete[:BEST_RUNS_SHOWN]:
        folder = sweep_dir / str(r.get("run_dir", ""))
        picture = next((folder / f"{kind}.png" for kind in ("manifold", "samples", "reconstructions")
                        if (folder / f"{kind}.png").is_file()), None)
        if picture is not None:
            shown.append((r, picture))
    if shown:
        parts.append("<h2>The best runs</h2><div style='display:grid;grid-template-columns:repeat(auto-fit,"
                     "minmax(260px,1fr));gap:.6rem'>")
        for r, picture in shown:
            caption = f"trial {r['number']}: {r['value']:.2f} nats; " + ", ".join(
                f"{k} = {_fmt(v, '{:.3g}')}" for k, v in r["params"].items())
            parts.append(_image(base64.b64encode(picture.read_bytes()).decode(), picture.stem, caption))
        parts.append("</div>")
    parts.append(f"<h2>The space</h2><pre>{html.escape(json.dumps(record['searches'], indent=2))}</pre>"
                 "</main></body></html>")
    out = sweep_dir / "report.html"
    atomic_write(out, lambda f: f.write("\n".join(parts).encode()))
    return out
