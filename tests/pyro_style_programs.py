"""Pyro programs written the way Pyro's own examples write them (our code, in their style), for
the tests and the benchmark that hand a user's program to pyrovae: a VAE as in
``examples/vae/vae.py`` (and with its plate written each way), conditional VAEs as in
``examples/cvae`` (one with its boolean-indexed observation), the semi-supervised VAE of
``examples/vae/ss_vae_M2.py``, the deep Markov model of ``examples/dmm.py`` and the ProdLDA of the
tutorial (at home in ``examples/prodlda.py``): plain ``nn.Module``s with ``model`` and ``guide``
methods that register their networks with ``pyro.module``. Below them, for each, an importance
sampler written out by hand from its networks with torch.distributions: the references."""

import math
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Bernoulli, Multinomial, Normal

import pyro
import pyro.distributions as dist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from prodlda import ProdLDA as PyroExampleProdLDA, topic_corpus  # noqa: E402,F401  (the tutorial's ProdLDA, at home in the example)
from prodlda import train_as_the_tutorial_does as train_prodlda_as_the_tutorial_does  # noqa: E402,F401


class Decoder(nn.Module):
    def __init__(self, z_dim, hidden_dim, x_dim):
        super().__init__()
        self.fc1 = nn.Linear(z_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, x_dim)

    def forward(self, z):
        return torch.sigmoid(self.fc21(nn.functional.softplus(self.fc1(z))))


class Encoder(nn.Module):
    def __init__(self, z_dim, hidden_dim, x_dim):
        super().__init__()
        self.x_dim = x_dim
        self.fc1 = nn.Linear(x_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, z_dim)
        self.fc22 = nn.Linear(hidden_dim, z_dim)

    def forward(self, x):
        hidden = nn.functional.softplus(self.fc1(x.reshape(-1, self.x_dim)))
        return self.fc21(hidden), torch.exp(self.fc22(hidden))


class PyroExampleVAE(nn.Module):
    """Pyro's examples/vae/vae.py VAE: sites "latent" and "obs", plate "data", flat Bernoulli."""

    def __init__(self, z_dim=2, hidden_dim=32, x_dim=30):
        super().__init__()
        self.encoder = Encoder(z_dim, hidden_dim, x_dim)
        self.decoder = Decoder(z_dim, hidden_dim, x_dim)
        self.z_dim, self.x_dim = z_dim, x_dim

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc = x.new_zeros(torch.Size((x.shape[0], self.z_dim)))
            z_scale = x.new_ones(torch.Size((x.shape[0], self.z_dim)))
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            loc_img = self.decoder(z)
            pyro.sample("obs", dist.Bernoulli(loc_img, validate_args=False).to_event(1),
                        obs=x.reshape(-1, self.x_dim))

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = self.encoder(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))


class PlateStyleVAE(PyroExampleVAE):
    """The same VAE with its plate written as much of Pyro's documentation writes it:
    ``pyro.plate("data")`` without a size (size -1 in the trace, the extent the sites'), or
    ``pyro.plate("data", N, subsample=...)`` (the frame's size the subsample's; ``"subsample"``: all
    N examples, ``"subsample-of-more"``: the batch as half of 2N, which Pyro scales by 2)."""

    def __init__(self, plate_style, **kwargs):
        super().__init__(**kwargs)
        self.plate_style = plate_style

    def _plate(self, x):
        if self.plate_style == "sizeless":
            return pyro.plate("data")
        size = x.shape[0] if self.plate_style == "subsample" else 2 * x.shape[0]  # "subsample-of-more": half
        return pyro.plate("data", size, subsample=torch.arange(x.shape[0], device=x.device))

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with self._plate(x):
            z_loc = x.new_zeros(torch.Size((x.shape[0], self.z_dim)))
            z = pyro.sample("latent", dist.Normal(z_loc, torch.ones_like(z_loc)).to_event(1))
            pyro.sample("obs", dist.Bernoulli(self.decoder(z), validate_args=False).to_event(1),
                        obs=x.reshape(-1, self.x_dim))

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with self._plate(x):
            z_loc, z_scale = self.encoder(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))


