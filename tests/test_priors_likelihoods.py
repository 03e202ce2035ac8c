"""Every prior and likelihood against an independent formula (scipy), the declarative seam,
and the KL weighting."""

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import numpy
import pytest
import scipy.integrate
import scipy.special
import scipy.stats
import torch

import pyrovae
from pyrovae import estimate, likelihoods, priors
from pyrovae.cli import build_parser, config_from_args
from pyrovae.config import load_toml, validate
from pyrovae.infer.objectives import ELBOLoss, KLSchedule
from pyrovae.runs import build_model

PRIOR_NAMES = ["normal", "laplace", "student_t", "mixture", "vamp", "flow"]


def prior_vae(name, latent_dim=3, **kwargs):
    spec = {"kind": name, **kwargs}
    return pyrovae.VAE((6,), latent_dim=latent_dim, hidden=(16,), prior=spec, likelihood="gaussian")


def test_every_name_is_registered():
    assert priors.PRIORS.names() == sorted(PRIOR_NAMES)
    assert likelihoods.LIKELIHOODS.names() == sorted(
        ["bernoulli", "continuous_bernoulli", "gaussian", "laplace", "beta", "logistic256"])


@pytest.mark.parametrize("name", PRIOR_NAMES)
def test_prior_shapes_and_finite_log_prob(name):
    vae = prior_vae(name)
    p = vae.prior()
    z = p.sample((5,))
    assert z.shape == (5, 3) and p.event_shape == (3,) and p.batch_shape == ()
    assert torch.isfinite(p.log_prob(z)).all() and p.log_prob(z).shape == (5,)
    assert vae.sample(4).shape == (4, 6)


def scipy_mixture_log_prob(z, logits, locs, scales):
    """log sum_k softmax(logits)_k prod_d N(z_d; locs_kd, scales_kd) in float64, by scipy."""
    zn, weights = z.detach().double().numpy(), scipy.special.log_softmax(logits.detach().double().numpy())
    locs, scales = locs.detach().double().numpy(), scales.detach().double().numpy()
    per = np.stack([scipy.stats.norm.logpdf(zn, locs[k], scales[k]).sum(-1) for k in range(len(weights))], -1)
    return scipy.special.logsumexp(per + weights, -1)


def independent_prior_log_prob(vae, name, z):
    zn = z.detach().double().numpy()
    if name == "normal":
        return scipy.stats.norm.logpdf(zn).sum(-1)
    if name == "laplace":
        return scipy.stats.laplace.logpdf(zn).sum(-1)
    if name == "student_t":
        return scipy.stats.t.logpdf(zn, df=3.0).sum(-1)
    if name == "mixture":
        pr = vae.prior
        return scipy_mixture_log_prob(z, pr.logits, pr.locs, pr.log_scales.exp())
    if name == "vamp":
        loc, scale = vae.encoder(vae.prior.pseudo_inputs)
        return scipy_mixture_log_prob(z, torch.zeros(len(loc)), loc, scale)
    if name == "flow":
        # change of variables, the Jacobian by autograd: log p(z) = log N(f^-1(z)) + log|det df^-1/dz|
        transforms = vae.prior._transforms
        out = []
        for zi in z:
            def inverse(v):
                for t in reversed(transforms):
                    v = t.inv(v)
                return v

            e = inverse(zi)
            jac = torch.autograd.functional.jacobian(inverse, zi)
            out.append(scipy.stats.norm.logpdf(e.detach().double().numpy()).sum() + torch.linalg.slogdet(jac.double())[1].item())
        return np.array(out)
    raise AssertionError(name)


@pytest.mark.parametrize("name", PRIOR_NAMES)
def test_prior_log_prob_agrees_with_an_independent_computation(name):
    torch.manual_seed(1)
    vae = prior_vae(name)
    if name in ("mixture", "flow"):
        with torch.no_grad():
            for p in vae.prior.parameters():
                p.add_(0.3 * torch.randn_like(p))
    z = torch.randn(4, 3) * 1.5
    ours = vae.prior().log_prob(z).detach().double().numpy()
    np.testing.assert_allclose(ours, independent_prior_log_prob(vae, name, z), rtol=1e-4, atol=1e-4)


