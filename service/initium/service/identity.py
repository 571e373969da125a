"""Content addressing: the job id of a request and the generator key of each tensor.

[Note: seeding] A tensor's values depend only on (seed, tensor name, scheme, params, dtype,
algorithm version): its generator is keyed by a hash of (seed, name), so adding, removing or
reordering other tensors never changes it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from initium.schemas.plan import Algorithm
from initium.schemas.request import InitRequest

# Per-tensor torch.Generator seeded from sha256(seed, name); samples drawn in float64 and
# rounded once to the target dtype. Bump the version whenever any value could change.
ALGORITHM = Algorithm(id="torch-generator-sha256", version=1)


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def request_id(request: InitRequest, pinned_preset: str | None) -> str:
    """sha256 of the normalized request: defaults filled in, the preset pinned to its version."""
    body = request.model_dump(mode="json")
    if pinned_preset is not None:
        body["policy"]["preset"] = pinned_preset
    envelope = {"request": body, "algorithm": ALGORITHM.model_dump(mode="json")}
    return hashlib.sha256(canonical_json(envelope)).hexdigest()


def tensor_seed(seed: int, name: str) -> int:
    """A 63-bit generator seed for one tensor (see [Note: seeding])."""
    digest = hashlib.sha256(canonical_json([ALGORITHM.id, ALGORITHM.version, seed, name])).digest()
    return int.from_bytes(digest[:8], "little") >> 1
