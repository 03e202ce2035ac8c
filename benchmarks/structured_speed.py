"""Seconds per MNIST epoch of the structured models (M2, the CVAE, the HVAE) trained by
``pyrovae.fit`` with every option at its default, against a hand-written PyTorch loop of the same
model: the same networks (a copy of the model's own modules), the same batches, the same
dynamic binarization (:func:`pyrovae.fast.binarize.bernoulli_pixels`), the same Adam (foreach, lr
1e-3), the same loss written out with torch ops:

- ``m2`` (labels=100): for an unlabelled batch, U(x) = sum_y q(y|x) [log p(x|y,z_y) + log p(y)
  + log p(z_y) - log q(z_y|x,y) - log q(y|x)], the ten classes at once (a (10, N) batch, one z
  per class, as Pyro's parallel enumeration draws them); the labelled batch of each epoch as two
  steps of their own (the bound with y observed, then 46 x the classification term), as M2Loss;
- ``cvae`` (quadrants, 1 given): the baseline's Bernoulli log-likelihood of the rest pixels plus
  the conditional bound with the closed-form KL(q(z|x) || p(z|c)), c the given pixels with the
  baseline's guess (no gradient) in the rest;
- ``hvae``: log p(x|z1) + log p(z1|z2) + log p(z2) - log q(z1|x) - log q(z2|z1), one draw of each
  layer (Trace_ELBO's estimate).

pyrovae trains them on Pyro's trace path (``TraceEnum_ELBO`` for M2, ``TraceMeanField_ELBO``
for the CVAE, ``Trace_ELBO`` for the HVAE): the ratio is what the traces cost over the same
arithmetic. Each measurement trains ``--epochs`` epochs of the first ``--images`` training
images; the steady epochs' training seconds (``train_seconds``: the per-epoch report is not
timed, the plain loop has none) are scaled to 60000 images. pyrovae and the loop alternate in one
process, ``--repeats`` times.

    PYROVAE_DATA=../shared/data python benchmarks/structured_speed.py [--families m2,cvae,hvae]

Run it alone: another process on the same cores distorts every column.
"""

import argparse
import copy
import json
import math
import statistics
import time
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO

import pyrovae
from pyrovae.fast.binarize import bernoulli_pixels

from common import machine

HERE = Path(__file__).parent
RESULTS = HERE / "results-structured-speed-cpu.json"
FAMILIES = ("m2", "cvae", "hvae")
LOG_2PI = math.log(2 * math.pi)


def normal_log_prob(z, loc, scale):
    """sum over the last dimension of log N(z; loc, scale^2)."""
    return (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * LOG_2PI).sum(-1)


def bernoulli_log_prob(logits, x):
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def gaussian_kl(loc_q, scale_q, loc_p, scale_p):
    """KL(N(loc_q, scale_q^2) || N(loc_p, scale_p^2)), summed over the last dimension."""
    ratio = (scale_q / scale_p) ** 2
    return 0.5 * (ratio + ((loc_q - loc_p) / scale_p) ** 2 - 1 - ratio.log()).sum(-1)


# -- the hand-written losses, on a copy of the model's own networks ----------------------------------
def m2_bound(m, flat, onehot):
    """log p(x | y, z) + log p(y) + log p(z) - log q(z | x, y) over the leading dimensions of
    ``flat`` and ``onehot``, one z ~ q(z | x, y)."""
    loc, scale = m.encoder(torch.cat([flat, onehot], -1))
    z = loc + scale * torch.randn_like(loc)
    recon = bernoulli_log_prob(m.decoder(torch.cat([z, onehot], -1)).reshape(*flat.shape[:-1], -1), flat)
    return recon + normal_log_prob(z, 0.0, torch.ones_like(z)) - math.log(m.num_classes) - normal_log_prob(z, loc, scale)