class PyroExampleCVAE(nn.Module):
    """Pyro's examples/cvae CVAE shape: given part xs, predicted part ys (observed site "y"),
    p(z | xs) from a prior network, q(z | xs, ys) from a recognition network (the prior network
    where ys is not given), y ~ Bernoulli(generation(z, xs))."""

    def __init__(self, x_dim=15, y_dim=15, z_dim=2, hidden_dim=32):
        super().__init__()
        self.prior_net = Encoder(z_dim, hidden_dim, x_dim)
        self.recognition_net = Encoder(z_dim, hidden_dim, x_dim + y_dim)
        self.generation_net = Decoder(z_dim + x_dim, hidden_dim, y_dim)
        self.x_dim, self.y_dim = x_dim, y_dim

    def model(self, xs, ys=None):
        pyro.module("generation_net", self)
        with pyro.plate("data", xs.shape[0]):
            prior_loc, prior_scale = self.prior_net(xs)
            zs = pyro.sample("z", dist.Normal(prior_loc, prior_scale).to_event(1))
            context = xs.expand(zs.shape[:-1] + xs.shape[-1:])
            loc = self.generation_net(torch.cat([zs, context], -1))
            pyro.sample("y", dist.Bernoulli(loc, validate_args=False).to_event(1), obs=ys)

    def guide(self, xs, ys=None):
        with pyro.plate("data", xs.shape[0]):
            if ys is None:
                loc, scale = self.prior_net(xs)
            else:
                loc, scale = self.recognition_net(torch.cat([xs, ys], -1))
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def train_with_pyro_svi(net, *args, steps=300, lr=1e-2, seed=0):
    """Pyro's classic interface, as Pyro's examples train: SVI with pyro.optim.Adam and Trace_ELBO."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    svi = pyro.infer.SVI(net.model, net.guide, pyro.optim.Adam({"lr": lr}), pyro.infer.Trace_ELBO())
    for _ in range(steps):
        svi.step(*args)
    return net


class MaskedInputEncoder(Encoder):
    """Pyro's examples/cvae Encoder: the known pixels of x with y filled in where x is -1."""

    def forward(self, x, y):
        xc = x.clone()
        xc[x == -1] = y[x == -1]
        hidden = torch.relu(self.fc1(xc.view(-1, self.x_dim)))
        return self.fc21(hidden), torch.exp(self.fc22(hidden))


class PyroExampleMaskedCVAE(nn.Module):
    """Pyro's examples/cvae/cvae.py CVAE as its authors write it: inputs ``xs`` with -1 in the unknown
    pixels, outputs ``ys`` the whole image; a baseline network's guess (no gradient) feeds the prior
    network; a sizeless ``pyro.plate("data")``; the observed site holds only the unknown pixels,
    picked by boolean indexing (so the program cannot take a particle dimension on the left)."""

    def __init__(self, x_dim=16, z_dim=2, hidden_dim=32):
        super().__init__()
        self.baseline_net = nn.Sequential(nn.Linear(x_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, x_dim),
                                          nn.Sigmoid())
        self.prior_net = MaskedInputEncoder(z_dim, hidden_dim, x_dim)
        self.generation_net = Decoder(z_dim, hidden_dim, x_dim)
        self.recognition_net = MaskedInputEncoder(z_dim, hidden_dim, x_dim)
        self.x_dim = x_dim

    def model(self, xs, ys=None):
        pyro.module("generation_net", self)
        batch_size = xs.shape[0]
        with pyro.plate("data"):
            with torch.no_grad():
                y_hat = self.baseline_net(xs).view(xs.shape)
            prior_loc, prior_scale = self.prior_net(xs, y_hat)
            zs = pyro.sample("z", dist.Normal(prior_loc, prior_scale).to_event(1))
            loc = self.generation_net(zs)
            if ys is not None:
                mask_loc = loc[(xs == -1).view(-1, self.x_dim)].view(batch_size, -1)
                mask_ys = ys[xs == -1].view(batch_size, -1)
                pyro.sample("y", dist.Bernoulli(mask_loc, validate_args=False).to_event(1), obs=mask_ys)
            else:
                pyro.deterministic("y", loc.detach())
            return loc

    def guide(self, xs, ys=None):
        with pyro.plate("data"):
            if ys is None:
                y_hat = self.baseline_net(xs).view(xs.shape)
                loc, scale = self.prior_net(xs, y_hat)
            else:
                loc, scale = self.recognition_net(xs, ys)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def broadcast_cat(tensors):
    """What the MLP of Pyro's ss_vae example does with ``allow_broadcast``: its inputs broadcast
    against each other (an enumerated label meets the batch), then concatenated."""
    shape = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    return torch.cat([t.expand(shape + t.shape[-1:]) for t in tensors], -1)


