"""Materialize: one planned tensor -> its values on the worker's device, in the requested dtype."""

from __future__ import annotations

import torch

from initium.schemas.plan import PlannedTensor
from initium.service.identity import tensor_seed
from initium.service.init.sampling import sample
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
    """Draw `tensor` from its own generator (keyed by seed and name) and round it once to its dtype."""
    generator = torch.Generator(device=device)
    generator.manual_seed(tensor_seed(seed, tensor.name))
    values = sample(planned_distribution(tensor), tuple(tensor.shape), generator)
    for fixup in tensor.post:
        values = _apply_post(values, fixup)
    return values.to(TORCH_DTYPES[tensor.dtype])


def _apply_post(values: torch.Tensor, fixup: str) -> torch.Tensor:
    kind, _, arg = fixup.partition(":")
    if kind == "zero_row":
        values[int(arg)] = 0
        return values
    raise ValueError(f"unknown post-sampling fix-up {fixup!r}")
