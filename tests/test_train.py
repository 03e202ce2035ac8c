"""fit's run folder: checkpoints, exact resume, the CLI, and the bad inputs it must name."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import pyrovae
from pyrovae.cli import main


def make_data(n=200):
    torch.manual_seed(0)
    return torch.rand(n, 6, 5)  # grey values: dynamic binarization


def make_vae():
    return pyrovae.VAE((6, 5), latent_dim=2, hidden=(16,))


def test_checkpoint_round_trip_and_exact_resume(tmp_path):
    x = make_data()
    straight = make_vae_seeded()
    pyrovae.fit(straight, x, x[:50], epochs=3, batch_size=32, progress=False, run_dir=tmp_path / "a", device="cpu")

    first = make_vae_seeded()  # the same initial weights
    pyrovae.fit(first, x, x[:50], epochs=1, batch_size=32, progress=False, run_dir=tmp_path / "b", device="cpu")
    loaded = pyrovae.load(tmp_path / "b")
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), loaded.state_dict().values()))

    resumed = make_vae()
    history = pyrovae.fit(resumed, x, x[:50], epochs=3, batch_size=32, progress=False, run_dir=tmp_path / "b", resume=True, device="cpu")
    assert [row["epoch"] for row in history] == [1, 2, 3]
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    state_a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    state_b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    for sa, sb in zip(state_a["optimizer"]["state"].values(), state_b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    for key in ("epoch", "train_elbo", "test_elbo", "kl", "seconds", "test_reconstruction", "train_kl"):
        assert key in json.loads(lines[-1])


def test_the_training_report_reads_the_first_report_examples():
    """train_kl is the closed-form KL(q(z|x) || N(0, I)) averaged over the first report_examples
    training examples, at the epoch's end: computed here with torch.distributions."""
    torch.manual_seed(0)
    x = (torch.rand(200, 6, 5) < 0.5).float()  # binary: the report reads x itself
    x[:40] = 0.0  # the first 40 unlike the rest, so reading more of them would show
    vae = make_vae_seeded()
    history = pyrovae.fit(vae, x, epochs=1, batch_size=32, progress=False, device="cpu", report_examples=40)

    def mean_kl(xs):
        with torch.no_grad():
            loc, scale = vae.encode(xs)
            q = torch.distributions.Normal(loc, scale)
            return float(torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1).mean())

    assert history[-1]["train_kl"] == pytest.approx(mean_kl(x[:40]), rel=1e-5)
    assert abs(mean_kl(x) - mean_kl(x[:40])) > 1e-3
    with pytest.raises(ValueError, match="report_examples"):
        pyrovae.fit(make_vae(), x, epochs=1, progress=False, report_examples=0)


def make_vae_seeded():
    torch.manual_seed(0)
    return make_vae()


def test_resume_with_another_config_is_refused(tmp_path):
    x = make_data()
    pyrovae.fit(make_vae(), x, epochs=1, progress=False, run_dir=tmp_path, device="cpu")
    other = pyrovae.VAE((6, 5), latent_dim=3, hidden=(16,))
    with pytest.raises(ValueError, match="another model config.*latent_dim"):
        pyrovae.fit(other, x, epochs=2, progress=False, run_dir=tmp_path, resume=True)


def test_corrupt_and_missing_checkpoints_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        pyrovae.load(tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="corrupt checkpoint"):
        pyrovae.load(tmp_path)
    torch.save({"weights": 1}, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="not a pyrovae checkpoint"):
        pyrovae.load(tmp_path)


def test_cli_trains_on_a_tiny_npy_and_writes_every_file(tmp_path, binary_npy):
    out = tmp_path / "run"
    code = main(["train", "--dataset", str(binary_npy), "--epochs", "2", "--hidden", "16", "--batch-size", "50",
                 "--out", str(out), "--no-progress", "--device", "cpu"])
    assert code == 0
    for name in ("config.toml", "checkpoint.pt", "metrics.jsonl", "manifold.png"):
        assert (out / name).stat().st_size > 0, name
    vae = pyrovae.load(out)
    assert vae.latent_dim == 2 and vae.data_shape == (1, 6, 5)
    # resume extends the run with more epochs from its own config
    assert main(["train", "--out", str(out), "--resume", "--epochs", "3", "--no-progress", "--no-plots"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_python_m_pyrovae_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pyrovae", "train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--latent-dim" in result.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dataset", "cifar99"], "unknown dataset 'cifar99'"),
        (["--loss", "elbo"], "invalid choice: 'elbo'"),
        (["--latent-dim", "0"], "latent_dim must be >= 1; got 0"),
        (["--prior", "gamma"], "unknown prior 'gamma'; choose one of"),
        (["--likelihood", "poisson"], "unknown likelihood 'poisson'; choose one of"),
        (["--prior", "mixture", "--prior-arg", "componentz=3"], "bad arguments .* it takes"),
        (["--loss", "meanfield", "--estimator", "dreg"], "estimator 'dreg' does not apply to loss 'meanfield'.*dreg with iwae"),
        (["--loss", "iwae", "--free-bits", "0.5"], "free bits act on the ELBO's KL term"),
        (["--prior", "mixture", "--free-bits", "0.5"], "'mixture' prior does not"),
    ],
)
def test_cli_bad_inputs_give_clear_errors_and_no_run_folder(tmp_path, binary_npy, capsys, args, message):
    out = tmp_path / "run"
    argv = ["train", "--dataset", str(binary_npy), "--epochs", "1", "--out", str(out), "--no-progress", *args]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own choices
        code = exit_.code
    assert code == 2
    assert pytest.importorskip("re").search(message, capsys.readouterr().err)
    assert not out.exists()


