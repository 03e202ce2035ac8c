"""The conditional, semi-supervised and two-layer VAEs: each number against a hand-written sum,
a closed form or Pyro's own ELBOs; both of Pyro's training interfaces; the command line end to end
on each model's run folder; and the bad inputs each model meets."""

import json
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.optim
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import SVI, RenyiELBO, Trace_ELBO, TraceEnum_ELBO

import pyrovae
from pyrovae import exact
from pyrovae.cli import main
from pyrovae.models import CVAE, HVAE, M2, MODELS, balanced_labelled_subset, quadrant_mask
from pyrovae.infer.objectives import KLSchedule


def binary(n, shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(n, *shape, generator=generator) > 0.5).float()


def tiny_m2(num_classes=3):
    return M2((10,), latent_dim=2, hidden=(7,), num_classes=num_classes)


# -- M2: enumeration ------------------------------------------------------------------------------
def test_enumeration_sums_the_classes_exactly():
    """TraceEnum_ELBO's loss on unlabelled data equals sum_y q(y|x) [log p(x,y,z_y) - log q(z_y|x,y)
    - log q(y|x)], written out with the networks, at the z Pyro drew for each class."""
    m2, x = tiny_m2(), binary(5, (10,))
    pyro.set_rng_seed(1)
    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(m2.model, m2.guide, x)
    pyro.set_rng_seed(1)
    guide_trace = poutine.trace(poutine.enum(m2.guide, first_available_dim=-2)).get_trace(x)
    z = guide_trace.nodes["z"]["value"].reshape(3, 5, 2)  # one draw per enumerated class
    log_q_y = torch.log_softmax(m2.classifier(x), -1)
    total = 0.0
    for c in range(3):
        onehot = F.one_hot(torch.full((5,), c), 3).float()
        loc, scale = m2.encoder(torch.cat([x, onehot], -1))
        log_q_z = dist.Normal(loc, scale).log_prob(z[c]).sum(-1)
        log_p_z = dist.Normal(0.0, 1.0).log_prob(z[c]).sum(-1)
        logits = m2.decoder(torch.cat([z[c], onehot], -1)).squeeze(-2)
        log_p_x = dist.Bernoulli(logits=logits).log_prob(x).sum(-1)
        bound = log_p_x - math.log(3) + log_p_z - log_q_z - log_q_y[:, c]
        total = total + (log_q_y[:, c].exp() * bound).sum()
    assert torch.allclose(loss, -total, rtol=1e-5, atol=1e-4)


def test_a_labelled_batch_gives_the_supervised_elbo_plus_the_auxiliary_term():
    m2, x = tiny_m2(), binary(6, (10,))
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    objective = m2.make_objective("trace", 1, KLSchedule(), "standard", x, y, None, 0, 7.5, 6)
    pyro.set_rng_seed(2)
    value = objective.supervised_loss(x, y) + objective.classifier_loss(x, y)
    pyro.set_rng_seed(2)
    z = poutine.trace(m2.guide).get_trace(x, y).nodes["z"]["value"]
    onehot = F.one_hot(y, 3).float()
    loc, scale = m2.encoder(torch.cat([x, onehot], -1))
    logits = m2.decoder(torch.cat([z, onehot], -1)).squeeze(-2)
    supervised = (dist.Bernoulli(logits=logits).log_prob(x).sum(-1) - math.log(3)
                  + dist.Normal(0.0, 1.0).log_prob(z).sum(-1) - dist.Normal(loc, scale).log_prob(z).sum(-1))
    classifier = torch.log_softmax(m2.classifier(x), -1).gather(1, y[:, None]).squeeze(1)
    assert torch.allclose(value, -(supervised.sum() + 7.5 * classifier.sum()), rtol=1e-5, atol=1e-4)


