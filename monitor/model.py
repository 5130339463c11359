"""Plain data passed between the pipeline's stages.

Every stage takes and returns these dataclasses; none of them touches the outside world.
The flow is one direction only:

    fetch -> FetchResult -> parse -> ParsedFeed(FeedEntry...) -> normalize -> Item
          -> store (StoredItem) -> match (WatchlistHit...) -> alert -> outbox -> notify (Notification)

Datetimes are always timezone-aware UTC.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class FetchResult:
    """Outcome of one HTTP poll of a source.

    status is ``ok`` (body holds the bytes), ``not_modified`` (304, body None) or
    ``error`` (error says why, in words an operator understands: "HTTP 404",
    "timed out after 30 s", "body exceeds 20 MB", "connection refused" ...).
    """

    url: str
    status: str  # "ok" | "not_modified" | "error"
    http_status: int | None = None
    body: bytes | None = None
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    error: str | None = None
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class FeedEntry:
    """One entry as the feed gave it (HTML not yet stripped)."""

    guid: str | None
    link: str | None
    title: str
    summary_html: str = ""
    content_html: str = ""
    published: datetime | None = None


@dataclass(frozen=True)
class ParsedFeed:
    """A parsed feed. ``warning`` carries a non-fatal problem (feedparser's bozo) for the log."""

    title: str | None
    entries: list[FeedEntry]
    warning: str | None = None


@dataclass(frozen=True)
class Item:
    """A normalised item: plain text, canonical link, a stable guid. Ready to store and match."""

    guid: str
    link: str | None
    canonical_link: str | None
    title: str
    summary: str
    content: str
    published: datetime | None

    @property
    def text(self) -> str:
        """Body text the matcher sees besides the title: summary plus content, without repeats."""
        if not self.content:
            return self.summary
        if not self.summary or self.summary in self.content:
            return self.content
        return f"{self.summary}\n{self.content}"


@dataclass(frozen=True)
class StoredItem:
    """An item the store has accepted as new. ``fresh`` is False when it was first seen
    already older than ``max_age``: stored silently, never alerted."""

    id: int
    story_id: int
    source: str
    item: Item
    fresh: bool


@dataclass(frozen=True)
class WatchlistHit:
    """A watchlist that matched an item: its name, a score and the matched terms as they
    appear in the text (lower-cased), in first-seen order."""

    name: str
    score: float
    terms: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Notification:
    """What one channel is told about one alert (one story)."""

    alert_id: int
    channel: str
    title: str
    link: str | None
    source: str
    published: datetime | None
    watchlists: tuple[WatchlistHit, ...]
    snippet: str = ""
    outlets: tuple[str, ...] = ()
