"""Store: all persistent state, through SQLAlchemy 2. The only module that opens sessions.

Rules:
- The database is the truth: sources' HTTP and health state, items, stories, alerts and the
  outbox (one delivery row per alert and channel). Nothing correctness-bearing lives in memory.
- Exact duplicates are dropped on insert: the same guid from the same source, or the same
  canonical link from any source. Unique indexes enforce both, so a race cannot slip through.
- One poll is one transaction (``commit_poll``): new items, their stories, their alerts, the
  alerts' outbox rows and the source's new ETag/Last-Modified commit together or not at all.
  A crash before commit means the next poll refetches and redoes the work; a crash after
  commit leaves pending outbox rows that the next delivery pass sends. No alert is lost.
- A delivery row is sent at most once successfully: it is marked ``sent`` right after the
  channel accepted it; a failure records the error and the next attempt time (exponential
  backoff kept in the row).
- Schema changes are Alembic migrations under ``monitor/migrations``; ``Store.upgrade`` applies
  them (the daemon does so at start; ``monitor db upgrade`` does it by hand).
- SQLite runs in WAL mode with a busy timeout; PostgreSQL works unchanged.
- ``Store.open_readonly`` (``monitor backtest``) cannot write: SQLite is opened ``mode=ro``
  (a missing file is an error, nothing is created), PostgreSQL sessions are read-only; it
  never migrates, and ``schema_problem`` says when the schema is not the one this code needs.
- ``iter_items`` reads stored items oldest first in keyset-paginated batches (flat memory).
"""
from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import logging
import math
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import chain, groupby
from operator import itemgetter
from pathlib import Path
from urllib.parse import quote, urlsplit

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    and_,
    create_engine,
    delete,
    event,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from . import dedupe
from .dedupe import Fingerprint
from .model import DEFAULT_SEVERITY, FetchResult, Item, ItemKey, Notice, StoredItem, WatchlistHit, join_text

log = logging.getLogger("monitor.store")
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: PostgreSQL advisory lock taken by a poll's transaction while it assigns items to stories.
STORY_LOCK = 0x6E657773  # "news"
#: The newest migration (monitor/migrations/versions; tests/test_store.py checks they agree).
SCHEMA_HEAD = "0010"
#: PostgreSQL advisory lock held while migrating: replicas starting together migrate once.
MIGRATE_LOCK = 0x6D696772  # "migr"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend (SQLite has no tz)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use aware UTC datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class SourceRow(Base):
    __tablename__ = "sources"
    __table_args__ = (Index("ix_sources_next_poll", "next_poll_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    url: Mapped[str] = mapped_column(Text)
    etag: Mapped[str | None] = mapped_column(Text)
    last_modified: Mapped[str | None] = mapped_column(Text)
    last_polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[str | None] = mapped_column(String(20))
    last_error: Mapped[str | None] = mapped_column(Text)
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    items_total: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    failure_notice_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # "failing" notice sent
    next_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    poll_interval: Mapped[float | None] = mapped_column(Float)  # seconds, the adaptive interval now
    items_per_day: Mapped[float | None] = mapped_column(Float)
    body_hash: Mapped[str | None] = mapped_column(String(40))  # sha1 of the last body parsed
    leased_by: Mapped[str | None] = mapped_column(String(200))  # the replica polling it now
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)  # ... until then, unless renewed
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # not in the config (or disabled) since


class StoryRow(Base):
    __tablename__ = "stories"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ItemRow(Base):
    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("source_id", "guid_key", name="uq_items_source_guid"),
        Index("ix_items_story", "story_id"),
        Index("ix_items_first_seen", "first_seen_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"))
    story_id: Mapped[int] = mapped_column(ForeignKey("stories.id"))
    guid: Mapped[str] = mapped_column(Text)
    guid_key: Mapped[str] = mapped_column(String(40))
    link: Mapped[str | None] = mapped_column(Text)
    canonical_link: Mapped[str | None] = mapped_column(Text)
    link_key: Mapped[str | None] = mapped_column(String(40), unique=True)
    title: Mapped[str] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text)
    content: Mapped[str] = mapped_column(Text)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    fresh: Mapped[bool] = mapped_column(Boolean)


