"""The one inference core: every objective and estimate comes from the per-example log weights of
Pyro traces; the VAE's fast path equals them; Pyro's own ELBO classes and both of Pyro's training
interfaces agree with them."""

import itertools
import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, RenyiELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger
from torch import nn

import pyrovae
from pyrovae.infer import IWAE_ELBO, log_weight_parts, make_elbo
from pyrovae.models.vae import fast_vae
from pyrovae.infer.objectives import ELBOLoss, KLSchedule

PRIORS = ["normal", "laplace", "student_t", "mixture", "vamp", "flow"]
LIKELIHOODS = ["bernoulli", "continuous_bernoulli", "gaussian", "laplace", "beta", "logistic256"]


def data_for(likelihood, n=7, d=6):
    torch.manual_seed(11)
    if likelihood == "bernoulli":
        return torch.randint(0, 2, (n, d)).float()
    return torch.randint(1, 255, (n, d)) / 255.0  # inside every likelihood's support


def through_traces(vae):
    """The VAE's model and guide as plain functions: the structural test sends them to traces."""
    return (lambda *a, **k: vae.model(*a, **k)), (lambda *a, **k: vae.guide(*a, **k))


def loss_and_grads(elbo, model, guide, x, parameters, seed):
    for p in parameters:
        p.grad = None
    pyro.set_rng_seed(seed)
    loss = elbo.differentiable_loss(model, guide, x)
    loss.backward()
    return loss.detach(), [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in parameters]


def assert_same(first, second, rtol=1e-4, atol=1e-4):
    (value_a, grads_a), (value_b, grads_b) = first, second
    assert torch.allclose(value_a, value_b, rtol=rtol, atol=atol), (value_a, value_b)
    for a, b in zip(grads_a, grads_b):
        assert torch.allclose(a, b, rtol=rtol, atol=atol), (a - b).abs().max()


COMBINATIONS = [(loss, k, w, estimator)
                for loss, estimator in [("meanfield", "standard"), ("trace", "standard"), ("iwae", "standard"),
                                        ("trace", "stl"), ("iwae", "stl"), ("iwae", "dreg")]
                for k, w in itertools.product((1, 5), (0.0, 0.3, 1.0))]


@pytest.mark.parametrize("prior,likelihood", list(itertools.product(PRIORS, LIKELIHOODS)))
def test_fast_path_equals_the_trace_path_in_value_and_gradient(prior, likelihood):
    """Every prior x likelihood x loss x estimator, 1 and 5 particles, KL weights 0, 0.3 and 1."""
    torch.manual_seed(0)
    vae = pyrovae.VAE((6,), latent_dim=3, hidden=(8,), prior=prior, likelihood=likelihood)
    x = data_for(likelihood)
    assert fast_vae(vae.model, vae.guide) is vae
    parameters = list(vae.parameters())
    model, guide = through_traces(vae)
    assert fast_vae(model, guide) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for loss, k, weight, estimator in COMBINATIONS:
            elbo = make_elbo(loss, k, estimator, kl_weight=weight)
            fast = loss_and_grads(elbo, vae.model, vae.guide, x, parameters, seed=5)
            traced = loss_and_grads(elbo, model, guide, x, parameters, seed=5)
            assert_same(fast, traced)


@pytest.mark.parametrize("prior", ["normal", "laplace", "student_t"])
@pytest.mark.parametrize("k,weight", [(1, 0.0), (5, 0.3), (1, 1.0)])
def test_free_bits_fast_path_equals_the_trace_path(prior, k, weight):
    torch.manual_seed(0)
    vae = pyrovae.VAE((6,), latent_dim=3, hidden=(8,), prior=prior)
    x = data_for("bernoulli")
    parameters = list(vae.parameters())
    for loss in ("meanfield", "trace"):
        elbo = make_elbo(loss, k, kl_weight=weight, free_bits=0.4)
        assert_same(loss_and_grads(elbo, vae.model, vae.guide, x, parameters, 3),
                    loss_and_grads(elbo, *through_traces(vae), x, parameters, 3))


class ScaleLatentSites(Messenger):
    """An independent KL weight for Pyro's own ELBOs: scales every unobserved site."""

    def __init__(self, weight):
        super().__init__()
        self.weight = weight

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.weight * msg["scale"]