def test_m2_log_likelihood_sums_the_classes_and_bounds_hold():
    m2, x = tiny_m2(), binary(8, (10,))
    pyro.set_rng_seed(3)
    per_class = m2.class_log_weights(x, 4)
    pyro.set_rng_seed(3)
    assert torch.allclose(m2.log_importance_weights(x, 4), torch.logsumexp(per_class, 0))
    check = pyrovae.check_bounds(m2, x, ks=(1, 10, 100), samples_per_k=400, seed=0, strict=True)
    # the per-epoch ELBO (y under q(y|x), KL in closed form) is TraceEnum_ELBO's bound in expectation,
    # and below the k = 1 bound with y summed exactly (Jensen over y)
    with torch.no_grad():
        terms = torch.stack([pyrovae.estimate.elbo_terms(m2, x)["elbo"].mean() for _ in range(300)])
        enum = torch.tensor([TraceEnum_ELBO(max_plate_nesting=1).loss(m2.model, m2.guide, x) / len(x)
                             for _ in range(300)])
    assert abs(float(terms.mean() + enum.mean())) < 4 * float(torch.hypot(terms.std(), enum.std())) / math.sqrt(300)
    assert float(terms.mean()) < check.elbo


def test_m2_class_weights_from_one_trace_are_each_classs_own():
    """The C classes weighed in one trace over C labelled copies of the batch: per class and
    example, the same distribution of log w as Pyro's trace of that class alone (its mean within
    Monte Carlo error; the draws themselves come in another order)."""
    m2, x = tiny_m2(), binary(5, (10,))
    pyro.set_rng_seed(4)
    batched = m2.class_log_weights(x, 4000).double()  # (C, K, N)
    assert batched.shape == (3, 4000, 5)
    for c in range(3):
        labels = torch.full((5,), c, dtype=torch.long)
        alone = pyrovae.infer.log_weight_parts(m2.model, m2.guide, x, labels, num_particles=4000).log_weights.double()
        error = 5 * torch.hypot(batched[c].std(0), alone.std(0)) / math.sqrt(4000)
        assert bool(((batched[c].mean(0) - alone.mean(0)).abs() <= error).all()), c


def test_m2_with_one_class_probable_reduces_to_that_class():
    """With q(y|x) certain of a class, the enumerated ELBO is that class's labelled ELBO."""
    m2, x = tiny_m2(), binary(4, (10,))
    with torch.no_grad():
        m2.classifier[-1].weight.zero_()
        m2.classifier[-1].bias.copy_(torch.tensor([0.0, 60.0, 0.0]))
    pyro.set_rng_seed(0)
    recon, kl = m2.elbo_terms(x)
    pyro.set_rng_seed(0)  # the same draws of z: elbo_terms draws one per class, in order
    for c in (0, 1):
        parts = pyrovae.log_weight_parts(m2.model, m2.guide, x, torch.full((4,), c), analytic_kl=True)
    assert torch.allclose(recon - kl, parts.observed - parts.kl, atol=1e-4)


# -- CVAE: the conditional likelihood ---------------------------------------------------------------
@pytest.mark.parametrize("condition", ["quadrants", "label"])
def test_cvae_conditional_importance_sampling_is_exact_on_a_linear_gaussian_model(condition):
    torch.manual_seed(0)
    cvae = CVAE((1, 4, 4), latent_dim=2, hidden=(), likelihood={"kind": "gaussian", "scale": 0.7},
                condition=condition, num_classes=3, baseline_hidden=())
    x, y = torch.randn(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    labels = y if condition == "label" else None
    truth = exact.linear_gaussian_conditional_log_likelihood(cvae, x, labels)
    estimate, stderr = pyrovae.log_likelihood(cvae, x, num_samples=20000, labels=labels, return_stderr=True, seed=0)
    assert ((estimate.double() - truth).abs() <= 5 * stderr.double() + 1e-3).all()
    # the ELBO is below, and the prior-proposal estimate (the tutorial's) converges to the same value
    assert (pyrovae.elbo(cvae, x, num_particles=200, labels=labels, seed=1).double() < truth + 0.02).all()
    pyro.set_rng_seed(4)
    prior_estimate = cvae.prior_log_likelihood(x, 20000, labels)
    assert (prior_estimate - truth).abs().max() < 0.1


def test_quadrant_masks_are_the_tutorials():
    one, two, three = (quadrant_mask(4, 4, k) for k in (1, 2, 3))
    assert one.tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]]
    assert two[:, :2].all() and not two[:, 2:].any()
    assert three.sum() == 12 and not three[2:, 2:].any()


