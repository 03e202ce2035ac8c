"""Importance-sampled log-likelihood and the bound ordering, against the exact linear-Gaussian p(x)."""

import math

import pytest
import torch

import pyrovae
from pyrovae import estimate as evaluation, exact
from pyrovae.likelihoods import Gaussian


def linear_gaussian_vae(data_dim=6, latent_dim=3, sigma=0.5, seed=0):
    torch.manual_seed(seed)
    vae = pyrovae.VAE((data_dim,), latent_dim=latent_dim, hidden=(), likelihood=Gaussian(scale=sigma))
    with torch.no_grad():
        for p in vae.parameters():
            p.normal_(0, 0.5)
    return vae


def data_from(vae, n=40, seed=1):
    torch.manual_seed(seed)
    return vae.sample(n, mean=False)


def set_posterior_guide(vae, inflate=1.0):
    """Encoder = the exact posterior mean, with scales sqrt(diag S) times ``inflate``: the
    diagonal guide closest to the posterior, widened to be a safe proposal."""
    weight, bias, sigma, _ = exact.linear_gaussian_parameters(vae)
    cov = torch.linalg.inv(torch.eye(weight.shape[1], dtype=weight.dtype) + weight.T @ weight / sigma**2)
    gain = cov @ weight.T / sigma**2
    with torch.no_grad():
        vae.encoder.loc.weight.copy_(gain)
        vae.encoder.loc.bias.copy_(-gain @ bias)
        vae.encoder.log_scale.weight.zero_()
        vae.encoder.log_scale.bias.copy_(0.5 * torch.log(torch.diagonal(cov)) + math.log(inflate))
    return cov


def test_importance_sampling_matches_the_exact_log_likelihood():
    vae = linear_gaussian_vae()
    set_posterior_guide(vae, inflate=1.5)  # random decoder weights; the guide a reasonable proposal
    x = data_from(vae)
    truth = exact.linear_gaussian_log_likelihood(vae, x)
    estimate, stderr = evaluation.log_likelihood(vae, x, num_samples=5000, return_stderr=True, seed=0)
    assert (estimate.double() - truth).abs().max() < 0.05
    assert (estimate.double() - truth).abs().mean() < 3 * stderr.double().mean() + 1e-3
    elbo = evaluation.elbo(vae, x, num_particles=2000, seed=1)
    assert (elbo.double() <= truth + 1e-3).all()  # Jensen: ELBO <= log p(x), example by example


def test_after_training_steps_the_estimate_still_matches_and_bounds_order():
    vae = linear_gaussian_vae(seed=2)
    x = data_from(vae, n=200)
    with torch.no_grad():
        for p in vae.encoder.parameters():
            p.normal_(0, 0.3)  # a poor guide to start from
    pyrovae.fit(vae, x, epochs=40, batch_size=50, lr=1e-2, progress=False, device="cpu")
    x = x[:30]
    truth = exact.linear_gaussian_log_likelihood(vae, x)
    estimate, stderr = evaluation.log_likelihood(vae, x, num_samples=5000, return_stderr=True, seed=0)
    error = (estimate.double() - truth).abs()
    assert error.mean() < 0.05  # nats per example
    assert (error < 4 * stderr.double() + 0.01).all()  # each example within its own Monte Carlo error
    check = evaluation.check_bounds(vae, x, ks=(1, 10, 100, 1000), exact=float(truth.mean()), seed=0, strict=True)
    assert check.ok
    assert check.values[0] < check.values[-1] <= float(truth.mean()) + 4 * check.stderrs[-1]
    assert check.jensen_gap > 0


def set_exact_posterior(vae):
    """For a decoder with orthogonal columns the exact posterior is diagonal, so the Normal
    guide can represent it: loc = S W^T (x - b) / sigma^2, scale = sqrt(diag S)."""
    weight = exact.linear_gaussian_parameters(vae)[0]
    q, _ = torch.linalg.qr(weight)
    with torch.no_grad():
        vae.decoder.net[0].weight.copy_(q * torch.tensor([1.5, 0.8, 0.3], dtype=q.dtype))
    cov = set_posterior_guide(vae)
    assert torch.allclose(cov, torch.diag(torch.diagonal(cov)), atol=1e-6)


