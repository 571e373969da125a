"""Draw a distribution's values from the Philox stream of one tensor, whole or any box-shaped slice.

Every law is computed in float64 from element-indexed Philox blocks (see [Note: counters] in
initium.service.init.philox) and rounded once to the target dtype by the caller, so float32,
float16 and bfloat16 outputs of one request are roundings of the same draws, and a slice is the
same bytes as that part of the whole tensor. On the CPU the numba fast path (initium.service.init.
fastpath) computes the same bits, run by run, straight into the output.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from initium.service.init import distributions as d
from initium.service.init import philox

F64 = torch.float64
CHUNK = 1 << 18  # elements per pass: bounds the int64 temporaries and keeps them in cache
# torch's trunc_normal_ switches from normal proposals to uniform ones below this mass (2026 main).
NORMAL_PROPOSAL_MIN_MASS = 0.3
MAX_ATTEMPTS = 100_000
Box = Sequence[tuple[int, int]]


@dataclass(frozen=True)
class Stream:
    """The Philox key of one tensor and the device its values are computed on."""

    key: tuple[int, int]
    device: torch.device


def full_box(shape: Sequence[int]) -> list[tuple[int, int]]:
    return [(0, n) for n in shape]


def sample(dist: d.Distribution, shape: tuple[int, ...], stream: Stream, box: Box | None = None) -> torch.Tensor:
    """float64 values of `box` (per-dimension [start, stop) ranges; None = whole) of a `shape` tensor."""
    box = list(box) if box is not None else full_box(shape)
    if not dist.elementwise or isinstance(dist, d.Eye):
        from initium.service.init import structured

        if isinstance(dist, d.Eye):
            return structured.eye(dist, shape, stream, box)
        return _cut(structured.whole(dist, shape, stream), box)
    out = torch.empty([stop - start for start, stop in box], dtype=F64, device=stream.device)
    if isinstance(dist, d.Constant):
        return out.fill_(dist.value)
    if _use_fastpath(stream.device):
        _fill_fast(dist, shape, box, stream.key, out)
        return out
    flat = out.view(-1)
    position = 0
    for index in index_chunks(shape, box, stream.device):
        flat[position : position + index.numel()] = reference(dist, index, stream.key)
        position += index.numel()
    return out


def _use_fastpath(device: torch.device) -> bool:
    if device.type != "cpu":
        return False
    from initium.service.init import fastpath

    return fastpath.AVAILABLE and fastpath.verified()


def _fill_fast(dist: d.Distribution, shape: Sequence[int], box: Box, key: tuple[int, int], out: torch.Tensor) -> None:
    from initium.service.init import fastpath

    buffer = out.view(-1).numpy()
    position = 0
    for start, length in runs(shape, box):
        fastpath.fill_run(dist, start, key, buffer[position : position + length])
        position += length


def runs(shape: Sequence[int], box: Box) -> Iterator[tuple[int, int]]:
    """The box as maximal runs of consecutive flat indices (start, length), in row-major order.

    Trailing dimensions the box covers whole merge into the run, so a whole tensor is one run.
    """
    if not shape:
        yield 0, 1
        return
    if any(stop <= start for start, stop in box):
        return
    inner = len(shape) - 1
    while inner > 0 and box[inner] == (0, shape[inner]):
        inner -= 1
    block = math.prod(shape[inner + 1 :])
    length = (box[inner][1] - box[inner][0]) * block
    strides = [math.prod(shape[i + 1 :]) for i in range(len(shape))]
    outer = [range(start, stop) for start, stop in box[:inner]]
    for position in itertools.product(*outer):
        base = sum(p * s for p, s in zip(position, strides, strict=False))
        yield base + box[inner][0] * block, length


def index_chunks(shape: Sequence[int], box: Box, device: torch.device, chunk: int = CHUNK) -> Iterator[torch.Tensor]:
    """The flat (row-major) element indices of `box`, in order, at most about `chunk` at a time."""
    if any(stop <= start for start, stop in box):
        return
    if not shape:
        yield torch.zeros(1, dtype=torch.int64, device=device)
        return
    strides = [math.prod(shape[i + 1 :]) for i in range(len(shape))]
    rows = torch.zeros(1, dtype=torch.int64, device=device)
    for (start, stop), stride in zip(box[:-1], strides[:-1], strict=True):
        rows = (rows[:, None] + torch.arange(start, stop, device=device) * stride).reshape(-1)
    start, stop = box[-1]
    width = stop - start
    rows_per_chunk = max(1, chunk // width)
    cols = min(width, chunk)
    for r in range(0, rows.numel(), rows_per_chunk):
        row_block = rows[r : r + rows_per_chunk]
        for c in range(start, stop, cols):
            span = torch.arange(c, min(c + cols, stop), device=device)
            yield (row_block[:, None] + span).reshape(-1)


def reference(dist: d.Distribution, index: torch.Tensor, key: tuple[int, int]) -> torch.Tensor:
    """The definition of every elementwise law in torch ops; any device; what the fast path must equal."""
    if isinstance(dist, d.Uniform):
        w0, w1, _, _ = philox.blocks(index, key)
        return dist.low + (dist.high - dist.low) * philox.uniform53(w0, w1)
    if isinstance(dist, d.Normal):
        return dist.loc + dist.scale * philox.standard_normal(philox.blocks(index, key))
    if isinstance(dist, d.TruncatedNormal):
        z = _standard_truncated(dist, index, key)
        return (dist.loc + dist.scale * z).clamp_(dist.low, dist.high)
    if isinstance(dist, d.Constant):
        return torch.full(index.shape, dist.value, dtype=F64, device=index.device)
    raise ValueError(f"{dist.family} is not elementwise")


def truncation(dist: d.TruncatedNormal) -> tuple[float, float, bool, float]:
    """Standardized bounds, the proposal (normal when the interval holds enough mass) and the peak x^2."""
    alpha = (dist.low - dist.loc) / dist.scale
    beta = (dist.high - dist.loc) / dist.scale
    mass = 0.5 * (math.erfc(-beta / math.sqrt(2)) - math.erfc(-alpha / math.sqrt(2)))
    nearest = min(max(0.0, alpha), beta)
    return alpha, beta, mass >= NORMAL_PROPOSAL_MIN_MASS, nearest * nearest


def _standard_truncated(dist: d.TruncatedNormal, index: torch.Tensor, key: tuple[int, int]) -> torch.Tensor:
    """N(0, 1) conditioned on [alpha, beta] by rejection; round `attempt` uses Philox counter word 2.

    Wide intervals propose normals and keep those inside; narrow or tail intervals propose
    uniforms on [alpha, beta] and keep x when -2 log v >= x^2 - m^2 (m the point nearest 0), i.e.
    v <= exp(-(x^2 - m^2) / 2), which needs only the device-independent log.
    """
    alpha, beta, normal_proposals, peak2 = truncation(dist)
    out = torch.empty(index.shape, dtype=F64, device=index.device)
    pending = torch.arange(index.numel(), device=index.device)
    for attempt in range(MAX_ATTEMPTS):
        w0, w1, w2, w3 = philox.blocks(index[pending], key, attempt)
        if normal_proposals:
            z = philox.standard_normal((w0, w1, w2, w3))
            accept = (z >= alpha) & (z <= beta)
        else:
            z = alpha + (beta - alpha) * philox.uniform53(w0, w1)
            accept = -2.0 * philox.log(philox.uniform_open(w2, w3)) >= z * z - peak2
        out[pending[accept]] = z[accept]
        pending = pending[~accept]
        if pending.numel() == 0:
            return out
    raise RuntimeError(f"truncated normal on [{alpha}, {beta}] std units accepted nothing in {MAX_ATTEMPTS} rounds")


def _cut(values: torch.Tensor, box: Box) -> torch.Tensor:
    part: torch.Tensor = values[tuple(slice(start, stop) for start, stop in box)]
    return part.contiguous()
