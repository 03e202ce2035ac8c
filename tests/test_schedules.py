"""Learning-rate schedules, validation, best.pt, early stopping, repeated evaluation and the
reproduction configs."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import pyrovae
from pyrovae import config as cfg
from pyrovae import runs
from pyrovae.cli import main
from pyrovae.train import Callback, EarlyStopping
from pyrovae.train.schedules import BURDA_EPOCHS, burda_factor

# run configs; a sweep's space (configs/sweep-*.toml) is checked by tests/test_sweep.py
CONFIGS = sorted(p for p in (Path(__file__).parent.parent / "configs").glob("*.toml") if not p.name.startswith("sweep-"))


def tiny():
    torch.manual_seed(0)
    return torch.rand(64, 6), torch.rand(32, 6)


def fit_lrs(epochs, **options):
    x, valid = tiny()
    vae = pyrovae.VAE((6,), latent_dim=1, hidden=(4,))
    history = pyrovae.fit(vae, x, epochs=epochs, batch_size=32, progress=False, device="cpu", valid=valid, **options)
    return [row["lr"] for row in history], vae, history


def test_each_schedule_gives_the_documented_rate():
    lrs, _, _ = fit_lrs(5, lr=0.1, lr_schedule="multistep", lr_milestones=[2, 4], lr_gamma=0.5)
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    lrs, _, _ = fit_lrs(4, lr=0.1, lr_schedule="exponential", lr_gamma=0.9)
    assert lrs == pytest.approx([0.1 * 0.9**e for e in range(4)])
    lrs, _, _ = fit_lrs(4, lr=0.1, lr_schedule="cosine")
    assert lrs == pytest.approx([0.1 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)])
    lrs, _, _ = fit_lrs(5, lr=1e-3, lr_schedule="burda")
    assert lrs == pytest.approx([1e-3, 1e-3 * 10 ** (-1 / 7), 1e-3 * 10 ** (-1 / 7), 1e-3 * 10 ** (-1 / 7),
                                 1e-3 * 10 ** (-2 / 7)])
    # Burda et al.: 3^i epochs at 10^(-i/7), i = 0..7, 3280 epochs in all
    stage_starts = [sum(3**j for j in range(i)) for i in range(8)]
    for i, start in enumerate(stage_starts):
        assert burda_factor(start) == pytest.approx(10 ** (-i / 7))
        assert burda_factor(start + 3**i - 1) == pytest.approx(10 ** (-i / 7))
    assert BURDA_EPOCHS == 3280


def test_a_schedule_resumes_on_its_rates(tmp_path):
    x, valid = tiny()
    options = dict(batch_size=32, progress=False, device="cpu", lr=0.1, lr_schedule="multistep", lr_milestones=[2, 3],
                   lr_gamma=0.5, valid=valid)
    torch.manual_seed(1)
    straight = pyrovae.VAE((6,), latent_dim=1, hidden=(4,))
    expected = pyrovae.fit(straight, x, epochs=4, run_dir=tmp_path / "a", **options)
    torch.manual_seed(1)
    first = pyrovae.VAE((6,), latent_dim=1, hidden=(4,))
    pyrovae.fit(first, x, epochs=2, run_dir=tmp_path / "b", **options)
    resumed = pyrovae.VAE((6,), latent_dim=1, hidden=(4,))
    history = pyrovae.fit(resumed, x, epochs=4, run_dir=tmp_path / "b", resume=True, **options)
    assert [r["lr"] for r in history] == [r["lr"] for r in expected] == pytest.approx([0.1, 0.1, 0.05, 0.025])
    assert all(torch.equal(a, b) for a, b in zip(straight.parameters(), resumed.parameters()))


class ScriptedValidation(Callback):
    """Replaces each epoch's validation ELBO by a scripted curve."""

    def __init__(self, curve):
        self.curve = curve

    def on_epoch_end(self, trainer, row):
        row["valid_elbo"] = self.curve[row["epoch"] - 1]


