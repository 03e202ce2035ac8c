"""Faster CPU kernels for the compiled paths: linear layers on oneDNN, and the Bernoulli log
density in a form the compiler vectorizes.

**Linear layers.** A linear layer is y = x W^T + b; its backward pass is two more products of the same size,
dL/dx = g W and dL/dW = g^T x (and dL/db = sum_n g_n). On CPU, ``torch.nn.functional.linear`` and
``torch.mm`` call MKL's sgemm; at the VAE's layer shapes (a batch of 128, layers of 400 and 784
units) oneDNN's inner-product kernel, which PyTorch ships for its own inference path, runs the
same products about 1.8x faster on the machine ``benchmarks/peers.py`` was first measured on (an
AMD EPYC, where MKL does not pick its fastest code path), and 1.4x slower on an Intel Xeon, where
MKL does: the compiled step takes whichever this machine runs faster, measured once
(:mod:`pyrovae.fast.machine_choices`). The three products are the same function
of the same inputs; only the kernel, and so the order of the float32 additions, differs
(``tests/test_cpu_kernels.py`` compares values and gradients with ``F.linear``'s). The products
are registered as operators (``pyrovae::onednn_linear_r2`` and its two gradients) so that
``torch.compile`` calls them as opaque kernels: Inductor's own lowering of oneDNN's linear needs
the weight to be a graph constant, which a weight being trained is not.

**The Bernoulli log density.** log Bernoulli(x | sigmoid(l)) = x l - softplus(l), and softplus(l)
= max(l, 0) + log(1 + exp(-abs(l))); PyTorch's ``binary_cross_entropy_with_logits`` (behind
``Bernoulli.log_prob``) writes the last term with ``log1p``, whose vectorized CPU kernel in the
code Inductor generates is about ten times slower than ``exp`` and ``log`` together: it was most
of the importance-sampling estimator's time. Here it is ``log(1 + t)`` with t = exp(-abs(l)) in
(0, 1], which differs from ``log1p(t)`` by at most one float32 rounding of 1 + t (1.2e-7 nats a
pixel); the sum over the pixels carries larger rounding errors than that already.

:func:`cpu_kernels` is the context in which ``F.linear`` (and so every ``nn.Linear``) and
``F.binary_cross_entropy_with_logits`` on float32 CPU tensors take these forms, forward and
backward; everything else, and every call outside the context, is left to PyTorch. Eager
training and evaluation never enter it: their kernels are PyTorch's own.
"""

import contextlib
import functools
from typing import Optional

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["available", "linear", "linear_products", "bernoulli_log_density", "cpu_kernels", "CpuKernels"]


def available() -> bool:
    """Whether this PyTorch build has oneDNN and its linear kernel."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return False
    return True


# Compiled graphs are cached on disk under a key that names the forward operator but not its
# backward formula: the revision in every name changes with the kernels' definitions, so a graph
# cached by an earlier version is never replayed against these.
REVISION = 3


@functools.lru_cache(maxsize=None)
def _operators():
    """The three products as operators of the ``pyrovae`` namespace (registered on first use:
    importing pyrovae registers nothing), as ``(linear operator, library)``; the library is kept
    alive with the cache, since dropping it would deregister the operators.

    The operators are defined on ``torch.library.Library`` directly, with a CPU kernel and a fake
    one; the forward operator's backward formula is registered on it
    (``torch.library.register_autograd``), in terms of the two gradient operators. The compiler
    traces that formula into the step's graph, which then calls the three kernels as plain
    operators. Registered on the operator rather than written as a ``torch.autograd.Function``
    (which the graph would hold as an ``autograd_function_apply``), the graph is one that
    AOTAutograd's disk cache stores: a warm run's compilation of the whole step, 8.5 s with the
    Function, takes 4.1 s (docs/benchmarks.md). (Called eagerly, outside a compiled function,
    the registered formula adds a Python autograd layer to each call; nothing in pyrovae calls
    it so.)"""
    pointwise = torch.ops.mkldnn._linear_pointwise
    library = torch.library.Library("pyrovae", "FRAGMENT")

    def forward_kernel(x, weight, bias):
        return pointwise(x.contiguous(), weight, bias, "none", [], "")

    def input_grad_kernel(grad, weight):
        """g W, as a linear layer whose weight is W^T."""
        return pointwise(grad.contiguous(), weight.t(), None, "none", [], "")

    def weight_grad_kernel(grad_t, x_t):
        """g^T x from g^T and x^T, as a linear layer applied to g^T whose weight is x^T."""
        return pointwise(grad_t.contiguous(), x_t.contiguous(), None, "none", [], "")

    definitions = {
        "onednn_linear": ("(Tensor x, Tensor weight, Tensor? bias) -> Tensor", forward_kernel,
                          lambda x, weight, bias: x.new_empty(x.shape[0], weight.shape[0])),
        "onednn_linear_input_grad": ("(Tensor grad, Tensor weight) -> Tensor", input_grad_kernel,
                                     lambda grad, weight: grad.new_empty(grad.shape[0], weight.shape[1])),
        "onednn_linear_weight_grad": ("(Tensor grad_t, Tensor x_t) -> Tensor", weight_grad_kernel,
                                      lambda grad_t, x_t: grad_t.new_empty(grad_t.shape[0], x_t.shape[0])),
    }
    ops = {}
    for name, (schema, kernel, fake) in definitions.items():
        versioned = f"{name}_r{REVISION}"
        library.define(versioned + schema)
        library.impl(versioned, kernel, "CPU")
        torch.library.register_fake(f"pyrovae::{versioned}", fake, lib=library)
        ops[name] = getattr(torch.ops.pyrovae, versioned).default
    forward_op, input_grad, weight_grad = ops["onednn_linear"], ops["onednn_linear_input_grad"], \
        ops["onednn_linear_weight_grad"]

    def setup_context(ctx, inputs, output):
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None

    def backward(ctx, grad):
        """dL/dx = g W, dL/dW = g^T x, dL/db = sum_n g_n."""
        x, weight = ctx.saved_tensors
        grad_x = input_grad(grad, weight) if ctx.needs_input_grad[0] else None
        # the transposes as copies in the traced graph, where the compiler writes them from the
        # kernels that make g and x; oneDNN then reads both operands in the layout it wants
        grad_weight = weight_grad(grad.t().contiguous(), x.t().contiguous()) if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias

    torch.library.register_autograd(forward_op, backward, setup_context=setup_context, lib=library)
    return forward_op, library


def _float32_on_cpu(*tensors) -> bool:
    return all(isinstance(t, Tensor) and t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)


def _runs_on_onednn(x, weight, bias) -> bool:
    return (_float32_on_cpu(x, weight, *(() if bias is None else (bias,)))
            and x.dim() >= 2 and weight.dim() == 2 and (bias is None or bias.dim() == 1)
            and x.numel() > 0 and weight.numel() > 0)


def _apply(operator, x, weight, bias):
    if not _runs_on_onednn(x, weight, bias):
        return F.linear(x, weight, bias)
    flat = x.reshape(-1, x.shape[-1])
    return operator(flat, weight, bias).reshape(*x.shape[:-1], weight.shape[0])


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``F.linear(x, weight, bias)`` on oneDNN's kernels (forward and backward) where the inputs
    are float32 CPU tensors and x has a batch dimension; ``F.linear`` itself otherwise. Leading
    batch dimensions of x are flattened into one for the kernel and restored after."""
    return _apply(_operators()[0], x, weight, bias)


