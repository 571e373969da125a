"""Materialize: one planned tensor -> its values on the worker's device, in the requested dtype."""

from __future__ import annotations

import torch

from initium.schemas.plan import PlannedTensor
from initium.service.identity import tensor_key
from initium.service.init.sampling import Stream, sample
from initium.service.plan import planned_distribution

TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "int64": torch.int64,
}


def pick_device(preference: str) -> torch.device:
    """'auto' is cuda when a GPU is visible, else cpu; 'cuda' without a GPU is an error."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("INITIUM_DEVICE asks for cuda but torch sees no GPU; use 'auto' or 'cpu'")
    return torch.device(preference)


def materialize(tensor: PlannedTensor, seed: int, device: torch.device, scale: float = 1.0) -> torch.Tensor:
    """Draw `tensor` (or its requested slice) from its Philox stream and round it once to its dtype;
    `scale` (LSUV's factor) multiplies the float64 values before that one rounding."""
    box = [(start, stop) for start, stop in tensor.slice] if tensor.slice is not None else None
    if tensor.distribution is None and (tensor.parts is None or any(p.distribution is None for p in tensor.parts)):
        raise ValueError(f"no rule initializes (all of) {tensor.name}; the plan lists it under `uncovered`")
    dtype = TORCH_DTYPES[tensor.dtype]
    # Without a factor the samplers round straight into the dtype (no float64 copy of the tensor).
    draw_dtype = dtype if scale == 1.0 else torch.float64
    if tensor.parts is None:
        stream = Stream(tensor_key(seed, tensor.name), device)
        values = sample(planned_distribution(tensor), tuple(tensor.shape), stream, box, draw_dtype)
    else:
        values = _materialize_parts(tensor, seed, device, box or [(0, n) for n in tensor.shape], draw_dtype)
    if scale != 1.0:
        values = values * scale
    for fixup in tensor.post:
        values = _apply_post(values, fixup, box)
    return values.to(dtype)


def _materialize_parts(
    tensor: PlannedTensor, seed: int, device: torch.device, box: list[tuple[int, int]], dtype: torch.dtype
) -> torch.Tensor:
    """Each part (a gate, or q, k or v) is its own tensor: its own law and its own Philox key,
    named by the tensor and its rows, so a part's values do not depend on the other parts."""
    out = torch.empty([stop - start for start, stop in box], dtype=dtype, device=device)
    (row_start, row_stop), rest = box[0], box[1:]
    for part in tensor.parts or []:
        lo, hi = max(row_start, part.rows[0]), min(row_stop, part.rows[1])
        if lo >= hi:
            continue
        shape = (part.rows[1] - part.rows[0], *tensor.shape[1:])
        stream = Stream(tensor_key(seed, f"{tensor.name}[{part.rows[0]}:{part.rows[1]}]"), device)
        sub_box = [(lo - part.rows[0], hi - part.rows[0]), *rest]
        out[lo - row_start : hi - row_start] = sample(planned_distribution(part), shape, stream, sub_box, dtype)
    return out


def _apply_post(values: torch.Tensor, fixup: str, box: list[tuple[int, int]] | None) -> torch.Tensor:
    kind, _, arg = fixup.partition(":")
    if kind == "zero_row":
        row, start, stop = int(arg), *(box[0] if box else (0, values.shape[0]))
        if start <= row < stop:
            values[row - start] = 0
        return values
    raise ValueError(f"unknown post-sampling fix-up {fixup!r}")