class SSVAEMLP(nn.Module):
    def __init__(self, sizes, outputs):
        super().__init__()
        self.hidden = nn.Linear(sizes[0], sizes[1])
        self.heads = nn.ModuleList(nn.Linear(sizes[1], size) for size in outputs)

    def forward(self, inputs):
        hidden = nn.functional.softplus(self.hidden(broadcast_cat(inputs) if isinstance(inputs, list) else inputs))
        return [head(hidden) for head in self.heads]


class PyroExampleSSVAE(nn.Module):
    """Pyro's examples/vae/ss_vae_M2.py SSVAE as its authors write it: a sizeless plate, the label a
    ``OneHotCategorical`` site observed when given and sampled by the guide's q(y|x) otherwise
    (trained with the guide under ``config_enumerate`` and ``TraceEnum_ELBO``), q(z|x, y), and
    p(x|y, z) Bernoulli; the networks broadcast their inputs, as theirs with ``allow_broadcast``."""

    def __init__(self, x_dim=20, num_classes=10, z_dim=2, hidden_dim=32):
        super().__init__()
        self.encoder_y = SSVAEMLP([x_dim, hidden_dim], [num_classes])
        self.encoder_z = SSVAEMLP([x_dim + num_classes, hidden_dim], [z_dim, z_dim])
        self.decoder = SSVAEMLP([z_dim + num_classes, hidden_dim], [x_dim])
        self.x_dim, self.num_classes, self.z_dim = x_dim, num_classes, z_dim

    def model(self, xs, ys=None):
        pyro.module("ss_vae", self)
        batch_size = xs.size(0)
        with pyro.plate("data"):
            prior_loc = xs.new_zeros([batch_size, self.z_dim])
            prior_scale = xs.new_ones([batch_size, self.z_dim])
            zs = pyro.sample("z", dist.Normal(prior_loc, prior_scale).to_event(1))
            alpha_prior = xs.new_ones([batch_size, self.num_classes]) / (1.0 * self.num_classes)
            ys = pyro.sample("y", dist.OneHotCategorical(alpha_prior), obs=ys)
            loc = torch.sigmoid(self.decoder([zs, ys])[0])
            pyro.sample("x", dist.Bernoulli(loc, validate_args=False).to_event(1), obs=xs)

    def guide(self, xs, ys=None):
        with pyro.plate("data"):
            if ys is None:
                alpha = torch.softmax(self.encoder_y(xs)[0], -1)
                ys = pyro.sample("y", dist.OneHotCategorical(alpha))
            loc, log_scale = self.encoder_z([xs, ys])
            pyro.sample("z", dist.Normal(loc, torch.exp(log_scale)).to_event(1))


