"""Test helper: the torch module a spec describes is the service's own builder (worker/modules.py)."""

from __future__ import annotations

from torch import nn

from initium.schemas import spec as s
from initium.service.worker.modules import build as _build


def build(spec: s.Spec) -> nn.Module:
    return _build(spec)
