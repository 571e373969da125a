"""The download cache's size cap (issue 18 item 5), driven on DownloadCache directly with small files:
least recently used entries go first, a file hard-linked from a caller's path neither counts nor
goes, the entry just remembered stays, and the cap's setting parses as documented."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from initium.client import Client
from initium.client._cache import CACHE_MAX_ENV, DEFAULT_CACHE_MAX_BYTES, DownloadCache, resolve_cache_max_bytes
from initium.client._fetch import Fetch

NAME = "model.safetensors"


def _sha(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def _remember(cache: DownloadCache, label: str, size: int, used_s: int | None = None, mine: Path | None = None) -> Path:
    """Cache a `size`-byte artifact `label` as `initialize()` does (downloaded into the cache, or to the
    caller's `mine` and linked in); `used_s` back-dates its last use to that many seconds after the epoch."""
    folder = cache.folder(_sha(label))
    assert folder is not None
    cached = folder / NAME
    target = mine or cached
    target.write_bytes(label.encode()[:1] * size)
    cache.remember(Fetch(url="", target=target, sha256=_sha(label), size=size, cached=cached))
    if used_s is not None:
        os.utime(folder / f".{NAME}.stamp", ns=(used_s * 10**9, used_s * 10**9))
    return cached


def _kept(cache: DownloadCache, *labels: str) -> list[str]:
    return [label for label in labels if (cache.root / _sha(label) / NAME).exists()]


def test_least_recently_used_go_first_and_a_reuse_counts_as_use(tmp_path: Path) -> None:
    cache = DownloadCache(tmp_path)  # no cap while the entries are set up
    for used_s, label in enumerate("abc", start=1):
        _remember(cache, label, 100, used_s)
    b = cache.root / _sha("b") / NAME
    assert cache.reuse(Fetch(url="", target=b, sha256=_sha("b"), size=100, cached=b))  # b: now the newest but one
    cache.max_bytes = 250
    _remember(cache, "d", 100)  # 400 bytes: a (oldest) then c must go to get under 250
    assert _kept(cache, *"abcd") == ["b", "d"]
    assert cache.usage() == (2, 200, 200)
    assert not (cache.root / _sha("a") / f".{NAME}.stamp").exists()  # its stamp went with it


def test_files_linked_from_a_callers_path_neither_count_nor_go(tmp_path: Path) -> None:
    cache = DownloadCache(tmp_path / "cache")
    mine = tmp_path / "mine.safetensors"
    linked = _remember(cache, "linked", 1000, used_s=1, mine=mine)  # the oldest, and 10x the cap
    assert linked.stat().st_nlink == 2
    _remember(cache, "x", 100, used_s=2)
    cache.max_bytes = 150
    _remember(cache, "y", 100)  # 200 bytes only the cache holds: x goes, the linked file costs nothing
    assert _kept(cache, "linked", "x", "y") == ["linked", "y"]
    assert cache.usage() == (2, 1100, 100)
    mine.unlink()  # now only the cache holds it: it counts, and as the least recently used, it goes
    _remember(cache, "z", 100)  # 1200 bytes: the linked one (oldest), then y, go
    assert _kept(cache, "linked", "y", "z") == ["z"]
    assert cache.usage() == (1, 100, 100)


def test_the_entry_just_remembered_stays_even_over_the_cap(tmp_path: Path) -> None:
    cache = DownloadCache(tmp_path, max_bytes=50)
    _remember(cache, "big", 100)
    assert _kept(cache, "big") == ["big"]
    _remember(cache, "bigger", 200)
    assert _kept(cache, "big", "bigger") == ["bigger"]


def test_files_still_being_written_are_never_evicted(tmp_path: Path) -> None:
    cache = DownloadCache(tmp_path)
    unstamped = tmp_path / _sha("writing") / NAME  # linked in by another client, not yet stamped
    unstamped.parent.mkdir()
    unstamped.write_bytes(b"w" * 100)
    partial = tmp_path / _sha("old") / f".{NAME}.123-abcdef01.partial"  # a download in flight
    partial.parent.mkdir()
    partial.write_bytes(b"p" * 100)
    cache.max_bytes = 10
    _remember(cache, "new", 100)
    assert unstamped.exists() and partial.exists() and _kept(cache, "new") == ["new"]
    assert cache.evict(keep=tmp_path / _sha("new")) == (0, 0)  # over the cap (200 bytes), yet nothing may go
    assert cache.evict() == (1, 100) and _kept(cache, "new") == []  # unless the newest may go too
    assert unstamped.exists() and partial.exists()


def test_no_cap_evicts_nothing(tmp_path: Path) -> None:
    cache = DownloadCache(tmp_path, max_bytes=None)
    for used_s, label in enumerate("abc", start=1):
        _remember(cache, label, 100, used_s)
    assert cache.evict() == (0, 0) and _kept(cache, *"abc") == list("abc")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (None, DEFAULT_CACHE_MAX_BYTES),
        ("", DEFAULT_CACHE_MAX_BYTES),
        ("1000", 1000),
        ("1_000", 1000),
        (" 10GB ", 10 * 10**9),
        ("500MiB", 500 * 2**20),
        ("2 kb", 2000),
        ("0", None),
        ("none", None),
        ("OFF", None),
    ],
)
def test_the_env_var_parses(monkeypatch: pytest.MonkeyPatch, env: str | None, expected: int | None) -> None:
    if env is None:
        monkeypatch.delenv(CACHE_MAX_ENV, raising=False)
    else:
        monkeypatch.setenv(CACHE_MAX_ENV, env)
    assert resolve_cache_max_bytes() == expected


@pytest.mark.parametrize("bad", ["ten", "10 GBs", "-5", "1.5GB", "1__0"])
def test_a_bad_env_var_names_itself_and_the_fix(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv(CACHE_MAX_ENV, bad)
    with pytest.raises(ValueError, match=f"{CACHE_MAX_ENV}=.*no cap"):
        resolve_cache_max_bytes()


@pytest.mark.parametrize(("argument", "expected"), [(123, 123), ("2kb", 2000), (0, None), ("none", None)])
def test_the_argument_wins_over_the_env_var(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argument: int | str, expected: int | None
) -> None:
    monkeypatch.setenv(CACHE_MAX_ENV, "999")
    with Client("http://127.0.0.1:9", cache_dir=tmp_path, cache_max_bytes=argument) as client:
        assert client.settings.cache_max_bytes == expected
        assert client.cache is not None and client.cache.max_bytes == expected


@pytest.mark.parametrize("bad", [-1, True, "lots"])
def test_a_bad_argument_names_itself(bad: int | str) -> None:
    with pytest.raises(ValueError, match="cache_max_bytes="):
        Client("http://127.0.0.1:9", cache_dir=False, cache_max_bytes=bad)
