"""Pyro's semi-supervised VAE recipe (``examples/vae/ss_vae_M2.py`` with its tutorial's
settings) written as a plain Pyro script, run side by side with ``pyrovae train --config
configs/m2-mnist-N.toml`` on the same labelled examples and the same validation split: the
validation and test accuracy of q(y|x) after each epoch of both, in one table.

The plain script follows the example as written: softplus MLPs whose hidden layers start at
N(0, 0.001); q(y|x) a clipped softmax, p(x|y,z) a clipped sigmoid scoring the grey pixels
(validation off); one ``SVI(model, config_enumerate(guide), Adam, TraceEnum_ELBO)`` and one
``SVI(model_classify, guide_classify, Adam, Trace_ELBO)`` whose classifier site is scaled by
``aux_loss_multiplier``; every epoch the unlabelled images (the training images less the
labelled ones) in shuffled batches, with a labelled batch at every batch index i where
i % int(N_train / N_labelled) == 1, each labelled batch stepped by both SVI objects.

    python benchmarks/m2_pyro_example.py --labels 100 --epochs 5
"""

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

import pyro
import pyro.distributions as dist
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, config_enumerate
from pyro.optim import Adam

import pyrovae
from pyrovae import config as cfg
from pyrovae import runs
from pyrovae.models import balanced_labelled_subset

from common import machine

HERE = Path(__file__).parent
EPSILON = 1e-7  # the example's clipping of the softmax and sigmoid outputs


def cat_broadcast(a, b):
    """[a, b] on the last dimension, the leading (enumerated, batch) dimensions broadcast."""
    shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return torch.cat([a.expand(shape + a.shape[-1:]), b.expand(shape + b.shape[-1:])], -1)


def softplus_mlp(sizes, init_std=0.001):
    """Linear layers with softplus between them; the hidden layers' weights and biases drawn
    from N(0, init_std^2), the output layer's left at PyTorch's default (as the example's MLP)."""
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(fan_in, fan_out)
        if i < len(sizes) - 2:
            nn.init.normal_(linear.weight, 0.0, init_std)
            nn.init.normal_(linear.bias, 0.0, init_std)
            layers += [linear, nn.Softplus()]
        else:
            layers.append(linear)
    return nn.Sequential(*layers)


