"""Draw a distribution's values from the Philox stream of one tensor, whole or any box-shaped slice.

Every law is computed in float64 from element-indexed Philox blocks (see [Note: counters] in
initium.service.materialize.philox) and rounded once to the target dtype by the caller, so float32,
float16 and bfloat16 outputs of one request are roundings of the same draws, and a slice is the
same bytes as that part of the whole tensor. On the CPU the numba fast path (initium.service.
materialize.fastpath) and on CUDA the Triton one (initium.service.materialize.tritonpath) compute the
same bits, run by run, straight into the output; each is used only after `first_mismatch` finds no
difference, and only for the law families it registers.

Each law family registers its sampler in SAMPLERS (elementwise laws their definition in ELEMENTWISE
too, through `elementwise_law`); the structured laws register theirs in initium.service.materialize.
structured. Adding a law: the law in initium.service.plan.distributions, one registered sampler here
or there, optionally a fast-path entry in each fast path, and its entry in initium.service.
summarize.checks; tests/service/materialize/test_law_registry.py holds the sets equal.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from initium.service.materialize import philox
from initium.service.plan import distributions as d
from initium.service.registry import Registry

F64 = torch.float64
CHUNK = 1 << 18  # elements per pass: bounds the int64 temporaries and keeps them in cache
# torch's trunc_normal_ switches from normal proposals to uniform ones below this mass (2026 main).
NORMAL_PROPOSAL_MIN_MASS = 0.3
MAX_ATTEMPTS = 100_000
Box = Sequence[tuple[int, int]]
Key = tuple[int, int]
# What a fast path writes: the values of indices [start, start + out.numel()), rounded to out.dtype.
RunFiller = Callable[[d.Distribution, int, Key, torch.Tensor], None]
# The laws and counters a fast path must reproduce before it is used: every elementwise law, both
# proposal kinds of the truncated normal, and indices across the 32-bit counter-word boundary.
# Parameters that float32 cannot hold exactly are among them (a kernel argument passed as float32
# once slipped through checks whose parameters were all powers of two).
CHECK_LAWS: tuple[d.Distribution, ...] = (
    d.Constant(0.1),
    d.Uniform(-1.0, 3.0),
    d.Uniform(-0.1, 0.3),
    d.Normal(0.5, 2.0),
    d.Normal(0.1, 0.02),
    d.TruncatedNormal(0.0, 1.0, -2.0, 2.0),
    d.TruncatedNormal(0.0, 0.02, -0.04, 0.04),
    d.TruncatedNormal(0.0, 1.0, 2.5, 4.0),
    d.TruncatedNormal(0.3, 0.7, 2.1, 3.3),
)
CHECK_STARTS = (0, 2**32 - 100, 2**45 + 3)
CHECK_KEY = (0x2545F491, 0x4F6CDD1D)


@dataclass(frozen=True)
class Stream:
    """The Philox key of one tensor and the device its values are computed on."""

    key: tuple[int, int]
    device: torch.device


def full_box(shape: Sequence[int]) -> list[tuple[int, int]]:
    return [(0, n) for n in shape]


# A law family's sampler: the values of `box` of a `shape` tensor, rounded once to `dtype`.
Sampler = Callable[[Any, tuple[int, ...], Stream, list[tuple[int, int]], torch.dtype], torch.Tensor]
SAMPLERS: Registry[Sampler] = Registry("law sampler")
# An elementwise law's definition: flat element indices and the Philox key -> float64 values.
Elementwise = Callable[[Any, torch.Tensor, Key], torch.Tensor]
ELEMENTWISE: Registry[Elementwise] = Registry("elementwise law")


def sample(
    dist: d.Distribution,
    shape: tuple[int, ...],
    stream: Stream,
    box: Box | None = None,
    dtype: torch.dtype = F64,
) -> torch.Tensor:
    """Values of `box` (per-dimension [start, stop) ranges; None = whole) of a `shape` tensor: the
    float64 draws, rounded once to `dtype` exactly as torch's `.to(dtype)` rounds them.

    Raises UnknownNameError for a law family that registered no sampler."""
    box = list(box) if box is not None else full_box(shape)
    return SAMPLERS.get(dist.family)(dist, tuple(shape), stream, box, dtype)


def elementwise_sampler(
    dist: d.Distribution, shape: tuple[int, ...], stream: Stream, box: list[tuple[int, int]], dtype: torch.dtype
) -> torch.Tensor:
    """The sampler of every elementwise law: the device's fast path where it is verified and knows
    the family, else the law's registered definition, chunk by chunk; either way straight into `dtype`."""
    out = torch.empty([stop - start for start, stop in box], dtype=dtype, device=stream.device)
    filler = _fast_filler(stream.device)
    if filler is not None and dist.family in _fast_families(stream.device):
        _fill_runs(filler, dist, shape, box, stream.key, out)
        return out
    flat = out.view(-1)
    position = 0
    for index in index_chunks(shape, box, stream.device):
        flat[position : position + index.numel()] = reference(dist, index, stream.key)  # copy_ rounds as .to
        position += index.numel()
    return out


def elementwise_law(family: str, sampler: Sampler = elementwise_sampler) -> Callable[[Elementwise], Elementwise]:
    """Register an elementwise law's definition under `family`, and `sampler` (by default the
    fast-path-or-definition one) as its sampler."""

    def add(definition: Elementwise) -> Elementwise:
        ELEMENTWISE.register(family)(definition)
        SAMPLERS.register(family)(sampler)
        return definition

    return add


