"""``fit`` trains as the plainest loop trains (issue #42): from the same initial weights, on the same
batches, with the same noise, ``pyrovae.fit`` ends on the parameters of the twenty lines a Pyro user
writes (Pyro's own ELBO called as a module, ``torch.optim`` over the model's parameters), for every
model family, network, guide family, objective and gradient estimator. A difference shows at the
first steps, not at epoch ten.

The plain loop is written here from Pyro's classes (``Trace_ELBO``, ``TraceMeanField_ELBO``,
``RenyiELBO``, ``TraceEnum_ELBO``) or, where Pyro has no class for the estimator (STL, DReG, the KL
warm-up), from Pyro's traces by hand; it shares with ``fit`` only the model and the documented
order of the data (``torch.manual_seed(seed)``, then each epoch's permutation from
``stream_seed(seed, epoch)``, see :mod:`pyrovae.train.trainer`).

The comparisons run in float64: Adam divides each gradient by its own running scale, so a
parameter whose gradient is at float32's rounding level (deep in a gated convolution at the first
steps) turns a rounding difference between two ways of summing the same terms (the package VAE's
fast path against Pyro's traces; pyrovae's log-sum-exp against ``RenyiELBO``'s) into a visible
one (2e-4 after six float32 steps). In float64 the same sums agree to 1e-9, and any real
difference (noise, batches, a term, a scale) still shows as one of the order of the learning rate.
"""

import copy
import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import RenyiELBO, Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO

import pyrovae
from pyrovae.models import CVAE, HVAE, M2, balanced_labelled_subset
from pyrovae.train import stream_seed

SEED, BATCH, EPOCHS = 3, 16, 2
TOLERANCE = 1e-8


@pytest.fixture(autouse=True)
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def binary(n, shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(n, *shape, generator=generator) > 0.5).to(torch.get_default_dtype())


def batches(n, epochs, batch, seed=SEED):
    """fit's documented data order: each epoch's permutation from stream_seed(seed, epoch)."""
    for epoch in range(epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(stream_seed(seed, epoch)))
        steps = math.ceil(n / batch)
        for step in range(steps):
            yield epoch, step, steps, order[step * batch:(step + 1) * batch]


def plain_loop(model, x, loss_fn, lr=1e-2, epochs=EPOCHS, batch=BATCH, labels=None, optimizer=torch.optim.Adam,
               on_step=None):
    """The user's loop: seed, shuffle, zero_grad, loss, backward, step. ``loss_fn(xb, *labels,
    progress=epochs done)`` returns the loss to minimize, or None where it set the gradients itself."""
    torch.manual_seed(SEED)
    opt = optimizer(model.parameters(), lr=lr)
    for epoch, step, steps, index in batches(len(x), epochs, batch):
        args = (x[index],) if labels is None else (x[index], labels[index])
        opt.zero_grad()
        loss = loss_fn(*args, progress=epoch + step / steps)
        if loss is not None:
            loss.backward()
        opt.step()
        if on_step is not None:
            on_step(epoch, step, steps, opt)
    return model


def fit_copy(model, x, targets=None, **options):
    trained = copy.deepcopy(model)
    train = x if targets is None else torch.utils.data.TensorDataset(x, targets)
    pyrovae.fit(trained, train, epochs=options.pop("epochs", EPOCHS), batch_size=options.pop("batch_size", BATCH),
                lr=options.pop("lr", 1e-2), seed=SEED, progress=False, device="cpu", binarize="none", **options)
    return trained


def assert_same_parameters(a, b, tol=TOLERANCE):
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, rtol=tol, atol=tol), (name, float((p - q).abs().max()))


def module_loss(elbo, model):
    """Pyro's ELBO as a module (``elbo(model, guide)``); RenyiELBO has no differentiable loss, so
    its own ``loss_and_grads`` sets the gradients, as SVI would call it."""
    if isinstance(elbo, RenyiELBO):
        def loss(*args, progress):
            elbo.loss_and_grads(model.model, model.guide, *args)
        return loss
    fn = elbo(model.model, model.guide)
    return lambda *args, progress: fn(*args)


def trace_parts(model, guide, *args, particles=None):
    """(log p(x|z), log p(z), guide trace, model trace) per example from Pyro's traces, written out:
    what a user writes for an objective Pyro has no class for."""
    if particles is not None:
        plate = pyro.plate("particles", particles, dim=-2)
        model, guide = plate(model), plate(guide)
    guide_trace = poutine.trace(guide).get_trace(*args)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    observed = sum(site["log_prob"] for site in model_trace.nodes.values()
                   if site["type"] == "sample" and site["is_observed"])
    latent = sum(site["log_prob"] for site in model_trace.nodes.values()
                 if site["type"] == "sample" and not site["is_observed"])
    return observed, latent, guide_trace, model_trace