def train_ssvae_as_pyro_does(net, xs, labelled_xs, labelled_ys, steps=300, lr=1e-2, seed=0):
    """ss_vae_M2.py's recipe: the guide under config_enumerate, TraceEnum_ELBO, unlabelled steps with
    a labelled step every few."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = pyro.infer.config_enumerate(net.guide, "parallel", expand=True)
    svi = pyro.infer.SVI(net.model, guide, pyro.optim.Adam({"lr": lr}), pyro.infer.TraceEnum_ELBO(max_plate_nesting=1))
    with warnings.catch_warnings():  # a labelled step has nothing to enumerate, which TraceEnum_ELBO says
        warnings.filterwarnings("ignore", "TraceEnum_ELBO found no sample sites configured for enumeration")
        for step in range(steps):
            if step % 4 == 1:
                svi.step(labelled_xs, labelled_ys)
            else:
                svi.step(xs)
    return net


def reverse_sequences(mini_batch, seq_lengths):
    """Each sequence's first ``seq_lengths[b]`` steps reversed, its padding left in place, as
    Pyro's dmm example (its ``poly.reverse_sequences``) feeds the guide's RNN."""
    reversed_batch = torch.zeros_like(mini_batch)
    for b in range(mini_batch.size(0)):
        length = int(seq_lengths[b])
        reversed_batch[b, :length] = mini_batch[b, :length].flip(0)
    return reversed_batch


def sequence_mask(seq_lengths, t_max):
    return (torch.arange(t_max)[None, :] < seq_lengths[:, None]).float()


class DMMEmitter(nn.Module):
    def __init__(self, input_dim, z_dim, hidden_dim):
        super().__init__()
        self.lin_z_to_hidden = nn.Linear(z_dim, hidden_dim)
        self.lin_hidden_to_input = nn.Linear(hidden_dim, input_dim)

    def forward(self, z_t):
        return torch.sigmoid(self.lin_hidden_to_input(torch.relu(self.lin_z_to_hidden(z_t))))


class DMMGatedTransition(nn.Module):
    """dmm.py's gated transition, one hidden layer narrower: z_t ~ N(loc(z_{t-1}), scale(z_{t-1}))."""

    def __init__(self, z_dim, transition_dim):
        super().__init__()
        self.lin_gate_z_to_hidden = nn.Linear(z_dim, transition_dim)
        self.lin_gate_hidden_to_z = nn.Linear(transition_dim, z_dim)
        self.lin_proposed_mean_z_to_hidden = nn.Linear(z_dim, transition_dim)
        self.lin_proposed_mean_hidden_to_z = nn.Linear(transition_dim, z_dim)
        self.lin_sig = nn.Linear(z_dim, z_dim)
        self.lin_z_to_loc = nn.Linear(z_dim, z_dim)
        nn.init.eye_(self.lin_z_to_loc.weight)
        nn.init.zeros_(self.lin_z_to_loc.bias)

    def forward(self, z_t_1):
        gate = torch.sigmoid(self.lin_gate_hidden_to_z(torch.relu(self.lin_gate_z_to_hidden(z_t_1))))
        proposed_mean = self.lin_proposed_mean_hidden_to_z(torch.relu(self.lin_proposed_mean_z_to_hidden(z_t_1)))
        loc = (1 - gate) * self.lin_z_to_loc(z_t_1) + gate * proposed_mean
        scale = nn.functional.softplus(self.lin_sig(torch.relu(proposed_mean)))
        return loc, scale


class DMMCombiner(nn.Module):
    """q(z_t | z_{t-1}, h_t): the RNN's state (run backward over x_{t:T}) combined with z_{t-1}."""

    def __init__(self, z_dim, rnn_dim):
        super().__init__()
        self.lin_z_to_hidden = nn.Linear(z_dim, rnn_dim)
        self.lin_hidden_to_loc = nn.Linear(rnn_dim, z_dim)
        self.lin_hidden_to_scale = nn.Linear(rnn_dim, z_dim)

    def forward(self, z_t_1, h_rnn):
        h_combined = 0.5 * (torch.tanh(self.lin_z_to_hidden(z_t_1)) + h_rnn)
        return self.lin_hidden_to_loc(h_combined), nn.functional.softplus(self.lin_hidden_to_scale(h_combined))


