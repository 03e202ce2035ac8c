"""``VAEModule``: the same VAE, model, guide and ELBO as a Lightning ``LightningModule``, for
users who bring their own Trainer (several GPUs, mixed precision, their loggers).

    import lightning as L
    module = pyrovae.lightning.VAEModule(pyrovae.VAE((1, 28, 28), latent_dim=2), loss="meanfield")
    L.Trainer(max_epochs=10, accelerator="auto", devices="auto").fit(module, train_loader, test_loader)

Needs the optional extra: ``pip install pyrovae[lightning]``.
"""


try:
    import lightning as L
except ImportError as error:  # pragma: no cover
    raise ImportError("pyrovae.lightning needs Lightning: pip install 'pyrovae[lightning]'") from error

from .fast.binarize import bernoulli_pixels
from .estimate.importance import elbo_terms
from .config import train_options
from .run_folder import load
from .train.trainer import make_optimizer
from .infer.objectives import ELBOLoss, KLSchedule, check_training_options

__all__ = ["VAEModule"]


def _examples(batch):
    return batch[0] if isinstance(batch, (tuple, list)) else batch


class VAEModule(L.LightningModule):
    """Minimizes -objective per example with the VAE's Pyro ELBO.

    ``options`` are the training options of :func:`pyrovae.fit` (:class:`~pyrovae.config.TrainConfig`:
    ``loss``, ``num_particles``, ``estimator``, ``lr``, ``beta``, ``warmup_epochs``, ``free_bits``);
    the Trainer's own (``epochs``, ``batch_size``, ``device``, ``seed``) belong to Lightning here.

    :param binarize: ``"dynamic"`` resamples grey pixels as Bernoulli draws each step (for a
        Bernoulli likelihood on MNIST-like data), ``"none"`` uses the batches as they come.
    """

    def __init__(self, vae, binarize="none", **options):
        super().__init__()
        if binarize not in ("dynamic", "none"):
            raise ValueError(f"binarize must be 'dynamic' or 'none'; got {binarize!r}")
        self.vae = vae
        self.options = train_options(options, vae)
        o = self.options
        check_training_options(vae, o["loss"], o["num_particles"], o["estimator"], o["free_bits"])
        schedule = KLSchedule(o["beta"], o["warmup_epochs"], o["free_bits"])
        self.objective = ELBOLoss(vae, o["loss"], o["num_particles"], schedule, o["estimator"])
        self.lr = o["lr"]
        self.binarize = binarize
        self.save_hyperparameters(ignore=["vae"])

    @classmethod
    def from_run(cls, run_dir, binarize="none", trust=False, **options):
        """A module around the trained VAE of a pyrovae run folder, read as every pyrovae reader
        reads it (``torch.load(weights_only=True)``; ``trust=True`` is unsafe), to go on training
        or evaluating it under Lightning."""
        return cls(load(run_dir, trust=trust).train(), binarize=binarize, **options)

    def _prepare(self, batch):
        x = _examples(batch).float()
        return bernoulli_pixels(x) if self.binarize == "dynamic" else x

    def training_step(self, batch, batch_idx):
        x = self._prepare(batch)
        if not self.objective.kl_schedule.is_constant and self.trainer is not None and self.trainer.num_training_batches:
            self.objective.set_progress(self.current_epoch + batch_idx / self.trainer.num_training_batches)
        loss = self.objective(x) / len(x)
        self.log("train_objective", -loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(x), sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x = self._prepare(batch)
        terms = elbo_terms(self.vae, x)
        for key, value in terms.items():
            self.log(f"val_{key}", value.mean(), on_epoch=True, batch_size=len(x), sync_dist=True)

    def configure_optimizers(self):
        return make_optimizer(self.vae.parameters(), {**self.options, "lr": self.lr})
