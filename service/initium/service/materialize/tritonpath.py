"""The CUDA fast path: the same Philox bits and float64 transforms as the torch reference, as Triton kernels.

The eager reference spends a kernel launch and an int64 temporary per Philox step (about 0.007 of
torch's native sampler on an H100); one fused kernel per law keeps everything in registers.
Identical results are the contract, as for the numba CPU path: the Philox words are uint32 and their
products exact 64-bit ones, frexp and ldexp are exact bit manipulations (valid for the
normal, positive numbers they see here), the float steps are the detmath functions themselves
compiled as written, and kernels launch with `enable_fp_fusion=False` so that no multiply-add is
contracted into an FMA (one rounding instead of two would change the last bit). Before first use
`verified()` compares every law with the reference on the device; any difference turns this path
off (slower, never different). Kernels fill a contiguous run of element indices and round each
float64 value once to the output's dtype in registers, so no float64 copy of a tensor is written.
"""

import functools
import logging
import types
from collections.abc import Callable
from typing import Any

import torch

from initium.schemas.dtypes import DTYPES
from initium.service.materialize import detmath
from initium.service.plan import distributions as d
from initium.service.registry import Registry

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only torch builds carry no Triton; the reference path always works
    AVAILABLE = False
else:
    AVAILABLE = True

# Swept on an H100 (256 to 2048 elements per program, 2 to 8 warps): all within 5%.
BLOCK = 1024
NUM_WARPS = 4
log = logging.getLogger("initium.tritonpath")
# Every float dtype of the one table: the kernels round into each, so each is checked.
_FLOAT_DTYPES = tuple(getattr(torch, info.torch) for info in map(DTYPES.get, DTYPES.names()) if info.floating)


def _jit_detmath(fn: Callable[..., Any]) -> Any:
    """triton.jit of a detmath function, its float constants given as constexpr.

    Triton reads no plain module globals inside a kernel, and a copy of the polynomials here could
    drift from the ones the CPU paths run; so the function is re-bound to a namespace where
    detmath's constants are constexpr, and Triton compiles detmath's own source.
    """
    constants = {k: tl.constexpr(v) for k, v in vars(detmath).items() if isinstance(v, float)}
    # Triton also resolves the names in the parameter annotations (`Real`); they carry no meaning there.
    constants.update({str(a): tl.constexpr(None) for a in fn.__annotations__.values()})
    # `tl` in its namespace too: Triton's interpreter (TRITON_INTERPRET=1) patches it there.
    clone = types.FunctionType(fn.__code__, {**fn.__globals__, **constants, "tl": tl}, fn.__name__)
    clone.__module__, clone.__qualname__, clone.__doc__ = fn.__module__, fn.__qualname__, fn.__doc__
    return triton.jit(clone)