# -- the package VAE: every network, the three objectives ---------------------------------------------
NETWORK_SHAPES = {"mlp": (12,), "conv": (1, 8, 8), "gated": (12,), "gated-conv": (1, 8, 8)}


@pytest.mark.parametrize("network", sorted(NETWORK_SHAPES))
@pytest.mark.parametrize("loss, elbo", [
    ("meanfield", lambda: TraceMeanField_ELBO(max_plate_nesting=1)),
    ("trace", lambda: Trace_ELBO(max_plate_nesting=1)),
    ("iwae", lambda: RenyiELBO(alpha=0, num_particles=3, vectorize_particles=True, max_plate_nesting=1)),
])
def test_fit_equals_pyros_loop_for_every_network_and_objective(network, loss, elbo):
    shape = NETWORK_SHAPES[network]
    x = binary(40, shape)
    torch.manual_seed(0)
    hidden = (16,) if network != "gated-conv" else (8,)
    vae = pyrovae.VAE(shape, latent_dim=2, hidden=hidden, network=network)
    fitted = fit_copy(vae, x, loss=loss, num_particles=3 if loss == "iwae" else 1)
    looped = copy.deepcopy(vae)
    plain_loop(looped, x, module_loss(elbo(), looped))
    assert_same_parameters(fitted, looped)


# -- every guide family ---------------------------------------------------------------------------------
@pytest.mark.parametrize("guide, loss, elbo", [
    ("lowrank", "trace", lambda: Trace_ELBO(max_plate_nesting=1)),
    ("planar", "trace", lambda: Trace_ELBO(max_plate_nesting=1)),
    ("iaf", "trace", lambda: Trace_ELBO(max_plate_nesting=1)),
    ("lowrank", "iwae", lambda: RenyiELBO(alpha=0, num_particles=4, vectorize_particles=True, max_plate_nesting=1)),
    ("planar", "iwae", lambda: RenyiELBO(alpha=0, num_particles=4, vectorize_particles=True, max_plate_nesting=1)),
    ("iaf", "iwae", lambda: RenyiELBO(alpha=0, num_particles=4, vectorize_particles=True, max_plate_nesting=1)),
])
def test_fit_equals_pyros_loop_for_every_guide(guide, loss, elbo):
    x = binary(40, (12,))
    torch.manual_seed(0)
    vae = pyrovae.VAE((12,), latent_dim=3, hidden=(16,), guide=guide)
    fitted = fit_copy(vae, x, loss=loss, num_particles=4 if loss == "iwae" else 1)
    looped = copy.deepcopy(vae)
    plain_loop(looped, x, module_loss(elbo(), looped))
    assert_same_parameters(fitted, looped)


def test_fit_equals_the_closed_form_kl_loop_for_the_lowrank_guide():
    """loss='meanfield' with the low-rank guide: Pyro's TraceMeanField_ELBO has no KL(LowRankMVN ||
    Normal) registered, so the loop writes it with torch's KL between two low-rank Gaussians."""
    x = torch.randn(40, 7)
    torch.manual_seed(0)
    vae = pyrovae.VAE(7, latent_dim=3, hidden=(), likelihood={"kind": "gaussian", "scale": 0.5}, guide="lowrank")
    fitted = fit_copy(vae, x, loss="meanfield")
    looped = copy.deepcopy(vae)

    def loss(xb, progress):
        observed, _, guide_trace, _ = trace_parts(looped.model, looped.guide, xb)
        q = guide_trace.nodes["z"]["fn"]
        zero = torch.zeros_like(q.loc)
        prior = torch.distributions.LowRankMultivariateNormal(zero, zero[..., None], torch.ones_like(q.loc))
        p_q = torch.distributions.LowRankMultivariateNormal(q.loc, q.cov_factor, q.cov_diag)
        return -(observed - torch.distributions.kl_divergence(p_q, prior)).sum()

    plain_loop(looped, x, loss)
    assert_same_parameters(fitted, looped)


# -- the gradient estimators Pyro has no class for: STL and DReG, written out from the traces -----------------
def stopped_log_q(vae, x, z):
    """log q(z|x) with every parameter of q stopped, the gradient through z kept: the guide's
    family evaluated by a frozen copy of it, at the encoder's outputs detached."""
    if vae.posterior.needs_context:
        h = vae.encoder.features(x).detach()
        loc, scale = (t.detach() for t in vae.encoder.heads(h))
    else:
        h = None
        loc, scale = (t.detach() for t in vae.encoder(x))
    frozen = copy.deepcopy(vae.posterior).requires_grad_(False)
    return frozen(loc, scale, h).log_prob(z)


GUIDES_WITH_AN_INVERSE = ["meanfield", "lowrank", "iaf"]  # planar's density is known at its own draws only


