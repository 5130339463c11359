"""Stories in the real store (SQLite and PostgreSQL): copies of one story from several outlets
merge into one story with one alert that lists every outlet; different events stay apart; the
fingerprints live in the database (restarts, replicas, the 0002 backfill)."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from conftest import SEEDS
from sqlalchemy import select
from sqlalchemy.orm import Session

from monitor import dedupe
from monitor.model import FetchResult, Item, WatchlistHit
from monitor.store import (
    MIGRATIONS,
    BandRow,
    DeliveryRow,
    FingerprintRow,
    ItemRow,
    NewItem,
    PollCommit,
    SourceRow,
    Store,
    StoryPolicy,
    StoryRow,
    _Copies,
    _hour,
    _keys_of,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
OK = FetchResult(url="http://127.0.0.1/feed.xml", status="ok", http_status=200)
HIT = (WatchlistHit("strategic-deployments", 2.0, ("deploy strategic weapons",)),)
TITLE_000 = "US Ready to Further Deploy Strategic Weapons in South Korea to Counter North"
TITLE_002 = "US Vows to Deploy Strategic Assets to Korean Peninsula After North's Nuclear Law"
ORIG_LINK = "https://sputnik.example/20161020/us-south-korea-strategic-weapons-1046556.html"
REPOST_LINK = "https://www.repost.example/news/2016/10/us-ready-to-deploy-strategic-weapons-korea/"
SOURCES = [("sputnik", "http://127.0.0.1/sputnik.xml"), ("reposter", "http://127.0.0.1/reposter.xml"),
           ("almanar", "http://127.0.0.1/almanar.xml"), ("third", "http://127.0.0.1/third.xml")]
OUTLET_ORIG, OUTLET_REPOST = "sputnik (sputnik.example)", "reposter (repost.example)"


def seed(n: str) -> str:
    return next(SEEDS.glob(f"{n}_*.txt")).read_text(encoding="utf-8")


def _original_text() -> str:
    paras: list[str] = []
    for line in seed("000").splitlines():
        p = line.strip()
        if p and not p.startswith("This story first appeared") and p not in paras:
            paras.append(p)
    return "\n".join(paras)


def make(guid: str, link: str | None, title: str, text: str, published: datetime | None) -> Item:
    return Item(guid=guid, link=link, canonical_link=link, title=title, summary=text, content="",
                published=published)


def original(published: datetime = NOW - timedelta(minutes=50), guid: str = "orig", link: str = ORIG_LINK) -> Item:
    """Article 000 as its first outlet has it (each paragraph once, no credit line)."""
    return make(guid, link, TITLE_000, _original_text(), published)


def repost(published: datetime = NOW - timedelta(minutes=20), guid: str = "repost",
           link: str = REPOST_LINK) -> Item:
    """Article 000 verbatim as reposted: doubled paragraph, credit line, a site suffix on the title."""
    return make(guid, link, TITLE_000 + " | Repost Daily", seed("000"), published)


def later_event(published: datetime = NOW - timedelta(minutes=35)) -> Item:
    """Article 002: the same topic, a later and different event, with its page boilerplate."""
    return make("later", "https://almanar.example/story/us-vows-deploy-strategic-assets", TITLE_002, seed("002"),
                published)


def wants_all(_hit: WatchlistHit) -> bool:
    return True


CHANNELS = [("hook", wants_all), ("mail", wants_all)]
REPOSTS = StoryPolicy(notify_on_repost=True)


def fresh_store(url: str) -> Store:
    s = Store(url)
    s.upgrade()
    s.sync_sources(SOURCES)
    return s


def story_of(s: Store, item_ids: list[int]) -> set[int]:
    with Session(s.engine) as db:
        return set(db.scalars(select(ItemRow.story_id).where(ItemRow.id.in_(item_ids))))


def deliveries(s: Store) -> list[tuple[str, str, str]]:
    """Every outbox row as (channel, kind, status), sorted."""
    with Session(s.engine) as db:
        return sorted(tuple(r) for r in db.execute(select(DeliveryRow.channel, DeliveryRow.kind, DeliveryRow.status)))


def send_all(s: Store) -> None:
    for d in s.due_deliveries(NOW + timedelta(days=30), ignore_backoff=True):
        s.mark_sent(d.id, NOW)


# ---------------------------------------------------------------- merging and alerts

def test_a_repost_from_another_source_joins_the_story_and_does_not_realert(db_url):
    s = fresh_store(db_url)
    first = s.commit_poll("sputnik", OK, [NewItem(original(), True, HIT)], CHANNELS, NOW)
    assert first.alerts == 1 and not first.stored[0].joined and first.stored[0].alerted
    second = s.commit_poll("reposter", OK, [NewItem(repost(), True, HIT)], CHANNELS, NOW + timedelta(minutes=1))
    (st,) = second.stored
    assert second.alerts == 0 and st.joined and not st.alerted
    assert st.story_id == first.stored[0].story_id
    assert s.counts()["alerts"] == 1
    due = s.due_deliveries(NOW + timedelta(minutes=1))
    assert sorted(d.channel for d in due) == ["hook", "mail"]
    for d in due:  # the alert lists every outlet known when it is read, first seen first
        assert d.kind == "alert" and d.title == TITLE_000 and d.source == "sputnik"
        assert d.outlets == (OUTLET_ORIG, OUTLET_REPOST)
    # notify_on_repost is off by default: a new outlet after the alert went out adds nothing
    send_all(s)
    third = s.commit_poll("third", OK, [NewItem(repost(guid="t", link="https://third.example/a"), True, HIT)],
                          CHANNELS, NOW + timedelta(minutes=2))
    assert third.stored[0].story_id == st.story_id and third.alerts == 0
    assert s.due_deliveries(NOW + timedelta(days=1), ignore_backoff=True) == []
    assert deliveries(s) == [("hook", "alert", "sent"), ("mail", "alert", "sent")]
    s.close()


def test_copies_in_one_poll_make_one_story_and_one_alert(db_url):
    s = fresh_store(db_url)
    out = s.commit_poll("reposter", OK, [NewItem(original(guid="a", link="https://repost.example/a"), True, HIT),
                                         NewItem(repost(), True, HIT)], CHANNELS, NOW)
    assert len({x.story_id for x in out.stored}) == 1 and out.alerts == 1
    assert [x.joined for x in out.stored] == [False, True]
    s.close()


BRIEF = make("brief", "https://wire.example/quake", "Quake hits Chile's north coast, two dead",
             "A magnitude 6.8 earthquake struck off northern Chile on Tuesday, killing two people and damaging "
             "homes in the port city of Antofagasta, officials said.", NOW - timedelta(hours=3))
OTHER_BRIEF = make("other-brief", "https://paper.example/chile-quake", "Strong quake hits northern Chile, two dead",
                   "Two people died when a strong magnitude 6.8 earthquake shook northern Chile on Tuesday, "
                   "damaging homes in the port of Antofagasta, the emergency office said.", NOW - timedelta(hours=1))


def test_another_outlets_own_brief_of_the_event_joins_its_story(db_url):
    s = fresh_store(db_url)
    first = s.commit_poll("sputnik", OK, [NewItem(BRIEF, True, HIT)], CHANNELS, NOW)
    s.close()
    s = fresh_store(db_url)  # found through the database (its word bands), not a cache
    second = s.commit_poll("reposter", OK, [NewItem(OTHER_BRIEF, True, HIT)], CHANNELS, NOW + timedelta(minutes=1))
    assert second.stored[0].joined and second.stored[0].story_id == first.stored[0].story_id
    assert s.counts()["alerts"] == 1
    with Session(s.engine) as db:
        stored = db.get(FingerprintRow, first.stored[0].id)
        assert stored.words == dedupe.fingerprint(BRIEF.title, BRIEF.text).words != b""
    s.close()


def test_seed_000_and_seed_002_stay_separate_stories(db_url):
    s = fresh_store(db_url)
    a = s.commit_poll("sputnik", OK, [NewItem(original(), True, HIT)], CHANNELS, NOW)
    b = s.commit_poll("almanar", OK, [NewItem(later_event(), True, HIT)], CHANNELS, NOW + timedelta(minutes=1))
    c = s.commit_poll("reposter", OK, [NewItem(repost(), True, HIT)], CHANNELS, NOW + timedelta(minutes=2))
    assert not b.stored[0].joined and b.alerts == 1
    assert b.stored[0].story_id != a.stored[0].story_id
    assert c.stored[0].story_id == a.stored[0].story_id  # the repost still finds the right one
    assert s.counts()["alerts"] == 2
    outlets = {d.title: d.outlets for d in s.due_deliveries(NOW + timedelta(minutes=2))}
    assert outlets == {TITLE_000: (OUTLET_ORIG, OUTLET_REPOST), TITLE_002: ("almanar (almanar.example)",)}
    s.close()


def test_items_outside_the_window_open_a_new_story(db_url):
    s = fresh_store(db_url)
    first = s.commit_poll("sputnik", OK, [NewItem(original(NOW), True, HIT)], CHANNELS, NOW + timedelta(minutes=5))
    story = first.stored[0].story_id
    # the same text five days later with a three-day window: another story, alerted on its own
    five = NOW + timedelta(days=5)
    narrow = s.commit_poll("reposter", OK, [NewItem(repost(five), True, HIT)], CHANNELS, five,
                           StoryPolicy(window=timedelta(days=3)))
    assert not narrow.stored[0].joined and narrow.stored[0].story_id != story and narrow.alerts == 1
    # thirteen days after the first copy (eight after the second) is outside the default window
    late_at = NOW + timedelta(days=13)
    late = s.commit_poll("almanar", OK, [NewItem(original(late_at, "late", "https://almanar.example/late"), True,
                                                 HIT)], CHANNELS, late_at)
    assert late.stored[0].story_id not in (story, narrow.stored[0].story_id) and late.alerts == 1
    # an item's time is its published date, not when it was polled: a copy published on the
    # first day but first seen thirteen days later joins the first story
    old = s.commit_poll("third", OK, [NewItem(repost(NOW + timedelta(hours=1), "old", "https://third.example/o"),
                                              False)], now=late_at)
    assert old.stored[0].story_id == story
    s.close()


def test_a_near_identical_copy_days_later_joins_within_the_window(db_url):
    s = fresh_store(db_url)
    first = s.commit_poll("sputnik", OK, [NewItem(original(NOW), True, HIT)], CHANNELS, NOW)
    five = NOW + timedelta(days=5)  # beyond NEAR_DAYS: only near-identical texts join
    paras = list(dict.fromkeys(_original_text().splitlines()))
    fair = make("fair", "https://third.example/fair", TITLE_000, "\n".join(paras[:5]), five)
    other = s.commit_poll("third", OK, [NewItem(fair, True, HIT)], CHANNELS, five)
    assert other.stored[0].story_id != first.stored[0].story_id and other.alerts == 1
    # the full text five days later joins the first story (its nearest copy), not the fair copy's
    same = s.commit_poll("reposter", OK, [NewItem(repost(five), True, HIT)], CHANNELS, five)
    assert same.stored[0].story_id == first.stored[0].story_id and same.alerts == 0
    s.close()


def test_a_story_whose_first_copy_did_not_match_alerts_when_a_matching_copy_joins(db_url):
    s = fresh_store(db_url)
    teaser = make("teaser", "https://sputnik.example/teaser", TITLE_000,
                  _original_text()[:700].rsplit(" ", 1)[0] + "… Read more", NOW - timedelta(minutes=50))
    first = s.commit_poll("sputnik", OK, [NewItem(teaser, True, ())], CHANNELS, NOW)
    assert first.alerts == 0 and s.counts()["alerts"] == 0
    full = s.commit_poll("reposter", OK, [NewItem(repost(), True, HIT)], CHANNELS, NOW + timedelta(minutes=1))
    (st,) = full.stored
    assert st.joined and st.alerted and full.alerts == 1 and st.story_id == first.stored[0].story_id
    due = s.due_deliveries(NOW + timedelta(minutes=1))
    assert sorted(d.channel for d in due) == ["hook", "mail"]
    for d in due:  # the alert is the matching copy's, and it lists both outlets
        assert d.link == REPOST_LINK and d.source == "reposter" and d.hits == HIT
        assert d.outlets == (OUTLET_ORIG, OUTLET_REPOST)
    # a further matching copy does not alert the story again
    again = s.commit_poll("third", OK, [NewItem(original(guid="x", link="https://third.example/x"), True, HIT)],
                          CHANNELS, NOW + timedelta(minutes=2))
    assert again.alerts == 0 and s.counts()["alerts"] == 1
    s.close()


def test_a_stale_matching_copy_does_not_alert_the_story(db_url):
    s = fresh_store(db_url)
    s.commit_poll("sputnik", OK, [NewItem(original(), True, ())], CHANNELS, NOW)
    out = s.commit_poll("reposter", OK, [NewItem(repost(), False, HIT)], CHANNELS, NOW + timedelta(minutes=1))
    assert out.stored[0].joined and out.alerts == 0 and s.counts()["alerts"] == 0
    s.close()


# ---------------------------------------------------------------- notify_on_repost

def test_notify_on_repost_sends_one_update_per_channel_after_the_alert_went_out(db_url):
    s = fresh_store(db_url)
    s.commit_poll("sputnik", OK, [NewItem(original(), True, HIT)], CHANNELS, NOW, REPOSTS)
    send_all(s)
    # another copy from the same outlet is not a new outlet
    same = s.commit_poll("sputnik", OK, [NewItem(repost(guid="amp", link="https://sputnik.example/amp/1"), True, HIT)],
                         CHANNELS, NOW + timedelta(minutes=1), REPOSTS)
    assert same.stored[0].joined
    assert s.due_deliveries(NOW + timedelta(days=1), ignore_backoff=True) == []
    # a new outlet: one update per channel of the alert
    s.commit_poll("reposter", OK, [NewItem(repost(), True, HIT)], CHANNELS, NOW + timedelta(minutes=2), REPOSTS)
    due = s.due_deliveries(NOW + timedelta(minutes=2))
    assert sorted((d.channel, d.kind) for d in due) == [("hook", "update"), ("mail", "update")]
    for d in due:
        assert d.outlets == (OUTLET_ORIG, OUTLET_REPOST) and d.title == TITLE_000
    assert s.counts()["alerts"] == 1
    # a third outlet adds no more updates, whether the first ones are pending or sent
    s.commit_poll("third", OK, [NewItem(original(guid="t", link="https://third.example/t"), True, HIT)],
                  CHANNELS, NOW + timedelta(minutes=3), REPOSTS)
    assert len(s.due_deliveries(NOW + timedelta(minutes=3))) == 2
    send_all(s)
    s.commit_poll("almanar", OK, [NewItem(original(guid="f", link="https://almanar.example/f"), True, HIT)],
                  CHANNELS, NOW + timedelta(minutes=4), REPOSTS)
    assert s.due_deliveries(NOW + timedelta(days=1), ignore_backoff=True) == []
    assert deliveries(s) == [("hook", "alert", "sent"), ("hook", "update", "sent"),
                             ("mail", "alert", "sent"), ("mail", "update", "sent")]
    s.close()


def test_notify_on_repost_adds_no_update_while_the_alert_is_pending(db_url):
    s = fresh_store(db_url)
    s.commit_poll("sputnik", OK, [NewItem(original(), True, HIT)], CHANNELS, NOW, REPOSTS)
    s.commit_poll("reposter", OK, [NewItem(repost(), True, HIT)], CHANNELS, NOW + timedelta(minutes=1), REPOSTS)
    due = s.due_deliveries(NOW + timedelta(minutes=1))
    assert sorted((d.channel, d.kind) for d in due) == [("hook", "alert"), ("mail", "alert")]
    assert all(d.outlets == (OUTLET_ORIG, OUTLET_REPOST) for d in due)  # the pending alert lists it instead
    # only the channel whose alert went out gets an update for a later outlet
    hook = next(d for d in due if d.channel == "hook")
    s.mark_sent(hook.id, NOW)
    s.commit_poll("third", OK, [NewItem(original(guid="t", link="https://third.example/t"), True, HIT)],
                  CHANNELS, NOW + timedelta(minutes=2), REPOSTS)
    assert deliveries(s) == [("hook", "alert", "sent"), ("hook", "update", "pending"), ("mail", "alert", "pending")]
    s.close()


# ---------------------------------------------------------------- state lives in the database

def test_a_restarted_store_still_merges(db_url):
    a = fresh_store(db_url)
    first = a.commit_poll("sputnik", OK, [NewItem(original(), True, HIT)], CHANNELS, NOW)
    a.close()
    b = Store(db_url)  # a new process would build exactly this: nothing carried over in memory
    b.upgrade()
    out = b.commit_poll("reposter", OK, [NewItem(repost(), True, HIT)], CHANNELS, NOW + timedelta(hours=1))
    assert out.stored[0].joined and out.stored[0].story_id == first.stored[0].story_id and out.alerts == 0
    b.close()


def test_a_poll_written_in_capped_multi_row_inserts_stores_the_same_rows(tmp_path, monkeypatch):
    """On SQLite a poll's rows go in as multi-row INSERTs of at most SQLITE_MAX_ROWS rows (the
    statement journal's bound): split into many statements, the same rows and stories result."""
    def scenario(path) -> tuple[list, list, list]:
        s = fresh_store(f"sqlite:///{path}")
        s.commit_poll("reposter", OK, [NewItem(x, True, HIT) for x in (
            original(guid="a", link="https://repost.example/a"), repost(), later_event(), BRIEF, OTHER_BRIEF)],
            CHANNELS, NOW)
        with Session(s.engine) as db:
            items = db.execute(sa.text("SELECT guid, story_id, title FROM items ORDER BY id")).all()
            prints = db.execute(sa.text("SELECT i.guid, f.signature, f.words FROM fingerprints f "
                                        "JOIN items i ON i.id = f.item_id ORDER BY i.id")).all()
            bands = db.execute(sa.text("SELECT i.guid, b.band_key, b.at_hour, b.sketch FROM story_bands b "
                                       "JOIN items i ON i.id = b.item_id ORDER BY i.id, b.band_key")).all()
        s.close()
        return items, prints, bands

    whole = scenario(tmp_path / "whole.db")
    monkeypatch.setattr("monitor.store.SQLITE_MAX_ROWS", 3)
    capped = scenario(tmp_path / "capped.db")
    assert capped == whole
    assert len(whole[0]) == 5 and len({story for _, story, _ in whole[0]}) == 3  # 000 twice, 002, the quake twice
    assert min(len(rows) for rows in whole) > 3  # so each table's rows did go in several statements