def rounded(value: float, dtype: torch.dtype) -> float:
    """`value` as torch's float64 -> dtype conversion rounds it (so that a fill equals a cast)."""
    return float(torch.tensor(value, dtype=F64).to(dtype).item())


def _fast_filler(device: torch.device) -> RunFiller | None:
    """The compiled path for `device` once it has shown it matches the reference, else None."""
    if device.type == "cpu":
        from initium.service.materialize import fastpath

        if fastpath.AVAILABLE and fastpath.verified():
            return _numba_filler
    elif device.type == "cuda":
        from initium.service.materialize import tritonpath

        if tritonpath.AVAILABLE and tritonpath.verified(device):
            return tritonpath.fill_run
    return None


def _fast_families(device: torch.device) -> Collection[str]:
    """The law families `device`'s fast path registers a kernel for; the others use the reference."""
    if device.type == "cpu":
        from initium.service.materialize import fastpath

        return fastpath.KERNELS.names()
    if device.type == "cuda":
        from initium.service.materialize import tritonpath

        return tritonpath.FILLERS.names()
    return ()


def warm_up(device: torch.device) -> str:
    """Compile and verify `device`'s fast path now (numba: about a second; Triton on an H100: about
    20 s the first time), so that a worker pays it before it is ready, not inside its first job."""
    if _fast_filler(device) is None:
        return "reference"
    return "triton" if device.type == "cuda" else "numba"


def _numba_filler(dist: d.Distribution, start: int, key: Key, out: torch.Tensor) -> None:
    """The numba kernels write float64; other dtypes go through a cache-sized float64 scratch and
    torch's own cast, so no float64 copy of the whole tensor is ever held."""
    from initium.service.materialize import fastpath

    if out.dtype == F64:
        fastpath.fill_run(dist, start, key, out.numpy())
        return
    scratch = torch.empty(min(CHUNK, out.numel()), dtype=F64)
    for offset in range(0, out.numel(), CHUNK):
        part = out[offset : offset + CHUNK]
        fastpath.fill_run(dist, start + offset, key, scratch[: part.numel()].numpy())
        part.copy_(scratch[: part.numel()])


def _fill_runs(
    filler: RunFiller, dist: d.Distribution, shape: Sequence[int], box: Box, key: Key, out: torch.Tensor
) -> None:
    flat = out.view(-1)
    position = 0
    for start, length in runs(shape, box):
        filler(dist, start, key, flat[position : position + length])
        position += length


def first_mismatch(
    filler: RunFiller,
    device: torch.device,
    dtypes: Sequence[torch.dtype] = (F64,),
    families: Collection[str] | None = None,
) -> tuple[d.Distribution, torch.dtype] | None:
    """The first check law (of `families`; None: all) and dtype where `filler` differs from the
    reference on `device`, or None."""
    for law in CHECK_LAWS:
        if families is not None and law.family not in families:
            continue
        for start in CHECK_STARTS:
            ref = reference(law, torch.arange(start, start + 200, device=device), CHECK_KEY)
            for dtype in dtypes:
                fast = torch.empty(200, dtype=dtype, device=device)
                filler(law, start, CHECK_KEY, fast)
                if not torch.equal(fast.view(-1).view(torch.uint8), ref.to(dtype).view(-1).view(torch.uint8)):
                    return law, dtype
    return None


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
    """The definition of an elementwise law in torch ops; any device; what the fast paths must equal.

    Raises UnknownNameError for a family that registered no elementwise definition."""
    return ELEMENTWISE.get(dist.family)(dist, index, key)


def _fill(
    dist: d.Constant, shape: tuple[int, ...], stream: Stream, box: list[tuple[int, int]], dtype: torch.dtype
) -> torch.Tensor:
    # A constant needs no draws: one fill of the value as the cast rounds it.
    out = torch.empty([stop - start for start, stop in box], dtype=dtype, device=stream.device)
    return out.fill_(rounded(dist.value, dtype))


@elementwise_law("constant", sampler=_fill)
def _constant(dist: d.Constant, index: torch.Tensor, key: Key) -> torch.Tensor:
    return torch.full(index.shape, dist.value, dtype=F64, device=index.device)


@elementwise_law("uniform")
def _uniform(dist: d.Uniform, index: torch.Tensor, key: Key) -> torch.Tensor:
    w0, w1, _, _ = philox.blocks(index, key)
    return dist.low + (dist.high - dist.low) * philox.uniform53(w0, w1)


@elementwise_law("normal")
def _normal(dist: d.Normal, index: torch.Tensor, key: Key) -> torch.Tensor:
    return dist.loc + dist.scale * philox.standard_normal(philox.blocks(index, key))


@elementwise_law("truncated_normal")
def _truncated_normal(dist: d.TruncatedNormal, index: torch.Tensor, key: Key) -> torch.Tensor:
    z = _standard_truncated(dist, index, key)
    return (dist.loc + dist.scale * z).clamp_(dist.low, dist.high)


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
    raise no_acceptance(alpha, beta)


def no_acceptance(alpha: float, beta: float) -> RuntimeError:
    """What every sampler raises when some element's rejection rounds all failed."""
    return RuntimeError(
        f"truncated normal on [{alpha:.4g}, {beta:.4g}] std units accepted nothing in {MAX_ATTEMPTS} rounds; "
        "the interval holds almost no mass: widen the bounds (a, b) or move them toward the mean"
    )


# The structured laws (orthogonal, eye, dirac, ...) draw their Gaussians through `sample` and register
# their samplers on import; importing them here makes every family's sampler present with this module.
from initium.service.materialize import structured as _structured  # noqa: E402, F401
