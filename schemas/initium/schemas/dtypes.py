"""The one dtype table: each wire dtype's item size, safetensors code and torch dtype.

Pure Python, so the planner (bytes of a tensor), the writer (the safetensors header), the samplers
(`getattr(torch, info.torch)`), the report (rounding) and the client (a module's dtype) all read
the same entry. The wire Literals (plan.TensorDType, request.DType) list the same names; a test
holds them equal.
"""

from __future__ import annotations

from dataclasses import dataclass

from initium.schemas.registry import Registry


@dataclass(frozen=True)
class DTypeInfo:
    """One dtype: `itemsize` in bytes, its safetensors header code, the name of its torch attribute,
    for floats the mantissa bits (the relative spacing of neighbouring values is 2^-bits) and the
    largest finite value (torch.finfo(dtype).max; beyond it a value rounds to infinity) and the
    smallest subnormal one (torch.finfo(dtype).smallest_normal * eps: below its smallest normal
    number a dtype's rounding is this absolute step, not a relative one)."""

    itemsize: int
    safetensors: str
    torch: str
    mantissa_bits: int | None  # None: an integer dtype (no rounding)
    max_finite: float | None = None  # None: an integer dtype
    smallest_subnormal: float | None = None  # None: an integer dtype

    @property
    def floating(self) -> bool:
        return self.mantissa_bits is not None

    @property
    def low_precision(self) -> bool:
        """float16 and bfloat16: few enough distinct values that the report counts them."""
        return self.floating and self.itemsize < 4


DTYPES: Registry[DTypeInfo] = Registry("dtype")
for _name, _info in {
    "float32": DTypeInfo(4, "F32", "float32", 23, 3.4028234663852886e38, 1.401298464324817e-45),
    "float16": DTypeInfo(2, "F16", "float16", 10, 65504.0, 5.960464477539063e-08),
    "bfloat16": DTypeInfo(2, "BF16", "bfloat16", 7, 3.3895313892515355e38, 9.183549615799121e-41),
    "float64": DTypeInfo(8, "F64", "float64", 52, 1.7976931348623157e308, 5e-324),
    "int64": DTypeInfo(8, "I64", "int64", None),
}.items():
    DTYPES.register(_name)(_info)


def dtype_info(name: str) -> DTypeInfo:
    """The table's entry for `name`; an unknown name raises UnknownNameError listing the valid ones."""
    return DTYPES.get(name)
