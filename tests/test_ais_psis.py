"""Annealed importance sampling, BDMC and the Pareto k diagnostic against the linear-Gaussian
VAE's closed forms: exact log p(x), and a guide set to the exact posterior's mean with its
standard deviations scaled by r, whose weights have a known tail (Pareto shape k = 1 - r^2)."""

import json
import math
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import pyrovae
from pyrovae import exact
from pyrovae.cli import main
from pyrovae.estimate.ais import ais_log_likelihood, annealing_schedule, bdmc
from pyrovae.models import M2

LATENT, DATA, SIGMA = 3, 7, 0.5


@pytest.fixture(scope="module")
def linear_gaussian():
    """A linear-Gaussian VAE with orthogonal decoder columns (so the exact posterior is
    mean-field), data drawn from it with their latent draws, and exact log p(x)."""
    torch.manual_seed(0)
    vae = pyrovae.VAE(DATA, latent_dim=LATENT, hidden=(), likelihood={"kind": "gaussian", "scale": SIGMA})
    q, _ = torch.linalg.qr(torch.randn(DATA, LATENT))
    weight = q * torch.tensor([3.0, 2.0, 1.0])
    with torch.no_grad():
        vae.decoder.net[0].weight.copy_(weight)
        vae.decoder.net[0].bias.zero_()
    posterior_cov = torch.linalg.inv(torch.eye(LATENT) + weight.T @ weight / SIGMA**2)
    z = torch.randn(64, LATENT)
    with torch.no_grad():
        x = vae.likelihood(vae.decoder(z)).sample()
    return vae, weight, posterior_cov, z, x, exact.linear_gaussian_log_likelihood(vae, x)


def set_guide(vae, weight, posterior_cov, ratio):
    """q(z|x) = Normal(the exact posterior mean, ratio x the exact posterior sd)."""
    with torch.no_grad():
        vae.encoder.loc.weight.copy_(posterior_cov @ weight.T / SIGMA**2)
        vae.encoder.loc.bias.zero_()
        vae.encoder.log_scale.weight.zero_()
        vae.encoder.log_scale.bias.copy_(0.5 * posterior_cov.diagonal().log() + math.log(ratio))


@pytest.mark.parametrize("ratio", [0.6, 0.8])
def test_pareto_k_finds_the_tail_index_of_an_under_dispersed_guide(linear_gaussian, ratio):
    """With q's sd r times the posterior's, w = p(z|x) / q(z|x) has P(w > t) ~ t^(-1 / (1 - r^2)):
    the Pareto shape is 1 - r^2 (0.64: slow convergence; 0.36: fine)."""
    vae, weight, cov, _, x, truth = linear_gaussian
    set_guide(vae, weight, cov, ratio)
    estimate, stderr, diagnostics = pyrovae.log_likelihood(vae, x, 20000, return_stderr=True, return_diagnostics=True,
                                                            seed=0)
    assert diagnostics.pareto_k.shape == (len(x),) and diagnostics.ess.shape == (len(x),)
    assert abs(float(diagnostics.pareto_k.median()) - (1 - ratio**2)) < 0.07
    assert bool((diagnostics.ess <= 20000 + 1e-6).all()) and bool((diagnostics.ess >= 1).all())
    summary = diagnostics.summary()
    assert summary["pareto_k_above_0.7"] == int((diagnostics.pareto_k > 0.7).sum())
    assert summary["num_samples"] == 20000


def test_pareto_k_is_low_and_ess_near_k_where_the_guide_covers_the_posterior(linear_gaussian):
    vae, weight, cov, _, x, truth = linear_gaussian
    set_guide(vae, weight, cov, 1.2)  # wider than the posterior: bounded weights
    estimate, diagnostics = pyrovae.log_likelihood(vae, x, 20000, return_diagnostics=True, seed=0)
    assert float(diagnostics.pareto_k.max()) < 0.5
    assert float(diagnostics.ess.median()) > 0.8 * 20000
    assert float((estimate - truth).abs().max()) < 0.02


