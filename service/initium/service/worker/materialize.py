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


def materialize(tensor: PlannedTensor, seed: int, device: torch.device) -> torch.Tensor:
    """Draw `tensor` (or its requested slice) from its Philox stream and round it once to its dtype."""
    stream = Stream(tensor_key(seed, tensor.name), device)
    box = None if tensor.slice is None else [(start, stop) for start, stop in tensor.slice]
    values = sample(planned_distribution(tensor), tuple(tensor.shape), stream, box)
    for fixup in tensor.post:
        values = _apply_post(values, fixup, box)
    return values.to(TORCH_DTYPES[tensor.dtype])


def _apply_post(values: torch.Tensor, fixup: str, box: list[tuple[int, int]] | None) -> torch.Tensor:
    kind, _, arg = fixup.partition(":")
    if kind == "zero_row":
        row, start, stop = int(arg), *(box[0] if box else (0, values.shape[0]))
        if start <= row < stop:
            values[row - start] = 0
        return values
    raise ValueError(f"unknown post-sampling fix-up {fixup!r}")
