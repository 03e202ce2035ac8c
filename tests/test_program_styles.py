"""Pyro programs in the styles Pyro's examples write them, each weighed by pyrovae's estimators and
held to an importance sampler written out by hand from the same networks with torch.distributions
(within the Monte Carlo error of both):

- a conditional program (examples/cvae): its observed site holds the unknown pixels only, picked by
  boolean indexing, so the samples are drawn as repeats of the batch;
- a semi-supervised program (examples/vae/ss_vae_M2.py): log p(x, y) with the label observed, and
  log p(x) with the label the guide samples summed exactly over its ten values;
- a deep Markov model (examples/dmm.py) on sequences of different lengths, masked: the masked steps
  change nothing;
- ProdLDA (the ProdLDA tutorial): per-document log p(w) and the held-out perplexity.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Multinomial

import pyrovae
from pyrovae.estimate import importance
from pyrovae.infer import trace_weight_parts
from pyro_style_programs import (PyroExampleDMM, PyroExampleMaskedCVAE, PyroExampleProdLDA, PyroExampleSSVAE, binary_data,
                                 dmm_arguments, dmm_reference_weights, logmeanexp_with_stderr,
                                 masked_cvae_reference_weights, prodlda_reference_weights, sequence_mask,
                                 ssvae_reference_log_joint, ssvae_reference_log_marginal, topic_corpus,
                                 train_prodlda_as_the_tutorial_does, train_ssvae_as_pyro_does, train_with_pyro_svi)


def _agree(ours, stderr, reference, reference_se, sigmas=5.0):
    return bool(((ours.double() - reference).abs() <= sigmas * (stderr.double() ** 2 + reference_se ** 2).sqrt()
                 + 1e-3).all())


# -- a conditional program with boolean-indexed observations ------------------------------------------

@pytest.fixture(scope="module")
def masked_cvae():
    images, _ = binary_data(n=160, dim=16)
    inputs = images.clone()
    inputs[:, 8:] = -1  # the bottom half unknown, as Pyro's example masks quadrants with -1
    net = train_with_pyro_svi(PyroExampleMaskedCVAE(x_dim=16), inputs, images, steps=200)
    return net, inputs, images


def test_a_conditional_program_with_boolean_indexed_observations_is_weighed_by_repeats(masked_cvae):
    net, xs, ys = masked_cvae
    with pytest.raises(IndexError):  # what the particle plate does to it: the reason for the repeats
        trace_weight_parts(net.model, net.guide, (xs[:4], ys[:4]), num_particles=2, estimator=None)
    ours, stderr, diagnostics = pyrovae.log_likelihood(net, xs[:30], 3000, seed=0, return_stderr=True,
                                                       return_diagnostics=True, args=(ys[:30],), batch_size=8)
    assert diagnostics.weighting == {"samples": "repeats of the batch"}
    assert diagnostics.summary()["weighting"] == {"samples": "repeats of the batch"}
    reference, reference_se = logmeanexp_with_stderr(masked_cvae_reference_weights(
        net, xs[:30], ys[:30], 3000, torch.Generator().manual_seed(5)))
    assert _agree(ours, stderr, reference, reference_se)
    with pytest.raises(ValueError, match="cannot take that dimension"):  # AIS's chains need the plate: said so
        pyrovae.ais_log_likelihood(net, xs[:4], ys[:4], num_chains=2, num_steps=5)
    check = pyrovae.check_bounds(net, xs[:20], ks=(1, 10, 100), args=(ys[:20],), seed=0, strict=True)
    assert check.ok and check.values[0] < check.values[-1]
    # the ELBO from the repeats equals the written-out one's mean
    elbo, elbo_se = pyrovae.elbo(net, xs[:30], 400, args=(ys[:30],), seed=1, return_stderr=True)
    hand = masked_cvae_reference_weights(net, xs[:30], ys[:30], 4000, torch.Generator().manual_seed(6))
    assert _agree(elbo, elbo_se, hand.mean(0), hand.std(0) / math.sqrt(4000))


# -- a semi-supervised program with a label the guide samples -----------------------------------------

@pytest.fixture(scope="module")
def ssvae():
    images, which = binary_data(n=300, dim=20, seed=1)
    labels = F.one_hot(which, 10).float()
    net = train_ssvae_as_pyro_does(PyroExampleSSVAE(x_dim=20), images, images[:40], labels[:40], steps=300)
    return net, images, labels


def test_a_semi_supervised_programs_label_is_summed_exactly_where_unobserved(ssvae):
    net, xs, ys = ssvae
    ours, stderr, diagnostics = pyrovae.log_likelihood(net, xs[:30], 2000, seed=0, return_stderr=True,
                                                       return_diagnostics=True)
    assert diagnostics.weighting == {"samples": "particle plate", "discrete_sites": {"y": "summed over 10 values"}}
    reference, reference_se = ssvae_reference_log_marginal(net, xs[:30], 2000, torch.Generator().manual_seed(2))
    assert _agree(ours, stderr, reference, reference_se)
    # labelled: log p(x, y), the label observed and not sampled by the guide
    joint, joint_se = pyrovae.log_likelihood(net, xs[:30], 2000, seed=0, return_stderr=True, args=(ys[:30],))
    hand_joint, hand_joint_se = logmeanexp_with_stderr(ssvae_reference_log_joint(net, xs[:30], ys[:30], 2000,
                                                                             torch.Generator().manual_seed(3)))
    assert _agree(joint, joint_se, hand_joint, hand_joint_se)
    assert bool((joint < ours).all())  # p(x, y) < p(x)
    check = pyrovae.check_bounds(net, xs[:20], ks=(1, 10), seed=0, strict=True)
    assert check.ok


def test_a_label_with_more_values_than_summed_is_sampled_from_the_guide_and_says_so(ssvae, monkeypatch):
    net, xs, _ = ssvae
    summed, summed_se = pyrovae.log_likelihood(net, xs[:20], 2000, seed=0, return_stderr=True)
    monkeypatch.setattr(importance, "MAX_SUMMED_VALUES", 5)
    sampled, sampled_se, diagnostics = pyrovae.log_likelihood(net, xs[:20], 2000, seed=0, return_stderr=True,
                                                              return_diagnostics=True)
    assert diagnostics.weighting["discrete_sites"] == {"y": "sampled from the guide"}
    assert _agree(sampled, sampled_se, summed.double(), summed_se.double())
    # summing removes the label's share of the variance
    assert float(summed_se.mean()) < float(sampled_se.mean())


# -- sequences of different lengths, masked --------------------------------------------------------------

@pytest.fixture(scope="module")
def dmm():
    generator = torch.Generator().manual_seed(0)
    num, steps, dim = 24, 6, 5
    lengths = torch.randint(2, steps + 1, (num,), generator=generator)
    lengths[0] = steps  # the longest sets the padded length
    walk = (torch.rand(num, steps, dim, generator=generator) < 0.2).float()
    sequences = (walk.cumsum(1) % 2) * sequence_mask(lengths, steps)[..., None]  # bits that flip now and then
    net = train_with_pyro_svi(PyroExampleDMM(input_dim=dim), *dmm_arguments(sequences, lengths), steps=150)
    return net, sequences, lengths


def test_a_deep_markov_models_per_sequence_log_likelihood_follows_its_masks(dmm):
    net, sequences, lengths = dmm
    args = dmm_arguments(sequences, lengths)
    ours, stderr = pyrovae.log_likelihood(net, sequences, 2000, args=args[1:], seed=0, return_stderr=True)
    reference, reference_se = logmeanexp_with_stderr(dmm_reference_weights(net, sequences, lengths, 2000,
                                                                        torch.Generator().manual_seed(4)))
    assert _agree(ours, stderr, reference, reference_se)
    # the masked steps change nothing: other bits where a sequence has ended, the same numbers
    noisy = torch.where(sequence_mask(lengths, sequences.size(1)).bool()[..., None], sequences,
                        (torch.rand(sequences.shape, generator=torch.Generator().manual_seed(9)) < 0.5).float())
    assert not torch.equal(noisy, sequences)
    again = pyrovae.log_likelihood(net, noisy, 2000, args=dmm_arguments(noisy, lengths)[1:], seed=0)
    assert torch.equal(again, ours)
    # a sequence padded in a batch is the sequence alone, unpadded (within the Monte Carlo error)
    short = int(torch.argmin(lengths))
    length = int(lengths[short])
    alone_sequence = sequences[short:short + 1, :length]
    alone, alone_se = pyrovae.log_likelihood(net, alone_sequence, 4000, seed=1, return_stderr=True,
                                             args=dmm_arguments(alone_sequence, lengths[short:short + 1])[1:])
    assert _agree(alone, alone_se, ours[short:short + 1].double(), stderr[short:short + 1].double())
    assert pyrovae.check_bounds(net, sequences, ks=(1, 10), args=args[1:], seed=0, strict=True).ok


# -- a topic model ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prodlda():
    docs = topic_corpus(300)
    net = train_prodlda_as_the_tutorial_does(PyroExampleProdLDA(), docs[:200], epochs=30)
    return net, docs[:200], docs[200:]


def test_prodlda_per_document_log_likelihood_and_held_out_perplexity(prodlda):
    net, _, held_out = prodlda
    ours, stderr, diagnostics = pyrovae.log_likelihood(net, held_out, 2000, seed=0, return_stderr=True,
                                                       return_diagnostics=True)
    assert diagnostics.weighting == {"samples": "repeats of the batch"}  # batch norms over the documents
    log_w = prodlda_reference_weights(net, held_out, 2000, torch.Generator().manual_seed(7))
    reference, reference_se = logmeanexp_with_stderr(log_w)
    # the stderr is to be trusted where Pareto k < 0.5 (PSIS's rule): those documents agree within it
    trusted = diagnostics.pareto_k < 0.5
    assert int(trusted.sum()) >= 30
    assert _agree(ours[trusted], stderr[trusted], reference[trusted], reference_se[trusted])
    # the ELBO, a plain mean of log w, agrees everywhere
    elbo, elbo_se = pyrovae.elbo(net, held_out, 200, seed=1, return_stderr=True)
    assert _agree(elbo, elbo_se, log_w.mean(0), log_w.std(0) / math.sqrt(len(log_w)))
    held_out_perplexity = pyrovae.estimate.perplexity(ours, held_out)
    assert 1 < held_out_perplexity < held_out.shape[1]  # better than 1/V a word
    assert held_out_perplexity == pytest.approx(pyrovae.estimate.perplexity(reference, held_out), rel=0.01)


def test_perplexity_of_a_known_unigram_model_is_its_per_word_cross_entropy():
    probs = torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64)
    docs = torch.tensor([[3.0, 1.0, 0.0, 2.0], [0.0, 4.0, 1.0, 1.0]])
    log_p = Multinomial(total_count=6, probs=probs).log_prob(docs.double())  # with the orderings' coefficient
    expected = math.exp(-float((docs.double() * probs.log()).sum()) / 12)
    assert pyrovae.estimate.perplexity(log_p, docs) == pytest.approx(expected, rel=1e-12)
    uniform = Multinomial(total_count=6, probs=torch.full((4,), 0.25, dtype=torch.float64)).log_prob(docs.double())
    assert pyrovae.estimate.perplexity(uniform, docs) == pytest.approx(4.0, rel=1e-12)
    with pytest.raises(ValueError, match="one row per log-likelihood"):
        pyrovae.estimate.perplexity(log_p[:1], docs)
    with pytest.raises(ValueError, match="whole numbers"):
        pyrovae.estimate.perplexity(log_p, docs + 0.5)
