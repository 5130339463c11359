"""Plain data passed between the pipeline's stages.

Every stage takes and returns these dataclasses; none of them touches the outside world.
The flow is one direction only:

    fetch -> FetchResult -> parse -> ParsedFeed(FeedEntry...) -> normalize -> Item
          -> store (StoredItem) -> match (WatchlistHit...) -> alert -> outbox -> notify (Notification)

Datetimes are always timezone-aware UTC.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple


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
    retry_after: float | None = None  # seconds the server asked us to wait (429/503 Retry-After)
    max_age: float | None = None  # Cache-Control max-age of the response, seconds

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class ItemKey(NamedTuple):
    """What makes an item the same as a stored one: its guid and its canonical link."""

    guid: str
    canonical_link: str | None


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
    ttl: float | None = None  # seconds the feed says it stays fresh (<ttl>, sy:updatePeriod/Frequency)


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
        return join_text(self.summary, self.content)


def join_text(*fields: object) -> str:
    """The text the matcher sees besides the title: the non-empty fields joined by newlines,
    leaving out one that another contains (a summary that is the start of the body is not
    matched twice)."""
    parts: list[str] = []
    for value in fields:
        if not value:
            continue
        v = str(value)
        if any(v in p for p in parts):
            continue
        parts = [p for p in parts if p not in v]
        parts.append(v)
    return "\n".join(parts)


#: A published date further ahead than this is a broken clock, not news from the future.
FUTURE_SLACK = timedelta(days=1)


def plausible_published(when: datetime) -> datetime | None:
    """``when``, or None when it is more than FUTURE_SLACK ahead (both parsers' rule): such an
    item counts as published when first seen rather than fresh forever."""
    if when > datetime.now(UTC) + FUTURE_SLACK:
        return None
    return when


@dataclass(frozen=True)
class StoredItem:
    """An item the store has accepted as new. ``fresh`` is False when it was first seen
    already older than ``max_age``: stored silently, never alerted."""

    id: int
    story_id: int
    source: str
    item: Item
    fresh: bool
    joined: bool = False  # it joined a story an earlier item opened
    alerted: bool = False  # it made its story's alert


#: Watchlist severities, lowest first (a channel's ``min_severity`` compares by this order).
SEVERITIES = ("info", "high", "critical")
#: Severity of a watchlist that does not set one.
DEFAULT_SEVERITY = "high"


@dataclass(frozen=True)
class Signal:
    """An optional weighted clause of a watchlist: adds ``weight`` (times the title weight
    when it is true in the title alone) to the score when ``query`` is true."""

    query: str
    weight: float = 1.0


@dataclass(frozen=True)
class WatchlistSpec:
    """Everything the matcher needs to know about one watchlist.

    Semantics (see README "Scoring"):
    - clauses: ``query`` (weight 1; when set it is *required*: the watchlist never fires
      unless it is true) and each of ``signals`` (optional, adds its weight when true);
    - a true clause scores ``weight * title_weight`` when it is true in the title alone,
      else ``weight``; the item's score is the sum over true clauses;
    - the watchlist fires when (``query`` is None or true) and no ``exclude`` query is true
      (anywhere in title or text) and score >= ``min_score``.
    """

    name: str
    query: str | None = None
    aliases: Mapping[str, Sequence[str]] | None = None
    signals: tuple[Signal, ...] = ()
    exclude: tuple[str, ...] = ()
    min_score: float = 1.0
    title_weight: float = 2.0
    severity: str = DEFAULT_SEVERITY


@dataclass(frozen=True)
class WatchlistHit:
    """A watchlist that matched an item: its name, its score and the matched terms as they
    appear in the text (lower-cased), in first-seen order, and the watchlist's severity."""

    name: str
    score: float
    terms: tuple[str, ...] = field(default_factory=tuple)
    severity: str = DEFAULT_SEVERITY


@dataclass(frozen=True)
class ClauseExplanation:
    """One clause of a watchlist, evaluated on one item (for ``monitor match --explain``).

    ``kind``: "query", "signal" or "exclude"; ``query``: its canonical text; ``true``:
    whether it holds; ``in_title``: whether it holds in the title alone; ``points``: what it
    adds to the score (0 when false, and always 0 for an exclude); ``terms``: the matched
    surfaces (lower-cased) that made it true, or, when false, those of its terms that
    occurred; ``spans``: (field, start, end) of every occurrence of those terms, ``field``
    being "title" or "text" and the offsets indexing the strings given to the matcher."""

    kind: str
    query: str
    weight: float
    true: bool
    in_title: bool
    points: float
    terms: tuple[str, ...] = ()
    spans: tuple[tuple[str, int, int], ...] = ()


@dataclass(frozen=True)
class Explanation:
    """Why a watchlist did or did not fire on one item."""

    name: str
    matched: bool
    score: float
    min_score: float
    excluded: bool
    severity: str
    clauses: tuple[ClauseExplanation, ...]


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
    outlets: tuple[str, ...] = ()  # every outlet known to carry the story, first seen first
    update: bool = False  # a repost update ("now reported by N outlets"), not the first alert


@dataclass(frozen=True)
class Digest:
    """One message to one channel listing several stories: a digest channel's periodic
    message, or an instant channel's alerts held back by its ``max_per_hour`` and folded
    into one message. ``entries`` are newest first; ``folded`` says how many of them are
    there because of the rate limit (0 for a plain digest)."""

    channel: str
    entries: tuple[Notification, ...]
    folded: int = 0
    since: datetime | None = None  # the previous digest of this channel, when there was one
    until: datetime | None = None  # when this one was made


@dataclass(frozen=True)
class Notice:
    """An operator notice for the ``admin`` channel: dead-lettered deliveries, a source
    failing for a long time, a source that recovered."""

    id: int
    kind: str  # dead_letter | source_failing | source_recovered
    subject: str
    body: str
