"""The CLI reads well (issue 18, item 3): whole scheme summaries, a preset as a table, a conflicting
publish as the user's input (exit 2), and counts with their nouns in the number's form."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from initium.client import Client
from initium.client import cli as client_cli
from initium.schemas.catalog import scheme_catalog
from initium.schemas.job import Progress
from initium.schemas.plan import Plan, PlanTotals
from initium.schemas.presets import get_preset
from initium.schemas.report import ArtifactInfo, Report, ReportTotals

SCHEME_ROW = re.compile(r"^(\S+) +(.*)$")


@pytest.fixture
def via_app(app_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Client the CLI opens talks to the real app, in-process."""
    real = Client.__init__

    def in_process(self: Client, *args: Any, **kwargs: Any) -> None:
        # This starlette's TestClient subclasses httpx2.Client, which quacks as httpx.Client does.
        real(self, http_client=app_client)  # type: ignore[arg-type]

    monkeypatch.setattr(Client, "__init__", in_process)


def _printed_summaries(out: str) -> dict[str, str]:
    """scheme -> its printed summary, continuation lines joined back on."""
    summaries: dict[str, str] = {}
    name = ""
    for line in out.splitlines():
        row = SCHEME_ROW.match(line)
        if row:
            name, summaries[row[1]] = row[1], row[2]
        else:
            summaries[name] += " " + line.strip()
    return summaries


@pytest.mark.parametrize("columns", ["80", "200"])
def test_schemes_prints_every_whole_summary(
    via_app: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], columns: str
) -> None:
    """scaled_normal, fixup, t_fixup and relu_bias were cut at the end of their docstring's first
    source line; every scheme's printed summary is now its first paragraph, whole, within the width."""
    monkeypatch.setenv("COLUMNS", columns)  # shutil.get_terminal_size reads it first
    assert client_cli.main(["schemes"]) == 0
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= int(columns)
    printed = _printed_summaries(out)
    catalog = scheme_catalog().schemes
    assert list(printed) == [s.name for s in catalog]
    for scheme in catalog:
        paragraph = " ".join(scheme.description.split("\n\n")[0].split())
        assert printed[scheme.name] == paragraph, scheme.name
        assert printed[scheme.name].endswith("."), f"{scheme.name} ends mid-sentence: {printed[scheme.name]!r}"
    assert printed["relu_bias"].endswith("0 for every other bias.")
    assert printed["fixup"].endswith("scalar biases 0.")


