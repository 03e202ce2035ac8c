"""``fit`` against the plainest loop at full scale (issue #42); ``tests/test_training_parity.py`` is
the same harness at small sizes, in CI.

Three parts, each from the same initial weights:

- ``gated-conv``: van den Berg et al.'s gated convolutional VAE on static MNIST, pyrovae's ``fit``
  against the plain-PyTorch port of their code (``sylvester_static_mnist.py``) on the same batches
  with the same noise (``torch.manual_seed(seed)``, fit's permutation), step by step: the loss of
  each step (the port's batch mean times the batch) and the largest parameter difference after
  steps 1, 10 and the last, once with PyTorch's Adamax eps (1e-8 on pyrovae's summed loss) and
  once with the port's eps carried over to the sum (1e-7 x batch).
- ``mnist``: the package VAE (784-400-50 MLP, MNIST) under each guide, ``fit`` against Pyro's
  ``Trace_ELBO`` as a module with ``torch.optim.Adam``, same batches and noise: the largest
  parameter difference after an epoch of 1000 images (float32: the fast path's sums against the
  traces').
- ``linear-gaussian``: the issue's table (7-d data, 3-d latent, affine networks, Gaussian(0.5), 256
  examples, 300 epochs of batches of 64 at lr 1e-2), ``fit`` against Pyro's loop over seeds: once on
  the same batches and noise (the difference: zero), once each with its own (the spread a single
  run draws from): the ELBO (2000 particles) and the exact Jensen gap, mean and standard deviation;
  at the issue's constant lr and with the lr annealed to 0 over the same epochs (cosine).

    PYROVAE_DATA=../shared/data python benchmarks/training_parity.py [--parts gated-conv,mnist,linear-gaussian]
"""

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch
from pyro.infer import Trace_ELBO

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402
import sylvester_static_mnist as sylvester  # noqa: E402

import pyrovae  # noqa: E402
from pyrovae.exact import linear_gaussian_log_likelihood  # noqa: E402
from pyrovae.run_folder import atomic_write_text  # noqa: E402
from pyrovae.train import Callback, stream_seed  # noqa: E402

RESULTS = Path(__file__).parent / "results-training-parity-cpu.json"


class StepLosses(Callback):
    def __init__(self):
        self.losses = []

    def on_step_end(self, trainer, step, loss):
        self.losses.append(float(loss))


def max_difference(a, b):
    return max(float((p - q).abs().max()) for p, q in zip(a, b))


