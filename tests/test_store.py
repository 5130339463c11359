"""The store against real SQLite and PostgreSQL: migrations, exact-duplicate dropping, the
atomic poll commit and the outbox's at-most-once bookkeeping."""
from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect, text

from monitor.config import ChannelConfig
from monitor.model import FetchResult, Item, WatchlistHit
from monitor.store import SCHEMA_HEAD, DatabaseError, NewItem, Store

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
OK = FetchResult(url="http://127.0.0.1/feed.xml", status="ok", http_status=200, etag='"v1"',
                 last_modified="Mon, 23 Nov 2026 11:00:00 GMT")
HIT = (WatchlistHit("missile-tests", 2.0, ("launched", "ballistic missile")),)


def item(n: int, link: str | None = None, published: datetime | None = NOW) -> Item:
    link = link or f"https://example.org/{n}"
    return Item(guid=f"g{n}", link=link, canonical_link=link, title=f"Title {n}", summary=f"Summary {n}",
                content="", published=published)


def wants_all(_hit: WatchlistHit) -> bool:
    return True


def fresh_store(url: str) -> Store:
    s = Store(url)
    s.upgrade()
    s.sync_sources([("wire", "http://127.0.0.1/wire.xml"), ("other", "http://127.0.0.1/other.xml")])
    return s


def test_migrations_create_schema_and_are_idempotent(db_url):
    s = Store(db_url)
    s.upgrade()
    s.upgrade()
    tables = set(inspect(s.engine).get_table_names())
    assert {"sources", "stories", "items", "alerts", "deliveries", "fingerprints", "story_bands",
            "silences", "digests", "channel_state", "notices", "alembic_version"} <= tables
    with s.engine.connect() as c:
        assert c.execute(text("select version_num from alembic_version")).scalar() == SCHEMA_HEAD
    assert s.schema_problem() is None
    from alembic.script import ScriptDirectory

    from monitor.store import MIGRATIONS
    assert ScriptDirectory(str(MIGRATIONS)).get_current_head() == SCHEMA_HEAD  # upgrade() trusts the constant
    s.close()