def bernoulli_log_density(logits: Tensor, value: Tensor) -> Tensor:
    """x l - max(l, 0) - log(1 + exp(-abs(l))) elementwise: -``binary_cross_entropy_with_logits(l,
    x, reduction="none")`` with log(1 + t) for log1p(t) (see the module's docstring)."""
    return value * logits - logits.clamp_min(0) - torch.log(1 + torch.exp(-logits.abs()))


def _binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None, reduction="mean",
                                      pos_weight=None):
    """``F.binary_cross_entropy_with_logits`` through :func:`bernoulli_log_density` for the
    unweighted, unreduced float32 CPU case the likelihoods use; PyTorch's otherwise."""
    plain = (weight is None and pos_weight is None and size_average is None and reduce is None and reduction == "none"
             and _float32_on_cpu(input, target))
    if not plain:
        return F.binary_cross_entropy_with_logits(input, target, weight, size_average, reduce, reduction, pos_weight)
    return -bernoulli_log_density(input, target)


class CpuKernels(TorchFunctionMode):
    """A torch function mode under which ``F.linear`` calls :func:`linear` and
    ``F.binary_cross_entropy_with_logits`` the log(1 + t) form. Made outside a compiled function
    and entered inside it: the operators are registered when the mode is made, so the compiler
    only sees them called. ``linear=False`` leaves ``F.linear`` to PyTorch (MKL), which is the
    faster kernel for products of thousands of rows (AIS's chains x examples)."""

    def __init__(self, linear: bool = True):
        super().__init__()
        self._linear = _operators()[0] if linear and available() else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and self._linear is not None:
            bound = dict(zip(("input", "weight", "bias"), args), **kwargs)
            return _apply(self._linear, bound["input"], bound["weight"], bound.get("bias"))
        if func is F.binary_cross_entropy_with_logits:
            return _binary_cross_entropy_with_logits(*args, **kwargs)
        return func(*args, **kwargs)


def cpu_kernels(device, linear: bool = True) -> contextlib.AbstractContextManager:
    """The context under which a compiled CPU function runs on these kernels (``linear``: oneDNN's
    linear layers too); a no-op on other devices."""
    if torch.device(device).type == "cpu":
        return CpuKernels(linear)
    return contextlib.nullcontext()


def linear_products(kernel: str, x: Tensor, weight: Tensor, bias: Optional[Tensor], grad: Tensor):
    """The three products of a linear layer's training step, y = x W^T + b, g W and g^T x, on
    ``kernel``: ``"onednn"`` (the kernels the compiled step's operators call, in the layouts they
    give them) or ``"aten"`` (``F.linear`` and ``torch.mm``, MKL's sgemm on CPU). For timing the
    two against each other (:func:`pyrovae.fast.machine_choices.linear_kernel`)."""
    if kernel == "aten":
        return F.linear(x, weight, bias), grad.mm(weight), grad.t().mm(x)
    if kernel != "onednn":
        raise ValueError(f"unknown linear kernel {kernel!r}; choose 'onednn' or 'aten'")
    pointwise = torch.ops.mkldnn._linear_pointwise
    return (pointwise(x, weight, bias, "none", [], ""), pointwise(grad, weight.t(), None, "none", [], ""),
            pointwise(grad.t().contiguous(), x.t().contiguous(), None, "none", [], ""))
