"""Full text: for sources with ``full_text: true``, each new item's article page is fetched and
its main text extracted (trafilatura), so the matcher and dedupe see the article, not a teaser
and not the page furniture.

Rules:
- Only new items are fetched (never items already stored), through the same Fetcher as feeds:
  the same timeouts, size caps, per-host limit and politeness delay, User-Agent.
- Only http(s) links and HTML responses; extraction runs off the event loop.
- The extracted text replaces the item's content when it is longer than what the feed gave
  (and the summary stays the feed's); a page that cannot be fetched or yields nothing leaves
  the item as the feed gave it, with one log line. A full-text problem never fails a poll.
- Results are cached per canonical URL in memory (the last ``CACHE_SIZE`` pages), so one
  article carried by several sources is fetched once.
"""
from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import replace

from .fetch import Fetcher
from .logs import event
from .model import Item

log = logging.getLogger("monitor.fulltext")

CACHE_SIZE = 2000
#: Pages fetched at once per poll (the Fetcher's own limits apply as well).
PARALLEL = 4


def extract_text(body: bytes) -> str:
    """The main text of an HTML page ('' when trafilatura finds none)."""
    import trafilatura

    text = trafilatura.extract(body, include_comments=False, include_tables=False, favor_precision=True)
    return (text or "").strip()


class FullText:
    def __init__(self, fetcher: Fetcher):
        self.fetcher = fetcher
        self._cache: OrderedDict[str, str] = OrderedDict()

    async def complete(self, source: str, items: list[Item]) -> list[Item]:
        """``items`` with their content replaced by their page's main text where it is fuller."""
        slots = asyncio.Semaphore(PARALLEL)

        async def one(item: Item) -> Item:
            url = item.canonical_link or item.link
            if not url or not url.lower().startswith(("http://", "https://")):
                return item
            async with slots:
                text = await self._text(source, item.link or url, url)
            if text and len(text) > len(item.content or ""):
                return replace(item, content=text)
            return item

        return list(await asyncio.gather(*(one(it) for it in items)))

    async def _text(self, source: str, link: str, key: str) -> str:
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        result = await self.fetcher.fetch(link)
        text = ""
        if not result.ok:
            event(log, "full text failed", logging.INFO, source=source, link=link, error=result.error)
        elif "html" not in (result.content_type or "text/html").lower():
            event(log, "full text skipped", logging.DEBUG, source=source, link=link, content_type=result.content_type)
        else:
            try:
                text = await asyncio.to_thread(extract_text, result.body or b"")
            except Exception as e:  # noqa: BLE001 - a page must never fail the poll
                event(log, "full text failed", logging.INFO, source=source, link=link,
                      error=f"extraction: {e.__class__.__name__}: {e}")
        self._cache[key] = text
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return text
