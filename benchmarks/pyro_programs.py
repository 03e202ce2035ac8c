"""Pyro programs as their authors write them, each trained by Pyro's own SVI and weighed by pyrovae,
beside an importance sampler written out by hand from the same networks: per program, the mean
per-example log-likelihood both give, their Monte Carlo errors, the largest per-example difference
in units of the combined error, how pyrovae weighed the program (its diagnostics), and the time of
each. Nothing is fetched: the programs are ours, in the styles of Pyro's examples
(``tests/pyro_style_programs.py``; ProdLDA in ``examples/prodlda.py``), on synthetic data.

- ``vae``: examples/vae/vae.py's VAE with a sizeless ``pyro.plate("data")``;
- ``cvae-masked``: examples/cvae's CVAE, its observed pixels picked by boolean indexing, log p(y | x);
- ``ssvae``: examples/vae/ss_vae_M2.py's SSVAE, log p(x) with the label summed over ten values, and
  log p(x, y) with it observed;
- ``dmm``: examples/dmm.py's deep Markov model on sequences of different lengths, masked;
- ``prodlda``: the tutorial's ProdLDA, per-document log p(w) and the held-out perplexity.

    python benchmarks/pyro_programs.py --samples 2000
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import pyrovae  # noqa: E402
from common import machine  # noqa: E402
import pyro_style_programs as styles  # noqa: E402


def _weighed(name, ours_fn, reference_fn):
    """One row: pyrovae's estimate and the reference's, their errors and times."""
    started = time.perf_counter()
    ours, ours_se, diagnostics = ours_fn()
    ours_seconds = time.perf_counter() - started
    started = time.perf_counter()
    reference, reference_se = reference_fn()
    reference_seconds = time.perf_counter() - started
    sigmas = (ours.double() - reference).abs() / (ours_se.double() ** 2 + reference_se ** 2).sqrt().clamp_min(1e-12)
    trusted = diagnostics.pareto_k < 0.5
    summary = diagnostics.summary()
    return {"program": name, "examples": len(ours),
            "pyrovae_mean": float(ours.double().mean()), "reference_mean": float(reference.mean()),
            "pyrovae_mean_stderr": float((ours_se.double() ** 2).sum().sqrt() / len(ours)),
            "reference_mean_stderr": float((reference_se ** 2).sum().sqrt() / len(ours)),
            "largest_difference_in_stderr": float(sigmas.max()),
            "largest_difference_in_stderr_where_k_below_0.5": float(sigmas[trusted].max()) if trusted.any() else None,
            "share_k_below_0.5": float(trusted.double().mean()), "weighting": summary.get("weighting", {}),
            "pyrovae_seconds": ours_seconds, "reference_seconds": reference_seconds}


def _estimate(net, x, samples, **options):
    return pyrovae.log_likelihood(net, x, samples, seed=0, return_stderr=True, return_diagnostics=True, **options)


def run(samples, quick):
    steps = 60 if quick else 300
    rows, train_seconds = [], {}

    started = time.perf_counter()
    x, _ = styles.binary_data(n=300, dim=30)
    torch.manual_seed(0)  # each program's initial weights
    vae = styles.train_with_pyro_svi(styles.PlateStyleVAE("sizeless", x_dim=30), x, steps=steps)
    train_seconds["vae"] = time.perf_counter() - started

    def vae_reference():
        with torch.no_grad():
            loc, scale = vae.encoder(x[:100])
            z = loc + scale * torch.randn((samples, *loc.shape), generator=torch.Generator().manual_seed(1))
            log_w = (torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
                     + torch.distributions.Bernoulli(probs=vae.decoder(z)).log_prob(x[:100]).sum(-1)
                     - torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)).double()
        return styles.logmeanexp_with_stderr(log_w)
    _estimate(vae, x[:4], 50)  # the first estimate pays the process's one-time costs (importing arviz-stats)
    rows.append(_weighed("vae (sizeless plate)", lambda: _estimate(vae, x[:100], samples), vae_reference))

    started = time.perf_counter()
    images, _ = styles.binary_data(n=300, dim=16)
    inputs = images.clone()
    inputs[:, 8:] = -1
    torch.manual_seed(0)
    cvae = styles.train_with_pyro_svi(styles.PyroExampleMaskedCVAE(x_dim=16), inputs, images, steps=steps)
    train_seconds["cvae-masked"] = time.perf_counter() - started
    rows.append(_weighed(
        "cvae-masked: log p(y | x)", lambda: _estimate(cvae, inputs[:100], samples, args=(images[:100],)),
        lambda: styles.logmeanexp_with_stderr(styles.masked_cvae_reference_weights(
            cvae, inputs[:100], images[:100], samples, torch.Generator().manual_seed(1)))))

    started = time.perf_counter()
    images, which = styles.binary_data(n=300, dim=20, seed=1)
    labels = F.one_hot(which, 10).float()
    torch.manual_seed(0)
    ssvae = styles.train_ssvae_as_pyro_does(styles.PyroExampleSSVAE(x_dim=20), images, images[:40], labels[:40],
                                            steps=steps)
    train_seconds["ssvae"] = time.perf_counter() - started
    rows.append(_weighed("ssvae: log p(x), label summed", lambda: _estimate(ssvae, images[:100], samples),
                         lambda: styles.ssvae_reference_log_marginal(ssvae, images[:100], samples,
                                                                     torch.Generator().manual_seed(1))))
    rows.append(_weighed(
        "ssvae: log p(x, y), label observed", lambda: _estimate(ssvae, images[:100], samples, args=(labels[:100],)),
        lambda: styles.logmeanexp_with_stderr(styles.ssvae_reference_log_joint(
            ssvae, images[:100], labels[:100], samples, torch.Generator().manual_seed(1)))))

    started = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(2, 9, (100,), generator=generator)
    lengths[0] = 8
    walk = (torch.rand(100, 8, 5, generator=generator) < 0.2).float()
    sequences = (walk.cumsum(1) % 2) * styles.sequence_mask(lengths, 8)[..., None]
    arguments = styles.dmm_arguments(sequences, lengths)
    torch.manual_seed(0)
    dmm = styles.train_with_pyro_svi(styles.PyroExampleDMM(input_dim=5), *arguments, steps=steps)
    train_seconds["dmm"] = time.perf_counter() - started
    rows.append(_weighed("dmm: log p(x_1:T), masked", lambda: _estimate(dmm, sequences, samples, args=arguments[1:]),
                         lambda: styles.logmeanexp_with_stderr(styles.dmm_reference_weights(
                             dmm, sequences, lengths, samples, torch.Generator().manual_seed(1)))))

    started = time.perf_counter()
    docs = styles.topic_corpus(1000)
    train_docs, held_out = docs[:750], docs[750:850]
    torch.manual_seed(0)
    prodlda = styles.train_prodlda_as_the_tutorial_does(styles.PyroExampleProdLDA(), train_docs,
                                                        epochs=5 if quick else 30)
    train_seconds["prodlda"] = time.perf_counter() - started
    prodlda_row = _weighed("prodlda: log p(w)", lambda: _estimate(prodlda, held_out, samples),
                           lambda: styles.logmeanexp_with_stderr(styles.prodlda_reference_weights(
                               prodlda, held_out, samples, torch.Generator().manual_seed(1))))
    ours = pyrovae.log_likelihood(prodlda, held_out, samples, seed=0)
    unigram = (train_docs.sum(0) + 1) / (train_docs.sum() + train_docs.shape[1])
    prodlda_row.update(perplexity=pyrovae.estimate.perplexity(ours, held_out),
                       unigram_perplexity=float(torch.exp(-(held_out * unigram.log()).sum() / held_out.sum())),
                       vocabulary=docs.shape[1])
    rows.append(prodlda_row)
    return rows, train_seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="brief training, for a smoke run")
    parser.add_argument("--out", default=str(HERE / "results-pyro-programs-cpu.json"))
    args = parser.parse_args()
    rows, train_seconds = run(args.samples, args.quick)
    print(f"{'program':38} {'pyrovae':>10} {'reference':>10} {'max |d|/se':>10} {'k<0.5':>6} {'ours s':>7} {'ref s':>6}"
          "  weighting")
    for row in rows:
        print(f"{row['program']:38} {row['pyrovae_mean']:10.3f} {row['reference_mean']:10.3f} "
              f"{row['largest_difference_in_stderr']:10.2f} {row['share_k_below_0.5']:6.0%} "
              f"{row['pyrovae_seconds']:7.2f} {row['reference_seconds']:6.2f}  {row['weighting']}")
    result = {"machine": machine(), "samples": args.samples, "quick": args.quick, "rows": rows,
              "train_seconds": train_seconds}
    if not args.quick:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
