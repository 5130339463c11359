"""Parse: STUB - being implemented (feedparser, with XML made safe first)."""
from __future__ import annotations

from .model import ParsedFeed


class FeedParseError(ValueError):
    """The bytes are not a usable feed; str(err) is the reason for the log."""


def parse_feed(body: bytes, url: str | None = None, content_type: str | None = None) -> ParsedFeed:
    raise NotImplementedError
