"""The model/guide pair and SVI, against the closed forms of the notes."""

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from pyro.infer import RenyiELBO, Trace_ELBO, TraceMeanField_ELBO

import pyrovae
from pyrovae.estimate import log_weights
from pyrovae.infer.objectives import IWAE_ELBO


def small_vae(**kwargs):
    options = dict(data_shape=(6, 5), latent_dim=3, hidden=(16,))
    options.update(kwargs)
    return pyrovae.VAE(**options)


def test_model_and_guide_agree_on_sites_and_shapes():
    vae = small_vae()
    x = torch.bernoulli(torch.full((7, 6, 5), 0.5))
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    guide_sites = {n for n, s in guide_trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)}
    model_sites = {n for n, s in model_trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)}
    assert guide_sites == {"z"} and model_sites == {"z", "x"}
    assert guide_trace.nodes["z"]["value"].shape == (7, 3)
    assert guide_trace.nodes["z"]["fn"].event_shape == (3,)
    assert model_trace.nodes["x"]["fn"].event_shape == (6, 5)
    assert model_trace.nodes["x"]["fn"].batch_shape == (7,)
    assert guide_trace.nodes["z"]["fn"].has_rsample
    # registered with Pyro as Pyro's VAE example does: the store holds the module's own tensors
    store = pyro.get_param_store()
    assert {name for name, _ in vae.named_parameters()} == {key.split("$$$")[1] for key in store.keys()}
    assert all(store.get_param(f"vae$$${name}") is p for name, p in vae.named_parameters())


def closed_form_kl(loc, scale):
    """Notes eq. 17.24: 0.5 (tr Sigma + mu^T mu - D - log det Sigma)."""
    var = scale**2
    return 0.5 * (var.sum(-1) + (loc**2).sum(-1) - loc.shape[-1] - var.log().sum(-1))


def test_meanfield_kl_is_the_closed_form_and_trace_elbo_agrees_within_monte_carlo_error():
    vae = small_vae()
    with torch.no_grad():
        vae.encoder.log_scale.bias.fill_(-0.7)
        vae.encoder.loc.bias.fill_(0.8)
    x = torch.bernoulli(torch.full((5, 6, 5), 0.3))
    prior_only = poutine.block(vae.model, hide=["x"])  # ELBO of the z site alone is -KL
    loc, scale = vae.encode(x)
    expected = closed_form_kl(loc, scale).sum()
    analytic = TraceMeanField_ELBO().differentiable_loss(prior_only, vae.guide, x)
    assert torch.allclose(analytic, expected, rtol=1e-5)

    k = 20000
    with torch.no_grad():  # (K, N): log p(z) - log q(z)
        lw = pyrovae.log_weight_parts(prior_only, vae.guide, x, num_particles=k).log_weights
    per_particle = -lw.sum(1)
    monte_carlo = per_particle.mean()
    stderr = per_particle.std() / math.sqrt(k)
    assert abs(monte_carlo - expected) < 4 * stderr
    mc_trace = Trace_ELBO(num_particles=k, vectorize_particles=True, max_plate_nesting=1).loss(prior_only, vae.guide, x)
    assert abs(mc_trace - expected.item()) < 4 * stderr


def test_iwae_objective_equals_renyi_alpha_zero():
    vae = small_vae()
    x = torch.bernoulli(torch.full((9, 6, 5), 0.4))
    pyro.set_rng_seed(3)
    ours = IWAE_ELBO(num_particles=7).loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(3)
    renyi = RenyiELBO(alpha=0, num_particles=7, vectorize_particles=True, max_plate_nesting=1).loss(vae.model, vae.guide, x)
    assert ours == pytest.approx(renyi, rel=1e-5)


@pytest.mark.parametrize("loss,particles", [("meanfield", 1), ("trace", 1), ("trace", 3), ("iwae", 4)])
def test_a_few_svi_steps_raise_the_elbo(loss, particles):
    torch.manual_seed(0)
    prototypes = torch.rand(2, 6, 5) > 0.5
    x = (prototypes[torch.randint(0, 2, (256,))] ^ (torch.rand(256, 6, 5) < 0.05)).float()
    vae = small_vae()
    before = pyrovae.estimate.elbo(vae, x, num_particles=20, seed=1).mean()
    pyrovae.fit(vae, x, epochs=15, batch_size=64, lr=1e-2, loss=loss, num_particles=particles, progress=False, device="cpu")
    after = pyrovae.estimate.elbo(vae, x, num_particles=20, seed=1).mean()
    assert after > before + 3.0


