r"""Per-word perplexity of a bag-of-words model from its per-document log-likelihoods.

A topic model (ProdLDA, LDA) scores a document's word counts w_d = (w_d1, ..., w_dV), N_d words in
all, under a Multinomial, whose log-probability carries the number of orderings of the words:

.. math::

    \log p(w_d) = \log \frac{N_d!}{\prod_v w_{dv}!} + \log p(\text{the words in one order}).

The perplexity of held-out documents is the exponent of minus the log-probability per word of the
words themselves (in one order, the coefficient removed), as Blei et al. (2003) and Srivastava &
Sutton (2017) report it:

.. math::

    \mathrm{perplexity} = \exp\Big(-\frac{\sum_d [\log p(w_d) - \log N_d! + \sum_v \log w_{dv}!]}{\sum_d N_d}\Big).

A model that puts probability 1/V on every word has perplexity V.
"""

import torch

__all__ = ["perplexity", "log_multinomial_coefficient"]


def log_multinomial_coefficient(counts: torch.Tensor) -> torch.Tensor:
    """log (N! / prod_v w_v!) per document of ``counts`` (D, V)."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    return torch.lgamma(counts.sum(-1) + 1) - torch.lgamma(counts + 1).sum(-1)


def perplexity(log_likelihood: torch.Tensor, counts: torch.Tensor, multinomial: bool = True) -> float:
    """The per-word perplexity of documents ``counts`` (D, V) whose log p(w_d) is ``log_likelihood``
    (D,) (an importance-sampled estimate, :func:`pyrovae.log_likelihood`); ``multinomial=False``
    where the log-likelihoods already score the words in order (no coefficient to remove)."""
    counts = torch.as_tensor(counts)
    log_likelihood = torch.as_tensor(log_likelihood, dtype=torch.float64).reshape(-1)
    if counts.dim() != 2 or len(counts) != len(log_likelihood):
        raise ValueError(f"counts must be (documents, vocabulary) with one row per log-likelihood "
                         f"({len(log_likelihood)}); got shape {tuple(counts.shape)}")
    if bool((counts < 0).any()) or not bool((counts == counts.round()).all()):
        raise ValueError("counts must be non-negative whole numbers (word counts)")
    words = float(counts.sum())
    if words == 0:
        raise ValueError("the documents hold no words: a perplexity needs at least one")
    per_order = log_likelihood - (log_multinomial_coefficient(counts) if multinomial else 0.0)
    return float(torch.exp(-per_order.sum() / words))