if AVAILABLE:
    _log_core = _jit_detmath(detmath.log_core)
    _kcos = _jit_detmath(detmath.kernel_cos)
    _ksin = _jit_detmath(detmath.kernel_sin)
    _sqrt_mantissa = _jit_detmath(detmath.sqrt_mantissa)
    _SQRT1_2: tl.constexpr = tl.constexpr(detmath.SQRT1_2)
    _PIO2: tl.constexpr = tl.constexpr(detmath.PIO2)
    _2M53: tl.constexpr = tl.constexpr(2.0**-53)

    @triton.jit
    def _philox(index, attempt, k0, k1):  # type: ignore[no-untyped-def]
        """Philox4x32-10 of counter (index lo, index hi, attempt, 0) and key (k0, k1), as uint32 words."""
        c0 = (index & 0xFFFFFFFF).to(tl.uint32)
        c1 = (index >> 32).to(tl.uint32)
        c2 = tl.zeros_like(c0) + attempt
        c3 = tl.zeros_like(c0)
        a = k0.to(tl.uint32)
        b = k1.to(tl.uint32)
        for _ in tl.static_range(10):
            # One 32x32 -> 64-bit product per word (mul.wide): 15% faster on an H100 than umulhi + mul.
            p0 = c0.to(tl.uint64) * 0xD2511F53
            p1 = c2.to(tl.uint64) * 0xCD9E8D57
            hi0, lo0 = (p0 >> 32).to(tl.uint32), p0.to(tl.uint32)
            hi1, lo1 = (p1 >> 32).to(tl.uint32), p1.to(tl.uint32)
            c0, c1, c2, c3 = hi1 ^ c1 ^ a, lo1, hi0 ^ c3 ^ b, lo0
            a = a + 0x9E3779B9
            b = b + 0xBB67AE85
        return c0, c1, c2, c3

    @triton.jit
    def _uniform53(hi, lo):  # type: ignore[no-untyped-def]
        bits = ((hi.to(tl.uint64) >> 5) << 26) | (lo.to(tl.uint64) >> 6)
        return bits.to(tl.float64) * _2M53

    @triton.jit
    def _uniform_open(hi, lo):  # type: ignore[no-untyped-def]
        m = ((hi.to(tl.uint64) >> 5) << 25) | (lo.to(tl.uint64) >> 7)
        return (m + m + 1).to(tl.float64) * _2M53

    @triton.jit
    def _frexp(x):  # type: ignore[no-untyped-def]
        """Mantissa in [0.5, 1) and exponent of a positive normal float64, by its bits."""
        bits = x.to(tl.int64, bitcast=True)
        mantissa = ((bits & 0x000FFFFFFFFFFFFF) | 0x3FE0000000000000).to(tl.float64, bitcast=True)
        return mantissa, ((bits >> 52) & 0x7FF) - 1022

    @triton.jit
    def _log(x):  # type: ignore[no-untyped-def]
        m, e = _frexp(x)
        small = m < _SQRT1_2
        m = tl.where(small, m * 2.0, m)
        return _log_core(m - 1.0, (e - small.to(tl.int64)).to(tl.float64))

    @triton.jit
    def _sqrt(x):  # type: ignore[no-untyped-def]
        m, e = _frexp(x)
        odd = (e & 1) == 1
        m = tl.where(odd, m * 2.0, m)
        half_exponent = (e - odd.to(tl.int64)) >> 1  # even, so the shift is an exact halving
        root = _sqrt_mantissa(m)
        return (root.to(tl.int64, bitcast=True) + (half_exponent << 52)).to(tl.float64, bitcast=True)

    @triton.jit
    def _cos_2pi(u):  # type: ignore[no-untyped-def]
        t = u * 4.0
        q = tl.floor(t)
        f = t - q
        upper = f >= 0.5
        x = tl.where(upper, 1.0 - f, f) * _PIO2
        c = _kcos(x)
        s = _ksin(x)
        cos_t = tl.where(upper, s, c)
        sin_t = tl.where(upper, c, s)
        v = tl.where((q == 1.0) | (q == 3.0), sin_t, cos_t)  # quadrant 0: cos, 1: -sin, 2: -cos, 3: sin
        return tl.where((q == 1.0) | (q == 2.0), -v, v)

    @triton.jit
    def _normal(w0, w1, w2, w3):  # type: ignore[no-untyped-def]
        return _sqrt(-2.0 * _log(_uniform_open(w0, w1))) * _cos_2pi(_uniform53(w2, w3))

    @triton.jit
    def _indices(start, n, BLOCK: tl.constexpr):  # type: ignore[no-untyped-def]
        offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        return offsets, start + offsets, offsets < n

    @triton.jit
    def _store(out, offsets, x, mask):  # type: ignore[no-untyped-def]
        """Round the float64 values once, as torch's .to() does: float16 and bfloat16 via float32."""
        if out.dtype.element_ty == tl.float64:
            tl.store(out + offsets, x, mask=mask)
        elif out.dtype.element_ty == tl.float32:
            tl.store(out + offsets, x.to(tl.float32), mask=mask)
        else:
            tl.store(out + offsets, x.to(tl.float32).to(out.dtype.element_ty), mask=mask)

    # Scalars carry Triton annotations: an unannotated Python float would be passed as float32, and
    # `start` may pass 2^31.
    @triton.jit
    def _affine_kernel(  # type: ignore[no-untyped-def]
        out, start: tl.int64, n: tl.int64, k0: tl.int64, k1: tl.int64, shift: tl.float64, scale: tl.float64,
        NORMAL: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """shift + scale * draw: a uniform (low, high - low) or a normal (loc, scale)."""
        offsets, index, mask = _indices(start, n, BLOCK)
        w0, w1, w2, w3 = _philox(index, 0, k0, k1)
        draw = _normal(w0, w1, w2, w3) if NORMAL else _uniform53(w0, w1)  # NORMAL is constexpr: one is compiled
        _store(out, offsets, shift + scale * draw, mask)

    @triton.jit
    def _truncated_kernel(  # type: ignore[no-untyped-def]
        out, failures, start: tl.int64, n: tl.int64, k0: tl.int64, k1: tl.int64, loc: tl.float64,
        scale: tl.float64, low: tl.float64, high: tl.float64, alpha: tl.float64, beta: tl.float64,
        peak2: tl.float64, max_attempts: tl.int32, NORMAL_PROPOSALS: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """Rejection as the reference: each element keeps its first accepted attempt; elements that
        accept none in max_attempts rounds are counted in `failures`."""
        offsets, index, mask = _indices(start, n, BLOCK)
        z = tl.zeros([BLOCK], tl.float64)
        pending = mask
        attempt = tl.full((), 0, tl.int32)
        while (tl.max(pending.to(tl.int32), axis=0) > 0) & (attempt < max_attempts):
            w0, w1, w2, w3 = _philox(index, attempt, k0, k1)
            if NORMAL_PROPOSALS:
                x = _normal(w0, w1, w2, w3)
                accept = (x >= alpha) & (x <= beta)
            else:
                x = alpha + (beta - alpha) * _uniform53(w0, w1)
                accept = -2.0 * _log(_uniform_open(w2, w3)) >= x * x - peak2
            z = tl.where(pending & accept, x, z)
            pending = pending & ~accept
            attempt += 1
        tl.atomic_add(failures, tl.sum(pending.to(tl.int32), axis=0))
        _store(out, offsets, tl.minimum(tl.maximum(loc + scale * z, low), high), mask)


def _launch(kernel: Any, out: torch.Tensor, *args: Any, **constexprs: Any) -> None:
    grid = (triton.cdiv(out.numel(), BLOCK),)
    # No FMA contraction: every multiply and add rounds on its own, as on the CPU paths.
    kernel[grid](out, *args, BLOCK=BLOCK, num_warps=NUM_WARPS, enable_fp_fusion=False, **constexprs)


# The launcher of each law family this path compiles; a family without one uses the reference.
Filler = Callable[[Any, int, tuple[int, int], torch.Tensor], None]
FILLERS: Registry[Filler] = Registry("Triton kernel")


def fill_run(dist: d.Distribution, start: int, key: tuple[int, int], out: torch.Tensor) -> None:
    """Write the values of element indices [start, start + out.numel()) into the contiguous CUDA
    tensor `out` (float64, float32, float16 or bfloat16), rounded once to its dtype.

    Raises UnknownNameError for a law family without a kernel here."""
    FILLERS.get(dist.family)(dist, start, key, out)


@FILLERS.register("uniform")
def _uniform(dist: d.Uniform, start: int, key: tuple[int, int], out: torch.Tensor) -> None:
    _launch(_affine_kernel, out, start, out.numel(), *key, dist.low, dist.high - dist.low, NORMAL=False)


@FILLERS.register("normal")
def _normal_law(dist: d.Normal, start: int, key: tuple[int, int], out: torch.Tensor) -> None:
    _launch(_affine_kernel, out, start, out.numel(), *key, dist.loc, dist.scale, NORMAL=True)


@FILLERS.register("truncated_normal")
def _truncated(dist: d.TruncatedNormal, start: int, key: tuple[int, int], out: torch.Tensor) -> None:
    from initium.service.materialize.sampling import MAX_ATTEMPTS, no_acceptance, truncation

    alpha, beta, normal_proposals, peak2 = truncation(dist)
    failures = torch.zeros(1, dtype=torch.int32, device=out.device)
    bounds = (dist.loc, dist.scale, dist.low, dist.high, alpha, beta, peak2, MAX_ATTEMPTS)
    _launch(_truncated_kernel, out, failures, start, out.numel(), *key, *bounds, NORMAL_PROPOSALS=normal_proposals)
    if failures.item():
        raise no_acceptance(alpha, beta)


@FILLERS.register("constant")
def _constant(dist: d.Constant, start: int, key: tuple[int, int], out: torch.Tensor) -> None:
    from initium.service.materialize.sampling import rounded

    out.fill_(rounded(dist.value, out.dtype))


@functools.cache
def verified(device: torch.device) -> bool:
    """True when the kernels reproduce the torch reference bit for bit on `device` (see the module doc).

    A new Triton or ptxas could compile the arithmetic differently, and the reference on the same
    device is the definition, so every law is compared first (sampling.first_mismatch).
    """
    if not AVAILABLE or device.type != "cuda":
        return False
    from initium.service.materialize.sampling import first_mismatch

    mismatch = first_mismatch(fill_run, device, _FLOAT_DTYPES, families=FILLERS.names())
    if mismatch is not None:
        log.warning("Triton fast path differs from the torch reference for %s in %s; using the reference", *mismatch)
    return mismatch is None