def test_iter_stories_lists_every_item_in_exactly_one_story(db_url):
    s = fresh_store(db_url)
    day = timedelta(days=1)
    ids: dict[str, int] = {}

    def put(source: str, item: Item, now: datetime, hits=HIT) -> None:
        (st,) = s.commit_poll(source, OK, [NewItem(item, True, hits)], CHANNELS, now).stored
        ids[item.guid] = st.id

    put("sputnik", original(NOW - 20 * day), NOW - 20 * day)  # a story entirely before 'since'
    put("sputnik", original(NOW - 2 * day, "o2", "https://sputnik.example/2"), NOW - 2 * day)
    put("reposter", repost(NOW - 2 * day + timedelta(hours=1)), NOW)  # joins it after 'since'
    put("almanar", later_event(NOW), NOW, ())
    for n in range(5):
        put("third", make(f"u{n}", f"https://third.example/{n}", f"Unrelated headline number {n}",
                          f"Item {n} is about something else entirely: the harvest of {n} fields.", NOW), NOW)
    since = NOW - timedelta(hours=1)
    listed = list(s.iter_stories(since, batch_size=2))
    links = [i.link for st in listed for i in st.items]
    assert len(links) == len(set(links))
    assert len(listed) == 7 and all(st.items for st in listed)
    merged = next(st for st in listed if len(st.items) == 2)
    assert [i.source for i in merged.items] == ["sputnik", "reposter"]  # first seen first, including the old one
    assert merged.alerted and merged.title == TITLE_000
    assert ORIG_LINK not in links  # the story from 20 days ago has no item since
    everything = list(s.iter_stories(batch_size=3))
    all_links = [i.link for st in everything for i in st.items]
    assert sorted(all_links) == sorted(set(all_links)) and len(all_links) == len(ids) == 9
    assert len(everything) == 8
    with Session(s.engine) as db:  # the listing agrees with the items' story column
        by_story = {st.id: sorted(i.link for i in st.items) for st in everything}
        for story_id, links_of in by_story.items():
            assert sorted(db.scalars(select(ItemRow.link).where(ItemRow.story_id == story_id))) == links_of
    s.close()


