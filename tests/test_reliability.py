"""Runs that survive anything and trust nothing: safe checkpoint loading, exact resume after a
SIGKILL at any moment, one writer per run folder, and faults while writing."""

import errno
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import pyrovae
from pyrovae import runs
from pyrovae.cli import main
from pyrovae.run_folder import (CheckpointCorrupt, CheckpointFallbackWarning, RunFolder, RunFolderLocked,
                                UntrustedCheckpoint, read_checkpoint_file)

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
    state["format"] = "pyrovae-checkpoint-v2"  # 0.3's format: torch's bytes alone, no digest line
    for saved_class, loads in (("pyrovae.model.VAE", True), ("mypackage.MyVAE", False)):
        state["model_class"] = saved_class
        torch.save(state, trained_run / "checkpoint.pt")
        if not loads:
            with pytest.raises(ValueError, match="this run trained mypackage.MyVAE; pass model_class="), \
                    pytest.warns(UserWarning, match="carries no digest: loaded unverified"):
                pyrovae.load(trained_run)
            continue
        with pytest.warns(UserWarning, match="written by pyrovae 0.3 or earlier and carries no digest"):
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


# -- generations, digests, full disks, and a soak (issue #36) ----------------------------------------

def _state_of(run_dir, name="checkpoint.pt"):
    return torch.load(Path(run_dir) / name, weights_only=True)


def _same_parameters(a, b):
    return all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]) and a["epoch"] == b["epoch"]