def m2_unlabelled_loss(m, x):
    n, classes = len(x), m.num_classes
    flat = x.flatten(1)
    log_q_y = m.classifier(flat).log_softmax(-1).T  # (C, N)
    y = torch.eye(classes, dtype=x.dtype).unsqueeze(1).expand(classes, n, classes)
    bound = m2_bound(m, flat.expand(classes, n, flat.shape[-1]), y)
    return -(log_q_y.exp() * (bound - log_q_y)).sum()


def m2_labelled_losses(m, x, y, aux_weight):
    """The labelled batch's two steps, each loss computed when its step comes (after the first update)."""
    flat = x.flatten(1)
    onehot = F.one_hot(y, m.num_classes).to(x.dtype)
    return [lambda: -m2_bound(m, flat, onehot).sum(),
            lambda: -aux_weight * m.classifier(flat).log_softmax(-1).gather(1, y[:, None]).sum()]


def cvae_loss(m, x):
    flat = x.flatten(1)
    given, rest = flat * m.given_mask, flat[:, m.rest_index]
    baseline_logits = m.baseline(given).reshape(len(x), -1)
    context = given.index_copy(-1, m.rest_index, torch.sigmoid(baseline_logits)).detach()
    loc_p, scale_p = m.prior_net(context)
    loc_q, scale_q = m.encoder(flat)
    z = loc_q + scale_q * torch.randn_like(loc_q)
    recon = bernoulli_log_prob(m.decoder(torch.cat([z, context], -1)).reshape(len(x), -1), rest)
    bound = recon - gaussian_kl(loc_q, scale_q, loc_p, scale_p)
    return -bound.sum() - bernoulli_log_prob(baseline_logits, rest).sum()


def hvae_loss(m, x):
    flat = x.flatten(1)
    loc1, scale1 = m.encoder(x)
    z1 = loc1 + scale1 * torch.randn_like(loc1)
    loc2, scale2 = m.top_encoder(z1)
    z2 = loc2 + scale2 * torch.randn_like(loc2)
    prior_loc1, prior_scale1 = m.top_decoder(z2)
    recon = bernoulli_log_prob(m.decoder(z1).reshape(len(x), -1), flat)
    log_w = (recon + normal_log_prob(z1, prior_loc1, prior_scale1) + normal_log_prob(z2, 0.0, torch.ones_like(z2))
             - normal_log_prob(z1, loc1, scale1) - normal_log_prob(z2, loc2, scale2))
    return -log_w.sum()


def pyro_loss(family, model, x):
    """The loss Pyro's traces define for ``model`` on the batch ``x``."""
    if family == "m2":
        return TraceEnum_ELBO(max_plate_nesting=1).loss(model.model, model.guide, x)
    if family == "cvae":
        return (TraceMeanField_ELBO().loss(model.model, model.guide, x)
                + Trace_ELBO().loss(model.baseline_model, model.baseline_guide, x))
    return Trace_ELBO().loss(model.model, model.guide, x)


@torch.no_grad()
def check_same_loss(family, model, x, draws=200):
    """The hand-written loss and Pyro's agree in expectation on ``x`` (means of ``draws`` draws
    within four standard errors): the loop times the same objective."""
    plain = {"m2": m2_unlabelled_loss, "cvae": cvae_loss, "hvae": hvae_loss}[family]
    with pyro.validation_enabled(False):
        a = torch.tensor([pyro_loss(family, model, x) for _ in range(draws)], dtype=torch.float64)
    b = torch.stack([plain(model, x) for _ in range(draws)]).double()
    error = math.sqrt((a.var() + b.var()) / draws)
    if abs(a.mean() - b.mean()) > 4 * error + 1e-4 * abs(a.mean()):
        raise AssertionError(f"{family}: the loop's loss {b.mean():.3f} is not Pyro's {a.mean():.3f} (+- {error:.3f})")
    print(f"{family}: Pyro's loss {a.mean():.2f}, the loop's {b.mean():.2f} (+- {error:.2f}), {draws} draws", flush=True)