def test_early_stopping_stops_at_the_right_epoch_and_best_pt_is_the_best_epoch(tmp_path):
    x, valid = tiny()
    curve = [-10.0, -9.0, -8.0, -8.5, -8.1, -8.2, -7.0, -6.0]  # best at epoch 3, then 3 epochs without
    vae = pyrovae.VAE((6,), latent_dim=1, hidden=(4,))
    history = pyrovae.fit(vae, x, epochs=8, batch_size=32, progress=False, device="cpu", valid=valid, patience=3,
                          run_dir=tmp_path, callbacks=[ScriptedValidation(curve)])
    assert len(history) == 6
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["epoch"] == 3
    last = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert last["epoch"] == 6
    # resumed with more epochs, a run that stopped stays stopped
    again = pyrovae.fit(pyrovae.VAE((6,), latent_dim=1, hidden=(4,)), x, epochs=10, batch_size=32, progress=False,
                        device="cpu", valid=valid, patience=3, run_dir=tmp_path, resume=True,
                        callbacks=[ScriptedValidation(curve + [0.0, 0.0])])
    assert len(again) == 6


def test_repeats_give_independent_estimates_and_best_is_evaluated(tmp_path, binary_npy):
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(binary_npy), "--epochs", "2", "--hidden", "8", "--out", str(out),
                 "--no-progress", "--no-plots", "--valid-fraction", "0.2"]) == 0
    result = runs.evaluate_run(out, num_samples=20, progress=False, repeats=3, checkpoint="best")
    assert len(result["repeats"]) == 3 and len(set(result["repeats"])) == 3
    assert result["log_likelihood"] == pytest.approx(sum(result["repeats"]) / 3)
    assert result["log_likelihood_sd"] > 0 and result["checkpoint"] == "best"
    valid = runs.evaluate_run(out, num_samples=20, progress=False, split="valid")
    assert valid["num_examples"] == 60  # 20% of the 300 examples


@pytest.mark.parametrize("args,message", [
    (["--lr-schedule", "cosin"], "invalid choice: 'cosin'"),
    (["--lr-schedule", "multistep", "--lr-milestones", "20,10"], "lr_milestones must be increasing"),
    (["--patience", "-1"], "patience must be >= 0"),
    (["--patience", "2"], "early stopping \\(patience\\) needs a validation set"),
    (["--valid-fraction", "1.5"], "valid_fraction must be in \\[0, 1\\)"),
    (["--valid-fraction", "0.001"], "leaves no validation examples"),
])
def test_bad_training_options_are_clear_errors(tmp_path, binary_npy, capsys, args, message):
    out = tmp_path / "run"
    try:
        code = main(["train", "--dataset", str(binary_npy), "--epochs", "1", "--out", str(out), "--no-progress", *args])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    assert pytest.importorskip("re").search(message, capsys.readouterr().err)
    assert not out.exists()


def test_patience_below_one_and_best_without_a_best_pt_are_refused(tmp_path, binary_npy, capsys):
    with pytest.raises(ValueError, match="patience must be an integer >= 1"):
        EarlyStopping(0)
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(binary_npy), "--epochs", "1", "--hidden", "8", "--out", str(out),
                 "--no-progress", "--no-plots"]) == 0
    assert main(["evaluate", str(out), "--checkpoint", "best", "--num-samples", "5", "--no-progress"]) == 2
    assert "no best.pt" in capsys.readouterr().err


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_parses_and_trains_one_step_on_tiny_data(tmp_path, binary_npy, path):
    config = cfg.validate(cfg.load_toml(path))
    dataset = str(binary_npy)
    if config["model"]["model"] == "m2":  # semi-supervised: the data need labels, 10 classes
        images = np.load(binary_npy)
        dataset = str(tmp_path / "labelled.npz")
        np.savez(dataset, train=images, train_labels=np.arange(len(images)) % 10)
        config["train"]["labels"] = 20
    config["data"].update(dataset=dataset, valid_fraction=0.2 if config["train"]["patience"] else 0.0)
    config["train"].update(epochs=1, batch_size=300, device="cpu")
    config["logging"].update(plots=False, nll_every=0)
    config["model"]["prior"] = {k: (min(v, 4) if k == "components" else v) for k, v in config["model"]["prior"].items()}
    if config["data"]["features"]:  # M1+M2: the latent means of a VAE of the same tiny data
        images = pyrovae.datasets.load(dataset).data
        pyrovae.fit(pyrovae.VAE(images.shape[1:], latent_dim=3, hidden=(4,)), images, epochs=1, progress=False,
                    device="cpu", run_dir=tmp_path / "m1")
        config["data"]["features"] = str(tmp_path / "m1")
    vae, history = runs.train_run(config, tmp_path / "run", progress=False)
    assert len(history) == 1 and math.isfinite(history[0]["train_objective"])


