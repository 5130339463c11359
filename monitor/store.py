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

import hashlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    and_,
    create_engine,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from .model import DEFAULT_SEVERITY, FetchResult, Item, StoredItem, WatchlistHit

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


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


class AlertRow(Base):
    __tablename__ = "alerts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    story_id: Mapped[int] = mapped_column(ForeignKey("stories.id"), unique=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    hits: Mapped[list] = mapped_column(JSON)


class DeliveryRow(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("alert_id", "channel", name="uq_deliveries_alert_channel"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"))
    channel: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending | sent
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# ---------------------------------------------------------------- plain data out of the store
@dataclass(frozen=True)
class SourceState:
    name: str
    etag: str | None
    last_modified: str | None


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


@dataclass(frozen=True)
class NewItem:
    """An item the pipeline wants stored, with the watchlists it matched (empty if none)."""

    item: Item
    fresh: bool
    hits: tuple[WatchlistHit, ...] = ()


@dataclass(frozen=True)
class ArchivedItem:
    """A stored item as ``iter_items`` reads it back (for ``monitor backtest``)."""

    id: int
    story_id: int
    source: str
    item: Item
    fresh: bool
    first_seen: datetime


@dataclass(frozen=True)
class PollOutcome:
    stored: list[StoredItem]
    alerts: int


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


def make_engine(url: str) -> Engine:
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
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - exercised by every test
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    try:
        return create_engine(url, pool_pre_ping=True)
    except Exception as e:  # noqa: BLE001 - missing driver etc.
        raise DatabaseError(f"cannot use database URL {safe_url(url)}: {e}") from None


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

    @classmethod
    def open_readonly(cls, url: str) -> Store:
        """A Store that only reads (see :func:`make_readonly_engine`); never call ``upgrade`` on it."""
        return cls(url, make_readonly_engine(url))

    # ------------------------------------------------------------ schema
    def upgrade(self) -> None:
        """Apply every pending Alembic migration."""
        from alembic import command
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self.engine.begin() as conn:
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

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------ sources
    def sync_sources(self, sources: Iterable[tuple[str, str]]) -> None:
        """Make sure a row exists for each (name, url); a changed URL resets its HTTP cache state."""
        with self._session.begin() as s:
            rows = {r.name: r for r in s.scalars(select(SourceRow))}
            for name, url in sources:
                row = rows.get(name)
                if row is None:
                    s.add(SourceRow(name=name, url=url, consecutive_failures=0, items_total=0))
                elif row.url != url:
                    row.url, row.etag, row.last_modified = url, None, None

    def source_state(self, name: str) -> SourceState:
        with self._session() as s:
            row = s.scalar(select(SourceRow).where(SourceRow.name == name))
            if row is None:
                return SourceState(name, None, None)
            return SourceState(name, row.etag, row.last_modified)

    def known_keys(self, source: str, items: Sequence[Item]) -> set[str]:
        """The guids of ``items`` already stored: same guid from this source or same canonical link."""
        if not items:
            return set()
        guid_keys = {_key(i.guid): i.guid for i in items}
        link_keys = {_key(i.canonical_link): i.guid for i in items if i.canonical_link}
        known: set[str] = set()
        with self._session() as s:
            src = s.scalar(select(SourceRow.id).where(SourceRow.name == source))
            for chunk in _chunks(list(guid_keys), 500):
                if src is not None:
                    q = select(ItemRow.guid_key).where(ItemRow.source_id == src, ItemRow.guid_key.in_(chunk))
                    known.update(guid_keys[k] for k in s.scalars(q))
            for chunk in _chunks(list(link_keys), 500):
                q = select(ItemRow.link_key).where(ItemRow.link_key.in_(chunk))
                known.update(link_keys[k] for k in s.scalars(q))
        return known

    def record_failure(self, source: str, result: FetchResult, now: datetime | None = None) -> None:
        now = now or utcnow()
        with self._session.begin() as s:
            row = self._source_row(s, source)
            row.last_polled_at = now
            row.last_status = "error"
            row.last_error = result.error
            row.consecutive_failures = (row.consecutive_failures or 0) + 1
            row.failing_since = row.failing_since or now

    def commit_poll(
        self,
        source: str,
        result: FetchResult,
        new_items: Sequence[NewItem],
        channels: Sequence[tuple[str, object]] = (),
        now: datetime | None = None,
    ) -> PollOutcome:
        """Store a successful poll atomically: items, stories, alerts, outbox rows, HTTP state.

        ``channels`` are (name, accepts) pairs where ``accepts(hit: WatchlistHit) -> bool`` (see
        ``ChannelConfig.accepts``: the channel's watchlists and ``min_severity``); an alert gets an
        outbox row for every channel that accepts at least one of its hits. Items that turn out to
        be duplicates at insert time (a concurrent poll won) are skipped.
        """
        now = now or utcnow()
        stored: list[StoredItem] = []
        alerts = 0
        with self._session.begin() as s:
            src = self._source_row(s, source)
            for new in new_items:
                item = new.item
                story = StoryRow(title=item.title[:2000], created_at=now)
                row = ItemRow(
                    source_id=src.id, guid=item.guid, guid_key=_key(item.guid), link=item.link,
                    canonical_link=item.canonical_link,
                    link_key=_key(item.canonical_link) if item.canonical_link else None,
                    title=item.title, summary=item.summary, content=item.content,
                    published_at=item.published, first_seen_at=now, fresh=new.fresh,
                )
                try:
                    with s.begin_nested():
                        s.add(story)
                        s.flush()
                        row.story_id = story.id
                        s.add(row)
                        s.flush()
                except IntegrityError:
                    continue  # stored meanwhile by another poll: an exact duplicate
                stored.append(StoredItem(row.id, story.id, source, item, new.fresh))
                if new.fresh and new.hits:
                    alerts += self._add_alert(s, story.id, row.id, new.hits, channels, now)
            src.etag, src.last_modified = result.etag, result.last_modified
            src.last_polled_at = src.last_success_at = now
            src.last_status, src.last_error = result.status, None
            src.consecutive_failures, src.failing_since = 0, None
            src.items_total = (src.items_total or 0) + len(stored)
        return PollOutcome(stored, alerts)

    def record_not_modified(self, source: str, result: FetchResult, now: datetime | None = None) -> None:
        self.commit_poll(source, result, (), now=now)

    @staticmethod
    def _add_alert(s: Session, story_id, item_id, hits, channels, now) -> int:
        alert = AlertRow(story_id=story_id, item_id=item_id, created_at=now, hits=_hits_json(hits))
        s.add(alert)
        s.flush()
        for name, accepts in channels:
            if any(accepts(h) for h in hits):  # type: ignore[operator]
                s.add(DeliveryRow(alert_id=alert.id, channel=name, status="pending", attempts=0,
                                  next_attempt_at=now, created_at=now))
        return 1

    @staticmethod
    def _source_row(s: Session, name: str) -> SourceRow:
        row = s.scalar(select(SourceRow).where(SourceRow.name == name))
        if row is None:
            raise KeyError(f"unknown source {name!r}; call sync_sources first")
        return row

    # ------------------------------------------------------------ outbox
    def due_deliveries(self, now: datetime | None = None, ignore_backoff: bool = False,
                       channels: Iterable[str] | None = None, limit: int = 500) -> list[PendingDelivery]:
        """Pending outbox rows whose next attempt is due (all pending ones with ignore_backoff)."""
        now = now or utcnow()
        q = (
            select(DeliveryRow, AlertRow, ItemRow, SourceRow.name)
            .join(AlertRow, AlertRow.id == DeliveryRow.alert_id)
            .join(ItemRow, ItemRow.id == AlertRow.item_id)
            .join(SourceRow, SourceRow.id == ItemRow.source_id)
            .where(DeliveryRow.status == "pending")
            .order_by(DeliveryRow.id)
            .limit(limit)
        )
        if not ignore_backoff:
            q = q.where(DeliveryRow.next_attempt_at <= now)
        if channels is not None:
            q = q.where(DeliveryRow.channel.in_(list(channels)))
        with self._session() as s:
            return [
                PendingDelivery(
                    id=d.id, alert_id=a.id, channel=d.channel, attempts=d.attempts, title=i.title,
                    link=i.link, source=src, published=i.published_at,
                    summary=i.summary or i.content, hits=_hits_from_json(a.hits),
                )
                for d, a, i, src in s.execute(q)
            ]

    def mark_sent(self, delivery_id: int, now: datetime | None = None) -> None:
        now = now or utcnow()
        with self._session.begin() as s:
            s.execute(update(DeliveryRow).where(DeliveryRow.id == delivery_id)
                      .values(status="sent", sent_at=now, attempts=DeliveryRow.attempts + 1, last_error=None))

    def mark_failed(self, delivery_id: int, error: str, next_attempt_at: datetime) -> None:
        with self._session.begin() as s:
            s.execute(update(DeliveryRow).where(DeliveryRow.id == delivery_id, DeliveryRow.status == "pending")
                      .values(attempts=DeliveryRow.attempts + 1, last_error=error[:2000],
                              next_attempt_at=next_attempt_at))

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

    def failing_sources(self) -> list[tuple[str, str | None, int]]:
        with self._session() as s:
            q = select(SourceRow.name, SourceRow.last_error, SourceRow.consecutive_failures).where(
                or_(SourceRow.consecutive_failures > 0))
            return [tuple(r) for r in s.execute(q)]


def _chunks(seq: list, n: int):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


