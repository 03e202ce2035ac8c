"""Things that watch a run, as callbacks on one list (the shape of Lightning's and pythae's
loops): each hook gets the :class:`~pyrovae.train.Trainer`, which holds the VAE, the options, the
history and the run folder."""

import time
import warnings
from typing import Callable, Dict

from tqdm.auto import tqdm

from ..estimate.importance import log_likelihood
from ..protocol import family

__all__ = ["Callback", "ProgressBar", "MetricsFile", "Checkpoint", "CheckpointWriteError", "BestCheckpoint",
           "EarlyStopping", "LogLikelihoodCurve", "FunctionCallback", "format_row", "best_epoch", "selection_metric", "BEST"]


class Callback:
    """Base class: override the hooks you need."""

    def on_fit_start(self, trainer) -> None:
        pass

    def on_epoch_start(self, trainer) -> None:
        pass

    def on_step_end(self, trainer, step: int, loss) -> None:
        """``loss``: the step's loss tensor (-objective summed over the minibatch). A compiled
        run that trains several steps in one call (``Trainer.steps_per_call``) reports each of
        them after the call, in order, with ``trainer.step`` and the state at the call's end."""

    def on_epoch_end(self, trainer, row: Dict[str, float]) -> None:
        pass

    def on_fit_end(self, trainer) -> None:
        pass


def format_row(row):
    parts = [f"epoch {row['epoch']:>3}", f"train objective {row['train_objective']:9.3f}"]
    if "test_elbo" in row:
        parts.append(f"test ELBO {row['test_elbo']:9.3f} (recon {row['test_reconstruction']:9.3f}, KL {row['test_kl']:7.3f})")
    accuracies = [f"{split} accuracy {100 * row[f'{split}_accuracy']:.2f}%" for split in ("valid", "test")
                  if f"{split}_accuracy" in row]
    parts += accuracies
    parts.append(f"{row['seconds']:.1f} s")
    return " | ".join(parts)


class ProgressBar(Callback):
    """A tqdm bar over each epoch's steps (the running training objective, nats per example)
    and one line per finished epoch."""

    def __init__(self, refresh_every=25):
        self.refresh_every = refresh_every
        self.bar = None

    def on_epoch_start(self, trainer):
        self.bar = tqdm(total=trainer.steps_per_epoch, initial=trainer.step,
                        desc=f"epoch {trainer.epoch + 1}/{trainer.options['epochs']}", leave=False)

    def on_step_end(self, trainer, step, loss):
        self.bar.update(1)
        if step % self.refresh_every == 0:
            self.bar.set_postfix(objective=f"{-loss.item() / trainer.batch_examples:.2f}")

    def on_epoch_end(self, trainer, row):
        if self.bar is not None:
            self.bar.close()
        tqdm.write(format_row(row))

    def on_fit_end(self, trainer):
        if self.bar is not None:
            self.bar.close()


class MetricsFile(Callback):
    """``metrics.jsonl`` in the run folder: one JSON object per epoch, rewritten atomically."""

    def on_epoch_end(self, trainer, row):
        trainer.run.write_metrics(trainer.history)

    def on_fit_end(self, trainer):
        if not trainer.run.metrics.exists():  # epochs=0: an empty file, so the folder reads as a run
            trainer.run.write_metrics(trainer.history)


class Checkpoint(Callback):
    """``checkpoint.pt`` in the run folder, written atomically after every epoch (and at the end
    of a run of no epoch: the untrained model, epoch 0), and inside an
    epoch every ``every_steps`` steps and whenever ``every_minutes`` passed since the last one:
    what ``resume=True`` continues from, bit for bit. A failed write (a full disk, a read-only
    folder) leaves the previous checkpoint as it was and stops the run with
    :class:`CheckpointWriteError`."""

    def __init__(self, every_steps: int = 0, every_minutes: float = 0.0):
        self.every_steps, self.every_seconds = every_steps, every_minutes * 60
        self._last = time.monotonic()

    def on_fit_start(self, trainer):
        self._last = time.monotonic()

    def on_step_end(self, trainer, step, loss):
        if trainer.step == trainer.steps_per_epoch:
            return  # the epoch's end writes its own
        # the step just done, not trainer.step: a compiled call of several steps reports each of
        # them after the call, with trainer.step (what the checkpoint records) at its end
        due_by_steps = self.every_steps and (step + 1) % self.every_steps == 0
        due_by_time = self.every_seconds and time.monotonic() - self._last >= self.every_seconds
        if due_by_steps or due_by_time:
            self.save(trainer)

    def on_epoch_end(self, trainer, row):
        self.save(trainer)

    def on_fit_end(self, trainer):
        if not trainer.run.checkpoint.exists():  # epochs=0: the run folder holds the untrained model
            self.save(trainer)

    def save(self, trainer):
        existed = trainer.run.checkpoint.exists()
        try:
            trainer.run.save_checkpoint(trainer.state_dict())
        except OSError as error:
            cause = getattr(error, "strerror", None) or str(error)
            if existed:
                state = (f"the previous checkpoint is intact ({describe_checkpoint(trainer.run)}): free space or fix "
                         "the folder's permissions, then continue with --resume (resume=True)")
            else:
                state = ("no checkpoint was written yet; the run folder keeps its config: free space or fix the "
                         "folder's permissions, then run the same command again")
            raise CheckpointWriteError(
                f"could not write the checkpoint {str(trainer.run.checkpoint)!r} ({cause}; {error}); {state}"
            ) from None
        self._last = time.monotonic()


