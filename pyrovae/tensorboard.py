"""TensorBoard logging of a run: every metric per epoch, the learning rate and gradient norm,
and every few epochs the manifold (2-D latents) and reconstructions as images."""

from pathlib import Path

import numpy as np
import torch

from . import latent
from .plots import _as_images, _display_range, tile
from .train.callbacks import Callback

__all__ = ["TensorBoardLogger"]


class TensorBoardLogger(Callback):
    """A training callback writing TensorBoard event files into ``run_dir/tensorboard``."""

    def __init__(self, run_dir, examples, image_every=5, manifold_n=12):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        self.examples = examples[:16]
        self.image_every = image_every
        self.manifold_n = manifold_n

    def on_epoch_end(self, trainer, row):
        self.log(row, trainer.vae)

    def on_fit_end(self, trainer):
        self.close()

    def log(self, row, vae):
        """Writes one epoch's ``row`` (and, every few epochs, images of ``vae``)."""
        epoch = row["epoch"]
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                group = key.split("_")[0] if key.split("_")[0] in ("train", "test") else "optim"
                self.writer.add_scalar(f"{group}/{key}", value, epoch)
        if epoch == 1 or epoch % self.image_every == 0:
            self._images(vae, epoch)
        self.writer.flush()

    @torch.no_grad()
    def _images(self, vae, epoch):
        device = vae.device
        x = self.examples.to(device)
        pair = _as_images(vae, torch.cat([x, vae.reconstruct(x)]).cpu())
        if pair is None:
            return
        self.writer.add_image("reconstructions", np.ascontiguousarray(tile(_display_range(pair), len(x))), epoch, dataformats="HWC")
        if vae.latent_dim == 2:
            z = latent.manifold_latents(2, self.manifold_n).reshape(-1, 2).to(device)
            grid = _as_images(vae, vae.decode(z).cpu())
            self.writer.add_image("manifold", np.ascontiguousarray(tile(_display_range(grid), self.manifold_n)), epoch, dataformats="HWC")

    def close(self):
        self.writer.close()
