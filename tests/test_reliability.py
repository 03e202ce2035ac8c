"""Runs that survive anything and trust nothing: safe checkpoint loading, exact resume after a
SIGKILL at any moment, one writer per run folder, and faults while writing."""

import errno
import json
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pyrovae
from pyrovae import runs
from pyrovae.cli import main
from pyrovae.run_folder import RunFolder, RunFolderLocked, UntrustedCheckpoint

CRASH_RUN = str(Path(__file__).parent / "crash_run.py")
TIMING_KEYS = {"seconds", "train_seconds"}


def train_args(data, out, *extra):
    return ["train", "--dataset", str(data), "--epochs", "3", "--hidden", "8", "--batch-size", "50",
            "--out", str(out), "--no-progress", "--no-plots", "--device", "cpu", "--checkpoint-every", "2", *extra]


class Payload:
    """A pickle that runs code when loaded: it creates the file ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def trained_run(tmp_path, binary_npy):
    out = tmp_path / "run"
    assert main(train_args(binary_npy, out, "--epochs", "1")) == 0
    return out


def poison(run_dir, marker):
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    state["payload"] = Payload(marker)
    with open(run_dir / "checkpoint.pt", "wb") as file:
        torch.save(state, file, pickle_module=pickle)


def test_a_checkpoint_of_pyrovae_0_3_loads_and_an_unknown_class_is_refused(trained_run):
    """pyrovae 0.3 kept the VAE in ``pyrovae.model`` and its checkpoints name that class; such a
    run still loads as the VAE it was, while a class pyrovae does not know is still refused."""
    trained = pyrovae.load(trained_run)
    state = torch.load(trained_run / "checkpoint.pt", weights_only=True)
    assert state["model_class"] == "pyrovae.models.vae.VAE"
    for saved_class, loads in (("pyrovae.model.VAE", True), ("mypackage.MyVAE", False)):
        state["model_class"] = saved_class
        torch.save(state, trained_run / "checkpoint.pt")
        if not loads:
            with pytest.raises(ValueError, match="this run trained mypackage.MyVAE; pass model_class="):
                pyrovae.load(trained_run)
            continue
        old = pyrovae.load(trained_run)
        assert type(old) is pyrovae.VAE
        x = torch.rand(5, *trained.data_shape)
        torch.testing.assert_close(old.encode(x)[0], trained.encode(x)[0], rtol=0, atol=0)


def test_a_checkpoint_carrying_code_is_refused_by_every_reader(trained_run, tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    poison(trained_run, marker)
    for png in trained_run.glob("*.png"):
        png.unlink()
    lightning = pytest.importorskip("pyrovae.lightning")
    readers = [
        lambda: pyrovae.load(trained_run),
        lambda: lightning.VAEModule.from_run(trained_run),
        lambda: runs.evaluate_run(trained_run, num_samples=5, progress=False),
        lambda: runs.plot_run(trained_run, "samples"),
        lambda: runs.report_run(trained_run),
        lambda: RunFolder(trained_run).read_checkpoint(),
    ]
    for read in readers:
        with pytest.raises(UntrustedCheckpoint, match="refused .* could run code.*trust"):
            read()
    for command in (["evaluate", str(trained_run), "--num-samples", "5", "--no-progress"],
                    ["plot", str(trained_run), "--kind", "samples"], ["report", str(trained_run)],
                    ["train", "--out", str(trained_run), "--resume", "--epochs", "2", "--no-progress"]):
        assert main(command) == 2, command
        assert "refused" in capsys.readouterr().err
    assert not marker.exists()  # the payload never ran


def test_exact_resume_after_sigkill_at_any_moment(tmp_path, binary_npy):
    """Kill a small run during a step, during a checkpoint write, during the per-epoch evaluation
    and at a random time; resumed, each ends with the uninterrupted run's parameters and metrics."""
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, CRASH_RUN, "none", "0", "--", *train_args(binary_npy, reference)], check=True,
                   capture_output=True)
    expected = torch.load(reference / "checkpoint.pt", weights_only=True)
    expected_rows = _metrics_without_timing(reference)
    kills = [("step", 4), ("step", 9), ("write", 3), ("eval", 2), ("time", random.Random(0).randint(2500, 6000))]
    for mode, n in kills:
        out = tmp_path / f"{mode}-{n}"
        killed = subprocess.run([sys.executable, CRASH_RUN, mode, str(n), "--", *train_args(binary_npy, out)],
                                capture_output=True, text=True)
        resume = ["--resume"] if (out / "checkpoint.pt").exists() else []
        finished = subprocess.run([sys.executable, CRASH_RUN, "none", "0", "--", *train_args(binary_npy, out), *resume],
                                  capture_output=True, text=True)
        assert finished.returncode == 0, (mode, killed.returncode, finished.stderr)
        state = torch.load(out / "checkpoint.pt", weights_only=True)
        for name, value in expected["model"].items():
            assert torch.equal(state["model"][name], value), (mode, n, name)
        assert _metrics_without_timing(out) == expected_rows, (mode, n)
        assert not list(out.glob(".*.tmp")), "a temporary file was left behind"