def vamp_like_mixture(num_components=500, num_dims=40, seed=0):
    """The VampPrior's hard regime: many components, scales down to the gated encoder's floor
    exp(-3) ~ 0.05, points a few units out, where the expanded quadratic's terms cancel most."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_components, generator=g)
    locs = 2.0 * torch.randn(num_components, num_dims, generator=g)
    scales = 0.05 + 0.5 * torch.rand(num_components, num_dims, generator=g)
    return logits, locs, scales


def test_diagonal_normal_mixture_log_prob_is_the_mixture_density_in_float64():
    """Against scipy in float64: the float32 inputs' exact density, to float32 output rounding."""
    logits, locs, scales = vamp_like_mixture()
    g = torch.Generator().manual_seed(1)
    # points near components (the density's bulk) and far out (the tails)
    z = torch.cat([locs[:64] + scales[:64] * torch.randn(64, 40, generator=g), 4.0 * torch.randn(16, 40, generator=g)])
    ours = pyrovae.distributions.DiagonalNormalMixture(logits, locs, scales).log_prob(z)
    expected = scipy_mixture_log_prob(z, logits, locs, scales)
    assert ours.dtype == torch.float32 and ours.shape == (80,)
    np.testing.assert_allclose(ours.double().numpy(), expected, rtol=2e-7, atol=1e-3)
    # the (N, K, D) form in float32, as torch computes it, is the looser of the two
    reference = dist.MixtureSameFamily(dist.Categorical(logits=logits), dist.Normal(locs, scales).to_event(1))
    assert (ours.double() - torch.from_numpy(expected)).abs().max() <= (
        reference.log_prob(z).double() - torch.from_numpy(expected)).abs().max() + 1e-3


def test_diagonal_normal_mixture_gradients_are_torch_mixture_gradients():
    logits, locs, scales = (t.clone().requires_grad_() for t in vamp_like_mixture(50, 8))
    z = (1.5 * torch.randn(6, 8)).requires_grad_()
    ours = pyrovae.distributions.DiagonalNormalMixture(logits, locs, scales).log_prob(z)
    reference = dist.MixtureSameFamily(dist.Categorical(logits=logits), dist.Normal(locs, scales).to_event(1)).log_prob(z)
    weights = torch.randn(6)  # a generic cotangent, not just the sum
    for mine, theirs in zip(torch.autograd.grad((ours * weights).sum(), [z, logits, locs, scales]),
                            torch.autograd.grad((reference * weights).sum(), [z, logits, locs, scales])):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)


def test_diagonal_normal_mixture_in_a_plate_is_expanded_without_copies():
    """pyro.plate broadcasts the prior to the batch: the expanded distribution keeps the (K, D)
    parameters and gives every batch element the unexpanded density."""
    logits, locs, scales = vamp_like_mixture(20, 3)
    prior = pyrovae.distributions.DiagonalNormalMixture(logits, locs, scales)
    reference = dist.MixtureSameFamily(dist.Categorical(logits=logits), dist.Normal(locs, scales).to_event(1))
    z = torch.randn(5, 4, 3)

    def model():
        with pyro.plate("particles", 5, dim=-2), pyro.plate("batch", 4, dim=-1):
            pyro.sample("z", prior, obs=z)

    trace = pyro.poutine.trace(model).get_trace()
    trace.compute_log_prob()
    site = trace.nodes["z"]
    assert isinstance(site["fn"], pyrovae.distributions.DiagonalNormalMixture) and site["fn"].batch_shape == (5, 4)
    assert site["fn"].locs is locs
    torch.testing.assert_close(site["log_prob"], reference.log_prob(z))
    # a point without the batch dimensions broadcasts against them
    assert prior.expand((2, 4)).log_prob(torch.randn(3)).shape == (2, 4)
    samples = prior.expand((4,)).sample((100,))
    assert samples.shape == (100, 4, 3)


def test_diagonal_normal_mixture_rejects_batched_or_mismatched_parameters():
    logits, locs, scales = vamp_like_mixture(5, 2)
    with pytest.raises(ValueError, match=r"logits of shape \(K,\).*locs \(3, 5, 2\)"):
        pyrovae.distributions.DiagonalNormalMixture(logits, locs.expand(3, 5, 2), scales)
    with pytest.raises(ValueError, match=r"scales \(5, 3\)"):
        pyrovae.distributions.DiagonalNormalMixture(logits, locs, torch.ones(5, 3))
    with pytest.raises(ValueError, match="parameter scale .*GreaterThan"):
        pyrovae.distributions.DiagonalNormalMixture(logits, locs, -scales, validate_args=True)


@pytest.mark.parametrize("name", ["mixture", "vamp"])
def test_mixture_priors_are_diagonal_normal_mixtures(name):
    assert isinstance(prior_vae(name).prior(), pyrovae.distributions.DiagonalNormalMixture)


