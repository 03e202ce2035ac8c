"""The compiled CPU paths' kernels compute the functions they stand for: oneDNN's linear layer
against ``F.linear`` (values and the three gradients, in float64 as the reference), the log(1 + t)
Bernoulli density against ``binary_cross_entropy_with_logits`` in float64, and every call the
kernels do not take passed to PyTorch untouched."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pyrovae.infer import cpu_kernels
from pyrovae.infer.cpu_kernels import CpuKernels, bernoulli_log_density, linear

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
def test_the_custom_operator_passes_pytorchs_operator_checks():
    from pyrovae.infer.cpu_kernels import _operators

    operator = _operators()._opoverload
    for args in [(torch.randn(5, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True),
                  torch.randn(4, requires_grad=True)),
                 (torch.randn(5, 3), torch.randn(4, 3, requires_grad=True), None)]:
        torch.library.opcheck(operator, args)


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


def test_the_trainers_dynamic_binarization_draws_what_torch_bernoulli_draws():
    """The trainer binarizes with 1[u < p] (a vectorized kernel): on CPU the very draws of
    torch.bernoulli(p) from the same generator state, so runs keep their random streams."""
    p = torch.rand(128, 784, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(4)
    expected = torch.bernoulli(p)
    torch.manual_seed(4)
    assert torch.equal((torch.rand_like(p) < p).to(p.dtype), expected)