@pytest.mark.parametrize("path", ["fast", "traces", "chunks"])
def test_ais_is_within_its_monte_carlo_error_of_the_exact_log_likelihood(linear_gaussian, path):
    """The VAE's fast target, Pyro's traces (the same program behind plain callables), and the
    fast target over chunks of 5 examples."""
    vae, weight, cov, _, x, truth = linear_gaussian
    set_guide(vae, weight, cov, 0.5)
    x, truth = x[:32], truth[:32]
    model, guide = (vae.model, vae.guide) if path != "traces" else (lambda x: vae.model(x), lambda x: vae.guide(x))
    result = ais_log_likelihood(model, guide, x, num_chains=16, num_steps=200, num_leapfrog=5, seed=0,
                                batch_size=5 if path == "chunks" else None)
    error = result.log_likelihood - truth
    assert result.chain_log_weights.shape == (16, 32) and result.chain_sd.shape == (32,)
    assert abs(float(error.mean())) < 3 * float(error.std()) / math.sqrt(len(x)) + 0.01
    assert float(error.abs().median()) < 0.1
    assert 0.5 < float(result.acceptance.mean()) <= 1.0


def test_bdmc_sandwiches_the_exact_log_likelihood_on_simulated_data(linear_gaussian):
    vae, weight, cov, z, x, truth = linear_gaussian
    set_guide(vae, weight, cov, 0.5)
    result = bdmc(vae.model, vae.guide, x[:32], {"z": z[:32]}, num_chains=8, num_steps=100, num_leapfrog=5, seed=0)
    lower, upper, truth = result.lower.double(), result.upper.double(), truth[:32]
    se = lambda v: float(v.std()) / math.sqrt(len(v))  # noqa: E731
    assert float((lower - truth).mean()) <= 3 * se(lower - truth)
    assert float((upper - truth).mean()) >= -3 * se(upper - truth)
    assert torch.allclose(result.gap, result.upper - result.lower)


def test_annealing_schedules_run_from_zero_to_one():
    for name in ("linear", "sigmoid"):
        betas = annealing_schedule(10, name)
        assert len(betas) == 11 and float(betas[0]) == 0 and float(betas[-1]) == 1 and bool((betas.diff() > 0).all())
    sigmoid = annealing_schedule(100, "sigmoid")
    assert float(sigmoid[1]) < 0.01 and float(sigmoid[50]) == pytest.approx(0.5)  # dense near both ends
    with pytest.raises(ValueError, match="unknown schedule 'cubic'"):
        annealing_schedule(10, "cubic")
    with pytest.raises(ValueError, match="increase strictly from 0 to 1"):
        annealing_schedule(3, torch.tensor([0.0, 0.7, 0.5, 1.0]))


@pytest.mark.parametrize("kwargs, message", [
    ({"num_chains": 0}, "num_chains"), ({"num_steps": -1}, "num_steps"), ({"proposal": "posterior"}, "proposal"),
    ({"target_accept": 1.5}, "target_accept"), ({"step_size": 0}, "step_size")])
def test_bad_ais_arguments_are_clear_errors(linear_gaussian, kwargs, message):
    vae, _, _, _, x, _ = linear_gaussian
    with pytest.raises(ValueError, match=message):
        ais_log_likelihood(vae.model, vae.guide, x[:2], **kwargs)


def test_ais_refuses_a_discrete_latent_and_names_what_works():
    m2 = M2((10,), latent_dim=2, hidden=(4,), num_classes=3)
    x = torch.bernoulli(torch.full((4, 10), 0.5))
    with pytest.raises(ValueError, match="needs continuous ones; site 'y'"):
        ais_log_likelihood(m2.model, m2.guide, x, num_chains=2, num_steps=2)
    # given y, the latent is continuous: what pyrovae evaluate --method ais does for each class
    result = ais_log_likelihood(m2.model, m2.guide, x, torch.zeros(4, dtype=torch.long), num_chains=2, num_steps=2)
    assert result.log_likelihood.shape == (4,)