class FingerprintRow(Base):
    """What finds an item's story: see monitor.dedupe. ``at`` is when the item says the story
    happened (its published time, never later than first seen)."""

    __tablename__ = "fingerprints"
    __table_args__ = (
        Index("ix_fingerprints_lead", "lead_key", "at"),
        Index("ix_fingerprints_title", "title_key", "at"),
        Index("ix_fingerprints_story", "story_id"),
    )
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), primary_key=True)
    story_id: Mapped[int] = mapped_column(ForeignKey("stories.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    size: Mapped[int] = mapped_column(Integer)
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    lead_key: Mapped[str | None] = mapped_column(String(40))
    title_key: Mapped[str | None] = mapped_column(String(40))
    title: Mapped[str] = mapped_column(Text)
    words: Mapped[bytes | None] = mapped_column(LargeBinary)  # a short text's content words (dedupe)


class BandRow(Base):
    """One LSH band key of an item's fingerprint (the primary key is the lookup index). Rows
    are as small as they can be, as they are the bulk of the rows written and read (the
    smaller the index, the more of it cached): the time is the fingerprint's ``at`` in whole
    hours since 1970 (``at_hour``, 3 bytes), enough to pick which candidates to load and
    compare (their own ``at`` is checked after)."""

    __tablename__ = "story_bands"
    # by item: pruning drops the rows of items older than the story window (prune_story_keys)
    __table_args__ = (Index("ix_story_bands_item", "item_id"), {"sqlite_with_rowid": False})
    band_key: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    item_id: Mapped[int] = mapped_column(Integer, primary_key=True)  # items.id (no foreign key: it costs)
    at_hour: Mapped[int | None] = mapped_column(Integer)  # _hour(fingerprint's at)
    # dedupe.sketch of the fingerprint's signature (16 bytes; NULL in rows made before 0010)
    sketch: Mapped[bytes | None] = mapped_column(LargeBinary)


class AlertRow(Base):
    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_created", "created_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    story_id: Mapped[int] = mapped_column(ForeignKey("stories.id"), unique=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    hits: Mapped[list] = mapped_column(JSON)


class DeliveryRow(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("alert_id", "channel", "kind", name="uq_deliveries_alert_channel_kind"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
        Index("ix_deliveries_channel_sent", "channel", "sent_at"),
        Index("ix_deliveries_alert", "alert_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"))
    channel: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20), default="alert")  # alert | update (a repost joined)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending | sent | dead | silenced
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # delivery.max_age counts from here
    folded: Mapped[bool] = mapped_column(Boolean, default=False)  # held back by max_per_hour
    digest_id: Mapped[int | None] = mapped_column(Integer)  # sent as part of this digest
    silence_id: Mapped[int | None] = mapped_column(Integer)  # suppressed by this silence
    dead_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    leased_by: Mapped[str | None] = mapped_column(String(200))  # the replica sending it now
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SilenceRow(Base):
    __tablename__ = "silences"
    __table_args__ = (Index("ix_silences_ends", "ends_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    watchlist: Mapped[str] = mapped_column(String(200))
    query: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(200))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    comment: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DigestRow(Base):
    """A digest message that was sent (a digest channel's, or alerts folded by max_per_hour)."""

    __tablename__ = "digests"
    __table_args__ = (Index("ix_digests_channel_sent", "channel", "sent_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))  # digest | rate_limit
    entries: Mapped[int] = mapped_column(Integer)
    folded: Mapped[int] = mapped_column(Integer)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ChannelStateRow(Base):
    __tablename__ = "channel_state"
    channel: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_digest_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_digest_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    digest_failures: Mapped[int] = mapped_column(Integer, default=0)
    leased_by: Mapped[str | None] = mapped_column(String(200))  # the replica delivering this channel now
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ReplicaRow(Base):
    """A running (or stopped) daemon sharing the database (``monitor replicas``)."""

    __tablename__ = "replicas"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


#: The tables whose rows replicas claim (``leased_by``, ``lease_until``).
_LEASED: tuple[type[SourceRow] | type[ChannelStateRow] | type[DeliveryRow], ...] = (SourceRow, ChannelStateRow,
                                                                                  DeliveryRow)


class NoticeRow(Base):
    """An operator notice for the admin channel, kept until sent (or dead after max_attempts)."""

    __tablename__ = "notices"
    __table_args__ = (Index("ix_notices_due", "status", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# ---------------------------------------------------------------- plain data out of the store
@dataclass(frozen=True)
class ReplicaInfo:
    id: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    sources: int  # sources it holds a live lease on
    channels: tuple[str, ...]  # channels it is delivering


@dataclass(frozen=True)
class SourceState:
    name: str
    etag: str | None
    last_modified: str | None
    consecutive_failures: int = 0
    poll_interval: float | None = None  # seconds
    items_per_day: float | None = None
    body_hash: str | None = None
    next_poll_at: datetime | None = None


@dataclass(frozen=True)
class PollSchedule:
    """What a poll decided about the source's next one (written with the poll's outcome)."""

    next_poll_at: datetime
    interval: float | None = None  # seconds; None keeps the stored one (failures)
    items_per_day: float | None = None
    body_hash: str | None = None


@dataclass(frozen=True)
class SourceHealth:
    """A source as ``monitor sources`` and /metrics show it."""

    name: str
    url: str
    ok: bool
    status: str | None
    failing_since: datetime | None
    last_error: str | None
    consecutive_failures: int
    last_success_at: datetime | None
    last_polled_at: datetime | None
    next_poll_at: datetime | None
    interval: float | None
    items_per_day: float | None
    items_total: int


@dataclass(frozen=True)
class PendingDelivery:
    """An outbox row with what the notifier needs to render it."""

    id: int
    alert_id: int
    channel: str
    attempts: int
    title: str
    link: str | None
    source: str
    published: datetime | None
    summary: str
    hits: tuple[WatchlistHit, ...]
    kind: str = "alert"  # alert | update
    outlets: tuple[str, ...] = ()  # every outlet of the story when read: "source (host)", first seen first
    text: str = ""  # summary and content, as the matcher saw them (for silences' queries)
    folded: bool = False  # held back by the channel's max_per_hour
    created_at: datetime | None = None  # of the alert
    queued_at: datetime | None = None
    next_attempt_at: datetime | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """When a failing outbox row is given up on (dead-lettered)."""

    max_attempts: int = 10
    max_age: timedelta = timedelta(days=1)


_NEVER_DEAD = RetryPolicy(max_attempts=1 << 30, max_age=timedelta.max)


@dataclass(frozen=True)
class ChannelState:
    """A digest channel's schedule state."""

    channel: str
    last_digest_at: datetime | None
    next_digest_at: datetime | None
    digest_failures: int


@dataclass(frozen=True)
class OutboxRow:
    id: int
    alert_id: int
    channel: str
    kind: str
    status: str
    attempts: int
    next_attempt_at: datetime
    queued_at: datetime
    last_error: str | None
    folded: bool
    title: str


@dataclass(frozen=True)
class Silence:
    id: int
    watchlist: str
    query: str | None
    source: str | None
    starts_at: datetime
    ends_at: datetime
    comment: str
    created_by: str
    created_at: datetime

    def active(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at


@dataclass(frozen=True)
class DeliveryState:
    id: int
    channel: str
    kind: str
    status: str  # pending | sent | dead | silenced
    attempts: int
    sent_at: datetime | None
    next_attempt_at: datetime | None
    last_error: str | None
    folded: bool
    digest_id: int | None
    silence_id: int | None


@dataclass(frozen=True)
class AlertListing:
    """An alert with its delivery state per channel (``monitor alerts``)."""

    id: int
    story_id: int
    created_at: datetime
    title: str
    link: str | None
    source: str
    hits: tuple[WatchlistHit, ...]
    deliveries: tuple[DeliveryState, ...]


@dataclass(frozen=True)
class SourceHealthPolicy:
    """Operator notices about sources: one when a source has been failing for ``after``, one
    when it recovers (``notify`` False: the state is kept, no notice is queued)."""

    after: timedelta = timedelta(hours=6)
    notify: bool = False


@dataclass(frozen=True)
class NewItem:
    """An item the pipeline wants stored, with the watchlists it matched (empty if none) and
    its fingerprint (computed by the store when not given)."""

    item: Item
    fresh: bool
    hits: tuple[WatchlistHit, ...] = ()
    fingerprint: Fingerprint | None = None


@dataclass(frozen=True)
class StoryPolicy:
    """How items join stories: look ``window`` either side of an item's time; with
    ``notify_on_repost`` an alerted story gets one update when another outlet carries it."""

    window: timedelta = timedelta(days=7)
    notify_on_repost: bool = False


@dataclass(frozen=True)
class StoryItem:
    link: str | None
    source: str
    title: str
    first_seen: datetime


@dataclass(frozen=True)
class StoryListing:
    """A story and every stored item in it, first seen first (``monitor stories``)."""

    id: int
    title: str
    created_at: datetime
    alerted: bool
    items: tuple[StoryItem, ...]

    @property
    def outlets(self) -> tuple[str, ...]:
        return outlets_of((i.source, i.link) for i in self.items)


@dataclass(frozen=True)
class ArchivedItem:
    """A stored item as ``iter_items`` reads it back (for ``monitor backtest``)."""

    id: int
    story_id: int
    source: str
    item: Item
    fresh: bool
    first_seen: datetime


@dataclass
class _Planned:
    """An item of a group of polls on its way into the database, and the story it joins."""

    new: NewItem
    fingerprint: Fingerprint  # its ``at`` set
    guid_key: str
    link_key: str | None
    story: int  # a stored story's id, or ~k for the k-th story this group opens
    joined: bool  # joins a story opened before (stored, or earlier in this group)
    poll: int  # which poll of the group (an index)
    source_id: int


class _Plan:
    """The planned items of a group of polls (in order), and each poll's time and policy."""

    def __init__(self, polls: Sequence[tuple[PollCommit, SourceRow]]) -> None:
        self.polls = polls
        self.now = [poll.now or utcnow() for poll, _ in polls]
        self.policy = [poll.stories or StoryPolicy() for poll, _ in polls]
        self.items: list[_Planned] = []


#: New stories of a group rank after every stored one on a tie (see Store._plan): their ids
#: will be above every stored story's.
_NEW_STORY_ORDER = 2 ** 62


@dataclass(frozen=True)
class PollOutcome:
    stored: list[StoredItem]
    alerts: int


@dataclass(frozen=True)
class PollCommit:
    """One successful poll to store: the arguments of ``Store.commit_poll``."""

    source: str
    result: FetchResult
    new_items: Sequence[NewItem]
    channels: Sequence[tuple[str, object]] = ()
    now: datetime | None = None
    stories: StoryPolicy | None = None
    schedule: PollSchedule | None = None


#: A story's alert to make: its first matching item, the hits, the poll's channels (name, accepts)
#: and the time (``Store._add_alerts``).
_NewAlert = tuple[int, Sequence[WatchlistHit], Sequence[tuple[str, object]], datetime]


def _key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def _hits_json(hits: Sequence[WatchlistHit]) -> list[dict]:
    return [{"name": h.name, "score": h.score, "terms": list(h.terms), "severity": h.severity} for h in hits]


def _hits_from_json(data: list[dict]) -> tuple[WatchlistHit, ...]:
    """Hits as stored in ``alerts.hits``; rows written before severities existed read as the default."""
    return tuple(WatchlistHit(d["name"], float(d.get("score", 0)), tuple(d.get("terms", ())),
                              d.get("severity") or DEFAULT_SEVERITY) for d in data)


class DatabaseError(Exception):
    """The database cannot be used (bad URL, unreachable, migration failed); the message says why."""


def safe_url(url: str) -> str:
    """The database URL with any password masked, for logs and messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return "<invalid database URL>"


#: A writer copies the WAL back into the database itself (SQLite's autocheckpoint) only when
#: it holds this many pages: after a burst of writes the checkpointer thread has copied it all
#: and the WAL has started over long before; under steady writes it grows to this (see below).
WAL_BACKSTOP_PAGES = 40_000
#: The checkpointer runs at most this often while writes come in. Often, so that it keeps up:
#: the WAL starts over from its beginning only when a write begins with every frame of it
#: copied back, which under steady writes is rare, so the WAL grows to WAL_BACKSTOP_PAGES and
#: the writer copies what is left itself, in a poll's commit. With a big database (random pages
#: to copy) and every 0.5 s, that was ~250 ms every ~2,000 items at 1M stored (bench
#: dedupe_speed, 0.13 ms an item); every 0.05 s, ~70 ms (same-process A/B at 1M: 0.87 ms an
#: item instead of 0.94; at 10k no difference beyond noise).
CHECKPOINT_EVERY_S = 0.05
#: SQLite page cache of the one connection that writes (KiB): story lookups and band-key
#: inserts touch random index pages, and they run in the writing transaction.
WRITER_CACHE_KB = 32 * 1024
#: SQLite page cache of each reading connection (KiB). Up to 15 are pooled; the operating
#: system's file cache serves what they miss. With the writer's cache on every connection, a
#: first run over 10,000 sources held 81 MB in SQLite caches instead of ~30.
READER_CACHE_KB = 4 * 1024


class _Checkpointer:
    """Copies a SQLite database's WAL back into the database file (a PASSIVE checkpoint) from a
    thread of its own, soon after writes, so that a writing poll never waits for it: a
    checkpoint writes every page changed since the last one to its place in the file and
    fsyncs it, up to a tenth of a second with a big database. Writers and readers go on
    meanwhile (SQLite allows one checkpointer beside them). Started on the first write."""

    def __init__(self, path: str):
        self.path = path
        self._uri = f"file:{quote(str(Path(path).expanduser().resolve()))}?mode=rw"  # never creates a file
        self._wake = threading.Event()
        self._stopping = threading.Event()  # the running thread's
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()

    def poke(self) -> None:
        """Writes were committed: checkpoint soon."""
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._closed:
                    self._stopping = threading.Event()
                    self._thread = threading.Thread(target=self._run, args=(self._stopping,), name="db-checkpoint",
                                                    daemon=True)
                    self._thread.start()
        self._wake.set()

    def _run(self, stopping: threading.Event) -> None:
        while True:
            self._wake.wait()
            if stopping.is_set():
                return
            self._wake.clear()
            try:  # a connection of its own each time: none is held open between writes
                with contextlib.closing(sqlite3.connect(self._uri, uri=True, timeout=30, isolation_level=None)) as conn:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as e:  # busy or failing: the next write pokes it again
                log.warning("WAL checkpoint of %s failed: %s", self.path, e)
            if stopping.wait(CHECKPOINT_EVERY_S):
                return

    def stop(self) -> None:
        """End the thread, after the checkpoint under way if any (then no connection of it is
        open); the next ``poke`` starts another."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopping.set()
        self._wake.set()
        if thread is not None:
            thread.join()

    def close(self) -> None:
        """``stop`` for good: no thread is started again."""
        with self._lock:
            self._closed = True
        self.stop()


def make_engine(url: str, writer: bool = False) -> Engine:
    """An engine for ``url``. On SQLite, ``writer`` makes the engine of the store's one writing
    connection: a pool of one, a page cache of ``WRITER_CACHE_KB`` (readers get
    ``READER_CACHE_KB``), and every transaction begun with ``BEGIN IMMEDIATE``."""
    try:
        parsed = make_url(url)
    except Exception as e:  # noqa: BLE001 - any parse failure is a user error
        raise DatabaseError(f"invalid database URL {url!r}: {e}") from None
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:" and not db.startswith("file:"):
            parent = Path(db).expanduser().parent
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise DatabaseError(f"cannot create the directory {parent} for the SQLite database: "
                                    f"{e.strerror or e}") from None
        pool = {"pool_size": 1, "max_overflow": 0} if writer else {}
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **pool)
        cache_kb = WRITER_CACHE_KB if writer else READER_CACHE_KB

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - exercised by every test
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute(f"PRAGMA cache_size=-{cache_kb}")
            # the WAL is copied back into the database by a thread of its own (_Checkpointer);
            # a writer does it itself only when that falls this far behind (160 MB of WAL)
            cur.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")
            if writer:
                # statement journals (see SQLITE_MAX_ROWS) in memory: on disk (the default) a
                # multi-row insert spilled them to a temporary file, ~20-30 writes an item
                cur.execute("PRAGMA temp_store=MEMORY")
            cur.close()
            # SQLAlchemy, not the driver, begins transactions (see _sqlite_begin)
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover - exercised by every test
            # A writing transaction takes the write lock when it begins: one that read first and
            # wrote later could not upgrade its lock while another poll commits, and would fail
            # with "database is locked" instead of waiting its turn (busy_timeout).
            write = writer or conn.get_execution_options().get("sqlite_write")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    try:
        return create_engine(url, pool_pre_ping=True)
    except Exception as e:  # noqa: BLE001 - missing driver etc.
        raise DatabaseError(f"cannot use database URL {safe_url(url)}: {e}") from None


def _sqlite_file(engine: Engine) -> bool:
    """Whether ``engine`` opens a SQLite database file by its path (not in memory, not a URI)."""
    db = engine.url.database
    return (engine.dialect.name == "sqlite" and bool(db) and db != ":memory:" and not db.startswith("file:")
            and not engine.url.query)


def make_readonly_engine(url: str) -> Engine:
    """An engine that cannot write: SQLite opened ``mode=ro`` (the file must exist; nothing is
    created), PostgreSQL sessions set to read-only transactions."""
    try:
        parsed = make_url(url)
    except Exception as e:  # noqa: BLE001
        raise DatabaseError(f"invalid database URL {url!r}: {e}") from None
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database or ""
        if not db or db == ":memory:" or db.startswith("file:"):
            raise DatabaseError(f"cannot open {safe_url(url)} read-only: name a database file")
        path = Path(db).expanduser().resolve()
        if not path.is_file():
            raise DatabaseError(f"no database at {path} (nothing has been stored yet: run the daemon first)")
        uri = f"file:{quote(str(path))}?mode=ro"
        return create_engine("sqlite://", creator=lambda: sqlite3.connect(
            uri, uri=True, timeout=30, check_same_thread=False))
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except Exception as e:  # noqa: BLE001 - missing driver etc.
        raise DatabaseError(f"cannot use database URL {safe_url(url)}: {e}") from None

    @event.listens_for(engine, "connect")
    def _read_only(dbapi_conn, _record):  # pragma: no cover - exercised by the PostgreSQL tests
        cur = dbapi_conn.cursor()
        cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        cur.close()
        dbapi_conn.commit()

    return engine


class Store:
    def __init__(self, url: str, engine: Engine | None = None):
        self.url = url
        self.engine = engine or make_engine(url)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = threading.Lock() if self.engine.dialect.name == "sqlite" else None
        self._source_ids: dict[str, int] = {}  # name -> id (rows are never deleted: ids do not change)
        file = _sqlite_file(self.engine)
        # On a SQLite file, writes (one at a time, under _write_lock) have a connection of their
        # own with the big page cache; readers' connections keep small ones (make_engine).
        self._write_engine = make_engine(url, writer=True) if engine is None and file else None
        # sessions that write: on SQLite they hold the write lock from their first statement
        self._write = sessionmaker((self._write_engine or self.engine).execution_options(sqlite_write=True),
                                   expire_on_commit=False)
        # SQLite takes one writer at a time: polls' writes queue for one thread of their own
        # (Pipeline._write) instead of holding shared executor threads while they wait
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="db-writer") if self._write_lock is not None else None
        self._checkpointer = _Checkpointer(self.engine.url.database) if file else None

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        """A writing transaction. On SQLite, writers of this process queue on a mutex first:
        the database takes one writer at a time anyway, and threads waiting in SQLite's busy
        handler sleep in steps (up to 100 ms each) instead of waking when the lock frees."""
        if self._write_lock is None:
            with self._write.begin() as s:
                yield s
            return
        with self._write_lock, self._write.begin() as s:
            yield s
        if self._checkpointer is not None:
            self._checkpointer.poke()

    @classmethod
    def open_readonly(cls, url: str) -> Store:
        """A Store that only reads (see :func:`make_readonly_engine`); never call ``upgrade`` on it."""
        return cls(url, make_readonly_engine(url))

    # ------------------------------------------------------------ schema
    def upgrade(self) -> None:
        """Apply every pending Alembic migration (none to apply when the database says it is
        at ``SCHEMA_HEAD`` already: then Alembic is not even imported, ~0.1 s of every start)."""
        try:
            with self.engine.connect() as conn:
                current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except Exception:  # noqa: BLE001 - no schema yet (or no database): Alembic says what is wrong
            current = None
        if current == SCHEMA_HEAD:
            return
        from alembic import command
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self.engine.begin() as conn:
                if self.engine.dialect.name == "postgresql":  # replicas starting together: one at a time
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATE_LOCK})
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except Exception as e:  # noqa: BLE001 - report, don't trace back
            raise DatabaseError(f"cannot open or migrate the database {safe_url(self.url)}: "
                                f"{e.__class__.__name__}: {e}") from e

    def schema_problem(self) -> str | None:
        """None when the database's schema is the one this code expects (Alembic head); else
        what is wrong, in words. Reads ``alembic_version`` only: safe on a read-only store."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        script = ScriptDirectory(str(MIGRATIONS))
        head = script.get_current_head()
        try:
            with self.engine.connect() as conn:
                current = MigrationContext.configure(conn).get_current_revision()
        except Exception as e:  # noqa: BLE001 - report, don't trace back
            return f"cannot read the database {safe_url(self.url)}: {e.__class__.__name__}: {e}"
        if current == head:
            return None
        if current is None:
            return f"the database {safe_url(self.url)} has no schema yet (run `monitor db upgrade`)"
        known = {rev.revision for rev in script.walk_revisions()}
        if current in known:
            return (f"the database schema is behind (revision {current}, this monitor needs {head}): "
                    "run `monitor db upgrade` first")
        return (f"the database schema (revision {current}) is newer than this monitor knows "
                f"(latest {head}): use a newer monitor")

    def disconnect(self) -> None:
        """Close every pooled connection now, and the checkpointer's (the next use opens new
        ones, the next write starts the checkpointer again): for tools that must be the
        database file's only user for a moment."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
        if self._write_engine is not None:
            self._write_engine.dispose()
        self.engine.dispose()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.shutdown(wait=True)  # a write under way finishes first
        if self._checkpointer is not None:
            self._checkpointer.close()  # before disconnect() (which would only pause it)
        self.disconnect()

    # ------------------------------------------------------------ sources
    def sync_sources(self, sources: Iterable[tuple[str, str]], active: Iterable[str] | None = None,
                     now: datetime | None = None) -> None:
        """Make sure a row exists for each (name, url); a changed URL resets its HTTP cache
        state. With ``active`` (the enabled sources' names), every other source is marked
        retired (no replica claims it) and every active one un-retired. Safe with replicas
        starting together: a row another one inserted first is left as it is."""
        sources = list(sources)
        now = now or utcnow()
        # plain rows and statements, no ORM objects: a start-up (and each --once run) reads
        # every source
        with self._writing() as s:
            urls = {}
            for source_id, name, url in s.execute(select(SourceRow.id, SourceRow.name, SourceRow.url)):
                urls[name] = url
                self._source_ids[name] = source_id
            missing = [{"name": name, "url": url, "consecutive_failures": 0, "items_total": 0, "created_at": now}
                       for name, url in dict(sources).items() if name not in urls]
            if missing:
                s.execute(self._insert_ignoring_conflicts(SourceRow, missing))
            for name, url in dict(sources).items():
                if name in urls and urls[name] != url:
                    s.execute(update(SourceRow).where(SourceRow.name == name)
                              .values(url=url, etag=None, last_modified=None), execution_options=_NO_SYNC)
            if active is not None:
                wanted = set(active)
                s.execute(update(SourceRow).where(SourceRow.name.not_in(wanted), SourceRow.retired_at.is_(None))
                          .values(retired_at=now), execution_options=_NO_SYNC)
                s.execute(update(SourceRow).where(SourceRow.name.in_(wanted), SourceRow.retired_at.is_not(None))
                          .values(retired_at=None), execution_options=_NO_SYNC)

    def _insert_ignoring_conflicts(self, model: type[Base], rows: list[dict]):
        """INSERT … ON CONFLICT DO NOTHING (PostgreSQL and SQLite)."""
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        return dialect_insert(model).values(rows).on_conflict_do_nothing()

    # ------------------------------------------------------------ replicas and leases
    def register_replica(self, replica: str, host: str, pid: int, now: datetime | None = None) -> None:
        now = now or utcnow()
        with self._writing() as s:
            row = s.get(ReplicaRow, replica)
            if row is None:
                s.add(ReplicaRow(id=replica, host=host, pid=pid, started_at=now, heartbeat_at=now))
            else:
                row.host, row.pid, row.started_at, row.heartbeat_at, row.stopped_at = host, pid, now, now, None

    def heartbeat(self, replica: str, lease: timedelta, now: datetime | None = None) -> int:
        """This replica lives: its heartbeat, and every lease it holds renewed to ``now +
        lease`` (in one transaction). Returns how many sources it holds."""
        now = now or utcnow()
        with self._writing() as s:
            s.execute(update(ReplicaRow).where(ReplicaRow.id == replica).values(heartbeat_at=now, stopped_at=None))
            renewed = {}
            for model in _LEASED:
                self._lock_in_order(s, model, model.leased_by == replica)
                renewed[model] = s.execute(update(model).where(model.leased_by == replica)
                                           .values(lease_until=now + lease)).rowcount
            return renewed[SourceRow] or 0

    def retire_replica(self, replica: str, now: datetime | None = None) -> None:
        """A replica stopping cleanly: marked stopped, its leases given up at once."""
        now = now or utcnow()
        with self._writing() as s:
            s.execute(update(ReplicaRow).where(ReplicaRow.id == replica).values(heartbeat_at=now, stopped_at=now))
            for model in _LEASED:
                self._lock_in_order(s, model, model.leased_by == replica)
                s.execute(update(model).where(model.leased_by == replica).values(leased_by=None, lease_until=None))

    def replicas(self, now: datetime | None = None) -> list[ReplicaInfo]:
        """Every registered replica, newest first, with the sources and channels it holds."""
        now = now or utcnow()
        with self._session() as s:
            rows = list(s.scalars(select(ReplicaRow).order_by(ReplicaRow.started_at.desc())))
            sources = dict(s.execute(select(SourceRow.leased_by, func.count()).where(
                SourceRow.leased_by.is_not(None), SourceRow.lease_until >= now).group_by(SourceRow.leased_by)).all())
            channels: dict[str, list[str]] = {}
            for holder, channel in s.execute(select(ChannelStateRow.leased_by, ChannelStateRow.channel).where(
                    ChannelStateRow.leased_by.is_not(None), ChannelStateRow.lease_until >= now)):
                channels.setdefault(holder, []).append(channel)
        return [ReplicaInfo(r.id, r.host, r.pid, r.started_at, r.heartbeat_at, r.stopped_at,
                            sources.get(r.id, 0), tuple(sorted(channels.get(r.id, ()))))
                for r in rows]

    def claim_sources(self, replica: str, now: datetime, lease: timedelta, limit: int) -> list[SourceState]:
        """Claim up to ``limit`` due sources (next poll reached, not retired, no live lease),
        most overdue first, for ``replica`` until ``now + lease`` (``SELECT … FOR UPDATE SKIP
        LOCKED`` on PostgreSQL: replicas claiming at once get different sources; SQLite has
        one writer at a time). The lease ends when the poll is recorded (see _apply_schedule)."""
        if limit <= 0:
            return []
        q = (select(SourceRow)
             .where(SourceRow.retired_at.is_(None),
                    or_(SourceRow.next_poll_at.is_(None), SourceRow.next_poll_at <= now),
                    or_(SourceRow.lease_until.is_(None), SourceRow.lease_until < now))
             .order_by(SourceRow.next_poll_at.asc().nulls_first(), SourceRow.id)
             .limit(limit)
             .with_for_update(skip_locked=True))
        with self._writing() as s:
            conn = s.connection()
            if conn.dialect.name == "sqlite" and SQLITE_ONE_STEP:
                return self._claim_sqlite(conn, replica, now, lease, limit)
            rows = list(s.scalars(q))
            for row in rows:
                row.leased_by, row.lease_until = replica, now + lease
            return [_source_state(r) for r in rows]

    @staticmethod
    def _claim_sqlite(conn, replica: str, now: datetime, lease: timedelta, limit: int) -> list[SourceState]:
        """``claim_sources`` on SQLite in two statements of one step each (see ``_insert``): the
        due sources' states packed into one JSON array (NULLs and any text survive it), then
        one UPDATE of their leases. The daemon claims every ``claim_every``, beside busy polls."""
        when = _DateTimeIO(conn.dialect)
        stamp = when.bind(now)
        rows = _json_rows(conn, ("id", "name", "etag", "last_modified", "consecutive_failures", "poll_interval",
                                 "items_per_day", "body_hash", "next_poll_at"),
                          "FROM (SELECT * FROM sources WHERE retired_at IS NULL "
                          "AND (next_poll_at IS NULL OR next_poll_at <= ?) AND (lease_until IS NULL OR lease_until < ?) "
                          "ORDER BY next_poll_at ASC NULLS FIRST, id LIMIT ?)", (stamp, stamp, limit))
        if not rows:
            return []
        until = when.bind(now + lease)
        for chunk in _chunks([row[0] for row in rows], SQLITE_MAX_PARAMS - 2):
            conn.exec_driver_sql(f"UPDATE sources SET leased_by = ?, lease_until = ? WHERE id IN ({when.marks(len(chunk))})",
                                 (replica, until, *chunk))
        return [SourceState(name, etag, modified, failures or 0, interval, per_day, body_hash,
                            when.result(next_at))
                for _, name, etag, modified, failures, interval, per_day, body_hash, next_at in rows]

    def release_sources(self, replica: str, names: Iterable[str]) -> None:
        """Give up leases on ``names`` without polling them (they stay due)."""
        names = list(names)
        if not names:
            return
        with self._writing() as s:
            self._lock_in_order(s, SourceRow, SourceRow.leased_by == replica, SourceRow.name.in_(names))
            s.execute(update(SourceRow).where(SourceRow.leased_by == replica, SourceRow.name.in_(names))
                      .values(leased_by=None, lease_until=None))

    def claim_channel(self, channel: str, replica: str, now: datetime, lease: timedelta) -> bool:
        """Take the lease on delivering ``channel`` (one replica sends a channel's messages at
        a time: its rate limit, digests and order need one view of its rows). True when this
        replica holds it now (taken, or renewed)."""
        with self._writing() as s:
            if s.get(ChannelStateRow, channel) is None:
                s.execute(self._insert_ignoring_conflicts(ChannelStateRow, [{"channel": channel, "digest_failures": 0}]))
            taken = s.execute(update(ChannelStateRow).where(
                ChannelStateRow.channel == channel,
                or_(ChannelStateRow.leased_by.is_(None), ChannelStateRow.leased_by == replica,
                    ChannelStateRow.lease_until.is_(None), ChannelStateRow.lease_until < now))
                .values(leased_by=replica, lease_until=now + lease))
            return bool(taken.rowcount)

    def release_channel(self, channel: str, replica: str) -> None:
        with self._writing() as s:
            s.execute(update(ChannelStateRow).where(ChannelStateRow.channel == channel,
                                                    ChannelStateRow.leased_by == replica)
                      .values(leased_by=None, lease_until=None))

    def source_state(self, name: str) -> SourceState:
        with self._session() as s:
            row = s.scalar(select(SourceRow).where(SourceRow.name == name))
            if row is None:
                return SourceState(name, None, None)
            return _source_state(row)

    def source_health(self, names: Iterable[str] | None = None) -> list[SourceHealth]:
        """Every source's polling health, by name (only ``names`` when given)."""
        q = select(SourceRow).order_by(SourceRow.name)
        with self._session() as s:
            rows = list(s.scalars(q))
        wanted = None if names is None else set(names)
        return [SourceHealth(r.name, r.url, not r.consecutive_failures, r.last_status, r.failing_since, r.last_error,
                             r.consecutive_failures or 0, r.last_success_at, r.last_polled_at, r.next_poll_at,
                             r.poll_interval, r.items_per_day, r.items_total or 0)
                for r in rows if wanted is None or r.name in wanted]

    @staticmethod
    def _apply_schedule(row: SourceRow, schedule: PollSchedule | None) -> None:
        if schedule is None:
            return
        row.leased_by = row.lease_until = None  # the poll is recorded: its claim ends
        row.next_poll_at = schedule.next_poll_at
        if schedule.interval is not None:
            row.poll_interval = schedule.interval
        if schedule.items_per_day is not None:
            row.items_per_day = schedule.items_per_day
        if schedule.body_hash is not None:
            row.body_hash = schedule.body_hash

    def known_keys(self, source: str, items: Sequence[Item | ItemKey]) -> set[str]:
        """The guids of ``items`` (items, or just their keys) already stored: same guid from this
        source or same canonical link."""
        if not items:
            return set()
        guid_of = {_key(i.guid): i.guid for i in items}
        guid_of.update((_key(i.canonical_link), i.guid) for i in items if i.canonical_link)
        src = self._source_ids.get(source)
        if src is not None and self.engine.dialect.name == "sqlite" and len(items) < SQLITE_MAX_PARAMS // 2:
            return {guid_of[k] for k in self._known_sqlite(src, [_key(i.guid) for i in items],
                                                           [_key(i.canonical_link) for i in items if i.canonical_link])}
        with self._session() as s:
            if src is None:
                src = s.scalar(select(SourceRow.id).where(SourceRow.name == source))
                if src is not None:
                    self._source_ids[source] = src
            guids, links = self._stored_keys(s, [(src, _key(i.guid)) for i in items] if src is not None else [],
                                             [_key(i.canonical_link) for i in items if i.canonical_link])
            return {guid_of[k] for _, k in guids} | {guid_of[k] for k in links}

    def _known_sqlite(self, source_id: int, guid_keys: list[str], link_keys: list[str]) -> list[str]:
        """``known_keys`` on SQLite: the stored keys among the source's ``guid_keys`` and any
        source's ``link_keys``, as one statement with one packed row, on a pooled connection
        outside a transaction (no BEGIN, nothing to roll back). Every poll asks this from a work
        thread, and each call into the driver hands the interpreter lock over (see ``_insert``):
        beside busy threads this took ~28 ms as the four statements of ``_stored_keys``."""
        dialect = self.engine.dialect
        sql = (f"SELECT group_concat(k, char(30)) FROM (SELECT guid_key AS k FROM items WHERE source_id = ? "
               f"AND guid_key IN ({_marks(dialect, len(guid_keys))})")
        if link_keys:
            sql += f" UNION ALL SELECT link_key FROM items WHERE link_key IN ({_marks(dialect, len(link_keys))})"
        conn = self.engine.raw_connection()
        try:
            packed = conn.cursor().execute(sql + ")", (source_id, *guid_keys, *link_keys)).fetchone()[0]
        finally:
            conn.close()
        return packed.split("\x1e") if packed else []

    def record_failure(self, source: str, result: FetchResult, now: datetime | None = None,
                       health: SourceHealthPolicy | None = None, schedule: PollSchedule | None = None) -> None:
        """A failed poll. With ``health``, a source failing for ``health.after`` queues one
        "failing" notice for the admin channel (in the same transaction)."""
        now = now or utcnow()
        with self._writing() as s:
            row = _source_in(self._source_rows(s, [source]), source)
            self._apply_schedule(row, schedule)
            row.last_polled_at = now
            row.last_status = "error"
            row.last_error = result.error
            row.consecutive_failures = (row.consecutive_failures or 0) + 1
            row.failing_since = row.failing_since or now
            if (health is not None and health.notify and row.failure_notice_at is None
                    and now - row.failing_since >= health.after):
                row.failure_notice_at = now
                since = row.failing_since.strftime("%Y-%m-%d %H:%M UTC")
                s.add(NoticeRow(
                    kind="source_failing", status="pending", attempts=0, next_attempt_at=now, created_at=now,
                    subject=f"source '{source}' failing since {since}",
                    body=(f"Source '{source}' ({row.url}) has failed every poll since {since} "
                          f"({row.consecutive_failures} in a row).\nLast error: {result.error or 'unknown'}\n"
                          "It keeps being polled; another notice follows when it recovers.")))

    def commit_poll(
        self,
        source: str,
        result: FetchResult,
        new_items: Sequence[NewItem],
        channels: Sequence[tuple[str, object]] = (),
        now: datetime | None = None,
        stories: StoryPolicy | None = None,
        schedule: PollSchedule | None = None,
    ) -> PollOutcome:
        """Store a successful poll atomically: items, their stories, alerts, outbox rows, HTTP state.

        Each item joins the story of its most similar copy — stored within ``stories.window``
        or earlier in this poll (see monitor.dedupe) — else opens a new story. A story is
        alerted once: by the first of its fresh items that matched a watchlist. ``channels``
        are (name, accepts) pairs where ``accepts(hit: WatchlistHit) -> bool`` (see
        ``ChannelConfig.accepts``); an alert gets an outbox row for every channel that accepts
        at least one of its hits. With ``stories.notify_on_repost``, an alerted story that a
        new outlet joins gets one ``update`` row per channel its alert was sent to. Items
        already stored (same guid from this source, or same canonical link) are skipped.

        Polls are serialised while they assign stories (SQLite: the write lock taken at
        BEGIN; PostgreSQL: an advisory lock), so two copies committed at once still meet.
        """
        return _only(self.commit_polls([PollCommit(source, result, new_items, channels, now, stories, schedule)]))

    def commit_polls(self, polls: Sequence[PollCommit]) -> list[PollOutcome | Exception]:
        """``commit_poll`` for several polls in one transaction (a group commit), with the
        same outcome as committing them one after another in order: a later poll meets the
        items of an earlier one. The group is planned and written as one (one set of key and
        story lookups, one multi-row insert per table: a poll's fixed cost is paid once per
        group). Should that fail, each poll is written again in a savepoint of its own, so one
        that fails is rolled back alone and its exception is in its place in the list. An
        error of the transaction itself (its COMMIT) is raised."""
        out: list[PollOutcome | Exception | None] = [None] * len(polls)
        with self._writing() as s:
            self._story_lock(s, polls)
            rows = self._source_rows(s, [p.source for p in polls])
            group: list[tuple[int, PollCommit, SourceRow]] = []
            for i, poll in enumerate(polls):
                try:
                    group.append((i, poll, _source_in(rows, poll.source)))
                except KeyError as e:
                    out[i] = e
            try:
                with s.begin_nested():
                    outcomes = self._commit_group(s, [(poll, src) for _, poll, src in group])
                for (i, *_), outcome in zip(group, outcomes, strict=True):
                    out[i] = outcome
            except Exception as e:  # noqa: BLE001 - one poll's failure: find which, below
                if len(group) == 1:
                    out[group[0][0]] = e
                else:
                    for i, poll, src in group:
                        try:
                            with s.begin_nested():
                                out[i] = self._commit_group(s, [(poll, src)])[0]
                        except Exception as e:  # noqa: BLE001 - that poll's failure, reported by its caller
                            out[i] = e
        return out  # type: ignore[return-value]

    @staticmethod
    def _story_lock(s: Session, polls: Sequence[PollCommit]) -> None:
        """PostgreSQL: serialise the polls that assign stories (see commit_poll)."""
        if any(p.new_items for p in polls) and s.get_bind().dialect.name == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": STORY_LOCK})

    def _commit_group(self, s: Session, polls: Sequence[tuple[PollCommit, SourceRow]]) -> list[PollOutcome]:
        """Plan and write the items of ``polls`` (in order) as one, then each poll's source row."""
        plan = self._plan(s, polls)
        stored, alerts = self._write_plan(s, plan)
        outcomes = []
        for k, (poll, src) in enumerate(polls):
            self._mark_success(s, src, poll.result, plan.now[k], poll.schedule)
            src.items_total = (src.items_total or 0) + len(stored[k])
            outcomes.append(PollOutcome(stored[k], alerts[k]))
        return outcomes

    #: Items whose story keys one pruning transaction deletes (each row is a random index page
    #: to rewrite, as when it was inserted): polls wait for no more than that.
    PRUNE_CHUNK = 500

    def prune_story_keys(self, before: datetime, stop: Callable[[], bool] | None = None) -> tuple[int, int]:
        """Delete the LSH band rows and the fingerprint rows of the items first seen before
        ``before`` (a story lookup never reaches them once they are older than the story
        window: band lookups check the window, lead and title lookups reach back NEAR_DAYS),
        a chunk of items per transaction (until ``stop()`` says so); returns how many band
        rows and fingerprint rows went. The items and their stories stay. Safe to run on
        several replicas at once."""
        with self._session() as s:
            upto = s.scalar(select(ItemRow.id).where(ItemRow.first_seen_at < before)
                            .order_by(ItemRow.first_seen_at.desc()).limit(1))
        bands = fingerprints = 0
        while upto is not None and not (stop is not None and stop()):
            with self._writing() as s:
                lows = [s.scalar(select(func.min(BandRow.item_id))),
                        s.scalar(select(func.min(FingerprintRow.item_id)))]
                low = min((x for x in lows if x is not None), default=None)
                if low is None or low > upto:
                    break
                high = min(upto, low + self.PRUNE_CHUNK - 1)
                bands += s.execute(delete(BandRow).where(BandRow.item_id >= low, BandRow.item_id <= high)).rowcount
                fingerprints += s.execute(delete(FingerprintRow).where(
                    FingerprintRow.item_id >= low, FingerprintRow.item_id <= high)).rowcount
        return bands, fingerprints

    @staticmethod
    def _mark_success(s: Session, src: SourceRow, result: FetchResult, now: datetime,
                      schedule: PollSchedule | None) -> None:
        src.etag, src.last_modified = result.etag, result.last_modified
        Store._apply_schedule(src, schedule)
        src.last_polled_at = src.last_success_at = now
        src.last_status, src.last_error = result.status, None
        if src.failure_notice_at is not None:  # it was reported failing: say it recovered
            s.add(_recovered_notice(src.name, src.url, now, src.failing_since))
            src.failure_notice_at = None
        src.consecutive_failures, src.failing_since = 0, None

    def record_quiet_polls(self, polls: Sequence[tuple[str, FetchResult, datetime, PollSchedule | None]]) -> None:
        """Successful polls that brought nothing to store (304, or the same body again), in one
        transaction: HTTP validators, schedule, health (and recovery notices)."""
        if not polls:
            return
        with self._writing() as s:
            conn = s.connection()
            if conn.dialect.name == "sqlite" and SQLITE_ONE_STEP:
                self._quiet_polls_sqlite(s, conn, polls)
                return
            rows = self._source_rows(s, [name for name, *_ in polls])
            for name, result, now, schedule in polls:
                self._mark_success(s, _source_in(rows, name), result, now, schedule)

    @staticmethod
    def _quiet_polls_sqlite(s: Session, conn, polls: Sequence[tuple[str, FetchResult, datetime,
                                                                    PollSchedule | None]]) -> None:
        """``record_quiet_polls`` on SQLite: what ``_mark_success`` does to each row, as one
        ``UPDATE … FROM (VALUES …)`` statement per chunk (one step of the driver; see
        ``_insert``), after one query for the sources that were reported failing (their
        recovery notices)."""
        last = {name: (result, now, schedule) for name, result, now, schedule in polls}  # the last poll wins
        when = _DateTimeIO(conn.dialect)
        missing = set(last)
        for chunk in _chunks(sorted(last), 500):
            for name, url, failing_since, failing in _json_rows(
                    conn, ("name", "url", "failing_since", "failure_notice_at IS NOT NULL"),
                    f"FROM sources WHERE name IN ({when.marks(len(chunk))})", tuple(chunk)):
                missing.discard(name)
                if failing:
                    s.add(_recovered_notice(name, url, last[name][1], when.result(failing_since)))
        if missing:
            raise _unknown_source(min(missing))
        columns = ("name", "etag", "last_modified", "now", "status", "scheduled", "next_poll_at", "poll_interval",
                   "items_per_day", "body_hash")
        values = []
        for name, (result, now, schedule) in last.items():
            stamp = when.bind(now)
            if schedule is None:
                values.append((name, result.etag, result.last_modified, stamp, result.status, 0, None, None, None, None))
            else:
                values.append((name, result.etag, result.last_modified, stamp, result.status, 1,
                               when.bind(schedule.next_poll_at),
                               schedule.interval, schedule.items_per_day, schedule.body_hash))
        one = f"({when.marks(len(columns))})"
        for chunk in _chunks(values, max(1, SQLITE_MAX_PARAMS // len(columns))):
            conn.exec_driver_sql(
                f"WITH v({', '.join(columns)}) AS (VALUES {', '.join([one] * len(chunk))}) "
                "UPDATE sources SET etag = v.etag, last_modified = v.last_modified, last_polled_at = v.now, "
                "last_success_at = v.now, last_status = v.status, last_error = NULL, consecutive_failures = 0, "
                "failing_since = NULL, failure_notice_at = NULL, "
                "leased_by = CASE WHEN v.scheduled THEN NULL ELSE sources.leased_by END, "
                "lease_until = CASE WHEN v.scheduled THEN NULL ELSE sources.lease_until END, "
                "next_poll_at = CASE WHEN v.scheduled THEN v.next_poll_at ELSE sources.next_poll_at END, "
                "poll_interval = coalesce(v.poll_interval, sources.poll_interval), "
                "items_per_day = coalesce(v.items_per_day, sources.items_per_day), "
                "body_hash = coalesce(v.body_hash, sources.body_hash) "
                "FROM v WHERE sources.name = v.name",
                tuple(x for row in chunk for x in row))

    def source_states(self) -> dict[str, SourceState]:
        """Every source's state, in one query (``monitor run --once`` reads them up front)."""
        with self._session() as s:
            return {r.name: _source_state(r) for r in s.execute(select(*_STATE_COLUMNS))}

    #: Stored candidates compared per item at most (those sharing the most keys, then the
    #: nearest in time, see ``_Copies.stored_refs``): bounds the work when a headline or a band
    #: key is common (a recurring "Press Review" has hundreds of stored copies in the window;
    #: at a million stored items about a hundred unrelated ones share a band key with each new
    #: item). A copy of the item shares several keys, or is near in time, and ranks first.
    MAX_CANDIDATES = 20

    def _plan(self, s: Session, polls: Sequence[tuple[PollCommit, SourceRow]]) -> _Plan:
        """Which new items of ``polls`` to store and the story each joins: an existing
        story's id, or ``~k`` for the k-th new story of the group. The same as planning the
        polls one after another: an item meets the stored items and those before it in the
        group."""
        group = _Plan(polls)
        keyed = [(k, src.id, new, _key(new.item.guid), _key(new.item.canonical_link) if new.item.canonical_link else None)
                 for k, (poll, src) in enumerate(polls) for new in poll.new_items]
        guids, links = self._stored_keys(s, [(source_id, g) for _, source_id, _, g, _ in keyed],
                                         [link for *_, link in keyed if link])
        fresh: list[tuple[int, int, NewItem, str, str | None, Fingerprint]] = []
        for k, source_id, new, guid_key, link_key in keyed:
            if (source_id, guid_key) in guids or (link_key and link_key in links):
                continue  # stored already (by an earlier poll, or earlier in this group)
            guids.add((source_id, guid_key))
            if link_key:
                links.add(link_key)
            item, now = new.item, group.now[k]
            at = item.published if item.published is not None and item.published < now else now
            fresh.append((k, source_id, new, guid_key, link_key,
                          replace(new.fingerprint or dedupe.fingerprint(item.title, item.text), at=at)))
        copies = self._stored_copies(s, [fp for *_, fp in fresh], max((p.window for p in group.policy), default=None))
        keys_of = [_keys_of(fp) for *_, fp in fresh]
        stored_of = [copies.stored_refs(fp, keys, group.policy[k].window, self.MAX_CANDIDATES)
                     for (k, *_, fp), keys in zip(fresh, keys_of, strict=True)]
        copies.load(s, {ref for refs in stored_of for ref, *_ in refs})
        opened = 0
        for (k, source_id, new, guid_key, link_key, fp), keys, stored in zip(fresh, keys_of, stored_of, strict=True):
            # most similar; on a tie the oldest story: a stored one, then one an earlier poll of
            # the group opened (as if that poll were stored), then one of this poll's own items
            best: tuple[tuple[float, float], int] | None = None
            found = copies.candidates(fp, keys, stored, group.policy[k].window)
            for (ref, _, story), score in zip(found, dedupe.similarities(fp, [other for _, other, _ in found]),
                                              strict=True):
                if score <= 0:
                    continue
                if ref >= 0:
                    order = -story
                elif group.items[~ref].poll < k:
                    order = -(story if story >= 0 else _NEW_STORY_ORDER + ~story)
                else:
                    order = -math.inf
                if best is None or (score, order) > best[0]:
                    best = ((score, order), story)
            if best is None:
                story, joined = ~opened, False
                opened += 1
            else:
                story, joined = best[1], True
            copies.add(~len(group.items), fp, story, keys)  # later items of the group see it too
            group.items.append(_Planned(new, fp, guid_key, link_key, story, joined, k, source_id))
        return group

    @staticmethod
    def _stored_keys(s: Session, guid_keys: Iterable[tuple[int, str]],
                     link_keys: Iterable[str]) -> tuple[set[tuple[int, str]], set[str]]:
        """Which of the keys are stored: the (source id, guid key) pairs, and the link keys (of
        any source)."""
        conn = s.connection()
        mark = _marks(conn.dialect, 1)
        guids: set[tuple[int, str]] = set()
        # a statement for many sources: a UNION ALL of one index probe per source (at most
        # 400 parts, under SQLite's limit of 500 on a compound SELECT)
        for chunk in _chunks(sorted(set(guid_keys)), 400):
            parts, params = [], []
            for source_id, pairs in groupby(chunk, key=itemgetter(0)):
                keys = [key for _, key in pairs]
                parts.append(f"SELECT source_id, guid_key FROM items WHERE source_id = {mark} "
                             f"AND guid_key IN ({_marks(conn.dialect, len(keys))})")
                params += [source_id, *keys]
            rows = _rows(conn, ("source_id", "guid_key"), f"FROM ({' UNION ALL '.join(parts)}) AS stored",
                         tuple(params))
            guids.update((int(source_id), key) for source_id, key in rows)
        links: set[str] = set()
        for chunk in _chunks(list(link_keys), 500):
            links.update(key for key, in _rows(conn, ("link_key",),
                                               f"FROM items WHERE link_key IN ({_marks(conn.dialect, len(chunk))})",
                                               tuple(chunk)))
        return guids, links

    @staticmethod
    def _stored_copies(s: Session, fps: list[Fingerprint], window: timedelta | None) -> _Copies:
        """Which stored items share a band key (within ``window``), a lead key or a title key
        (within NEAR_DAYS) with one of ``fps``, and at which hour each is (``_hour`` of its
        fingerprint's ``at``): three queries for the whole poll, of (key, item, hour) rows
        only, from the indexes; the fingerprints compared are loaded after (``_Copies.load``),
        each once, however many keys it shares, and only those ``_Copies.stored_refs`` ranks
        first. Hours are whole: each span reaches further than the time it stands for
        (``_hours_reach``)."""
        found = _Copies()
        hours = [_hour(fp.at) for fp in fps if fp.at is not None]
        if not hours:
            return found
        near = _NEAR_HOURS
        reach = max(near, _hours_reach(window)) if window is not None else near
        conn = s.connection()
        mark = _marks(conn.dialect, 1)
        lookups = (
            ("band", sorted({b for fp in fps for b in fp.bands}), reach),
            ("lead", sorted({fp.lead_key for fp in fps if fp.lead_key}), near),
            ("title", sorted({fp.title_key for fp in fps if fp.title_key}), near),
        )
        for kind, keys, span in lookups:
            table, column, hour = _COPY_KEYS[kind]
            hour = hour.format(hours=_HOURS_SQL[conn.dialect.name])
            sketch = (_SKETCH_SQL[conn.dialect.name],) if kind == "band" else ()
            for chunk in _chunks(keys, 2000):
                sql = (f"FROM {table} WHERE {column} IN ({_marks(conn.dialect, len(chunk))}) "
                       f"AND {hour} >= {mark} AND {hour} <= {mark}")
                params = (*chunk, min(hours) - span, max(hours) + span)
                got, refs, at_hours, *drawn = _json_columns(conn, (column, "item_id", hour, *sketch), sql, params)
                by_key = found.by_key
                for key, ref in zip(got, refs, strict=True):
                    by_key.setdefault((kind, key), []).append(ref)
                found.hours.update(zip(refs, at_hours, strict=True))
                if drawn:  # an item's band rows all hold its sketch
                    found.sketches.update((ref, _sketch_bits(bits)) for ref, bits in zip(refs, drawn[0], strict=True)
                                          if bits)
        return found

    def _write_plan(self, s: Session, plan: _Plan) -> tuple[list[list[StoredItem]], list[int]]:
        """Insert the planned stories, items, fingerprints and band keys (a few multi-row
        statements for the whole group), then the alerts and outbox rows; returns each poll's
        stored items and its count of alerts."""
        stored: list[list[StoredItem]] = [[] for _ in plan.polls]
        alerts = [0] * len(plan.polls)
        items = plan.items
        if not items:
            return stored, alerts
        conn = s.connection()
        when = _DateTimeIO(conn.dialect)
        titles: dict[int, tuple[str, datetime]] = {}
        for p in items:
            if p.story < 0:
                titles.setdefault(p.story, (p.new.item.title[:2000], plan.now[p.poll]))
        story_ids: dict[int, int] = {}
        if titles:
            # Plain multi-row inserts, ids read back after (RETURNING in parameter order makes
            # SQLAlchemy send one statement per row). Polls are serialised while they write
            # stories (see commit_poll), so the new stories are the ids above the old maximum.
            before = s.scalar(select(func.max(StoryRow.id))) or 0
            _insert(conn, "stories", ("title", "created_at"), [(t, when.bind(at)) for t, at in titles.values()])
            opened = sorted(int(i) for (i,) in _rows(conn, ("id",), f"FROM stories WHERE id > {when.mark}", (before,)))
            if len(opened) != len(titles):
                raise RuntimeError(f"expected {len(titles)} new stories, found {len(opened)}: concurrent writer?")
            story_ids = dict(zip(titles, opened, strict=True))
        for p in items:
            p.story = story_ids.get(p.story, p.story)
        before = s.scalar(select(func.max(ItemRow.id))) or 0
        _insert(conn, "items", _ITEM_COLUMNS, [(
            p.source_id, p.story, p.new.item.guid, p.guid_key, p.new.item.link, p.new.item.canonical_link,
            p.link_key, p.new.item.title, p.new.item.summary, p.new.item.content, when.bind(p.new.item.published),
            when.bind(plan.now[p.poll]), p.new.fresh,
        ) for p in items])
        # the rows just inserted (polls are serialised while they write items, see commit_poll)
        id_of = {(int(source_id), key): int(item_id) for source_id, key, item_id in _rows(
            conn, ("source_id", "guid_key", "id"), f"FROM items WHERE id > {when.mark}", (before,))}
        if len(id_of) != len(items):
            raise RuntimeError(f"expected {len(items)} new items, found {len(id_of)}: concurrent writer?")
        item_ids = [id_of[(p.source_id, p.guid_key)] for p in items]
        _insert(conn, "fingerprints", _FINGERPRINT_COLUMNS, [(
            item_id, p.story, when.bind(p.fingerprint.at), p.fingerprint.size, p.fingerprint.signature,
            p.fingerprint.lead_key, p.fingerprint.title_key, p.fingerprint.title, p.fingerprint.words or None,
        ) for p, item_id in zip(items, item_ids, strict=True)])
        _insert(conn, "story_bands", ("band_key", "item_id", "at_hour", "sketch"), [
            (band, item_id, _hour(p.fingerprint.at), p.fingerprint.band_sketch)
            for p, item_id in zip(items, item_ids, strict=True) for band in set(p.fingerprint.bands)])

        joined = sorted({p.story for p in items if p.joined})
        alerted: dict[int, int] = {}  # story -> its alert, made before this group
        carried: set[tuple[int, int]] = set()  # (story, source) pairs: a source's items in a story
        new_ids = set(item_ids)
        notify = any(policy.notify_on_repost for policy in plan.policy)
        for chunk in _chunks(joined, 500):
            alerted.update((int(story), int(alert)) for story, alert in _rows(
                conn, ("story_id", "id"), f"FROM alerts WHERE story_id IN ({when.marks(len(chunk))})", tuple(chunk)))
            if notify:
                # by story only (ix_items_story; a story has few items), the source checked here:
                # filtering on source_id in SQL can make SQLite walk the source's whole history
                carried.update((story, src) for story, src, item in s.execute(
                    select(ItemRow.story_id, ItemRow.source_id, ItemRow.id).where(ItemRow.story_id.in_(chunk)))
                    if item not in new_ids)
        alerted_now: dict[int, _NewAlert] = {}
        for p, item_id in zip(items, item_ids, strict=True):
            poll, _src = plan.polls[p.poll]
            now, made = plan.now[p.poll], False
            if p.story not in alerted and p.story not in alerted_now:
                if p.new.fresh and p.new.hits:
                    alerted_now[p.story] = (item_id, p.new.hits, poll.channels, now)
                    alerts[p.poll] += 1
                    made = True
            elif (p.story in alerted and plan.policy[p.poll].notify_on_repost
                  and (p.story, p.source_id) not in carried):
                self._add_update(s, alerted[p.story], now)
            carried.add((p.story, p.source_id))
            stored[p.poll].append(StoredItem(item_id, p.story, poll.source, p.new.item, p.new.fresh, p.joined, made))
        self._add_alerts(conn, when, alerted_now)
        return stored, alerts

    @staticmethod
    def _add_update(s: Session, alert_id: int, now: datetime) -> None:
        """One ``update`` outbox row per channel the alert was sent to, unless it has one
        already (a channel whose alert is still pending will list the new outlet anyway)."""
        have = set(s.scalars(select(DeliveryRow.channel).where(DeliveryRow.alert_id == alert_id,
                                                                 DeliveryRow.kind == "update")))
        for channel in s.scalars(select(DeliveryRow.channel).where(
                DeliveryRow.alert_id == alert_id, DeliveryRow.kind == "alert", DeliveryRow.status == "sent")):
            if channel not in have:
                s.add(DeliveryRow(alert_id=alert_id, channel=channel, kind="update", status="pending",
                                  attempts=0, next_attempt_at=now, created_at=now, queued_at=now))

    @staticmethod
    def _add_alerts(conn, when: _DateTimeIO, new: dict[int, _NewAlert]) -> None:
        """The alerts of stories ``new`` (story -> its first matching item, the hits, the
        poll's channels, the time) and their outbox rows, one per channel that accepts one of
        the hits: a multi-row insert each and one query for the alerts' ids (``alerts.story_id``
        is unique), not an ORM flush per alert (~0.7 ms each)."""
        if not new:
            return
        hits_json = AlertRow.__table__.c.hits.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
        _insert(conn, "alerts", ("story_id", "item_id", "created_at", "hits"), [
            (story, item_id, when.bind(now), hits_json(_hits_json(hits)) if hits_json else _hits_json(hits))
            for story, (item_id, hits, _, now) in new.items()])
        alert_of: dict[int, int] = {}
        for chunk in _chunks(list(new), 500):
            alert_of.update((int(story), int(alert)) for story, alert in _rows(
                conn, ("story_id", "id"), f"FROM alerts WHERE story_id IN ({when.marks(len(chunk))})", tuple(chunk)))
        _insert(conn, "deliveries", ("alert_id", "channel", "kind", "status", "attempts", "next_attempt_at",
                                     "created_at", "queued_at", "folded"), [
            (alert_of[story], name, "alert", "pending", 0, when.bind(now), when.bind(now), when.bind(now), False)
            for story, (_, hits, channels, now) in new.items()
            for name, accepts in channels if any(accepts(h) for h in hits)])  # type: ignore[operator]

    @staticmethod
    def _lock_in_order(s: Session, model: type[Base], *where) -> None:
        """PostgreSQL: lock the rows of ``model`` matching ``where`` in primary-key order, first
        thing in a transaction that updates several of them. Every such transaction (a heartbeat,
        a replica retiring; a group commit and quiet polls read their rows so, ``_source_rows``)
        then waits for its rows in one order and none can deadlock with another; updating in whatever order they come (the
        polls' order, the table's physical order) could. SQLite has one writer at a time."""
        if s.get_bind().dialect.name == "postgresql":
            key = model.__mapper__.primary_key[0]
            s.execute(select(key).where(*where).order_by(key).with_for_update())

    @classmethod
    def _lock_deliveries(cls, s: Session, ids: Iterable[int]) -> None:
        """``_lock_in_order`` for outbox rows given by id (in ascending chunks)."""
        for chunk in _chunks(sorted(set(ids)), 500):
            cls._lock_in_order(s, DeliveryRow, DeliveryRow.id.in_(chunk))

    @staticmethod
    def _source_rows(s: Session, names: Iterable[str]) -> dict[str, SourceRow]:
        """The rows of sources ``names`` by name, in one query, to update: on PostgreSQL locked
        in id order as they are read (``FOR UPDATE``, see ``_lock_in_order``)."""
        q = select(SourceRow).where(SourceRow.name.in_(sorted(set(names)))).order_by(SourceRow.id).with_for_update()
        return {r.name: r for r in s.scalars(q)}

    # ------------------------------------------------------------ outbox
    def due_deliveries(self, now: datetime | None = None, ignore_backoff: bool = False,
                       channels: Iterable[str] | None = None, limit: int = 500,
                       include_waiting: bool = False,
                       claim: tuple[str, timedelta] | None = None) -> list[PendingDelivery]:
        """Pending outbox rows, oldest first: those whose next attempt is due (all pending ones
        with ``ignore_backoff`` or ``include_waiting``; the delivery pass needs the waiting ones
        of digest and rate-limited channels too). With ``claim`` (replica, lease): only rows no
        other replica holds a live lease on, claimed for this one until now + lease (``SELECT …
        FOR UPDATE SKIP LOCKED``); recording the send's outcome ends the claim."""
        now = now or utcnow()
        if claim is not None:
            return self._claim_deliveries(now, ignore_backoff, channels, limit, include_waiting, *claim)
        return self._deliveries(now, ignore_backoff, channels, limit, include_waiting)

    def _claim_deliveries(self, now: datetime, ignore_backoff: bool, channels: Iterable[str] | None, limit: int,
                          include_waiting: bool, replica: str, lease: timedelta) -> list[PendingDelivery]:
        q = _pending(select(DeliveryRow.id), now, ignore_backoff or include_waiting, channels)
        q = (q.where(or_(DeliveryRow.lease_until.is_(None), DeliveryRow.lease_until < now))
             .order_by(DeliveryRow.id).limit(limit).with_for_update(skip_locked=True))
        with self._writing() as s:
            ids = list(s.scalars(q))
            if not ids:
                return []
            s.execute(update(DeliveryRow).where(DeliveryRow.id.in_(ids))
                      .values(leased_by=replica, lease_until=now + lease))
        return self._deliveries(now, ignore_backoff=True, channels=None, limit=len(ids), include_waiting=True, ids=ids)

    def _deliveries(self, now: datetime, ignore_backoff: bool,
                    channels: Iterable[str] | None, limit: int, include_waiting: bool,
                    ids: list[int] | None = None) -> list[PendingDelivery]:
        q = (
            select(DeliveryRow, AlertRow, ItemRow, SourceRow.name)
            .join(AlertRow, AlertRow.id == DeliveryRow.alert_id)
            .join(ItemRow, ItemRow.id == AlertRow.item_id)
            .join(SourceRow, SourceRow.id == ItemRow.source_id)
        )
        q = _pending(q, now, ignore_backoff or include_waiting, channels).order_by(DeliveryRow.id).limit(limit)
        if ids is not None:
            q = q.where(DeliveryRow.id.in_(ids))
        with self._session() as s:
            rows = s.execute(q).all()
            outlets = self._outlets(s, {a.story_id for _, a, _, _ in rows})
            return [
                PendingDelivery(
                    id=d.id, alert_id=a.id, channel=d.channel, attempts=d.attempts, title=i.title,
                    link=i.link, source=src, published=i.published_at,
                    summary=i.summary or i.content, hits=_hits_from_json(a.hits), kind=d.kind,
                    outlets=outlets.get(a.story_id, (src,)), text=join_text(i.summary, i.content),
                    folded=bool(d.folded), created_at=a.created_at, queued_at=d.queued_at or d.created_at,
                    next_attempt_at=d.next_attempt_at,
                )
                for d, a, i, src in rows
            ]

    @staticmethod
    def _outlets(s: Session, story_ids: set[int]) -> dict[int, tuple[str, ...]]:
        """Each story's outlets, first seen first: ``source (host of its link)``, once each."""
        out: dict[int, list[tuple[str, str | None]]] = {}
        for chunk in _chunks(sorted(story_ids), 500):
            q = (select(ItemRow.story_id, SourceRow.name, ItemRow.link)
                 .join(SourceRow, SourceRow.id == ItemRow.source_id)
                 .where(ItemRow.story_id.in_(chunk)).order_by(ItemRow.first_seen_at, ItemRow.id))
            for story_id, name, link in s.execute(q):
                out.setdefault(story_id, []).append((name, link))
        return {k: outlets_of(v) for k, v in out.items()}

    def mark_sent(self, delivery_id: int, now: datetime | None = None) -> None:
        now = now or utcnow()
        with self._writing() as s:
            s.execute(update(DeliveryRow).where(DeliveryRow.id == delivery_id)
                      .values(status="sent", sent_at=now, attempts=DeliveryRow.attempts + 1, last_error=None,
                              folded=False, leased_by=None, lease_until=None))

    def mark_digest_sent(self, channel: str, delivery_ids: Sequence[int], kind: str, folded: int,
                         now: datetime | None = None) -> int:
        """Record one digest message and mark its rows sent, in one transaction; its id."""
        now = now or utcnow()
        with self._writing() as s:
            digest = DigestRow(channel=channel, kind=kind, entries=len(delivery_ids), folded=folded, sent_at=now)
            self._lock_deliveries(s, delivery_ids)
            s.add(digest)
            s.flush()
            for chunk in _chunks(list(delivery_ids), 500):
                s.execute(update(DeliveryRow).where(DeliveryRow.id.in_(chunk))
                          .values(status="sent", sent_at=now, attempts=DeliveryRow.attempts + 1,
                                  last_error=None, digest_id=digest.id, folded=False))
            return digest.id

    def mark_failed(self, delivery_id: int, error: str, next_attempt_at: datetime) -> None:
        """One failed attempt of a row that stays pending (see :meth:`record_failures`)."""
        self.record_failures([delivery_id], error, next_attempt_at, _NEVER_DEAD, utcnow())

    def record_failures(self, delivery_ids: Sequence[int], error: str, next_attempt_at: datetime,
                        policy: RetryPolicy, now: datetime, notice: bool = False) -> list[int]:
        """One failed attempt for each row; a row that has now had ``policy.max_attempts``
        attempts, or was queued ``policy.max_age`` ago, is dead-lettered (status ``dead``).
        With ``notice``, dead-lettered rows get one operator notice (in the same transaction).
        Returns the ids dead-lettered."""
        dead: list[int] = []
        with self._writing() as s:
            self._lock_deliveries(s, delivery_ids)
            rows = []
            for chunk in _chunks(list(delivery_ids), 500):
                rows += s.execute(select(DeliveryRow, ItemRow.title)
                                  .join(AlertRow, AlertRow.id == DeliveryRow.alert_id)
                                  .join(ItemRow, ItemRow.id == AlertRow.item_id)
                                  .where(DeliveryRow.id.in_(chunk), DeliveryRow.status == "pending")).all()
            titles: list[str] = []
            for row, title in rows:
                row.attempts = (row.attempts or 0) + 1
                row.last_error = error[:2000]
                row.next_attempt_at = next_attempt_at
                row.leased_by = row.lease_until = None  # the attempt is recorded: its claim ends
                queued = row.queued_at or row.created_at
                if row.attempts >= policy.max_attempts or (queued is not None and now - queued >= policy.max_age):
                    row.status, row.dead_at, row.folded = "dead", now, False
                    dead.append(row.id)
                    titles.append(f"#{row.id} to '{row.channel}': {title or '(untitled)'}")
            if dead and notice:
                channels = sorted({row.channel for row, _ in rows if row.id in dead})
                subject = (f"{len(dead)} notification{'s' if len(dead) != 1 else ''} to "
                           f"{', '.join(repr(c) for c in channels)} dead-lettered")
                body = "\n".join([
                    f"Gave up after {rows[0][0].attempts} attempt(s) or {policy.max_age} in the outbox.",
                    f"Last error: {error[:500]}", "", *titles[:50],
                    *([f"... and {len(titles) - 50} more"] if len(titles) > 50 else []), "",
                    "Re-queue them with `monitor outbox retry --all` (or one ID) once the channel works.",
                ])
                s.add(NoticeRow(kind="dead_letter", subject=subject, body=body, status="pending", attempts=0,
                                next_attempt_at=now, created_at=now))
        return dead

    def mark_silenced(self, delivery_id: int, silence_id: int, now: datetime | None = None) -> None:
        now = now or utcnow()
        with self._writing() as s:
            s.execute(update(DeliveryRow).where(DeliveryRow.id == delivery_id, DeliveryRow.status == "pending")
                      .values(status="silenced", silence_id=silence_id, sent_at=None, folded=False,
                              leased_by=None, lease_until=None))

    def mark_folded(self, delivery_ids: Sequence[int]) -> None:
        """Rows an instant channel's ``max_per_hour`` holds back for its next rate-limit digest."""
        with self._writing() as s:
            self._lock_deliveries(s, delivery_ids)
            for chunk in _chunks(list(delivery_ids), 500):
                s.execute(update(DeliveryRow).where(DeliveryRow.id.in_(chunk), DeliveryRow.status == "pending")
                          .values(folded=True))

    def messages_sent_since(self, channel: str, since: datetime) -> int:
        """Messages ``channel`` was sent after ``since``: single alerts plus digests."""
        with self._session() as s:
            single = s.scalar(select(func.count()).select_from(DeliveryRow).where(
                DeliveryRow.channel == channel, DeliveryRow.sent_at > since, DeliveryRow.digest_id.is_(None))) or 0
            digests = s.scalar(select(func.count()).select_from(DigestRow).where(
                DigestRow.channel == channel, DigestRow.sent_at > since)) or 0
            return single + digests

    def channel_state(self, channel: str) -> ChannelState:
        with self._session() as s:
            row = s.get(ChannelStateRow, channel)
            if row is None:
                return ChannelState(channel, None, None, 0)
            return ChannelState(channel, row.last_digest_at, row.next_digest_at, row.digest_failures or 0)

    def save_channel_state(self, state: ChannelState) -> None:
        with self._writing() as s:
            row = s.get(ChannelStateRow, state.channel)
            if row is None:
                row = ChannelStateRow(channel=state.channel)
                s.add(row)
            row.last_digest_at, row.next_digest_at = state.last_digest_at, state.next_digest_at
            row.digest_failures = state.digest_failures

    def retry(self, delivery_ids: Sequence[int] | None, now: datetime | None = None) -> int:
        """Re-queue dead rows (all of them when ``delivery_ids`` is None) and make the given
        pending ones due now; attempts and age start again. Returns how many rows changed."""
        now = now or utcnow()
        values = dict(status="pending", attempts=0, next_attempt_at=now, queued_at=now, dead_at=None,
                      last_error=None)
        with self._writing() as s:
            if delivery_ids is None:
                return s.execute(update(DeliveryRow).where(DeliveryRow.status == "dead").values(**values)).rowcount
            changed = 0
            for chunk in _chunks(list(delivery_ids), 500):
                changed += s.execute(update(DeliveryRow).where(
                    DeliveryRow.id.in_(chunk), DeliveryRow.status.in_(("dead", "pending"))).values(**values)).rowcount
            return changed

    def outbox(self, statuses: Sequence[str] = ("pending", "dead"), limit: int = 1000) -> list[OutboxRow]:
        """Outbox rows in ``statuses``, oldest first, for ``monitor outbox``."""
        q = (select(DeliveryRow, ItemRow.title)
             .join(AlertRow, AlertRow.id == DeliveryRow.alert_id)
             .join(ItemRow, ItemRow.id == AlertRow.item_id)
             .where(DeliveryRow.status.in_(list(statuses))).order_by(DeliveryRow.id).limit(limit))
        with self._session() as s:
            return [OutboxRow(d.id, d.alert_id, d.channel, d.kind, d.status, d.attempts, d.next_attempt_at,
                              d.queued_at or d.created_at, d.last_error, bool(d.folded), title)
                    for d, title in s.execute(q)]

    # ------------------------------------------------------------ operator notices
    def add_notice(self, kind: str, subject: str, body: str, now: datetime | None = None) -> int:
        now = now or utcnow()
        with self._writing() as s:
            row = NoticeRow(kind=kind, subject=subject, body=body, status="pending", attempts=0,
                            next_attempt_at=now, created_at=now)
            s.add(row)
            s.flush()
            return row.id

    def due_notices(self, now: datetime | None = None, ignore_backoff: bool = False, limit: int = 100) -> list[Notice]:
        now = now or utcnow()
        q = select(NoticeRow).where(NoticeRow.status == "pending").order_by(NoticeRow.id).limit(limit)
        if not ignore_backoff:
            q = q.where(NoticeRow.next_attempt_at <= now)
        with self._session() as s:
            return [Notice(r.id, r.kind, r.subject, r.body) for r in s.scalars(q)]

    def notice_attempt(self, notice_id: int, error: str | None, next_attempt_at: datetime | None,
                       policy: RetryPolicy, now: datetime | None = None) -> None:
        """Record a send of a notice: sent when ``error`` is None, else retried later (dead after
        ``policy.max_attempts``: a notice about notices would go to the same broken channel)."""
        now = now or utcnow()
        with self._writing() as s:
            row = s.get(NoticeRow, notice_id)
            if row is None or row.status != "pending":
                return
            row.attempts = (row.attempts or 0) + 1
            if error is None:
                row.status, row.sent_at, row.last_error = "sent", now, None
                return
            row.last_error = error[:2000]
            row.next_attempt_at = next_attempt_at or now
            if row.attempts >= policy.max_attempts:
                row.status = "dead"

    def notices(self, limit: int = 100) -> list[tuple[int, str, str, str, datetime]]:
        """Recent notices, newest first: (id, kind, status, subject, created_at)."""
        with self._session() as s:
            return [tuple(r) for r in s.execute(select(NoticeRow.id, NoticeRow.kind, NoticeRow.status,
                                                       NoticeRow.subject, NoticeRow.created_at)
                                                .order_by(NoticeRow.id.desc()).limit(limit))]

    # ------------------------------------------------------------ silences
    def add_silence(self, watchlist: str, ends_at: datetime, query: str | None = None, source: str | None = None,
                    comment: str = "", created_by: str = "", now: datetime | None = None) -> int:
        now = now or utcnow()
        with self._writing() as s:
            row = SilenceRow(watchlist=watchlist, query=query, source=source, starts_at=now, ends_at=ends_at,
                             comment=comment, created_by=created_by, created_at=now)
            s.add(row)
            s.flush()
            return row.id

    def silences(self, now: datetime | None = None, include_expired: bool = False) -> list[Silence]:
        """Silences, newest first: the active ones (all of them with ``include_expired``)."""
        now = now or utcnow()
        q = select(SilenceRow).order_by(SilenceRow.id.desc())
        if not include_expired:
            q = q.where(SilenceRow.starts_at <= now, SilenceRow.ends_at > now)
        with self._session() as s:
            return [_silence(r) for r in s.scalars(q)]

    def expire_silence(self, silence_id: int, now: datetime | None = None) -> Silence | None:
        """End a silence now; None when there is no such silence. An expired one is left as is."""
        now = now or utcnow()
        with self._writing() as s:
            row = s.get(SilenceRow, silence_id)
            if row is None:
                return None
            if row.ends_at > now:
                row.ends_at = now
            return _silence(row)

    # ------------------------------------------------------------ monitor alerts
    def recent_alerts(self, since: datetime, watchlist: str | None = None, limit: int = 1000) -> list[AlertListing]:
        """Alerts made at or after ``since``, newest first, with each channel's delivery state."""
        q = (select(AlertRow, ItemRow.title, ItemRow.link, SourceRow.name)
             .join(ItemRow, ItemRow.id == AlertRow.item_id)
             .join(SourceRow, SourceRow.id == ItemRow.source_id)
             .where(AlertRow.created_at >= since).order_by(AlertRow.created_at.desc(), AlertRow.id.desc()))
        out: list[AlertListing] = []
        with self._session() as s:
            for a, title, link, source in s.execute(q):
                hits = _hits_from_json(a.hits)
                if watchlist is not None and watchlist not in {h.name for h in hits}:
                    continue
                out.append(AlertListing(a.id, a.story_id, a.created_at, title, link, source, hits, ()))
                if len(out) >= limit:
                    break
            by_alert: dict[int, list[DeliveryState]] = {}
            for chunk in _chunks([x.id for x in out], 500):
                for d in s.scalars(select(DeliveryRow).where(DeliveryRow.alert_id.in_(chunk)).order_by(DeliveryRow.id)):
                    by_alert.setdefault(d.alert_id, []).append(DeliveryState(
                        d.id, d.channel, d.kind, d.status, d.attempts, d.sent_at, d.next_attempt_at, d.last_error,
                        bool(d.folded), d.digest_id, d.silence_id))
        return [replace(x, deliveries=tuple(by_alert.get(x.id, ()))) for x in out]

    # ------------------------------------------------------------ read-outs
    def counts(self) -> dict[str, int]:
        with self._session() as s:
            return {
                "sources": s.scalar(select(func.count()).select_from(SourceRow)) or 0,
                "items": s.scalar(select(func.count()).select_from(ItemRow)) or 0,
                "alerts": s.scalar(select(func.count()).select_from(AlertRow)) or 0,
                "pending": self._pending(s),
                "sent": s.scalar(select(func.count()).select_from(DeliveryRow)
                                 .where(DeliveryRow.status == "sent")) or 0,
            }

    def pending_count(self) -> int:
        """Outbox rows not sent yet (uses the status index; cheap enough for every delivery pass)."""
        with self._session() as s:
            return self._pending(s)

    @staticmethod
    def _pending(s: Session) -> int:
        return s.scalar(select(func.count()).select_from(DeliveryRow).where(DeliveryRow.status == "pending")) or 0

    def iter_items(self, since: datetime, batch_size: int = 500) -> Iterator[ArchivedItem]:
        """Items first seen at or after ``since``, oldest first (then by id), read ``batch_size``
        at a time (keyset pagination, one short read per batch): memory stays flat however many
        items there are."""
        last: tuple[datetime, int] | None = None
        while True:
            q = (
                select(ItemRow, SourceRow.name)
                .join(SourceRow, SourceRow.id == ItemRow.source_id)
                .where(ItemRow.first_seen_at >= since)
                .order_by(ItemRow.first_seen_at, ItemRow.id)
                .limit(batch_size)
            )
            if last is not None:
                q = q.where(or_(ItemRow.first_seen_at > last[0],
                                and_(ItemRow.first_seen_at == last[0], ItemRow.id > last[1])))
            with self._session() as s:
                rows = s.execute(q).all()
                batch = [
                    ArchivedItem(
                        id=i.id, story_id=i.story_id, source=src, fresh=i.fresh, first_seen=i.first_seen_at,
                        item=Item(guid=i.guid, link=i.link, canonical_link=i.canonical_link, title=i.title,
                                  summary=i.summary, content=i.content, published=i.published_at),
                    )
                    for i, src in rows
                ]
            yield from batch
            if len(batch) < batch_size:
                return
            last = (batch[-1].first_seen, batch[-1].id)

    def iter_stories(self, since: datetime | None = None, batch_size: int = 500) -> Iterator[StoryListing]:
        """Stories with an item first seen at or after ``since`` (all stories when None), oldest
        first, each with all of its items; read ``batch_size`` stories at a time (flat memory)."""
        last = 0
        while True:
            q = select(StoryRow).where(StoryRow.id > last).order_by(StoryRow.id).limit(batch_size)
            if since is not None:
                active = select(ItemRow.story_id).where(ItemRow.first_seen_at >= since)
                q = q.where(StoryRow.id.in_(active))
            with self._session() as s:
                stories = s.scalars(q).all()
                if not stories:
                    return
                ids = [st.id for st in stories]
                items: dict[int, list[StoryItem]] = {}
                iq = (select(ItemRow.story_id, ItemRow.link, SourceRow.name, ItemRow.title, ItemRow.first_seen_at)
                      .join(SourceRow, SourceRow.id == ItemRow.source_id)
                      .where(ItemRow.story_id.in_(ids)).order_by(ItemRow.first_seen_at, ItemRow.id))
                for story_id, link, source, title, seen in s.execute(iq):
                    items.setdefault(story_id, []).append(StoryItem(link, source, title, seen))
                alerted = set(s.scalars(select(AlertRow.story_id).where(AlertRow.story_id.in_(ids))))
                batch = [StoryListing(st.id, st.title, st.created_at, st.id in alerted, tuple(items.get(st.id, ())))
                         for st in stories]
            yield from batch
            if len(stories) < batch_size:
                return
            last = stories[-1].id

    def failing_sources(self) -> list[tuple[str, str | None, int]]:
        with self._session() as s:
            q = select(SourceRow.name, SourceRow.last_error, SourceRow.consecutive_failures).where(
                or_(SourceRow.consecutive_failures > 0))
            return [tuple(r) for r in s.execute(q)]


def _source_in(rows: dict[str, SourceRow], name: str) -> SourceRow:
    """Source ``name``'s row among ``rows`` (``Store._source_rows``)."""
    row = rows.get(name)
    if row is None:
        raise _unknown_source(name)
    return row


def _unknown_source(name: str) -> KeyError:
    return KeyError(f"unknown source {name!r}; call sync_sources first")


def _only(results: list[PollOutcome | Exception]) -> PollOutcome:
    """The outcome of a group of one poll; its error raised."""
    (result,) = results
    if isinstance(result, Exception):
        raise result
    return result


def _pending(q, now: datetime, all_pending: bool, channels: Iterable[str] | None):
    """``q`` narrowed to pending outbox rows: due now (every pending one with ``all_pending``),
    of ``channels`` (all when None)."""
    q = q.where(DeliveryRow.status == "pending")
    if not all_pending:
        q = q.where(DeliveryRow.next_attempt_at <= now)
    if channels is not None:
        q = q.where(DeliveryRow.channel.in_(list(channels)))
    return q


#: Bound parameters in one SQLite statement (SQLITE_MAX_VARIABLE_NUMBER since 3.32 is 32766).
SQLITE_MAX_PARAMS = 32_000
#: Rows in one multi-row INSERT on SQLite. Such a statement keeps a statement journal (the
#: pages it changed, to undo it alone if it fails), held in memory on the writer
#: (``temp_store=MEMORY``, see make_engine): this bounds it to about this many pages per index
#: the rows go into (a few MB).
SQLITE_MAX_ROWS = 2_000
#: On SQLite, quiet polls are recorded and sources claimed in statements of one step each (see
#: below; ``UPDATE … FROM`` needs SQLite 3.33); else, and on PostgreSQL, through the ORM. Tests
#: set it False to compare the two.
SQLITE_ONE_STEP = sqlite3.sqlite_version_info >= (3, 33)
_ITEM_COLUMNS = ("source_id", "story_id", "guid", "guid_key", "link", "canonical_link", "link_key", "title",
                 "summary", "content", "published_at", "first_seen_at", "fresh")
_FINGERPRINT_COLUMNS = ("item_id", "story_id", "at", "size", "signature", "lead_key", "title_key", "title", "words")

# Why the hot writes and reads below are shaped for SQLite as they are: the driver lets go of the
# interpreter lock around every step of a statement (each row inserted by executemany, each
# row read), and while the polls' work threads are busy, taking it back waits for their switch
# interval (5 ms). A group commit of 500 items took ~0.24 ms an item alone and ~80 ms an item
# beside one busy Python thread. So on SQLite a group's rows go in as multi-row VALUES
# statements and the lookups' rows come back packed into one string: a statement is one step.


def _insert(conn, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """Insert ``rows`` (values as the driver takes them) into ``table``. On SQLite as multi-row
    VALUES statements of up to SQLITE_MAX_PARAMS parameters (see above); elsewhere one
    executemany."""
    if not rows:
        return
    head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
    one = f"({_marks(conn.dialect, len(columns))})"
    if conn.dialect.name != "sqlite":
        conn.exec_driver_sql(head + one, rows)
        return
    for chunk in _chunks(rows, max(1, min(SQLITE_MAX_ROWS, SQLITE_MAX_PARAMS // len(columns)))):
        conn.exec_driver_sql(head + ", ".join([one] * len(chunk)), tuple(v for row in chunk for v in row))


def _rows(conn, columns: tuple[str, ...], tail: str, params: tuple) -> list[tuple]:
    """The rows of ``SELECT columns tail``. On SQLite they come back packed into one string by
    group_concat (see above), so values are text there (convert them) and the columns must
    not be NULL or hold the ASCII separators 0x1e and 0x1f; elsewhere as the driver gives them."""
    if conn.dialect.name != "sqlite":
        return conn.exec_driver_sql(f"SELECT {', '.join(columns)} {tail}", params).fetchall()
    packed = conn.exec_driver_sql(f"SELECT group_concat({' || char(31) || '.join(columns)}, char(30)) {tail}",
                                  params).scalar()
    return [tuple(row.split("\x1f")) for row in packed.split("\x1e")] if packed else []


def _json_columns(conn, columns: tuple[str, ...], tail: str, params: tuple) -> list[list]:
    """The values of each column of ``SELECT columns tail``, a list per column. On SQLite
    each column comes back packed into one JSON array (one step of the driver, like
    ``_rows``; numbers stay numbers: for many rows of numbers, half the cost of ``_rows``)."""
    if conn.dialect.name != "sqlite":
        rows = conn.exec_driver_sql(f"SELECT {', '.join(columns)} {tail}", params).fetchall()
        return [list(values) for values in zip(*rows, strict=True)] if rows else [[] for _ in columns]
    packed = conn.exec_driver_sql(f"SELECT {', '.join(f'json_group_array({c})' for c in columns)} {tail}",
                                  params).one()
    return [json.loads(values) for values in packed]


def _json_rows(conn, columns: tuple[str, ...], tail: str, params: tuple) -> list[tuple]:
    """The rows of ``SELECT columns tail``, through ``_json_columns`` (on SQLite one step of the
    driver; NULLs and any text survive it, numbers stay numbers)."""
    return list(zip(*_json_columns(conn, columns, tail, params), strict=True))


def _keys_of(fp: Fingerprint) -> list[tuple[str, object]]:
    """The (kind, key) pairs ``Store._stored_copies`` finds ``fp`` by."""
    keys: list[tuple[str, object]] = [("band", b) for b in fp.bands]
    if fp.lead_key:
        keys.append(("lead", fp.lead_key))
    if fp.title_key:
        keys.append(("title", fp.title_key))
    return keys


class _Copies:
    """The fingerprints a poll's items are compared with, by the (kind, key) that finds them:
    stored ones (under their item id; loaded by ``load``) and the poll's own earlier items
    (under ``~k``)."""

    def __init__(self) -> None:
        self.fingerprints: dict[int, tuple[Fingerprint, int]] = {}  # ref -> (fingerprint, story)
        self.by_key: dict[tuple[str, object], list[int]] = {}  # (kind, key) -> stored refs
        self.hours: dict[int, int] = {}  # stored ref -> _hour of its fingerprint's at
        self.sketches: dict[int, int] = {}  # stored ref -> its band rows' sketch (dedupe.sketch_int)
        self.own: dict[tuple[str, object], list[int]] = {}  # (kind, key) -> the poll's refs

    def add(self, ref: int, fp: Fingerprint, story: int, keys: Iterable[tuple[str, object]]) -> None:
        """One of the poll's own items (``ref`` < 0), for the items after it."""
        self.fingerprints.setdefault(ref, (fp, story))
        for key in keys:
            self.own.setdefault(key, []).append(ref)

    def stored_refs(self, fp: Fingerprint, keys: list[tuple[str, object]], window: timedelta,
                    limit: int) -> list[tuple[int, bool, bool]]:
        """The stored items ``fp`` (with ``_keys_of(fp)``) is compared with, as (ref, by band,
        by lead or title): those sharing a band key with it within ``window`` or a lead or
        title key within NEAR_DAYS, and of those further than NEAR_DAYS only those sharing two
        keys or more (only a near-identical text joins from that far, and it shares most of its
        band keys: at Jaccard 0.9, 8 bands of 3 share fewer than two with p = 0.0007). To the
        hour: ``candidates`` checks the times exactly. Of those found by band keys only, none
        whose sketch shows a Jaccard estimate below JACCARD (``dedupe.sketch_same``) when
        nothing else could join them (two briefs within WORD_NEAR can join by their word sets;
        a shared lead or title key within NEAR_DAYS, by containment or headline): most
        unrelated items that share a band key by chance, left out without loading them. At
        most ``limit``, the likeliest to be its story first: those sharing the most keys (a
        near copy shares several band keys; a common headline or a stock sentence, one), then
        those within NEAR_DAYS, then the nearest in time."""
        assert fp.at is not None
        at, hours, sketches = _hour(fp.at), self.hours, self.sketches
        near, reach = _NEAR_HOURS, _hours_reach(window)
        words_reach = _WORD_NEAR_HOURS if fp.words else -1
        by_band: Counter[int] = Counter()
        by_other: Counter[int] = Counter()
        _gather(self.by_key, keys, by_band, by_other)
        ranked = []
        same, least = dedupe.sketch_same, dedupe.SKETCH_MIN_SAME
        for ref in by_band.keys() | by_other.keys() if by_other else by_band:
            apart = abs(hours[ref] - at)
            band = apart <= reach and ref in by_band
            other = apart <= near and ref in by_other
            if band and not other and apart > words_reach and ref in sketches:
                band = same(fp.sketch_bits, sketches[ref]) >= least
            n = by_band.get(ref, 0) + by_other.get(ref, 0)
            if (band or other) and (apart <= near or n > 1):
                ranked.append((-n, apart > near, apart, -ref, band, other))
        return [(-ref, band, other) for *_, ref, band, other in heapq.nsmallest(limit, ranked)]

    def load(self, s: Session, refs: Iterable[int]) -> None:
        """Read the fingerprints (and stories) of stored items ``refs``."""
        conn = s.connection()
        when = _DateTimeIO(conn.dialect)
        packed = conn.dialect.name == "sqlite"  # as text, in one string (see _rows)
        columns = (("item_id", "story_id", "at", "size", "hex(signature)", "ifnull(lead_key, '')", "ifnull(title, '')",
                    "hex(words)") if packed else
                   ("item_id", "story_id", "at", "size", "signature", "lead_key", "title", "words"))
        for chunk in _chunks(sorted(set(refs) - self.fingerprints.keys()), 500):
            tail = f"FROM fingerprints WHERE item_id IN ({when.marks(len(chunk))})"
            for item_id, story_id, at, size, signature, lead_key, title, words in _rows(conn, columns, tail,
                                                                                      tuple(chunk)):
                if packed:
                    signature, words = bytes.fromhex(signature), bytes.fromhex(words)
                fp = Fingerprint(bytes(signature), int(size), lead_key or None, title or "", (), when.result(at),
                                 bytes(words or b""))
                self.fingerprints[int(item_id)] = (fp, int(story_id))

    def candidates(self, fp: Fingerprint, keys: list[tuple[str, object]], stored: Iterable[tuple[int, bool, bool]],
                   window: timedelta) -> list[tuple[int, Fingerprint, int]]:
        """(ref, fingerprint, story) of what ``fp`` (with ``_keys_of(fp)``) is compared with:
        same band key within ``window``, same lead or title key within NEAR_DAYS (to the
        microsecond); of the stored ones those in ``stored`` (its ``stored_refs``, loaded),
        then the poll's earlier items."""
        assert fp.at is not None
        near = timedelta(days=dedupe.NEAR_DAYS)
        by_band: set[int] = set()
        by_other: set[int] = set()
        _gather(self.own, keys, by_band, by_other)
        own = [(ref, ref in by_band, ref in by_other) for ref in sorted(by_band | by_other, reverse=True)]  # poll order
        found = []
        for ref, band, other in chain(stored, own):
            copy = self.fingerprints.get(ref)  # (None: a stored one gone since it was looked up, pruned)
            if copy is not None:
                apart = abs(copy[0].at - fp.at)
                if (band and apart <= window) or (other and apart <= near):
                    found.append((ref, *copy))
        return found


def _gather(index: dict[tuple[str, object], list[int]], keys: list[tuple[str, object]],
            by_band: Counter[int] | set[int], by_other: Counter[int] | set[int]) -> None:
    """Add the refs ``index`` has under ``keys`` to ``by_band`` (band keys) or ``by_other``
    (lead and title keys): counted (Counter) or collected (set)."""
    for key in keys:
        refs = index.get(key)
        if refs:
            (by_band if key[0] == "band" else by_other).update(refs)


#: Where the (key, item id, hour) rows of each kind of story key are: an index of a table, and
#: the hour (see ``_hour``) as it holds it.
_COPY_KEYS = {"band": ("story_bands", "band_key", "at_hour"),
              "lead": ("fingerprints", "lead_key", "{hours}"), "title": ("fingerprints", "title_key", "{hours}")}
#: A band row's sketch in SQL, per dialect (``_sketch_bits`` reads it).
_SKETCH_SQL = {"sqlite": "hex(sketch)", "postgresql": "sketch"}
#: ``_hour(at)`` in SQL, per dialect (whole hours since 1970 of a time in UTC).
_HOURS_SQL = {"sqlite": "(CAST(strftime('%s', at) AS INTEGER) / 3600)",
              "postgresql": "CAST(floor(extract(epoch FROM at) / 3600) AS BIGINT)"}


def _hour(at: datetime) -> int:
    """Whole hours from 1970 to ``at`` (an aware time): how band rows hold their time."""
    return int(at.timestamp() // 3600)


def _hours_reach(span: timedelta) -> int:
    """How many whole hours (``_hour``) apart two times at most ``span`` apart can be: ``span``
    rounded up, and one more."""
    return -int(-span.total_seconds() // 3600) + 1


#: ``_hours_reach`` of NEAR_DAYS.
_NEAR_HOURS = _hours_reach(timedelta(days=dedupe.NEAR_DAYS))
#: ``_hours_reach`` of WORD_NEAR.
_WORD_NEAR_HOURS = _hours_reach(dedupe.WORD_NEAR)


def _sketch_bits(value: str | bytes) -> int:
    """A band row's sketch as ``_SKETCH_SQL`` gives it (hex digits, or bytes), as
    ``dedupe.sketch_int``."""
    return int(value, 16) if isinstance(value, str) else dedupe.sketch_int(bytes(value))


def _marks(dialect, n: int) -> str:
    """``n`` of the driver's parameter marks, comma-separated (for ``exec_driver_sql``)."""
    return ", ".join(["?" if dialect.paramstyle == "qmark" else "%s"] * n)


class _DateTimeIO:
    """UTCDateTime's conversions and the driver's parameter mark, for the few hot queries that
    go to the driver directly (``exec_driver_sql``): a poll's story lookups read thousands of
    rows, and SQLAlchemy's per-row result processing cost more than the queries."""

    def __init__(self, dialect) -> None:
        self.dialect = dialect
        self.mark = _marks(dialect, 1)
        impl = UTCDateTime().dialect_impl(dialect)
        self._bind = impl.bind_processor(dialect)
        self._result = impl.result_processor(dialect, None)

    def marks(self, n: int) -> str:
        return _marks(self.dialect, n)

    # None stays None both ways (UTCDateTime)
    def bind(self, value: datetime | None) -> object:
        return self._bind(value) if self._bind is not None else value

    def result(self, value: object) -> datetime:
        if isinstance(value, str):  # SQLite's text as SQLAlchemy writes it, ISO 8601 in UTC: 10x cheaper
            return datetime.fromisoformat(value + "+00:00")
        return self._result(value) if self._result is not None else value  # type: ignore[return-value]


def outlet_name(source: str, link: str | None) -> str:
    """``source (host)``: the source as configured and the host its link points to."""
    try:
        host = urlsplit(link).hostname if link else None
    except ValueError:
        host = None
    if host and host.startswith("www."):
        host = host[4:]
    return f"{source} ({host})" if host and host != source else source


def outlets_of(items: Iterable[tuple[str, str | None]]) -> tuple[str, ...]:
    """The distinct ``outlet_name`` of (source, link) pairs, in the order given."""
    return tuple(dict.fromkeys(outlet_name(source, link) for source, link in items))


#: What ``_source_state`` reads of a source (``Store.source_states`` selects only these).
_STATE_COLUMNS = (SourceRow.name, SourceRow.etag, SourceRow.last_modified, SourceRow.consecutive_failures,
                  SourceRow.poll_interval, SourceRow.items_per_day, SourceRow.body_hash, SourceRow.next_poll_at)
#: For ORM-enabled UPDATEs of many rows where no loaded object needs refreshing.
_NO_SYNC = {"synchronize_session": False}


def _source_state(row: SourceRow) -> SourceState:
    return SourceState(row.name, row.etag, row.last_modified, row.consecutive_failures or 0, row.poll_interval,
                       row.items_per_day, row.body_hash, row.next_poll_at)


def _silence(row: SilenceRow) -> Silence:
    return Silence(row.id, row.watchlist, row.query, row.source, row.starts_at, row.ends_at, row.comment,
                   row.created_by, row.created_at)


def _recovered_notice(name: str, url: str, now: datetime, failing_since: datetime | None) -> NoticeRow:
    """The admin notice that source ``name``, reported failing, answered again at ``now``."""
    return NoticeRow(
        kind="source_recovered", status="pending", attempts=0, next_attempt_at=now, created_at=now,
        subject=f"source '{name}' recovered",
        body=(f"Source '{name}' ({url}) answered again at {now.strftime('%Y-%m-%d %H:%M UTC')} "
              f"after failing since {_when(failing_since)}."))


def _when(t: datetime | None) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if t is not None else "unknown"


def _chunks(seq: list, n: int):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