def two_cluster_data(n=256, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.stack([torch.linspace(-1, 1, dim), torch.linspace(1, -1, dim)])
    return centres[torch.randint(0, 2, (n,), generator=g)] + 0.1 * torch.randn(n, dim, generator=g)


@pytest.mark.parametrize("name", PRIOR_NAMES)
def test_a_few_svi_steps_raise_the_elbo_for_every_prior(name):
    x = two_cluster_data()
    vae = pyrovae.VAE((6,), latent_dim=2, hidden=(16,), prior=name, likelihood={"kind": "gaussian", "scale": 0.2})
    before = float(estimate.elbo(vae, x, num_particles=10, seed=0).mean())
    with pytest.warns(UserWarning, match="no closed form") if name in ("mixture", "vamp", "flow", "student_t") else _nothing():
        pyrovae.fit(vae, x, epochs=10, batch_size=64, lr=1e-2, progress=False, device="cpu")
    after = float(estimate.elbo(vae, x, num_particles=10, seed=0).mean())
    assert after > before + 5
    check = estimate.check_bounds(vae, x[:20], ks=(1, 10, 100), seed=0)  # traces work for every prior
    assert check.ok


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


LIKELIHOOD_CASES = {
    "bernoulli": ({}, lambda g: torch.bernoulli(torch.full((5, 6), 0.5), generator=g)),
    "continuous_bernoulli": ({}, lambda g: torch.rand(5, 6, generator=g)),
    "gaussian": ({"scale": 0.3}, lambda g: torch.randn(5, 6, generator=g)),
    "laplace": ({"scale": 0.3}, lambda g: torch.randn(5, 6, generator=g)),
    "beta": ({}, lambda g: torch.rand(5, 6, generator=g) * 0.98 + 0.01),
    "logistic256": ({}, lambda g: torch.randint(0, 256, (5, 6), generator=g) / 255.0),
}


def independent_log_prob(name, params, x):
    p = params.detach().double().numpy()
    xn = x.double().numpy()
    if name == "bernoulli":
        return scipy.stats.bernoulli.logpmf(xn, scipy.special.expit(p[:, 0])).sum(-1)
    if name == "continuous_bernoulli":
        lam = scipy.special.expit(p[:, 0])
        log_c = -np.log(np.vectorize(lambda l: scipy.integrate.quad(lambda t: l**t * (1 - l) ** (1 - t), 0, 1)[0])(lam))
        return (log_c + xn * np.log(lam) + (1 - xn) * np.log1p(-lam)).sum(-1)
    if name == "gaussian":
        return scipy.stats.norm.logpdf(xn, p[:, 0], 0.3).sum(-1)
    if name == "laplace":
        return scipy.stats.laplace.logpdf(xn, p[:, 0], 0.3).sum(-1)
    if name == "beta":
        a, b = np.logaddexp(0, p[:, 0]) + 1e-3, np.logaddexp(0, p[:, 1]) + 1e-3
        return scipy.stats.beta.logpdf(xn, a, b).sum(-1)
    if name == "logistic256":
        loc, scale = p[:, 0], np.exp(p[:, 1])
        upper = np.where(xn > 0.999, np.inf, xn + 1 / 510)
        lower = np.where(xn < 0.001, -np.inf, xn - 1 / 510)
        mass = scipy.stats.logistic.cdf(upper, loc, scale) - scipy.stats.logistic.cdf(lower, loc, scale)
        return np.log(mass).sum(-1)
    raise AssertionError(name)


@pytest.mark.parametrize("name", sorted(LIKELIHOOD_CASES))
def test_likelihood_log_prob_agrees_with_scipy(name):
    kwargs, make_x = LIKELIHOOD_CASES[name]
    g = torch.Generator().manual_seed(0)
    lik = likelihoods.LIKELIHOODS.build({"kind": name, **kwargs}).bind((6,))
    params = 0.7 * torch.randn(5, lik.num_params, 6, generator=g)
    x = make_x(g)
    d = lik(params)
    assert d.event_shape == (6,) and d.batch_shape == (5,)
    np.testing.assert_allclose(d.log_prob(x).detach().double().numpy(), independent_log_prob(name, params, x), rtol=1e-4, atol=1e-4)
    sample = d.sample()
    assert sample.shape == (5, 6)
    lik.check_support(sample.clamp(1e-3, 1 - 1e-3) if name == "beta" else sample)


def test_continuous_bernoulli_normalizer_integrates_to_one():
    lik = likelihoods.ContinuousBernoulli().bind((1,))
    for logit in (-3.0, -0.2, 0.0, 0.01, 2.5):
        d = lik(torch.tensor([[logit]]))
        total, _ = scipy.integrate.quad(lambda t, d=d: math.exp(d.log_prob(torch.tensor([[t]])).item()), 0, 1)
        assert total == pytest.approx(1.0, abs=1e-5)


def test_discretized_logistic_sums_to_one_over_256_levels():
    levels = torch.arange(256) / 255.0
    for loc, scale in ((0.5, 0.1), (0.02, 0.01), (0.99, 0.3), (1.4, 0.05)):
        d = likelihoods.DiscretizedLogistic(torch.tensor(loc), torch.tensor(scale))
        assert torch.logsumexp(d.log_prob(levels).double(), 0).exp().item() == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    "name,value,message",
    [
        ("bernoulli", 0.5, "binary"),
        ("continuous_bernoulli", 1.2, r"\[0, 1\]"),
        ("beta", 1.0, r"strictly inside \(0, 1\)"),
        ("logistic256", 0.5, "8-bit"),
        ("gaussian", float("nan"), "finite"),
    ],
)
def test_data_outside_the_support_names_the_value(name, value, message):
    lik = likelihoods.LIKELIHOODS.build(name).bind((3,))
    x = torch.full((2, 3), 0.0 if name not in ("beta", "logistic256") else 0.2)
    if name == "logistic256":
        x = torch.full((2, 3), 51 / 255)
    x[1, 2] = value
    with pytest.raises(ValueError, match=message + r".*index \(1, 2\)"):
        lik.check_support(x)


