"""The Kolmogorov distribution: P(D_n >= d) for the one-sample KS statistic of n draws.

Exact for every n by Durbin's matrix formula, as Marsaglia, Tsang and Wang (2003, "Evaluating
Kolmogorov's distribution", J. Stat. Softw. 8(18)) compute it (scipy.stats.kstwo uses the same for
small n): P(D_n < d) = n!/n^n * (H^n)[k, k] for an m x m matrix H, m = 2 floor(n d) + 1. Its cost
grows as m^3 log n, so a statistic whose matrix is over the report's budget gets Stephens' (1970)
asymptotic form instead: every n up to 300 is exact at every d, n = 1,000 down to p = 5e-5, and
n = 20,000 (the report's KS sample) only above p = 0.87; where Stephens' form is used it is within
0.0015 of the exact value (checked for n from 100 to 20,000). scipy is a test dependency only, so
the worker carries its own.
"""

from __future__ import annotations

import math

import numpy as np

# The largest m^3 log2(n) computed exactly: a few milliseconds (the report runs one per tensor).
EXACT_BUDGET = 3e7


def kolmogorov_pvalue(d_stat: float, n: int) -> float:
    """P(D_n >= d_stat) for n >= 1 draws of a continuous law: exact where its matrix fits
    EXACT_BUDGET, else Stephens' form (see the module's docstring)."""
    if n < 1 or d_stat <= 0.5 / n:
        return 1.0  # D_n >= 1/(2n) always
    if d_stat >= 1.0:
        return 0.0
    k = math.floor(n * d_stat) + 1
    m = 2 * k - 1
    if m**3 * math.log2(n + 1) <= EXACT_BUDGET:
        return min(1.0, max(0.0, 1.0 - _durbin_cdf(d_stat, n, k)))
    return _stephens(d_stat, n)


def _durbin_cdf(d_stat: float, n: int, k: int) -> float:
    """P(D_n < d_stat) by Marsaglia, Tsang and Wang's program, with numpy's matrix products and the
    scale of each product kept as a logarithm (theirs keeps a power of 10^140)."""
    m = 2 * k - 1
    h = k - n * d_stat
    rows = np.arange(m)[:, None]
    cols = np.arange(m)[None, :]
    diff = rows - cols + 1  # H[i, j] = 1 / (i - j + 1)! where i - j + 1 >= 0, corrected on the edges
    matrix = (diff >= 0).astype(np.float64)
    powers = h ** np.arange(1, m + 1, dtype=np.float64)
    matrix[:, 0] -= powers
    matrix[m - 1, :] -= powers[::-1]
    if 2 * h - 1 > 0:
        matrix[m - 1, 0] += (2 * h - 1) ** m
    log_factorial = np.array([math.lgamma(v + 1) for v in range(m + 1)])
    matrix *= np.where(diff > 0, np.exp(-log_factorial[np.clip(diff, 0, m)]), 1.0)
    power, log_scale = _matrix_power(matrix, n)
    log_value = log_scale + math.lgamma(n + 1) - n * math.log(n)
    entry = float(power[k - 1, k - 1])
    return 0.0 if entry <= 0 else math.exp(min(log_value + math.log(entry), 0.0))


def _matrix_power(matrix: np.ndarray, n: int) -> tuple[np.ndarray, float]:
    """(P, s) with matrix^n = P * exp(s) for n >= 1, by repeated squaring, each product rescaled to
    max |P| = 1."""
    base, base_log = matrix, 0.0
    while not n & 1:
        base, base_log = _normalized(base @ base, 2 * base_log)
        n >>= 1
    result, result_log = base, base_log
    n >>= 1
    while n:
        base, base_log = _normalized(base @ base, 2 * base_log)
        if n & 1:
            result, result_log = _normalized(result @ base, result_log + base_log)
        n >>= 1
    return result, result_log


def _normalized(matrix: np.ndarray, log_scale: float) -> tuple[np.ndarray, float]:
    top = float(np.abs(matrix).max())
    if top == 0.0 or not math.isfinite(top):
        return matrix, log_scale
    return matrix / top, log_scale + math.log(top)


def _stephens(d_stat: float, n: int) -> float:
    """Stephens (1970): the asymptotic series at lambda = (sqrt(n) + 0.12 + 0.11 / sqrt(n)) d."""
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d_stat
    if lam < 0.2:
        return 1.0
    total = math.fsum((-1.0) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam) for k in range(1, 101))
    return min(1.0, max(0.0, 2.0 * total))
