"""What Client and AsyncClient share: their construction (settings, download cache, httpx client).

The calls themselves are initium.client._calls, the retry policy _retry, the settings _settings,
downloads _download and waiting _wait; the two clients differ only in how they send and sleep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Generic, Literal, TypeVar

import httpx

from initium.client._cache import DownloadCache
from initium.client._retry import RetryPolicy
from initium.client._settings import Settings

H = TypeVar("H", httpx.Client, httpx.AsyncClient)


class ClientBase(Generic[H]):
    """Construction shared by Client and AsyncClient; `http_class` is the httpx client they send with.

    The base URL is, first match wins: the `base_url` argument, $INITIUM_BASE_URL, then
    http://127.0.0.1:8000; the API key: the `api_key` argument, then $INITIUM_API_KEY. Calls are
    retried as [Note: retries] in initium.client._retry says (`retry=RetryPolicy(max_attempts=1)`
    turns that off). `progress`: bars on stderr when it is a terminal (None), always (True), never
    (False). Pass `http_client` to reuse a configured httpx client (tests pass the app's TestClient,
    so the real client drives the real routes in-process). `cache_dir`: where `initialize()` keeps
    verified artifacts to reuse (initium.client._cache): None for $INITIUM_CACHE_DIR or
    ~/.cache/initium/artifacts, False for no cache. `cache_max_bytes`: the cap on the bytes only the
    cache holds, least recently used entries evicted first: None for $INITIUM_CACHE_MAX_BYTES or
    10 GB, 0 or "none" for no cap, an int or a string such as "20GB" or "500MiB" (ValueError else).
    """

    http_class: type[H]

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: httpx.Timeout | float | None = None,
        retry: RetryPolicy | None = None,
        poll_interval: float = 0.2,
        progress: bool | None = None,
        http_client: H | None = None,
        cache_dir: str | Path | Literal[False] | None = None,
        cache_max_bytes: int | str | None = None,
    ) -> None:
        self.settings = Settings.resolve(base_url, api_key, timeout, retry, poll_interval, cache_dir, cache_max_bytes)
        root, cap = self.settings.cache_dir, self.settings.cache_max_bytes
        self.cache = DownloadCache(root, cap) if root else None
        self.base_url = self.settings.base_url
        self.progress = progress
        self._owns_http = http_client is None
        self._http: H = http_client or self.http_class(
            base_url=self.base_url, timeout=self.settings.timeout, headers=self.settings.headers()
        )
        if http_client is not None:
            self._http.headers.update(self.settings.headers())
