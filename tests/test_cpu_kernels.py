"""The compiled CPU paths' kernels compute the functions they stand for: oneDNN's linear layer
against ``F.linear`` (values and the three gradients, in float64 as the reference), the log(1 + t)
Bernoulli density against ``binary_cross_entropy_with_logits`` in float64, and every call the
kernels do not take passed to PyTorch untouched; and the CPU's dynamic binarization (21-bit
uniforms from SplitMix64 words) against Bernoulli frequencies and its construction decoded in NumPy."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pyrovae.fast import kernels as cpu_kernels
from pyrovae.fast.binarize import bernoulli_pixels, mix64
from pyrovae.fast.kernels import CpuKernels, bernoulli_log_density, linear

needs_onednn = pytest.mark.skipif(not cpu_kernels.available(), reason="this PyTorch build has no oneDNN")


def float64_reference(x, weight, bias):
    x64, w64 = x.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    b64 = None if bias is None else bias.detach().double().requires_grad_()
    return x64, w64, b64, F.linear(x64, w64, b64)


@needs_onednn
@pytest.mark.parametrize("batch_shape", [(128,), (3, 17)], ids=["matrix", "particles-by-batch"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
def test_onednn_linear_has_the_value_and_gradients_of_f_linear(batch_shape, with_bias):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(*batch_shape, 400, generator=generator, requires_grad=True)
    weight = torch.randn(784, 400, generator=generator, requires_grad=True)
    bias = torch.randn(784, generator=generator, requires_grad=True) if with_bias else None
    upstream = torch.randn(*batch_shape, 784, generator=generator)

    out = linear(x, weight, bias)
    (out * upstream).sum().backward()
    x64, w64, b64, out64 = float64_reference(x, weight, bias)
    (out64 * upstream.double()).sum().backward()

    assert out.shape == out64.shape and out.dtype == torch.float32
    # float32 sums of 400 products of unit normals: rounding about 1e-6 of their scale (20)
    torch.testing.assert_close(out.double(), out64, rtol=0, atol=1e-4)
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=0, atol=1e-3)
    torch.testing.assert_close(weight.grad.double(), w64.grad, rtol=0, atol=1e-3)
    if with_bias:
        torch.testing.assert_close(bias.grad.double(), b64.grad, rtol=0, atol=1e-3)


@needs_onednn
def test_the_operators_pass_pytorchs_operator_checks():
    """Schema, fake kernel and CPU kernel agree (torch.library.opcheck) for the three products."""
    from pyrovae.fast.kernels import REVISION, _operators

    _operators()
    ops = torch.ops.pyrovae
    forward = getattr(ops, f"onednn_linear_r{REVISION}").default
    input_grad = getattr(ops, f"onednn_linear_input_grad_r{REVISION}").default
    weight_grad = getattr(ops, f"onednn_linear_weight_grad_r{REVISION}").default
    x, weight, grad = torch.randn(5, 3), torch.randn(4, 3), torch.randn(5, 4)
    for args in [(x, weight, torch.randn(4)), (x, weight, None)]:
        torch.library.opcheck(forward, args, test_utils=("test_schema", "test_faketensor"))
        # the backward formula registered on the operator, as the compiler traces it
        with_grad = tuple(None if a is None else a.clone().requires_grad_() for a in args)
        torch.library.opcheck(forward, with_grad, test_utils=("test_autograd_registration", "test_aot_dispatch_dynamic"))
    torch.library.opcheck(input_grad, (grad, weight), test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(weight_grad, (grad.t().contiguous(), x.t().contiguous()),
                          test_utils=("test_schema", "test_faketensor"))
    torch.testing.assert_close(input_grad(grad, weight), grad @ weight)
    torch.testing.assert_close(weight_grad(grad.t().contiguous(), x.t().contiguous()), grad.t() @ x)


def test_calls_the_kernels_do_not_take_are_pytorchs_own():
    generator = torch.Generator().manual_seed(1)
    x64, w64 = torch.randn(6, 5, dtype=torch.float64, generator=generator), torch.randn(3, 5, dtype=torch.float64,
                                                                                      generator=generator)
    vector, w32 = torch.randn(5, generator=generator), torch.randn(3, 5, generator=generator)
    logits, target = torch.randn(6, 5, generator=generator), torch.rand(6, 5, generator=generator)
    weight = torch.rand(6, 5, generator=generator)
    with CpuKernels():
        double = F.linear(x64, w64)  # float64: not oneDNN's float32 kernel
        unbatched = F.linear(vector, w32)  # no batch dimension
        weighted = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="none")
        mean = F.binary_cross_entropy_with_logits(logits, target)
    assert torch.equal(double, F.linear(x64, w64)) and torch.equal(unbatched, F.linear(vector, w32))
    assert torch.equal(weighted, F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="none"))
    assert torch.equal(mean, F.binary_cross_entropy_with_logits(logits, target))


def test_the_vectorizable_bernoulli_density_is_binary_cross_entropys_within_float32_rounding():
    logits = torch.cat([torch.linspace(-100, 100, 20001), torch.tensor([0.0, -1e-8, 1e-8, 88.0, -88.0])])
    for value in (torch.zeros_like(logits), torch.ones_like(logits), torch.rand(len(logits))):
        reference = -F.binary_cross_entropy_with_logits(logits.double(), value.double(), reduction="none")
        ours = bernoulli_log_density(logits, value)
        assert torch.isfinite(ours).all()
        # float32 rounds each of the terms x l, max(l, 0) and their sums (a few units of
        # eps = 1.2e-7 relative to their size), and log(1 + t) adds one rounding of 1 + t
        eps = torch.finfo(torch.float32).eps
        bound = 2 * eps * (value.double() * logits.double()).abs() + 2 * eps * logits.double().abs() + 2 * eps
        assert ((ours.double() - reference).abs() <= bound).all()


def test_the_mode_routes_a_likelihoods_density_and_gradient_through_the_kernels():
    generator = torch.Generator().manual_seed(2)
    layer = nn.Linear(50, 784)
    z = torch.randn(64, 50, generator=generator)
    x = (torch.rand(64, 784, generator=generator) < 0.5).float()

    def log_density():
        layer.zero_grad()
        value = torch.distributions.Bernoulli(logits=layer(z)).log_prob(x).sum()
        value.backward()
        return value.detach(), layer.weight.grad.clone()

    plain_value, plain_grad = log_density()
    with CpuKernels():
        fast_value, fast_grad = log_density()
    torch.testing.assert_close(fast_value, plain_value, rtol=1e-5, atol=0)
    torch.testing.assert_close(fast_grad, plain_grad, rtol=1e-4, atol=1e-4)


def test_the_dynamic_binarization_is_bernoulli_at_each_probability_and_pixel():
    """bernoulli_pixels on CPU: each pixel's frequency of ones over 4000 draws is its p within
    5 binomial standard errors (p = 0 and p = 1 exactly), and pixels are uncorrelated: those that
    share a random word (columns c, c + m and c + 2m of a row, m = ceil(D / 3)), neighbouring words,
    and the same pixel in consecutive calls."""
    levels = torch.tensor([0.0, 1e-3, 0.1, 0.25, 0.5, 0.75, 0.999, 1.0])
    p = levels.repeat(3, 5)[:, :40].reshape(3, 40)  # 120 pixels, neighbours at different levels
    torch.manual_seed(0)
    draws = torch.stack([bernoulli_pixels(p) for _ in range(4000)]).double()
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    frequency = draws.mean(0)
    standard_error = (p.double() * (1 - p.double()) / len(draws)).sqrt()
    assert torch.all((frequency - p.double()).abs() <= 5 * standard_error + 1e-12)
    assert torch.all(frequency[p == 0] == 0) and torch.all(frequency[p == 1] == 1)
    half = torch.full((4000, 3 * 100), 0.5)
    centred = bernoulli_pixels(half).double() - 0.5
    for lag in (1, 100, 200):  # neighbouring words; one word's three fields
        correlation = (centred[:, :-lag] * centred[:, lag:]).mean() / 0.25
        assert abs(float(correlation)) < 5 / (len(centred) * (centred.shape[1] - lag)) ** 0.5
    rows = (centred[:-1] * centred[1:]).mean() / 0.25  # one column in neighbouring rows: words t and t + m
    calls = torch.stack([bernoulli_pixels(torch.full((50, 20), 0.5)) for _ in range(2000)]).double() - 0.5
    consecutive = (calls[:-1] * calls[1:]).mean() / 0.25
    assert abs(float(rows)) < 5 / centred[:-1].numel() ** 0.5
    assert abs(float(consecutive)) < 5 / calls[:-1].numel() ** 0.5


def test_mix64_is_splitmix64():
    """mix64 over the Weyl sequence t * 0x9E3779B97F4A7C15 is SplitMix64: its first outputs from
    seed 0 are the published ones (Vigna's splitmix64.c)."""
    gamma = 0x9E3779B97F4A7C15 - (1 << 64)
    words = mix64(torch.arange(1, 4) * gamma)
    assert [int(w) % (1 << 64) for w in words] == [16294208416658607535, 7960286522194355700, 487617019471545679]


def _numpy_bernoulli_pixels(p, a):
    """The documented construction of bernoulli_pixels, in NumPy's unsigned 64-bit arithmetic."""
    grid = p.reshape(len(p), -1) if p.ndim >= 2 else p.reshape(1, -1)
    rows, columns = grid.shape
    per_row = -(-columns // 3)
    with np.errstate(over="ignore"):
        z = np.uint64(a % 2 ** 64) + np.arange(rows * per_row, dtype=np.uint64).reshape(rows, per_row) * np.uint64(
            0x9E3779B97F4A7C15)
        for shift, multiplier in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            z = (z ^ (z >> np.uint64(shift))) * np.uint64(multiplier)
        z = z ^ (z >> np.uint64(31))
    k = np.concatenate([(z >> np.uint64(21 * j)) & np.uint64(2 ** 21 - 1) for j in range(3)], 1)[:, :columns]
    return (k.astype(np.float64) < grid.astype(np.float64) * 2 ** 21).reshape(p.shape)


@pytest.mark.parametrize("shape", [(7, 11), (4, 1, 5, 5), (10,), (3, 3)])
def test_the_dynamic_binarization_compares_21_bit_uniforms_from_splitmix64(shape):
    """The documented construction, decoded independently in NumPy from the same generator state:
    one int64 a from torch.randint over [-2^62, 2^62), word t = SplitMix64's output on
    a + t 0x9E3779B97F4A7C15, pixel (r, c) the 21 bits at 21 (c // m) of word (r, c mod m); the
    shape, dtype and the number of draws spent (one) follow, and the compiled function draws the same."""
    p = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    x = bernoulli_pixels(p)
    after = torch.rand(())
    torch.manual_seed(2)
    a = int(torch.randint(-2 ** 62, 2 ** 62, ()))
    assert torch.rand(()) == after
    assert x.dtype == p.dtype and x.shape == p.shape
    expected = _numpy_bernoulli_pixels(p.numpy(), a)
    assert np.array_equal(x.numpy().astype(bool), expected)
    if shape == (4, 1, 5, 5):
        torch.manual_seed(2)
        compiled = torch.compile(bernoulli_pixels, dynamic=False, options={"fallback_random": True})(p)
        assert np.array_equal(compiled.numpy().astype(bool), expected)