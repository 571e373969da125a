"""log, cos and sqrt that give the same bits on every IEEE-754 device: only +, -, *, /, floor, frexp.

torch's own float64 log and cos come from different libraries per device and even per code path
(SLEEF vectors vs libm scalars on CPU, CUDA's libdevice on GPU) and may differ in the last ulp, so
values built on them could depend on where and in what chunks they were computed. Even torch's
CPU sqrt is not correctly rounded on AVX-512 builds (it differed from IEEE sqrt in 0.6% of
float64 values here), so sqrt is Newton's iteration on the mantissa as well. These kernels
are fdlibm's (Sun Microsystems, 1993) as musl carries them, evaluated in a fixed order with no
fused multiply-add: every operation rounds once, identically everywhere. Accuracy is < 1 ulp on
the reduced range, far below the sampling error of any statistic.

The polynomial helpers are plain arithmetic, so the same Python functions run on torch tensors
(the reference path, any device) and compiled by numba on scalars (the CPU fast path).
"""

from __future__ import annotations

from typing import Any

# A float64 scalar (numba) or a float64 torch.Tensor: the arithmetic below is the same for both.
Real = Any

LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
SQRT1_2 = 0.70710678118654757  # fdlibm's normalisation threshold: mantissa moved into [sqrt(1/2), sqrt(2))
PIO2 = 1.57079632679489655800e00
LG1, LG2, LG3, LG4 = (
    6.666666666666735130e-01,
    3.999999999940941908e-01,
    2.857142874366239149e-01,
    2.222219843214978396e-01,
)
LG5, LG6, LG7 = 1.818357216161805012e-01, 1.531383769920937332e-01, 1.479819860511658591e-01
C1, C2, C3 = 4.16666666666666019037e-02, -1.38888888888741095749e-03, 2.48015872894767294178e-05
C4, C5, C6 = -2.75573143513906633035e-07, 2.08757232129817482790e-09, -1.13596475577881948265e-11
S1, S2, S3 = -1.66666666666666324348e-01, 8.33333333332248946124e-03, -1.98412698298579493134e-04
S4, S5, S6 = 2.75573137070700676789e-06, -2.50507602534068634195e-08, 1.58969099521155010221e-10


def log_core(f: Real, k: Real) -> Real:
    """log(2^k * (1 + f)) for 1 + f in [sqrt(1/2), sqrt(2)) (fdlibm e_log.c, its final branch)."""
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (LG2 + w * (LG4 + w * LG6))
    t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)))
    r = t2 + t1
    hfsq = 0.5 * f * f
    return k * LN2_HI - ((hfsq - (s * (hfsq + r) + k * LN2_LO)) - f)


def kernel_cos(x: Real) -> Real:
    """cos(x) for |x| <= pi/4 (musl __cos.c with y = 0)."""
    z = x * x
    w = z * z
    r = z * (C1 + z * (C2 + z * C3)) + w * w * (C4 + z * (C5 + z * C6))
    hz = 0.5 * z
    w = 1.0 - hz
    return w + (((1.0 - w) - hz) + z * r)


def kernel_sin(x: Real) -> Real:
    """sin(x) for |x| <= pi/4 (musl __sin.c with y = 0)."""
    z = x * x
    w = z * z
    r = S2 + z * (S3 + z * S4) + z * w * (S5 + z * S6)
    v = z * x
    return x + v * (S1 + z * r)


# 1/sqrt(m) on [0.5, 2), least-squares quartic: relative error below 2.8e-3.
RSQRT0, RSQRT1, RSQRT2, RSQRT3, RSQRT4 = 2.44562014, -3.0687007, 2.44754827, -0.9791686, 0.15269265


def sqrt_mantissa(m: Real) -> Real:
    """sqrt(m) for m in [0.5, 2) without division: Newton on 1/sqrt(m), then one correction of m * r.

    The quartic start has relative error < 2.8e-3; each step r (3/2 - m r^2 / 2) squares it
    (1.2e-5, 2e-10, 6e-20), and the last line (Markstein 1990) brings m * r within about an ulp.
    The exact bits are whatever these roundings give, the same on every device.
    """
    r = RSQRT0 + m * (RSQRT1 + m * (RSQRT2 + m * (RSQRT3 + m * RSQRT4)))
    half = 0.5 * m
    r = r * (1.5 - half * r * r)
    r = r * (1.5 - half * r * r)
    r = r * (1.5 - half * r * r)
    s = m * r
    return s + (0.5 * r) * (m - s * s)