def test_missing_data_folder_lists_the_places_looked_in(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYROVAE_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError) as error:
        pyrovae.datasets.load("mnist", data_dir=tmp_path / "empty", download=False)
    text = str(error.value)
    assert "empty" in text and "nowhere" in text and "/usr/share/datasets/mnist" in text and "cache" in text
    assert main(["train", "--dataset", "frey", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "frey_rawface.mat" in capsys.readouterr().err


def test_array_files_of_wrong_rank_or_with_nan_are_refused(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros(10, dtype=np.float32))
    with pytest.raises(ValueError, match=r"shape \(N, D\).*got shape \(10,\)"):
        pyrovae.datasets.load(str(tmp_path / "flat.npy"))
    bad = np.zeros((4, 3), dtype=np.float32)
    bad[2, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match=r"NaN or infinite; found nan at index \(2, 1\)"):
        pyrovae.datasets.load(str(tmp_path / "nan.npy"))


def test_shared_data_loaders(shared_data, monkeypatch):
    monkeypatch.setenv("PYROVAE_DATA", shared_data)
    test = pyrovae.datasets.load("mnist", split="test")
    assert test.data.shape == (10000, 1, 28, 28) and test.targets[:3].tolist() == [7, 2, 1]
    assert 0 <= float(test.data.min()) and float(test.data.max()) == 1.0
    frey = pyrovae.datasets.load("frey", split="all")
    assert frey.data.shape == (1965, 1, 28, 20)
    static = pyrovae.datasets.load("binarized-mnist", split="test")
    assert static.data.shape == (10000, 1, 28, 28) and static.is_binary


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debians_folder(monkeypatch):
    monkeypatch.delenv("PYROVAE_DATA", raising=False)
    test = pyrovae.datasets.load("fashion-mnist", split="test", download=False)
    assert test.data.shape == (10000, 1, 28, 28) and int(test.targets.max()) == 9


def test_a_one_split_files_figures_label_the_examples_they_show(tmp_path, monkeypatch):
    """A labelled file with no test split and a validation share held out: the scatter's colours
    and the attribute vectors read the labels of the very examples drawn (the held-out permutation
    must not shift one against the other)."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 120)
    images = np.zeros((120, 6, 6), np.uint8)
    images[np.arange(120), labels, 0] = 255  # the label is written in the image: row label, column 0
    path = tmp_path / "one-split.npz"
    np.savez(path, train=images, train_labels=labels)
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(path), "--valid-fraction", "0.25", "--epochs", "1", "--latent-dim", "2",
                 "--hidden", "8", "--no-plots", "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    shown = []

    def scatter(vae, x, labels):
        shown.append((x, labels))
        return plt.figure()

    monkeypatch.setattr(pyrovae.plots, "scatter", scatter)
    pyrovae.runs.plot_run(out, "scatter")
    (x, drawn_labels), = shown
    assert torch.equal(x.reshape(len(x), 6, 6)[:, :, 0].argmax(1), drawn_labels.to(torch.long))


def test_bf16_rounds_the_training_steps_products_and_nothing_else(monkeypatch):
    """precision='bf16': the decoder's output is bfloat16 inside each training step, float32 in
    the epoch's ELBO report and every estimator; parameters, gradients and the optimizer's state
    stay float32. A CPU without bfloat16 instructions is refused, naming them."""
    from pyrovae.fast import precision

    if not precision.cpu_bf16_instructions():
        pytest.skip("this CPU has no bfloat16 instructions")
    torch.manual_seed(0)
    x = torch.rand(300, 1, 28, 28)
    vae = pyrovae.VAE((1, 28, 28), latent_dim=4, hidden=(32,))
    dtypes = []
    handle = vae.decoder.register_forward_hook(lambda module, args, out: dtypes.append((torch.is_grad_enabled(),
                                                                                          out.dtype)))
    history = pyrovae.fit(vae, x, epochs=2, batch_size=100, precision="bf16", compile="off", progress=False, seed=0)
    handle.remove()
    assert {dtype for grad, dtype in dtypes if grad} == {torch.bfloat16}
    assert {dtype for grad, dtype in dtypes if not grad} == {torch.float32}
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in vae.parameters())
    assert math.isfinite(history[-1]["train_elbo"])
    assert pyrovae.elbo(vae, x[:5].bernoulli()).dtype == torch.float32

    monkeypatch.setattr(precision, "cpu_bf16_instructions", lambda: ())
    with pytest.raises(ValueError, match="needs a CPU with bfloat16 instructions \\(AVX512-BF16"):
        pyrovae.fit(vae, x, epochs=1, precision="bf16", progress=False)
    with pytest.raises(ValueError, match="precision must be one of"):
        pyrovae.fit(vae, x, epochs=1, precision="fp16", progress=False)