def gated_conv(args):
    """pyrovae against the port of van den Berg et al.'s code, step by step."""
    x = pyrovae.datasets.load("binarized-mnist", "train").data[:args.steps * sylvester.BATCH]
    x = x.reshape(-1, 1, 28, 28).float()
    warmup, seed, out = 2.0, 1, {}
    checkpoints = sorted({1, min(10, args.steps), args.steps})
    for label, eps in (("pytorch-eps-1e-8", 1e-8), ("port-eps-carried-1e-5", 1e-7 * sylvester.BATCH)):
        reference = sylvester.reference_model("no_flow", seed)
        vae = sylvester.pyrovae_model("no_flow")
        sylvester.copy_reference_weights(reference, vae)
        # the port, on fit's batches and noise, checkpointed at the same steps
        torch.manual_seed(seed)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(stream_seed(seed, 0)))
        optimizer = torch.optim.Adamax(reference.parameters(), lr=sylvester.LR, eps=1e-7)
        port_losses, port_states = [], {}
        started = time.perf_counter()
        for step in range(args.steps):
            beta = min(step / args.steps / warmup, 1.0)
            bce, kl = sylvester.reference_negative_log_weights(reference, x[order[step * 100:(step + 1) * 100]])
            loss = (bce + beta * kl).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            port_losses.append(float(loss) * sylvester.BATCH)
            if step + 1 in checkpoints:
                port_states[step + 1] = [p.detach().clone() for p in ours_order(reference)]
        port_seconds = time.perf_counter() - started
        # one fit over all steps; the intermediate states from a callback
        trained = copy.deepcopy(vae)
        recorder = StepLosses()
        states = {}

        class Snapshot(Callback):
            def on_step_end(self, trainer, step, loss):
                if step + 1 in checkpoints:
                    states[step + 1] = [p.detach().clone() for p in trainer.vae.parameters()]

        started = time.perf_counter()
        pyrovae.fit(trained, x, epochs=1, batch_size=sylvester.BATCH, lr=sylvester.LR, optimizer="adamax",
                    optimizer_eps=eps, warmup_epochs=warmup, loss="trace", seed=seed, binarize="none", progress=False,
                    callbacks=[recorder, Snapshot()], report_examples=100, compile="off")
        fit_seconds = time.perf_counter() - started
        differences = {steps: max_difference(states[steps], port_states[steps]) for steps in checkpoints}
        loss_gaps = [a - b for a, b in zip(recorder.losses, port_losses)]
        out[label] = {"eps": eps, "max_parameter_difference_after_steps": differences,
                      "first_losses_fit": recorder.losses[:3], "first_losses_port": port_losses[:3],
                      "max_abs_loss_difference": max(abs(g) for g in loss_gaps),
                      "mean_loss_difference_last_10": statistics.mean(loss_gaps[-10:]),
                      "seconds": {"fit": fit_seconds, "port": port_seconds}}
        print("gated-conv", label, json.dumps(out[label]), flush=True)
    return {"steps": args.steps, "warmup_epochs": warmup, **out}


def ours_order(reference):
    """The port's parameters in the order of pyrovae's VAE (encoder, then decoder)."""
    modules = [reference.q_nn, reference.q_mean, reference.q_var, reference.p_nn, reference.p_logits]
    return [p for m in modules for p in m.parameters()]


def mnist(args):
    """The package VAE under each guide, fit against Pyro's module-interface loop."""
    x = pyrovae.datasets.load("mnist", "train").data[:1000].reshape(-1, 784).float()
    x = (x > 0.5).float()
    out = {}
    for guide in ("meanfield", "lowrank", "planar", "iaf"):
        torch.manual_seed(0)
        vae = pyrovae.VAE(784, latent_dim=50, hidden=(400,), guide=guide)
        fitted, looped = copy.deepcopy(vae), copy.deepcopy(vae)
        pyrovae.fit(fitted, x, epochs=1, batch_size=100, lr=1e-3, loss="trace", seed=2, binarize="none",
                    progress=False, compile="off")
        pyro.clear_param_store()
        loss_fn = Trace_ELBO(max_plate_nesting=1)(looped.model, looped.guide)
        optimizer = torch.optim.Adam(looped.parameters(), lr=1e-3)
        torch.manual_seed(2)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(stream_seed(2, 0)))
        for step in range(10):
            optimizer.zero_grad()
            loss_fn(x[order[step * 100:(step + 1) * 100]]).backward()
            optimizer.step()
        out[guide] = {"max_parameter_difference": max_difference(list(fitted.parameters()), list(looped.parameters())),
                      "largest_parameter": max(float(p.abs().max()) for p in looped.parameters())}
        print("mnist", guide, json.dumps(out[guide]), flush=True)
    return out


