"""fit's training steps flush float32 denormals to zero (as XLA computes on CPU) and change no
parameter by it; the thread's modes are the caller's again after fit, and outside the steps."""

import contextlib

import pytest
import torch

import pyrovae
from pyrovae.fast import denormals

TINY = torch.finfo(torch.float32).tiny

pytestmark = pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this processor cannot flush denormals")


def rarely_lit_pixels():
    """Binary 4x4 images in which pixel 0 is lit in the first 8 examples only: in batches of 8
    without shuffling luck, its weights' gradients are zero at most steps, and Adam's first moment
    for them decays by 0.9 a step into float32's denormal range."""
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(64, 1, 4, 4, generator=generator) < 0.5).float()
    x[:, 0, 0, 0] = 0.0
    x[:8, 0, 0, 0] = 1.0
    return x


def denormal_moments(optimizer):
    return sum(int(((s["exp_avg"] != 0) & (s["exp_avg"].abs() < TINY)).sum()) for s in optimizer.state.values())


class Moments(pyrovae.train.Callback):
    def __init__(self):
        self.flushed_in_steps = set()

    def on_step_end(self, trainer, step, loss):
        self.flushed_in_steps.add(denormals.denormals_flushed())

    def on_fit_end(self, trainer):
        self.denormal = denormal_moments(trainer.optimizer)


def train(monkeypatch, flush):
    if not flush:
        monkeypatch.setattr(pyrovae.train.trainer, "flushing_denormals", lambda device: contextlib.nullcontext())
    torch.manual_seed(0)
    vae = pyrovae.VAE((1, 4, 4), latent_dim=2, hidden=(8,))
    moments = Moments()
    pyrovae.fit(vae, rarely_lit_pixels(), epochs=120, batch_size=8, lr=1e-3, progress=False, compile="off",
                binarize="none", seed=0, callbacks=[moments])
    monkeypatch.undo()
    return torch.cat([p.detach().flatten() for p in vae.parameters()]), moments


def test_flushing_denormals_changes_no_parameter(monkeypatch):
    plain, plain_moments = train(monkeypatch, flush=False)
    flushed, flushed_moments = train(monkeypatch, flush=True)
    assert plain_moments.denormal > 0, "the case reaches denormal moments"
    assert flushed_moments.denormal == 0
    assert flushed_moments.flushed_in_steps == {True} and plain_moments.flushed_in_steps == {False}
    assert torch.equal(plain, flushed), "the same parameters, to the last bit"


def test_the_callers_modes_are_restored(monkeypatch):
    vae = pyrovae.VAE((1, 4, 4), latent_dim=2, hidden=(8,))
    reported = []
    monkeypatch.setattr(pyrovae.train.Trainer, "evaluate", lambda self: reported.append(
        denormals.denormals_flushed()) or {})
    assert not denormals.denormals_flushed()
    pyrovae.fit(vae, rarely_lit_pixels(), epochs=1, batch_size=8, progress=False, compile="off")
    assert not denormals.denormals_flushed() and reported == [False], "the report and after: the caller's modes"
    torch.set_flush_denormal(True)
    try:
        pyrovae.fit(vae, rarely_lit_pixels(), epochs=1, batch_size=8, progress=False, compile="off")
        assert denormals.denormals_flushed(), "left on where the caller had it on"
    finally:
        torch.set_flush_denormal(False)
    with denormals.flushing_denormals("meta"):
        assert not denormals.denormals_flushed(), "a no-op off the CPU"
