"""The semi-supervised VAE M2 (Kingma et al. 2014) as a Pyro model and guide.

model:  y ~ Cat(1/C),  z ~ p(z),  x ~ likelihood(decoder(z, y))
guide:  y ~ q(y | x) = Cat(classifier(x))   (only where y is not observed),
        z ~ q(z | x, y) = Normal(mu(x, y), diag sigma(x, y)^2)

A labelled example observes y: its bound is L(x, y) = E_q(z|x,y)[log p(x, y, z) - log q(z|x,y)].
An unlabelled one sums y out exactly: U(x) = sum_y q(y|x) [L(x, y) - log q(y|x)], which Pyro
computes by parallel enumeration of the guide's y site (``config_enumerate`` +
``TraceEnum_ELBO``). Training maximizes sum_u U(x_u) + sum_l [L(x_l, y_l) + alpha log q(y_l|x_l)],
the last term (Kingma et al.'s auxiliary classification loss) being its own Pyro program,
``classifier_model``/``classifier_guide``, as in Pyro's ``ss_vae_M2.py``.

log p(x) = log sum_y p(x, y) is estimated by importance sampling over z for each class and an
exact sum over the classes: log w_k = logsumexp_y [log p(x, y, z_ky) - log q(z_ky | x, y)],
z_ky ~ q(z | x, y), whose mean over k is unbiased for p(x).
"""

import math
from typing import Any, Sequence, Union

import numpy as np
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import TraceEnum_ELBO, config_enumerate
from torch import nn

from ..fast.binarize import bernoulli_pixels
from ..guides import posterior
from ..infer.elbo import VAE_ELBO
from ..infer.weights import log_weight_parts
from .vae import VAE
from ..networks import ACTIVATIONS, MLPDecoder, MLPEncoder, _mlp, hidden_linears, init_normal
from ..protocol import ModelProtocol
from ..validation import require_positive_int
from .labels import balanced_labelled_subset, check_labels, concat_broadcast

__all__ = ["M2", "M2Loss", "StackedM2"]


