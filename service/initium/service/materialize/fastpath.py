"""The CPU fast path: the same Philox bits and float64 transforms as the torch reference, compiled by numba.

Identical results are the contract (tests compare every law bit for bit): the integer steps use
uint64 with explicit masks, the float steps are the same detmath functions compiled as written
(numba neither reassociates nor fuses multiply-adds without fastmath, which stays off), and frexp
and ldexp are exact bit manipulations (valid for the normal, positive numbers they see here), so
the loops vectorize. Kernels fill a contiguous run of element indices [start, start + len(out));
each law family's entry in KERNELS launches its kernel.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from initium.service.materialize import detmath
from initium.service.plan import distributions as d
from initium.service.registry import Registry

try:
    import numba
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic
except ImportError:  # the reference path in torch ops is always there
    AVAILABLE = False
else:
    AVAILABLE = True

if AVAILABLE:

    @intrinsic
    def _bits(typingctx, x):  # type: ignore[no-untyped-def]
        """The IEEE-754 bit pattern of a float64, as an int64 (an LLVM bitcast)."""

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            return builder.bitcast(args[0], ir.IntType(64))

        return types.int64(types.float64), codegen

    @intrinsic
    def _from_bits(typingctx, n):  # type: ignore[no-untyped-def]
        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            return builder.bitcast(args[0], ir.DoubleType())

        return types.float64(types.int64), codegen

    _U32 = np.uint64(0xFFFFFFFF)
    _M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
    _W0, _W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
    _S32, _S5, _S6, _S7, _S25, _S26 = (np.uint64(n) for n in (32, 5, 6, 7, 25, 26))
    _ONE = np.uint64(1)
    _2M53 = 2.0**-53
    _EXP_MASK = np.int64(0x7FF << 52)
    _HALF_EXP = np.int64(1022 << 52)

    _log_core = numba.njit(inline="always")(detmath.log_core)
    _kcos = numba.njit(inline="always")(detmath.kernel_cos)
    _ksin = numba.njit(inline="always")(detmath.kernel_sin)
    _sqrt_mantissa = numba.njit(inline="always")(detmath.sqrt_mantissa)

    @numba.njit(inline="always")
    def _frexp(x: float) -> tuple[float, int]:
        """frexp for positive normal x: mantissa in [0.5, 1) and exponent, exactly as math.frexp."""
        b = _bits(x)
        return _from_bits((b & ~_EXP_MASK) | _HALF_EXP), ((b >> 52) & 0x7FF) - 1022

    @numba.njit(inline="always")
    def _ldexp(y: float, k: int) -> float:
        """y * 2^k for normal y and a normal result: add k to the exponent field."""
        return _from_bits(_bits(y) + (np.int64(k) << 52))

    @numba.njit(inline="always")
    def _philox4x32_10(c0: int, c1: int, c2: int, c3: int, k0: int, k1: int) -> tuple[int, int, int, int]:
        a, b = np.uint64(k0), np.uint64(k1)
        for _ in range(10):
            p0 = c0 * _M0
            p1 = c2 * _M1
            c0, c1, c2, c3 = ((p1 >> _S32) & _U32) ^ c1 ^ a, p1 & _U32, ((p0 >> _S32) & _U32) ^ c3 ^ b, p0 & _U32
            a, b = (a + _W0) & _U32, (b + _W1) & _U32
        return c0, c1, c2, c3

    @numba.njit(inline="always")
    def _philox(i: int, attempt: int, k0: int, k1: int) -> tuple[int, int, int, int]:
        u = np.uint64(i)
        return _philox4x32_10(u & _U32, u >> _S32, np.uint64(attempt), np.uint64(0), k0, k1)

    @numba.njit(inline="always")
    def _uniform53(hi: int, lo: int) -> float:
        return float(((hi >> _S5) << _S26) | (lo >> _S6)) * _2M53

    @numba.njit(inline="always")
    def _uniform_open(hi: int, lo: int) -> float:
        m = ((hi >> _S5) << _S25) | (lo >> _S7)
        return float(m + m + _ONE) * _2M53

    @numba.njit(inline="always")
    def _log(x: float) -> float:
        m, e = _frexp(x)
        small = m < detmath.SQRT1_2
        m = m * 2.0 if small else m
        return _log_core(m - 1.0, float(e - 1 if small else e))

    @numba.njit(inline="always")
    def _sqrt(x: float) -> float:
        m, e = _frexp(x)
        odd = (e & 1) == 1
        m = m * 2.0 if odd else m
        return _ldexp(_sqrt_mantissa(m), (e - 1 if odd else e) // 2)

    @numba.njit(inline="always")
    def _cos_2pi(u: float) -> float:
        t = u * 4.0
        q = math.floor(t)
        f = t - q
        upper = f >= 0.5
        x = ((1.0 - f) if upper else f) * detmath.PIO2
        c, s = _kcos(x), _ksin(x)
        cos_t = s if upper else c
        sin_t = c if upper else s
        # quadrant 0: cos, 1: -sin, 2: -cos, 3: sin
        v = sin_t if (q == 1.0 or q == 3.0) else cos_t
        return -v if (q == 1.0 or q == 2.0) else v

    @numba.njit(inline="always")
    def _normal(w0: int, w1: int, w2: int, w3: int) -> float:
        return _sqrt(-2.0 * _log(_uniform_open(w0, w1))) * _cos_2pi(_uniform53(w2, w3))

    @numba.njit(parallel=True, cache=True)
    def _uniform_kernel(start: int, k0: int, k1: int, low: float, span: float, out: np.ndarray) -> None:
        for j in numba.prange(out.shape[0]):
            w0, w1, _, _ = _philox(start + j, 0, k0, k1)
            out[j] = low + span * _uniform53(w0, w1)

    @numba.njit(parallel=True, cache=True)
    def _normal_kernel(start: int, k0: int, k1: int, loc: float, scale: float, out: np.ndarray) -> None:
        for j in numba.prange(out.shape[0]):
            w0, w1, w2, w3 = _philox(start + j, 0, k0, k1)
            out[j] = loc + scale * _normal(w0, w1, w2, w3)

    @numba.njit(parallel=True, cache=True)
    def _truncated_kernel(
        start: int, k0: int, k1: int, alpha: float, beta: float, normal_proposals: bool, peak2: float,
        max_attempts: int, out: np.ndarray,
    ) -> None:  # fmt: skip
        for j in numba.prange(out.shape[0]):
            z = math.nan
            for attempt in range(max_attempts):
                w0, w1, w2, w3 = _philox(start + j, attempt, k0, k1)
                if normal_proposals:
                    z = _normal(w0, w1, w2, w3)
                    if alpha <= z <= beta:
                        break
                else:
                    z = alpha + (beta - alpha) * _uniform53(w0, w1)
                    if -2.0 * _log(_uniform_open(w2, w3)) >= z * z - peak2:
                        break
                z = math.nan
            out[j] = z


log = logging.getLogger("initium.fastpath")


@functools.cache
def verified() -> bool:
    """True when the compiled kernels reproduce the torch reference bit for bit in this process.

    numba's on-disk cache is not invalidated when detmath (inlined into the kernels) changes, and a
    new numba or LLVM could compile the arithmetic differently; either would silently change
    values. So before first use every law is compared with the reference (sampling.first_mismatch),
    and any difference turns the fast path off (slower, never different).
    """
    if not AVAILABLE:
        return False
    from initium.service.materialize.sampling import first_mismatch

    mismatch = first_mismatch(
        lambda law, start, key, out: fill_run(law, start, key, out.numpy()),
        torch.device("cpu"),
        families=KERNELS.names(),
    )
    if mismatch is not None:
        log.warning("numba fast path differs from the torch reference for %s; using the reference", mismatch[0])
    return mismatch is None


# The kernel of each law family this path compiles; a family without one uses the reference.
Kernel = Callable[[Any, int, tuple[int, int], np.ndarray], None]
KERNELS: Registry[Kernel] = Registry("numba kernel")


def fill_run(dist: d.Distribution, start: int, key: tuple[int, int], out: np.ndarray) -> None:
    """Write the values of element indices [start, start + len(out)) into the float64 array `out`.

    Raises UnknownNameError for a law family without a kernel here."""
    KERNELS.get(dist.family)(dist, start, key, out)


@KERNELS.register("uniform")
def _uniform(dist: d.Uniform, start: int, key: tuple[int, int], out: np.ndarray) -> None:
    _uniform_kernel(start, key[0], key[1], dist.low, dist.high - dist.low, out)


@KERNELS.register("normal")
def _normal_law(dist: d.Normal, start: int, key: tuple[int, int], out: np.ndarray) -> None:
    _normal_kernel(start, key[0], key[1], dist.loc, dist.scale, out)


@KERNELS.register("truncated_normal")
def _truncated(dist: d.TruncatedNormal, start: int, key: tuple[int, int], out: np.ndarray) -> None:
    from initium.service.materialize.sampling import MAX_ATTEMPTS, no_acceptance, truncation

    alpha, beta, normal_proposals, peak2 = truncation(dist)
    _truncated_kernel(start, key[0], key[1], alpha, beta, normal_proposals, peak2, MAX_ATTEMPTS, out)
    if np.isnan(out).any():
        raise no_acceptance(alpha, beta)
    np.clip(dist.loc + dist.scale * out, dist.low, dist.high, out=out)


@KERNELS.register("constant")
def _constant(dist: d.Constant, start: int, key: tuple[int, int], out: np.ndarray) -> None:
    out.fill(dist.value)
