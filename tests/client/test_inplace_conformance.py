"""In place meets the conformance matrix's load checks (issue 17, item 2: everything issue 13
requires of initialize_module holds for initialize_): every row of tests/client/conformance.py,
built on meta and filled by initialize_ in this process, keeps its framework's ties, leaves no meta
tensor, loads strictly, computes its buffers and runs a finite forward."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from torch import nn

from initium.client import initialize_
from tests.client.conformance import ROWS, Row, check_load


class InPlace:
    """What the matrix's load check calls (`initialize_module`), done by initialize_ instead."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def initialize_module(self, module: nn.Module, *, policy: Any, seed: int = 0) -> None:
        initialize_(module, policy=policy, seed=seed, data_dir=self.data_dir)


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(
            r, id=r.id, marks=[pytest.mark.xfail(reason=r.known_failure, strict=True)] if r.known_failure else []
        )
        for r in ROWS
    ],
)
def test_in_place_passes_the_conformance_load_checks(row: Row, tmp_path: Path) -> None:
    for module in row.requires:
        pytest.importorskip(module)
    assert check_load(row, InPlace(tmp_path)) == []  # type: ignore[arg-type]