@pytest.mark.parametrize("family", ["vae", "hvae", "cvae", "m2"])
def test_evaluate_runs_ais_and_bdmc_on_each_family_where_they_apply(tmp_path, labelled_npz, family, capsys):
    """The target's density comes from each model's own Pyro trace: no family needs code of its
    own, but m2 (a discrete y: AIS given each class, summed; BDMC refused with the reason)."""

    extra = {"m2": ["--labels", "6", "--num-classes", "3"], "cvae": ["--condition", "label", "--num-classes", "3"],
             "hvae": ["--middle-dim", "3", "--middle-hidden", "4"]}.get(family, [])
    out = tmp_path / "run"
    assert main(["train", "--model", family, "--dataset", str(labelled_npz), "--epochs", "1", "--hidden", "8", "--out", str(out),
                 "--no-progress", "--no-plots", "--device", "cpu", *extra]) == 0
    small = ["--num-samples", "20", "--num-chains", "2", "--num-steps", "5", "--num-leapfrog", "2", "--limit", "8",
             "--device", "cpu", "--no-progress"]
    assert main(["evaluate", str(out), "--method", "ais", *small]) == 0
    result = json.loads((out / "evaluation.json").read_text())
    assert math.isfinite(result["ais"]["log_likelihood"]) and result["ais"]["num_steps"] == 5
    assert 0 <= result["importance_diagnostics"]["pareto_k_above_0.7_share"] <= 1
    code = main(["evaluate", str(out), "--method", "bdmc", *small])
    if family == "m2":
        assert code == 2 and "m2's y is discrete" in capsys.readouterr().err
    else:
        assert code == 0
        bdmc_row = json.loads((out / "evaluation.json").read_text())["bdmc"]
        assert bdmc_row["examples"] == 8 and math.isfinite(bdmc_row["gap"])
    capsys.readouterr()
    assert main(["evaluate", str(out), "--method", "ais", "--num-chains", "0", "--device", "cpu"]) == 2
    assert "--num-chains" in capsys.readouterr().err


def _ais_vae():
    torch.manual_seed(1)
    vae = pyrovae.VAE((1, 6, 6), latent_dim=3, hidden=(20,)).eval()
    return vae, torch.rand(5, 1, 6, 6).bernoulli()


@pytest.mark.parametrize("proposal", ["guide", "prior"])
def test_the_vaes_fast_ais_target_is_what_the_traces_define(proposal):
    """The same initial draws (the chains' plate draws them alike), and at any z the same
    log pi_0, log p(x, z) and gradients as Pyro's traces of vae.model and vae.guide give."""
    from pyrovae.estimate.ais import _make_target, _TraceTarget
    from pyrovae.models.vae_fast_path import VAEAISTarget

    vae, x = _ais_vae()
    fast = _make_target(vae.model, vae.guide, (x,), {}, 4, proposal, 1, compiled=False)
    traces = _TraceTarget(vae.model, vae.guide, (x,), {}, 4, proposal)
    assert isinstance(fast, VAEAISTarget)
    torch.manual_seed(7)
    z_fast = fast.initial()
    torch.manual_seed(7)
    z_traces = traces.initial()
    assert torch.equal(z_fast["z"], z_traces["z"])
    z = {"z": torch.randn(4, 5, 3) * 2}
    a, b = fast.point(z), traces.point(z)
    for mine, theirs in ((a.base, b.base), (a.joint, b.joint), (a.grad_base["z"], b.grad_base["z"]),
                         (a.grad_joint["z"], b.grad_joint["z"])):
        assert mine.shape == theirs.shape
        assert torch.allclose(mine, theirs, atol=1e-5, rtol=1e-5)
    with pytest.MonkeyPatch.context() as patch:  # a subclass's own model is not the VAE's: traces
        patch.setattr(type(vae), "fast_weight_parts", lambda self, model, guide: None)
        assert isinstance(_make_target(vae.model, vae.guide, (x,), {}, 4, proposal, 1, False), _TraceTarget)