class PyroExampleDMM(nn.Module):
    """Pyro's examples/dmm.py deep Markov model as its authors write it: z_t per time step under
    ``pyro.markov``, a plate named for the mini-batch, each step's sites masked beyond its
    sequence's length (``poutine.mask``), the guide an RNN run over each sequence reversed (packed,
    so the padding is never read). Called as dmm.py calls it:
    ``model(mini_batch, mini_batch_reversed, mini_batch_mask, mini_batch_seq_lengths)``."""

    def __init__(self, input_dim=5, z_dim=2, emission_dim=16, transition_dim=16, rnn_dim=16):
        super().__init__()
        self.emitter = DMMEmitter(input_dim, z_dim, emission_dim)
        self.trans = DMMGatedTransition(z_dim, transition_dim)
        self.combiner = DMMCombiner(z_dim, rnn_dim)
        self.rnn = nn.RNN(input_size=input_dim, hidden_size=rnn_dim, nonlinearity="relu", batch_first=True)
        self.z_0 = nn.Parameter(torch.zeros(z_dim))
        self.z_q_0 = nn.Parameter(torch.zeros(z_dim))
        self.h_0 = nn.Parameter(torch.zeros(1, 1, rnn_dim))

    def model(self, mini_batch, mini_batch_reversed, mini_batch_mask, mini_batch_seq_lengths, annealing_factor=1.0):
        T_max = mini_batch.size(1)
        pyro.module("dmm", self)
        z_prev = self.z_0.expand(mini_batch.size(0), self.z_0.size(0))
        with pyro.plate("z_minibatch", len(mini_batch)):
            for t in pyro.markov(range(1, T_max + 1)):
                z_loc, z_scale = self.trans(z_prev)
                with pyro.poutine.mask(mask=mini_batch_mask[:, t - 1].bool()):
                    with pyro.poutine.scale(scale=annealing_factor):
                        z_t = pyro.sample("z_%d" % t, dist.Normal(z_loc, z_scale).to_event(1))
                    emission_probs_t = self.emitter(z_t)
                    pyro.sample("obs_x_%d" % t, dist.Bernoulli(emission_probs_t, validate_args=False).to_event(1),
                                obs=mini_batch[:, t - 1, :])
                z_prev = z_t

    def rnn_states(self, mini_batch_reversed, mini_batch_seq_lengths):
        """The RNN's state at each step, run over each sequence reversed and put back in time order."""
        h_0 = self.h_0.expand(1, mini_batch_reversed.size(0), self.rnn.hidden_size).contiguous()
        packed = nn.utils.rnn.pack_padded_sequence(mini_batch_reversed, mini_batch_seq_lengths.cpu(),
                                                   batch_first=True, enforce_sorted=False)
        rnn_output, _ = self.rnn(packed, h_0)
        rnn_output, _ = nn.utils.rnn.pad_packed_sequence(rnn_output, batch_first=True,
                                                         total_length=mini_batch_reversed.size(1))
        return reverse_sequences(rnn_output, mini_batch_seq_lengths)

    def guide(self, mini_batch, mini_batch_reversed, mini_batch_mask, mini_batch_seq_lengths, annealing_factor=1.0):
        T_max = mini_batch.size(1)
        pyro.module("dmm", self)
        rnn_output = self.rnn_states(mini_batch_reversed, mini_batch_seq_lengths)
        z_prev = self.z_q_0.expand(mini_batch.size(0), self.z_q_0.size(0))
        with pyro.plate("z_minibatch", len(mini_batch)):
            for t in pyro.markov(range(1, T_max + 1)):
                z_loc, z_scale = self.combiner(z_prev, rnn_output[:, t - 1, :])
                with pyro.poutine.mask(mask=mini_batch_mask[:, t - 1].bool()):
                    with pyro.poutine.scale(scale=annealing_factor):
                        z_t = pyro.sample("z_%d" % t, dist.Normal(z_loc, z_scale).to_event(1))
                z_prev = z_t


def dmm_arguments(sequences, lengths):
    """(mini_batch, mini_batch_reversed, mini_batch_mask, mini_batch_seq_lengths), as dmm.py's
    ``poly.get_mini_batch`` makes them."""
    return sequences, reverse_sequences(sequences, lengths), sequence_mask(lengths, sequences.size(1)), lengths


# -- importance samplers written out by hand from each program's networks, with torch.distributions --

def logmeanexp_with_stderr(log_w):
    k = len(log_w)
    lse1, lse2 = torch.logsumexp(log_w, 0), torch.logsumexp(2 * log_w, 0)
    return lse1 - math.log(k), ((torch.exp(lse2 - 2 * lse1 + math.log(k)) - 1).clamp_min(0) / k).sqrt()

def binary_data(n=200, dim=30, seed=0):
    rng = np.random.default_rng(seed)
    prototypes = rng.random((3, dim)) > 0.5
    which = rng.integers(0, 3, n)
    return torch.as_tensor(prototypes[which] ^ (rng.random((n, dim)) < 0.1), dtype=torch.float32), \
        torch.as_tensor(which)

