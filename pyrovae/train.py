"""``fit``: stochastic variational inference over in-memory data, with Pyro's ELBOs called as
modules and a plain ``torch.optim`` optimizer over the VAE's parameters."""

import contextlib
import math
import random
import time
from pathlib import Path

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import distributed
from .datasets import binarize as binarize_data
from .evaluation import elbo_terms
from .likelihoods import Bernoulli
from .objectives import ELBOLoss, KLSchedule, check_training_options
from .validation import require, require_finite

__all__ = ["fit", "as_tensor", "resolve_device", "prepare_data", "TrainingDiverged"]

TRAIN_EVAL_EXAMPLES = 10000


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


def distributed_run():
    """Whether this process is one of several started by torchrun (WORLD_SIZE > 1)."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def resolve_device(device):
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but CUDA is not available here; use device='cpu'")
    return device


def as_tensor(data, what="train"):
    """A tensor, an ArrayDataset, or a torchvision-style dataset of (x, label) -> (x, labels)."""
    if torch.is_tensor(data):
        return data, None
    if hasattr(data, "data") and torch.is_tensor(data.data) and data.data.is_floating_point():
        return data.data, getattr(data, "targets", None)
    if isinstance(data, np.ndarray):
        return torch.from_numpy(data), None
    try:
        items = [data[i] for i in range(len(data))]
    except TypeError:
        raise TypeError(f"{what} must be a tensor or an indexable dataset; got {type(data).__name__}") from None
    xs = [item[0] if isinstance(item, (tuple, list)) else item for item in items]
    labels = [item[1] for item in items] if items and isinstance(items[0], (tuple, list)) else None
    return torch.stack([torch.as_tensor(x) for x in xs]).float(), (torch.as_tensor(labels) if labels else None)


def prepare_data(vae, data, binarize, what):
    """Checks shape, finiteness and support once, up front; resolves the binarization. The range
    comes from one pass (``aminmax``, NaN propagating); the slower element-wise checks run only
    to name the first bad value."""
    vae.check_data(data)
    if data.numel() == 0:
        raise ValueError(f"{what} data is empty")
    low, high = (float(v) for v in torch.aminmax(data))
    if not (math.isfinite(low) and math.isfinite(high)):
        require_finite(data, f"{what} data")
    if binarize == "auto":
        binarize = "dynamic" if isinstance(vae.likelihood, Bernoulli) and not _is_binary(data) else "none"
    if binarize not in ("dynamic", "threshold", "none"):
        raise ValueError(f"unknown binarize {binarize!r}; choose 'auto', 'dynamic', 'threshold' or 'none'")
    if binarize == "dynamic":
        if low < 0 or high > 1:
            require(data, (data >= 0) & (data <= 1), f"{what} data: dynamic binarization needs values in [0, 1]")
    else:
        if binarize == "threshold":
            data = binarize_data(data, "threshold")
        vae.likelihood.check_support(data)
    return data, binarize


def _is_binary(data):
    # grey data shows itself in the first examples; the full scan runs only for data that may be binary
    head = data[:100]
    if not bool(((head == 0) | (head == 1)).all()):
        return False
    return bool(((data == 0) | (data == 1)).all())


def _fixed_binarization(data, binarize, seed):
    if binarize != "dynamic":
        return data
    return binarize_data(data, "dynamic", generator=torch.Generator(device=data.device).manual_seed(seed))


def _summarize(vae, x, prefix, context):
    """Dataset means of the ELBO's terms; under torch.distributed each rank takes every
    world_size-th example and the sums are reduced."""
    if x is None or len(x) == 0:
        return {}
    terms = elbo_terms(vae, context.shard(x))
    keys = sorted(terms)
    sums = torch.stack([terms[key].double().sum() for key in keys])
    sums = distributed.all_reduce_sum(context, sums) / len(x)
    return {f"{prefix}_{key}": float(value) for key, value in zip(keys, sums)}


def _rng_state():
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fit(
    vae,
    train,
    test=None,
    *,
    epochs=10,
    batch_size=128,
    lr=1e-3,
    loss="meanfield",
    num_particles=1,
    device="auto",
    seed=0,
    binarize="auto",
    beta=1.0,
    warmup_epochs=0.0,
    free_bits=0.0,
    run_dir=None,
    resume=False,
    progress=True,
    train_config=None,
    callback=None,
    estimator="standard",
    fast_path=True,
):
    """Trains ``vae`` by maximizing the ELBO with SVI; returns the per-epoch history.

    Each history row holds ``epoch``, ``train_elbo`` (the running mean of the training objective
    over the epoch, nats per example), ``train_reconstruction``/``train_kl``/``train_eval_elbo``
    (at the epoch's end on up to 10000 training examples), the same ``test_*`` on ``test``,
    ``kl`` (test KL where there is a test set), ``seconds`` and ``kl_weight``.

    :param loss: ``"meanfield"`` (analytic KL), ``"trace"`` (Monte Carlo KL) or ``"iwae"``.
    :param binarize: ``"auto"`` (dynamic binarization of grey data for a Bernoulli likelihood),
        ``"dynamic"``, ``"threshold"`` or ``"none"``.
    :param run_dir: where ``checkpoint.pt`` and ``metrics.jsonl`` are written (atomically) each
        epoch; ``resume=True`` continues from its checkpoint exactly where it stopped.
    :param estimator: the gradient estimator: ``"standard"``, ``"stl"`` (``trace``, ``iwae``) or
        ``"dreg"`` (``iwae``); see :mod:`pyrovae.infer.elbo`.
    :param fast_path: compute the package VAE's loss from its parts where its structure allows
        (see :mod:`pyrovae.infer.fast_path`); ``False`` runs Pyro's traces at every step.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "epochs" else 1):
            raise ValueError(f"{name} must be a {'non-negative' if name == 'epochs' else 'positive'} integer; got {value!r}")
    if not float(lr) > 0:
        raise ValueError(f"lr must be positive; got lr={lr}")
    check_training_options(vae, loss, num_particles, estimator, free_bits)
    context = distributed.setup(device) if distributed_run() else distributed.single_process(resolve_device(device))
    device = context.device
    failure = None
    try:
        train_x, _ = as_tensor(train, "train")
        test_x = as_tensor(test, "test")[0] if test is not None else None
        train_x, binarize = prepare_data(vae, train_x.float(), binarize, "train")
        if test_x is not None:
            test_x, _ = prepare_data(vae, test_x.float(), binarize, "test")
    except (ValueError, TypeError) as error:
        failure = error
    distributed.agree(context, failure)  # a bad shard stops every rank, not just its own

    pyro.set_rng_seed(seed)
    vae.to(device).train()
    train_x = train_x.to(device)
    test_eval = None if test_x is None else _fixed_binarization(test_x.to(device), binarize, seed + 1)
    train_eval = _fixed_binarization(train_x[:TRAIN_EVAL_EXAMPLES], binarize, seed + 2)

    objective = ELBOLoss(vae, loss, num_particles, KLSchedule(beta, warmup_epochs, free_bits), estimator, fast_path)
    step_loss = objective
    if context.enabled:
        from torch.nn.parallel import DistributedDataParallel

        step_loss = DistributedDataParallel(objective, device_ids=[device] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr, foreach=True)
    history, start_epoch = [], 0
    run_dir = Path(run_dir) if run_dir is not None else None
    checkpoint_path = run_dir / ckpt.CHECKPOINT if run_dir is not None else None
    if resume:
        if checkpoint_path is None:
            raise ValueError("resume=True needs run_dir")
        state = ckpt.read_checkpoint(checkpoint_path, map_location=device)
        if state["model_config"] != vae.config:
            differ = sorted(k for k in set(state["model_config"]) | set(vae.config)
                            if state["model_config"].get(k) != vae.config.get(k))
            raise ValueError(f"checkpoint {str(checkpoint_path)!r} is from another model config; these differ: {differ}")
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, start_epoch = list(state["history"]), state["epoch"]
        _set_rng_state(state["rng"])

    num_train = len(train_x)
    # every rank needs examples in every global batch: a last batch smaller than that is dropped
    steps = math.ceil(num_train / batch_size)
    if context.enabled and num_train - (steps - 1) * batch_size < context.world_size:
        steps -= 1
    progress = progress and context.is_main
    for epoch in range(start_epoch, epochs):
        started = time.perf_counter()
        order = torch.randperm(num_train, generator=torch.Generator().manual_seed(seed * 100003 + epoch)).to(device)
        if context.enabled:  # the same shuffle everywhere, independent noise on each rank
            torch.manual_seed(seed * 100003 + epoch * 1009 + context.rank + 1)
        total = torch.zeros((), device=device, dtype=torch.float64)
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False)
        epoch_validation = pyro.validation_enabled(False)
        epoch_validation.__enter__()  # left below, after the loop, by the same object
        for step in bar:
            xb = train_x[context.shard(order[step * batch_size:(step + 1) * batch_size])]
            if binarize == "dynamic":
                xb = torch.bernoulli(xb)
            if not objective.kl_schedule.is_constant:
                objective.set_progress(epoch + step / steps)
            optimizer.zero_grad(set_to_none=True)
            # Pyro validates the first step (structure, supports); the data were checked up front
            validate = epoch == start_epoch and step == 0
            try:
                with pyro.validation_enabled(True) if validate else contextlib.nullcontext():
                    batch_loss = step_loss(xb)
            except ValueError:
                # Pyro's argument validation rejects NaN parameters before a loss exists.
                if all(bool(torch.isfinite(p).all()) for p in vae.parameters()):
                    raise
                batch_loss = torch.tensor(float("nan"))
            if not torch.isfinite(batch_loss):
                kept = f"the last good checkpoint {str(checkpoint_path)!r} is kept" if checkpoint_path else "no checkpoint was written"
                raise TrainingDiverged(
                    f"the loss became {batch_loss.detach().item()} at epoch {epoch + 1}, step {step + 1}; {kept}. "
                    "Try a smaller lr, or check the data and the likelihood's scale."
                )
            # a rank's loss covers 1/world_size of the global batch: scaled as a plate of the global
            # batch size would scale it, DDP's gradient average is the gradient of the global sum
            (batch_loss * context.world_size if context.enabled else batch_loss).backward()
            if step == steps - 1:  # the last step's gradient norm, for the logs
                grad_norm = torch.linalg.vector_norm(torch.stack(
                    [torch.linalg.vector_norm(p.grad) for p in vae.parameters() if p.grad is not None]))
            optimizer.step()
            total += batch_loss.detach()
            if progress and step % 25 == 0:
                bar.set_postfix(elbo=f"{-float(total) / min(num_train, (step + 1) * batch_size):.2f}")
        bar.close()
        epoch_validation.__exit__(None, None, None)
        train_seconds = time.perf_counter() - started
        vae.eval()
        seen = min(num_train, steps * batch_size)
        row = {"epoch": epoch + 1, "train_elbo": -float(distributed.all_reduce_sum(context, total)) / seen}
        train_terms = _summarize(vae, train_eval, "train", context)
        train_terms["train_eval_elbo"] = train_terms.pop("train_elbo")
        row.update(train_terms)
        row.update(_summarize(vae, test_eval, "test", context))
        row["kl"] = row.get("test_kl", row.get("train_kl"))
        row["kl_weight"] = objective.kl_weight
        row["lr"] = optimizer.param_groups[0]["lr"]
        row["grad_norm"] = float(grad_norm) if steps else float("nan")
        row["seconds"] = time.perf_counter() - started
        row["train_seconds"] = train_seconds
        row["world_size"] = context.world_size
        vae.train()
        history.append(row)
        if run_dir is not None and context.is_main:
            ckpt.save_checkpoint(checkpoint_path, {
                "model_config": vae.config,
                "train_config": train_config or {},
                "model": vae.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch + 1,
                "history": history,
                "rng": _rng_state(),
            })
            ckpt.write_metrics(run_dir, history)
        if progress:
            tqdm.write(_format_row(row))
        if callback is not None and context.is_main:
            callback(row, vae)
    vae.eval()
    return history


def _format_row(row):
    parts = [f"epoch {row['epoch']:>3}", f"train ELBO {row['train_elbo']:9.3f}"]
    if "test_elbo" in row:
        parts.append(f"test ELBO {row['test_elbo']:9.3f} (recon {row['test_reconstruction']:9.3f}, KL {row['test_kl']:7.3f})")
    parts.append(f"{row['seconds']:.1f} s")
    return " | ".join(parts)
