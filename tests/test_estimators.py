"""Gradient estimators: each is unbiased for its objective (its mean over many draws equals the
standard estimator's within Monte Carlo error), STL on IWAE is biased as Tucker et al. (2018)
show, and the signal-to-noise ratios move with K as Rainforth et al. (2018) show."""

import pytest
import torch

import pyrovae
from pyrovae.infer import make_elbo
from pyrovae.infer.diagnostics import gradient_moments


@pytest.fixture(scope="module")
def trained():
    """A small VAE trained a little on two noisy prototypes, and one example."""
    torch.manual_seed(0)
    prototypes = torch.rand(2, 8) > 0.5
    x = (prototypes[torch.randint(0, 2, (256,))] ^ (torch.rand(256, 8) < 0.1)).float()
    vae = pyrovae.VAE((8,), latent_dim=2, hidden=(16,))
    pyrovae.fit(vae, x, epochs=20, batch_size=32, lr=1e-2, progress=False, device="cpu")
    groups = {"encoder": list(vae.encoder.parameters()), "decoder": list(vae.decoder.parameters())}
    return vae, x[:1], groups


def z_scores(first, second, group):
    """(mean_a - mean_b) / combined Monte Carlo error, for the coordinates that vary."""
    error = (first.stderr(group) ** 2 + second.stderr(group) ** 2).sqrt()
    varies = error > 0
    return (first.mean[group] - second.mean[group])[varies] / error[varies]


def moments(trained, loss, k, estimator, seed):
    vae, x, groups = trained
    return gradient_moments(make_elbo(loss, k, estimator), vae.model, vae.guide, x, groups, num_draws=20000,
                            draws_per_pass=1000, seed=seed)


@pytest.mark.parametrize("loss,k,estimator", [("trace", 1, "stl"), ("trace", 4, "stl"), ("iwae", 5, "dreg"),
                                              ("iwae", 20, "dreg")])
def test_estimator_is_unbiased_for_its_objective(trained, loss, k, estimator):
    reference = moments(trained, loss, k, "standard", seed=1)
    candidate = moments(trained, loss, k, estimator, seed=2)
    for group in ("encoder", "decoder"):
        z = z_scores(candidate, reference, group)
        assert len(z) > 10
        assert z.abs().max() < 4.5, (group, float(z.abs().max()))


def test_stl_on_iwae_is_biased_as_tucker_et_al_show(trained):
    reference = moments(trained, "iwae", 5, "standard", seed=1)
    stl = moments(trained, "iwae", 5, "stl", seed=2)
    assert z_scores(stl, reference, "encoder").abs().max() > 8  # the encoder's gradient is off
    assert z_scores(stl, reference, "decoder").abs().max() < 4.5  # the decoder's is IWAE's own


def test_dreg_encoder_snr_grows_with_k_while_the_standard_iwae_estimators_falls(trained):
    """Rainforth et al. (2018): the IWAE guide gradient's SNR falls like 1/sqrt(K); DReG's rises."""
    snr = {(estimator, k): float(moments(trained, "iwae", k, estimator, seed=k).snr("encoder").median())
           for estimator in ("standard", "dreg") for k in (1, 50)}
    assert snr["dreg", 50] > 2 * snr["dreg", 1]
    assert snr["standard", 50] < snr["standard", 1]
    assert snr["dreg", 50] > 10 * snr["standard", 50]
    decoder = [float(moments(trained, "iwae", k, "standard", seed=k).snr("decoder").median()) for k in (1, 50)]
    assert decoder[1] > 2 * decoder[0]  # the model's gradient gains with K


def test_gradient_moments_needs_one_example(trained):
    vae, x, groups = trained
    with pytest.raises(ValueError, match="one example"):
        gradient_moments(make_elbo("iwae", 5), vae.model, vae.guide, x.expand(2, 8), groups)
