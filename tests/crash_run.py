"""Runs ``pyrovae train`` and SIGKILLs itself at a chosen moment, for tests/test_reliability.py.

    python crash_run.py MODE N -- <pyrovae train arguments>

MODE: ``step`` (inside the N-th optimizer step: gradients computed, parameters not yet updated),
``write`` (the N-th atomic file write, after the bytes and before the rename), ``eval`` (the N-th
per-epoch evaluation, half-way), ``time`` (after N milliseconds), ``training-time`` (N milliseconds after the
first optimizer step: a moment of training, whatever the start-up took), ``none`` (no kill).
"""

import os
import signal
import sys
import threading

import torch

import pyrovae.run_folder
import pyrovae.train.trainer
from pyrovae.cli import main


def kill():
    os.kill(os.getpid(), signal.SIGKILL)


def on_nth_call(function, n):
    calls = {"count": 0}

    def wrapper(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == n:
            kill()
        return function(*args, **kwargs)

    return wrapper


if __name__ == "__main__":
    mode, n = sys.argv[1], int(sys.argv[2])
    args = sys.argv[sys.argv.index("--") + 1:]
    torch.set_num_threads(1)
    if mode == "step":
        torch.optim.Adam.step = on_nth_call(torch.optim.Adam.step, n)
    elif mode == "write":
        pyrovae.run_folder.os.replace = on_nth_call(os.replace, n)
    elif mode == "eval":
        pyrovae.train.trainer.elbo_terms = on_nth_call(pyrovae.train.trainer.elbo_terms, n)
    elif mode == "time":
        threading.Timer(n / 1000, kill).start()
    elif mode == "training-time":
        first_step = torch.optim.Adam.step

        def start_timer_then_step(self, *args, **kwargs):
            torch.optim.Adam.step = first_step
            threading.Timer(n / 1000, kill).start()
            return first_step(self, *args, **kwargs)

        torch.optim.Adam.step = start_timer_then_step
    sys.exit(main(args))
