"""Laws with structure across entries: orthogonal matrices, identity patterns, masks and mirrors.

All randomness comes from the tensor's Philox stream through initium.service.materialize.sampling, so
these inherit its device independence; only a QR's rounding belongs to the device (see orthogonal).
Each registers its sampler in sampling.SAMPLERS under its law family.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from initium.service.materialize.sampling import F64, SAMPLERS, Box, Stream, sample
from initium.service.plan import distributions as d

# The sparse mask draws its sort keys from a second Philox key derived from the tensor's, so
# mask and values are independent streams of the same (seed, name).
_MASK_KEY_XOR = (0x6A09E667, 0xBB67AE85)


# A law whose every entry depends on the whole tensor: its full float64 values.
Whole = Callable[[Any, tuple[int, ...], Stream], torch.Tensor]


def whole_law(family: str) -> Callable[[Whole], Whole]:
    """Register `family`'s sampler as the box cut from its full float64 tensor, rounded to the dtype."""

    def add(fn: Whole) -> Whole:
        def sampler(
            dist: d.Distribution, shape: tuple[int, ...], stream: Stream, box: list[tuple[int, int]], dtype: torch.dtype
        ) -> torch.Tensor:
            return _cut(fn(dist, shape, stream), box).to(dtype)

        SAMPLERS.register(family)(sampler)
        return fn

    return add


def _cut(values: torch.Tensor, box: Box) -> torch.Tensor:
    part: torch.Tensor = values[tuple(slice(start, stop) for start, stop in box)]
    return part.contiguous()


@whole_law("orthogonal")
def orthogonal(dist: d.Orthogonal, shape: tuple[int, ...], stream: Stream) -> torch.Tensor:
    """gain * Q from the QR of a Philox Gaussian matrix, sign(diag R) folded in (Mezzadri 2007): Haar.

    Every entry depends on the whole matrix, so slices are cut from the full tensor, and the QR's
    rounding belongs to the device's LAPACK or cuSOLVER: it runs in float64, so a float32 result
    agrees across devices, a float64 one may differ in its last bits.
    """
    flat = sample(d.Normal(0.0, 1.0), (dist.rows, dist.cols), stream)
    wide = dist.rows < dist.cols
    if wide:
        flat = flat.T
    q, r = torch.linalg.qr(flat)
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1  # sign(0) = 0 would zero a column; probability 0, guarded for free
    q = q * signs
    if wide:
        q = q.T
    out: torch.Tensor = (q * dist.gain).reshape(shape).contiguous()
    return out


@SAMPLERS.register("eye")
def eye(
    dist: d.Eye, shape: tuple[int, ...], stream: Stream, box: list[tuple[int, int]], dtype: torch.dtype = F64
) -> torch.Tensor:
    """The identity pattern on the requested box, plus the noise the law asks for (elementwise);
    computed on the box alone, so a slice never builds the whole tensor."""
    (r0, r1), (c0, c1) = box
    rows = torch.arange(r0, r1, device=stream.device)[:, None]
    cols = torch.arange(c0, c1, device=stream.device)[None, :]
    on = (rows % dist.cols == cols) if dist.tile else (rows == cols)
    # float64 files get the gain exactly (issue 15: gain 0.1 was written as float32(0.1), 1e300 failed
    # the job); every other dtype keeps the float32 gain it always had, so their bytes do not change.
    gain_dtype = F64 if dtype == F64 else torch.float32
    pattern = torch.where(on, torch.tensor(dist.gain, dtype=gain_dtype, device=stream.device), 0.0).to(F64)
    if dist.noise > 0:
        pattern = pattern + sample(d.Normal(0.0, dist.noise), shape, stream, box)
    return pattern.to(dtype)


@whole_law("dirac")
def _dirac(dist: d.Dirac, shape: tuple[int, ...], stream: Stream) -> torch.Tensor:
    device = stream.device
    out = torch.zeros((dist.out_channels, dist.in_per_group, dist.kernel), dtype=F64, device=device)
    per_group = dist.out_channels // dist.groups
    channel = torch.arange(min(per_group, dist.in_per_group), device=device)
    for group in range(dist.groups):
        out[group * per_group + channel, channel, dist.centre] = 1.0
    return out.reshape(shape)


@whole_law("delta_orthogonal")
def _delta_orthogonal(dist: d.DeltaOrthogonal, shape: tuple[int, ...], stream: Stream) -> torch.Tensor:
    h = orthogonal(
        d.Orthogonal(dist.gain, dist.out_channels, dist.in_channels), (dist.out_channels, dist.in_channels), stream
    )
    out = torch.zeros((dist.out_channels, dist.in_channels, dist.kernel), dtype=F64, device=stream.device)
    out[:, :, dist.centre] = h
    return out.reshape(shape)


@whole_law("sparse")
def _sparse(dist: d.Sparse, shape: tuple[int, ...], stream: Stream) -> torch.Tensor:
    values = sample(d.Normal(0.0, dist.scale), (dist.rows, dist.cols), stream)
    if dist.zeros == 0:
        return values
    mask_stream = Stream((stream.key[0] ^ _MASK_KEY_XOR[0], stream.key[1] ^ _MASK_KEY_XOR[1]), stream.device)
    keys = sample(d.Uniform(0.0, 1.0), (dist.rows, dist.cols), mask_stream)
    # The `zeros` smallest keys of each column: a uniformly random subset of exactly that size;
    # 53-bit keys tie with negligible probability, and topk's answer is then the same on any device.
    zero_rows = torch.topk(keys, dist.zeros, dim=0, largest=False).indices
    return values.scatter_(0, zero_rows, 0.0)


@whole_law("looks_linear")
def _looks_linear(dist: d.LooksLinear, shape: tuple[int, ...], stream: Stream) -> torch.Tensor:
    half_shape = (shape[0], shape[1] // 2, *shape[2:])
    w0 = orthogonal(d.Orthogonal(dist.gain, dist.rows, dist.half_cols), half_shape, stream)
    return torch.cat([w0, -w0], dim=1)