def linear_gaussian(args):
    """The issue's table over seeds: same noise (identical) and own noise (the spread)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 3, generator=generator) @ torch.randn(7, 3, generator=generator).T
    x = x + 0.5 * torch.randn(256, 7, generator=generator)
    epochs = args.linear_epochs

    def elbo(vae):
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(0)  # the same draws for every model: equal parameters give equal numbers
            return -Trace_ELBO(num_particles=2000, vectorize_particles=True, max_plate_nesting=1).loss(
                vae.model, vae.guide, x) / len(x)

    def loop(vae, seed, same_noise, schedule):
        pyro.clear_param_store()
        loss_fn = Trace_ELBO(max_plate_nesting=1)(vae.model, vae.guide)
        optimizer = torch.optim.Adam(vae.parameters(), lr=1e-2)
        annealing = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs) if schedule == "cosine" else None
        torch.manual_seed(seed if same_noise else seed + 1000)
        for epoch in range(epochs):
            order = (torch.randperm(256, generator=torch.Generator().manual_seed(stream_seed(seed, epoch)))
                     if same_noise else torch.randperm(256))
            for step in range(4):
                optimizer.zero_grad()
                loss_fn(x[order[step * 64:(step + 1) * 64]]).backward()
                optimizer.step()
            if annealing is not None:
                annealing.step()

    out = {}
    for schedule in args.linear_schedules.split(","):
        out[schedule] = {}
        for guide in ("meanfield", "lowrank", "iaf"):
            rows = {"fit": [], "loop-same-noise": [], "loop-own-noise": []}
            parameter_gaps = []
            for seed in range(args.linear_seeds):
                torch.manual_seed(seed)
                base = pyrovae.VAE(7, latent_dim=3, hidden=(), likelihood={"kind": "gaussian", "scale": 0.5},
                                   guide=guide)
                runs = {name: copy.deepcopy(base) for name in rows}
                pyrovae.fit(runs["fit"], x, epochs=epochs, loss="trace", batch_size=64, lr=1e-2, seed=seed,
                            lr_schedule=schedule, progress=False)
                loop(runs["loop-same-noise"], seed, True, schedule)
                loop(runs["loop-own-noise"], seed, False, schedule)
                parameter_gaps.append(max_difference(list(runs["fit"].parameters()),
                                                     list(runs["loop-same-noise"].parameters())))
                for name, vae in runs.items():
                    value = elbo(vae)
                    rows[name].append({"elbo": value,
                                       "gap": float(linear_gaussian_log_likelihood(vae, x).mean()) - value})
                print("linear-gaussian", schedule, guide, seed, {k: v[-1] for k, v in rows.items()}, flush=True)
            summary = {}
            for name, values in rows.items():
                elbos, gaps = [r["elbo"] for r in values], [r["gap"] for r in values]
                summary[name] = {"elbo_mean": statistics.mean(elbos), "elbo_sd": statistics.stdev(elbos),
                                 "gap_mean": statistics.mean(gaps), "gap_sd": statistics.stdev(gaps), "runs": values}
            summary["fit_minus_loop_same_noise_max"] = max(
                abs(a["elbo"] - b["elbo"]) for a, b in zip(rows["fit"], rows["loop-same-noise"]))
            summary["fit_minus_loop_same_noise_max_parameter"] = max(parameter_gaps)
            out[schedule][guide] = summary
            print("linear-gaussian", schedule, guide, json.dumps({k: {m: v for m, v in row.items() if m != "runs"}
                                                                  if isinstance(row, dict) else row
                                                                  for k, row in summary.items()}), flush=True)
    return {"epochs": epochs, "seeds": args.linear_seeds, **out}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="gated-conv,mnist,linear-gaussian")
    parser.add_argument("--steps", type=int, default=30, help="gated-conv: steps of 100 images")
    parser.add_argument("--linear-epochs", type=int, default=300)
    parser.add_argument("--linear-seeds", type=int, default=8)
    parser.add_argument("--linear-schedules", default="constant,cosine",
                        help="the issue's constant lr, and the lr annealed to 0 (cosine, per epoch) on both sides")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    results["setup"] = {"machine": machine(), "torch": torch.__version__, "pyro": pyro.__version__,
                        "threads": torch.get_num_threads()}
    parts = {"gated-conv": gated_conv, "mnist": mnist, "linear-gaussian": linear_gaussian}
    for part in args.parts.split(","):
        results[part] = parts[part](args)
        atomic_write_text(out, json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