def test_cvae_observes_only_the_rest_and_completes_the_given_pixels():
    cvae = CVAE((1, 6, 6), latent_dim=2, hidden=(8,), given_quadrants=2, baseline_hidden=(8,))
    x = binary(3, (1, 6, 6))
    trace = poutine.trace(cvae.model).get_trace(x)
    assert trace.nodes["x"]["value"].shape == (3, 18)
    completed = cvae.sample(4, condition=x)
    assert completed.shape == (4, 3, 1, 6, 6)
    assert torch.equal(completed[:, :, 0, :, :3], x[None, :, 0, :, :3].expand(4, -1, -1, -1))


# -- HVAE: Pyro's own ELBOs --------------------------------------------------------------------------
def _value_and_grads(compute, parameters, seed):
    for p in parameters:
        p.grad = None
    pyro.set_rng_seed(seed)
    value = compute()
    if torch.is_tensor(value):
        value.backward()
        value = value.detach()
    return torch.as_tensor(value), [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in parameters]


def test_hvae_losses_equal_pyros_own_elbos():
    """trace = Trace_ELBO and iwae = RenyiELBO(alpha=0), value and gradient, over both layers."""
    hvae, x = HVAE((10,), latent_dim=2, hidden=(6,), middle_dim=3, middle_hidden=(5,)), binary(7, (10,))
    parameters = list(hvae.parameters())
    pairs = [(lambda: pyrovae.make_elbo("trace").differentiable_loss(hvae.model, hvae.guide, x),
              lambda: Trace_ELBO().differentiable_loss(hvae.model, hvae.guide, x)),
             (lambda: pyrovae.make_elbo("iwae", 5).differentiable_loss(hvae.model, hvae.guide, x),
              lambda: RenyiELBO(alpha=0, num_particles=5, vectorize_particles=True, max_plate_nesting=1)
              .loss_and_grads(hvae.model, hvae.guide, x))]
    for ours, theirs in pairs:
        (a, grads_a), (b, grads_b) = _value_and_grads(ours, parameters, 5), _value_and_grads(theirs, parameters, 5)
        assert torch.allclose(a, b.to(a.dtype), rtol=1e-5)
        for ga, gb in zip(grads_a, grads_b):
            assert torch.allclose(ga, gb, rtol=1e-4, atol=1e-5)


def test_hvae_refuses_the_closed_form_kl_and_reports_a_monte_carlo_one():
    hvae, x = HVAE((10,), latent_dim=2, hidden=(6,), middle_dim=3, middle_hidden=(5,)), binary(7, (10,))
    with pytest.raises(ValueError, match="mean-field guide"):
        pyrovae.fit(hvae, x, epochs=1, loss="meanfield", progress=False, device="cpu")
    with torch.no_grad():
        terms = torch.stack([pyrovae.estimate.elbo_terms(hvae, x)["elbo"].mean() for _ in range(400)])
    reference = float(pyrovae.elbo(hvae, x, num_particles=400, seed=0).mean())
    assert abs(float(terms.mean()) - reference) < 4 * float(terms.std()) / math.sqrt(400) + 0.05


def test_hvae_bounds_are_ordered():
    hvae, x = HVAE((10,), latent_dim=2, hidden=(6,), middle_dim=3, middle_hidden=(5,)), binary(20, (10,))
    pyrovae.check_bounds(hvae, x, ks=(1, 10, 100), samples_per_k=400, seed=0, strict=True)


# -- both of Pyro's interfaces ----------------------------------------------------------------------
def _models_and_data():
    x, y = binary(60, (1, 6, 6), seed=1), torch.arange(60) % 3
    return [
        (HVAE((1, 6, 6), latent_dim=2, hidden=(16,), middle_dim=3, middle_hidden=(8,)), (x,), Trace_ELBO()),
        (CVAE((1, 6, 6), latent_dim=2, hidden=(16,), baseline_hidden=(8,)), (x,), Trace_ELBO()),
        (CVAE((1, 6, 6), latent_dim=2, hidden=(16,), condition="label", num_classes=3), (x, y), Trace_ELBO()),
        (M2((1, 6, 6), latent_dim=2, hidden=(16,), num_classes=3), (x,), TraceEnum_ELBO(max_plate_nesting=1)),
    ]


