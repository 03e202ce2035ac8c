"""Every estimator, check and picture on a user's own Pyro program: programs written in the style
of Pyro's examples (tests/pyro_style_programs.py), trained by Pyro's own SVI, checked against
importance sampling written out by hand from the same networks with torch.distributions, and a
linear-Gaussian program whose guide is the exact posterior against the closed-form log p(x)."""

import ast
import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from matplotlib.figure import Figure
from torch.distributions import Bernoulli, MultivariateNormal, Normal

import pyrovae
from pyrovae import latent, plots
from pyrovae.cli import main
from pyrovae.program import as_program
from pyrovae.protocol import PROTOCOL_MEMBERS

from pyro_style_programs import (PlateStyleVAE, PyroExampleCVAE, PyroExampleVAE, binary_data, logmeanexp_with_stderr,
                                 train_with_pyro_svi)

PACKAGE = Path(pyrovae.__file__).parent


@pytest.fixture(scope="module")
def trained_vae():
    x, labels = binary_data()
    net = train_with_pyro_svi(PyroExampleVAE(x_dim=30), x, steps=300)
    return net, x, labels


def _hand_weights(net, x, num_samples, generator):
    """log p(x, z) - log q(z|x), z ~ q, for the example VAE, from its networks and torch.distributions."""
    with torch.no_grad():
        flat = x.reshape(len(x), -1)
        loc, scale = net.encoder(flat)
        z = loc + scale * torch.randn((num_samples, *loc.shape), generator=generator)
        log_q = Normal(loc, scale).log_prob(z).sum(-1)
        log_prior = Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_lik = Bernoulli(probs=net.decoder(z)).log_prob(flat).sum(-1)
        return (log_prior + log_lik - log_q).double()


def test_the_three_forms_give_the_same_numbers(trained_vae):
    net, x, _ = trained_vae
    forms = [pyrovae.log_likelihood(net, x[:20], 200, seed=3),
             pyrovae.log_likelihood((net.model, net.guide), x[:20], 200, seed=3),
             pyrovae.log_likelihood(x=x[:20], num_samples=200, seed=3, model=net.model, guide=net.guide)]
    assert all(torch.equal(forms[0], f) for f in forms[1:])
    assert torch.equal(pyrovae.elbo(net, x[:20], 5, seed=1), pyrovae.elbo(model=net.model, guide=net.guide,
                                                                           x=x[:20], num_particles=5, seed=1))


def test_log_likelihood_of_a_pyro_example_vae_equals_hand_written_importance_sampling_draw_for_draw(trained_vae):
    net, x, _ = trained_vae
    x = x[:40]
    ours = pyrovae.log_likelihood(net, x, 500, seed=0)  # one batch, one chunk of 500 draws from seed 0
    with torch.random.fork_rng():
        torch.manual_seed(0)
        eps = torch.empty(500, 40, 2).normal_()  # the draws the guide's Normal.rsample makes under its plates
    with torch.no_grad():
        loc, scale = net.encoder(x)
        z = loc + scale * eps
        log_w = (Normal(0.0, 1.0).log_prob(z).sum(-1) + Bernoulli(probs=net.decoder(z)).log_prob(x).sum(-1)
                 - Normal(loc, scale).log_prob(z).sum(-1)).double()
    reference = torch.logsumexp(log_w, 0) - math.log(500)
    assert float((ours.double() - reference).abs().max()) < 1e-5


@pytest.mark.parametrize("plate_style", ["sizeless", "subsample"])
def test_a_sizeless_or_subsampled_data_plate_is_found_by_its_extent(trained_vae, plate_style):
    """pyro.plate("data") (size -1 in the trace) and pyro.plate("data", subsample=...) hold the
    examples as pyro.plate("data", len(x)) does: the same program gives the same numbers, draw for
    draw, as the sized one (itself held to hand-written importance sampling above), on more
    examples than the probe traces."""
    net, x, _ = trained_vae
    styled = PlateStyleVAE(plate_style, x_dim=30)
    styled.load_state_dict(net.state_dict())
    x = x[:100]
    for estimate in (lambda program: pyrovae.log_likelihood(program, x, 50, seed=0),
                     lambda program: pyrovae.elbo(program, x, 5, seed=1),
                     lambda program: pyrovae.iwae_bound(program, x, 5, 4, seed=2)):
        torch.testing.assert_close(estimate(styled), estimate(net), rtol=0, atol=1e-5)


