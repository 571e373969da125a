"""The committed JSON Schemas are exactly what the models generate (run `make schemas` after a change)."""

from __future__ import annotations

import pytest

from initium.schemas.export import EXPORTED, JSON_DIR, render


@pytest.mark.parametrize("stem", sorted(EXPORTED))
def test_committed_schema_matches_models(stem: str) -> None:
    committed = (JSON_DIR / f"{stem}.schema.json").read_text()
    assert committed == render(EXPORTED[stem]), f"{stem}.schema.json drifted; run `make schemas` and commit"