@pytest.mark.parametrize("index", range(4))
def test_every_model_trains_with_pyros_classic_svi_and_the_module_interface(index):
    model, args, loss = _models_and_data()[index]
    svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": 2e-2}), loss)
    first = np.mean([svi.evaluate_loss(*args) for _ in range(5)])
    for _ in range(150):
        svi.step(*args)
    assert np.mean([svi.evaluate_loss(*args) for _ in range(5)]) < first - 5 * len(args[0]) * 0.1
    pyro.clear_param_store()
    model, args, loss = _models_and_data()[index]
    loss_fn = loss(model.model, model.guide)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    first = float(loss_fn(*args).detach())
    for _ in range(150):
        optimizer.zero_grad()
        loss_fn(*args).backward()
        optimizer.step()
    assert float(loss_fn(*args).detach()) < first - 30


# -- the command line on each model's run folder ----------------------------------------------------
@pytest.mark.parametrize("flags, kinds, metric", [
    (["--model", "hvae", "--latent-dim", "2", "--middle-dim", "3", "--middle-hidden", "8", "--loss", "iwae",
      "--num-particles", "3"], ["manifold", "samples", "curves"], None),
    (["--model", "cvae", "--given-quadrants", "2", "--baseline-hidden", "16"], ["completions", "curves"],
     "baseline_log_likelihood"),
    (["--model", "cvae", "--condition", "label", "--num-classes", "3"], ["classes", "curves"],
     "prior_proposal_log_likelihood"),
    (["--model", "m2", "--num-classes", "3", "--labels", "9", "--loss", "trace"], ["analogies", "classes", "curves"],
     "accuracy"),
])
def test_train_evaluate_plot_report_on_each_model(tmp_path, labelled_npz, capsys, flags, kinds, metric):
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(labelled_npz), "--epochs", "2", "--hidden", "16", "--batch-size", "30",
                 "--out", str(out), "--no-progress", "--device", "cpu", *flags]) == 0
    for kind in kinds:
        assert (out / f"{kind}.png").is_file(), kind
    assert main(["evaluate", str(out), "--num-samples", "20", "--device", "cpu"]) == 0
    result = json.loads((out / "evaluation.json").read_text())
    assert result["log_likelihood"] >= result["elbo"] - 0.5 and result["bound_check"] == "ok"
    if metric:
        assert math.isfinite(result[metric])
    if metric == "accuracy":
        assert 0 <= result["accuracy"] <= 1
    assert main(["plot", str(out), "--kind", kinds[0]]) == 0
    assert main(["report", str(out)]) == 0
    assert kinds[0] in (out / "report.html").read_text()
    loaded = pyrovae.load(out)
    assert type(loaded) is MODELS[flags[1]]


@pytest.mark.parametrize("family", ["vae", "cvae", "m2", "hvae"])
def test_the_bare_command_of_each_family_trains_and_evaluates(tmp_path, labelled_npz, family):
    """No --loss: each family gets the loss it trains with (m2 and hvae: trace), recorded in the
    run's config."""
    out = tmp_path / "run"
    assert main(["train", "--model", family, "--dataset", str(labelled_npz), "--out", str(out)]) == 0
    recorded = pyrovae.config.load_toml(out / "config.toml")["train"]["loss"]
    assert recorded == {"vae": "meanfield", "cvae": "meanfield", "m2": "trace", "hvae": "trace"}[family]
    assert main(["evaluate", str(out), "--num-samples", "5", "--limit", "20", "--device", "cpu", "--no-progress"]) == 0


def test_an_explicit_loss_a_family_cannot_train_with_stays_an_error(tmp_path, labelled_npz, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "hvae", "--loss", "meanfield", "--dataset", str(labelled_npz), "--epochs", "1",
                 "--out", str(out), "--no-progress", "--device", "cpu"]) == 2
    assert "loss='meanfield' takes each latent site's KL in closed form" in capsys.readouterr().err
    with pytest.raises(ValueError, match="m2 trains with loss='trace'"):
        pyrovae.fit(M2((1, 8, 8), latent_dim=2, hidden=(8,), num_classes=3), pyrovae.datasets.load(str(labelled_npz)),
                    epochs=1, loss="meanfield", labels=6, progress=False, device="cpu")