def describe_checkpoint(run) -> str:
    """What the newest checkpoint on disk holds, for a message: ``checkpoint.pt, epoch 3 step 0``,
    or that there is none."""
    if not run.checkpoint.exists():
        return "none written yet"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = run.read_checkpoint()
        return f"{run.loaded_from.name}, epoch {state.get('epoch')} step {state.get('step', 0)}"
    except (ValueError, OSError):
        return f"{run.checkpoint.name}, not readable"


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed; what was on disk is left as it was."""


BEST = "best.pt"


def selection_metric(vae):
    """The validation number a run keeps its best epoch by: the ELBO, or a model family's own
    (``vae.selection_metric``: m2's validation accuracy, as Pyro's ss_vae example selects)."""
    return family(vae).selection_metric


def best_epoch(history, key="valid_elbo"):
    """(index of the row with the highest ``key``, its value), the first such row on ties."""
    values = [row[key] for row in history if key in row]
    if not values:
        return None, None
    best = max(range(len(values)), key=lambda i: (values[i], -i))
    return best, values[best]


class BestCheckpoint(Callback):
    """``best.pt`` beside the last checkpoint: the epoch with the highest validation ELBO so far,
    or the model family's own validation number (:func:`selection_metric`; ``pyrovae evaluate
    --checkpoint best`` evaluates it)."""

    def on_epoch_end(self, trainer, row):
        index, _ = best_epoch(trainer.history, selection_metric(trainer.vae))
        if index == len(trainer.history) - 1:
            trainer.run.save_checkpoint(trainer.state_dict(), path=trainer.run.file(BEST))


class EarlyStopping(Callback):
    """Stops training after ``patience`` epochs without a higher validation ELBO (or the model
    family's own validation number, :func:`selection_metric`). The count is read from the
    history, so a resumed run stops where the uninterrupted one would."""

    def __init__(self, patience: int):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an integer >= 1; got {patience!r}")
        self.patience = patience

    def on_fit_start(self, trainer):
        self.on_epoch_end(trainer, None)  # a resumed run that had stopped stays stopped

    def on_epoch_end(self, trainer, row):
        index, _ = best_epoch(trainer.history, selection_metric(trainer.vae))
        if index is not None and len(trainer.history) - 1 - index >= self.patience:
            trainer.should_stop = True
            trainer.stopped_early = True


class LogLikelihoodCurve(Callback):
    """Every ``every`` epochs (and at the last), the importance-sampled log-likelihood of
    ``examples`` test (else validation) examples spread evenly over the set (every n-th: a test
    set's order need not be random) with ``samples`` samples each, as
    ``test_log_likelihood`` (or ``valid_log_likelihood``) in the epoch's row: the curve that shows
    whether a run converged."""

    def __init__(self, every: int, samples: int = 200, examples: int = 1000):
        self.every, self.samples, self.examples = every, samples, examples

    def on_epoch_end(self, trainer, row):
        last = trainer.epoch >= trainer.options["epochs"]
        if not (trainer.epoch % self.every == 0 or last):
            return
        name = "test" if "test" in trainer.metric_sets else ("valid" if "valid" in trainer.metric_sets else None)
        if name is None:
            return
        trainer.vae.eval()
        x = trainer.metric_sets[name]
        stride = max(1, -(-len(x) // self.examples))
        x = x[::stride]
        labels = trainer.metric_labels.get(name)
        labels = None if labels is None else labels[::stride]
        row[f"{name}_log_likelihood"] = float(log_likelihood(trainer.vae, x, self.samples, seed=trainer.epoch,
                                                             labels=labels).mean())
        trainer.vae.train()


class FunctionCallback(Callback):
    """A user's ``fn(row, vae)``, called after every epoch (on the main process)."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def on_epoch_end(self, trainer, row):
        self.fn(row, trainer.vae)
