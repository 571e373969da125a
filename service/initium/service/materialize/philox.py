"""Philox4x32-10 (Salmon, Moraes, Dror and Shaw, SC 2011) in torch int64 ops, and the draws built on it.

[Note: counters] Element i of a tensor takes the block philox(counter=(i mod 2^32, i div 2^32,
attempt, 0), key=(k0, k1)), where the key is a hash of (seed, tensor name) and `attempt` numbers
the rejection rounds of a truncated normal (0 otherwise). Its four 32-bit words make two 53-bit
uniforms: u from (w0, w1), v from (w2, w3). So an element's value depends on nothing but its own
index: any slice, chunking, device or worker count gives the same bits.

Every transform runs in float64 with initium.service.materialize.detmath, whose results do not depend on
the device, and is rounded once to the target dtype by the caller.
"""

from __future__ import annotations

import torch

from initium.service.materialize.detmath import PIO2, SQRT1_2, kernel_cos, kernel_sin, log_core, sqrt_mantissa

M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK32 = 0xFFFFFFFF
TWO_POW_M53 = 2.0**-53
Words = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def philox4x32_10(counter: Words, k0: int, k1: int) -> Words:
    """Ten Philox rounds over int64 tensors holding uint32 words.

    The 32x32-bit products wrap in int64; the arithmetic shift and the mask still recover bits 32-63
    of the true 64-bit product, identically on CPU and CUDA.
    """
    c0, c1, c2, c3 = counter
    for _ in range(10):
        p0 = c0 * M0
        p1 = c2 * M1
        c0, c1, c2, c3 = ((p1 >> 32) & MASK32) ^ c1 ^ k0, p1 & MASK32, ((p0 >> 32) & MASK32) ^ c3 ^ k1, p0 & MASK32
        k0, k1 = (k0 + W0) & MASK32, (k1 + W1) & MASK32
    return c0, c1, c2, c3


def blocks(index: torch.Tensor, key: tuple[int, int], attempt: int | torch.Tensor = 0) -> Words:
    """The Philox block of each element index (see [Note: counters])."""
    zeros = torch.zeros_like(index)
    c2 = zeros + attempt if isinstance(attempt, int) else attempt
    return philox4x32_10((index & MASK32, index >> 32, c2, zeros), *key)


def uniform53(hi: torch.Tensor, lo: torch.Tensor) -> torch.Tensor:
    """[0, 1) with 53 random bits: the top 27 of `hi` and the top 26 of `lo`, scaled exactly."""
    return (((hi >> 5) << 26) | (lo >> 6)).to(torch.float64) * TWO_POW_M53


def uniform_open(hi: torch.Tensor, lo: torch.Tensor) -> torch.Tensor:
    """(0, 1), never 0: 52 random bits as the odd numerator (2m + 1) / 2^53 (exact in float64)."""
    m = ((hi >> 5) << 25) | (lo >> 7)
    return (2 * m + 1).to(torch.float64) * TWO_POW_M53


def log(x: torch.Tensor) -> torch.Tensor:
    """Natural log of x > 0, device-independent (detmath.log_core after an exact frexp)."""
    mantissa, exponent = torch.frexp(x)
    small = mantissa < SQRT1_2
    mantissa = torch.where(small, mantissa * 2.0, mantissa)
    k = (exponent - small.to(exponent.dtype)).to(torch.float64)
    result: torch.Tensor = log_core(mantissa - 1.0, k)
    return result


def sqrt(x: torch.Tensor) -> torch.Tensor:
    """Square root of x > 0, device-independent: exact frexp/ldexp around detmath.sqrt_mantissa."""
    mantissa, exponent = torch.frexp(x)
    odd = (exponent & 1) == 1
    mantissa = torch.where(odd, mantissa * 2.0, mantissa)
    return torch.ldexp(sqrt_mantissa(mantissa), (exponent - odd.to(exponent.dtype)) // 2)


def cos_2pi(u: torch.Tensor) -> torch.Tensor:
    """cos(2 pi u) for u in [0, 1), reduced exactly to an octant and evaluated by the kernels."""
    t = u * 4.0
    quadrant = torch.floor(t)
    f = t - quadrant
    upper = f >= 0.5
    x = torch.where(upper, 1.0 - f, f) * PIO2
    c, s = kernel_cos(x), kernel_sin(x)
    cos_theta = torch.where(upper, s, c)
    sin_theta = torch.where(upper, c, s)
    q = quadrant.to(torch.int64)
    return torch.where(q == 0, cos_theta, torch.where(q == 1, -sin_theta, torch.where(q == 2, -cos_theta, sin_theta)))


def standard_normal(words: Words) -> torch.Tensor:
    """Box-Muller (1958), the cosine branch: sqrt(-2 log u) cos(2 pi v), u in (0, 1) and v in [0, 1)."""
    w0, w1, w2, w3 = words
    radius = sqrt(-2.0 * log(uniform_open(w0, w1)))
    return radius * cos_2pi(uniform53(w2, w3))