def test_m2_keeps_the_epoch_of_best_validation_accuracy_and_evaluate_reads_it(tmp_path, labelled_npz):
    out = tmp_path / "run"
    assert main(["train", "--model", "m2", "--num-classes", "3", "--labels", "6", "--dataset", str(labelled_npz),
                 "--valid-fraction", "0.25", "--epochs", "4", "--batch-size", "30", "--hidden", "16", "--lr", "3e-3",
                 "--out", str(out), "--no-progress", "--no-plots", "--device", "cpu"]) == 0
    history = pyrovae.run_folder.RunFolder(out).read_metrics()
    accuracies = [row["valid_accuracy"] for row in history]
    assert all(0 <= a <= 1 for a in accuracies) and all(0 <= row["test_accuracy"] <= 1 for row in history)
    best = max(range(len(accuracies)), key=lambda i: (accuracies[i], -i))
    assert torch.load(out / "best.pt", weights_only=True)["epoch"] == best + 1
    result = pyrovae.runs.evaluate_run(out, num_samples=5, limit=20, device="cpu", progress=False)
    assert result["checkpoint"] == "best" and result["epoch"] == best + 1
    last = pyrovae.runs.evaluate_run(out, num_samples=5, limit=20, device="cpu", progress=False, checkpoint="last")
    assert last["epoch"] == 4


def test_m2_hidden_layers_start_as_pyros_example_starts_them():
    torch.manual_seed(0)
    m2 = M2((784,), latent_dim=50, hidden=(500,), num_classes=10, activation="softplus", init_std=0.001)
    hidden = [m2.encoder.body[0], m2.decoder.net[0], m2.classifier[0]]
    for layer in hidden:
        assert 0.0008 < float(layer.weight.detach().std()) < 0.0012 and float(layer.bias.detach().abs().max()) < 0.01
    outputs = [m2.encoder.loc, m2.encoder.log_scale, m2.decoder.net[-1], m2.classifier[-1]]
    for layer in outputs:  # PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        assert float(layer.weight.abs().max()) > 0.02
    assert isinstance(m2.encoder.body[1], torch.nn.Softplus)
    with pytest.raises(ValueError, match="init_std"):
        M2((10,), init_std=-1.0)


def test_m2_accuracy_beats_chance_on_separable_classes(labelled_npz):
    data = pyrovae.datasets.load(str(labelled_npz))
    test = pyrovae.datasets.load(str(labelled_npz), split="test")
    torch.manual_seed(0)
    m2 = M2((1, 8, 8), latent_dim=2, hidden=(32,), num_classes=3)
    pyrovae.fit(m2, data, epochs=15, batch_size=30, loss="trace", labels=6, progress=False, device="cpu", lr=3e-3)
    accuracy = float((m2.classify((test.data > 0.5).float()) == test.targets).float().mean())
    assert accuracy > 0.9  # three noisy prototypes, two labels each


# -- bad inputs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags, message", [
    (["--model", "m2", "--num-classes", "3", "--loss", "trace", "--labels", "0"], "labels must be >= 1"),
    (["--model", "m2", "--num-classes", "3", "--loss", "trace", "--labels", "5000"], "hold only 180"),
    (["--model", "m2", "--num-classes", "3", "--loss", "trace", "--labels", "2"],
     "at least one labelled example per class"),
    (["--model", "vae", "--labels", "9"], "semi-supervised"),
    (["--model", "cvae", "--given-quadrants", "4"], "given_quadrants must be 1, 2 or 3"),
    (["--model", "m2", "--num-classes", "3", "--loss", "iwae"], "m2 trains with loss='trace'"),
])
def test_bad_model_options_are_clear_errors_and_leave_no_folder(tmp_path, labelled_npz, capsys, flags, message):
    out = tmp_path / "run"
    code = main(["train", "--dataset", str(labelled_npz), "--epochs", "1", "--hidden", "8", "--out", str(out),
                 "--no-progress", "--device", "cpu", *flags])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("argv", [["--model", "gan"], ["--labels", "many"]])