def _flip_bytes(path, count=20, seed=0):
    data = bytearray(path.read_bytes())
    rng = random.Random(seed)
    for i in rng.sample(range(len(data) // 2, len(data)), count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


FAULTS = {"truncate": _truncate, "flip": _flip_bytes, "delete": lambda path: path.unlink()}


@pytest.fixture(scope="module")
def intact_runs(tmp_path_factory, binary_npy_module):
    """A 2-epoch run, the same run continued to 3 epochs, and the evaluation of the first."""
    root = tmp_path_factory.mktemp("intact")
    two, three = root / "two", root / "three"
    assert main(train_args(binary_npy_module, two, "--epochs", "2")) == 0
    assert main(train_args(binary_npy_module, three, "--epochs", "3")) == 0
    assert main(["evaluate", str(two), "--num-samples", "20", "--limit", "40", "--no-progress"]) in (0, 3)
    return two, three, json.loads((two / "evaluation.json").read_text())


@pytest.fixture(scope="module")
def binary_npy_module(tmp_path_factory):
    import numpy as np

    rng = np.random.default_rng(0)
    prototypes = rng.random((2, 6, 5)) > 0.5
    which = rng.integers(0, 2, 300)
    data = (prototypes[which] ^ (rng.random((300, 6, 5)) < 0.1)).astype(np.float32)
    path = tmp_path_factory.mktemp("data") / "tiny.npy"
    np.save(path, data)
    return path


def test_a_run_folder_keeps_two_digested_generations_and_a_flipped_byte_is_named(intact_runs, tmp_path):
    two, _, _ = intact_runs
    assert (two / "checkpoint.pt").is_file() and (two / "checkpoint.1.pt").is_file()
    assert not (two / "checkpoint.2.pt").exists()  # keep_checkpoints = 2
    newest, previous = _state_of(two), _state_of(two, "checkpoint.1.pt")
    assert (previous["epoch"], previous["step"]) < (newest["epoch"], newest["step"])
    assert (two / "checkpoint.pt").read_bytes()[-82:].startswith(b"\n#pyrovae-sha256:")
    damaged = tmp_path / "damaged"
    shutil.copytree(two, damaged)
    _flip_bytes(damaged / "checkpoint.pt")
    with pytest.raises(CheckpointCorrupt, match="does not match its digest"):
        read_checkpoint_file(damaged / "checkpoint.pt")
    with pytest.warns(CheckpointFallbackWarning, match="skipped checkpoint.pt: checkpoint .* does not match its digest"
                                                       ".*using checkpoint.1.pt"):
        state = RunFolder(damaged).read_checkpoint()
    assert _same_parameters(state, previous)
    _truncate(damaged / "checkpoint.1.pt")
    with pytest.raises(CheckpointCorrupt, match="no intact checkpoint in .*checkpoint.pt: .*checkpoint.1.pt: corrupt"):
        RunFolder(damaged).read_checkpoint()


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_damaged_newest_checkpoint_costs_one_interval_and_resumes_bit_for_bit(intact_runs, tmp_path, fault, capsys):
    two, three, _ = intact_runs
    out = tmp_path / "run"
    shutil.copytree(two, out)
    FAULTS[fault](out / "checkpoint.pt")
    with pytest.warns(CheckpointFallbackWarning, match="using checkpoint.1.pt"):
        code = main(train_args(binary_npy_path(two), out, "--epochs", "3", "--resume"))
    assert code == 0, capsys.readouterr().err
    assert _same_parameters(_state_of(out), _state_of(three))
    assert _metrics_without_timing(out) == _metrics_without_timing(three)


def binary_npy_path(run_dir):
    import tomllib

    return tomllib.loads((Path(run_dir) / "config.toml").read_text())["data"]["dataset"]


def _named_or_equal(code, err, got, expected, caught, what):
    """A command after a fault: it worked with the intact run's numbers (or said why they differ),
    or it stopped with a named error (exit 2, 'error:'), never a traceback."""
    if code == 2:
        assert "error:" in err and "Traceback" not in err, (what, err)
        return "named error"
    assert code in (0, 3), (what, code, err)
    if got != expected:
        assert caught, (what, "different numbers without a warning")
        return "warned"
    return "same numbers"


@pytest.mark.parametrize("name", ["checkpoint.pt", "checkpoint.1.pt", "config.toml", "metrics.jsonl",
                                  "evaluation.json"])
def test_every_file_truncated_flipped_or_deleted_gives_the_intact_numbers_or_a_named_error(intact_runs, tmp_path, name,
                                                                                         capsys):
    two, three, evaluation = intact_runs
    outcomes = {}
    for fault, damage in FAULTS.items():
        out = tmp_path / fault
        shutil.copytree(two, out)
        damage(out / name)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code = main(["evaluate", str(out), "--num-samples", "20", "--limit", "40", "--no-progress"])
        err = capsys.readouterr().err
        got = json.loads((out / "evaluation.json").read_text())["log_likelihood"] if code in (0, 3) else None
        flagged = [w for w in caught if issubclass(w.category, (CheckpointFallbackWarning, UserWarning))
                   and "Pareto" not in str(w.message)]
        outcomes[(fault, "evaluate")] = _named_or_equal(code, err, got, evaluation["log_likelihood"], flagged,
                                                        (name, fault, "evaluate"))
        code = main(["plot", str(out), "--kind", "reconstructions"])
        outcomes[(fault, "plot")] = _named_or_equal(code, capsys.readouterr().err, None, None, [], (name, fault))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code = main(train_args(binary_npy_path(two), out, "--epochs", "3", "--resume"))
        err = capsys.readouterr().err
        got = _state_of(out)["model"] if code == 0 else None
        same = code == 0 and _same_parameters(_state_of(out), _state_of(three))
        outcomes[(fault, "resume")] = _named_or_equal(code, err, None if same else got, None, caught,
                                                      (name, fault, "resume"))
    if name.startswith("checkpoint"):  # one generation damaged: everything still works, from the other
        assert set(outcomes.values()) <= {"same numbers", "warned"}, outcomes


def _fail_writes(monkeypatch, match, after=0, code=errno.ENOSPC):
    """ENOSPC (or ``code``) from fsync (where a full disk shows itself on Linux's delayed
    allocation) for the temporary files whose name contains ``match``, from its ``after``-th write on."""
    import pyrovae.run_folder as run_folder

    real_fsync, seen = os.fsync, {"count": 0}

    def fsync(fd):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if match in Path(target).name:
            seen["count"] += 1
            if seen["count"] > after:
                raise OSError(code, os.strerror(code))
        return real_fsync(fd)

    monkeypatch.setattr(run_folder.os, "fsync", fsync)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd to find what a write is of")
@pytest.mark.parametrize("target, after, says", [
    (".checkpoint.pt.", 0, "no checkpoint was written yet; the run folder keeps its config"),
    (".checkpoint.pt.", 1, "the previous checkpoint is intact (checkpoint.pt, epoch 0 step 2)"),
    (".metrics.jsonl.", 0, "no metrics.jsonl existed before. The run folder holds checkpoint.pt, epoch 1 step 0"),
])
def test_a_full_disk_while_training_is_a_named_error_and_the_same_command_goes_on(binary_npy, tmp_path, monkeypatch,
                                                                                   capsys, target, after, says):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _fail_writes(patch, target, after)
        assert main(train_args(binary_npy, out)) == 2
    err = capsys.readouterr().err
    assert "the disk is full" in err and says in err and "Traceback" not in err, err
    assert (out / "config.toml").is_file()
    resume = ["--resume"] if (out / "checkpoint.pt").exists() else []
    assert main(train_args(binary_npy, out, *resume)) == 0
    reference = tmp_path / "reference"
    assert main(train_args(binary_npy, reference)) == 0
    assert _same_parameters(_state_of(out), _state_of(reference))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd to find what a write is of")
@pytest.mark.parametrize("command, target, code, says", [
    (["evaluate", "--num-samples", "10", "--limit", "20", "--no-progress"], ".evaluation.json.", errno.ENOSPC,
     "the disk is full"),
    (["plot", "--kind", "samples"], ".samples.png.", errno.ENOSPC, "the disk is full"),
    (["report"], ".report.html.", errno.ENOSPC, "the disk is full"),
    (["evaluate", "--num-samples", "10", "--limit", "20", "--no-progress"], ".evaluation.json.", errno.EROFS,
     "the folder is read-only or not writable"),
])
def test_a_full_disk_while_evaluating_or_drawing_is_a_named_error_and_keeps_what_was_there(trained_run, monkeypatch,
                                                                                          capsys, command, target, code,
                                                                                          says):
    before = {p.name: p.read_bytes() for p in trained_run.iterdir() if p.is_file()}
    with monkeypatch.context() as patch:
        _fail_writes(patch, target, code=code)
        assert main([command[0], str(trained_run), *command[1:]]) == 2
    err = capsys.readouterr().err
    assert "could not write" in err and says in err and "Traceback" not in err, err
    for name, data in before.items():
        assert (trained_run / name).read_bytes() == data, name
    assert not list(trained_run.glob(".*.tmp"))


def test_a_run_on_a_small_filesystem_stops_with_a_named_error(binary_npy, tmp_path, capsys):
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({made.stderr.decode().strip()[:100]}); ENOSPC is injected "
                    "in the tests above instead")
    try:
        out = mount / "run"
        code = main(train_args(binary_npy, out, "--hidden", "400", "--epochs", "4"))
        err = capsys.readouterr().err
        assert code == 2 and "the disk is full" in err and "Traceback" not in err, err
        if (out / "checkpoint.pt").exists():  # what was written before stays readable
            RunFolder(out).read_checkpoint()
        assert not list(out.glob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_run_killed_at_many_random_moments_ends_bit_identical(tmp_path, binary_npy):
    """SIGKILLs at seeded random moments (PYROVAE_SOAK_SEED, PYROVAE_SOAK_KILLS to replay or to
    soak longer), each followed by a resume, until the run finishes: its parameters and metrics
    are the uninterrupted run's."""
    seed, kills = int(os.environ.get("PYROVAE_SOAK_SEED", "0")), int(os.environ.get("PYROVAE_SOAK_KILLS", "6"))
    epochs = str(5 * max(kills, 6))  # training long enough for every kill to land in it
    args = lambda out: train_args(binary_npy, out, "--epochs", epochs, "--checkpoint-every", "1")  # noqa: E731
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, CRASH_RUN, "none", "0", "--", *args(reference)], check=True, capture_output=True)
    rng = random.Random(seed)
    out = tmp_path / "soaked"
    killed = 0
    for attempt in range(kills + 1):
        resume = ["--resume"] if (out / "checkpoint.pt").exists() else []
        # a moment of the run's training, checkpoint writes and reports (30 epochs: about two seconds here)
        mode, n = ("training-time", rng.randint(20, 300)) if attempt < kills else ("none", 0)
        done = subprocess.run([sys.executable, CRASH_RUN, mode, str(n), "--", *args(out), *resume],
                              capture_output=True, text=True)
        if done.returncode == 0:
            break
        assert done.returncode == -9, (seed, attempt, n, done.stderr)
        killed += 1
    assert done.returncode == 0, done.stderr
    assert killed >= kills // 2, f"only {killed} of {kills} kills landed before the run ended"
    assert _same_parameters(_state_of(out), _state_of(reference)), (seed, killed)
    assert _metrics_without_timing(out) == _metrics_without_timing(reference), (seed, killed)
    assert not list(out.glob(".*.tmp"))


def test_a_nan_before_the_first_checkpoint_says_so_and_the_folder_keeps_its_config(binary_npy, tmp_path, capsys,
                                                                                    monkeypatch):
    out = tmp_path / "run"
    calls = {"n": 0}
    real_adam = torch.optim.Adam.step

    def poisoned(self, *args, **kwargs):  # the second step's update makes every weight NaN
        calls["n"] += 1
        result = real_adam(self, *args, **kwargs)
        if calls["n"] == 1:
            with torch.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        p.fill_(float("nan"))
        return result

    monkeypatch.setattr(torch.optim.Adam, "step", poisoned)
    assert main(train_args(binary_npy, out, "--checkpoint-every", "0", "--compile", "off")) == 2
    err = capsys.readouterr().err
    assert "epoch 1, step 2" in err and "no checkpoint was written yet" in err and "last good checkpoint" not in err, err
    assert (out / "config.toml").is_file() and not (out / "checkpoint.pt").exists()
    monkeypatch.setattr(torch.optim.Adam, "step", real_adam)
    assert main(train_args(binary_npy, out, "--checkpoint-every", "0", "--compile", "off")) == 0  # the same command