@pytest.mark.parametrize("guide", GUIDES_WITH_AN_INVERSE)
@pytest.mark.parametrize("loss, particles", [("trace", 1), ("iwae", 4)])
def test_fit_with_stl_equals_the_written_out_sticking_the_landing_loop(loss, particles, guide):
    """Roeder et al.: log q(z|x) enters through z only."""
    x = binary(40, (12,))
    torch.manual_seed(0)
    vae = pyrovae.VAE((12,), latent_dim=3, hidden=(16,), guide=guide)
    fitted = fit_copy(vae, x, loss=loss, num_particles=particles, estimator="stl")
    looped = copy.deepcopy(vae)

    def stl_loss(xb, progress):
        k = particles if loss == "iwae" else None
        observed, latent, guide_trace, _ = trace_parts(looped.model, looped.guide, xb, particles=k)
        log_w = observed + latent - stopped_log_q(looped, xb, guide_trace.nodes["z"]["value"])
        if loss == "iwae":
            return -(torch.logsumexp(log_w, 0) - math.log(particles)).sum()
        return -log_w.sum()

    plain_loop(looped, x, stl_loss)
    assert_same_parameters(fitted, looped)


@pytest.mark.parametrize("guide", GUIDES_WITH_AN_INVERSE)
def test_fit_with_dreg_equals_the_written_out_doubly_reparameterized_loop(guide):
    """Tucker et al.: the guide's gradient sum_k w~_k^2 d log w_k / dz dz/dphi (log q stopped),
    the decoder's the IWAE bound's own; each set by autograd.grad on its own parameters."""
    x, particles = binary(40, (12,)), 4
    torch.manual_seed(0)
    vae = pyrovae.VAE((12,), latent_dim=3, hidden=(16,), guide=guide)
    fitted = fit_copy(vae, x, loss="iwae", num_particles=particles, estimator="dreg")
    looped = copy.deepcopy(vae)
    decoder = list(looped.decoder.parameters())
    guide_side = list(looped.encoder.parameters()) + list(looped.posterior.parameters())

    def dreg(xb, progress):
        observed, latent, guide_trace, _ = trace_parts(looped.model, looped.guide, xb, particles=particles)
        site = guide_trace.nodes["z"]
        log_w = observed + latent - site["fn"].log_prob(site["value"])
        log_w_stopped_q = observed + latent - stopped_log_q(looped, xb, site["value"])
        iwae = (torch.logsumexp(log_w, 0) - math.log(particles)).sum()
        weights = torch.softmax(log_w.detach(), 0)
        surrogate = (weights ** 2 * log_w_stopped_q).sum()
        for parameters, objective in ((decoder, iwae), (guide_side, surrogate)):
            grads = torch.autograd.grad(-objective, parameters, retain_graph=True, allow_unused=True)
            for p, g in zip(parameters, grads):
                p.grad = g
        return None

    plain_loop(looped, x, dreg)
    assert_same_parameters(fitted, looped)


# -- the KL warm-up: fit's per-step weight, written out -------------------------------------------------
def test_fit_with_a_kl_warm_up_equals_the_loop_that_weights_the_latent_term_per_step():
    """beta = min(1, epochs done / warmup), epochs done counted in steps (epoch + step / steps)."""
    x = binary(40, (12,))
    torch.manual_seed(0)
    vae = pyrovae.VAE((12,), latent_dim=2, hidden=(16,))
    warmup = 1.5
    fitted = fit_copy(vae, x, loss="trace", warmup_epochs=warmup, epochs=3)
    looped = copy.deepcopy(vae)

    def warm(xb, progress):
        observed, latent, guide_trace, _ = trace_parts(looped.model, looped.guide, xb)
        site = guide_trace.nodes["z"]
        beta = min(1.0, progress / warmup)
        return -(observed + beta * (latent - site["fn"].log_prob(site["value"]))).sum()

    plain_loop(looped, x, warm, epochs=3)
    assert_same_parameters(fitted, looped)


# -- the other optimizers --------------------------------------------------------------------------------
@pytest.mark.parametrize("name, optimizer", [("adamax", torch.optim.Adamax), ("rmsprop", torch.optim.RMSprop)])
def test_fit_equals_the_loop_with_each_optimizer(name, optimizer):
    x = binary(40, (12,))
    torch.manual_seed(0)
    vae = pyrovae.VAE((12,), latent_dim=2, hidden=(16,))
    fitted = fit_copy(vae, x, loss="trace", optimizer=name, lr=1e-3)
    looped = copy.deepcopy(vae)
    plain_loop(looped, x, module_loss(Trace_ELBO(max_plate_nesting=1), looped), lr=1e-3, optimizer=optimizer)
    assert_same_parameters(fitted, looped)