def test_migrations_build_exactly_the_schema_the_models_describe(db_url):
    """Alembic's autogenerate comparison finds nothing to add, drop or change: the migrations
    and the SQLAlchemy models agree (tables, columns, indexes, unique constraints)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from monitor.store import Base

    s = Store(db_url)
    s.upgrade()
    with s.engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c, opts={"compare_type": False}), Base.metadata)
    s.close()
    assert diff == []


def test_sqlite_runs_in_wal_mode(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/sub/dir/m.db")  # parent directories are created
    s.upgrade()
    with s.engine.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    s.close()


def _checkpointers() -> int:
    """Store checkpointer threads running now."""
    return sum(t.name == "db-checkpoint" for t in threading.enumerate())


def test_sqlite_wal_is_copied_into_the_database_file_by_the_checkpointer_thread(tmp_path):
    """Writes reach the database file itself soon after they commit, without waiting for
    SQLite's own checkpoint (which a writer would run, and wait for, only at 40,000 WAL
    pages): a copy of the file alone, without its WAL, holds them."""
    import shutil
    import sqlite3
    import time

    before = _checkpointers()  # (another test's may be running)
    s = fresh_store(f"sqlite:///{tmp_path}/m.db")
    deadline = time.monotonic() + 20
    names: list[str] = []
    while time.monotonic() < deadline:
        shutil.copyfile(tmp_path / "m.db", tmp_path / "copy.db")  # the file alone: no -wal beside it
        with contextlib.closing(sqlite3.connect(tmp_path / "copy.db")) as c:
            try:
                names = sorted(n for (n,) in c.execute("SELECT name FROM sources"))
            except sqlite3.OperationalError:  # no sources table in the file yet
                names = []
        if names:
            break
        time.sleep(0.05)
    assert names == ["other", "wire"]
    assert (tmp_path / "m.db-wal").exists()  # the connections are still open: it was not a closing checkpoint
    s.close()
    assert _checkpointers() == before


def test_disconnect_leaves_the_sqlite_file_to_the_caller_and_the_next_write_checkpoints_again(tmp_path):
    """disconnect() closes the pools and ends the checkpointer thread, after its checkpoint
    (a tool may then change the journal mode, which needs the only connection: the dedupe
    bench's fill failed with 'database is locked' under load); the next write starts it again."""
    import sqlite3

    before = _checkpointers()  # (another test's store may still be closing)
    s = fresh_store(f"sqlite:///{tmp_path}/m.db")  # writes: the checkpointer thread runs
    assert _checkpointers() == before + 1
    s.disconnect()
    assert _checkpointers() == before
    with contextlib.closing(sqlite3.connect(tmp_path / "m.db", timeout=0, isolation_level=None)) as c:
        assert c.execute("PRAGMA journal_mode=DELETE").fetchone() == ("delete",)
        assert c.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    s.sync_sources([("third", "http://127.0.0.1/third.xml")])
    assert _checkpointers() == before + 1 and s.source_state("third") is not None
    s.close()
    assert _checkpointers() == before


def test_sqlite_writes_go_through_one_connection_with_the_big_page_cache_and_readers_keep_small_ones(tmp_path):
    """SQLite memory stays bounded: only the one writing connection (story lookups and band
    inserts run in it) has the big page cache; the pooled reading connections have small ones."""
    from concurrent.futures import ThreadPoolExecutor

    from monitor.store import READER_CACHE_KB, WRITER_CACHE_KB

    s = fresh_store(f"sqlite:///{tmp_path}/m.db")
    names = [f"src{n}" for n in range(8)]
    s.sync_sources([(n, f"http://127.0.0.1/{n}.xml") for n in names])
    with ThreadPoolExecutor(4) as pool:  # writers in several threads at once still share one connection
        list(pool.map(lambda i: s.commit_poll(names[i], OK, [NewItem(item(i), True)], [], NOW), range(len(names))))
    with s._writing() as w:
        assert w.execute(text("PRAGMA cache_size")).scalar() == -WRITER_CACHE_KB
        assert w.execute(text("PRAGMA temp_store")).scalar() == 2  # MEMORY: statement journals (SQLITE_MAX_ROWS)
    assert s._write_engine.pool.checkedin() == 1
    with s._session() as r1, s._session() as r2:
        for r in (r1, r2):
            assert r.execute(text("PRAGMA cache_size")).scalar() == -READER_CACHE_KB
            assert r.execute(text("PRAGMA temp_store")).scalar() == 0  # the default: big sorts may spill
            assert r.execute(text("SELECT count(*) FROM items")).scalar() == 8
    s.close()


def test_commit_poll_stores_items_alerts_outbox_and_http_state(db_url):
    s = fresh_store(db_url)
    out = s.commit_poll("wire", OK, [NewItem(item(1), True, HIT), NewItem(item(2), True)],
                        [("hook", wants_all), ("mail", lambda h: h.name == "strategic-deployments")], NOW)
    assert [x.item.guid for x in out.stored] == ["g1", "g2"] and out.alerts == 1
    assert s.counts() == {"sources": 2, "items": 2, "alerts": 1, "pending": 1, "sent": 0}
    st = s.source_state("wire")
    assert (st.etag, st.last_modified) == ('"v1"', OK.last_modified)
    due = s.due_deliveries(NOW)
    assert [(d.channel, d.title, d.source) for d in due] == [("hook", "Title 1", "wire")]
    assert due[0].hits == HIT and due[0].published == NOW
    s.close()


def test_exact_duplicates_by_guid_per_source_and_by_link_across_sources(db_url):
    s = fresh_store(db_url)
    s.commit_poll("wire", OK, [NewItem(item(1), True)], now=NOW)
    same_guid_other_link = Item("g1", "https://example.org/x", "https://example.org/x", "T", "", "", NOW)
    same_link_other_guid = Item("zz", "https://example.org/1", "https://example.org/1", "T", "", "", NOW)
    no_link = Item("g1", None, None, "T", "", "", NOW)
    for _ in range(2):  # the first ask finds the source's id, later ones take the short way (one statement on SQLite)
        assert s.known_keys("wire", [same_guid_other_link, same_link_other_guid]) == {"g1", "zz"}
        assert s.known_keys("wire", [no_link]) == {"g1"}
        # another source may reuse a guid (guids are only trusted per source) but not a link
        assert s.known_keys("other", [same_guid_other_link, same_link_other_guid]) == {"zz"}
        assert s.known_keys("other", [no_link]) == set()
    # a duplicate that slips past known_keys (a concurrent poll) is dropped by the unique index
    out = s.commit_poll("other", OK, [NewItem(same_link_other_guid, True, HIT)], [("hook", wants_all)], NOW)
    assert out.stored == [] and out.alerts == 0
    assert s.counts()["items"] == 1
    s.close()


def test_stale_items_are_stored_but_never_alert(db_url):
    s = fresh_store(db_url)
    out = s.commit_poll("wire", OK, [NewItem(item(1, published=NOW - timedelta(days=9)), False, HIT)],
                        [("hook", wants_all)], NOW)
    assert len(out.stored) == 1 and not out.stored[0].fresh and out.alerts == 0
    assert s.counts()["pending"] == 0
    s.close()


def test_outbox_retry_bookkeeping(db_url):
    s = fresh_store(db_url)
    s.commit_poll("wire", OK, [NewItem(item(1), True, HIT)], [("hook", wants_all), ("mail", wants_all)], NOW)
    hook, mail = sorted(s.due_deliveries(NOW), key=lambda d: d.channel)
    s.mark_failed(hook.id, "HTTP 500", NOW + timedelta(minutes=5))
    s.mark_sent(mail.id, NOW)
    assert s.due_deliveries(NOW) == []  # hook waits for its backoff, mail is done
    assert [d.channel for d in s.due_deliveries(NOW, ignore_backoff=True)] == ["hook"]
    later = s.due_deliveries(NOW + timedelta(minutes=6))
    assert [(d.channel, d.attempts) for d in later] == [("hook", 1)]
    s.mark_sent(hook.id, NOW)
    s.mark_failed(hook.id, "late failure report", NOW)  # must not resurrect a sent row
    assert s.due_deliveries(NOW + timedelta(days=1), ignore_backoff=True) == []
    assert s.counts()["sent"] == 2
    s.close()


def test_failure_then_success_tracks_source_health(db_url):
    s = fresh_store(db_url)
    s.record_failure("wire", FetchResult(url="u", status="error", error="HTTP 500"), NOW)
    s.record_failure("wire", FetchResult(url="u", status="error", error="timed out"), NOW)
    assert s.failing_sources() == [("wire", "timed out", 2)]
    s.commit_poll("wire", OK, [], now=NOW)
    assert s.failing_sources() == []
    s.close()


def test_quiet_polls_on_sqlite_in_one_statement_leave_what_the_orm_leaves(tmp_path, monkeypatch):
    """record_quiet_polls writes SQLite's rows with one UPDATE … FROM (VALUES …); the rows and
    the recovery notices are those the ORM path (PostgreSQL's, and SQLite's before 3.33) leaves."""
    import monitor.store as store_module
    from monitor.store import PollSchedule, SourceHealthPolicy

    health = SourceHealthPolicy(after=timedelta(hours=6), notify=True)
    not_modified = FetchResult(url="u", status="not_modified", http_status=304, etag='"v2"', last_modified=None)

    def scenario(path, one_statement: bool) -> tuple[list, list]:
        monkeypatch.setattr(store_module, "SQLITE_ONE_STEP", one_statement)
        s = fresh_store(f"sqlite:///{path}")
        s.sync_sources([("wire", "http://127.0.0.1/wire.xml"), ("other", "http://127.0.0.1/other.xml"),
                        ("third", "http://127.0.0.1/third.xml")])
        s.record_failure("wire", FetchResult(url="u", status="error", error="HTTP 500"), NOW - timedelta(hours=7), health)
        s.record_failure("wire", FetchResult(url="u", status="error", error="timed out"), NOW, health)
        s.commit_poll("third", OK, [], now=NOW - timedelta(hours=1),
                      schedule=PollSchedule(NOW, 600.0, 3.0, "b" * 40))
        s.record_quiet_polls([
            ("wire", not_modified, NOW, PollSchedule(NOW + timedelta(minutes=5), 300.0, 12.0, "a" * 40)),
            ("other", OK, NOW, None),
            ("third", not_modified, NOW - timedelta(minutes=1), PollSchedule(NOW + timedelta(minutes=9), None)),
            ("third", not_modified, NOW, PollSchedule(NOW + timedelta(minutes=10), None)),  # the last one wins
        ])
        with s.engine.connect() as c:
            sources = [tuple(r) for r in c.execute(text(
                "SELECT name, url, etag, last_modified, last_polled_at, last_success_at, last_status, last_error, "
                "failing_since, consecutive_failures, failure_notice_at, next_poll_at, poll_interval, "
                "items_per_day, body_hash, leased_by, lease_until FROM sources ORDER BY name"))]
            notices = [tuple(r) for r in c.execute(text(
                "SELECT kind, status, subject, body, next_attempt_at, created_at FROM notices ORDER BY id"))]
        with pytest.raises(KeyError, match="unknown source 'gone'"):
            s.record_quiet_polls([("gone", OK, NOW, None)])
        s.close()
        return sources, notices

    sources, notices = scenario(tmp_path / "one.db", True)
    assert (sources, notices) == scenario(tmp_path / "orm.db", False)
    monkeypatch.setattr(store_module, "SQLITE_MAX_PARAMS", 25)  # two rows a statement: the chunks add up
    assert (sources, notices) == scenario(tmp_path / "chunked.db", True)
    assert [n[0] for n in notices] == ["source_failing", "source_recovered"]
    wire = sources[[row[0] for row in sources].index("wire")]
    assert wire[6:11] == ("not_modified", None, None, 0, None) and wire[2] == '"v2"'


def test_changed_source_url_forgets_http_cache_state(db_url):
    s = fresh_store(db_url)
    s.commit_poll("wire", OK, [], now=NOW)
    s.sync_sources([("wire", "http://127.0.0.1/moved.xml")])
    assert s.source_state("wire").etag is None
    s.close()


def test_concurrent_commits_of_the_same_item_store_it_once(db_url):
    stores = [fresh_store(db_url) for _ in range(2)]
    results = []

    def commit(st: Store) -> None:
        results.append(st.commit_poll("wire", OK, [NewItem(item(7), True, HIT)], [("hook", wants_all)], NOW))

    threads = [threading.Thread(target=commit, args=(st,)) for st in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(r.stored) for r in results) == 1
    assert stores[0].counts()["pending"] == 1
    for st in stores:
        st.close()


def test_hits_keep_score_terms_and_severity_and_old_rows_read_as_the_default(db_url):
    s = fresh_store(db_url)
    hits = (WatchlistHit("nuclear-tests", 6.5, ("nuclear test", "yield"), "critical"),
            WatchlistHit("drills", 1.0, ("exercise",), "info"))
    s.commit_poll("wire", OK, [NewItem(item(1), True, hits)], [("hook", wants_all)], NOW)
    (d,) = s.due_deliveries(NOW)
    assert d.hits == hits
    with s.engine.begin() as c:  # an alert written before severities existed
        c.execute(text("update alerts set hits = :h"),
                  {"h": '[{"name": "missile-tests", "score": 2.0, "terms": ["launch"]}]'})
    (d,) = s.due_deliveries(NOW)
    assert d.hits == (WatchlistHit("missile-tests", 2.0, ("launch",), "high"),)
    s.close()


def test_channels_get_outbox_rows_only_for_hits_they_accept(db_url):
    s = fresh_store(db_url)
    channels = [ChannelConfig(name="all", url="json://h/"),
                ChannelConfig(name="high-up", url="json://h/", min_severity="high"),
                ChannelConfig(name="critical", url="json://h/", min_severity="critical"),
                ChannelConfig(name="drills-only", url="json://h/", watchlists=["drills"]),
                ChannelConfig(name="drills-high", url="json://h/", watchlists=["drills"], min_severity="high")]
    info = (WatchlistHit("drills", 1.0, ("exercise",), "info"),)
    high = (WatchlistHit("missile-tests", 2.0, ("launch",), "high"),)
    both = (*info, WatchlistHit("nuclear-tests", 3.0, ("nuclear test",), "critical"))
    s.commit_poll("wire", OK, [NewItem(item(1), True, info), NewItem(item(2), True, high),
                               NewItem(item(3), True, both)],
                  [(c.name, c.accepts) for c in channels], NOW)
    got = sorted((d.title, d.channel) for d in s.due_deliveries(NOW))
    assert got == sorted([
        ("Title 1", "all"), ("Title 1", "drills-only"),
        ("Title 2", "all"), ("Title 2", "high-up"),
        ("Title 3", "all"), ("Title 3", "high-up"), ("Title 3", "critical"), ("Title 3", "drills-only"),
    ])
    s.close()


def _fill(s: Store, n: int) -> None:
    """n items over n minutes on two sources; every 5th is stale, item 0 is a day older."""
    for i in range(n):
        seen = NOW - timedelta(days=1) if i == 0 else NOW + timedelta(minutes=i // 2)  # ties in time
        s.commit_poll("wire" if i % 2 else "other", OK,
                      [NewItem(item(i, published=seen), i % 5 != 4)], now=seen)


def test_iter_items_reads_in_time_order_in_batches(db_url):
    s = fresh_store(db_url)
    _fill(s, 23)
    got = list(s.iter_items(NOW - timedelta(hours=1), batch_size=4))
    assert [g.item.guid for g in got] == [f"g{i}" for i in range(1, 23)]  # g0 is before 'since'
    assert [g.first_seen for g in got] == sorted(g.first_seen for g in got)
    first = got[0]
    assert (first.source, first.item.title, first.item.summary, first.fresh) == ("wire", "Title 1", "Summary 1", True)
    assert first.item.published == NOW and first.story_id
    everything = list(s.iter_items(NOW - timedelta(days=2), batch_size=5))
    assert [g.item.guid for g in everything] == [f"g{i}" for i in range(23)]
    assert [g.fresh for g in everything] == [i % 5 != 4 for i in range(23)]
    assert list(s.iter_items(NOW + timedelta(days=1))) == []
    s.close()


def test_readonly_store_reads_but_cannot_write(db_url):
    s = fresh_store(db_url)
    _fill(s, 3)
    s.close()
    ro = Store.open_readonly(db_url)
    assert ro.schema_problem() is None
    assert [g.item.guid for g in ro.iter_items(NOW - timedelta(days=2))] == ["g0", "g1", "g2"]
    with pytest.raises(Exception, match="(?i)read.?only"):
        ro.sync_sources([("new", "http://127.0.0.1/new.xml")])
    ro.close()
    assert fresh_store(db_url).counts()["sources"] == 2


def test_readonly_store_reports_a_missing_file_or_schema_and_creates_nothing(tmp_path, db_url):
    with pytest.raises(DatabaseError, match="no database at"):
        Store.open_readonly(f"sqlite:///{tmp_path}/none/m.db")
    assert not (tmp_path / "none").exists()
    empty = Store(db_url)
    with empty.engine.begin() as c:  # a database that exists but was never migrated
        c.execute(text("create table unrelated (x integer)"))
    empty.close()
    ro = Store.open_readonly(db_url)
    assert "has no schema yet" in ro.schema_problem()
    ro.close()
    s = fresh_store(db_url)
    with s.engine.begin() as c:
        c.execute(text("update alembic_version set version_num = '0000'"))
    s.close()
    ro = Store.open_readonly(db_url)
    problem = ro.schema_problem()
    assert "newer than this monitor knows" in problem  # '0000' is no revision it knows
    ro.close()
