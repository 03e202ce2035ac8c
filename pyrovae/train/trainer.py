"""The Trainer: stochastic variational inference over in-memory data, with a Pyro ELBO called as
a module (:class:`~pyrovae.infer.objectives.ELBOLoss`) and ``torch.optim.Adam`` over the VAE's
parameters. Set-up, resume, one epoch, evaluation and saving are small methods; everything that
watches a run is a :class:`~pyrovae.train.callbacks.Callback`.

Seeding (``seed``): the weights are the caller's; the Trainer seeds torch's global generator once
at the start (the draws of z and the dynamic binarization use it; Python's and NumPy's are left
alone), and shuffles each epoch with its own generator seeded by (seed, epoch). The per-epoch
report draws from a stream of its own, so the training steps see exactly the noise and batches of
the plain loop::

    torch.manual_seed(seed)
    for epoch in range(epochs):
        order = torch.randperm(N, generator=torch.Generator().manual_seed(stream_seed(seed, epoch)))
        for i in range(0, N, batch_size):
            optimizer.zero_grad(); loss_fn(x[order[i:i + batch_size]]).backward(); optimizer.step()

with ``loss_fn = pyro.infer.Trace_ELBO()(vae.model, vae.guide)`` (or the objective's own Pyro
ELBO) and ``torch.optim.Adam(vae.parameters(), lr)``: from the same weights, ``fit`` ends on the
same parameters (``tests/test_training_parity.py``). A checkpoint holds torch's generator state, so
a resumed run continues exactly.
"""

import contextlib
import math
import time
import warnings
from typing import Dict, List, Optional, Sequence

import numpy as np
import pyro
import torch

from .. import distributed
from ..config import family_defaults, train_options
from ..datasets import as_tensor, fixed_binarization, prepare
from ..estimate.importance import _seeded, elbo_terms
from ..infer.objectives import ELBOLoss, KLSchedule, check_training_options
from .callbacks import Callback
from ..protocol import family
from ..fast.binarize import bernoulli_pixels
from ..fast.machine_choices import layer_shapes
from ..fast.precision import autocast, check_precision, warn_if_bf16_is_slower
from ..fast.compile_cache import compiled_before, record_compile
from ..fast.denormals import flushing_denormals
from ..fast.compiled import (AUTO_MIN_STEPS, AUTO_MIN_STEPS_CACHED, ONE_STEP_GRAPH_MIN_STEPS, auto_steps_per_call, CompiledLoss, CompiledStep,
                       CompiledTerms, compile_reason, whole_step_reason)
from .schedules import make_scheduler

__all__ = ["Trainer", "TrainingDiverged", "stream_seed", "make_optimizer", "OPTIMIZERS", "METRIC_EXAMPLES"]

OPTIMIZERS = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax, "rmsprop": torch.optim.RMSprop}


def make_optimizer(parameters, options: Dict, fused: bool = True) -> torch.optim.Optimizer:
    """``options["optimizer"]`` (adam, adamax or rmsprop, PyTorch's defaults besides ``options["lr"]``,
    ``options["optimizer_eps"]`` and Adam's ``options["adam_beta1"]``) over ``parameters``; Adam's
    fused kernel (one vectorized pass over each parameter) where PyTorch has one for the parameters'
    device and dtype, the foreach kernels otherwise. The same update as the for-loop Adam up to
    floating-point rounding; on CPU the foreach kernels fall back to one small op a tensor, which
    made Adam a fifth of an eager MNIST step on a 2-vCPU Intel Xeon (1.0-1.2 ms of 4.5-6 ms; fused
    0.4 ms: issue #46)."""
    name = options.get("optimizer", "adam")
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}")
    parameters = list(parameters)
    kernel = {"fused": True} if fused and name == "adam" and _fused_adam_supported(parameters) else {"foreach": True}
    if name == "adam":
        kernel["betas"] = (options.get("adam_beta1", 0.9), 0.999)
    if options.get("optimizer_eps") is not None:
        kernel["eps"] = options["optimizer_eps"]
    return OPTIMIZERS[name](parameters, lr=options["lr"], **kernel)

