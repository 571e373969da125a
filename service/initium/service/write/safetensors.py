"""Write: a streaming safetensors writer, header from the plan first, then each tensor as it comes.

The safetensors header depends only on names, dtypes and shapes, which the plan knows before any
value exists, so peak memory is one tensor, not one model (huggingface/safetensors#458 asks for
this; the library's save_file needs every tensor in memory at once).
Format: 8-byte little-endian header length, the JSON header padded with spaces to a multiple of
8, then the tensors' little-endian C-order bytes, contiguous, in header order.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import torch

from initium.schemas.plan import PlannedTensor
from initium.service.plan.output import tensor_nbytes

SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int64": "I64"}


def build_header(tensors: list[PlannedTensor], metadata: dict[str, str]) -> bytes:
    """The length prefix plus the space-padded JSON header for `tensors` in this order."""
    entries: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for t in tensors:
        end = offset + tensor_nbytes(t)
        entries[t.name] = {
            "dtype": SAFETENSORS_DTYPES[t.dtype],
            "shape": t.output_shape(),
            "data_offsets": [offset, end],
        }
        offset = end
    body = json.dumps(entries, separators=(",", ":")).encode()
    body += b" " * (-len(body) % 8)
    return len(body).to_bytes(8, "little") + body


class SafetensorsStreamWriter:
    """Write tensors one at a time to `path`, in plan order; hash as it goes; fsync on close."""

    def __init__(
        self, path: Path, tensors: list[PlannedTensor], metadata: dict[str, str], with_header: bool = True
    ) -> None:
        """with_header=False writes only the tensors' data: one part of a file whose header and
        other parts are written elsewhere (a job fanned out over several workers)."""
        self.path = path
        self._expected = list(tensors)
        self._next = 0
        self._sha = hashlib.sha256()
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="sha256")
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115  (closed in close())
        self.bytes_written = 0
        if with_header:
            self._emit(build_header(tensors, metadata))

    def write(self, name: str, values: torch.Tensor) -> None:
        """Append the next tensor; its name, dtype and size must be what the header promised."""
        if self._next >= len(self._expected):
            raise ValueError(f"tensor {name!r} was not in the header")
        planned = self._expected[self._next]
        if name != planned.name or list(values.shape) != planned.output_shape():
            raise ValueError(f"expected {planned.name} {planned.output_shape()}, got {name} {list(values.shape)}")
        data = values.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        if data.nbytes != tensor_nbytes(planned):
            raise ValueError(f"{name}: {data.nbytes} bytes, the header promised {tensor_nbytes(planned)}")
        self._emit(data.data)
        self._next += 1

    def _emit(self, chunk: bytes | memoryview) -> None:
        # Both release the GIL on large buffers, so the hash runs beside the write on another core
        # (480 MB written and hashed on tmpfs: 0.45 s serially, 0.30 s side by side).
        hashed = self._hasher.submit(self._sha.update, chunk)
        self._file.write(chunk)
        hashed.result()
        self.bytes_written += len(chunk)

    def close(self) -> str:
        """Flush to disk and return the file's sha256; every planned tensor must have been written."""
        self._hasher.shutdown()
        if self._next != len(self._expected):
            self._file.close()
            raise ValueError(f"{len(self._expected) - self._next} planned tensors were never written")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return self._sha.hexdigest()

    def abort(self) -> None:
        self._hasher.shutdown()
        self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> SafetensorsStreamWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.abort()
