"""The result of an initialization: the verified file, its report, and torch conveniences."""

from __future__ import annotations

import json
import shutil
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

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
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise _torch_extra_missing(exc) from None
        if self.path.name.endswith(".index.json"):
            shards = sorted(set(json.loads(self.path.read_text())["weight_map"].values()))
            merged: dict[str, torch.Tensor] = {}
            for shard in shards:
                merged.update(load_file(str(self.path.parent / shard)))
            return merged
        return load_file(str(self.path))

    def save(self, path: str | Path) -> Path:
        """Copy the safetensors file to `path` (for sharded output: every file into the directory `path`)."""
        target = Path(path)
        if self.path.name.endswith(".index.json"):
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