def _metrics_without_timing(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def test_a_second_writer_is_refused_and_a_stale_lock_is_taken_over(tmp_path, binary_npy, capsys):
    run = RunFolder(tmp_path / "run")
    with run.lock():
        # another process trying the same folder: simulated by a second lock on the file
        code = subprocess.run([sys.executable, "-m", "pyrovae", *train_args(binary_npy, run.path)[0:1],
                               *train_args(binary_npy, run.path)[1:]], capture_output=True, text=True)
        assert code.returncode == 2
        assert f"is being written by pid={os.getpid()}" in code.stderr
        with pytest.raises(RunFolderLocked, match="being written by pid="):
            with RunFolder(run.path).lock():
                pass
    # a lock file left by a process that is gone: taken over with a warning
    (run.path / ".lock").write_text("pid=999999999 host=elsewhere since=2026-01-01T00:00:00")
    with pytest.warns(UserWarning, match="taking over the lock of process 999999999, which is gone"):
        with run.lock():
            pass


def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint_and_stops_clearly(tmp_path, binary_npy, monkeypatch,
                                                                                   capsys):
    out = tmp_path / "run"
    assert main(train_args(binary_npy, out, "--epochs", "1")) == 0
    before = (out / "checkpoint.pt").read_bytes()
    import pyrovae.run_folder as run_folder

    real_replace = os.replace

    def disk_full(src, dst):
        if str(dst).endswith("checkpoint.pt"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(run_folder.os, "replace", disk_full)
    assert main(train_args(binary_npy, out, "--epochs", "3", "--resume")) == 2
    err = capsys.readouterr().err
    assert "could not write the checkpoint" in err and "No space left on device" in err and "intact" in err
    assert (out / "checkpoint.pt").read_bytes() == before
    assert not list(out.glob(".*.tmp"))


def test_nan_names_gradient_clipping_and_clipping_is_applied(binary_npy):
    x = torch.rand(64, 4)
    vae = pyrovae.VAE((4,), latent_dim=1, hidden=(4,))

    def poison_weights(row, model):
        with torch.no_grad():
            model.decoder.net[0].weight.fill_(float("nan"))

    with pytest.raises(FloatingPointError, match="grad_clip"):
        pyrovae.fit(vae, x, epochs=2, batch_size=32, progress=False, device="cpu", callback=poison_weights)
    norms = []

    class GradientNorms(pyrovae.train.Callback):
        def on_step_end(self, trainer, step, loss):
            norms.append(float(torch.linalg.vector_norm(torch.stack(
                [torch.linalg.vector_norm(p.grad) for p in trainer.vae.parameters()]))))

    vae = pyrovae.VAE((4,), latent_dim=1, hidden=(4,))
    history = pyrovae.fit(vae, x, epochs=2, batch_size=16, progress=False, device="cpu", grad_clip=0.01,
                          callbacks=[GradientNorms()])
    assert history[-1]["grad_norm"] > 0.01  # the norm before clipping is what the metrics report
    assert len(norms) == 8 and max(norms) <= 0.01 * (1 + 1e-5)  # what the optimizer saw