class M2(VAE):
    """Kingma et al.'s M2; see the module docstring.

    :param hidden: hidden widths of the encoder q(z|x,y), the decoder p(x|y,z) and the classifier
        q(y|x).
    :param num_classes: C, the number of classes.
    :param init_std: where positive, the hidden layers' weights and biases are drawn from
        N(0, init_std^2), as in Pyro's ``ss_vae_M2.py`` (0.001); 0 keeps PyTorch's initialization.
    """

    semi_supervised = True
    training_defaults = {"loss": "trace"}  # TraceEnum_ELBO: y summed exactly, z by Monte Carlo
    selection_metric = "valid_accuracy"  # best.pt, early stopping: as Pyro's example selects
    plot_kinds = ("analogies", "classes", "curves")

    def check_labels(self, labels, num_examples):
        """``labels`` as class indices in [0, num_classes), shape (num_examples,), or a ValueError."""
        return check_labels(labels, num_examples, self.num_classes)

    def __init__(self, data_shape: Union[int, Sequence[int]], latent_dim: int = 50,
                 hidden: Union[int, Sequence[int]] = (500,), likelihood: Any = "bernoulli", prior: Any = "normal",
                 network: str = "mlp", name: str = "vae", activation: str = "relu", num_classes: int = 10,
                 init_std: float = 0.0, guide: Any = "meanfield", guide_args: dict = None):
        if network != "mlp":
            raise ValueError(f"m2 is built of MLPs; got network={network!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2; got {num_classes!r}")
        super().__init__(data_shape, latent_dim=latent_dim, hidden=hidden, likelihood=likelihood, prior=prior,
                         network=network, name=name, activation=activation)
        hidden = tuple(self.config["hidden"])
        act = ACTIVATIONS[activation]
        self.num_classes = num_classes
        self.encoder = MLPEncoder((self.data_dim + num_classes,), latent_dim, hidden, act)
        self.decoder = MLPDecoder(self.data_shape, latent_dim + num_classes, hidden, self.likelihood.num_params, act)
        self.classifier = _mlp([self.data_dim, *hidden, num_classes], act)
        if not (isinstance(init_std, (int, float)) and not isinstance(init_std, bool) and init_std >= 0):
            raise ValueError(f"init_std must be a number >= 0; got {init_std!r}")
        if init_std > 0:
            encoder_hidden = [m for m in self.encoder.body if isinstance(m, nn.Linear)]  # its heads are apart
            init_normal([*encoder_hidden, *hidden_linears(self.decoder.net), *hidden_linears(self.classifier)], init_std)
        self.config.update(model="m2", num_classes=num_classes, init_std=float(init_std))
        self.bind_guide(guide, guide_args)  # q(z | x, y) on the encoder of (x, y)

    # -- the Pyro programs ------------------------------------------------------------------------
    def model(self, x: torch.Tensor, y: torch.Tensor = None) -> None:
        """p(x, y, z) = p(y) p(z) p(x | y, z); y observed where given."""
        self.check_data(x)
        self.register_with_pyro()
        onehot = None if y is None else self.one_hot(x, y)
        uniform = torch.full((self.num_classes,), 1.0 / self.num_classes, device=x.device, dtype=x.dtype)
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", self.prior())
            y = pyro.sample("y", dist.OneHotCategorical(probs=uniform), obs=onehot)
            pyro.sample("x", self.likelihood(self.decoder(concat_broadcast(z, y))), obs=x)

    @config_enumerate
    def guide(self, x: torch.Tensor, y: torch.Tensor = None) -> None:
        """q(y | x) q(z | x, y); the y site (unlabelled data only) enumerated in parallel."""
        self.check_data(x)
        self.register_with_pyro()
        flat = x.flatten(1)
        with pyro.plate("data", x.shape[0], dim=-1):
            if y is None:
                y = pyro.sample("y", dist.OneHotCategorical(logits=self.classifier(flat)))
            else:
                y = self.one_hot(x, y)
            q, infer = posterior(self.posterior, self.encoder, concat_broadcast(flat, y))
            pyro.sample("z", q, infer=infer)

    def classifier_model(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """y ~ q(y | x), observed: its log density is the auxiliary classification term."""
        self.check_data(x)
        self.register_with_pyro()
        onehot = self.one_hot(x, y)
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("y", dist.OneHotCategorical(logits=self.classifier(x.flatten(1))), obs=onehot)

    def classifier_guide(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """The classifier term has no latent variable: an empty guide."""

    def one_hot(self, x, y):
        return F.one_hot(check_labels(y, len(x), self.num_classes), self.num_classes).to(x.dtype)

    # -- numbers ------------------------------------------------------------------------------------
    def class_log_weights(self, x, num_samples=None):
        """log p(x, y, z) - log q(z | x, y) with y set to each class in turn: shape (C, K, N)
        (``(C, N)`` without ``num_samples``), from one trace of Pyro's program over the C copies of
        the batch, each labelled with its class (the examples are independent under the data
        plate, so a copy's weights are those of its class alone; one trace instead of C)."""
        num_classes, n = self.num_classes, len(x)
        copies = x.repeat(num_classes, *([1] * (x.dim() - 1)))
        labels = torch.arange(num_classes, device=x.device).repeat_interleave(n)
        log_w = log_weight_parts(self.model, self.guide, copies, labels, num_particles=num_samples).log_weights
        if num_samples is None:
            return log_w.reshape(num_classes, n)
        return log_w.reshape(num_samples, num_classes, n).transpose(0, 1)

    def log_importance_weights(self, x: torch.Tensor, num_samples: int) -> torch.Tensor:
        """(K, N) weights of p(x), y summed exactly: logsumexp over classes of the per-class weights."""
        return torch.logsumexp(self.class_log_weights(x, num_samples), 0)

    def elbo_terms(self, x: torch.Tensor):
        """Per example, y summed under q(y|x): ``reconstruction`` sum_y q(y|x) E_q[log p(x|y,z)] and
        ``kl`` KL(q(y, z | x) || p(y, z)), closed form in z where the prior has one."""
        log_q_y = torch.log_softmax(self.classifier(x.flatten(1)), -1).T  # (C, N)
        recon, kl = [], []
        for c in range(self.num_classes):
            labels = torch.full((len(x),), c, dtype=torch.long, device=x.device)
            parts = log_weight_parts(self.model, self.guide, x, labels, analytic_kl=True)
            log_p_y = -math.log(self.num_classes)
            recon.append(parts.observed - log_p_y)  # the observed y site's log p(y) belongs to the KL
            kl.append(parts.kl + log_q_y[c] - log_p_y)
        q_y = log_q_y.exp()
        return (q_y * torch.stack(recon)).sum(0), (q_y * torch.stack(kl)).sum(0)

    @torch.no_grad()
    def extra_metrics(self, x, labels, num_samples):
        """The test accuracy of q(y | x) where the labels are known."""
        if labels is None:
            return {}
        predicted = torch.cat([self.classify(x[i:i + 4096]) for i in range(0, len(x), 4096)])
        return {"accuracy": float((predicted == labels.to(predicted.device)).double().mean())}

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """argmax_y q(y | x)."""
        return self.classifier(self.check_data(x).flatten(1)).argmax(-1)

    @torch.no_grad()
    def sample(self, num_samples: int, mean: bool = True, condition: torch.Tensor = None) -> torch.Tensor:
        """z ~ p(z) and y = ``condition`` (labels, shape (num_samples,)) or y ~ p(y); E[x | y, z]
        or a draw of x."""
        z = self.prior().sample((num_samples,))
        labels = (torch.randint(self.num_classes, (num_samples,), device=z.device) if condition is None else
                  check_labels(torch.as_tensor(condition, device=z.device), num_samples, self.num_classes))
        params = self.decoder(torch.cat([z, F.one_hot(labels, self.num_classes).to(z.dtype)], -1))
        return self.likelihood.mean(params) if mean else self.likelihood(params).sample()

    @torch.no_grad()
    def analogies(self, x: torch.Tensor) -> torch.Tensor:
        """Kingma et al.'s Figure 1: the style z = mu(x, argmax q(y|x)) of each example decoded
        with every class: ``(N, C, *data_shape)``."""
        x = self.check_data(x)
        flat = x.flatten(1)
        y = F.one_hot(self.classify(x), self.num_classes).to(x.dtype)
        z = self.encoder(torch.cat([flat, y], -1))[0]
        classes = torch.eye(self.num_classes, device=x.device, dtype=x.dtype)
        inputs = torch.cat([z[:, None].expand(-1, self.num_classes, -1), classes.expand(len(x), -1, -1)], -1)
        return self.likelihood.mean(self.decoder(inputs))

    def encode(self, x, y=None):
        flat = self.check_data(x).flatten(1)
        y = F.one_hot(self.classify(x) if y is None else y, self.num_classes).to(x.dtype)
        return self.encoder(torch.cat([flat, y], -1))

    def decode(self, z, y=None):
        y = torch.zeros(*z.shape[:-1], dtype=torch.long, device=z.device) if y is None else y
        return self.likelihood.mean(self.decoder(torch.cat([z, F.one_hot(y, self.num_classes).to(z.dtype)], -1)))

    def make_objective(self, loss, num_particles, kl_schedule, estimator, train_x, train_y, labels, seed,
                       aux_weight, batch_size, binarize="none", every_batch_classifier_step=False, labelled_repeats=1):
        """The training objective of a semi-supervised run (see :class:`M2Loss`)."""
        return M2Loss(self, loss, num_particles, kl_schedule, estimator, train_x, train_y, labels, seed, aux_weight,
                      batch_size, binarize, every_batch_classifier_step, labelled_repeats)


class M2Loss(nn.Module):
    """Kingma et al.'s objective
    J = sum over unlabelled U(x_u) + sum over labelled [L(x_l, y_l) + alpha log q(y_l | x_l)],
    trained as Pyro's ``ss_vae_M2.py`` trains it: every training image is an unlabelled example
    (its label unused, as in Kingma et al.), and the labelled examples come as batches of their
    own, each labelled example once an epoch, spread evenly over the epoch's unlabelled steps.

    - ``forward(x)``: the loss of a step on an unlabelled batch, -sum U(x), by Pyro's
      ``TraceEnum_ELBO`` (z by Monte Carlo, y summed exactly under q(y|x));
    - ``interleaved_losses(epoch, step, steps_per_epoch)``: after the unlabelled step ``step``,
      the labelled batch due there as two steps of their own, as Pyro's two SVI objects take them:
      -sum L(x_l, y_l) (the trace ELBO with y observed), then -alpha sum log q(y_l | x_l) (the
      observed site of ``classifier_model``).

    Each loss is a sum over its batch (no 1/N scaling), so alpha means what Pyro's
    ``aux_loss_multiplier`` means (46 there). Adam sees the labelled gradients at full size; a
    single step that mixes the labelled terms into the unlabelled loss, weighted by how rarely
    they come, drowns them (the note in docs/models.md).

    :param labels: the number of labelled examples (class-balanced, drawn by ``seed``), or None
        for every training label.
    :param binarize: ``"dynamic"`` draws each labelled batch's pixels afresh, as the trainer
        draws the unlabelled ones.
    :param labelled_repeats: passes over the labelled examples an epoch (1 in Pyro's recipe: at
        100 labels, one labelled batch an epoch), spread evenly over its unlabelled steps; at most
        one labelled batch follows each unlabelled step.
    :param every_batch_classifier_step: take the classifier's step after every batch, as Pyro's
        example runs its second SVI object: on an unlabelled batch its loss is empty, but
        ``SVI.step`` still steps every parameter (``pyro.module`` puts them all in its trace), with
        the zero gradient ``zero_grads`` left, so Adam moves each once more along its running mean;
        on a labelled batch every step moves every parameter so (q(y|x) in the ELBO step, the rest
        in the classifier's). Off: the classifier's step on labelled batches alone, and each step
        moves only the parameters its loss reaches.
    """

    def __init__(self, m2, loss, num_particles, kl_schedule, estimator, train_x, train_y, labels, seed, aux_weight,
                 batch_size, binarize="none", every_batch_classifier_step=False, labelled_repeats=1):
        super().__init__()
        if loss != "trace" or estimator != "standard":
            raise ValueError(f"m2 trains with loss='trace' (TraceEnum_ELBO: y summed exactly, z by Monte Carlo) "
                             f"and estimator='standard'; got loss={loss!r}, estimator={estimator!r}")
        if kl_schedule.beta != 1 or kl_schedule.warmup_epochs or kl_schedule.free_bits:
            raise ValueError("m2 trains on the bound itself: beta, warmup_epochs and free_bits do not apply")
        if train_y is None:
            raise ValueError("m2 needs the training labels (a dataset with labels, or (images, labels) pairs); "
                             "--labels picks how many of them it sees")
        train_y = check_labels(train_y, len(train_x), m2.num_classes)
        require_positive_int(num_particles, "num_particles")
        if labels is None:
            index = torch.arange(len(train_x))
        else:
            index = balanced_labelled_subset(train_y.cpu().numpy(), labels, m2.num_classes, seed)
        self.vae, self.kl_schedule, self.kl_weight = m2, kl_schedule, 1.0
        self.register_buffer("labelled_x", train_x[index.to(train_x.device)], persistent=False)
        self.register_buffer("labelled_y", train_y[index.to(train_y.device)], persistent=False)
        require_positive_int(labelled_repeats, "labelled_repeats")
        self.labelled_batch = min(batch_size, len(index))
        self.batches_per_pass = math.ceil(len(index) / self.labelled_batch)
        self.labelled_batches = self.batches_per_pass * labelled_repeats
        self.aux_weight = float(aux_weight)
        self.seed, self.dynamic = int(seed), binarize == "dynamic"
        self.every_batch = bool(every_batch_classifier_step)
        self.elbo = TraceEnum_ELBO(max_plate_nesting=1, num_particles=num_particles, vectorize_particles=True)
        self.supervised = VAE_ELBO("trace", num_particles)  # y observed: nothing to enumerate

    def set_progress(self, epochs_done):
        """The bound has no schedule."""

    def forward(self, x):
        """-sum over the batch of U(x): the loss of an unlabelled step."""
        return self.elbo.differentiable_loss(self.vae.model, self.vae.guide, x)

    def supervised_loss(self, x, y):
        """-sum_l L(x_l, y_l)."""
        return self.supervised.differentiable_loss(self.vae.model, self.vae.guide, x, y)

    def classifier_loss(self, x, y):
        """-alpha sum_l log q(y_l | x_l)."""
        return -self.aux_weight * log_weight_parts(self.vae.classifier_model, self.vae.classifier_guide, x,
                                                   y).observed.sum()

    def labelled_batch_at(self, epoch, step, steps_per_epoch):
        """Which of the epoch's labelled batches follows unlabelled step ``step`` (None if none):
        batch j after step j * interval, interval = steps_per_epoch // (number of batches)."""
        interval = max(1, steps_per_epoch // self.labelled_batches)
        if step % interval or step // interval >= self.labelled_batches:
            return None
        return step // interval

    def interleaved_losses(self, epoch, step, steps_per_epoch):
        """The steps of their own that follow unlabelled step ``step``, each optimized in turn as
        (loss, every_parameter): ``loss`` a zero-argument callable, ``every_parameter`` whether
        the parameters its loss does not reach step too (with a zero gradient; see
        ``every_batch_classifier_step``). The labelled batch due there, or nothing."""
        batch = self.labelled_batch_at(epoch, step, steps_per_epoch)
        if batch is None:
            return [(self.empty_loss, True)] if self.every_batch else []
        # each pass's order of the labelled examples, the same on a resumed run
        passes, batch = divmod(batch, self.batches_per_pass)
        order_seed = int(np.random.SeedSequence([self.seed, epoch, 0x5EED, passes]).generate_state(1)[0])
        order = torch.randperm(len(self.labelled_x), generator=torch.Generator().manual_seed(order_seed))
        pick = order[batch * self.labelled_batch:(batch + 1) * self.labelled_batch].to(self.labelled_x.device)
        x, y = self.labelled_x[pick], self.labelled_y[pick]
        if self.dynamic:
            x = bernoulli_pixels(x)
        labelled = [(lambda: self.supervised_loss(x, y), self.every_batch),
                    (lambda: self.classifier_loss(x, y), self.every_batch)]
        return [(self.empty_loss, True)] + labelled if self.every_batch else labelled

    def empty_loss(self):
        """The classifier term of an unlabelled batch: none (a zero reaching no parameter)."""
        return torch.zeros((), device=self.labelled_x.device, requires_grad=True)


class StackedM2(ModelProtocol):
    """Kingma et al.'s M1+M2 seen as one model of the examples, for its figures: M2 trained on the
    latent means z1 of the VAE ``m1`` (``[data] features``), its outputs decoded by M1,
    E[x | z1 = E[z1 | y, z2]]; the analogies start from M1's encoder means of the examples. (It has
    no program of its own: its numbers are M2's, of the means.)"""

    semi_supervised = True
    plot_kinds = ("analogies", "classes", "curves")

    def __init__(self, m2, m1):
        self.m2, self.m1 = m2, m1
        self.num_classes, self.data_shape, self.device = m2.num_classes, m1.data_shape, m2.device

    def prior(self):
        return self.m2.prior()

    @torch.no_grad()
    def decode(self, z, y=None):
        return self.m1.decode(self.m2.decode(z, y))

    @torch.no_grad()
    def analogies(self, x):
        """``(N, C, *data_shape)``: M2's analogies of M1's means of ``x``, decoded by M1."""
        z1 = self.m2.analogies(self.m1.encode(x)[0])
        return self.m1.decode(z1.reshape(-1, z1.shape[-1])).reshape(len(x), self.num_classes, *self.data_shape)
