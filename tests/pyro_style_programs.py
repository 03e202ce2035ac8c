"""Pyro programs written the way Pyro's own examples write them (our code, in their style), for
the tests that hand a user's program to pyrovae: a VAE as in ``examples/vae/vae.py`` and a
conditional VAE as in ``examples/cvae``, both plain ``nn.Module``s with ``model`` and ``guide``
methods that register their networks with ``pyro.module``."""

import torch
import torch.nn as nn

import pyro
import pyro.distributions as dist


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
