"""The one dtype table agrees with the wire's dtype Literals, with torch and with safetensors."""

from __future__ import annotations

import json
from typing import get_args

import pytest

from initium.schemas.dtypes import DTYPES, dtype_info
from initium.schemas.plan import TensorDType
from initium.schemas.registry import UnknownNameError
from initium.schemas.request import DType


def test_the_table_lists_the_wire_dtypes() -> None:
    assert DTYPES.names() == list(get_args(TensorDType))
    assert [n for n in DTYPES.names() if dtype_info(n).floating] == list(get_args(DType))


def test_an_unknown_dtype_names_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match="unknown dtype 'float8'; valid: bfloat16, float16"):
        dtype_info("float8")


@pytest.mark.parametrize("name", DTYPES.names())
def test_each_entry_is_torchs_and_safetensors(name: str) -> None:
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    info = dtype_info(name)
    dtype = getattr(torch, info.torch)
    assert torch.empty((), dtype=dtype).element_size() == info.itemsize
    assert dtype.is_floating_point == info.floating
    if info.mantissa_bits is not None:
        assert torch.finfo(dtype).eps == 2.0**-info.mantissa_bits
        assert torch.finfo(dtype).max == info.max_finite
        assert torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps == info.smallest_subnormal
    else:
        assert info.max_finite is None and info.smallest_subnormal is None
    data = safetensors_torch.save({"t": torch.zeros(3, dtype=dtype)})
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    assert header["t"]["dtype"] == info.safetensors