def test_a_data_plate_that_subsamples_more_examples_than_passed_is_named():
    """Pyro scales every site of a subsampled plate by N / batch: a per-example log p(x) would
    carry the factor, so the estimators refuse it by name."""
    x, _ = binary_data()
    with pytest.raises(ValueError, match=r"the data plate 'data' subsamples 64 of 128 examples, so Pyro scales "
                                         r"site 'latent' by 128/64"):
        pyrovae.log_likelihood(PlateStyleVAE("subsample-of-more", x_dim=30), x[:64], 10)


def test_the_data_plate_error_names_the_users_examples_and_the_plates_extents():
    def model(x):
        with pyro.plate("pixels", x.shape[1], dim=-1):
            pyro.sample("obs", dist.Bernoulli(0.5 * torch.ones(x.shape[1])), obs=x[0])
        pyro.sample("z", dist.Normal(0.0, 1.0))

    def guide(x):
        pyro.sample("z", dist.Normal(0.0, 1.0))

    x = torch.ones(100, 30)
    with pytest.raises(ValueError, match=r"one entry per example \(100 examples passed, traced on the first 64; "
                                         r"plates there: 'pixels' over 30\)"):
        pyrovae.log_likelihood(x=x, model=model, guide=guide, num_samples=4)


def test_log_likelihood_of_a_pyro_example_vae_agrees_with_independent_hand_written_draws(trained_vae):
    net, x, _ = trained_vae
    x = x[:40]
    ours, stderr, diagnostics = pyrovae.log_likelihood(net, x, 4000, seed=0, return_stderr=True,
                                                       return_diagnostics=True)
    reference, reference_se = logmeanexp_with_stderr(_hand_weights(net, x, 4000, torch.Generator().manual_seed(1)))
    difference = (ours.double() - reference).abs()
    allowed = 5 * (stderr.double() ** 2 + reference_se ** 2).sqrt() + 1e-3
    assert bool((difference <= allowed).all()), (difference.max(), allowed.min())
    assert diagnostics.pareto_k.shape == (40,) and diagnostics.ess.shape == (40,)
    # the ELBO and the IWAE bound against hand-written weights, within their Monte Carlo errors
    hand = _hand_weights(net, x, 4000, torch.Generator().manual_seed(2))
    elbo_error = 5 * hand.std(0) * math.sqrt(2 / 4000)
    assert bool(((pyrovae.elbo(net, x, 4000, seed=0).double() - hand.mean(0)).abs() <= elbo_error).all())
    hand_iwae = torch.logsumexp(hand.reshape(400, 10, -1), 1) - math.log(10)
    iwae_error = 5 * hand_iwae.std(0) * math.sqrt(2 / 400)
    assert bool(((pyrovae.iwae_bound(net, x, 10, 400, seed=0).double() - hand_iwae.mean(0)).abs() <= iwae_error).all())


def test_bound_check_ais_and_log_weight_parts_on_a_pyro_example_vae(trained_vae):
    net, x, _ = trained_vae
    check = pyrovae.check_bounds(net, x[:30], ks=(1, 10, 100), seed=0, strict=True)
    assert check.ok and check.values[0] <= check.values[-1] + 1e-3
    reference, _ = logmeanexp_with_stderr(_hand_weights(net, x[:6], 20000, torch.Generator().manual_seed(4)))
    ais = pyrovae.ais_log_likelihood(net, x[:6], num_chains=8, num_steps=200, num_leapfrog=5, seed=0)
    assert float((ais.log_likelihood.double() - reference).abs().max()) < 0.1
    same = pyrovae.ais_log_likelihood(net.model, net.guide, x[:6], num_chains=8, num_steps=200, num_leapfrog=5, seed=0)
    assert torch.equal(same.log_likelihood, ais.log_likelihood)
    parts = pyrovae.log_weight_parts(net, x[:5], num_particles=3)
    assert parts.log_weights.shape == (3, 5)


