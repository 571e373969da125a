"""The client's settings, resolved once: base URL, API key, timeouts, retries, polling and cache."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from initium.client._cache import DEFAULT_CACHE_MAX_BYTES, default_cache_dir, resolve_cache_max_bytes
from initium.client._retry import RetryPolicy

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)


@dataclass(frozen=True)
class Settings:
    """Resolved once: argument first, then INITIUM_BASE_URL / INITIUM_API_KEY / INITIUM_CACHE_DIR /
    INITIUM_CACHE_MAX_BYTES, then the default. `cache_max_bytes`: the download cache's cap in bytes,
    None for no cap (initium.client._cache.resolve_cache_max_bytes parses it; ValueError names the setting)."""

    base_url: str
    api_key: str | None
    timeout: httpx.Timeout
    retry: RetryPolicy
    poll_interval: float
    cache_dir: Path | None = None
    cache_max_bytes: int | None = DEFAULT_CACHE_MAX_BYTES

    @classmethod
    def resolve(
        cls,
        base_url: str | None,
        api_key: str | None,
        timeout: httpx.Timeout | float | None,
        retry: RetryPolicy | None,
        poll_interval: float,
        cache_dir: str | Path | Literal[False] | None = None,
        cache_max_bytes: int | str | None = None,
    ) -> Settings:
        url = (base_url or os.environ.get("INITIUM_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        key = api_key or os.environ.get("INITIUM_API_KEY") or None
        if timeout is None:
            timeout = DEFAULT_TIMEOUT
        elif not isinstance(timeout, httpx.Timeout):
            timeout = httpx.Timeout(timeout)
        cache = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser() if cache_dir else None
        cap = resolve_cache_max_bytes(cache_max_bytes)
        return cls(url, key, timeout, retry or RetryPolicy(), poll_interval, cache, cap)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
