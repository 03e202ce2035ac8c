"""ProdLDA (Srivastava & Sutton 2017) written as Pyro's ProdLDA tutorial writes it, trained by Pyro's
own SVI loop, then weighed by pyrovae: each held-out document's log p(w) by importance sampling
with its Pareto k, and the held-out per-word perplexity, which the tutorial does not report.

The program is the user's (a document plate, a logistic-normal latent per document, the word
counts under a Multinomial); pyrovae reads its sites from the traces. Its batch norms and
``softmax(dim=1)`` read the documents' dimension, so pyrovae draws its samples as repeats of the
batch (the diagnostics say so). The corpus is drawn from an LDA here (no download); give your own
document-term matrix with ``--counts counts.npz`` (an array ``counts``, documents x vocabulary).

    python examples/prodlda.py --epochs 50
"""

import argparse
import json

import numpy as np
import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F
from smoke import budget

import pyrovae


class ProdLDAEncoder(nn.Module):
    """The tutorial's encoder: softplus layers, dropout, batch-normed loc and log-variance."""

    def __init__(self, vocab_size, num_topics, hidden, dropout):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc1 = nn.Linear(vocab_size, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fcmu = nn.Linear(hidden, num_topics)
        self.fclv = nn.Linear(hidden, num_topics)
        self.bnmu = nn.BatchNorm1d(num_topics, affine=False)
        self.bnlv = nn.BatchNorm1d(num_topics, affine=False)

    def forward(self, inputs):
        h = F.softplus(self.fc1(inputs))
        h = self.drop(F.softplus(self.fc2(h)))
        logtheta_loc = self.bnmu(self.fcmu(h))
        logtheta_logvar = self.bnlv(self.fclv(h))
        return logtheta_loc, (0.5 * logtheta_logvar).exp()


class ProdLDADecoder(nn.Module):
    """The tutorial's decoder: a product of experts, softmax(BatchNorm(beta theta)) over the words."""

    def __init__(self, vocab_size, num_topics, dropout, affine=False):
        super().__init__()
        self.beta = nn.Linear(num_topics, vocab_size, bias=False)
        self.bn = nn.BatchNorm1d(vocab_size, affine=affine)
        self.drop = nn.Dropout(dropout)

    def forward(self, inputs):
        inputs = self.drop(inputs)
        return F.softmax(self.bn(self.beta(inputs)), dim=1)


class ProdLDA(nn.Module):
    """logtheta_d ~ N(0, I), theta_d = softmax(logtheta_d), w_d ~ Multinomial(softmax(BN(beta theta_d)));
    the guide q(logtheta_d | w_d) a diagonal Normal from the encoder. The tutorial's decoder batch
    norm has no affine part, so each word's logit is standardized over the documents: no word is
    more frequent than another on average. ``affine_decoder=True`` learns a scale and a shift per
    word (its background frequency)."""

    def __init__(self, vocab_size=30, num_topics=4, hidden=32, dropout=0.2, affine_decoder=False):
        super().__init__()
        self.vocab_size, self.num_topics = vocab_size, num_topics
        self.encoder = ProdLDAEncoder(vocab_size, num_topics, hidden, dropout)
        self.decoder = ProdLDADecoder(vocab_size, num_topics, dropout, affine_decoder)

    def model(self, docs):
        pyro.module("decoder", self.decoder)
        with pyro.plate("documents", docs.shape[0]):
            logtheta_loc = docs.new_zeros((docs.shape[0], self.num_topics))
            logtheta_scale = docs.new_ones((docs.shape[0], self.num_topics))
            logtheta = pyro.sample("logtheta", dist.Normal(logtheta_loc, logtheta_scale).to_event(1))
            theta = F.softmax(logtheta, -1)
            count_param = self.decoder(theta)
            total_count = int(docs.sum(-1).max())
            pyro.sample("obs", dist.Multinomial(total_count, count_param), obs=docs)

    def guide(self, docs):
        pyro.module("encoder", self.encoder)
        with pyro.plate("documents", docs.shape[0]):
            logtheta_loc, logtheta_scale = self.encoder(docs)
            pyro.sample("logtheta", dist.Normal(logtheta_loc, logtheta_scale).to_event(1))

    def beta(self):
        """The topics' word weights (num_topics, vocab_size), as the tutorial reads them."""
        return self.decoder.beta.weight.detach().T


def topic_corpus(num_docs=400, vocab_size=30, num_topics=4, seed=0):
    """Word counts (D, V) of documents drawn from an LDA: topics concentrated on a few words each
    (Dirichlet(0.1)), a Dirichlet(0.3) mix of topics per document, 20-60 words a document."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():  # a Dirichlet draws from the global generator only
        torch.manual_seed(seed)
        topics = torch.distributions.Dirichlet(torch.full((vocab_size,), 0.1)).sample((num_topics,))
        mixes = torch.distributions.Dirichlet(torch.full((num_topics,), 0.3)).sample((num_docs,))
    lengths = torch.randint(20, 61, (num_docs,), generator=generator)
    docs = torch.zeros(num_docs, vocab_size)
    for d in range(num_docs):
        words = torch.multinomial(mixes[d] @ topics, int(lengths[d]), replacement=True, generator=generator)
        docs[d] = torch.bincount(words, minlength=vocab_size).float()
    return docs


def train_as_the_tutorial_does(net, docs, epochs=30, batch_size=32, lr=1e-2, seed=0):
    """The tutorial's loop: SVI with Trace_ELBO and pyro.optim.Adam over shuffled mini-batches."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    svi = pyro.infer.SVI(net.model, net.guide, pyro.optim.Adam({"lr": lr}), pyro.infer.Trace_ELBO())
    net.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(docs)).split(batch_size):
            if len(batch) > 1:  # a batch norm needs two documents
                svi.step(docs[batch])
    return net.eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--topics", type=int, default=4)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--counts", help="an .npz holding 'counts' (documents x vocabulary); default: an LDA corpus")
    parser.add_argument("--held-out", type=float, default=0.25, help="the share of documents held out")
    parser.add_argument("--affine-decoder", action="store_true",
                        help="a scale and shift per word after the decoder's batch norm (the tutorial has none)")
    args = parser.parse_args()
    if args.counts:
        docs = torch.as_tensor(np.load(args.counts)["counts"], dtype=torch.float32)
    else:
        docs = topic_corpus(budget(1000, 120))
    split = int(round(len(docs) * (1 - args.held_out)))
    train_docs, held_out = docs[:split], docs[split:]
    torch.manual_seed(0)
    net = ProdLDA(vocab_size=docs.shape[1], num_topics=args.topics, affine_decoder=args.affine_decoder)
    train_as_the_tutorial_does(net, train_docs, epochs=budget(args.epochs, 2))
    num_samples = budget(args.num_samples, 50)
    log_pw, stderr, diagnostics = pyrovae.log_likelihood(net, held_out, num_samples, seed=0, return_stderr=True,
                                                         return_diagnostics=True)
    summary = diagnostics.summary()
    unigram = (train_docs.sum(0) + 1) / (train_docs.sum() + train_docs.shape[1])  # add-one smoothed, for scale
    results = {
        "held_out_documents": len(held_out),
        "mean_log_p_w": float(log_pw.mean()),
        "max_stderr": float(stderr.max()),
        "perplexity": pyrovae.estimate.perplexity(log_pw, held_out),
        "unigram_perplexity": float(torch.exp(-(held_out * unigram.log()).sum() / held_out.sum())),
        "vocabulary": docs.shape[1],
        "pareto_k_above_0.7_share": summary["pareto_k_above_0.7_share"],
        "weighting": summary["weighting"],
    }
    print(f"{len(held_out)} held-out documents, K = {num_samples}: mean log p(w) = {results['mean_log_p_w']:.2f} "
          f"nats (largest stderr {results['max_stderr']:.3f}); per-word perplexity {results['perplexity']:.2f} "
          f"(add-one unigram {results['unigram_perplexity']:.2f}, uniform {results['vocabulary']}); "
          f"Pareto k > 0.7 for {results['pareto_k_above_0.7_share']:.0%}; samples drawn as "
          f"{results['weighting']['samples']}")
    for k, weights in enumerate(net.beta()):
        print(f"topic {k}: words {weights.topk(5).indices.tolist()}")
    with open("prodlda_held_out.json", "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
