"""Fetch: STUB - being implemented (aiohttp; the only module doing network I/O to sources)."""
from __future__ import annotations

from .config import FetchConfig
from .model import FetchResult


class Fetcher:
    """One shared aiohttp session. ``async with Fetcher(cfg) as f: await f.fetch(url, etag, last_modified)``.
    ``fetch`` never raises for network/HTTP/size problems: it returns FetchResult(status="error", error=...)."""

    def __init__(self, cfg: FetchConfig):
        self.cfg = cfg

    async def __aenter__(self) -> Fetcher:
        raise NotImplementedError

    async def __aexit__(self, *exc) -> None:
        raise NotImplementedError

    async def fetch(self, url: str, etag: str | None = None, last_modified: str | None = None) -> FetchResult:
        raise NotImplementedError


def fetch_sync(url: str, cfg: FetchConfig) -> FetchResult:
    """One fetch outside any event loop (for `monitor match URL`)."""
    raise NotImplementedError