def test_pictures_of_a_pyro_example_vae_decode_through_the_model_and_encode_through_the_guide(trained_vae, tmp_path):
    net, x, labels = trained_vae
    program = as_program(net, image_shape=(6, 5))
    program.prepare_data(x)
    z = torch.randn(7, 2)
    with torch.no_grad():
        assert torch.allclose(program.decode(z), net.decoder(z))  # the observed site's mean under poutine.condition
        assert torch.allclose(program.encode(x[:7])[0], net.encoder(x[:7])[0])
        assert torch.allclose(latent.encode_mean(program, x[:7]), net.encoder(x[:7])[0])
    assert program.latent_dim == 2 and program.data_shape == (6, 5)
    figures = {
        "manifold": plots.manifold(net, n=5, image_shape=(6, 5), input_shape=(30,)),
        "samples": plots.samples(net, n=20, image_shape=(6, 5), input_shape=(30,)),
        "reconstructions": plots.reconstructions(net, x, image_shape=(6, 5)),
        "interpolation": plots.interpolation(net, x, pairs=2, steps=5, image_shape=(6, 5)),
        "scatter": plots.scatter(net, x, labels),
    }
    vector = latent.attribute_vector(program, x, labels=labels, positive=1, negative=0)
    figures["attributes"] = plots.attributes(net, x, [vector], ["0 -> 1"], image_shape=(6, 5))
    for name, figure in figures.items():
        assert isinstance(figure, Figure)
        assert plots.save(figure, tmp_path / f"{name}.png").stat().st_size > 1000


def _hand_cvae_weights(net, xs, ys, num_samples, generator):
    with torch.no_grad():
        loc, scale = net.recognition_net(torch.cat([xs, ys], -1))
        prior_loc, prior_scale = net.prior_net(xs)
        z = loc + scale * torch.randn((num_samples, *loc.shape), generator=generator)
        probs = net.generation_net(torch.cat([z, xs.expand(num_samples, *xs.shape)], -1))
        return (Normal(prior_loc, prior_scale).log_prob(z).sum(-1) + Bernoulli(probs=probs).log_prob(ys).sum(-1)
                - Normal(loc, scale).log_prob(z).sum(-1)).double()


def test_a_pyro_example_cvae_with_its_condition_as_a_program_argument(tmp_path):
    x, _ = binary_data(n=160)
    xs, ys = x[:, :15], x[:, 15:]
    net = train_with_pyro_svi(PyroExampleCVAE(), xs, ys, steps=200)
    ours, stderr = pyrovae.log_likelihood(net, xs[:30], 3000, seed=0, return_stderr=True, kwargs={"ys": ys[:30]},
                                          batch_size=8)  # the keyword argument is sliced with the examples
    reference, reference_se = logmeanexp_with_stderr(_hand_cvae_weights(net, xs[:30], ys[:30], 3000,
                                                                          torch.Generator().manual_seed(5)))
    assert bool(((ours.double() - reference).abs() <= 5 * (stderr.double() ** 2 + reference_se ** 2).sqrt()
                 + 1e-3).all())
    check = pyrovae.check_bounds(net, xs[:20], ks=(1, 10), kwargs={"ys": ys[:20]}, seed=0, strict=True)
    assert check.ok
    ais = pyrovae.ais_log_likelihood(net, xs[:4], num_chains=4, num_steps=100, num_leapfrog=5, seed=0, ys=ys[:4])
    assert float((ais.log_likelihood.double() - reference[:4]).abs().max()) < 0.15
    program = as_program(net, image_shape=(3, 5))
    program.prepare_data(xs)
    assert isinstance(plots.reconstructions(program, xs), Figure)  # encoded through the prior network (ys=None)
    assert isinstance(plots.samples(program, n=10), Figure)


