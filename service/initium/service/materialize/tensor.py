"""Materialize: one planned tensor -> its values on the worker's device, in the requested dtype."""

from __future__ import annotations

import torch

from initium.schemas.dtypes import DTYPES
from initium.schemas.plan import PlannedTensor
from initium.service.identity import part_name, tensor_key
from initium.service.materialize.sampling import Stream, sample
from initium.service.plan.distributions import planned_distribution

# The wire dtype name -> torch's dtype, from the one table (initium.schemas.dtypes).
TORCH_DTYPES: dict[str, torch.dtype] = {name: getattr(torch, DTYPES.get(name).torch) for name in DTYPES.names()}


def pick_device(preference: str) -> torch.device:
    """'auto' is cuda when a GPU is visible, else cpu; 'cuda' without a GPU is an error."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {preference!r} was asked for (INITIUM_DEVICE, or a device argument) but torch sees no GPU; "
            "use 'auto' or 'cpu'"
        )
    return torch.device(preference)


def device_problem_here(preference: str) -> str | None:
    """Why this process cannot compute on `preference` (cuda:0 on a host without a GPU, cuda:3 on a
    host with two), or None when a tensor op there succeeds. It creates the CUDA context: call it in
    the process that will use the device (a Celery prefork parent asks a subprocess instead)."""
    try:
        torch.ones(1, device=pick_device(preference)).sum().item()
    except Exception as exc:  # any failure means the same here: this device cannot run jobs
        lines = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {lines[0] if lines else 'no message'}"
    return None


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
    """Each part (a gate, q, k or v, or a fused projection's block) is its own tensor: its own law
    and its own Philox key, named by the tensor and its range (see part_name), so a part's values
    do not depend on the other parts. A part spans one range along its axis and all of every other
    dimension; `box` may cut any dimension."""
    out = torch.empty([stop - start for start, stop in box], dtype=dtype, device=device)
    for part in tensor.parts or []:
        axis, (start, stop) = part.axis, part.rows
        lo, hi = max(box[axis][0], start), min(box[axis][1], stop)
        if lo >= hi:
            continue
        shape = tuple(stop - start if i == axis else n for i, n in enumerate(tensor.shape))
        stream = Stream(tensor_key(seed, part_name(tensor.name, axis, start, stop)), device)
        sub_box = [(lo - start, hi - start) if i == axis else edge for i, edge in enumerate(box)]
        where = tuple(
            slice(lo - box[axis][0], hi - box[axis][0]) if i == axis else slice(None) for i in range(len(box))
        )
        out[where] = sample(planned_distribution(part), shape, stream, sub_box, dtype)
    return out


def _apply_post(values: torch.Tensor, fixup: str, box: list[tuple[int, int]] | None) -> torch.Tensor:
    kind, _, arg = fixup.partition(":")
    if kind == "zero_row":
        row, start, stop = int(arg), *(box[0] if box else (0, values.shape[0]))
        if start <= row < stop:
            values[row - start] = 0
        return values
    raise ValueError(f"unknown post-sampling fix-up {fixup!r}")