def masked_cvae_reference_weights(net, xs, ys, num_samples, generator):
    """log p(y_unknown | xs, z) + log p(z | xs) - log q(z | xs, ys), z ~ q: the networks called as the
    program calls them, one example at a time in the pixel selection."""
    with torch.no_grad():
        loc, scale = net.recognition_net(xs, ys)
        prior_loc, prior_scale = net.prior_net(xs, net.baseline_net(xs))
        z = loc + scale * torch.randn((num_samples, *loc.shape), generator=generator)
        probs = net.generation_net(z)
        unknown = xs == -1
        log_lik = (Bernoulli(probs=probs).log_prob(ys.expand_as(probs)) * unknown).sum(-1)
        return (Normal(prior_loc, prior_scale).log_prob(z).sum(-1) + log_lik
                - Normal(loc, scale).log_prob(z).sum(-1)).double()

def ssvae_reference_log_joint(net, xs, ys, num_samples, generator):
    """log w = log p(x | y, z) + log p(z) + log p(y) - log q(z | x, y), z ~ q(z | x, y): (K, N)."""
    with torch.no_grad():
        loc, log_scale = net.encoder_z([xs, ys])
        scale = log_scale.exp()
        z = loc + scale * torch.randn((num_samples, *loc.shape), generator=generator)
        probs = torch.sigmoid(net.decoder([z, ys])[0])
        return (Bernoulli(probs=probs).log_prob(xs).sum(-1) + Normal(0.0, 1.0).log_prob(z).sum(-1)
                - math.log(net.num_classes) - Normal(loc, scale).log_prob(z).sum(-1)).double()

def ssvae_reference_log_marginal(net, xs, num_samples, generator):
    """log p(x) = log sum_y p(x, y), each p(x, y) by its own importance sampler: the sum over the ten
    labels written out as a loop."""
    per_class = []
    for c in range(net.num_classes):
        ys = F.one_hot(torch.full((len(xs),), c), net.num_classes).float()
        per_class.append(ssvae_reference_log_joint(net, xs, ys, num_samples, generator))
    # one draw per label in each sample: log of (sum over labels) per sample, then its log-mean-exp
    return logmeanexp_with_stderr(torch.logsumexp(torch.stack(per_class), 0))

def dmm_reference_weights(net, sequences, lengths, num_samples, generator):
    """log w per sequence: sum over its own steps t < length of log p(z_t | z_{t-1}) + log p(x_t | z_t)
    - log q(z_t | z_{t-1}, h_t), each z_t drawn from q in turn; the steps beyond a length add nothing."""
    with torch.no_grad():
        num, steps, _ = sequences.shape
        mask = sequence_mask(lengths, steps)
        states = net.rnn_states(reverse_sequences(sequences, lengths), lengths)
        z_dim = net.z_0.shape[0]
        z_model, z_guide = net.z_0.expand(num_samples, num, z_dim), net.z_q_0.expand(num_samples, num, z_dim)
        log_w = torch.zeros(num_samples, num, dtype=torch.float64)
        for t in range(steps):
            q_loc, q_scale = net.combiner(z_guide, states[:, t])
            z = q_loc + q_scale * torch.randn(q_loc.shape, generator=generator)
            p_loc, p_scale = net.trans(z_model)
            step = (Normal(p_loc, p_scale).log_prob(z).sum(-1)
                    + Bernoulli(probs=net.emitter(z)).log_prob(sequences[:, t]).sum(-1)
                    - Normal(q_loc, q_scale).log_prob(z).sum(-1))
            log_w += (step * mask[:, t]).double()
            z_model = z_guide = z
        return log_w

def prodlda_reference_weights(net, docs, num_samples, generator):
    """log Multinomial(w_d; softmax(BN(beta softmax(logtheta)))) + log N(logtheta; 0, I) - log q(logtheta | w_d),
    the networks in eval mode, one document's draws at a time through the decoder (its batch norm
    and softmax read a batch of documents)."""
    with torch.no_grad():
        loc, scale = net.encoder(docs)
        logtheta = loc + scale * torch.randn((num_samples, *loc.shape), generator=generator)
        probs = torch.stack([net.decoder(torch.softmax(draw, -1)) for draw in logtheta])
        words = Multinomial(total_count=int(docs.sum(-1).max()), probs=probs, validate_args=False)
        return (words.log_prob(docs) + Normal(0.0, 1.0).log_prob(logtheta).sum(-1)
                - Normal(loc, scale).log_prob(logtheta).sum(-1)).double()
