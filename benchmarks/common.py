"""Shared pieces of the benchmarks: MNIST in memory, the plain PyTorch VAE they are measured
against, and the machine's float32 matrix-multiply throughput."""

import math
import os
import platform
import time

import torch
from torch import nn
from torch.nn import functional as F

import pyro
import pyrovae
from pyrovae.fast import machine_choices, precision


def mnist(split):
    return pyrovae.datasets.load("mnist", split=split).data


def matmul_gflops(m=4096, k=400, n=784, repeats=30, kernel="torch"):
    """Measured float32 GEMM throughput at the VAE's layer shapes, GFLOP/s: ``a @ b`` as PyTorch
    runs it (MKL on x86 CPUs), or ``kernel="onednn"``: oneDNN's linear kernel, which pyrovae's
    compiled CPU paths use (``pyrovae.fast.kernels``)."""
    from pyrovae.fast.kernels import linear

    a, weight = torch.randn(m, k), torch.randn(n, k)
    product = (lambda: a @ weight.T) if kernel == "torch" else (lambda: linear(a, weight))
    for _ in range(5):
        product()
    start = time.perf_counter()
    for _ in range(repeats):
        product()
    return 2 * m * k * n * repeats / (time.perf_counter() - start) / 1e9


def processor():
    """The processor's model name and the bf16 instructions it reports (/proc/cpuinfo), or the
    platform's word for it where there is no such file."""
    return {"model": machine_choices.processor_name(), "bf16": sorted(precision.cpu_bf16_instructions())}


def machine():
    return {
        "cpu": platform.processor() or platform.machine(),
        "processor": processor(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "pyrovae": pyrovae.__version__,
        "python": platform.python_version(),
    }


class PlainVAE(nn.Module):
    """The benchmark's reference: the same MLP VAE written as a plain PyTorch loss."""

    def __init__(self, data_dim=784, hidden=400, latent_dim=50):
        super().__init__()
        self.enc = nn.Linear(data_dim, hidden)
        self.loc = nn.Linear(hidden, latent_dim)
        self.log_scale = nn.Linear(hidden, latent_dim)
        self.dec1 = nn.Linear(latent_dim, hidden)
        self.dec2 = nn.Linear(hidden, data_dim)

    def encode(self, x):
        h = F.relu(self.enc(x))
        return self.loc(h), torch.exp(self.log_scale(h).clamp(-10, 10))

    def log_px_given_z(self, logits, x):
        return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)

    def loss(self, x, kind="meanfield", particles=1):
        """Negative ELBO (or IWAE bound) summed over the batch."""
        x = x.flatten(1)
        loc, scale = self.encode(x)
        eps = torch.randn((particles,) + loc.shape)
        z = loc + scale * eps
        logits = self.dec2(F.relu(self.dec1(z)))
        log_px = self.log_px_given_z(logits, x)
        if kind == "meanfield":
            kl = 0.5 * (scale**2 + loc**2 - 1 - 2 * torch.log(scale)).sum(-1)
            return -(log_px.mean(0) - kl).sum()
        log_pz = -0.5 * (z**2).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)
        log_qz = (-0.5 * eps**2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_w = log_px + log_pz - log_qz
        if kind == "trace":
            return -log_w.mean(0).sum()
        return -(torch.logsumexp(log_w, 0) - math.log(particles)).sum()  # iwae


def plain_epoch(model, optimizer, data, batch_size, kind, particles, seed):
    """One epoch of the plain loop, same batching and dynamic binarization as pyrovae.fit."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    total = torch.zeros(())
    start = time.perf_counter()
    for i in range(0, len(data), batch_size):
        xb = torch.bernoulli(data[order[i:i + batch_size]])
        optimizer.zero_grad(set_to_none=True)
        loss = model.loss(xb, kind, particles)
        loss.backward()
        optimizer.step()
        total += loss.detach()
    return time.perf_counter() - start, -float(total) / len(data)


@torch.no_grad()
def plain_evaluation(model, data, examples=pyrovae.train.METRIC_EXAMPLES, seed=1):
    """What fit reports at an epoch's end: the ELBO's terms on the first ``report_examples``
    (fit's default, ``pyrovae.train.METRIC_EXAMPLES``; 10000 up to 0.3) training examples."""
    x = torch.bernoulli(data[:examples], generator=torch.Generator().manual_seed(seed)).flatten(1)
    loc, scale = model.encode(x)
    z = loc + scale * torch.randn_like(loc)
    log_px = model.log_px_given_z(model.dec2(F.relu(model.dec1(z))), x)
    kl = 0.5 * (scale**2 + loc**2 - 1 - 2 * torch.log(scale)).sum(-1)
    return float((log_px - kl).mean())


def vae_flops_per_example(data_dim=784, hidden=400, latent_dim=50, particles=1):
    """Multiply-adds x 2 of one forward pass (encoder once, decoder per particle)."""
    encoder = data_dim * hidden + 2 * hidden * latent_dim
    decoder = latent_dim * hidden + hidden * data_dim
    return 2 * (encoder + particles * decoder)


def pythae_networks(hidden, latent, data_dim=784):
    """pythae encoder and decoder for the MLP VAE of the benchmarks: data_dim-hidden-latent ReLU,
    the encoder's heads the mean and log sigma^2 (pythae's ``log_covariance``), the decoder's
    output a sigmoid of ``logits`` (kept apart, so the weights map onto a pyrovae VAE's)."""
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(data_dim, hidden), nn.ReLU())
            self.loc, self.log_var = nn.Linear(hidden, latent), nn.Linear(hidden, latent)

        def forward(self, x):
            h = self.body(x)
            return ModelOutput(embedding=self.loc(h), log_covariance=self.log_var(h))

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.logits = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, data_dim))

        def forward(self, z):
            return ModelOutput(reconstruction=self.logits(z).sigmoid().reshape(-1, 1, 28, 28))

    return Encoder(), Decoder()