class PyroExampleSSVAE(nn.Module):
    """Kingma et al.'s M2 as the example writes it: p(z) p(y) p(x | y, z) and q(y | x) q(z | x, y)."""

    def __init__(self, data_dim=784, num_classes=10, latent_dim=50, hidden=500, aux_loss_multiplier=46.0):
        super().__init__()
        self.num_classes, self.latent_dim, self.aux = num_classes, latent_dim, aux_loss_multiplier
        self.encoder_y = softplus_mlp([data_dim, hidden, num_classes])
        self.encoder_z = softplus_mlp([data_dim + num_classes, hidden, 2 * latent_dim])
        self.decoder = softplus_mlp([latent_dim + num_classes, hidden, data_dim])

    def class_probs(self, xs):
        return torch.softmax(self.encoder_y(xs), -1).clamp(EPSILON, 1 - EPSILON)

    def model(self, xs, ys=None):
        pyro.module("ss_vae", self)
        with pyro.plate("data", xs.shape[0]):
            zs = pyro.sample("z", dist.Normal(xs.new_zeros(self.latent_dim), 1.0).expand(
                [xs.shape[0], self.latent_dim]).to_event(1))
            ys = pyro.sample("y", dist.OneHotCategorical(xs.new_ones(self.num_classes) / self.num_classes), obs=ys)
            probs = torch.sigmoid(self.decoder(cat_broadcast(zs, ys))).clamp(EPSILON, 1 - EPSILON)
            pyro.sample("x", dist.Bernoulli(probs, validate_args=False).to_event(1), obs=xs)

    def guide(self, xs, ys=None):
        with pyro.plate("data", xs.shape[0]):
            if ys is None:
                ys = pyro.sample("y", dist.OneHotCategorical(self.class_probs(xs)))
            loc, log_scale = self.encoder_z(cat_broadcast(xs, ys)).split(self.latent_dim, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    def model_classify(self, xs, ys=None):
        pyro.module("ss_vae", self)
        with pyro.plate("data", xs.shape[0]):
            if ys is not None:
                with poutine.scale(scale=self.aux):
                    pyro.sample("y_aux", dist.OneHotCategorical(self.class_probs(xs)), obs=ys)

    def guide_classify(self, xs, ys=None):
        pass

    @torch.no_grad()
    def accuracy(self, xs, labels):
        return float((self.encoder_y(xs).argmax(-1) == labels).double().mean())


def the_data(config):
    """The pyrovae run's own split and labelled examples: (train x, train y, valid, test,
    labelled indices), images flattened in [0, 1]."""
    train, valid = runs.load_train_valid(config)
    test = runs.load_split(config, "test")
    labelled = balanced_labelled_subset(train.targets.numpy(), config["train"]["labels"], 10, config["train"]["seed"])

    def flat(dataset):
        return dataset.data.flatten(1).float(), dataset.targets.long()

    return flat(train), flat(valid), flat(test), labelled


def run_pyro_example(config, epochs, seed, log):
    (x, y), (x_valid, y_valid), (x_test, y_test), labelled = the_data(config)
    t = config["train"]
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model = PyroExampleSSVAE(aux_loss_multiplier=t["aux_weight"])
    optimizer = Adam({"lr": t["lr"], "betas": (t["adam_beta1"], 0.999)})
    losses = [SVI(model.model, config_enumerate(model.guide, "parallel"), optimizer, loss=TraceEnum_ELBO(max_plate_nesting=1)),
              SVI(model.model_classify, model.guide_classify, optimizer, loss=Trace_ELBO())]
    onehot = nn.functional.one_hot(y, 10).float()
    unlabelled = torch.ones(len(x), dtype=torch.bool)
    unlabelled[labelled] = False
    unlabelled = unlabelled.nonzero().squeeze(1)
    batch = t["batch_size"]
    periodic = int(len(x) / len(labelled))
    rows = []
    with pyro.validation_enabled(False):
        for epoch in range(epochs):
            start = time.perf_counter()
            unsup = unlabelled[torch.randperm(len(unlabelled))].split(batch)
            sup = labelled[torch.randperm(len(labelled))].split(batch)
            unsup_iter, sup_iter, taken = iter(unsup), iter(sup), 0
            for i in range(len(unsup) + len(sup)):
                if i % periodic == 1 and taken < len(sup):
                    index = next(sup_iter)
                    taken += 1
                    for svi in losses:
                        svi.step(x[index], onehot[index])
                else:
                    index = next(unsup_iter)
                    for svi in losses:
                        svi.step(x[index])
            row = {"epoch": epoch + 1, "valid_accuracy": model.accuracy(x_valid, y_valid),
                   "test_accuracy": model.accuracy(x_test, y_test), "seconds": time.perf_counter() - start}
            log(f"pyro example  {row}")
            rows.append(row)
    return rows


def run_pyrovae(config, epochs, out, log):
    config = cfg.merge(config, {"train": {"epochs": epochs}, "logging": {"plots": False}})
    _, history = runs.train_run(config, out, progress=False)
    rows = [{key: row[key] for key in ("epoch", "valid_accuracy", "test_accuracy", "seconds")} for row in history]
    for row in rows:
        log(f"pyrovae       {row}")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=int, default=100, choices=[100, 600, 1000, 3000])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["pyro", "pyrovae"], help="run one side alone (a long run of the reference)")
    parser.add_argument("--out", default=None, help="the result JSON (default benchmarks/results-m2-pyro-example-N.json)")
    args = parser.parse_args()
    config = cfg.validate(cfg.load_toml(HERE.parent / "configs" / f"m2-mnist-{args.labels}.toml"))
    config["train"]["seed"] = args.seed
    torch.manual_seed(args.seed)
    log = lambda line: print(line, flush=True)  # noqa: E731
    out = Path(args.out or HERE / f"results-m2-pyro-example-{args.labels}.json")
    previous = json.loads(out.read_text()) if out.is_file() else {}
    pyrovae_rows = (previous.get("pyrovae", []) if args.only == "pyro" else
                    run_pyrovae(config, args.epochs, HERE.parent / "runs" / f"m2-side-by-side-{args.labels}", log))
    pyro_rows = previous.get("pyro_example", []) if args.only == "pyrovae" else run_pyro_example(config, args.epochs,
                                                                                                   args.seed, log)
    print(f"\n| epoch | Pyro's example valid / test % | pyrovae valid / test % | test difference |")
    print("| --- | --- | --- | --- |")
    for a, b in zip(pyro_rows, pyrovae_rows):
        print(f"| {a['epoch']} | {100 * a['valid_accuracy']:.2f} / {100 * a['test_accuracy']:.2f} | "
              f"{100 * b['valid_accuracy']:.2f} / {100 * b['test_accuracy']:.2f} | "
              f"{100 * (b['test_accuracy'] - a['test_accuracy']):+.2f} |")
    out.write_text(json.dumps({"labels": args.labels, "epochs": max(len(pyro_rows), len(pyrovae_rows)), "seed": args.seed, "machine": machine(),
                               "pyro_example": pyro_rows, "pyrovae": pyrovae_rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
