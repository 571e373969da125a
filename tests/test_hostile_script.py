"""benchmarks/hostile/ (issue 16): its probe table covers every item, and its rows are one table.
No probe runs here: the script starts servers, mounts and proxies, and runs on purpose."""

from __future__ import annotations

import json
import re

import pytest

from benchmarks.hostile.harness import PROBES, Verdict, item_of
from benchmarks.hostile.jobs import header_bomb, tiny_tensors
from benchmarks.hostile.table import TABLE_HEAD, Row, selected


def test_every_item_of_the_issue_has_a_probe() -> None:
    items = {item_of(name) for name in PROBES.names()}
    assert items == set(range(1, 16))


def test_importing_the_package_registers_the_probes_in_the_issues_order() -> None:
    """The sections register as the package imports them; the table and `--list` keep that order."""
    names = PROBES.names()
    assert names == sorted(names, key=lambda name: (item_of(name), name))


def test_probe_ids_are_an_item_number_and_a_letter_and_every_row_says_what_it_checks() -> None:
    for name in PROBES.names():
        entry = PROBES.get(name)
        assert re.fullmatch(r"(1[0-5]|[1-9])[a-z]", name), name
        assert entry.id == name and entry.input and entry.must and "|" not in entry.input + entry.must


def test_only_selects_by_id_or_by_item_number_and_refuses_unknown_names() -> None:
    picked = [p.id for p in selected(["3a", "12"])]
    assert picked == ["3a", "12a", "12b", "12c", "12d"]
    assert len(selected(None)) == len(PROBES.names())
    with pytest.raises(SystemExit, match="unknown probe"):
        selected(["16"])


@pytest.mark.parametrize(("held", "cell"), [(True, "yes"), (False, "**no**"), (None, "skipped")])
def test_a_row_is_six_cells_with_no_stray_pipes_or_newlines(held: bool | None, cell: str) -> None:
    row = Row(PROBES.get("2a"), Verdict(held, "422: a | b\nc" + "x" * 300), 1.25)
    text = row.markdown()
    cells = [c.strip() for c in text.strip("|").split("|")]
    assert len(cells) == len(TABLE_HEAD.splitlines()[0].strip("|").split("|")) == 6
    assert cells[0] == "2a" and cells[4] == cell and cells[5] == "1.2"
    assert "\n" not in text and len(cells[3]) == 200 and cells[3].startswith("422: a / b c")


def test_requests_are_the_issues_sizes() -> None:
    """Item 1's request is about 10 KB for 20,000 tensors; item 8's under 300 bytes for 200,000."""
    bomb = header_bomb()
    assert 9_000 < len(json.dumps(bomb)) < 12_000
    tiny = tiny_tensors(10_000)
    assert len(json.dumps(tiny)) < 300
    block = tiny["spec"]["modules"][0]
    assert block["count"] * block["block"]["count"] * 2 == 200_000
