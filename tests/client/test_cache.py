"""The client's download cache against the real app: a repeated request is not downloaded again, a
path gets its own copy, and an entry that changed after it was verified is downloaded again."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from initium.client import AsyncClient, Client, _async, _client
from initium.client._cache import default_cache_dir
from initium.client.cli import main


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Targets of every download the clients start (sync and async)."""
    seen: list[Path] = []
    sync_download, async_download = _client.download, _async.adownload

    def counted(http: Any, fetch: Any, *args: Any) -> Path:
        seen.append(fetch.target)
        return sync_download(http, fetch, *args)

    async def acounted(http: Any, fetch: Any, *args: Any) -> Path:
        seen.append(fetch.target)
        return await async_download(http, fetch, *args)

    monkeypatch.setattr(_client, "download", counted)
    monkeypatch.setattr(_async, "adownload", acounted)
    return seen


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_repeated_request_is_answered_from_the_cache(
    app_client: TestClient, mlp_request: dict[str, Any], tmp_path: Path, downloads: list[Path]
) -> None:
    client = Client(http_client=app_client, cache_dir=tmp_path / "cache")
    first = client.initialize({**mlp_request, "seed": 31})
    again = client.initialize({**mlp_request, "seed": 31})
    assert downloads == [first.path] and again.path == first.path
    assert first.path.parent == tmp_path / "cache" / first.sha256
    assert _sha256(again.path) == again.sha256 and again.tensors.keys() == first.tensors.keys()


def test_a_changed_entry_is_downloaded_again(
    app_client: TestClient, mlp_request: dict[str, Any], tmp_path: Path, downloads: list[Path]
) -> None:
    client = Client(http_client=app_client, cache_dir=tmp_path / "cache")
    first = client.initialize({**mlp_request, "seed": 32})
    with open(first.path, "r+b") as f:  # an in-place write, as a save over the same path would be
        f.seek(-1, 2)
        f.write(b"\x00")
    again = client.initialize({**mlp_request, "seed": 32})
    assert len(downloads) == 2 and _sha256(again.path) == first.sha256


def test_a_path_gets_its_own_copy_and_a_write_to_it_never_reaches_the_cache(
    app_client: TestClient, mlp_request: dict[str, Any], tmp_path: Path, downloads: list[Path]
) -> None:
    client = Client(http_client=app_client, cache_dir=tmp_path / "cache")
    request = {**mlp_request, "seed": 33}
    a = client.initialize(request, path=tmp_path / "a.safetensors")  # downloaded, then linked into the cache
    b = client.initialize(request, path=tmp_path / "b.safetensors")  # copied from the cache
    assert downloads == [a.path]
    assert _sha256(b.path) == a.sha256 and b.path.stat().st_ino != a.path.stat().st_ino
    a.path.write_bytes(b"training wrote over its init file")  # same inode as the cache's entry
    c = client.initialize(request, path=tmp_path / "c.safetensors")
    assert downloads == [a.path, c.path] and _sha256(c.path) == a.sha256 and _sha256(b.path) == a.sha256


def test_an_unusable_cache_never_fails_a_verified_download(
    app_client: TestClient, mlp_request: dict[str, Any], tmp_path: Path, downloads: list[Path]
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache folder would go")
    client = Client(http_client=app_client, cache_dir=blocker)
    result = client.initialize({**mlp_request, "seed": 36}, path=tmp_path / "w.safetensors")
    assert _sha256(result.path) == result.sha256 and downloads == [result.path]
    assert not any(p.name.endswith(".partial") for p in tmp_path.rglob("*"))
    elsewhere = client.initialize({**mlp_request, "seed": 36})  # no path: a temporary directory instead
    assert _sha256(elsewhere.path) == result.sha256 and not elsewhere.path.is_relative_to(blocker)


def test_the_async_client_shares_the_cache(
    app_client: TestClient, mlp_request: dict[str, Any], tmp_path: Path, downloads: list[Path]
) -> None:
    request = {**mlp_request, "seed": 34}
    first = Client(http_client=app_client, cache_dir=tmp_path / "cache").initialize(request)

    async def go() -> Path:
        http = httpx.AsyncClient(base_url="http://initium.test", transport=httpx.ASGITransport(app=app_client.app))
        async with http, AsyncClient(http_client=http, cache_dir=tmp_path / "cache") as client:
            return (await client.initialize(request)).path

    assert asyncio.run(go()) == first.path and downloads == [first.path]


def test_the_cache_can_be_turned_off(
    app_client: TestClient, mlp_request: dict[str, Any], downloads: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Client(http_client=app_client, cache_dir=False)
    assert client.cache is None
    client.initialize({**mlp_request, "seed": 35})
    client.initialize({**mlp_request, "seed": 35})
    assert len(downloads) == 2
    monkeypatch.setenv("INITIUM_CACHE_DIR", "off")
    assert default_cache_dir() is None and Client(http_client=app_client).cache is None
    monkeypatch.delenv("INITIUM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    assert default_cache_dir() == Path("/somewhere/initium/artifacts")


def test_the_cache_command_reports_prunes_and_clears(
    app_client: TestClient, mlp_request: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("INITIUM_CACHE_DIR", str(tmp_path / "cache"))
    client = Client(http_client=app_client)
    mine = client.initialize({**mlp_request, "seed": 37}, path=tmp_path / "mine.safetensors")  # also linked in
    only_cached = client.initialize({**mlp_request, "seed": 38})  # held by the cache alone
    size = mine.path.stat().st_size
    assert main(["cache"]) == 0
    info = capsys.readouterr().out
    assert f"2 files, {2 * size / 1e6:,.1f} MB, of which {size / 1e6:,.1f} MB only the cache holds" in info
    assert main(["cache", "prune"]) == 0
    assert f"removed 1 file, freed {size / 1e6:,.1f} MB" in capsys.readouterr().out
    assert not only_cached.path.exists() and mine.path.exists()
    assert main(["cache", "clear"]) == 0 and "removed 1 file, freed 0.0 MB" in capsys.readouterr().out
    assert _sha256(mine.path) == mine.sha256 and list((tmp_path / "cache").iterdir()) == []