@pytest.mark.parametrize("name", sorted(LIKELIHOOD_CASES))
def test_a_few_svi_steps_raise_the_elbo_for_every_likelihood(name):
    kwargs, make_x = LIKELIHOOD_CASES[name]
    g = torch.Generator().manual_seed(0)
    base = torch.cat([make_x(g) for _ in range(40)])[:200]
    x = torch.cat([base[:100].sort(1).values, base[100:].sort(1, descending=True).values])  # structure to learn
    vae = pyrovae.VAE((6,), latent_dim=2, hidden=(16,), likelihood={"kind": name, **kwargs})
    before = float(estimate.elbo(vae, x, num_particles=10, seed=0).mean())
    pyrovae.fit(vae, x, epochs=30, batch_size=50, lr=1e-2, progress=False, device="cpu", binarize="none")
    after = float(estimate.elbo(vae, x, num_particles=10, seed=0).mean())
    assert after > before + 0.5


@pytest.mark.parametrize("scale", ["learned", "learned_per_dim"])
def test_learned_gaussian_scales_reach_the_residual_spread(scale):
    """For fixed mu(z), the sigma that maximizes E_q log N(x; mu(z), sigma) is the RMS residual."""
    x = two_cluster_data()
    vae = pyrovae.VAE((6,), latent_dim=2, hidden=(16,), likelihood={"kind": "gaussian", "scale": scale})
    assert vae.likelihood.scale.log_scale.shape == (() if scale == "learned" else (6,))
    pyrovae.fit(vae, x, epochs=200, batch_size=64, lr=1e-2, progress=False, device="cpu")
    with torch.no_grad():
        loc, sd = vae.encode(x)
        z = loc + sd * torch.randn(200, *loc.shape)
        residual = (x - vae.decode(z)) ** 2
        rms = residual.mean() ** 0.5 if scale == "learned" else residual.mean((0, 1)) ** 0.5
    assert torch.allclose(vae.likelihood.scale(), rms, rtol=0.25)


def test_mixture_prior_beats_normal_on_a_well_separated_mixture():
    """A linear decoder cannot bend a Gaussian into two clusters; a learned mixture prior can."""
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-3.0, -3.0], [3.0, 3.0], [-3.0, 3.0]])
    x = centres[torch.randint(0, 3, (600,), generator=g)] + 0.3 * torch.randn(600, 2, generator=g)
    scores = {}
    for name in ("normal", "mixture"):
        torch.manual_seed(0)
        vae = pyrovae.VAE((2,), latent_dim=2, hidden=(), prior={"kind": name, **({"components": 3, "init_spread": 2.0} if name == "mixture" else {})},
                          likelihood={"kind": "gaussian", "scale": "learned"})
        pyrovae.fit(vae, x, epochs=60, batch_size=100, lr=2e-2, loss="trace", progress=False, device="cpu")
        scores[name] = float(estimate.log_likelihood(vae, x[:300], num_samples=500, seed=0).mean())
    assert scores["mixture"] > scores["normal"] + 0.3, scores


