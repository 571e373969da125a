"""The result of an initialization: the verified file, its report, and torch conveniences."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from initium.client._fetch import is_sharded
from initium.schemas.job import JobStatus
from initium.schemas.report import Report

if TYPE_CHECKING:
    import torch


def _torch_extra_missing(exc: ImportError) -> ImportError:
    return ImportError(
        f"{exc.name} is needed to load tensors; install the client with its torch extra: "
        "pip install 'initium-client[torch]'"
    )


class InitResult:
    """A finished initialization whose files are on local disk and match their sha256.

    `path` is the safetensors file, or for sharded output the model.safetensors.index.json beside
    its shards (the layout transformers' from_pretrained reads).
    """

    def __init__(self, status: JobStatus, path: Path, report: Report) -> None:
        self.status = status
        self.path = path
        self.report = report

    @property
    def id(self) -> str:
        return self.status.id

    @property
    def sha256(self) -> str:
        return self.report.artifact.sha256

    @cached_property
    def tensors(self) -> dict[str, torch.Tensor]:
        """name -> tensor, loaded from the file on first access (needs torch and safetensors)."""
        with self.open() as lazy:
            return {name: lazy[name] for name in lazy}

    def open(self, device: str = "cpu") -> LazyTensors:
        """The tensors without reading them: a mapping that loads one tensor per lookup (safetensors'
        safe_open, memory-mapped), so a 7B result never has to fit in memory. Use it as a context
        manager, or close() it."""
        return LazyTensors(self.files(), device)

    def files(self) -> list[Path]:
        """The safetensors files of the result (one, or every shard: the status lists them, index last)."""
        if is_sharded(self.status):
            return [self.path.parent / f.name for f in self.status.files[:-1]]
        return [self.path]

    def save(self, path: str | Path) -> Path:
        """Copy the safetensors file to `path` (for sharded output: every file into the directory `path`)."""
        target = Path(path)
        if is_sharded(self.status):
            target.mkdir(parents=True, exist_ok=True)
            for f in self.status.files:
                if (self.path.parent / f.name).resolve() != (target / f.name).resolve():
                    shutil.copyfile(self.path.parent / f.name, target / f.name)
            return target / self.path.name
        if target.resolve() != self.path.resolve():
            shutil.copyfile(self.path, target)
        return target

    def load_into(self, module: torch.nn.Module) -> torch.nn.Module:
        """Load the tensors into `module` strictly: every name and shape must match its state_dict."""
        module.load_state_dict(self.tensors, strict=True)
        return module

    def __repr__(self) -> str:
        return f"InitResult(id={self.id[:12]}..., tensors={self.report.totals.tensors}, path={str(self.path)!r})"


class LazyTensors(Mapping[str, "torch.Tensor"]):
    """name -> tensor over one or more safetensors files, each tensor read when it is looked up."""

    def __init__(self, files: list[Path], device: str = "cpu") -> None:
        try:
            from safetensors import safe_open
        except ImportError as exc:
            raise _torch_extra_missing(exc) from None
        self._stack = contextlib.ExitStack()
        self._where: dict[str, Any] = {}
        for path in files:
            handle = self._stack.enter_context(safe_open(str(path), framework="pt", device=device))
            self._where.update(dict.fromkeys(handle.keys(), handle))

    def __getitem__(self, name: str) -> torch.Tensor:
        tensor: torch.Tensor = self._where[name].get_tensor(name)
        return tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> LazyTensors:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
