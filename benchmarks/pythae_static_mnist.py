"""pythae's own static-MNIST VAE recipe, run by pythae on this machine, evaluated by pythae's
estimator and by pyrovae's: is the 2.4-nat gap of ``configs/static-mnist-vae.toml`` pyrovae's?

pythae's reproduction script (``examples/scripts/reproducibility/vae.py`` in its repository)
trains 784-400-40 ReLU MLPs (the encoder's second head is log sigma^2, the decoder ends in a
sigmoid, the loss a summed binary cross-entropy plus the closed-form KL, averaged over the batch)
with its ``BaseTrainer``: Adam at 1e-4, batch 100, ``MultiStepLR`` at epochs 200, 350, 500, 750
and 1000 by 10^(-1/5), 500 epochs, the model of best validation loss kept as its final model,
then ``get_nll(test, n_samples=200)`` five times. This runs that recipe through pythae's classes
(not a copy of its script) on the same bits pyrovae trains on (Larochelle & Murray's
binarization, ``../shared/data/binarized-mnist``), then estimates the test log-likelihood of the
trained networks twice: with pythae's ``get_nll`` and with ``pyrovae.estimate.log_likelihood``
on a pyrovae VAE holding the same weights (log sigma = log sigma^2 / 2; the decoder's logits are
the sigmoid's input). Both estimators on one model say whether the evaluations agree; the number
itself says whether pythae's code reaches its published 89.78 here.

    PYROVAE_DATA=../shared/data python benchmarks/pythae_static_mnist.py [--epochs 500] [--repeats 1]

About 45 minutes for 500 epochs on 2 cores; run it alone.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(Path(__file__).parent))
from common import machine, pythae_networks  # noqa: E402

from pyrovae.run_folder import atomic_write_text  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results-pythae-static-mnist-cpu.json"
HIDDEN, LATENT, BATCH, LR = 400, 40, 100, 1e-4
MILESTONES, GAMMA = [200, 350, 500, 750, 1000], 10 ** (-1 / 5)
PYTHAE_REFERENCE = 89.78


def as_pyrovae(model):
    """A pyrovae VAE computing the same q(z|x) and p(x|z) as the trained pythae model."""
    import torch

    import pyrovae

    vae = pyrovae.VAE((1, 28, 28), latent_dim=LATENT, hidden=(HIDDEN,))
    with torch.no_grad():
        encoder, decoder = model.encoder, model.decoder
        vae.encoder.body[0].load_state_dict(encoder.body[1].state_dict())
        vae.encoder.loc.load_state_dict(encoder.loc.state_dict())
        vae.encoder.log_scale.weight.copy_(encoder.log_var.weight / 2)
        vae.encoder.log_scale.bias.copy_(encoder.log_var.bias / 2)
        vae.decoder.net[0].load_state_dict(decoder.logits[0].state_dict())
        vae.decoder.net[2].load_state_dict(decoder.logits[2].state_dict())
    return vae.eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=1, help="independent get_nll estimates (pythae: 5)")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args()

    import numpy as np
    import torch
    from pythae.data.datasets import BaseDataset
    from pythae.models import VAE, VAEConfig
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    import pyrovae

    def split(name):
        return pyrovae.datasets.load("binarized-mnist", split=name).data

    train, valid, test = split("train"), split("valid"), split("test")
    encoder, decoder = pythae_networks(HIDDEN, LATENT)
    torch.manual_seed(args.seed)
    model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=LATENT, reconstruction_loss="bce"),
                encoder=encoder, decoder=decoder)
    with tempfile.TemporaryDirectory() as out:
        config = BaseTrainerConfig(
            output_dir=out, num_epochs=args.epochs, learning_rate=LR, per_device_train_batch_size=BATCH,
            per_device_eval_batch_size=BATCH, no_cuda=True, steps_saving=None, optimizer_cls="Adam",
            scheduler_cls="MultiStepLR", scheduler_params={"milestones": MILESTONES, "gamma": GAMMA},
            seed=args.seed)
        trainer = BaseTrainer(model, train_dataset=BaseDataset(train, torch.zeros(len(train))),
                              eval_dataset=BaseDataset(valid, torch.zeros(len(valid))), training_config=config)
        start = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - start
        best = trainer._best_model.eval()  # what pythae saves as its final model: best validation loss

    flat_test = test.reshape(len(test), -1)
    start = time.perf_counter()
    with torch.no_grad():
        pythae_nll = [-best.get_nll(flat_test, n_samples=args.samples) for _ in range(args.repeats)]
    pythae_eval_seconds = time.perf_counter() - start
    start = time.perf_counter()
    estimates = pyrovae.estimate.log_likelihood(as_pyrovae(best), test, num_samples=args.samples, seed=0)
    pyrovae_eval_seconds = time.perf_counter() - start
    row = {
        "recipe": (f"pythae VAE + BaseTrainer, 784-{HIDDEN}-{LATENT} ReLU, BCE, Adam {LR}, batch {BATCH}, "
                   f"MultiStepLR {MILESTONES} by 10^(-1/5), best validation loss"),
        "epochs": args.epochs, "seed": args.seed, "num_samples": args.samples,
        "pythae_get_nll": float(np.mean(pythae_nll)), "pythae_get_nll_sd": float(np.std(pythae_nll)),
        "pythae_get_nll_repeats": [float(v) for v in pythae_nll],
        "pyrovae_log_likelihood_nll": float(-estimates.double().mean()),
        "pythae_reference": PYTHAE_REFERENCE,
        "train_seconds": train_seconds, "mean_epoch_seconds": train_seconds / args.epochs,
        "eval_seconds": {"pythae": pythae_eval_seconds, "pyrovae": pyrovae_eval_seconds},
        "machine": machine(),
    }
    print(json.dumps(row, indent=1))
    atomic_write_text(RESULTS, json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
    main()
