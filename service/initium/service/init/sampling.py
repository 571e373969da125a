"""Draw a distribution's values with torch, on any device, from one generator per tensor.

Every law is sampled in float64 and rounded once to the target dtype by the caller, so float32,
float16 and bfloat16 outputs of one request are roundings of the same draws.
"""

from __future__ import annotations

import torch

from initium.service.init import distributions as d

F64 = torch.float64


def sample(dist: d.Distribution, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """A float64 tensor of `shape` drawn from `dist` on the generator's device."""
    device = generator.device
    if isinstance(dist, d.Constant):
        return torch.full(shape, dist.value, dtype=F64, device=device)
    if isinstance(dist, d.Uniform):
        return torch.empty(shape, dtype=F64, device=device).uniform_(dist.low, dist.high, generator=generator)
    if isinstance(dist, d.Normal):
        return torch.empty(shape, dtype=F64, device=device).normal_(dist.loc, dist.scale, generator=generator)
    if isinstance(dist, d.TruncatedNormal):
        return _truncated_normal(dist, shape, generator)
    return _orthogonal(dist, shape, generator)


def _truncated_normal(dist: d.TruncatedNormal, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Inverse-CDF sampling: x = ndtri(Phi(alpha) + u (Phi(beta) - Phi(alpha))), u ~ U(0, 1).

    Exact in distribution and loop-free (unlike rejection, whose iteration count depends on the
    draws). When both bounds lie right of the mean the interval is mirrored to the left tail,
    where Phi keeps its relative precision (the erfinv instability of pytorch/pytorch#155588
    comes from evaluating the right tail near 1).
    """
    alpha = (dist.low - dist.loc) / dist.scale
    beta = (dist.high - dist.loc) / dist.scale
    mirrored = alpha > 0
    if mirrored:
        alpha, beta = -beta, -alpha
    lo = torch.special.ndtr(torch.tensor(alpha, dtype=F64))
    hi = torch.special.ndtr(torch.tensor(beta, dtype=F64))
    u = torch.empty(shape, dtype=F64, device=generator.device).uniform_(0.0, 1.0, generator=generator)
    z = torch.special.ndtri(lo.item() + u * (hi - lo).item()).clamp_(alpha, beta)
    if mirrored:
        z.neg_()
    out: torch.Tensor = z.mul_(dist.scale).add_(dist.loc).clamp_(dist.low, dist.high)
    return out


def _orthogonal(dist: d.Orthogonal, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """gain * Q from the QR of a Gaussian matrix, with sign(diag(R)) folded in (Mezzadri 2007) so Q is Haar."""
    flat = torch.empty((dist.rows, dist.cols), dtype=F64, device=generator.device).normal_(generator=generator)
    wide = dist.rows < dist.cols
    if wide:
        flat = flat.T
    q, r = torch.linalg.qr(flat)
    signs = torch.sign(torch.diagonal(r))
    # sign(0) = 0 would zero a column; a zero diagonal has probability 0 but costs nothing to guard.
    signs[signs == 0] = 1
    q = q * signs
    if wide:
        q = q.T
    out: torch.Tensor = (q * dist.gain).reshape(shape).contiguous()
    return out
