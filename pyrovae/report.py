"""The run report: one self-contained HTML page (figures inlined), laid out for a laptop screen:
the evaluation first, then training, then each figure in a titled section, then the config."""

import base64
import html
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .atomic_files import atomic_write

__all__ = ["write_report", "FIGURE_TITLES"]

# (title, what the figure shows) for each figure a run folder may hold, in the page's order
FIGURE_TITLES = {
    "manifold": ("Learned manifold", "decoder means over a grid of z pushed through the Gaussian inverse CDF "
                 "(Kingma & Welling, Figure 4)"),
    "samples": ("Samples", "decoder means at z ~ p(z)"),
    "reconstructions": ("Reconstructions", "test examples and the decoded posterior means of their encodings"),
    "interpolation": ("Interpolation", "decoded points on the path between the encodings of two test examples"),
    "attributes": ("Attribute vectors", "encodings moved along attribute directions, then decoded"),
    "scatter": ("Latent scatter", "posterior means of test examples, coloured by label"),
    "posterior": ("Posterior", "draws of the guide q(z|x) over the contours of the true posterior p(z|x) (a 2-D "
                  "latent: log p(x, z) on a grid), one test image a row"),
    "curves": ("Training curves", "ELBO, reconstruction and KL per epoch, nats per example"),
    "jensen_gap": ("Bounds against k", "ELBO = IWAE_1 <= IWAE_k <= log p(x), with Monte Carlo errors"),
}

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;background:#fafbfc;line-height:1.45}
main{max-width:960px;margin:0 auto;padding:1.5rem 1rem 3rem}
h1{font-size:1.5rem;margin:.2rem 0}h2{font-size:1.2rem;margin:2rem 0 .6rem;border-bottom:1px solid #e3e6ea;padding-bottom:.3rem}
.sub{color:#5b6472;font-size:.92rem}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:.6rem}
.card{background:#fff;border:1px solid #e3e6ea;border-radius:8px;padding:.6rem .8rem}
.card .v{font-size:1.35rem;font-weight:600}.card .k{color:#5b6472;font-size:.82rem}
.ok{color:#137333}.bad{color:#b3261e}
.scroll{overflow-x:auto;background:#fff;border:1px solid #e3e6ea;border-radius:8px}
table{border-collapse:collapse;font-size:.85rem;width:100%}th,td{padding:.3rem .6rem;text-align:right;white-space:nowrap}
th{background:#f1f3f5;position:sticky;top:0}tr:nth-child(even) td{background:#fafbfc}
figure{margin:0;background:#fff;border:1px solid #e3e6ea;border-radius:8px;padding:.6rem}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}figcaption{color:#5b6472;font-size:.85rem;margin-top:.4rem}
pre{background:#fff;border:1px solid #e3e6ea;border-radius:8px;padding:.8rem;font-size:.8rem;overflow-x:auto}
"""

METRIC_COLUMNS = [("epoch", "epoch", "{:d}"), ("train_objective", "train objective (nats)", "{:.2f}"),
                  ("train_elbo", "train ELBO (nats)", "{:.2f}"), ("valid_elbo", "valid ELBO (nats)", "{:.2f}"),
                  ("test_elbo", "test ELBO (nats)", "{:.2f}"), ("test_reconstruction", "test recon. (nats)", "{:.2f}"),
                  ("kl", "KL (nats)", "{:.2f}"), ("test_log_likelihood", "test log p(x) (nats)", "{:.2f}"),
                  ("lr", "lr", "{:.2g}"), ("seconds", "seconds", "{:.1f}")]


def _card(value, label, css=""):
    return f"<div class='card'><div class='v {css}'>{html.escape(value)}</div><div class='k'>{html.escape(label)}</div></div>"


def _evaluation(evaluation):
    if not evaluation:
        return ["<h2>Evaluation</h2><p class='sub'>Not evaluated yet: <code>pyrovae evaluate RUN</code>.</p>"]
    ok = evaluation.get("bound_check") == "ok"
    ll, se = evaluation["log_likelihood"], evaluation.get("log_likelihood_stderr") or 0.0
    sd = evaluation.get("log_likelihood_sd")
    parts = [f"<h2>Evaluation</h2><p class='sub'>{evaluation['num_examples']} {html.escape(evaluation['split'])} "
             f"examples, K = {evaluation['num_samples']} importance samples per example"
             + (f", {len(evaluation['repeats'])} repeats" if sd is not None else "") + ".</p><div class='cards'>",
             _card(f"{ll:.2f} ± {(sd if sd is not None else se):.2f}", "log p(x), nats per example"),
             _card(f"{evaluation['elbo']:.2f}", "ELBO, nats per example"),
             _card(f"{evaluation['jensen_gap']:.2f}", "Jensen gap log p(x) − ELBO, nats"),
             _card(f"{evaluation['bits_per_dim']:.4f}", "bits per dimension"),
             _card("ok" if ok else "VIOLATED", "ELBO ≤ IWAE_k ≤ log p(x) checked", "ok" if ok else "bad"),
             "</div>"]
    diagnostics = evaluation.get("importance_diagnostics")
    if diagnostics:
        flagged = diagnostics["pareto_k_above_0.7"]
        parts += ["<div class='cards'>",
                  _card(f"{flagged} ({100 * diagnostics['pareto_k_above_0.7_share']:.1f}%)",
                        "examples with Pareto k > 0.7 (estimate not to be trusted)", "bad" if flagged else "ok"),
                  _card(f"{diagnostics['pareto_k_0.5_to_0.7']}", "examples with 0.5 < k ≤ 0.7 (slow convergence)"),
                  _card("—" if diagnostics["pareto_k_max"] is None else f"{diagnostics['pareto_k_max']:.2f}",
                        "worst Pareto k (none below K = 25)"),
                  _card(f"{diagnostics['ess_median']:.0f} of {diagnostics['num_samples']}",
                        "median effective sample size"),
                  "</div>"]
    for key, title in (("ais", "AIS"), ("bdmc", "BDMC")):
        if evaluation.get(key):
            rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v if isinstance(v, (int, str)) else f'{v:.4g}'}</td></tr>"
                           for k, v in evaluation[key].items() if not isinstance(v, (list, dict)))
            parts.append(f"<h3>{title}</h3><div class='scroll'><table>{rows}</table></div>")
    bounds = evaluation.get("bounds") or {}
    if bounds.get("ks"):
        parts.append("<div class='scroll' style='margin-top:.6rem'><table><tr><th>k</th><th>IWAE_k (nats)</th>"
                     "<th>Monte Carlo error</th></tr>")
        for k, v, s in zip(bounds["ks"], bounds["values"], bounds["stderrs"]):
            parts.append(f"<tr><td>{k}</td><td>{v:.3f}</td><td>{s:.3f}</td></tr>")
        parts.append("</table></div>")
        for violation in bounds.get("violations", []):
            parts.append(f"<p class='bad'>{html.escape(violation)}</p>")
    return parts


def _metrics(history, max_rows=20):
    if not history:
        return []
    columns = [(key, title, fmt) for key, title, fmt in METRIC_COLUMNS if any(key in row for row in history)]
    step = max(1, -(-len(history) // max_rows))
    rows = [row for i, row in enumerate(history) if i % step == 0 or i == len(history) - 1]
    parts = ["<div class='scroll'><table><tr>" + "".join(f"<th>{html.escape(t)}</th>" for _, t, _ in columns) + "</tr>"]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row.get(key)
            cells.append("" if value is None else html.escape(fmt.format(value)))
        parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    parts.append("</table></div>")
    if step > 1:
        parts.append(f"<p class='sub'>Every {step}th of {len(history)} epochs; all are in metrics.jsonl.</p>")
    return parts


def _figure(name, path):
    title, caption = FIGURE_TITLES.get(name, (name.replace("_", " ").capitalize(), ""))
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return (f"<h2 id='{html.escape(name)}'>{html.escape(title)}</h2><figure><img alt='{html.escape(title)}' "
            f"src='data:image/png;base64,{data}'><figcaption>{html.escape(caption)}</figcaption></figure>")


def write_report(run_dir, figures: Sequence[Tuple[str, Path]], config_text: str, history: List[Dict],
                 evaluation: Optional[Dict] = None, model: Optional[Dict] = None,
                 program: Optional[str] = None) -> Path:
    """Writes ``run_dir/report.html`` atomically and returns its path. ``program``: the
    ``file.py:NAME`` of a user's Pyro program evaluated into the folder (no training section; its
    ``program.toml`` is the configuration shown)."""
    run_dir = Path(run_dir)
    figures = dict(figures)
    summary = ""
    if program is not None:
        summary = f"a user's Pyro program, {program}"
    if model:
        summary = (f"{'-'.join(map(str, model['data_shape']))} data, {model['latent_dim']}-D latent, "
                   f"{model['network']} {model.get('hidden')} networks, {model['prior'].get('kind')} prior, "
                   f"{model['likelihood'].get('kind')} likelihood")
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>pyrovae {'evaluation' if program else 'run'} {html.escape(run_dir.name)}</title>"
             f"<style>{STYLE}</style></head><body><main>",
             f"<h1>pyrovae {'evaluation' if program else 'run'} <code>{html.escape(run_dir.name)}</code></h1>",
             f"<p class='sub'>{html.escape(summary)}"
             + (f"{'; ' if summary else ''}{len(history)} epochs trained." if program is None else ".") + "</p>"]
    parts += _evaluation(evaluation)
    if "jensen_gap" in figures:
        parts.append(_figure("jensen_gap", figures.pop("jensen_gap")))
    if program is None:
        parts.append("<h2>Training</h2>")
        parts += _metrics(history)
    for name in [n for n in FIGURE_TITLES if n in figures] + [n for n in figures if n not in FIGURE_TITLES]:
        parts.append(_figure(name, figures[name]))
    parts.append(f"<h2>Configuration</h2><details open><summary class='sub'>"
                 f"{'program.toml' if program else 'config.toml'}</summary>"
                 f"<pre>{html.escape(config_text)}</pre></details></main></body></html>")
    out = run_dir / "report.html"
    atomic_write(out, lambda f: f.write("\n".join(parts).encode()))
    return out
