"""Write: a streaming safetensors writer, header from the plan first, then each tensor as it comes.

The safetensors header depends only on names, dtypes and shapes, which the plan knows before any
value exists, so peak memory is one tensor, not one model (huggingface/safetensors#458 asks for
this; the library's save_file needs every tensor in memory at once).
Format: 8-byte little-endian header length, the JSON header padded with spaces to a multiple of
8, then the tensors' little-endian C-order bytes, contiguous, in header order.
"""

from __future__ import annotations

import json
from types import TracebackType

import torch

from initium.schemas.dtypes import dtype_info
from initium.schemas.job import FileInfo
from initium.schemas.plan import Plan, PlannedTensor
from initium.service.plan.output import tensor_nbytes
from initium.service.write.artifacts import ArtifactWriter


def build_header(tensors: list[PlannedTensor], metadata: dict[str, str]) -> bytes:
    """The length prefix plus the space-padded JSON header for `tensors` in this order."""
    entries: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for t in tensors:
        end = offset + tensor_nbytes(t)
        entries[t.name] = {
            "dtype": dtype_info(t.dtype).safetensors,
            "shape": t.output_shape(),
            "data_offsets": [offset, end],
        }
        offset = end
    body = json.dumps(entries, separators=(",", ":")).encode()
    body += b" " * (-len(body) % 8)
    return len(body).to_bytes(8, "little") + body


def tensor_locations(plan: Plan, metadata: dict[str, str]) -> dict[str, tuple[str, int, int]]:
    """Where each tensor's bytes sit in the written files: name -> (file, start, stop), in bytes from
    the start of the file. The plan fixes the header, so this needs no file: the same for a file
    written whole, one assembled from parts, and one in object storage."""
    by_name = {t.name: t for t in plan.tensors}
    where: dict[str, tuple[str, int, int]] = {}
    for shard in plan.shards:
        tensors = [by_name[name] for name in shard.tensors]
        offset = len(build_header(tensors, metadata))
        for planned in tensors:
            end = offset + tensor_nbytes(planned)
            where[planned.name] = (shard.file, offset, end)
            offset = end
    return where


class SafetensorsStreamWriter:
    """Write tensors one at a time into an artifact writer (write.artifacts), in plan order; the
    artifact writer hashes as it goes and commits the file whole on close."""

    def __init__(
        self, sink: ArtifactWriter, tensors: list[PlannedTensor], metadata: dict[str, str], with_header: bool = True
    ) -> None:
        """with_header=False writes only the tensors' data: one part of a file whose header and
        other parts are written elsewhere (a job fanned out over several workers)."""
        self.sink = sink
        self._expected = list(tensors)
        self._next = 0
        if with_header:
            try:
                sink.write(build_header(tensors, metadata))
            except BaseException:
                sink.abort()
                raise

    @property
    def bytes_written(self) -> int:
        return self.sink.bytes_written

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
        self.sink.write(data.data)
        self._next += 1

    def close(self) -> FileInfo:
        """Commit the file (durable, visible under its name); every planned tensor must have been
        written, else the file is dropped. Returns its name, sha256 and size."""
        if self._next != len(self._expected):
            self.sink.abort()
            raise ValueError(f"{len(self._expected) - self._next} planned tensors were never written")
        return self.sink.commit()

    def abort(self) -> None:
        self.sink.abort()

    def __enter__(self) -> SafetensorsStreamWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.abort()
