"""Training: :func:`fit`, a thin function over :class:`Trainer`, and the callbacks that watch a run."""

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

from ..config import train_options
from ..run_folder import RunFolder
from .callbacks import (BestCheckpoint, Callback, Checkpoint, CheckpointWriteError, EarlyStopping, FunctionCallback,
                        LogLikelihoodCurve, MetricsFile, ProgressBar)
from .trainer import METRIC_EXAMPLES, Trainer, TrainingDiverged, stream_seed

__all__ = ["fit", "Trainer", "TrainingDiverged", "Callback", "ProgressBar", "MetricsFile", "Checkpoint",
           "FunctionCallback", "CheckpointWriteError", "BestCheckpoint", "EarlyStopping", "LogLikelihoodCurve",
           "stream_seed", "METRIC_EXAMPLES"]


def fit(vae, train, test=None, *, valid=None, binarize: str = "auto", run_dir: Union[str, Path, "RunFolder", None] = None,
        resume: bool = False, progress: bool = True, callback: Optional[Callable] = None,
        callbacks: Sequence[Callback] = (), fast_path: bool = True, run_config: Optional[Dict] = None,
        trust: bool = False, **options) -> List[Dict]:
    """Trains ``vae`` by maximizing the ELBO (or IWAE bound) with SVI; returns the history, one
    dict per epoch (nats per example): ``train_objective`` (the running mean of the training
    objective, KL weight and free bits included), ``train_elbo``/``train_reconstruction``/
    ``train_kl`` (at the epoch's end, on the first ``report_examples`` training examples, 2000 by
    default, by the VAE's own model),
    the same ``test_*`` on ``test``, ``kl``, ``kl_weight``, ``lr``, ``grad_norm``, ``seconds``.

    ``options`` are the fields of :class:`~pyrovae.config.TrainConfig` (``loss``,
    ``num_particles``, ``estimator``, ``epochs``, ``batch_size``, ``lr``, ``device``, ``seed``,
    ``beta``, ``warmup_epochs``, ``free_bits``); a misspelt one is a TypeError naming the nearest.

    :param train: a tensor ``(N, *data_shape)``, an ArrayDataset or a dataset of (x, label).
    :param valid: validation data: its ELBO each epoch (``valid_elbo``), ``best.pt`` kept by it in
        the run folder, and early stopping (``patience``).
    :param binarize: ``"auto"`` (dynamic binarization of grey data under a Bernoulli likelihood),
        ``"dynamic"``, ``"threshold"`` or ``"none"``.
    :param run_dir: where ``checkpoint.pt`` and ``metrics.jsonl`` are written (atomically) each
        epoch; ``resume=True`` continues from its checkpoint exactly where it stopped.
    :param callback: ``fn(row, vae)`` after every epoch; ``callbacks``: Callback objects, called
        before the checkpoint and metrics writers.
    :param fast_path: see :class:`Trainer`.
    :param trust: resume from a checkpoint only ``torch.load(weights_only=False)`` reads (UNSAFE:
        such a file can run code; only for one you trust).
    """
    if "device" in options and not isinstance(options["device"], str):  # a torch.device works too
        options["device"] = str(options["device"])
    options = train_options(options)  # the Trainer resolves the family's "auto" values
    if isinstance(run_dir, RunFolder):
        run = run_dir
        run.config = run_config if run_config is not None else run.config
    else:
        run = RunFolder(run_dir, config=run_config) if run_dir is not None else None
    if run is not None:
        run.keep_checkpoints = options["keep_checkpoints"]
    trainer = Trainer(vae, options, binarize=binarize, run=run, fast_path=fast_path, trust=trust)
    watchers: List[Callback] = []
    if progress and trainer.context.is_main:
        watchers.append(ProgressBar())
    watchers += list(callbacks)  # before the writers: a callback may add to the epoch's row
    if options["patience"]:
        watchers.append(EarlyStopping(options["patience"]))
    if run is not None and trainer.context.is_main:
        watchers += [Checkpoint(options["checkpoint_every"], options["checkpoint_minutes"]), MetricsFile()]
        if valid is not None:
            watchers.append(BestCheckpoint())
    if callback is not None and trainer.context.is_main:
        watchers.append(FunctionCallback(callback))
    trainer.callbacks = watchers
    return trainer.fit(train, test, resume=resume, valid=valid)