def test_presets_show_is_a_table_and_json_the_raw_model(via_app: None, capsys: pytest.CaptureFixture[str]) -> None:
    """`presets show xavier@1` printed ~450 lines of JSON with "role": null everywhere: a row per rule
    now, with the match fields that are set, the scheme and its non-default parameters."""
    preset = get_preset("xavier@1")
    assert client_cli.main(["presets", "show", "xavier@1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"xavier@1: {preset.description}"
    rows = [line.split() for line in lines[2:-1]]
    assert len(rows) == len(preset.rules)
    for i, (row, rule) in enumerate(zip(rows, preset.rules, strict=True)):
        match = [f"{k}={v}" for k, v in rule.match.model_dump(exclude_none=True).items()] or ["(every", "tensor)"]
        params = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                  for k, v in rule.init.model_dump(exclude_defaults=True).items() if k != "scheme"]  # fmt: skip
        assert row == [str(i), *match, rule.init.scheme, *params]
    assert "null" not in "\n".join(lines)
    assert lines[-1] == f"{len(preset.rules)} rules; for each tensor the last matching rule wins"
    assert client_cli.main(["presets", "show", "xavier@1", "--json"]) == 0
    assert capsys.readouterr().out == preset.model_dump_json(indent=2) + "\n"


def test_a_table_shows_the_parameters_and_rule_options_that_differ(
    via_app: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Non-default scheme parameters and rule fields (packed, fan_axes) appear; defaults do not."""
    body = {"name": "reads-well-options", "version": 1, "description": "options",
            "rules": [{"match": {"type": "linear", "name": "fc*.weight"}, "init": {"scheme": "normal", "std": 0.02},
                       "fan_axes": {"in_axes": [0], "out_axes": [1]}},
                      {"match": {"type": "lstm"}, "init": {"scheme": "orthogonal"}, "packed": "whole"}]}  # fmt: skip
    (tmp_path / "p.json").write_text(json.dumps(body))
    assert client_cli.main(["presets", "publish", str(tmp_path / "p.json")]) == 0
    capsys.readouterr()
    assert client_cli.main(["presets", "show", "reads-well-options@1"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:-1]]
    assert rows == [
        ["0", "type=linear", "name=fc*.weight", "normal", "std=0.02", 'fan_axes={"in_axes":[0],"out_axes":[1]}'],
        ["1", "type=lstm", "orthogonal", "packed=whole"],
    ]


def test_a_conflicting_publish_is_the_users_input(
    via_app: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Publishing other rules under a published name and version exits 2 (was 1, 'the job or server
    failed'), and says which version to publish instead."""
    first = {"name": "reads-well-conflict", "version": 1, "description": "ours",
             "rules": [{"init": {"scheme": "zeros"}}]}  # fmt: skip
    (tmp_path / "a.json").write_text(json.dumps(first))
    (tmp_path / "b.json").write_text(json.dumps({**first, "rules": [{"init": {"scheme": "ones"}}]}))
    assert client_cli.main(["presets", "publish", str(tmp_path / "a.json")]) == 0
    assert client_cli.main(["presets", "publish", str(tmp_path / "a.json")]) == 0  # the same content: idempotent
    capsys.readouterr()
    assert client_cli.main(["presets", "publish", str(tmp_path / "b.json")]) == client_cli.EXIT_INPUT == 2
    err = capsys.readouterr().err
    assert "409 conflict" in err and "publish it as reads-well-conflict@2" in err


COUNTS = [(1, "1 {}"), (2, "2 {}s")]


@pytest.mark.parametrize(("n", "say"), COUNTS)
def test_plan_report_and_init_lines_count_in_the_numbers_form(n: int, say: str) -> None:
    """'1 tensors, 1 parameters' read wrong: each noun agrees with its number."""
    totals = {"tensors": n, "parameters": n, "bytes": n}
    # Only the fields the formatters read: the totals line does not depend on the rest.
    plan_fields: dict[str, Any] = {"tensors": [], "totals": PlanTotals(**totals), "warnings": []}
    plan = Plan.model_construct(**plan_fields)
    expected = ", ".join(say.format(word) for word in ("tensor", "parameter", "byte"))
    assert client_cli.format_plan(plan).splitlines()[-1] == expected
    report_fields: dict[str, Any] = {
        "tensors": [], "warnings": [], "totals": ReportTotals(**totals, nan_count=0, inf_count=0),
        "artifact": ArtifactInfo(sha256="a" * 64, size=n),
    }  # fmt: skip
    report = Report.model_construct(**report_fields)
    assert (
        client_cli.format_report(report).splitlines()[-1]
        == f"{say.format('tensor')}, {say.format('parameter')}, sha256 {'a' * 64}"
    )
    progress = Progress(tensors_done=n, tensors_total=n, bytes_done=n, bytes_total=n)
    assert client_cli.wrote_line("w.safetensors", progress, "b" * 64) == (
        f"wrote w.safetensors: {say.format('tensor')}, {say.format('byte')}, sha256 {'b' * 64}"
    )


@pytest.mark.parametrize(("n", "say"), COUNTS)
def test_cache_info_and_prune_count_in_the_numbers_form(
    n: int, say: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INITIUM_CACHE_DIR", str(tmp_path))
    (tmp_path / "ab").mkdir()
    for i in range(n):
        (tmp_path / "ab" / f"{i:064x}.safetensors").write_bytes(b"x" * 1000)
    assert client_cli.main(["cache", "info"]) == 0
    assert f"{tmp_path}: {say.format('file')}, " in capsys.readouterr().out
    assert client_cli.main(["cache", "prune"]) == 0
    assert f"{tmp_path}: removed {say.format('file')}, " in capsys.readouterr().out


def test_preset_table_counts_its_rules() -> None:
    one = get_preset("xavier@1").model_copy(update={"rules": get_preset("xavier@1").rules[:1]})
    assert client_cli.format_preset(one).splitlines()[-1].startswith("1 rule; ")
    two = one.model_copy(update={"rules": one.rules * 2})
    assert client_cli.format_preset(two).splitlines()[-1].startswith("2 rules; ")