def test_unknown_model_and_non_integer_labels_exit_2(tmp_path, labelled_npz, capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--dataset", str(labelled_npz), "--out", str(tmp_path / "run"), *argv])
    assert exit_info.value.code == 2
    assert not (tmp_path / "run").exists()


def test_labels_missing_where_the_model_needs_them(tmp_path):
    x = binary(30, (1, 6, 6))
    with pytest.raises(ValueError, match="needs the train labels"):
        pyrovae.fit(M2((1, 6, 6), latent_dim=2, hidden=(8,), num_classes=3), x, epochs=1, loss="trace",
                    progress=False, device="cpu")
    cvae = CVAE((1, 6, 6), latent_dim=2, hidden=(8,), condition="label", num_classes=3)
    with pytest.raises(ValueError, match="needs the train labels"):
        pyrovae.fit(cvae, x, epochs=1, progress=False, device="cpu")
    with pytest.raises(ValueError, match="conditioned on labels"):
        pyrovae.log_likelihood(cvae, x, num_samples=5)
    with pytest.raises(ValueError, match="takes no labels"):
        pyrovae.log_likelihood(pyrovae.VAE((1, 6, 6), 2), x, num_samples=5, labels=torch.zeros(30, dtype=torch.long))


@pytest.mark.parametrize("labels, message", [
    (torch.zeros(29, dtype=torch.long), r"shape \(30,\)"),
    (torch.full((30,), 3), r"class indices in \[0, 3\)"),
    (torch.full((30,), 0.5), "integers"),
])
def test_a_condition_of_the_wrong_shape_or_range(labels, message):
    cvae = CVAE((1, 6, 6), latent_dim=2, hidden=(8,), condition="label", num_classes=3)
    with pytest.raises(ValueError, match=message):
        cvae.model(binary(30, (1, 6, 6)), labels)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, 6, 6\)"):
        CVAE((1, 6, 6), latent_dim=2, hidden=(8,)).sample(2, condition=torch.zeros(3, 1, 5, 5))


def test_balanced_labelled_subset():
    labels = np.repeat(np.arange(4), 25)
    index = balanced_labelled_subset(labels, 10, 4, seed=0)
    assert np.bincount(labels[index.numpy()], minlength=4).tolist() == [3, 3, 2, 2]
    assert torch.equal(index, balanced_labelled_subset(labels, 10, 4, seed=0))
    assert not torch.equal(index, balanced_labelled_subset(labels, 10, 4, seed=1))
    with pytest.raises(ValueError, match="must be an integer"):
        balanced_labelled_subset(labels, 2.5, 4, seed=0)


