"""The dynamic binarization's draws, from a counter-based generator the compiler vectorizes:
:func:`bernoulli_pixels` is x ~ Bernoulli(p) exactly as an eager step and a compiled one draw it
(the same function, so a compiled run follows the eager one), and :func:`mix64` is SplitMix64's
output function behind it."""

import torch

__all__ = ["bernoulli_pixels", "mix64", "UNIFORM_BITS"]

# 21 bits of each uniform, three uniforms from each 64-bit random word
UNIFORM_BITS = 21
_UNIFORM_MASK = (1 << UNIFORM_BITS) - 1


def _as_int64(constant: int) -> int:
    """A 64-bit constant as the int64 with the same bits (two's complement)."""
    return constant - (1 << 64) if constant >= 1 << 63 else constant


# SplitMix64 (Steele, Lea and Flood 2014): the golden-ratio increment of its Weyl sequence, and the
# multipliers of its output function (Stafford's "Mix13"). The increment is a tensor, not a Python
# constant: the compiler folds an index times a constant into its index arithmetic, which this
# constant overflows.
_WEYL_INCREMENT = torch.tensor(_as_int64(0x9E3779B97F4A7C15))
_MIX_MULTIPLIERS = (_as_int64(0xBF58476D1CE4E5B9), _as_int64(0x94D049BB133111EB))


def _logical_shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """z >>> bits on the 64 bits of an int64 (``>>`` on int64 is the arithmetic shift)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's output function on int64 tensors, elementwise, in two's-complement arithmetic:
    ``z ^= z >>> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >>> 27; z *= 0x94D049BB133111EB; z ^= z >>> 31``.
    A bijection of the 64-bit words whose every output bit depends on every input bit; over the
    Weyl sequence z_t = a + t 0x9E3779B97F4A7C15 it is the generator SplitMix64 (Java's
    ``SplittableRandom``), which passes TestU01's BigCrush."""
    z = (z ^ _logical_shift_right(z, 30)) * _MIX_MULTIPLIERS[0]
    z = (z ^ _logical_shift_right(z, 27)) * _MIX_MULTIPLIERS[1]
    return z ^ _logical_shift_right(z, 31)


def bernoulli_pixels(probs: torch.Tensor) -> torch.Tensor:
    """x ~ Bernoulli(probs) elementwise, as x = 1[u < p] with u uniform: the dynamic binarization
    the trainer draws each step (eager and compiled alike), from torch's global generator.

    On CUDA u is ``torch.rand_like``'s float32 uniform. On CPU, where PyTorch's generator is a
    serial Mersenne twister (one 32-bit draw a pixel for ``torch.rand``, a fifth of a compiled
    training step), the generator draws one int64 a per call, which seeds SplitMix64, a
    counter-based generator that the compiler vectorizes: with the pixels as a (rows, D) grid
    (``probs.reshape(len(probs), -1)``; a tensor of fewer than two dimensions is one row) and
    m = ceil(D / 3), word t of the row-major (rows, m) grid is

        w_t = mix64(a + t 0x9E3779B97F4A7C15)         (mod 2^64; :func:`mix64`)

    and pixel (r, c) takes its 21 bits k at 21 (c // m) of word (r, c mod m): u = k / 2^21. Then
    P(x = 1) = ceil(p 2^21) / 2^21, within 2^-21 (5e-7) of p, as float32's u = k / 2^24 is within
    2^-24 of it; x = 1[k < p 2^21] is exact in float32 (k < 2^24, p 2^21 a power-of-two scaling).
    Two calls' words come from one sequence of period 2^64 at random offsets: the chance that two
    calls of n words overlap is about 2n / 2^63.
    """
    if probs.device.type != "cpu":
        return (torch.rand_like(probs) < probs).to(probs.dtype)
    grid = probs.reshape(len(probs), -1) if probs.dim() >= 2 else probs.reshape(1, -1)
    rows, columns = grid.shape
    per_row = -(-columns // 3)
    # [-2^62, 2^62) is a range of 2^63: PyTorch keeps the low 63 bits of two 32-bit draws, unbiased
    a = torch.randint(-(1 << 62), 1 << 62, (), device=probs.device)
    counter = torch.arange(rows * per_row, device=probs.device).view(rows, per_row)
    words = mix64(a + counter * _WEYL_INCREMENT)
    # bits 0-62: an arithmetic shift's sign bits fall outside each field's mask
    k = torch.cat([(words >> (UNIFORM_BITS * j)) & _UNIFORM_MASK for j in range(3)], dim=1)
    return (k[:, :columns] < grid * float(1 << UNIFORM_BITS)).to(probs.dtype).reshape(probs.shape)