def test_with_the_exact_posterior_as_guide_every_weight_is_p_x():
    vae = linear_gaussian_vae()
    set_exact_posterior(vae)
    x = data_from(vae, n=25)
    truth = exact.linear_gaussian_log_likelihood(vae, x)
    lw = evaluation.log_weights(vae, x, 50)
    assert torch.allclose(lw.double(), truth.expand(50, -1), atol=2e-4)
    one = evaluation.log_likelihood(vae, x, num_samples=1, seed=0)
    assert torch.allclose(one.double(), truth, atol=2e-4)
    loc, cov = exact.linear_gaussian_posterior(vae, x)
    assert torch.allclose(vae.encode(x)[0].double(), loc, atol=1e-5)


def test_chunking_gives_the_same_answer_and_a_seed_repeats_exactly():
    vae = linear_gaussian_vae()
    set_posterior_guide(vae, inflate=1.5)
    x = data_from(vae, n=30)
    whole, se = evaluation.log_likelihood(vae, x, num_samples=2000, return_stderr=True, seed=5)
    again = evaluation.log_likelihood(vae, x, num_samples=2000, seed=5)
    assert torch.equal(whole, again)
    chunked = evaluation.log_likelihood(vae, x, num_samples=2000, batch_size=7, chunk_elements=7 * 6 * 37, seed=9)
    assert ((chunked - whole).abs() < 4 * math.sqrt(2) * se + 1e-4).all()
    set_exact_posterior(vae)  # constant weights: every chunking gives the same number
    a = evaluation.log_likelihood(vae, x, num_samples=300, seed=1)
    b = evaluation.log_likelihood(vae, x, num_samples=300, batch_size=4, chunk_elements=4 * 6 * 11, seed=2)
    assert torch.allclose(a, b, atol=1e-5)


def test_check_bounds_reports_a_violation_loudly():
    vae = linear_gaussian_vae()
    set_posterior_guide(vae, inflate=1.2)
    x = data_from(vae, n=20)
    truth = float(exact.linear_gaussian_log_likelihood(vae, x).mean())
    with pytest.warns(evaluation.BoundViolationWarning, match="exceeds the exact"):
        check = evaluation.check_bounds(vae, x, ks=(1, 10), exact=truth - 5.0, seed=0)
    assert not check.ok and check.as_dict()["bound_check"] == "violated"
    with pytest.raises(AssertionError, match="violated"):
        evaluation.check_bounds(vae, x, ks=(1, 10), exact=truth - 5.0, seed=0, strict=True)


def test_iwae_bound_with_standard_error():
    vae = linear_gaussian_vae()
    x = data_from(vae, n=10)
    mean, se = evaluation.iwae_bound(vae, x, 20, num_replicates=8, return_stderr=True, seed=0)
    assert mean.shape == se.shape == (10,) and (se > 0).all()
    with pytest.raises(ValueError, match="num_replicates >= 2"):
        evaluation.iwae_bound(vae, x, 20, num_replicates=1, return_stderr=True)


@pytest.mark.parametrize("k", [0, -3, 2.5])
def test_bad_sample_counts_are_refused(k):
    vae = linear_gaussian_vae()
    with pytest.raises(ValueError, match="num_samples must be an integer >= 1"):
        evaluation.log_likelihood(vae, torch.zeros(3, 6), num_samples=k)


def test_wrong_shape_and_missing_checkpoint_are_refused(tmp_path):
    vae = linear_gaussian_vae()
    with pytest.raises(ValueError, match=r"shape \(N, 6\)"):
        evaluation.log_likelihood(vae, torch.zeros(3, 7), num_samples=10)
    with pytest.raises(ValueError, match="no closed form"):
        exact.linear_gaussian_log_likelihood(pyrovae.VAE((6,), 2), torch.zeros(2, 6))
    from pyrovae.cli import main

    (tmp_path / "run").mkdir()
    assert main(["evaluate", str(tmp_path / "run"), "--no-progress"]) == 2


def test_cli_evaluate_writes_evaluation_json(tmp_path, binary_npy):
    import json

    from pyrovae.cli import main

    out = tmp_path / "run"
    assert main(["train", "--dataset", str(binary_npy), "--epochs", "3", "--hidden", "16", "--latent-dim", "2",
                 "--out", str(out), "--no-progress", "--no-plots", "--device", "cpu"]) == 0
    assert main(["evaluate", str(out), "--num-samples", "200", "--limit", "50", "--no-progress"]) == 0
    result = json.loads((out / "evaluation.json").read_text())
    for key in ("elbo", "log_likelihood", "log_likelihood_stderr", "num_samples", "num_examples", "jensen_gap",
                "bound_check", "bits_per_dim"):
        assert key in result
    assert result["bound_check"] == "ok" and result["num_examples"] == 50
    assert result["log_likelihood"] >= result["elbo"] - 1e-3
    assert (out / "jensen_gap.png").stat().st_size > 0