class LinearGaussian(torch.nn.Module):
    """z ~ N(0, I_d), x ~ N(W z + b, s^2 I_D), in plain Pyro; the guide is the exact posterior
    N(Sigma W^T (x - b) / s^2, Sigma), Sigma = (I + W^T W / s^2)^-1, a MultivariateNormal."""

    def __init__(self, data_dim=5, latent_dim=3, noise=0.7, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(torch.randn(data_dim, latent_dim, generator=g, dtype=torch.float64))
        self.bias = torch.nn.Parameter(torch.randn(data_dim, generator=g, dtype=torch.float64))
        self.noise = noise

    def posterior(self):
        precision = torch.eye(self.weight.shape[1], dtype=torch.float64) + self.weight.T @ self.weight / self.noise ** 2
        covariance = torch.linalg.inv(precision)
        return covariance, covariance @ self.weight.T / self.noise ** 2

    def marginal(self):
        covariance = self.weight @ self.weight.T + self.noise ** 2 * torch.eye(self.weight.shape[0], dtype=torch.float64)
        return MultivariateNormal(self.bias, covariance)

    def model(self, x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(len(x), self.weight.shape[1]), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.weight.T + self.bias, self.noise).to_event(1), obs=x)

    def guide(self, x):
        covariance, gain = self.posterior()
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.MultivariateNormal((x - self.bias) @ gain.T, covariance_matrix=covariance))


def test_exact_posterior_guide_gives_the_closed_form_log_likelihood_on_every_example():
    program = LinearGaussian()
    with torch.no_grad():
        x = program.marginal().sample((50,))
        exact = program.marginal().log_prob(x)
    estimate, diagnostics = pyrovae.log_likelihood(program, x, 200, seed=0, return_diagnostics=True)
    assert float((estimate - exact).abs().max()) < 1e-4
    assert not bool((diagnostics.pareto_k > 0.7).any())
    assert float(diagnostics.ess.min()) > 199  # every weight the same: the full sample size
    check = pyrovae.check_bounds(program, x, ks=(1, 10), exact=float(exact.mean()), seed=0, strict=True)
    assert abs(check.jensen_gap) < 1e-4


def test_ais_and_bdmc_of_a_plain_pyro_program_against_the_closed_form():
    program = LinearGaussian()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():  # (z, x) ~ p: z is an exact posterior draw given x, where BDMC's reverse chain starts
        z = torch.randn(32, 3, dtype=torch.float64, generator=g)
        x = z @ program.weight.T + program.bias + program.noise * torch.randn(32, 5, dtype=torch.float64, generator=g)
        truth = program.marginal().log_prob(x)

    def stderr(v):
        return float(v.std()) / math.sqrt(len(v))

    # from the prior (the exact guide would make every weight log p(x) at once)
    ais = pyrovae.ais_log_likelihood(program, x, proposal="prior", num_chains=16, num_steps=300, num_leapfrog=5,
                                     seed=0)
    error = ais.log_likelihood - truth
    assert abs(float(error.mean())) < 3 * stderr(error) + 0.02
    sandwich = pyrovae.bdmc(program, x, {"z": z}, proposal="prior", num_chains=8, num_steps=200, num_leapfrog=5,
                            seed=0)
    assert float((sandwich.lower - truth).mean()) <= 3 * stderr(sandwich.lower - truth)
    assert float((sandwich.upper - truth).mean()) >= -3 * stderr(sandwich.upper - truth)
    assert float(sandwich.gap.mean()) < 1.0