def test_the_nll_curve_records_the_estimate_of_an_even_spread_of_test_examples(tmp_path):
    from pyrovae.train import LogLikelihoodCurve

    torch.manual_seed(0)
    x, test = torch.randn(64, 6), torch.randn(40, 6)
    vae = pyrovae.VAE((6,), latent_dim=1, hidden=(4,), likelihood={"kind": "gaussian", "scale": 1.0})
    history = pyrovae.fit(vae, x, test, epochs=3, batch_size=32, progress=False, device="cpu", run_dir=tmp_path,
                          callbacks=[LogLikelihoodCurve(every=2, samples=10, examples=8)])
    assert "test_log_likelihood" not in history[0] and "test_log_likelihood" in history[1]
    expected = pyrovae.log_likelihood(vae, test[::5], num_samples=10, seed=3).mean()  # every 5th of 40: 8 examples
    assert history[2]["test_log_likelihood"] == pytest.approx(float(expected), rel=1e-6)
    assert "test_log_likelihood" in (tmp_path / "metrics.jsonl").read_text().splitlines()[2]


def test_rmsprop_is_pytorchs_and_a_run_resumes_on_it_exactly(tmp_path):
    x, valid = tiny()
    options = dict(batch_size=32, progress=False, device="cpu", lr=1e-3, optimizer="rmsprop", valid=valid)
    torch.manual_seed(2)
    straight = pyrovae.VAE((6,), latent_dim=1, hidden=(4,))
    trainer = pyrovae.train.Trainer(straight, cfg.train_options({"optimizer": "rmsprop", "lr": 1e-3, "device": "cpu"}))
    trainer.setup(x)
    assert type(trainer.optimizer) is torch.optim.RMSprop
    assert trainer.optimizer.defaults["alpha"] == 0.99 and trainer.optimizer.defaults["lr"] == 1e-3
    pyrovae.fit(straight, x, epochs=3, run_dir=tmp_path / "a", **options)
    torch.manual_seed(2)
    first = pyrovae.VAE((6,), latent_dim=1, hidden=(4,))
    pyrovae.fit(first, x, epochs=1, run_dir=tmp_path / "b", **options)
    resumed = pyrovae.VAE((6,), latent_dim=1, hidden=(4,))
    pyrovae.fit(resumed, x, epochs=3, run_dir=tmp_path / "b", resume=True, **options)
    assert all(torch.equal(a, b) for a, b in zip(straight.parameters(), resumed.parameters()))
    # the optimizer's state belongs to its kind: another optimizer cannot continue it
    with pytest.raises(ValueError, match="trained with optimizer 'rmsprop', this run asks for 'adam'"):
        pyrovae.fit(pyrovae.VAE((6,), latent_dim=1, hidden=(4,)), x, epochs=4, run_dir=tmp_path / "b", resume=True,
                    **{**options, "optimizer": "adam"})
    with pytest.raises(ValueError, match="optimizer must be one of"):
        cfg.train_options({"optimizer": "sgd"})