def test_conv_networks_handle_28x28_and_28x20_and_particles():
    for shape in [(1, 28, 28), (1, 28, 20)]:
        vae = pyrovae.VAE(shape, latent_dim=4, network="conv", hidden=(32,))
        x = torch.bernoulli(torch.full((3, *shape), 0.5))
        loc, scale = vae.encode(x)
        assert loc.shape == scale.shape == (3, 4)
        assert vae.decode(torch.randn(5, 3, 4)).shape == (5, 3, *shape)
        assert log_weights(vae, x, 6).shape == (6, 3)


def test_linear_networks_when_hidden_is_empty():
    vae = pyrovae.VAE((4,), latent_dim=2, hidden=(), likelihood={"kind": "gaussian", "scale": 0.5})
    linears = [m for m in vae.decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 1 and linears[0].weight.shape == (4, 2)
    z = torch.randn(3, 2)
    assert torch.allclose(vae.decode(z), z @ linears[0].weight.T + linears[0].bias)


def test_helpers_shapes():
    vae = small_vae()
    x = torch.bernoulli(torch.full((4, 6, 5), 0.5))
    assert vae.reconstruct(x).shape == x.shape
    samples = vae.sample(8)
    assert samples.shape == (8, 6, 5) and ((samples >= 0) & (samples <= 1)).all()
    assert set(vae.sample(8, mean=False).unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_latent_dim_below_one_is_refused(bad):
    with pytest.raises(ValueError, match="latent_dim"):
        pyrovae.VAE((4,), latent_dim=bad)


def test_wrong_data_shape_is_refused():
    vae = small_vae()
    with pytest.raises(ValueError, match=r"shape \(N, 6, 5\)"):
        vae.model(torch.zeros(3, 5, 6))


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="loss must be one of.*meanfield.*got 'elbo2'"):
        pyrovae.fit(small_vae(), torch.zeros(10, 6, 5), epochs=1, loss="elbo2", progress=False)


def test_grey_data_with_bernoulli_and_no_binarization_names_the_value():
    x = torch.full((10, 6, 5), 0.25)
    with pytest.raises(ValueError, match="bernoulli needs binary.*0.25 at index"):
        pyrovae.fit(small_vae(), x, epochs=1, binarize="none", progress=False)


def test_values_outside_unit_interval_are_refused_for_dynamic_binarization():
    x = torch.full((10, 6, 5), 0.5)
    x[3, 2, 1] = 1.7
    with pytest.raises(ValueError, match=r"\[0, 1\].*1.7.*\(3, 2, 1\)"):
        pyrovae.fit(small_vae(), x, epochs=1, progress=False)


def test_nan_loss_stops_with_epoch_and_step_and_keeps_the_last_checkpoint(tmp_path):
    x = torch.bernoulli(torch.full((64, 6, 5), 0.5))
    vae = small_vae()

    def poison(row, model):
        with torch.no_grad():
            model.decoder.net[0].weight.fill_(float("nan"))

    with pytest.raises(FloatingPointError, match="epoch 2, step 1.*last good checkpoint"):
        pyrovae.fit(vae, x, epochs=3, batch_size=32, progress=False, run_dir=tmp_path, callback=poison)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.mark.parametrize("loss,particles", [("meanfield", 1), ("trace", 2), ("iwae", 3)])
def test_fit_on_pyros_traces_and_on_the_fast_path_reach_the_same_parameters(loss, particles):
    x = torch.bernoulli(torch.full((96, 6, 5), 0.4))
    states = []
    for fast_path in (True, False):
        torch.manual_seed(0)
        vae = small_vae()
        pyrovae.fit(vae, x, epochs=2, batch_size=32, lr=1e-2, loss=loss, num_particles=particles, progress=False,
                    device="cpu", fast_path=fast_path)
        states.append(vae.state_dict())
    for name in states[0]:
        assert torch.allclose(states[0][name], states[1][name], atol=1e-4, rtol=1e-4), name


def test_gated_networks_are_tomczak_and_wellings():
    """Gated units y = h(x) * sigmoid(g(x)), He-normal weights, log sigma^2 in [-6, 2]."""
    from pyrovae.networks import GatedDense, GatedEncoder

    torch.manual_seed(0)
    unit = GatedDense(5, 3)
    x = torch.randn(4, 5)
    by_hand = (x @ unit.h.weight.T + unit.h.bias) * torch.sigmoid(x @ unit.g.weight.T + unit.g.bias)
    assert torch.allclose(unit(x), by_hand, atol=1e-6)

    vae = pyrovae.VAE((1, 28, 28), latent_dim=40, hidden=(300, 300), network="gated", activation="identity")
    assert isinstance(vae.encoder, GatedEncoder) and len(vae.encoder.body) == 2 and len(vae.decoder.body) == 2
    first = vae.encoder.body[0].h.weight  # 300 x 784 draws of N(0, 2/784)
    assert first.std().item() == pytest.approx(math.sqrt(2 / 784), rel=0.02) and abs(first.mean().item()) < 1e-3
    assert vae.decoder.out.weight.std().item() == pytest.approx(math.sqrt(2 / 300), rel=0.02)
    with torch.no_grad():  # push the log-variance head far out of range both ways
        vae.encoder.log_variance.bias[:20] = 100.0
        vae.encoder.log_variance.bias[20:] = -100.0
        loc, scale = vae.encoder(torch.rand(3, 1, 28, 28))
    assert loc.shape == scale.shape == (3, 40)
    assert torch.allclose(scale[:, :20], torch.tensor(math.exp(1.0)))
    assert torch.allclose(scale[:, 20:], torch.tensor(math.exp(-3.0)))
    assert vae.decoder(torch.randn(2, 5, 40)).shape == (2, 5, 1, 1, 28, 28)
    with pytest.raises(ValueError, match="gated' needs at least one hidden layer"):
        pyrovae.VAE((1, 28, 28), latent_dim=4, hidden=(), network="gated")


def test_gated_convolutional_networks_are_van_den_bergs():
    """Gated convolutions y = conv_h(x) * sigmoid(conv_g(x)); the encoder's spatial sizes 28, 14, 7,
    then 1x1 with 256 channels; sigma^2 = softplus(affine); the decoder's 1x1 -> 7 -> 14 -> 28;
    leading dimensions (particles, examples) pass through; other sizes are cropped to."""
    from pyrovae.networks import GatedConv, GatedConvEncoder

    torch.manual_seed(0)
    unit = GatedConv(2, 3, 5, 1, 2)
    x = torch.randn(4, 2, 9, 9)
    by_hand = torch.nn.functional.conv2d(x, unit.h.weight, unit.h.bias, padding=2) * torch.sigmoid(
        torch.nn.functional.conv2d(x, unit.g.weight, unit.g.bias, padding=2))
    assert torch.allclose(unit(x), by_hand, atol=1e-6)

    vae = pyrovae.VAE((1, 28, 28), latent_dim=64, hidden=(256,), network="gated-conv", activation="identity",
                      guide="planar")
    assert isinstance(vae.encoder, GatedConvEncoder) and vae.encoder.hidden_width == 256
    images = torch.rand(3, 1, 28, 28).bernoulli()
    sizes = []
    h = images
    for layer in vae.encoder.conv:
        h = layer(h)
        sizes.append(tuple(h.shape[1:]))
    assert sizes == [(32, 28, 28), (32, 14, 14), (64, 14, 14), (64, 7, 7), (64, 7, 7), (256, 1, 1)]
    loc, scale = vae.encoder(images)
    assert loc.shape == scale.shape == (3, 64)
    by_hand = torch.nn.functional.softplus(vae.encoder.variance(h.flatten(1))).sqrt()
    assert torch.allclose(scale, by_hand)
    assert vae.decoder(torch.randn(2, 5, 64)).shape == (2, 5, 1, 1, 28, 28)
    assert vae.encoder.features(images.expand(2, 3, 1, 28, 28)).shape == (2, 3, 256)
    assert pyrovae.elbo(vae, images, 2).shape == (3,)
    odd = pyrovae.VAE((3, 6, 5), latent_dim=4, network="gated-conv")
    assert odd.encoder(torch.rand(2, 3, 6, 5))[0].shape == (2, 4)
    assert odd.decoder(torch.randn(7, 4)).shape == (7, 1, 3, 6, 5)
    with pytest.raises(ValueError, match="shape \\(channels, height, width\\)"):
        pyrovae.VAE(784, latent_dim=4, network="gated-conv")


def test_adamax_is_torchs():
    from pyrovae.train.trainer import make_optimizer

    optimizer = make_optimizer([torch.nn.Parameter(torch.zeros(3))], {"optimizer": "adamax", "lr": 5e-4})
    assert isinstance(optimizer, torch.optim.Adamax) and optimizer.defaults["lr"] == 5e-4
