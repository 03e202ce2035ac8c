"""Train pyrovae's VAE with a PyTorch Lightning Trainer: several GPUs, mixed precision and your
own loggers come from Lightning (pip install 'pyrovae[lightning]').

    PYROVAE_DATA=../shared/data python examples/train_lightning.py --epochs 5 --devices auto
"""

import argparse

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

import pyrovae
from pyrovae.lightning import VAEModule
from smoke import budget, shrink


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--latent-dim", type=int, default=2)
    parser.add_argument("--devices", default="auto")
    parser.add_argument("--precision", default="32-true", help="e.g. bf16-mixed on GPUs")
    args = parser.parse_args()
    train = shrink(pyrovae.datasets.load("mnist", split="train"))
    test = shrink(pyrovae.datasets.load("mnist", split="test"))
    train_loader = DataLoader(TensorDataset(train.data), batch_size=128, shuffle=True)
    test_loader = DataLoader(TensorDataset(test.data), batch_size=1000)
    module = VAEModule(pyrovae.VAE((1, 28, 28), latent_dim=args.latent_dim), loss="meanfield", binarize="dynamic")
    trainer = L.Trainer(max_epochs=budget(args.epochs, 1), accelerator="auto", devices=args.devices, precision=args.precision,
                        enable_checkpointing=False, logger=False)
    trainer.fit(module, train_loader, test_loader)
    print({k: float(v) for k, v in trainer.callback_metrics.items()})
    torch.save(module.vae.state_dict(), "lightning_vae.pt")


if __name__ == "__main__":
    main()