def test_a_compiled_ais_run_is_the_eager_run():
    vae, x = _ais_vae()
    options = dict(num_chains=4, num_steps=20, num_leapfrog=3, seed=2)
    eager = ais_log_likelihood(vae, x, compile=False, **options)
    traced = ais_log_likelihood(lambda x: vae.model(x), lambda x: vae.guide(x), x, **options)
    compiled = ais_log_likelihood(vae, x, compile=True, **options)
    assert torch.allclose(eager.chain_log_weights, traced.chain_log_weights, atol=1e-4)
    assert torch.allclose(eager.chain_log_weights, compiled.chain_log_weights, atol=1e-3)
    assert torch.equal(eager.step_size, compiled.step_size)
    with pytest.raises(ValueError, match="compile must be True, False or 'auto'"):
        ais_log_likelihood(vae, x, compile="yes", **options)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        ais_log_likelihood(vae, x, batch_size=0, **options)


def test_a_one_site_guide_is_traced_once_and_read_at_every_point():
    """The proposal's distribution, kept from its one trace, gives the density a new trace of the
    guide conditioned on z gives (a user's Pyro program)."""
    from pyrovae.estimate.ais import _TraceTarget

    vae, x = _ais_vae()

    def model(x):
        vae.model(x)

    def guide(x):
        vae.guide(x)

    target = _TraceTarget(model, guide, (x,), {}, 4, "guide")
    target.initial()
    assert target._proposal_trace is not None
    z = {"z": torch.randn(4, 5, 3)}
    cached = target.point(z)
    target._proposal_trace = None
    fresh = target.point(z)
    assert torch.allclose(cached.base, fresh.base) and torch.allclose(cached.grad_base["z"], fresh.grad_base["z"])


def test_an_ais_evaluation_killed_mid_way_continues_with_the_same_numbers(tmp_path):
    """`pyrovae evaluate --method ais` killed with SIGKILL after its first block, then run again:
    the finished block is read back, the rest computed, and every number equals an uninterrupted
    evaluation's."""
    rng = np.random.default_rng(0)
    prototypes = rng.random((3, 8, 8)) > 0.5
    images = (prototypes[rng.integers(0, 3, 500)] ^ (rng.random((500, 8, 8)) < 0.1)).astype(np.float32)
    data = tmp_path / "shapes.npz"
    np.savez(data, train=images[:200], test=images[200:])
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(data), "--latent-dim", "2", "--hidden", "16", "--epochs", "1",
                 "--out", str(run), "--no-progress", "--no-plots"]) == 0
    again = tmp_path / "uninterrupted"
    shutil.copytree(run, again)
    command = ["evaluate", "--method", "ais", "--limit", "300", "--num-chains", "4", "--num-steps", "300",
               "--num-leapfrog", "2", "--num-samples", "20", "--no-progress"]
    worker = subprocess.Popen([sys.executable, "-m", "pyrovae", command[0], str(run), *command[1:]],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.time()
    while not list(run.glob(".ais-pieces-*/block-00000000-00000100.pt")):
        assert worker.poll() is None, worker.communicate()[1][-2000:]
        assert time.time() - started < 240
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert not (run / "evaluation.json").exists()
    assert main([command[0], str(run), *command[1:]]) == 0
    assert main([command[0], str(again), *command[1:]]) == 0
    resumed = json.loads((run / "evaluation.json").read_text())["ais"]
    whole = json.loads((again / "evaluation.json").read_text())["ais"]
    assert resumed["blocks_read_back"] >= 1 and whole["blocks_read_back"] == 0 and resumed["blocks"] == 3
    for key in ("log_likelihood", "stderr", "chain_sd_median", "acceptance"):
        assert resumed[key] == whole[key], key
    assert not list(run.glob(".ais-pieces-*"))  # gone once evaluation.json holds the numbers