def test_meanfield_falls_back_to_monte_carlo_kl_with_a_warning():
    vae = prior_vae("mixture")
    with pytest.warns(UserWarning, match="no closed form.*Monte Carlo"):
        ELBOLoss(vae, "meanfield")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ELBOLoss(prior_vae("normal"), "meanfield")  # a closed form exists: nothing to say
    assert record == []


def test_unknown_names_and_bad_arguments_list_the_choices():
    with pytest.raises(ValueError, match=r"unknown prior 'gamma'; choose one of \['flow', 'laplace'"):
        prior_vae("gamma")
    with pytest.raises(ValueError, match=r"bad arguments \{'componentz': 3\} for prior 'mixture'.*components"):
        prior_vae("mixture", componentz=3)
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'"):
        pyrovae.VAE((6,), likelihood="poisson")
    with pytest.raises(ValueError, match="scale must be a positive number, 'learned' or 'learned_per_dim'"):
        pyrovae.VAE((6,), likelihood={"kind": "gaussian", "scale": "big"})


def test_a_user_prior_in_a_few_lines():
    # 1. any callable returning a Distribution with event shape (latent_dim,)
    vae = pyrovae.VAE((6,), latent_dim=2, prior=lambda: dist.Laplace(torch.zeros(2), 0.5 * torch.ones(2)).to_event(1))
    assert vae.prior().log_prob(torch.zeros(2)).item() == pytest.approx(2 * math.log(1.0))
    # 2. a registered class: one class, one decorator line (unregistered after the test)
    @priors.PRIORS.register("logistic")
    class Logistic(priors.Prior):
        def forward(self):
            base = dist.Uniform(self._zeros, self._zeros + 1).to_event(1)
            return dist.TransformedDistribution(base, [dist.transforms.SigmoidTransform().inv])

    try:
        vae = pyrovae.VAE((6,), latent_dim=2, prior="logistic", likelihood="gaussian")
        assert vae.config["prior"] == {"kind": "logistic"}
        z = torch.randn(7, 2)
        expected = scipy.stats.logistic.logpdf(z.double().numpy()).sum(-1)
        assert numpy.allclose(vae.prior().log_prob(z).double().numpy(), expected, atol=1e-5)
        x = two_cluster_data()
        with pytest.warns(UserWarning, match="no closed form; the KL term is estimated by Monte Carlo"):
            pyrovae.fit(vae, x, epochs=2, progress=False, device="cpu")
        log_px = estimate.log_likelihood(vae, x[:5], num_samples=2000, seed=0)
        assert (log_px >= estimate.elbo(vae, x[:5], num_particles=2000, seed=1) - 0.05).all()  # Jensen
    finally:
        priors.PRIORS.unregister("logistic")
    assert "logistic" not in priors.PRIORS
    with pytest.raises(ValueError, match="event_shape"):
        pyrovae.VAE((6,), latent_dim=2, prior=lambda: dist.Normal(torch.zeros(2), 1.0))


def test_toml_cli_and_python_build_the_same_model(tmp_path, binary_npy):
    toml = tmp_path / "run.toml"
    toml.write_text(f"""
[data]
dataset = "{binary_npy}"
[model]
latent_dim = 3
hidden = [32, 16]
[model.prior]
kind = "mixture"
components = 4
[model.likelihood]
kind = "gaussian"
scale = "learned"
""")
    from_toml = validate(load_toml(toml))
    args = build_parser().parse_args(["train", "--dataset", str(binary_npy), "--latent-dim", "3", "--hidden", "32,16",
                                      "--prior", "mixture", "--prior-arg", "components=4", "--likelihood", "gaussian",
                                      "--likelihood-arg", "scale=learned", "--out", str(tmp_path / "r")])
    from_flags = config_from_args(args)
    assert from_flags["model"] == from_toml["model"]
    data = pyrovae.datasets.load(str(binary_npy))
    a, b = build_model(from_toml, data), build_model(from_flags, data)
    c = pyrovae.VAE((1, 6, 5), latent_dim=3, hidden=(32, 16), prior=priors.Mixture(4), likelihood=likelihoods.Gaussian(scale="learned"))
    shapes = [{k: tuple(v.shape) for k, v in m.state_dict().items()} for m in (a, b, c)]
    assert shapes[0] == shapes[1] == shapes[2]
    assert a.config == c.config


