"""Content addressing: the job id of a request and the generator key of each tensor.

[Note: seeding] A tensor's values depend only on (seed, tensor name, element index, scheme,
params, dtype, algorithm version): its Philox key is a hash of (seed, name), so adding, removing
or reordering other tensors never changes it.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from initium.schemas.plan import Algorithm
from initium.schemas.request import InitRequest
from initium.service.errors import JobNotFoundError

# Philox4x32-10 keyed by sha256(seed, name), counter = element index, float64 transforms from
# device-independent arithmetic, rounded once to the dtype (initium.service.materialize.philox).
# Bump the version whenever any value could change.
ALGORITHM = Algorithm(id="philox4x32-10", version=1)


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def request_id(request: InitRequest, pinned_preset: str | None) -> str:
    """sha256 of the normalized request: values equal to their defaults dropped (so spelling a default
    out, or a later version adding an optional field, keeps the id), the preset pinned to its version."""
    body = request.model_dump(mode="json", exclude_defaults=True)
    if pinned_preset is not None:
        body["policy"]["preset"] = pinned_preset
    envelope = {"request": body, "algorithm": ALGORITHM.model_dump(mode="json")}
    return hashlib.sha256(canonical_json(envelope)).hexdigest()


def tensor_key(seed: int, name: str) -> tuple[int, int]:
    """The Philox key (two 32-bit words) of one tensor (see [Note: seeding])."""
    digest = hashlib.sha256(canonical_json([ALGORITHM.id, ALGORITHM.version, seed, name])).digest()
    return int.from_bytes(digest[0:4], "little"), int.from_bytes(digest[4:8], "little")


def part_name(name: str, axis: int, start: int, stop: int) -> str:
    """How a part is named: in messages, and as its Philox key (so the axis-0 form, name[start:stop],
    must never change: it fixes the bytes of every existing packed tensor); name[:, start:stop] for axis 1."""
    return f"{name}[{':, ' * axis}{start}:{stop}]"


# A job id: the request id, a sha256 in lowercase hex.
JOB_ID = re.compile(r"^[0-9a-f]{64}$")


def check_id(job_id: str) -> str:
    """`job_id` itself once it is 64 lowercase hex digits, before it names a file or a key; else
    JobNotFoundError (a malformed id is an unknown id: 404, not a problem with the caller's body)."""
    if not JOB_ID.match(job_id):
        raise JobNotFoundError(f"no job {job_id!r}: ids are 64 lowercase hex digits", ("id",))
    return job_id