# -- the other families ---------------------------------------------------------------------------------
@pytest.mark.parametrize("loss, elbo", [
    ("trace", lambda: Trace_ELBO(max_plate_nesting=1)),
    ("iwae", lambda: RenyiELBO(alpha=0, num_particles=3, vectorize_particles=True, max_plate_nesting=1)),
])
@pytest.mark.parametrize("guide", ["meanfield", "iaf"])
def test_fit_equals_pyros_loop_for_the_two_layer_vae(loss, elbo, guide):
    x = binary(40, (12,))
    torch.manual_seed(0)
    hvae = HVAE((12,), latent_dim=2, hidden=(10,), middle_dim=3, middle_hidden=(6,), guide=guide)
    fitted = fit_copy(hvae, x, loss=loss, num_particles=3 if loss == "iwae" else 1)
    looped = copy.deepcopy(hvae)
    plain_loop(looped, x, module_loss(elbo(), looped))
    assert_same_parameters(fitted, looped)


@pytest.mark.parametrize("guide", ["meanfield", "lowrank", "planar"])
def test_fit_equals_pyros_loop_for_the_quadrant_cvae_and_its_baseline(guide):
    """The CVAE's ELBO and its baseline network's, each Pyro's Trace_ELBO, summed in one step."""
    x = binary(40, (1, 6, 6))
    torch.manual_seed(0)
    cvae = CVAE((1, 6, 6), latent_dim=2, hidden=(16,), baseline_hidden=(8,), guide=guide)
    fitted = fit_copy(cvae, x, loss="trace")
    looped = copy.deepcopy(cvae)
    main = Trace_ELBO(max_plate_nesting=1)(looped.model, looped.guide)
    baseline = Trace_ELBO(max_plate_nesting=1)(looped.baseline_model, looped.baseline_guide)
    plain_loop(looped, x, lambda xb, progress: main(xb) + baseline(xb))
    assert_same_parameters(fitted, looped)


def test_fit_equals_pyros_loop_for_the_label_cvae():
    x, y = binary(40, (12,)), torch.arange(40) % 3
    torch.manual_seed(0)
    cvae = CVAE((12,), latent_dim=2, hidden=(16,), condition="label", num_classes=3)
    fitted = fit_copy(cvae, x, targets=y, loss="meanfield")
    looped = copy.deepcopy(cvae)
    plain_loop(looped, x, module_loss(TraceMeanField_ELBO(max_plate_nesting=1), looped), labels=y)
    assert_same_parameters(fitted, looped)


@pytest.mark.parametrize("guide", ["meanfield", "iaf"])
def test_fit_equals_pyros_ss_vae_loop_for_m2(guide):
    """Pyro's ss_vae_M2 recipe: TraceEnum_ELBO on each unlabelled batch (y summed out), then the
    labelled batch due after it, by Trace_ELBO with y observed and by the classifier term alpha log
    q(y|x), each a step of its own. The labelled batches follow fit's documented schedule (batch j
    after unlabelled step j * (steps // labelled batches), each pass's order from
    SeedSequence([seed, epoch, 0x5EED, pass]))."""
    x, y = binary(40, (12,)), torch.arange(40) % 3
    torch.manual_seed(0)
    m2 = M2((12,), latent_dim=2, hidden=(10,), num_classes=3, guide=guide)
    alpha, labels = 46.0, 12
    fitted = fit_copy(m2, x, targets=y, loss="trace", labels=labels, aux_weight=alpha)
    looped = copy.deepcopy(m2)
    # the labelled subset fit draws (class-balanced by the seed), taken as given
    index = balanced_labelled_subset(y.numpy(), labels, 3, SEED)
    labelled_x, labelled_y = x[index], y[index]
    unlabelled = TraceEnum_ELBO(max_plate_nesting=1)(looped.model, looped.guide)
    supervised = Trace_ELBO(max_plate_nesting=1)(looped.model, looped.guide)
    classifier = Trace_ELBO(max_plate_nesting=1)(looped.classifier_model, looped.classifier_guide)
    per_batch = min(BATCH, labels)
    labelled_batches = math.ceil(labels / per_batch)

    def labelled_steps(epoch, step, steps, opt):
        interval = max(1, steps // labelled_batches)
        if step % interval or step // interval >= labelled_batches:
            return
        j = step // interval
        order_seed = int(np.random.SeedSequence([SEED, epoch, 0x5EED, 0]).generate_state(1)[0])
        order = torch.randperm(labels, generator=torch.Generator().manual_seed(order_seed))
        pick = order[j * per_batch:(j + 1) * per_batch]
        for loss in (lambda: supervised(labelled_x[pick], labelled_y[pick]),
                     lambda: alpha * classifier(labelled_x[pick], labelled_y[pick])):
            opt.zero_grad(set_to_none=True)
            loss().backward()
            opt.step()

    plain_loop(looped, x, lambda xb, progress: unlabelled(xb), on_step=labelled_steps)
    assert_same_parameters(fitted, looped)