def _fused_adam_supported(parameters) -> bool:
    """Whether PyTorch's fused Adam takes these parameters (its CPU kernel since torch 2.4)."""
    try:
        torch.optim.Adam([torch.zeros(1, dtype=p.dtype, device=p.device, requires_grad=True)
                          for p in parameters[:1]], fused=True)
    except (RuntimeError, ValueError, TypeError):
        return False
    return bool(parameters)


# The default of report_examples: the per-epoch ELBO report reads this many training examples (and
# the held-out sets whole). 10000 up to 0.3, a twentieth of an epoch of the plain VAE on MNIST; at
# 2000 a hundredth, for a standard error of about 0.6 nats instead of 0.27 (issue #26).
METRIC_EXAMPLES = train_options({})["report_examples"]


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


def _gradient_norm(parameters) -> float:
    """The 2-norm of all the parameters' gradients together, as ``clip_grad_norm_`` measures it."""
    return float(torch.linalg.vector_norm(torch.stack(
        [torch.linalg.vector_norm(p.grad) for p in parameters if p.grad is not None])))


def stream_seed(*keys: int) -> int:
    """A seed for the random stream named by ``keys`` (the run's seed, the epoch, the rank),
    independent of every other key tuple (NumPy's ``SeedSequence`` hashing)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


class Trainer:
    """Trains ``vae`` with the options of :class:`~pyrovae.config.TrainConfig` (a dict).

    :param binarize: ``"auto"``, ``"dynamic"``, ``"threshold"`` or ``"none"`` (see
        :func:`pyrovae.datasets.prepare`).
    :param run: a :class:`~pyrovae.run_folder.RunFolder` for checkpoints and metrics, or None.
    :param callbacks: :class:`~pyrovae.train.callbacks.Callback` objects, called in order.
    :param fast_path: let the package VAE's loss take its fast path (see
        :mod:`pyrovae.models.vae_fast_path`); ``False`` runs Pyro's traces at every step.
    """

    def __init__(self, vae, options: Dict, binarize: str = "auto", run=None, callbacks: Sequence[Callback] = (),
                 fast_path: bool = True, context: Optional[distributed.Context] = None, trust: bool = False):
        self.vae = vae
        self.options = options = family_defaults(options, vae)
        self.binarize = binarize
        self.run = run
        self.callbacks = list(callbacks)
        self.fast_path = fast_path
        self.trust = trust  # resume from a checkpoint that needs weights_only=False (unsafe)
        self.context = context or distributed.process_context(options["device"])
        self.device = self.context.device
        check_precision(options["precision"], self.device)
        self.history: List[Dict] = []
        self.epoch = 0  # epochs finished
        self.step = 0  # steps finished in the current epoch
        self.should_stop = False
        check_training_options(vae, options["loss"], options["num_particles"], options["estimator"],
                               options["free_bits"])

    # -- set-up -------------------------------------------------------------------------------
    def setup(self, train, test=None, valid=None):
        """Checks and places the data, builds the objective and the optimizer."""
        failure = None
        try:
            train_x, train_y = as_tensor(train, "train")
            train_x, self.binarize = prepare(self.vae, train_x, self.binarize, "train")
            train_y = self._labels_for(train_x, train_y, "train")
            held_out, held_labels = {}, {}
            for name, data in (("valid", valid), ("test", test)):
                if data is not None:
                    x, y = as_tensor(data, name)
                    held_out[name] = prepare(self.vae, x, self.binarize, name)[0]
                    held_labels[name] = self._labels_for(held_out[name], y, name)
            if self.options["labels"] is not None and not family(self.vae).semi_supervised:
                raise ValueError(f"labels={self.options['labels']}: the number of labelled examples applies to a "
                                 f"semi-supervised model (m2), not to a {type(self.vae).__name__}")
            if self.options["patience"] and "valid" not in held_out:
                raise ValueError("early stopping (patience) needs a validation set: valid=..., valid_fraction, or a "
                                 "dataset with a validation split")
        except (ValueError, TypeError) as error:
            failure = error
        distributed.agree(self.context, failure)  # a bad shard stops every rank, not just its own
        options, seed = self.options, self.options["seed"]
        torch.manual_seed(seed)
        self.vae.to(self.device).train()
        self.train_x = train_x.to(self.device)
        # labels travel with every batch only where the model takes them (a label CVAE)
        needs_labels = family(self.vae).requires_labels
        self.train_y = train_y.to(self.device) if needs_labels else None
        # fixed draws of grey data, so the per-epoch ELBO compares across epochs
        reported = options["report_examples"]
        self.metric_sets = {"train": fixed_binarization(self.train_x[:reported], self.binarize, stream_seed(seed, 2))}
        self.metric_labels = {"train": self.train_y[:reported] if needs_labels else None}
        for name, stream in (("valid", 3), ("test", 1)):
            if name in held_out:
                self.metric_sets[name] = fixed_binarization(held_out[name].to(self.device), self.binarize,
                                                            stream_seed(seed, stream))
                self.metric_labels[name] = held_labels[name].to(self.device) if needs_labels else None
        # a semi-supervised model's held-out accuracy each epoch (what its best.pt is chosen by)
        self.accuracy_labels = {name: held_labels[name].to(self.device) for name in ("valid", "test")
                                if family(self.vae).semi_supervised and name in held_out}
        schedule = KLSchedule(options["beta"], options["warmup_epochs"], options["free_bits"])
        # a model with its own training objective (m2), else None
        self.objective = family(self.vae).make_objective(
            options["loss"], options["num_particles"], schedule, options["estimator"], self.train_x,
            None if train_y is None else train_y.to(self.device), options["labels"], seed, options["aux_weight"],
            options["batch_size"], binarize=self.binarize,
            every_batch_classifier_step=options["every_batch_classifier_step"],
            labelled_repeats=options["labelled_repeats"])
        if self.objective is None:
            self.objective = ELBOLoss(self.vae, options["loss"], options["num_particles"], schedule,
                                      options["estimator"], self.fast_path)
        self.step_loss = self.objective
        if self.context.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.step_loss = DistributedDataParallel(
                self.objective, device_ids=[self.device] if self.device.type == "cuda" else None)
        self.last_grad_norm = float("nan")
        self.epoch_total = torch.zeros((), device=self.device, dtype=torch.float64)
        self._seconds_before, self._epoch_started = 0.0, time.perf_counter()
        num_train, batch = len(self.train_x), options["batch_size"]
        self.steps_per_epoch = math.ceil(num_train / batch)
        # every rank needs examples in every global batch: a last batch smaller than that is dropped
        if self.context.enabled and num_train - (self.steps_per_epoch - 1) * batch < self.context.world_size:
            self.steps_per_epoch -= 1
        self._setup_compile()

    def _setup_compile(self):
        """The optimizer, and the compiled step where it can and (``compile="auto"``) should be
        compiled: the whole step (:class:`CompiledStep`) where the optimizer allows it, else the
        loss (:class:`CompiledLoss`); without either, the reason is in ``compile_note`` (warned
        about under ``compile="on"``)."""
        self.compiled_loss = self.compiled_step = self.compiled_terms = None
        self.one_step_graph = True
        if self.options["precision"] == "bf16":
            warn_if_bf16_is_slower(layer_shapes(self.vae), self.batch_examples, self.device)
        self._compile_reported, self.whole_step_note = False, None
        mode = self.options["compile"]
        reason = compile_reason(self) if mode != "off" else "compile='off'"
        total_steps = self.options["epochs"] * self.steps_per_epoch
        if reason is None and mode == "auto" and total_steps < AUTO_MIN_STEPS_CACHED:
            reason = f"compile='auto' and {total_steps} steps, too few to amortize the compile time"
        self.optimizer = make_optimizer(self.vae.parameters(), self.options)
        if reason is None:
            self.objective.weight_as_tensor(self.device)
            self.whole_step_note = whole_step_reason(self.optimizer)
            # every compiled run unrolls several steps a call (fewer where an epoch has fewer full batches)
            full_steps = max(1, len(self.train_x) // self.batch_examples)
            calls = self.options["steps_per_call"] or auto_steps_per_call(full_steps)
            # steps off the calls' grid: a graph of one step a call where the run is long enough to pay
            # for compiling it (an eager step costs about four compiled ones), else eager
            self.one_step_graph = calls == 1 or total_steps >= ONE_STEP_GRAPH_MIN_STEPS
            if not self.objective.kl_schedule.is_constant:
                calls = 1  # the graph reads the KL weight once a call, and a schedule changes it every step
            if self.whole_step_note is None:
                self.compiled_step = CompiledStep(self.objective, self.optimizer, self.binarize == "dynamic",
                                                  self.options["grad_clip"], self.device, calls,
                                                  self.options["precision"], self.batch_examples)
            else:
                self.compiled_loss = CompiledLoss(self.objective, self.device, self.options["precision"],
                                                  self.batch_examples)
            if mode == "auto" and total_steps < AUTO_MIN_STEPS and not compiled_before(self._graph_key()):
                reason = (f"compile='auto' and {total_steps} steps, too few to amortize a first compilation of this "
                          f"step on this machine (it compiles from {AUTO_MIN_STEPS} steps, and from "
                          f"{AUTO_MIN_STEPS_CACHED} once compiled here)")
                self.compiled_step = self.compiled_loss = None
        if reason is None:
            labelled = any(labels is not None for labels in self.metric_labels.values())
            self.compiled_terms = None if labelled else CompiledTerms(self.vae, self.compiled.kernels)
        elif mode == "on":
            warnings.warn(f"compile='on': the step trains eager, {reason}", RuntimeWarning, stacklevel=4)
        self.compile_note = reason

    def _graph_key(self):
        """What the run's compiled graphs are a function of: the step's structure, the shapes of the
        training data it gathers batches from, and the batch size."""
        return (self.compiled.structure, tuple(self.train_x.shape), self.batch_examples)

    @property
    def compiled(self):
        """The run's compiled step or loss (:class:`CompiledStep` or :class:`CompiledLoss`), or None."""
        return self.compiled_step if self.compiled_step is not None else self.compiled_loss

    def _labels_for(self, x, y, what):
        """The labels of a model that reads them (checked), else None."""
        if not (family(self.vae).requires_labels or family(self.vae).semi_supervised):
            return None
        if y is None:
            raise ValueError(f"this {type(self.vae).__name__} needs the {what} labels: pass (images, labels) pairs, a "
                             "dataset with labels (MNIST, Fashion-MNIST, an .npz with labels), or a (x, y) tuple")
        return family(self.vae).check_labels(torch.as_tensor(y), len(x))

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> Dict:
        """Everything a resumed run needs, as tensors and plain types."""
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "model_config": self.vae.config,
            "model_class": f"{type(self.vae).__module__}.{type(self.vae).__qualname__}",
            "train_config": self.run.config if self.run is not None else {},
            "model": self.vae.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "optimizer_name": self.options["optimizer"],
            "epoch": self.epoch,
            "step": self.step,
            "epoch_total": self.epoch_total,
            "epoch_seconds": self.epoch_seconds(),
            "last_grad_norm": self.last_grad_norm,
            "history": self.history,
            "rng": rng,
        }

    def load_state_dict(self, state: Dict):
        if state["model_config"] != self.vae.config:
            differ = sorted(k for k in set(state["model_config"]) | set(self.vae.config)
                            if state["model_config"].get(k) != self.vae.config.get(k))
            raise ValueError(f"the checkpoint is from another model config; these differ: {differ}")
        trained_with = state.get("optimizer_name", "adam")  # checkpoints before the option: Adam
        if trained_with != self.options["optimizer"]:
            raise ValueError(f"the checkpoint was trained with optimizer {trained_with!r}, this run asks for "
                             f"{self.options['optimizer']!r}: its state cannot continue another optimizer's; resume "
                             f"with optimizer = {trained_with!r} or start a new run")
        self.vae.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.history, self.epoch = list(state["history"]), int(state["epoch"])
        # a checkpoint from inside an epoch continues that epoch at its next step
        self.step = int(state.get("step", 0))
        self.epoch_total = state.get("epoch_total", torch.zeros((), dtype=torch.float64)).to(self.device)
        self._seconds_before = float(state.get("epoch_seconds", 0.0)) if self.step else 0.0
        self.last_grad_norm = float(state.get("last_grad_norm", float("nan")))
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    # -- the loop -------------------------------------------------------------------------------
    def fit(self, train, test=None, resume: bool = False, valid=None) -> List[Dict]:
        """Sets up, resumes where asked, and trains until ``epochs`` (or a callback stops it)."""
        if resume and self.run is None:
            raise ValueError("resume=True needs a run folder (run_dir)")
        self.setup(train, test, valid)
        writes = self.run is not None and self.context.is_main
        with self.run.lock() if writes else contextlib.nullcontext():
            if resume:
                self.load_state_dict(self.run.read_checkpoint(map_location=self.device, trust=self.trust))
            self.scheduler = make_scheduler(self.optimizer, self.options, self.epoch)
            self._call("on_fit_start")
            # Pyro validates the first step (structure, supports); the data were checked up front
            with pyro.validation_enabled(False):
                while self.epoch < self.options["epochs"] and not self.should_stop:
                    self.train_epoch()
            self._call("on_fit_end")
        self.vae.eval()
        return self.history

    def epoch_seconds(self) -> float:
        """Seconds spent in the current epoch, across resumes."""
        return self._seconds_before + time.perf_counter() - self._epoch_started

    def train_epoch(self) -> Dict:
        """One pass over the shuffled training data (from ``self.step`` on, where a checkpoint
        from inside the epoch left off), then the epoch's report to the callbacks."""
        self._epoch_started = time.perf_counter()
        context, options = self.context, self.options
        batch = options["batch_size"]
        shuffle = torch.Generator().manual_seed(stream_seed(options["seed"], self.epoch))
        order = torch.randperm(len(self.train_x), generator=shuffle).to(self.device)
        if self.step == 0:
            self.epoch_total = torch.zeros((), device=self.device, dtype=torch.float64)
            self._seconds_before = 0.0
            if context.enabled:  # the same shuffle everywhere, independent noise on each rank
                torch.manual_seed(stream_seed(options["seed"], self.epoch, context.rank))
        self._call("on_epoch_start")
        interleaved = getattr(self.objective, "interleaved_losses", None)
        # the steps in flush-to-zero, as XLA computes (pyrovae.fast.denormals); the report below in the caller's modes
        with flushing_denormals(self.device):
            while self.step < self.steps_per_epoch:
                step = self.step
                losses = self._compiled_steps(order, step)
                if losses is None:
                    index = context.shard(order[step * batch:(step + 1) * batch])
                    labels = () if self.train_y is None else (self.train_y[index],)
                    losses = self.train_step(self.train_x[index], *labels, first=self.epoch == 0 and step == 0)[None]
                self.epoch_total += losses.detach().double().sum()
                if interleaved is not None:  # steps of their own after this one (m2's labelled batches)
                    for loss_fn, every_parameter in interleaved(self.epoch, step, self.steps_per_epoch):
                        self._optimize(loss_fn, first=self.epoch == 0 and step == 0, every_parameter=every_parameter)
                self.step = step + len(losses)
                for done, loss in enumerate(losses, start=step):
                    self._call("on_step_end", done, loss)
        train_seconds = self.epoch_seconds()
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this epoch trained at
        self.scheduler.step()
        seen = min(len(self.train_x), self.steps_per_epoch * batch)
        row = {"epoch": self.epoch + 1,
               "train_objective": -float(distributed.all_reduce_sum(context, self.epoch_total)) / seen}
        row.update(self.evaluate())
        compiled = self.compiled
        if compiled is not None and compiled.compile_seconds is not None and not self._compile_reported:
            # inside this epoch's seconds: the first pays it (the step's graph and the report's)
            terms_seconds = self.compiled_terms.compile_seconds if self.compiled_terms is not None else None
            row["compile_seconds"] = compiled.compile_seconds + (terms_seconds or 0.0)
            self._compile_reported = True
            record_compile(self._graph_key(), row["compile_seconds"])
        row.update(kl_weight=self.objective.kl_weight, lr=lr,
                   grad_norm=self.last_grad_norm, seconds=self.epoch_seconds(),
                   train_seconds=train_seconds, world_size=context.world_size)
        self.history.append(row)
        self.epoch += 1
        self.step = 0
        self._call("on_epoch_end", row)
        return row

    @property
    def batch_examples(self) -> int:
        return min(self.options["batch_size"], len(self.train_x))

    @property
    def steps_per_call(self) -> int:
        """How many steps one call of the compiled step trains (1 where the run is not compiled
        whole)."""
        return self.compiled_step.steps_per_call if self.compiled_step is not None else 1

    def _compiled_steps(self, order, step):
        """The steps from ``step`` on as one call of the compiled whole step, their losses; None
        where ``step`` runs eager: the run's first (Pyro validates it) and the epoch's short last
        batch (one batch shape for the run). A call takes ``steps_per_call`` steps from a step on
        their grid (0, S, 2S, ...: a resumed run replays the uninterrupted run's calls) whose
        batches are all full; a step off the grid takes a call of one step in a run of
        ``ONE_STEP_GRAPH_MIN_STEPS`` steps or more (or of one step a call), and runs eager in a
        shorter one."""
        # batch_examples, not batch_size: a training set smaller than one batch is one full batch
        calls, batch = self.steps_per_call, self.batch_examples
        if self.compiled_step is None or (self.epoch == 0 and step == 0):
            return None
        full_steps = len(self.train_x) // batch
        if step >= full_steps:
            return None
        if step % calls or step + calls > full_steps:
            if not self.one_step_graph:  # a short run: a few eager steps an epoch cost less than its compilation
                return None
            calls = 1
        end = step + calls
        self._set_kl_progress()
        out = self.compiled_step(self.train_x, order[step * batch:end * batch].view(calls, batch))
        if out is None:
            return None
        losses, diverged, norms = out
        if diverged is not None:  # the graph skipped that update and every later one: the state is the last good one
            self.step = step + diverged
            self._diverged(losses[diverged], self.train_x[order[self.step * batch:(self.step + 1) * batch]])
        if end == self.steps_per_epoch:  # the epoch's last gradient norm, for the logs
            self.last_grad_norm = float(norms[-1]) if norms is not None else _gradient_norm(self.vae.parameters())
        return losses

    def _set_kl_progress(self):
        if not self.objective.kl_schedule.is_constant:
            self.objective.set_progress(self.epoch + self.step / self.steps_per_epoch)

    def train_step(self, xb, *labels, first=False):
        """One SVI step on the minibatch ``xb`` (and its labels, for a model that reads them)
        through autograd and the optimizer's own ``step`` (the loss compiled where the run compiles
        the loss alone); returns the loss (-objective, summed)."""
        self._set_kl_progress()
        if self.binarize == "dynamic":
            # the compiled step draws the same function: bernoulli_pixels, not torch.bernoulli,
            # whose serial loop over the generator took a fifth of the compiled step
            xb = bernoulli_pixels(xb)

        def loss_fn():
            compiled = self.compiled_loss is not None and not first and len(xb) == self.batch_examples
            return self.compiled_loss(xb) if compiled else self.step_loss(xb, *labels)

        return self._optimize(loss_fn, first, xb)

    def _optimize(self, loss_fn, first=False, xb=None, every_parameter=False):
        """One optimizer step on the loss ``loss_fn()`` returns: gradient, clipping, the epoch's
        last gradient norm for the logs, a clear error where the loss is not finite.
        ``every_parameter``: a parameter the loss does not reach steps with a zero gradient
        (PyTorch's optimizers skip one whose gradient is None)."""
        self.optimizer.zero_grad(set_to_none=not every_parameter)
        try:
            with pyro.validation_enabled(True) if first else contextlib.nullcontext():
                with autocast(self.options["precision"], self.device):  # the step's products only
                    loss = loss_fn()
        except ValueError:
            # Pyro's argument validation rejects NaN parameters before a loss exists.
            if all(bool(torch.isfinite(p).all()) for p in self.vae.parameters()):
                raise
            loss = torch.tensor(float("nan"))
        if not torch.isfinite(loss):
            self._diverged(loss, xb)
        # a rank's loss covers 1/world_size of the global batch: scaled as a plate of the global
        # batch size would scale it, DDP's gradient average is the gradient of the global sum
        (loss * self.context.world_size if self.context.enabled else loss).backward()
        clip = self.options["grad_clip"]
        if clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.vae.parameters(), clip, foreach=True)
            if self.step == self.steps_per_epoch - 1:
                self.last_grad_norm = float(norm)
        elif self.step == self.steps_per_epoch - 1:  # the epoch's last gradient norm, for the logs
            self.last_grad_norm = _gradient_norm(self.vae.parameters())
        self.optimizer.step()
        return loss

    def _diverged(self, loss, xb):
        if self.run is None:
            kept = "no run folder: nothing was written"
        elif self.run.checkpoint.exists():
            kept = (f"the last good checkpoint {str(self.run.checkpoint)!r} is kept (continue from it with --resume "
                    "once the cause is fixed)")
        else:
            kept = (f"no checkpoint was written yet (the failure came before the first); the run folder "
                    f"{str(self.run.path)!r} keeps its config: fix the cause and run the same command again")
        largest = float(xb.detach().abs().max()) if xb is not None and xb.numel() else 0.0
        # a loss that is not finite before any update comes from the data, not from the optimizer
        hint = (f" The minibatch's values reach {largest:.3g}: the likelihood's log density "
                f"overflows in {xb.dtype}; standardize or rescale the data." if largest > 1e6 else
                " Clip the gradient's norm (grad_clip, --grad-clip, e.g. 100) or lower the lr; if it persists, "
                "check the data and the likelihood's scale.")
        raise TrainingDiverged(
            f"the loss became {loss.detach().item()} at epoch {self.epoch + 1}, step {self.step + 1}; {kept}.{hint}")

    def evaluate(self) -> Dict[str, float]:
        """The ELBO, reconstruction and KL (nats per example) of the fixed metric sets, from the
        VAE's own model; under torch.distributed each rank takes every world_size-th example. Its
        draws come from a stream of their own, so reporting never moves training's noise."""
        self.vae.eval()
        row = {}
        # the report draws from its own stream (seed, 4, epoch), and training's stream continues as if
        # it had not run: fit's steps see the noise a plain loop seeded the same way sees (issue #42)
        with _seeded(stream_seed(self.options["seed"], 4, self.epoch, self.context.rank), self.device):
            # a compiled run's metrics on the same fast kernels as its step (eager runs: PyTorch's own)
            with self.compiled.kernels if self.compiled is not None else contextlib.nullcontext():
                self._evaluate_metric_sets(row)
        row["kl"] = row.get("test_kl", row.get("valid_kl", row.get("train_kl")))
        self.vae.train()
        return row

    def _evaluate_metric_sets(self, row):
        for prefix, x in self.metric_sets.items():
            labels = self.metric_labels.get(prefix)
            if self.compiled_terms is not None:
                terms = self.compiled_terms(x)
            else:
                terms = elbo_terms(self.vae, self.context.shard(x),
                                   labels=None if labels is None else self.context.shard(labels))
            keys = sorted(terms)
            sums = torch.stack([terms[key].double().sum() for key in keys])
            sums = distributed.all_reduce_sum(self.context, sums) / len(x)
            row.update({f"{prefix}_{key}": float(value) for key, value in zip(keys, sums)})
            if prefix in self.accuracy_labels:
                row.update({f"{prefix}_{key}": value for key, value in
                            self.vae.extra_metrics(x, self.accuracy_labels[prefix], None).items()})

    def _call(self, hook, *args):
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)