@pytest.mark.parametrize("model", ["m2", "cvae-label"])
def test_a_resumed_run_of_a_labelled_model_ends_where_the_uninterrupted_one_does(tmp_path, labelled_npz, model):
    """The labelled batches are drawn from torch's generator, which the checkpoint carries."""
    data = pyrovae.datasets.load(str(labelled_npz))

    def build():
        torch.manual_seed(0)
        if model == "m2":
            return M2((1, 8, 8), latent_dim=2, hidden=(16,), num_classes=3), {"loss": "trace", "labels": 6}
        return CVAE((1, 8, 8), latent_dim=2, hidden=(16,), condition="label", num_classes=3), {}

    straight, options = build()
    pyrovae.fit(straight, data, epochs=2, batch_size=40, progress=False, device="cpu", run_dir=tmp_path / "a", **options)
    resumed, options = build()
    pyrovae.fit(resumed, data, epochs=1, batch_size=40, progress=False, device="cpu", run_dir=tmp_path / "b", **options)
    resumed, options = build()
    pyrovae.fit(resumed, data, epochs=2, batch_size=40, progress=False, device="cpu", run_dir=tmp_path / "b",
                resume=True, **options)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_the_labelled_batches_come_as_steps_of_their_own_each_example_once_an_epoch():
    """Pyro's ss_vae_M2.py recipe: an unlabelled step's loss is -sum U(x) alone, and after every
    interval-th unlabelled step a labelled batch takes two steps of its own (the ELBO with y
    observed, then the classifier term), so every labelled example is seen once an epoch."""
    m2, x = tiny_m2(), binary(30, (10,))
    y = torch.arange(30) % 3
    objective = m2.make_objective("trace", 1, KLSchedule(), "standard", x, y, 6, 0, 5.0, 4)
    batch = x[:4]
    pyro.set_rng_seed(7)
    unlabelled = objective(batch)
    pyro.set_rng_seed(7)
    assert torch.equal(unlabelled, TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(m2.model, m2.guide, batch))
    steps_per_epoch = 8  # 30 images in batches of 4
    for epoch in (0, 1):
        seen, where = [], []
        for step in range(steps_per_epoch):
            losses = objective.interleaved_losses(epoch, step, steps_per_epoch)
            if losses:
                assert [every for _, every in losses] == [False, False]
                where.append(step)
                batch = objective.labelled_batch_at(epoch, step, steps_per_epoch)
                seen.append(batch)
        assert where == [0, 4] and seen == [0, 1]  # 6 labelled examples: batches of 4 and 2, spread evenly
    # the two steps' losses: the supervised bound and alpha times the classifier term, on the labelled examples
    captured = []
    objective.supervised_loss = lambda xb, yb: captured.append(("elbo", xb, yb))
    objective.classifier_loss = lambda xb, yb: captured.append(("classifier", xb, yb))
    examples = []
    for step in (0, 4):
        for loss_fn, _ in objective.interleaved_losses(0, step, steps_per_epoch):
            loss_fn()
    assert [kind for kind, _, _ in captured] == ["elbo", "classifier", "elbo", "classifier"]
    for _, xb, yb in captured[::2]:
        examples += [(tuple(row.tolist()), int(label)) for row, label in zip(xb, yb)]
    labelled = sorted((tuple(row.tolist()), int(label)) for row, label in zip(objective.labelled_x, objective.labelled_y))
    assert sorted(examples) == labelled


def test_labelled_repeats_pass_over_the_labelled_examples_that_many_times_an_epoch():
    m2, x = tiny_m2(), binary(40, (10,))
    y = torch.arange(40) % 3
    objective = m2.make_objective("trace", 1, KLSchedule(), "standard", x, y, 6, 0, 5.0, 4, labelled_repeats=3)
    captured = []
    objective.supervised_loss = lambda xb, yb: captured.append(yb.tolist())
    objective.classifier_loss = lambda xb, yb: None
    steps_per_epoch = 10
    for step in range(steps_per_epoch):
        for loss_fn, _ in objective.interleaved_losses(0, step, steps_per_epoch):
            loss_fn()
    assert len(captured) == 6  # 3 passes of two batches (4 + 2), one after every step but the last few
    seen = sorted(label for batch in captured for label in batch)
    assert seen == sorted(objective.labelled_y.tolist() * 3)
    with pytest.raises(ValueError, match="labelled_repeats"):
        m2.make_objective("trace", 1, KLSchedule(), "standard", x, y, 6, 0, 5.0, 4, labelled_repeats=0)


def adam_steps_of_one_epoch(labelled_npz, monkeypatch, **options):
    """(the dataset, the M2, for each Adam step of one epoch the number of parameters it had a
    gradient for)."""
    data = pyrovae.datasets.load(str(labelled_npz))
    torch.manual_seed(0)
    m2 = M2((1, 8, 8), latent_dim=2, hidden=(8,), num_classes=3)
    steps, original = [], torch.optim.Adam.step

    def counting_step(self, *args, **kwargs):
        steps.append(sum(1 for group in self.param_groups for p in group["params"] if p.grad is not None))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", counting_step)
    pyrovae.fit(m2, data, epochs=1, batch_size=30, progress=False, device="cpu", labels=6, compile="off", **options)
    return data, m2, steps