def test_kl_weight_scales_exactly_the_kl_term():
    vae = prior_vae("normal")
    x = two_cluster_data(n=20)
    losses = {}
    for beta in (1.0, 0.25):
        pyro.set_rng_seed(0)
        losses[beta] = ELBOLoss(vae, "meanfield", kl_schedule=KLSchedule(beta=beta))(x)
    loc, scale = vae.encode(x)
    kl = torch.distributions.kl_divergence(dist.Normal(loc, scale).to_event(1), vae.prior().expand([20])).sum()
    # float32 sums of ~100-nat terms: agreement to 1e-3 nats is rounding, a wrong weight is off by O(1)
    assert (losses[1.0] - losses[0.25]).item() == pytest.approx(0.75 * kl.item(), abs=1e-3)


def test_warmup_and_free_bits():
    schedule = KLSchedule(beta=2.0, warmup_epochs=4)
    assert [schedule.weight(e) for e in (0, 1, 2, 6)] == [0.0, 0.5, 1.0, 2.0]
    vae = prior_vae("normal")
    x = two_cluster_data(n=20)
    pyro.set_rng_seed(0)
    free = ELBOLoss(vae, "meanfield", kl_schedule=KLSchedule(free_bits=100.0))(x)
    pyro.set_rng_seed(0)
    recon_only = ELBOLoss(vae, "meanfield", kl_schedule=KLSchedule(beta=0.0))(x)
    # every coordinate's KL is under 100 nats: the KL term is the constant 100 nats x coordinates x examples
    assert free.item() == pytest.approx(recon_only.item() + 100.0 * vae.latent_dim * len(x), rel=1e-6)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        KLSchedule(beta=-1)


def test_a_user_likelihood_function():
    lik = lambda params: dist.Gamma(torch.nn.functional.softplus(params) + 0.1, 2.0).to_event(1)  # noqa: E731
    vae = pyrovae.VAE((6,), latent_dim=2, hidden=(16,), likelihood=lik)
    x = two_cluster_data().abs() + 0.05
    before = float(estimate.elbo(vae, x, num_particles=10, seed=0).mean())
    pyrovae.fit(vae, x, epochs=10, batch_size=64, lr=1e-2, progress=False, device="cpu")
    assert float(estimate.elbo(vae, x, num_particles=10, seed=0).mean()) > before
    bad = x.clone()
    bad[4, 2] = -1.0
    with pytest.raises(ValueError, match=r"GreaterThan.*-1.0 at index \(4, 2\)"):
        pyrovae.fit(vae, bad, epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"event_shape \(6,\)"):
        pyrovae.VAE((6,), likelihood=lambda p: dist.Normal(p, 1.0))


def test_bernoulli_with_grey_scores_grey_pixels_by_the_cross_entropy_and_keeps_them_grey():
    """Pyro's semi-supervised example scores MNIST's grey values under a Bernoulli:
    x log p + (1 - x) log(1 - p), summed over the pixels."""
    torch.manual_seed(0)
    logits, x = torch.randn(4, 1, 3, 3), torch.rand(4, 1, 3, 3)
    likelihood = likelihoods.make_likelihood({"kind": "bernoulli", "grey": True}).bind((1, 3, 3))
    p = scipy.special.expit(logits.double().numpy())
    expected = (x.double().numpy() * np.log(p) + (1 - x.double().numpy()) * np.log1p(-p)).sum((1, 2, 3))
    with pyro.validation_enabled(True):
        got = likelihood(logits[:, None]).log_prob(x)
    assert np.allclose(got.double().numpy(), expected, rtol=1e-5)
    likelihood.check_support(x)
    with pytest.raises(ValueError, match=r"grey = true needs values in \[0, 1\]"):
        likelihood.check_support(x + 1)
    binary_only = likelihoods.make_likelihood("bernoulli").bind((1, 3, 3))
    with pytest.raises(ValueError, match="grey = true"):  # the error names the way out
        binary_only.check_support(x)
    with pytest.raises(ValueError, match="grey must be true or false"):
        likelihoods.make_likelihood({"kind": "bernoulli", "grey": "yes"})
    vae = pyrovae.VAE((1, 3, 3), latent_dim=2, hidden=(4,), likelihood={"kind": "bernoulli", "grey": True})
    data, binarization = pyrovae.datasets.prepare(vae, x, "auto", "train")
    assert binarization == "none" and torch.equal(data, x)
    assert vae.config["likelihood"] == {"kind": "bernoulli", "grey": True}