class _Broken(torch.nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.loc = torch.nn.Parameter(torch.zeros(2))

    def model(self, x):
        if self.kind == "global":
            shift = pyro.sample("shift", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(self.loc, 1.0).expand([len(x), 2]).to_event(1))
            if self.kind == "discrete":
                pyro.sample("c", dist.Categorical(logits=torch.zeros(len(x), 3)))
            if self.kind != "unobserved":
                mean = z.sum(-1, keepdim=True) + (shift if self.kind == "global" else 0.0)
                pyro.sample("x", dist.Normal(mean, 1.0).to_event(1), obs=x)

    def guide(self, x):
        if self.kind == "global":
            pyro.sample("shift", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            if self.kind != "missing":
                pyro.sample("z", dist.Normal(self.loc, 1.0).expand([len(x), 2]).to_event(1))


@pytest.mark.parametrize("kind, message", [
    ("global", "latent site 'shift' is outside the data plate 'data': a global latent couples the examples"),
    ("missing", "the guide misses latent site 'z'"),
    ("unobserved", "the model has no observed site"),
    ("discrete", "latent site 'c' of the model is discrete and the guide does not sample it"),
])
def test_programs_that_cannot_be_weighed_per_example_get_named_errors(kind, message):
    x = torch.randn(8, 1)
    for call in (lambda: pyrovae.log_likelihood(_Broken(kind), x, 10),
                 lambda: pyrovae.ais_log_likelihood(_Broken(kind), x, num_steps=2)):
        with pytest.raises(ValueError, match=re.escape(message)):
            call()


def test_objects_that_are_not_programs_get_named_errors():
    x = torch.rand(4, 30)
    with pytest.raises(TypeError, match="an object with model and guide methods"):
        pyrovae.log_likelihood(torch.nn.Linear(2, 2), x, 10)
    with pytest.raises(TypeError, match="not both"):
        pyrovae.log_likelihood(PyroExampleVAE(), x, 10, model=lambda x: None, guide=lambda x: None)
    with pytest.raises(ValueError, match="data_plate='pixels': no plate of that name"):
        pyrovae.log_likelihood(PyroExampleVAE(), x, 10, data_plate="pixels")
    with pytest.raises(ValueError, match="give the shape of one example"):
        plots.manifold(PyroExampleVAE())
    with pytest.raises(TypeError, match="knows its own"):
        plots.manifold(pyrovae.VAE((4,), latent_dim=2), image_shape=(2, 2))


def test_the_package_vae_is_its_own_program_and_keeps_its_fast_path():
    vae = pyrovae.VAE((6,), latent_dim=2, hidden=(8,))
    assert as_program(vae) is vae
    assert vae.fast_weight_parts(vae.model, vae.guide) is not None
    x = (torch.rand(10, 6) > 0.5).float()
    # the same numbers through the Program adapter (Pyro's traces) and the VAE's fast path
    fast = pyrovae.log_likelihood(vae, x, 300, seed=0)
    traced = pyrovae.log_likelihood(model=vae.model, guide=lambda x: vae.guide(x), x=x, num_samples=300, seed=0)
    assert torch.allclose(fast, traced, atol=1e-4)


def test_the_protocol_is_declared_once_and_the_core_knows_no_model_class():
    members = "|".join(PROTOCOL_MEMBERS)
    pattern = re.compile(rf"getattr\(\s*\w+(\.\w+)*\s*,\s*[\"']({members})[\"']")
    offenders = [f"{path.relative_to(PACKAGE)}:{i}" for path in PACKAGE.rglob("*.py") if path.name != "protocol.py"
                 for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders
    for path in (PACKAGE / "infer").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert "models" not in (node.module or ""), f"{path.name} imports {node.module}"


def test_old_import_paths_warn_and_still_work():
    with pytest.warns(DeprecationWarning, match="moved to pyrovae.estimate.importance.log_likelihood"):
        from pyrovae.evaluation import log_likelihood
    assert log_likelihood is pyrovae.log_likelihood
    with pytest.warns(DeprecationWarning, match="pyrovae.estimate.ais"):
        from pyrovae.infer.ais import bdmc
    assert bdmc is pyrovae.bdmc
    with pytest.warns(DeprecationWarning, match="pyrovae.models.vae"):
        from pyrovae.infer.fast_path import fast_vae  # noqa: F401
    with pytest.warns(DeprecationWarning, match="moved to pyrovae.program.Program"):
        from pyrovae.protocol import Program
    assert Program is pyrovae.Program
    with pytest.warns(DeprecationWarning, match="moved to pyrovae.estimate.distributed.log_likelihood"):
        from pyrovae.distributed import log_likelihood
    assert log_likelihood is pyrovae.estimate.distributed.log_likelihood


def test_cli_evaluates_plots_and_reports_a_users_program(trained_vae, tmp_path, capsys):
    net, x, _ = trained_vae
    data = tmp_path / "data.npy"
    np.save(data, x.numpy())
    weights = tmp_path / "weights.pt"
    torch.save(net.state_dict(), weights)
    program = f"{Path(__file__).parent / 'pyro_style_programs.py'}:PyroExampleVAE"
    out = tmp_path / "evaluated"
    common = ["--program", program, "--program-arg", "x_dim=30", "--weights", str(weights), "--dataset", str(data)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["evaluate", str(out), *common, "--limit", "20", "--num-samples", "50", "--no-progress"]) == 0
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["log_likelihood"] == pytest.approx(float(pyrovae.log_likelihood(net, x[:20], 50, seed=0)
                                                               .double().mean()), abs=1e-5)
    assert evaluation["bound_check"] == "ok" and "importance_diagnostics" in evaluation
    assert main(["plot", str(out), *common, "--image-shape", "6,5", "--n", "5"]) == 0
    assert main(["report", str(out), *common, "--image-shape", "6,5"]) == 0
    for name in ("manifold", "scatter", "reconstructions", "samples", "interpolation", "jensen_gap"):
        assert (out / f"{name}.png").is_file(), name
    report = (out / "report.html").read_text()
    assert "evaluated" in report and "a user&#x27;s Pyro program" in report and "epochs trained" not in report
    capsys.readouterr()
    # bad input: named errors, exit 2
    for argv, message in (
            (["--program", str(tmp_path / "none.py") + ":X"], "no file"),
            (["--program", program + "Nope"], "has no class or factory 'PyroExampleVAENope'"),
            (["--program", program, "--program-arg", "x_dim=12", "--weights", str(weights)], "does not fit"),
            (["--program", program, "--weights", str(data)], "not a state dict")):
        assert main(["evaluate", str(tmp_path / "bad"), *argv, "--dataset", str(data), "--no-progress"]) == 2
        assert message in capsys.readouterr().err


class _SummedMixture(torch.nn.Module):
    """A user's program with a discrete latent c the guide does not sample, and its own
    log_importance_weights (the protocol's member) summing c out exactly."""

    def __init__(self):
        super().__init__()
        self.means = torch.nn.Parameter(torch.tensor([-2.0, 2.0]))

    def model(self, x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Categorical(logits=torch.zeros(len(x), 2)))
            z = pyro.sample("z", dist.Normal(self.means[c], 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(self, x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(x / 2, 0.8))

    def log_importance_weights(self, x, num_samples):
        z = dist.Normal(x / 2, 0.8).sample((num_samples,))
        log_prior = torch.logsumexp(torch.stack([dist.Normal(m, 1.0).log_prob(z) for m in self.means]), 0) \
            - math.log(2)
        return log_prior + dist.Normal(z, 1.0).log_prob(x) - dist.Normal(x / 2, 0.8).log_prob(z)


def test_a_users_program_that_sums_its_discrete_latent_out_is_weighed_by_its_own_weights():
    program = _SummedMixture()
    x = torch.tensor([-3.0, -1.0, 0.5, 2.5])
    with pytest.raises(ValueError, match="latent site 'c' of the model is discrete"):
        pyrovae.log_likelihood(model=program.model, guide=program.guide, x=x, num_samples=10)
    estimate, stderr = pyrovae.log_likelihood(program, x, 20000, seed=0, return_stderr=True)  # its own member
    # p(x) = (1/2) sum_c N(x; m_c, 2): z integrated out in closed form
    exact = torch.logsumexp(torch.stack([dist.Normal(m, math.sqrt(2.0)).log_prob(x) for m in (-2.0, 2.0)]), 0) \
        - math.log(2)
    assert bool(((estimate - exact).abs() < 5 * stderr + 1e-3).all()), (estimate - exact, stderr)
