"""Summarize: the spectrum of a weight's [rows, rest] matrix (spectral norm, condition number, stable
rank) and, for orthogonal laws, the orthogonality error.

Up to EXACT_SVD_ELEMENTS entries a float64 SVD gives every figure. Beyond, Golub-Kahan-Lanczos steps
on float32 find the top singular direction, and the spectral norm is that direction's Rayleigh
quotient evaluated in float64: never above the true norm, and below it by at most the stated `bound`
with probability at least 1 - FAILURE over the start vector (Kuczynski and Wozniakowski 1992). Both
are tested on Gaussian, rank-deficient, constant, near-constant and orthogonal matrices
(tests/service/summarize/test_spectral.py). Nothing here raises for what a tensor holds: a figure
that cannot be given is None, and `missing` says why (issue 15).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from initium.schemas.report import SpectralStats
from initium.service.plan import distributions as d
from initium.service.summarize.checks import LAW_CHECKS

# A float64 SVD of 512 x 512 takes about 20 ms on 2 cores, of 768 x 768 50 ms (GPT-2 small has twelve).
EXACT_SVD_ELEMENTS = 1 << 18
LANCZOS_STEPS = 24
# The probability, over the start vector, that the true spectral norm exceeds spectral_norm * (1 + bound).
FAILURE = 1e-3
# A Lanczos step whose new direction is below this fraction of the largest value seen so far adds
# only float32 rounding: the Krylov space is invariant to within it, and the steps stop.
TOLERANCE = 2.0**-17


def spectral(
    values: torch.Tensor, dist: d.Distribution | None, frobenius2: float | None = None
) -> SpectralStats | None:
    """Spectral norm, condition number and stable rank of the [rows, rest] matrix; orthogonality
    error for orthogonal laws. None for a vector or an all-zero matrix (no spectrum to speak of).

    `frobenius2` (the sum of squares, which summarize already has) spares a pass and, on the largest
    matrices, the memory of one. The stable rank ||W||_F^2 / ||W||_2^2 is clipped to
    [1, min(rows, cols)], where it always lies: only rounding can cross those ends.
    """
    if values.dim() < 2 or values.numel() == 0:
        return None
    w = values.reshape(values.shape[0], -1)
    if frobenius2 is None:
        frobenius2 = _sum_of_squares(w)
    if frobenius2 == 0:
        return None
    if not math.isfinite(frobenius2):
        return spectrum_missing(f"the sum of squares {frobenius2} is not finite in float64")
    if w.numel() > EXACT_SVD_ELEMENTS:
        return _estimated(w, frobenius2, dist, f"condition number: no full SVD above {EXACT_SVD_ELEMENTS} entries")
    w64 = w.to(torch.float64)
    if not bool(torch.isfinite(w64).all()):
        return spectrum_missing("the matrix holds NaN or Inf values")
    try:
        singular_values = torch.linalg.svdvals(w64)
    except RuntimeError as error:  # LAPACK's rare non-convergence: the estimate still stands
        return _estimated(w, frobenius2, dist, f"condition number: the full SVD failed ({error})")
    return _exact(w64, singular_values, dist)


def spectrum_missing(reason: str) -> SpectralStats:
    """The statistics of a matrix whose spectrum cannot be given, with the reason."""
    return SpectralStats(spectral_norm=None, condition_number=None, stable_rank=None, exact=False, missing=reason)


def _stable_rank(frobenius2: float, norm: float, w: torch.Tensor) -> float:
    return min(max(frobenius2 / norm**2, 1.0), float(min(w.shape)))


def _exact(w64: torch.Tensor, singular_values: torch.Tensor, dist: d.Distribution | None) -> SpectralStats:
    """Every figure from the singular values. The smallest is known only to within the SVD's rounding,
    about max(rows, cols) * eps * top (LAPACK's error bound): below that the matrix is numerically
    rank-deficient, and its condition number is missing rather than a rounding error's reciprocal."""
    top, bottom = float(singular_values[0]), float(singular_values[-1])
    floor = max(w64.shape) * torch.finfo(torch.float64).eps * top
    condition, missing = top / bottom if bottom > floor else None, None
    if condition is None:
        missing = f"condition number: the smallest singular value {bottom:.3g} is within rounding ({floor:.3g})"
    return SpectralStats(
        spectral_norm=top, condition_number=condition, bound=0.0, missing=missing, exact=True,
        stable_rank=_stable_rank(float(singular_values.square().sum()), top, w64),
        orthogonality_error=_orthogonality_error(w64, dist),
    )  # fmt: skip


def _estimated(w: torch.Tensor, frobenius2: float, dist: d.Distribution | None, why: str) -> SpectralStats:
    """The Lanczos estimate with its bound; the stable rank from it is then an upper estimate (the
    true one lies within [stable_rank / (1 + bound)^2, stable_rank])."""
    side = _Side(w.contiguous(), w.shape[1] > w.shape[0])
    steps = min(LANCZOS_STEPS, side.cols)
    direction = _lanczos_direction(side, steps, math.sqrt(frobenius2))
    if direction is None:
        return spectrum_missing("the Lanczos products are not finite: NaN or Inf values, or beyond float32's range")
    # ||W^T u|| <= ||W||_2 ||u|| for every u: the float64 Rayleigh quotient never overshoots, where
    # the float32 products did (constant 0.1 [1000, 1000]: 100.001 against 100, issue 15).
    # The float64 products round too: shaving a few units of their (blocked, pairwise) summation's
    # error, (log2(longest) + 2) ulps, keeps "never above" (a stacked identity's 2 read 2.000000000000001).
    shave = (math.log2(max(w.shape)) + 2) * 2.0**-52
    quotient = float(side.rmatvec64(direction).norm() / direction.norm()) * (1 - shave)
    norm = min(quotient, math.sqrt(frobenius2))
    bound = _bound(side.cols, steps, max(w.shape))
    if not math.isfinite(norm) or norm == 0 or bound is None:
        return spectrum_missing(
            f"no estimate with a bound: Rayleigh quotient {norm}, {steps} steps, {side.cols} columns"
        )
    return SpectralStats(
        spectral_norm=norm, condition_number=None, bound=bound, missing=why, exact=False,
        stable_rank=_stable_rank(frobenius2, norm, w), orthogonality_error=_orthogonality_error(w, dist),
    )  # fmt: skip


def _bound(n: int, steps: int, longest: int) -> float | None:
    """The relative bound: ||W||_2 <= estimate * (1 + bound) with probability >= 1 - FAILURE.

    Kuczynski and Wozniakowski (1992, SIAM J. Matrix Anal. Appl. 13(4):1094-1122), the Lanczos
    algorithm's probabilistic failure: from a start uniform on the sphere, the top Ritz value of the
    n x n positive semidefinite A = W^T W after k products with A misses its top eigenvalue
    (||W||_2^2) by a relative eps with probability at most 1.648 sqrt(n) exp(-sqrt(eps) (2k - 1)).
    The estimate here is at least that Ritz value's root. Steps that span the whole space are exact.
    Added: the stopping TOLERANCE (a Krylov space invariant to within it) and the float32 basis's
    rounding: a product's relative error of at most longest * 2^-24 (sums of `longest` terms) moves
    the direction found, and a Rayleigh quotient moves by the square of that.
    """
    rounding = TOLERANCE + (longest * 2.0**-24) ** 2
    if steps >= n:
        return rounding
    products = steps - 1  # V_k spans [v, Av, ..., A^(k-1) v] with A = W^T W
    eps = (math.log(1.648 * math.sqrt(n) / FAILURE) / (2 * products - 1)) ** 2
    return None if products < 1 or eps >= 1 else 1 / math.sqrt(1 - eps) - 1 + rounding


class _Side(NamedTuple):
    """W as [rows, cols] with cols the shorter side (a smaller n in the bound), over the stored matrix
    m (W = m or m^T): float32 products for the Lanczos steps, float64 ones in chunks for the estimate
    (a float64 copy of a 7B model's embedding would need 1 GB)."""

    m: torch.Tensor
    transposed: bool

    @property
    def cols(self) -> int:
        return int(self.m.shape[0] if self.transposed else self.m.shape[1])

    def float32(self) -> torch.Tensor:
        m32 = self.m.to(torch.float32)
        return m32.T if self.transposed else m32

    def rmatvec64(self, u: torch.Tensor) -> torch.Tensor:
        """W^T u in float64, a cache-sized chunk of m's rows at a time (larger chunks on a GPU)."""
        chunk = 1 << 14 if self.m.device.type == "cpu" else 1 << 24
        rows = max(1, chunk // self.m.shape[1])
        if self.transposed:  # W^T u = m u
            parts = [self.m[r : r + rows].to(torch.float64) @ u for r in range(0, self.m.shape[0], rows)]
            return torch.cat(parts)
        out = torch.zeros(self.m.shape[1], dtype=torch.float64, device=self.m.device)
        for r in range(0, self.m.shape[0], rows):  # W^T u = m^T u
            out.addmv_(self.m[r : r + rows].to(torch.float64).T, u[r : r + rows])
        return out


def _lanczos_direction(side: _Side, steps: int, frobenius: float) -> torch.Tensor | None:
    """A unit float64 vector u (rows) with ||W^T u|| close to ||W||_2, by Golub-Kahan-Lanczos
    bidiagonalization (Golub and Kahan, 1965) with full reorthogonalization, twice per step (Kahan's
    "twice is enough", Parlett 1980), so that float32 rounding cannot bring found directions back.
    The steps stop where a new direction is rounding noise next to the largest entry so far: measured
    against the first entry instead, N(1, 1e-6) [1000, 1000]'s noise passed for directions and the
    recurrence grew to Inf (issue 15). None when the products are not finite.

    Random init matrices have clustered top singular values (the Marchenko-Pastur edge), where power
    iteration crawls: 40 steps landed 0.5-0.8% low on GPT-2's shapes, at 80 products with w (the
    cost). 24 Lanczos steps (48 products) landed within 0.36% on GPT-2 and Llama shapes (27 Gaussian
    matrices, 256 x 2048 to 50257 x 768; within 0.1% on most), and are exact on low-rank and
    orthogonal matrices. The start vector comes from a fixed CPU generator, so the report is the same
    on every device.
    """
    w = side.float32()
    rows, cols = w.shape
    start = torch.randn(cols, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = (start / start.norm()).to(device=w.device, dtype=w.dtype)
    us = torch.zeros(steps, rows, dtype=w.dtype, device=w.device)
    vs = torch.zeros(steps, cols, dtype=w.dtype, device=w.device)
    alphas: list[float] = []
    betas: list[float] = []
    largest = 0.0
    for j in range(steps):
        vs[j] = v
        u = w @ v - (betas[-1] * us[j - 1] if j else 0.0)
        u = _orthogonalized(u, us[:j])
        alpha = float(u.norm())
        if not _sane(alpha, frobenius):
            break
        largest = max(largest, alpha)
        if alpha <= TOLERANCE * largest:
            break
        us[j] = u = u / alpha
        alphas.append(alpha)
        r = _orthogonalized(w.T @ u - alpha * v, vs[: j + 1])
        beta = float(r.norm())
        if j == steps - 1 or not _sane(beta, frobenius) or beta <= TOLERANCE * max(largest, beta):
            break
        largest = max(largest, beta)
        betas.append(beta)
        v = r / beta
    if not alphas:
        return None
    # W^T U_k = V_{k+1} B^T with B the k x (k+1) upper bidiagonal: the top left singular vector p of B
    # gives u = U_k p with ||W^T u|| = B's top singular value (in exact arithmetic).
    k = len(alphas)
    bidiagonal = torch.zeros(k, k + 1, dtype=torch.float64)
    bidiagonal[range(k), range(k)] = torch.tensor(alphas, dtype=torch.float64)
    bidiagonal[range(len(betas)), range(1, len(betas) + 1)] = torch.tensor(betas, dtype=torch.float64)
    p = torch.linalg.svd(bidiagonal).U[:, 0].to(w.device)
    direction: torch.Tensor = p @ us[:k].to(torch.float64)
    return direction


def _sane(value: float, frobenius: float) -> bool:
    """Every entry of the bidiagonal is at most ||W||_2 <= ||W||_F: beyond (with room for float32
    rounding), the recurrence has broken down and its last step is dropped."""
    return math.isfinite(value) and value <= 2 * frobenius


def _orthogonalized(x: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    for _ in range(2):
        x = x - basis.T @ (basis @ x)
    return x


def _sum_of_squares(w: torch.Tensor) -> float:
    return float(sum(float(c.double().square().sum()) for c in torch.split(w.reshape(-1), 1 << 20)))


def _orthogonality_error(w: torch.Tensor, dist: d.Distribution | None) -> float | None:
    gram_gain = None if dist is None else LAW_CHECKS.get(dist.family).gram_gain
    if dist is None or gram_gain is None:
        return None
    w = w.to(torch.float64)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    eye = torch.eye(gram.shape[0], dtype=torch.float64, device=w.device)
    return float((gram - gram_gain(dist) ** 2 * eye).abs().max())
