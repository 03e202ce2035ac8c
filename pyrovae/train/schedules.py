"""Learning-rate schedules by name, on ``torch.optim.lr_scheduler``, stepped once per epoch.

- ``constant``: lr throughout.
- ``multistep``: lr * gamma^(number of milestones passed) (``lr_milestones``, ``lr_gamma``).
- ``exponential``: lr * gamma^epoch.
- ``cosine``: lr (1 + cos(pi epoch / epochs)) / 2, to 0 at the last epoch.
- ``burda``: Burda et al. (2015): 3^i epochs at lr * 10^(-i/7), i = 0..7 (3280 epochs in all;
  their lr is 1e-3), the last rate held after that.
"""

import warnings

import torch

__all__ = ["SCHEDULES", "make_scheduler", "burda_factor", "BURDA_EPOCHS"]

SCHEDULES = ("constant", "multistep", "exponential", "cosine", "burda")
BURDA_EPOCHS = sum(3**i for i in range(8))  # 3280


def burda_factor(epoch: int) -> float:
    """10^(-i/7) for the stage i that epoch ``epoch`` (from 0) falls in."""
    start = 0
    for i in range(8):
        start += 3**i
        if epoch < start:
            return 10 ** (-i / 7)
    return 10 ** (-7 / 7)


def make_scheduler(optimizer, options, completed_epochs=0):
    """The schedule ``options["lr_schedule"]`` on ``optimizer``, advanced past ``completed_epochs``
    (a resumed run replays the same steps, so its rates equal the uninterrupted run's bit for bit)."""
    name = options["lr_schedule"]
    if completed_epochs:  # replay from the initial rates: chainable schedules read the current one
        for group in optimizer.param_groups:
            group["lr"] = group.get("initial_lr", group["lr"])
    if name == "constant":
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    elif name == "multistep":
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, options["lr_milestones"], options["lr_gamma"])
    elif name == "exponential":
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, options["lr_gamma"])
    elif name == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, options["epochs"]))
    elif name == "burda":
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, burda_factor)
    else:
        raise ValueError(f"unknown lr_schedule {name!r}; choose one of {list(SCHEDULES)}")
    with warnings.catch_warnings():
        # replaying the finished epochs' steps before this process's first optimizer step is the point
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
        for _ in range(completed_epochs):
            scheduler.step()
    return scheduler