@pytest.mark.parametrize("prior", ["normal", "laplace", "mixture"])
@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("k", [1, 4])
def test_the_objectives_are_pyros_own_elbos(prior, weight, k):
    """trace = Trace_ELBO, meanfield = TraceMeanField_ELBO, iwae = RenyiELBO(alpha=0), in value and
    gradient, with the KL weight as a scale on the latent sites."""
    torch.manual_seed(1)
    vae = pyrovae.VAE((6,), latent_dim=2, hidden=(8,), prior=prior)
    x = data_for("bernoulli", n=5)
    parameters = list(vae.parameters())
    scaled_model = ScaleLatentSites(weight)(vae.model)
    scaled_guide = ScaleLatentSites(weight)(vae.guide)
    options = dict(num_particles=k, vectorize_particles=k > 1, max_plate_nesting=1)
    references = {"trace": Trace_ELBO(**options), "meanfield": TraceMeanField_ELBO(**options)}
    for loss, reference in references.items():
        assert_same(loss_and_grads(make_elbo(loss, k, kl_weight=weight), vae.model, vae.guide, x, parameters, 2),
                    loss_and_grads(reference, scaled_model, scaled_guide, x, parameters, 2), rtol=1e-4, atol=1e-4)
    renyi = RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)
    for p in parameters:
        p.grad = None
    pyro.set_rng_seed(2)
    renyi_value = renyi.loss_and_grads(scaled_model, scaled_guide, x)
    renyi_grads = [p.grad.clone() for p in parameters]
    ours = loss_and_grads(IWAE_ELBO(k, kl_weight=weight), vae.model, vae.guide, x, parameters, 2)
    assert_same(ours, (torch.tensor(renyi_value), renyi_grads))


def test_iwae_applies_a_scale_once_like_renyi_on_a_scaled_model():
    """The site scale is in each site's log_prob already; applying it again made IWAE differ from
    Renyi by nats on a poutine.scale'd model."""
    torch.manual_seed(2)
    vae = pyrovae.VAE((6,), latent_dim=2, hidden=(8,))
    x = data_for("bernoulli", n=4)
    scaled = poutine.scale(vae.model, scale=0.25)
    scaled_guide = poutine.scale(vae.guide, scale=0.25)
    parameters = list(vae.parameters())
    for p in parameters:
        p.grad = None
    pyro.set_rng_seed(4)
    renyi = RenyiELBO(alpha=0, num_particles=6, vectorize_particles=True, max_plate_nesting=1)
    renyi_value = renyi.loss_and_grads(scaled, scaled_guide, x)
    renyi_grads = [p.grad.clone() for p in parameters]
    assert_same(loss_and_grads(IWAE_ELBO(6), scaled, scaled_guide, x, parameters, 4),
                (torch.tensor(renyi_value), renyi_grads))


def binary_data(n=256):
    torch.manual_seed(0)
    prototypes = torch.rand(2, 6) > 0.5
    return (prototypes[torch.randint(0, 2, (n,))] ^ (torch.rand(n, 6) < 0.05)).float()


@pytest.mark.parametrize("elbo", [Trace_ELBO(), TraceMeanField_ELBO(), make_elbo("iwae", 3)],
                         ids=["Trace_ELBO", "TraceMeanField_ELBO", "pyrovae-iwae"])
def test_classic_svi_with_pyro_optim_trains_the_vae(elbo):
    x = binary_data()
    pyro.set_rng_seed(0)
    stale = pyrovae.VAE((6,), latent_dim=2, hidden=(16,))
    SVI(stale.model, stale.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO()).step(x)  # leaves entries behind
    vae = pyrovae.VAE((6,), latent_dim=2, hidden=(16,))
    before = {name: p.detach().clone() for name, p in vae.named_parameters()}
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), elbo)
    first = sum(svi.step(x) for _ in range(10)) / 10
    for _ in range(280):
        svi.step(x)
    last = sum(svi.step(x) for _ in range(10)) / 10
    assert last < first - 100  # nats over 256 examples
    assert all(not torch.equal(before[name], p) for name, p in vae.named_parameters())
    store = pyro.get_param_store()
    assert store.get_param("vae$$$decoder.net.0.weight") is vae.decoder.net[0].weight


