"""Sweeps with Optuna: a space parsed into Optuna's suggestions, trials as run folders judged by
held-out log p(x), several processes on one study, and a sweep killed with SIGKILL continued by the
same command (the killed trial failed and run again from its folder, nothing finished lost)."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

optuna = pytest.importorskip("optuna")

from pyrovae import config as cfg  # noqa: E402
from pyrovae import sweep  # noqa: E402
from pyrovae.cli import main  # noqa: E402
from pyrovae.extras import MissingExtraError  # noqa: E402
from pyrovae.run_folder import RunFolder  # noqa: E402

SPACE = """
[data]
dataset = "{data}"

[model]
latent_dim = 2
hidden = [16]
prior = {{kind = ["normal", "mixture"]}}

[train]
epochs = {epochs}
batch_size = 32
lr = {{log = [1e-3, 1e-2]}}
report_examples = 100
compile = "off"

[sweep]
trials = 3
num_samples = 20
eval_examples = 40
"""


@pytest.fixture
def space(tmp_path):
    rng = np.random.default_rng(0)
    prototypes = rng.random((3, 8, 8)) > 0.5
    which = rng.integers(0, 3, 360)
    images = (prototypes[which] ^ (rng.random((360, 8, 8)) < 0.1)).astype(np.float32)
    data = tmp_path / "shapes.npz"
    np.savez(data, train=images[:300], test=images[300:])

    def write(epochs=2, name="space.toml"):
        path = tmp_path / name
        path.write_text(SPACE.format(data=data, epochs=epochs))
        return path
    return write


def _study(out):
    study, _ = sweep.load_sweep(out)
    return study


def test_a_space_becomes_optunas_suggestions_and_bad_spaces_are_named():
    space = sweep.SearchSpace({"model": {"prior": {"kind": ["normal", "vamp"]}, "hidden": [[400], [500, 500]],
                                         "latent_dim": {"int": [2, 8]}},
                               "train": {"lr": {"log": [1e-4, 3e-3]}, "beta": {"uniform": [0.5, 2.0]}, "epochs": 3}})
    assert set(space.searches) == {"model.prior.kind", "model.hidden", "model.latent_dim", "train.lr", "train.beta"}
    assert space.fixed["train"] == {"epochs": 3}
    trial = optuna.trial.FixedTrial({"model.prior.kind": "vamp", "model.hidden": "[500, 500]", "model.latent_dim": 5,
                                     "train.lr": 1e-3, "train.beta": 1.5})
    values = space.suggest(trial)
    assert values["model.hidden"] == [500, 500] and values["model.prior.kind"] == "vamp"
    config = space.assign(space.fixed, values)
    assert config["model"]["prior"] == {"kind": "vamp"} and config["model"]["latent_dim"] == 5
    fair = sweep.SearchSpace({"data": {"binarize": "none"},
                              "model": {"likelihood": {"kind": ["gaussian", "laplace", "continuous_bernoulli"]}}})
    assert fair.searches["model.likelihood.kind"]["choices"][2] == "continuous_bernoulli"
    for table, message in (({"train": {"lr": 1e-3}}, "searches nothing"),
                           ({"train": {"lr": {"log": [0, 1e-3]}}}, "log-uniform range needs low > 0"),
                           ({"train": {"lr": {"uniform": [3, 1]}}}, "low < high"),
                           ({"train": {"lrr": [1e-3, 1e-2]}}, "unknown key 'lrr' in \\[train\\]"),
                           ({"sweep": {"trails": 3}, "train": {"lr": [1e-3]}}, "unknown key 'trails' in \\[sweep\\]"),
                           ({"model": {"prior": {"kind": ["normal", "gaussian-ish"]}}}, "gaussian-ish"),
                           ({"model": {"likelihood": {"kind": ["bernoulli", "continuous_bernoulli"]}}},
                            "different footings \\(bernoulli: a probability of binarized data; continuous_bernoulli: "
                            "a density of unbinarized data\\)")):
        with pytest.raises(ValueError, match=message):
            sweep.SearchSpace(table)


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "configs").glob("sweep-*.toml")),
                         ids=lambda p: p.stem)
def test_every_shipped_space_parses_and_each_choice_makes_a_valid_config(path):
    space = sweep.SearchSpace(cfg.load_toml(path))  # validates every choice's config, refuses mixed footings
    assert space.searches and space.options["trials"] >= 1


def test_a_three_trial_sweep_writes_run_folders_judged_by_held_out_log_likelihood(space, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", str(space()), "--out", str(out), "--no-progress", "--seed", "0"]) == 0
    study = _study(out)
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                         optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 3
    for trial in study.trials:
        folder = out / trial.user_attrs["run_dir"]
        assert RunFolder(folder).checkpoint_generations()
        if trial.state == optuna.trial.TrialState.COMPLETE:
            evaluation = json.loads((folder / "evaluation.json").read_text())
            assert evaluation["split"] == "valid"  # chosen on held-out training data, not the test set
            assert trial.value == pytest.approx(evaluation["log_likelihood"])
            assert trial.user_attrs["pareto_k_above_0.7_share"] == \
                evaluation["importance_diagnostics"]["pareto_k_above_0.7_share"]
            assert set(trial.params) == {"model.prior.kind", "train.lr"}
            assert len(trial.intermediate_values) == 2  # the validation ELBO of each epoch, reported
    assert "best: trial" in capsys.readouterr().out
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "Trials, best first" in page and "The objective against each option" in page
    assert page.count("data:image/png;base64,") >= 2


def _sweep_command(space_file, out, *extra):
    return [sys.executable, "-m", "pyrovae", "sweep", str(space_file), "--out", str(out), "--no-progress", *extra]


def test_two_processes_work_on_one_study(space, tmp_path):
    out = tmp_path / "shared"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen(_sweep_command(space(), out, "--trials", "4", "--heartbeat", "2"), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), [o[1][-2000:] for o in outputs]
    study = _study(out)
    finished = [t for t in study.trials if t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL]
    assert 4 <= len(finished) <= 5  # at most one more than asked: a worker may start one as the other ends
    folders = [t.user_attrs["run_dir"] for t in finished]
    assert len(set(folders)) == len(folders)
    assert all("trial " in o[0] for o in outputs), "each process ran trials"


def test_a_sweep_killed_mid_trial_is_continued_by_the_same_command(space, tmp_path):
    out = tmp_path / "killed"
    space_file = space(epochs=6)
    command = _sweep_command(space_file, out, "--trials", "2", "--heartbeat", "1")
    worker = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.time()
    # kill it inside its second trial, after that trial's first epoch is checkpointed
    while not (RunFolder(out / "trial-0001").checkpoint_generations()):
        assert worker.poll() is None, worker.communicate()[1][-2000:]
        assert time.time() - started < 240
        time.sleep(0.2)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    before = {t.number: (t.state, t.value) for t in _study(out).trials}
    assert before[0][0] == optuna.trial.TrialState.COMPLETE
    assert before[1][0] == optuna.trial.TrialState.RUNNING  # killed: its heartbeat stops
    epochs_done = len(RunFolder(out / "trial-0001").read_metrics())
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    study = _study(out)
    states = {t.number: t.state for t in study.trials}
    assert states[1] == optuna.trial.TrialState.FAIL  # the killed trial, marked failed ...
    retry = [t for t in study.trials if t.number > 1 and t.user_attrs.get("run_dir") == "trial-0001"]
    assert len(retry) == 1 and retry[0].state == optuna.trial.TrialState.COMPLETE  # ... and run again, in its folder
    assert retry[0].params == study.trials[1].params
    assert "resumed" in result.stdout
    metrics = RunFolder(out / "trial-0001").read_metrics()
    assert len(metrics) == 6 and epochs_done >= 1  # continued from its checkpoint, not trained again from scratch
    assert study.trials[0].value == before[0][1]  # nothing finished lost


def test_a_missing_optuna_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'pyrovae\[sweep\]'"):
        sweep.require_optuna()


def test_report_of_a_folder_that_is_no_sweep_is_a_run_report_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "error" in capsys.readouterr().err
    assert not sweep.is_sweep_folder(Path(tmp_path))


def test_densities_unbounded_at_the_datas_atoms_are_warned_of():
    atoms = torch.zeros(100, 8)
    atoms[:, :2] = torch.rand(100, 2)
    unbounded = sweep.SearchSpace({"data": {"binarize": "none"},
                                   "model": {"likelihood": {"kind": ["gaussian", "continuous_bernoulli"]}}})
    with pytest.warns(sweep.SweepWarning, match="exactly 0 or 1, where the density of continuous_bernoulli"):
        sweep._warn_of_unbounded_densities(unbounded, atoms)
    bounded = sweep.SearchSpace({"data": {"binarize": "none"}, "model": {"likelihood": {"kind": ["gaussian", "laplace"]}}})
    with warnings.catch_warnings():
        warnings.simplefilter("error", sweep.SweepWarning)
        sweep._warn_of_unbounded_densities(bounded, atoms)  # fixed scales: bounded densities, no warning
        sweep._warn_of_unbounded_densities(unbounded, torch.rand(100, 8) * 0.9 + 0.05)  # no atoms