def test_a_labelled_step_trains_the_classifier_with_its_own_optimizer_step(labelled_npz, monkeypatch):
    """The trainer takes 2 optimizer steps per labelled batch beside the unlabelled ones."""
    data, _, steps = adam_steps_of_one_epoch(labelled_npz, monkeypatch)
    assert len(steps) == math.ceil(len(data) / 30) + 2  # one labelled batch of 6: two steps of its own


def test_every_batch_classifier_step_moves_every_parameter_as_pyros_second_svi_object_does(labelled_npz, monkeypatch):
    """Pyro's example steps its classifier SVI after every batch: the loss is empty on an
    unlabelled batch, yet Adam steps every parameter with the zero gradient left in place."""
    data, m2, steps = adam_steps_of_one_epoch(labelled_npz, monkeypatch, every_batch_classifier_step=True)
    unlabelled = math.ceil(len(data) / 30)
    assert len(steps) == 2 * unlabelled + 2  # each batch twice, the labelled one's two steps
    everything = len(list(m2.parameters()))
    assert steps.count(everything) == len(steps)  # every step reaches every parameter
    # one zero-gradient Adam step moves a parameter along its running mean, as torch's Adam does
    weight = torch.nn.Parameter(torch.ones(3))
    adam = torch.optim.Adam([weight], lr=0.1, betas=(0.95, 0.999))
    weight.grad = torch.ones(3)
    adam.step()
    before = weight.detach().clone()
    weight.grad.zero_()
    adam.step()
    assert bool((weight < before).all())


def test_m2_on_a_vaes_latent_means_is_kingmas_m1_plus_m2(tmp_path, labelled_npz, capsys):
    """``features = RUN``: the examples become E_q[z | x] of RUN's encoder (M1), and M2 models
    them (M1+M2); training, evaluation and the run's figures read the same features."""
    m1 = tmp_path / "m1"
    common = ["--dataset", str(labelled_npz), "--hidden", "16", "--no-progress", "--device", "cpu"]
    assert main(["train", "--latent-dim", "4", "--epochs", "3", "--out", str(m1), "--no-plots", *common]) == 0
    out = tmp_path / "m1m2"
    assert main(["train", "--model", "m2", "--features", str(m1), "--likelihood", "gaussian", "--num-classes", "3",
                 "--labels", "6", "--latent-dim", "2", "--epochs", "2", "--out", str(out), *common]) == 0
    data = pyrovae.datasets.load(str(labelled_npz))
    with torch.no_grad():
        means = pyrovae.load(m1).encode(data.data)[0]
    features = pyrovae.runs.load_split(pyrovae.runs.read_run_config(out), "train")
    assert torch.allclose(features.data, means, atol=1e-6) and torch.equal(features.targets, data.targets)
    assert pyrovae.load(out).data_shape == (4,)
    result = pyrovae.runs.evaluate_run(out, num_samples=5, limit=20, device="cpu", progress=False)
    assert 0 <= result["accuracy"] <= 1 and result["features"] == str(m1)
    # M1+M2's figures are of the images: M2's outputs decoded by M1
    assert all((out / f"{kind}.png").is_file() for kind in ("analogies", "classes", "curves"))
    stacked = pyrovae.models.m2.StackedM2(pyrovae.load(out), pyrovae.load(m1))
    pictures = stacked.analogies(data.data[:2])
    assert pictures.shape == (2, 3, 1, 8, 8) and ((pictures >= 0) & (pictures <= 1)).all()

    missing = tmp_path / "no-such-run"
    assert main(["train", "--model", "m2", "--features", str(missing), "--likelihood", "gaussian", "--num-classes",
                 "3", "--labels", "6", "--epochs", "1", "--out", str(tmp_path / "x"), *common]) == 2
    assert "no trained run in" in capsys.readouterr().err and not (tmp_path / "x").exists()
    other = tmp_path / "other.npy"
    np.save(other, np.zeros((20, 5), dtype=np.float32))
    assert main(["train", "--features", str(m1), "--dataset", str(other), "--likelihood", "gaussian", "--epochs", "1",
                 "--out", str(tmp_path / "y"), "--no-progress", "--device", "cpu"]) == 2
    assert "encodes examples of shape (1, 8, 8)" in capsys.readouterr().err