def make_model(family):
    if family == "m2":
        return pyrovae.M2((1, 28, 28))
    if family == "cvae":
        return pyrovae.CVAE((1, 28, 28))
    return pyrovae.HVAE((1, 28, 28))


def plain_loop(family, model, images, labels, epochs, batch_size, labelled, aux_weight=46.0):
    """Train a copy of ``model`` by hand: the training seconds of each epoch."""
    m = copy.deepcopy(model)
    optimizer = torch.optim.Adam(m.parameters(), lr=1e-3, foreach=True)
    loss_fn = {"m2": m2_unlabelled_loss, "cvae": cvae_loss, "hvae": hvae_loss}[family]

    def step(loss):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        order = torch.randperm(len(images))
        batches = [order[i:i + batch_size] for i in range(0, len(images), batch_size)]
        for i, index in enumerate(batches):
            step(loss_fn(m, bernoulli_pixels(images[index])))
            if family == "m2" and i == len(batches) // 2:  # the epoch's labelled batch
                xl = bernoulli_pixels(images[labelled])
                for term in m2_labelled_losses(m, xl, labels[labelled], aux_weight):
                    step(term())
        seconds.append(time.perf_counter() - started)
    return seconds


def pyrovae_fit(family, model, dataset, epochs, batch_size):
    options = {"labels": 100} if family == "m2" else {}
    history = pyrovae.fit(copy.deepcopy(model), dataset, epochs=epochs, batch_size=batch_size, progress=False,
                          **options)
    return [row["train_seconds"] for row in history]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--images", type=int, default=12800)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    train = pyrovae.datasets.load("mnist", split="train")
    images, labels = train.data[:args.images], train.targets[:args.images]
    dataset = (images, labels)  # M2 reads the labels; the others ignore them
    scale = 60000 / args.images
    table, raw = {}, {}
    for family in args.families.split(","):
        torch.manual_seed(0)
        model = make_model(family)
        check_same_loss(family, model, bernoulli_pixels(images[:64]))
        labelled = pyrovae.models.balanced_labelled_subset(labels.numpy(), 100, 10, 0)
        runs = {"pyrovae": [], "plain": []}
        for repeat in range(args.repeats):
            for name in (("pyrovae", "plain") if repeat % 2 == 0 else ("plain", "pyrovae")):
                seconds = (pyrovae_fit(family, model, dataset, args.epochs, args.batch_size) if name == "pyrovae" else
                           plain_loop(family, model, images, labels, args.epochs, args.batch_size, labelled))
                runs[name].append(seconds)
                print(f"{family} {name} (repeat {repeat + 1}): {[round(s * scale, 2) for s in seconds]} s/epoch",
                      flush=True)
        steady = {name: [s * scale for run in measured for s in run[1:]] for name, measured in runs.items()}
        row = {name: {"epoch": statistics.median(values), "min": min(values), "max": max(values)}
               for name, values in steady.items()}
        row["ratio"] = row["pyrovae"]["epoch"] / row["plain"]["epoch"]
        table[family], raw[family] = row, runs
    print("\n| model | pyrovae defaults (s/epoch), median [min, max] | plain PyTorch loop | ratio |")
    print("| --- | --- | --- | --- |")
    for family, row in table.items():
        a, b = row["pyrovae"], row["plain"]
        print(f"| {family} | {a['epoch']:.2f} [{a['min']:.2f}, {a['max']:.2f}] | {b['epoch']:.2f} "
              f"[{b['min']:.2f}, {b['max']:.2f}] | {row['ratio']:.2f} |")
    previous = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    previous.setdefault("table", {}).update(table)
    previous.setdefault("runs", {}).update(raw)
    previous.update(machine=machine(), images=args.images, epochs=args.epochs, repeats=args.repeats,
                    batch_size=args.batch_size, time=time.ctime())
    RESULTS.write_text(json.dumps(previous, indent=2) + "\n")


if __name__ == "__main__":
    main()