#: ``story_bands`` as revisions 0002 to 0007 made it (with a time), and as 0008 made it (none).
BANDS_0007 = sa.table("story_bands", sa.column("band_key"), sa.column("at"), sa.column("item_id"))
BANDS_0008 = sa.table("story_bands", sa.column("band_key"), sa.column("item_id"))
BANDS_0009 = sa.table("story_bands", sa.column("band_key"), sa.column("item_id"), sa.column("at_hour"))
#: The band rows of the older revisions: their table, and an item's values besides key and id.
BAND_LAYOUTS = {"0007": (BANDS_0007, lambda item: {"at": item.published}), "0008": (BANDS_0008, lambda item: {}),
                "0009": (BANDS_0009, lambda item: {"at_hour": _hour(item.published)})}


def store_at_revision(url: str, revision: str) -> Store:
    """A Store whose database has the schema of Alembic ``revision`` (rows are then written as
    that revision's code wrote them, and ``upgrade()`` goes on from there)."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    s = Store(url)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with s.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return s


def test_migration_0002_backfills_fingerprints_of_items_stored_under_0001(db_url):
    s = store_at_revision(db_url, "0001")
    now = datetime.now(UTC).replace(microsecond=0)  # the backfill looks 14 days back from the real clock
    recent, headline, old = (original(now - timedelta(hours=2)),
                             make("photo", "https://sputnik.example/photo", TITLE_000, "", now - timedelta(hours=1)),
                             make("old", "https://sputnik.example/old", TITLE_002, seed("002"),
                                  now - timedelta(days=30)))
    rows: dict[str, tuple[int, int]] = {}  # guid: (item id, story id)
    with Session(s.engine) as db, db.begin():  # rows as the 0001 code wrote them
        # a Core insert names only these columns (the ORM row would name later revisions' too)
        src_id = db.execute(SourceRow.__table__.insert().values(
            name="sputnik", url="http://127.0.0.1/sputnik.xml", consecutive_failures=0, items_total=3,
            created_at=now).returning(SourceRow.id)).scalar_one()
        for item, seen in ((recent, now - timedelta(minutes=30)), (headline, now - timedelta(minutes=20)),
                           (old, now - timedelta(days=30))):
            story = StoryRow(title=item.title, created_at=seen)
            db.add(story)
            db.flush()
            row = ItemRow(source_id=src_id, story_id=story.id, guid=item.guid, guid_key=item.guid, link=item.link,
                          canonical_link=item.link, link_key=item.guid, title=item.title, summary=item.summary,
                          content="", published_at=item.published, first_seen_at=seen, fresh=True)
            db.add(row)
            db.flush()
            rows[item.guid] = (row.id, story.id)
    s.upgrade()
    with Session(s.engine) as db:
        fps = {r.item_id: r for r in db.scalars(select(FingerprintRow))}
        bands = {}
        for b in db.scalars(select(BandRow)):
            bands.setdefault(b.item_id, set()).add(b.band_key)
    assert set(fps) == {rows["orig"][0], rows["photo"][0]}  # the 30-day-old item stays a story of its own
    want = dedupe.fingerprint(recent.title, recent.text)
    fp = fps[rows["orig"][0]]
    assert (fp.story_id, fp.size, fp.signature, fp.lead_key, fp.title_key, fp.title) == (
        rows["orig"][1], want.size, want.signature, want.lead_key, want.title_key, want.title)
    assert fp.at == recent.published  # published before it was first seen
    assert bands == {rows["orig"][0]: set(want.bands)}
    photo = fps[rows["photo"][0]]
    assert photo.size == 0 and photo.title_key == want.title_key and photo.at == headline.published
    # stories keep merging across the upgrade
    s.sync_sources(SOURCES)
    out = s.commit_poll("reposter", OK, [NewItem(repost(now - timedelta(minutes=5)), True, HIT)], CHANNELS, now)
    assert out.stored[0].joined and out.stored[0].story_id == rows["orig"][1]
    assert out.alerts == 1  # the old story never alerted (0001 had no alert for it): the match alerts it now
    s.close()


def insert_as_before(s: Store, items: list[Item], now: datetime, words: bool,
                     bands: Callable[[dedupe.Fingerprint], Iterable[int]], band_layout: str = "0007") -> dict[str, int]:
    """Store ``items`` (one source, a story each) with Core inserts naming only the columns of
    an older revision, their fingerprints (with ``words`` or without) and the band keys
    ``bands(fingerprint)`` in the ``story_bands`` of revision ``band_layout`` (0002-0007, 0008
    or 0009; ``BAND_LAYOUTS``); returns {guid: item id}."""
    table, values = BAND_LAYOUTS[band_layout]
    ids: dict[str, int] = {}
    with Session(s.engine) as db, db.begin():
        src_id = db.execute(SourceRow.__table__.insert().values(
            name="sputnik", url="http://127.0.0.1/sputnik.xml", consecutive_failures=0, items_total=len(items),
            created_at=now).returning(SourceRow.id)).scalar_one()
        for item in items:
            story_id = db.execute(StoryRow.__table__.insert().values(title=item.title, created_at=item.published)
                                  .returning(StoryRow.id)).scalar_one()
            item_id = db.execute(ItemRow.__table__.insert().values(
                source_id=src_id, story_id=story_id, guid=item.guid, guid_key=item.guid, link=item.link,
                canonical_link=item.link, link_key=item.guid, title=item.title, summary=item.summary, content="",
                published_at=item.published, first_seen_at=item.published, fresh=True).returning(ItemRow.id)).scalar_one()
            fp = dedupe.fingerprint(item.title, item.text)
            db.execute(FingerprintRow.__table__.insert().values(
                item_id=item_id, story_id=story_id, at=item.published, size=fp.size, signature=fp.signature,
                lead_key=fp.lead_key, title_key=fp.title_key, title=fp.title,
                **({"words": fp.words or None} if words else {})))
            db.execute(table.insert(), [{"band_key": b, "item_id": item_id, **values(item)} for b in bands(fp)])
            ids[item.guid] = item_id
    return ids


def test_migration_0007_refreshes_recent_fingerprints_with_content_words(db_url):
    s = store_at_revision(db_url, "0006")
    now = datetime.now(UTC).replace(microsecond=0)  # the refresh looks 14 days back from the real clock
    recent = make("brief", "https://wire.example/quake", BRIEF.title, BRIEF.text, now - timedelta(hours=2))
    old = make("old", "https://wire.example/old", BRIEF.title, BRIEF.text, now - timedelta(days=30))
    # rows as the 0006 code wrote them: shingle bands, no words
    ids = insert_as_before(s, [recent, old], now, words=False, bands=lambda fp: dedupe.band_keys(fp.values()))
    s.upgrade()
    want = dedupe.fingerprint(recent.title, recent.text)
    with Session(s.engine) as db:
        rows = {r.item_id: r for r in db.scalars(select(FingerprintRow))}
        bands: dict[int, set[int]] = {}
        for b in db.scalars(select(BandRow)):
            bands.setdefault(b.item_id, set()).add(b.band_key)
    assert rows[ids["brief"]].words == want.words != b"" and bands[ids["brief"]] == set(want.bands)
    assert rows[ids["old"]].words is None  # older than 14 days: kept as it was
    assert ids["old"] not in bands  # and 0008 makes band rows for the last 14 days only
    # another outlet's brief now finds the refreshed one
    s.sync_sources(SOURCES)
    later = make("other-brief", OTHER_BRIEF.link, OTHER_BRIEF.title, OTHER_BRIEF.text, now - timedelta(hours=1))
    out = s.commit_poll("reposter", OK, [NewItem(later, True, HIT)], CHANNELS, now)
    with Session(s.engine) as db:
        assert out.stored[0].joined and out.stored[0].story_id == db.get(ItemRow, ids["brief"]).story_id
    s.close()


def assert_stories_still_merge(s: Store, ids: dict[str, int], article: Item, brief: Item, now: datetime) -> None:
    """After an upgrade: a repost of the stored ``article`` and another outlet's brief an hour
    after the stored ``brief`` join their stories."""
    s.sync_sources(SOURCES)
    later = make("other-brief", OTHER_BRIEF.link, OTHER_BRIEF.title, OTHER_BRIEF.text,
                 brief.published + timedelta(hours=1))
    out = s.commit_poll("reposter", OK, [NewItem(repost(now - timedelta(hours=1)), True, HIT), NewItem(later, True, HIT)],
                        CHANNELS, now)
    with Session(s.engine) as db:
        assert [(st.joined, st.story_id) for st in out.stored] == [
            (True, db.get(ItemRow, ids[article.guid]).story_id), (True, db.get(ItemRow, ids[brief.guid]).story_id)]


def test_migration_0008_makes_the_recent_band_rows_again_from_the_stored_fingerprints(db_url):
    s = store_at_revision(db_url, "0007")
    now = datetime.now(UTC).replace(microsecond=0)  # the refill looks 14 days back from the real clock
    article = original(now - timedelta(hours=3))
    brief = make("brief", "https://wire.example/quake", BRIEF.title, BRIEF.text, now - timedelta(hours=2))
    old = make("old", "https://sputnik.example/old", TITLE_002, seed("002"), now - timedelta(days=30))
    # rows as the 0007 code wrote them: 16 bands (keys none of which is kept), with a time
    ids = insert_as_before(s, [article, brief, old], now, words=True, bands=lambda _fp: range(1, 17))
    s.upgrade()
    with Session(s.engine) as db:
        bands: dict[int, set[int]] = {}
        for b in db.scalars(select(BandRow)):
            bands.setdefault(b.item_id, set()).add(b.band_key)
    for item in (article, brief):
        want = dedupe.fingerprint(item.title, item.text)
        assert len(want.bands) == (dedupe.WORD_BANDS if want.words else dedupe.BANDS)
        assert bands[ids[item.guid]] == set(want.bands)
    assert ids["old"] not in bands  # first seen 30 days ago: outside any window, pruned anyway
    assert_stories_still_merge(s, ids, article, brief, now)
    s.close()


def test_migration_0009_makes_the_recent_band_rows_again_with_their_hour(db_url):
    s = store_at_revision(db_url, "0008")
    now = datetime.now(UTC).replace(microsecond=0)  # the refill looks 14 days back from the real clock
    article = original(now - timedelta(hours=3, minutes=20))
    brief = make("brief", "https://wire.example/quake", BRIEF.title, BRIEF.text, now - timedelta(days=3, minutes=1))
    old = make("old", "https://sputnik.example/old", TITLE_002, seed("002"), now - timedelta(days=30))
    # rows as the 0008 code wrote them: band rows without a time, a brief's 16 word bands of 3
    # (keys none of which is kept)
    ids = insert_as_before(s, [article, brief, old], now, words=True, bands=lambda _fp: range(1, 17),
                           band_layout="0008")
    s.upgrade()
    with Session(s.engine) as db:
        rows = [(b.item_id, b.band_key, b.at_hour) for b in db.scalars(select(BandRow))]
    for item in (article, brief):
        want = dedupe.fingerprint(item.title, item.text)
        assert len(want.bands) == (dedupe.WORD_BANDS if want.words else dedupe.BANDS)
        assert sorted((k, h) for i, k, h in rows if i == ids[item.guid]) == sorted(
            (k, _hour(item.published)) for k in set(want.bands))
    assert ids["old"] not in {i for i, *_ in rows}  # first seen 30 days ago: outside any window
    assert _hour(article.published) == int(article.published.timestamp()) // 3600
    assert_stories_still_merge(s, ids, article, brief, now)
    s.close()


def test_migration_0010_keeps_the_band_rows_and_new_ones_hold_their_sketch(db_url):
    s = store_at_revision(db_url, "0009")
    now = datetime.now(UTC).replace(microsecond=0)
    article = original(now - timedelta(hours=3))
    brief = make("brief", "https://wire.example/quake", BRIEF.title, BRIEF.text, now - timedelta(hours=5))
    # rows as the 0009 code wrote them: band rows with their hour, no sketch
    ids = insert_as_before(s, [article, brief], now, words=True, bands=lambda fp: fp.bands, band_layout="0009")
    s.upgrade()
    with Session(s.engine) as db:
        assert {b.sketch for b in db.scalars(select(BandRow))} == {None}  # kept, unsketched: loaded as before
    assert_stories_still_merge(s, ids, article, brief, now)
    with Session(s.engine) as db:  # the new rows hold their fingerprint's sketch
        new = {b.item_id: b.sketch for b in db.scalars(select(BandRow).where(BandRow.item_id.not_in(ids.values())))}
        signatures = {f.item_id: f.signature for f in db.scalars(select(FingerprintRow))}
    assert len(new) == 2 and all(sketch == dedupe.sketch(signatures[i]) and len(sketch) == 16 for i, sketch in new.items())
    s.close()


def test_stored_refs_leaves_out_an_item_its_sketch_shows_is_no_copy():
    """A stored item found by a band key alone, whose sketch agrees with the new item's in
    fewer than SKETCH_MIN_SAME lanes (its Jaccard estimate is below JACCARD), is not loaded;
    kept are: a near copy, a row without a sketch (made before 0010), one found by the lead
    key too (a copy cut short joins by containment), and for a brief, one within WORD_NEAR
    (briefs join by their word sets too)."""
    h = _hour(NOW)
    article = dedupe.fingerprint(TITLE_000, _original_text(), NOW)
    brief = dedupe.fingerprint(BRIEF.title, BRIEF.text, NOW)
    assert article.bands and not article.words and brief.words
    for fp in (article, brief):
        other = fp.sketch_bits ^ ((1 << 128) - 1)  # agrees in no lane
        copies = _Copies()
        copies.by_key = {("band", fp.bands[0]): [1, 2, 3, 4, 5], ("lead", fp.lead_key): [4]}
        copies.hours = {1: h - 1, 2: h - 1, 3: h - 1, 4: h - 1, 5: h - 20}
        copies.sketches = {1: fp.sketch_bits, 2: other, 4: other, 5: other}
        keys = _keys_of(fp)
        kept = sorted(ref for ref, *_ in copies.stored_refs(fp, keys, timedelta(days=7), 20))
        assert kept == ([1, 3, 4] if fp is article else [1, 2, 3, 4])
        assert dedupe.sketch_same(fp.sketch_bits, other) == 0 < dedupe.SKETCH_MIN_SAME


def test_stored_refs_ranks_candidates_by_shared_keys_then_nearness_and_leaves_out_unlikely_ones():
    """Of the stored items sharing a key with a new one, those compared (at most ``limit``):
    the most keys shared first, then those within NEAR_DAYS, then the nearest; left out: those
    outside the window (band keys) or NEAR_DAYS (lead and title keys), and those further than
    NEAR_DAYS sharing a single key (only a near-identical text joins from there, and it shares
    most of its band keys)."""
    h = _hour(NOW)
    copies = _Copies()
    copies.by_key = {("band", 1): [1, 2, 5], ("band", 2): [1, 3, 4, 5, 6], ("band", 3): [1],
                     ("lead", "L"): [7, 9], ("title", "T"): [8]}
    copies.hours = {1: h - 96, 2: h - 1, 3: h - 30, 4: h - 72, 5: h - 120, 6: h - 9 * 24, 7: h - 72, 8: h - 10,
                    9: h + 2}
    keys = [("band", 1), ("band", 2), ("band", 3), ("lead", "L"), ("title", "T")]
    fp = dedupe.fingerprint("", "", NOW)
    # 1: three keys, four days away; 5: two keys, five days; then one key each: 2 (an hour
    # away), 9 (its lead, two hours ahead), 8 (its title, 10 hours), 3 (30 hours). Left out:
    # 4 (one band key, three days), 6 (nine days: outside the window), 7 (its lead, three days)
    def refs(window: timedelta, limit: int) -> list[int]:
        return [ref for ref, *_ in copies.stored_refs(fp, keys, window, limit)]

    assert refs(timedelta(days=7), 10) == [1, 5, 2, 9, 8, 3]
    assert refs(timedelta(days=7), 3) == [1, 5, 2]
    # a 4-day window leaves 5 out; a 1-day one, 1 and 3 too (a lead or title key still reaches NEAR_DAYS)
    assert refs(timedelta(days=4), 10) == [1, 2, 9, 8, 3]
    assert refs(timedelta(days=1), 10) == [2, 9, 8]
    # and by which kind of key each is in reach (``candidates`` checks the time exactly for that
    # kind); 8 with a band key too shares two: before 5, which is further
    copies.by_key[("band", 1)].append(8)
    assert copies.stored_refs(fp, keys, timedelta(days=7), 10) == [
        (1, True, False), (8, True, True), (5, True, False), (2, True, False), (9, False, True), (3, True, False)]


def test_commit_polls_writes_polls_in_order_in_one_transaction_and_rolls_back_a_failing_one_alone(db_url):
    s = fresh_store(db_url)

    def broken(_hit: WatchlistHit) -> bool:
        raise RuntimeError("channel filter broke")

    later = later_event()
    outcomes = s.commit_polls([
        PollCommit("sputnik", OK, [NewItem(original(), True, HIT)], CHANNELS, NOW),
        # fails after its item, fingerprint and bands are written (when its alert is routed)
        PollCommit("almanar", OK, [NewItem(later, True, HIT)], [("hook", broken)], NOW),
        PollCommit("nobody", OK, [NewItem(make("x", "https://x.example/1", "X", "x", NOW), True, ())], (), NOW),
        PollCommit("reposter", OK, [NewItem(repost(), True, HIT)], CHANNELS, NOW),
    ])
    first, failed, unknown, last = outcomes
    assert isinstance(failed, RuntimeError) and "channel filter broke" in str(failed)
    assert isinstance(unknown, KeyError)
    assert first.alerts == 1 and not first.stored[0].joined
    # the later poll met the earlier one's item, in the same transaction
    assert last.stored[0].joined and last.stored[0].story_id == first.stored[0].story_id and last.alerts == 0
    with Session(s.engine) as db:
        assert sorted(db.scalars(select(ItemRow.guid))) == ["orig", "repost"]  # nothing of the failed poll
        stored = set(db.scalars(select(ItemRow.id)))
        assert set(db.scalars(select(BandRow.item_id))) == stored == set(db.scalars(select(FingerprintRow.item_id)))
        assert {r.name: r.items_total or 0 for r in db.scalars(select(SourceRow))} == {
            "sputnik": 1, "reposter": 1, "almanar": 0, "third": 0}
    assert deliveries(s) == [("hook", "alert", "pending"), ("mail", "alert", "pending")]
    s.close()


def _group_polls() -> list[PollCommit]:
    """Polls that meet each other: reposts across sources, an alerted story joined by two new
    outlets (updates), a link another source has, a guid this source has, a copy within a poll."""
    brief = "North Korea fired two ballistic missiles into the sea on Tuesday, Seoul's military said."
    return [
        PollCommit("reposter", OK, [NewItem(repost(), True, HIT),
                                    # the original's link under another guid: an exact copy, dropped
                                    NewItem(original(guid="orig-again"), True, HIT),
                                    NewItem(make("b1", "https://reposter.example/b1", "Missiles fired", brief,
                                                 NOW - timedelta(minutes=9)), True, HIT)], CHANNELS, NOW, REPOSTS),
        PollCommit("almanar", OK, [NewItem(later_event(), True, HIT),
                                   NewItem(make("b2", "https://almanar.example/b2", "Missiles fired", brief,
                                                NOW - timedelta(minutes=8)), True, HIT),
                                   NewItem(make("b3", "https://almanar.example/b3", "Missiles fired", brief,
                                                NOW - timedelta(minutes=7)), True, ())], CHANNELS, NOW, REPOSTS),
        # another outlet of the alerted story (one update per channel in all, not one each)
        PollCommit("third", OK, [NewItem(repost(guid="third-copy", link="https://third.example/copy"), True, HIT),
                                 # the same guid as the reposter's item: another source, so stored
                                 NewItem(make("b1", "https://third.example/b1", "Missiles fired", brief,
                                              NOW - timedelta(minutes=6)), True, HIT)], CHANNELS, NOW, REPOSTS),
        # its own guid again (dropped), and a new item
        PollCommit("reposter", OK, [NewItem(make("b1", "https://reposter.example/b1-moved", "x", brief, NOW), True, HIT),
                                    NewItem(replace(later_event(), guid="later-2", link="https://reposter.example/later",
                                                    canonical_link="https://reposter.example/later"), True, HIT)],
                   CHANNELS, NOW, REPOSTS),
    ]


def _summary(s: Store, outcomes: list) -> tuple:
    """What a group of polls left, independent of row ids."""
    with Session(s.engine) as db:
        guid_of = {i: f"{src}/{g}" for i, g, src in db.execute(
            select(ItemRow.id, ItemRow.guid, SourceRow.name).join(SourceRow, SourceRow.id == ItemRow.source_id))}
        stories: dict[int, set[str]] = {}
        for item_id, story in db.execute(select(ItemRow.id, ItemRow.story_id)):
            stories.setdefault(story, set()).add(guid_of[item_id])
        alerts = db.execute(sa.text("SELECT a.item_id, d.channel, d.kind, d.status FROM deliveries d "
                                    "JOIN alerts a ON a.id = d.alert_id")).all()
        totals = {r.name: r.items_total or 0 for r in db.scalars(select(SourceRow))}
    return (sorted(sorted(g) for g in stories.values()),
            sorted((guid_of[i], channel, kind, status) for i, channel, kind, status in alerts),
            totals,
            [[(guid_of[st.id], st.joined, st.alerted) for st in o.stored] + [o.alerts] for o in outcomes])


def test_a_group_of_polls_written_as_one_leaves_what_committing_them_one_by_one_leaves(db_url, tmp_path):
    """The group path plans and writes several polls as one; its result must be the sequential one."""
    def prepared(url: str) -> Store:
        s = fresh_store(url)
        s.commit_poll("sputnik", OK, [NewItem(original(), True, HIT)], CHANNELS, NOW - timedelta(minutes=30), REPOSTS)
        send_all(s)  # its alert went out: new outlets of its story get an update
        return s

    one_by_one = prepared(f"sqlite:///{tmp_path}/sequential.db")
    expected = _summary(one_by_one, [one_by_one.commit_polls([poll])[0] for poll in _group_polls()])
    one_by_one.close()
    grouped = prepared(db_url)
    planned: list[int] = []
    commit_group = grouped._commit_group
    grouped._commit_group = lambda s, polls: planned.append(len(polls)) or commit_group(s, polls)
    got = _summary(grouped, grouped.commit_polls(_group_polls()))
    grouped.close()
    assert planned == [4]  # as one group (not poll by poll, the fallback)
    assert got == expected
    stories, rows, totals, outcomes = got
    # and that result is the right one
    assert sorted(["sputnik/orig", "reposter/repost", "third/third-copy"]) in stories
    assert sorted(["reposter/b1", "almanar/b2", "almanar/b3", "third/b1"]) in stories
    assert sorted(["almanar/later", "reposter/later-2"]) in stories
    assert [r for r in rows if r[2] == "update"] == [("sputnik/orig", "hook", "update", "pending"),
                                                      ("sputnik/orig", "mail", "update", "pending")]
    assert totals == {"sputnik": 1, "reposter": 3, "almanar": 3, "third": 2}
    assert [o[-1] for o in outcomes] == [1, 1, 0, 0]  # the brief's alert, the later event's


def race(stores: list[Store], copies: list[tuple[str, Item]], now: datetime) -> list:
    """Commit one poll per (source, item) in its own thread, each on its own Store, all at once."""
    barrier = threading.Barrier(len(copies))
    results: list = []
    errors: list[BaseException] = []

    def poll(st: Store, source: str, item: Item) -> None:
        try:
            barrier.wait(10)
            results.append(st.commit_poll(source, OK, [NewItem(item, True, HIT)], CHANNELS, now))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=poll, args=(st, *copy)) for st, copy in zip(stores, copies, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(results) == len(copies)
    return results


def test_concurrent_polls_with_copies_of_one_story_end_in_one_story(db_url):
    stores = [fresh_store(db_url), Store(db_url)]  # two replicas: two engines, nothing shared in memory
    for round_ in range(3):  # each round a month apart: three separate stories
        at = NOW + timedelta(days=30 * round_)
        copies = [("sputnik", original(at, f"o{round_}", f"https://sputnik.example/{round_}")),
                  ("reposter", repost(at + timedelta(minutes=5), f"r{round_}", f"https://repost.example/{round_}"))]
        results = race(stores, copies, at + timedelta(minutes=10))
        assert len({r.stored[0].story_id for r in results}) == 1, f"round {round_}"
        assert sum(r.alerts for r in results) == 1
    assert len(list(stores[0].iter_stories())) == 3
    assert stores[1].counts()["alerts"] == 3
    for st in stores:
        st.close()


@pytest.mark.parametrize("gap", [timedelta(days=1), timedelta(days=4)])
def test_two_launches_on_different_days_are_two_stories(db_url, gap):
    from test_dedupe import LAUNCH_1, LAUNCH_2

    s = fresh_store(db_url)
    title = "North Korea fires ballistic missile into sea, South Korea says"
    a = s.commit_poll("sputnik", OK, [NewItem(make("l1", "https://sputnik.example/l1", title, LAUNCH_1, NOW), True,
                                              HIT)], CHANNELS, NOW)
    b = s.commit_poll("reposter", OK, [NewItem(make("l2", "https://repost.example/l2", title, LAUNCH_2, NOW + gap),
                                               True, HIT)], CHANNELS, NOW + gap)
    assert a.stored[0].story_id != b.stored[0].story_id and b.alerts == 1
    s.close()


def test_pruning_drops_the_story_keys_of_items_older_than_the_window(db_url):
    s = fresh_store(db_url)
    old = s.commit_poll("sputnik", OK, [NewItem(original(NOW - timedelta(days=10)), True, HIT)], CHANNELS,
                        NOW - timedelta(days=10))
    brief = s.commit_poll("third", OK, [NewItem(make("b", "https://third.example/b", BRIEF.title, BRIEF.text,
                                                     NOW - timedelta(days=9)), True, HIT)], CHANNELS,
                          NOW - timedelta(days=9))
    photo = s.commit_poll("third", OK, [NewItem(make("p", "https://third.example/p", "Photos: the parade", "",
                                                     NOW - timedelta(days=9)), True, HIT)], CHANNELS,
                          NOW - timedelta(days=9))  # a headline-only page: a fingerprint without band rows
    recent = s.commit_poll("almanar", OK, [NewItem(later_event(), True, HIT)], CHANNELS, NOW)
    old_ids = [old.stored[0].id, brief.stored[0].id, photo.stored[0].id]
    s.PRUNE_CHUNK = 1  # one item per transaction: the loop must go on until the cut-off

    def bands() -> dict[int, int]:
        with Session(s.engine) as db:
            out: dict[int, int] = {}
            for item_id in db.scalars(select(BandRow.item_id)):
                out[item_id] = out.get(item_id, 0) + 1
            return out

    def fingerprints() -> set[int]:
        with Session(s.engine) as db:
            return set(db.scalars(select(FingerprintRow.item_id)))

    before = bands()
    assert before[old_ids[0]] == dedupe.BANDS and before[old_ids[1]] == dedupe.WORD_BANDS
    assert old_ids[2] not in before and fingerprints() == {*old_ids, recent.stored[0].id}
    assert s.prune_story_keys(NOW - timedelta(days=8)) == (dedupe.BANDS + dedupe.WORD_BANDS, 3)
    assert bands() == {recent.stored[0].id: dedupe.BANDS}
    assert fingerprints() == {recent.stored[0].id}
    assert s.prune_story_keys(NOW - timedelta(days=8)) == (0, 0)  # nothing left to prune
    with Session(s.engine) as db:  # the items stay, in their stories
        assert {i.id: i.story_id for i in db.scalars(select(ItemRow).where(ItemRow.id.in_(old_ids)))} == {
            old.stored[0].id: old.stored[0].story_id, brief.stored[0].id: brief.stored[0].story_id,
            photo.stored[0].id: photo.stored[0].story_id}
    # the recent story still merges
    out = s.commit_poll("reposter", OK, [NewItem(make("again", "https://repost.example/002", TITLE_002, seed("002"),
                                                     NOW), True, HIT)], CHANNELS, NOW + timedelta(minutes=1))
    assert out.stored[0].story_id == recent.stored[0].story_id
    s.close()


def test_a_copy_finds_its_story_behind_many_newer_items_with_the_same_headline(db_url):
    """Candidates are the stored items sharing the most keys (a near copy shares band keys),
    not merely the newest of those sharing one: a recurring headline cannot crowd it out."""
    s = fresh_store(db_url)
    first = s.commit_poll("sputnik", OK, [NewItem(original(NOW - timedelta(hours=5)), True, HIT)], CHANNELS,
                          NOW - timedelta(hours=5))
    crowd = [NewItem(make(f"c{k}", f"https://third.example/{k}", TITLE_000,
                          f"Item {k} under the same headline is about the harvest in field number {k} of the "
                          f"valley, and nothing else that the first story said at all, farmers told us.",
                          NOW - timedelta(hours=4)), True, ()) for k in range(Store.MAX_CANDIDATES + 20)]
    s.commit_poll("third", OK, crowd, CHANNELS, NOW - timedelta(hours=4))
    out = s.commit_poll("reposter", OK, [NewItem(repost(), True, HIT)], CHANNELS, NOW)
    assert out.stored[0].joined and out.stored[0].story_id == first.stored[0].story_id
    s.close()
