"""Published presets are parsed once per process and bounded (issue 16 item 9): every request
re-read every preset, so 30 presets of 10,000 rules made planning the README MLP take 15 s and
GET /v1/presets 29.8 s; a version of 10^30 squatted "newest" for good."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from initium.schemas.catalog import PresetList
from initium.schemas.policy import MAX_PRESET_VERSION
from initium.schemas.presets import Preset, builtin_presets
from initium.service.api.app import create_app
from initium.service.config import Settings
from initium.service.errors import LimitExceededError, PresetNotFoundError
from initium.service.jobs.presets import PresetStore

RULE = {"match": {"type": "linear", "role": "weight"}, "init": {"scheme": "zeros"}}


def preset(name: str, version: int = 1, rules: int = 1) -> Preset:
    return Preset.model_validate({"name": name, "version": version, "description": "d", "rules": [RULE] * rules})


def write(store: PresetStore, body: dict[str, Any], file_name: str) -> None:
    """A file placed in the directory by hand (or by an older server), bypassing publish's checks."""
    (store.dir / file_name).write_text(json.dumps(body))


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The file names PresetStore parses, in order."""
    parsed: list[str] = []
    load = PresetStore._load

    def spy(self: PresetStore, name: str) -> Preset | None:
        parsed.append(name)
        return load(self, name)

    monkeypatch.setattr(PresetStore, "_load", spy)
    return parsed


def test_each_file_is_parsed_once_and_another_process_publish_is_seen(tmp_path: Path, counted: list[str]) -> None:
    api, other = PresetStore(tmp_path), PresetStore(tmp_path)  # two API processes sharing the directory
    other.publish(preset("acme"))
    assert ("acme", 1) in api.all()  # the next request sees it
    other.publish(preset("acme", 2))
    for _ in range(5):
        assert api.lookup("acme").version == 2
        assert [p.ref for p in api.published()] == ["acme@1", "acme@2"]
    assert counted == ["acme@1.json", "acme@2.json"]  # each once, by the store that reads them
    assert api.all().keys() == builtin_presets().keys() | {("acme", 1), ("acme", 2)}


def test_a_file_that_does_not_load_is_skipped_with_one_warning(
    tmp_path: Path, counted: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    store = PresetStore(tmp_path)
    store.publish(preset("acme"))
    # A version published before versions were bounded, a truncated file, and a file under another ref.
    write(store, preset("house").model_dump() | {"version": 10**30}, f"house@{10**30}.json")
    (store.dir / "broken@1.json").write_text('{"name": "broken", "vers')
    write(store, preset("other", 3).model_dump(), "alias@1.json")
    with caplog.at_level(logging.WARNING, logger="initium.presets"):
        for _ in range(3):
            assert [p.ref for p in store.published()] == ["acme@1"]
            with pytest.raises(PresetNotFoundError):
                store.lookup("house")
    warned = sorted(str(r.args[0]) for r in caplog.records if isinstance(r.args, tuple))
    assert warned == ["alias@1.json", "broken@1.json", f"house@{10**30}.json"]  # once each
    assert len(counted) == 4
    assert "version: Input should be less than or equal to 2147483647" in caplog.text


def test_a_preset_over_the_rule_bound_is_413_naming_the_variable(tmp_path: Path) -> None:
    store = PresetStore(tmp_path, max_rules=3)
    assert store.publish(preset("small", rules=3))[1]
    with pytest.raises(LimitExceededError, match="at most 3 rules \\(INITIUM_MAX_PRESET_RULES\\)") as raised:
        store.publish(preset("big", rules=4))
    assert raised.value.status == 413 and raised.value.loc == ["rules"]
    assert not (store.dir / "big@1.json").exists()


def test_published_presets_are_bounded_in_bytes_together(tmp_path: Path) -> None:
    # Round two of issue 16: presets each within the rule bound, 60 of them, made a 68 MB listing.
    one = len(preset("p0", rules=10).model_dump_json(indent=1).encode())
    store = PresetStore(tmp_path, max_total_bytes=3 * one + 10)
    for i in range(3):
        assert store.publish(preset(f"p{i}", rules=10))[1]
    with pytest.raises(LimitExceededError, match="INITIUM_MAX_PRESETS_BYTES") as raised:
        store.publish(preset("p3", rules=10))
    assert raised.value.status == 413 and not (store.dir / "p3@1.json").exists()
    assert store.publish(preset("p1", rules=10)) == (preset("p1", rules=10), False)  # republishing stays a no-op
    assert Settings().max_presets_bytes == 64 * 1024 * 1024


def test_the_catalog_is_serialized_once_per_listing(tmp_path: Path) -> None:
    store = PresetStore(tmp_path)
    first = store.catalog_json()
    assert store.catalog_json() is first  # cached, not rebuilt
    store.publish(preset("acme"))
    again = store.catalog_json()
    expected = sorted([*builtin_presets().values(), preset("acme")], key=lambda p: (p.name, p.version))
    assert again == PresetList(presets=expected).model_dump_json().encode()


def test_the_api_bounds_presets_and_serves_the_cached_catalog(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, embedded_worker=False, max_preset_rules=2)
    with TestClient(create_app(settings)) as client:
        body = preset("acme", rules=2).model_dump(mode="json")
        assert client.post("/v1/presets", json=body).status_code == 201
        big = client.post("/v1/presets", json=body | {"name": "big", "rules": [RULE] * 3})
        assert big.status_code == 413 and "INITIUM_MAX_PRESET_RULES" in big.json()["error"]["message"]
        squat = client.post("/v1/presets", json=body | {"name": "house", "version": 10**30})
        assert squat.status_code == 422 and squat.json()["error"]["loc"] == ["version"]
        assert client.post("/v1/presets", json=body | {"version": MAX_PRESET_VERSION}).status_code == 201
        listed = client.get("/v1/presets")
        assert listed.headers["content-type"] == "application/json"
        refs = [(p.name, p.version) for p in PresetList.model_validate_json(listed.content).presets]
        assert refs == sorted(builtin_presets().keys() | {("acme", 1), ("acme", MAX_PRESET_VERSION)})
        assert client.get("/v1/presets/acme").json()["version"] == MAX_PRESET_VERSION
        # Versions that are no number, or one past int()'s 4,300 digits, were a 500.
        for ref in ("gpt2@abc", "gpt2@" + "9" * 5000, f"acme@{MAX_PRESET_VERSION + 1}"):
            missing = client.get(f"/v1/presets/{ref}")
            assert missing.status_code == 404 and len(missing.text) < 400, missing.text


@pytest.mark.parametrize("ref", ["gpt2@", "gpt2@01", "gpt2@+1", "gpt2@1.0"])
def test_a_preset_address_is_canonical(tmp_path: Path, ref: str) -> None:
    # Round two of issue 16: GET /v1/presets/gpt2@ answered the newest version, gpt2@01 version 1.
    store = PresetStore(tmp_path)
    assert store.lookup("gpt2@1").version == 1 and store.lookup("gpt2").name == "gpt2"
    with pytest.raises(PresetNotFoundError, match="gpt2@N"):
        store.lookup(ref)