def test_the_module_interface_with_torch_optim_trains_the_vae():
    x = binary_data()
    vae = pyrovae.VAE((6,), latent_dim=2, hidden=(16,))
    loss_fn = Trace_ELBO()(vae.model, vae.guide)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-2)
    losses = []
    for _ in range(300):
        optimizer.zero_grad()
        loss = loss_fn(x)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 100


class LearnedPriorScale(pyrovae.VAE):
    """A user's model: its own learnable prior scale, an extra observed site, a tempered likelihood."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.log_prior_scale = nn.Parameter(torch.tensor(0.0))

    def model(self, x):
        self.register_with_pyro()
        with pyro.plate("data", x.shape[0]):
            scale = self.log_prior_scale.exp().expand(self.latent_dim)
            z = pyro.sample("z", dist.Normal(torch.zeros_like(scale), scale).to_event(1))
            pyro.sample("norm", dist.Normal(z.norm(dim=-1), 1.0), obs=torch.ones(x.shape[0]))
            with poutine.scale(scale=0.5):
                pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)


@pytest.mark.parametrize("loss,options", [
    ("meanfield", {}), ("trace", {"beta": 0.5}), ("iwae", {"num_particles": 3}),
    ("trace", {"warmup_epochs": 2.0}), ("meanfield", {"free_bits": 0.2}), ("iwae", {"estimator": "dreg", "num_particles": 3}),
])
def test_a_subclass_trains_by_its_own_model_under_every_loss_and_schedule(loss, options):
    x = binary_data(128)
    torch.manual_seed(0)
    vae = LearnedPriorScale((6,), latent_dim=2, hidden=(16,))
    assert fast_vae(vae.model, vae.guide) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = pyrovae.fit(vae, x, x[:64], epochs=3, batch_size=32, lr=2e-2, loss=loss, progress=False, device="cpu",
                              **options)
    assert abs(vae.log_prior_scale.item()) > 0.01  # the model's own parameter was trained
    # the metrics come from the subclass's model: 0.5 log p(x|z) + log p(norm | z) per example
    terms = pyrovae.estimate.elbo_terms(vae, x[:64])
    pyro.set_rng_seed(0)
    parts = log_weight_parts(*through_traces(vae), x[:64], analytic_kl=True)
    assert terms["reconstruction"].shape == parts.observed.shape == (64,)
    assert history[-1]["test_elbo"] == pytest.approx(float(terms["elbo"].mean()), abs=1.5)


def test_a_subclass_is_evaluated_by_its_own_model():
    x = binary_data(16)
    torch.manual_seed(0)
    vae = LearnedPriorScale((6,), latent_dim=2, hidden=(8,))
    pyro.set_rng_seed(3)
    lw = pyrovae.estimate.log_weights(vae, x, 5)
    pyro.set_rng_seed(3)
    guide_trace = poutine.trace(pyro.plate("p", 5, dim=-2)(vae.guide)).get_trace(x)
    model_trace = poutine.trace(poutine.replay(pyro.plate("p", 5, dim=-2)(vae.model), guide_trace)).get_trace(x)
    expected = sum(site["fn"].log_prob(site["value"]) * (site["scale"]) for site in model_trace.nodes.values()
                   if site["type"] == "sample")
    expected = expected - guide_trace.nodes["z"]["fn"].log_prob(guide_trace.nodes["z"]["value"])
    assert torch.allclose(lw, expected, atol=1e-4)
    estimate = pyrovae.log_likelihood(vae, x, num_samples=500, seed=0)
    elbo = pyrovae.elbo(vae, x, num_particles=500, seed=1)
    assert estimate.shape == (16,)
    assert float(estimate.mean()) > float(elbo.mean())  # Jensen: the IS estimate sits above the ELBO


def closed_form_kl_per_dim(loc, scale):
    return 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log())


def test_free_bits_are_per_latent_dimension():
    """sum_j max(lambda, E_batch KL_j) (Kingma et al. 2016): a collapsed coordinate is held at lambda."""
    torch.manual_seed(0)
    vae = pyrovae.VAE((6,), latent_dim=3, hidden=(8,))
    with torch.no_grad():  # coordinate 0 carries information, 1 and 2 are collapsed onto the prior
        vae.encoder.loc.weight[1:].zero_()
        vae.encoder.loc.bias[1:].zero_()
        vae.encoder.log_scale.weight[1:].zero_()
        vae.encoder.log_scale.bias[1:].fill_(-0.01)
        vae.encoder.loc.bias[0] = 2.0
    x = data_for("bernoulli", n=10)
    lam = 0.3
    loc, scale = vae.encode(x)
    per_dim = closed_form_kl_per_dim(loc, scale).mean(0)
    assert per_dim[0] > lam and (per_dim[1:] < lam).all()
    pyro.set_rng_seed(1)
    recon = log_weight_parts(vae.model, vae.guide, x).observed.sum()
    pyro.set_rng_seed(1)
    loss = make_elbo("meanfield", free_bits=lam).differentiable_loss(vae.model, vae.guide, x)
    expected = -recon + len(x) * per_dim.clamp_min(lam).sum()
    assert torch.allclose(loss, expected, rtol=1e-5)
    # the total KL is above 3 lambda, yet the collapsed coordinates get no KL gradient: only the
    # reconstruction's, while the informative one gets both
    assert per_dim.sum() > 3 * lam
    loss.backward()
    with_free_bits = vae.encoder.log_scale.bias.grad.clone()
    vae.zero_grad()
    pyro.set_rng_seed(1)
    (-log_weight_parts(vae.model, vae.guide, x).observed.sum()).backward()
    reconstruction_only = vae.encoder.log_scale.bias.grad
    assert torch.allclose(with_free_bits[1:], reconstruction_only[1:], atol=1e-6)
    assert not torch.allclose(with_free_bits[0], reconstruction_only[0], atol=1e-3)


def test_free_bits_need_a_prior_that_factorizes():
    vae = pyrovae.VAE((6,), latent_dim=2, hidden=(8,), prior="mixture")
    with pytest.raises(ValueError, match="factorize over the coordinates.*mixture|factorize over the coordinates"):
        ELBOLoss(vae, "trace", kl_schedule=KLSchedule(free_bits=0.1))(data_for("bernoulli"))
    with pytest.raises(ValueError, match="free bits.*iwae"):
        make_elbo("iwae", 5, free_bits=0.1)


@pytest.mark.parametrize("loss,estimator", [("meanfield", "dreg"), ("trace", "dreg"), ("meanfield", "stl")])
def test_an_estimator_that_does_not_apply_lists_the_combinations(loss, estimator):
    with pytest.raises(ValueError, match="combinations that work: standard with meanfield/trace/iwae, stl with trace/iwae, dreg with iwae"):
        make_elbo(loss, 5, estimator)
    with pytest.raises(ValueError, match="does not apply"):
        pyrovae.fit(pyrovae.VAE((6,), latent_dim=2), binary_data(8), epochs=1, loss=loss, estimator=estimator,
                    progress=False)


def test_a_guide_that_is_not_reparameterized_is_refused():
    def model(x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(c, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Bernoulli(0.3))

    with pytest.raises(ValueError, match="site 'c' .*not reparameterized"):
        make_elbo("trace", estimator="stl").loss(model, guide, torch.zeros(3))


def test_a_user_handler_takes_the_trace_path():
    vae = pyrovae.VAE((6,), latent_dim=2, hidden=(8,))
    assert fast_vae(vae.model, vae.guide) is vae
    with poutine.scale(scale=2.0):
        assert fast_vae(vae.model, vae.guide) is None
    x = data_for("bernoulli")
    pyro.set_rng_seed(0)
    plain = make_elbo("trace").loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(0)
    with poutine.scale(scale=2.0):
        doubled = make_elbo("trace").loss(vae.model, vae.guide, x)
    assert doubled == pytest.approx(2 * plain, rel=1e-5)


def test_elbo_terms_are_the_closed_form():
    torch.manual_seed(0)
    vae = pyrovae.VAE((6,), latent_dim=3, hidden=(8,))
    x = data_for("bernoulli")
    terms = pyrovae.estimate.elbo_terms(vae, x)
    loc, scale = vae.encode(x)
    assert torch.allclose(terms["kl"], closed_form_kl_per_dim(loc, scale).sum(-1), rtol=1e-5)
    assert torch.allclose(terms["elbo"], terms["reconstruction"] - terms["kl"])
    assert math.isfinite(float(terms["reconstruction"].sum()))
