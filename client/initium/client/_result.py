"""The result of an initialization: the verified file, its report (loaded when first read), and torch conveniences."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator, Mapping
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
    its shards (the layout transformers' from_pretrained reads). `report` is the report, or how to
    fetch it: the service computes it after the weights (issue 17), so the result is returned as
    soon as the files are verified, and the report is fetched (waiting while it is still being
    computed) the first time `result.report` is read.
    """

    def __init__(self, status: JobStatus, path: Path, report: Report | Callable[[], Report]) -> None:
        self.status = status
        self.path = path
        self._report = report

    @cached_property
    def report(self) -> Report:
        """The job's report: fetched on first read, waiting while the service still computes it
        (raises ReportFailedError when it could not be computed; the weights are unaffected)."""
        return self._report if isinstance(self._report, Report) else self._report()

    @property
    def id(self) -> str:
        return self.status.id

    @property
    def sha256(self) -> str:
        """The main file's sha256 (the weights, or the shard index), as verified on download."""
        sha256 = self.status.sha256
        assert sha256 is not None, "a result is made only of a succeeded job, which has its sha256"
        return sha256

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
        tensors = self.status.progress.tensors_total
        return f"InitResult(id={self.id[:12]}..., tensors={tensors}, path={str(self.path)!r})"


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
