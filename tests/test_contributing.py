"""CONTRIBUTING.md names the exact files to touch per extension point; this keeps that list true.

Every file a list item names must exist, and every name given after a file in the same item
(`register_scheme`, `LAW_CHECKS`, ...) must be defined or used in that file. The registries' own
agreement (planner vs model builder vs schema, laws vs samplers vs checks) is held by
tests/service/test_layer_registry.py and tests/service/materialize/test_law_registry.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "CONTRIBUTING.md"
SECTIONS = ("Add a scheme", "Add a law", "Add a layer type", "Add a preset", "Add a storage backend")
_TOKEN = re.compile(r"`([^`]+)`")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _items(section: str) -> list[str]:
    """The section's list items and paragraphs (a blank line ends one)."""
    text = GUIDE.read_text()
    start = text.index(f"## {section}")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else None]
    return [chunk for chunk in re.split(r"\n(?=\d+\. |- )|\n\n", body) if "`" in chunk]


def _pairs(section: str) -> list[tuple[str, str | None]]:
    """(file, name) for every name given after a file in one item; (file, None) for each file."""
    pairs: list[tuple[str, str | None]] = []
    for item in _items(section):
        current: str | None = None
        for token in _TOKEN.findall(item):
            if "/" in token and token.endswith((".py", ".md", ".yml", ".toml")):
                current = token
                pairs.append((token, None))
            elif current is not None and _IDENTIFIER.match(token):
                pairs.append((current, token))
    return pairs


def test_every_section_is_there() -> None:
    text = GUIDE.read_text()
    assert all(f"## {s}" in text for s in SECTIONS)


@pytest.mark.parametrize("section", SECTIONS)
def test_each_named_file_exists_and_holds_the_named_registry(section: str) -> None:
    pairs = _pairs(section)
    assert pairs, f"{section} names no file"
    for path, name in pairs:
        file = ROOT / path
        assert file.is_file(), f"{section}: {path} does not exist"
        if name is not None:
            assert re.search(rf"\b{re.escape(name)}\b", file.read_text()), f"{section}: {path} has no {name}"
