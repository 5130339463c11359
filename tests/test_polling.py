"""Adaptive polling: the pure policy, and the pipeline's scheduling against a real HTTP server
and real databases (next poll, interval, failure backoff, Retry-After, unchanged bodies)."""
from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from feedserver import FeedServer, rss

from monitor.config import load_config
from monitor.fetch import Fetcher
from monitor.matcher import Matcher
from monitor.model import FetchResult, Item
from monitor.notify import Notifier
from monitor.pipeline import Pipeline
from monitor.polling import Bounds, failure_delay, jittered, next_interval, published_rate
from monitor.store import NewItem, PollCommit, PollSchedule, Store

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
B = Bounds(timedelta(minutes=2), timedelta(hours=1))


# ------------------------------------------------------------------ the policy

def test_interval_follows_the_publishing_rate_within_bounds():
    # 48 items a day: one every 30 min -> poll every 15 min
    assert next_interval(timedelta(minutes=10), B, 3, 48.0, None) == timedelta(minutes=15)
    # a torrent: never faster than min_interval
    assert next_interval(timedelta(minutes=10), B, 5, 5000.0, None) == B.lo
    # one item a week: never slower than max_interval
    assert next_interval(timedelta(minutes=10), B, 1, 1 / 7, None) == B.hi
    # nothing new: a quarter longer each time, up to the cap
    assert next_interval(timedelta(minutes=20), B, 0, 48.0, None) == timedelta(minutes=25)
    assert next_interval(timedelta(minutes=55), B, 0, 48.0, None) == B.hi


def test_server_hints_are_a_floor_but_never_beyond_the_cap():
    assert next_interval(timedelta(minutes=5), B, 2, 480.0, timedelta(minutes=30)) == timedelta(minutes=30)
    assert next_interval(timedelta(minutes=5), B, 2, 480.0, timedelta(days=1)) == B.hi


def test_failures_back_off_exponentially_up_to_max_and_retry_after_wins():
    delays = [failure_delay(n, B) for n in range(1, 8)]
    assert delays[:5] == [timedelta(minutes=m) for m in (2, 4, 8, 16, 32)]
    assert delays[5:] == [B.hi, B.hi]  # capped: the source is retried forever, never disabled
    assert failure_delay(1, B, retry_after=7200) == timedelta(hours=2)


def test_published_rate_and_jitter():
    times = [NOW - timedelta(hours=h) for h in range(0, 24)]  # 24 items over a day
    assert published_rate(times, NOW) == pytest.approx(24 / (23 / 24), rel=0.01)
    assert published_rate([NOW, None], NOW) is None
    assert published_rate([NOW - timedelta(days=30), NOW - timedelta(days=31)], NOW) is None  # too old
    rng = random.Random(1)
    spread = {jittered(timedelta(minutes=10), rng) for _ in range(50)}
    assert len(spread) > 40 and all(timedelta(minutes=9) <= d <= timedelta(minutes=11) for d in spread)


# ------------------------------------------------------------------ the pipeline

def items(n: int, start: datetime, every: timedelta) -> list[dict]:
    return [dict(title=f"Quiet story {k}", link=f"https://q.example/{k}", guid=f"q{k}", description=f"Text {k}",
                 published=start - k * every) for k in range(n)]


class Rig:
    def __init__(self, tmp_path: Path, db_url: str, srv: FeedServer, sources: dict[str, str], **fetch: object):
        doc = {"database": {"url": db_url},
               "fetch": {"timeout": "5s", "min_interval": "2m", "max_interval": "1h", **fetch},
               "sources": [{"name": n, "url": u, "interval": "10m"} for n, u in sources.items()],
               "watchlists": [{"name": "w", "query": "missile"}]}
        (tmp_path / "monitor.yaml").write_text(yaml.safe_dump(doc))
        self.cfg = load_config(tmp_path / "monitor.yaml")
        self.store = Store(self.cfg.database.url)
        self.store.upgrade()
        self.store.sync_sources([(s.name, s.url) for s in self.cfg.sources])

    def poll(self, name: str):
        src = next(s for s in self.cfg.sources if s.name == name)

        async def go():
            async with Fetcher(self.cfg.fetch) as f:
                p = Pipeline(self.cfg, self.store, Matcher(self.cfg.matcher_watchlists()), f, Notifier([]))
                return await p.poll(src)

        return asyncio.run(go())

    def state(self, name: str):
        return self.store.source_state(name)


@pytest.fixture
def srv():
    with FeedServer() as s:
        yield s


def test_poll_schedules_the_next_one_from_the_feed_and_keeps_it(tmp_path, db_url, srv):
    now = datetime.now(UTC)
    busy = srv.feed("/busy.xml", rss("Busy", "https://b.example/", items(20, now, timedelta(minutes=20))))
    rig = Rig(tmp_path, db_url, srv, {"busy": busy})
    report = rig.poll("busy")
    assert report.status == "ok" and report.new == 20
    st = rig.state("busy")
    # ~72 items a day -> every ~10 min (half the gap), jittered by 10 %
    assert 60 < st.items_per_day < 80 and 540 <= st.poll_interval <= 720
    assert st.next_poll_at is not None
    assert timedelta(seconds=st.poll_interval * 0.85) < st.next_poll_at - now < timedelta(seconds=st.poll_interval * 1.15)
    again = rig.poll("busy")  # 304: nothing new, so a quarter slower
    assert again.status == "not_modified"
    assert rig.state("busy").poll_interval == pytest.approx(st.poll_interval * 1.25)
    health = {h.name: h for h in rig.store.source_health()}["busy"]
    assert health.ok and health.items_total == 20 and health.next_poll_at == rig.state("busy").next_poll_at
    rig.store.close()


def test_ttl_slows_a_source_down(tmp_path, db_url, srv):
    now = datetime.now(UTC)
    body = rss("Slow", "https://s.example/", items(20, now, timedelta(minutes=5)), extra_head="")
    body = body.replace(b"<description>Slow</description>", b"<description>Slow</description><ttl>45</ttl>", 1)
    url = srv.feed("/ttl.xml", body)
    rig = Rig(tmp_path, db_url, srv, {"ttl": url})
    rig.poll("ttl")
    assert rig.state("ttl").poll_interval == 45 * 60  # the feed says 45 min; the rate alone would say 2 min
    rig.store.close()


def test_failures_back_off_and_never_disable_the_source(tmp_path, db_url, srv):
    url = srv.raw("/down.xml", 500, b"boom")
    rig = Rig(tmp_path, db_url, srv, {"down": url})
    delays = []
    for _ in range(7):
        before = datetime.now(UTC)
        report = rig.poll("down")
        assert report.status == "error"
        delays.append((rig.state("down").next_poll_at - before).total_seconds())
    assert rig.state("down").consecutive_failures == 7
    expected = [120, 240, 480, 960, 1920, 3600, 3600]
    for got, want in zip(delays, expected, strict=True):
        assert want * 0.85 <= got <= want * 1.15
    (h,) = rig.store.source_health(["down"])
    assert not h.ok and h.last_error == "HTTP 500" and h.failing_since is not None
    rig.store.close()


def test_retry_after_pushes_the_next_poll(tmp_path, db_url, srv):
    url = srv.raw("/busy.xml", 429, b"", {"Retry-After": "5400"})
    rig = Rig(tmp_path, db_url, srv, {"limited": url})
    before = datetime.now(UTC)
    report = rig.poll("limited")
    assert report.status == "error" and "retry after 5400 s" in report.error
    assert rig.state("limited").next_poll_at - before >= timedelta(seconds=5400)
    rig.store.close()


def test_the_same_body_without_validators_is_not_parsed_again(tmp_path, db_url, srv):
    now = datetime.now(UTC)
    url = srv.raw("/plain.xml", 200, rss("Plain", "https://p.example/", items(5, now, timedelta(hours=1))),
                  {"Content-Type": "application/rss+xml"})
    rig = Rig(tmp_path, db_url, srv, {"plain": url})
    assert rig.poll("plain").status == "ok"
    assert rig.poll("plain").status == "unchanged"
    rig.store.close()


def test_monitor_sources_prints_health(tmp_path, srv):
    now = datetime.now(UTC)
    good = srv.feed("/good.xml", rss("Good", "https://g.example/", items(3, now, timedelta(hours=1))))
    bad = srv.raw("/bad.xml", 503, b"")
    rig = Rig(tmp_path, f"sqlite:///{tmp_path}/m.db", srv, {"good": good, "bad": bad, "later": good + "?x"})
    rig.poll("good")
    rig.poll("bad")
    rig.store.close()

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "monitor", "sources", *args, "--config",
                               str(tmp_path / "monitor.yaml")], capture_output=True, text=True, cwd=ROOT, timeout=60)

    out = cli()
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:2] == ["source", "state"]
    good_line = next(line for line in lines if line.startswith("good "))
    bad_line = next(line for line in lines if line.startswith("bad "))
    assert " ok " in good_line and "in " in good_line
    assert " failing " in bad_line and "1 failures since" in bad_line and "HTTP 503" in bad_line
    assert lines[-1].startswith("3 sources, 1 failing")
    rows = [__import__("json").loads(line) for line in cli("--json", "--failing").stdout.splitlines()]
    assert [(r["source"], r["ok"], r["consecutive_failures"]) for r in rows] == [("bad", False, 1)]


def slow_down(store: Store, method: str) -> list[int]:
    """Make ``store.method(polls)`` take 0.25 s more (a busy database: polls keep arriving
    meanwhile); returns the list of its calls' batch sizes."""
    calls: list[int] = []
    write = getattr(store, method)

    def slow(polls):
        calls.append(len(polls))
        time.sleep(0.25)
        return write(polls)

    setattr(store, method, slow)
    return calls


def test_quiet_polls_arriving_while_a_batch_is_written_wait_for_it_in_one_batch(tmp_path, db_url, srv):
    """A busy database makes bigger quiet batches, not a queue of them; every poll is recorded."""
    names = [f"q{k}" for k in range(30)]
    rig = Rig(tmp_path, db_url, srv, {n: f"http://127.0.0.1:9/{n}.xml" for n in names})
    calls = slow_down(rig.store, "record_quiet_polls")
    now = datetime.now(UTC)
    ok = FetchResult(url="u", status="not_modified", http_status=304, etag='"e"')

    async def go():
        async with Fetcher(rig.cfg.fetch) as f:
            p = Pipeline(rig.cfg, rig.store, Matcher(rig.cfg.matcher_watchlists()), f, Notifier([]))
            waiting = []
            for name in names:  # one quiet poll every 30 ms for 0.9 s
                waiting.append(asyncio.ensure_future(p._quiet_poll(name, ok, now, PollSchedule(now + timedelta(hours=1)))))
                await asyncio.sleep(0.03)
            await asyncio.gather(*waiting)

    asyncio.run(go())
    assert sum(calls) == 30
    assert len(calls) <= 6, calls  # one batch per write (~8 polls each), not one per 20 ms
    assert all(rig.state(n).etag == '"e"' for n in names)
    rig.store.close()


def test_polls_arriving_while_a_commit_is_written_go_together_in_the_next_one(tmp_path, db_url, srv):
    """Group commit: a busy database makes fewer, bigger transactions; every poll gets its own
    outcome, and one poll's error stays its own."""
    names = [f"n{k}" for k in range(30)]
    rig = Rig(tmp_path, db_url, srv, {n: f"http://127.0.0.1:9/{n}.xml" for n in names})
    groups = slow_down(rig.store, "commit_polls")
    now = datetime.now(UTC)
    ok = FetchResult(url="u", status="ok", http_status=200, etag='"e"')

    def poll(name: str) -> PollCommit:
        item = Item(guid=f"{name}-1", link=f"https://{name}.example/1", canonical_link=f"https://{name}.example/1",
                    title=f"Story {name} of its own", summary=f"Words only {name} uses, {name} again.", content="",
                    published=now)
        return PollCommit("ghost" if name == "n7" else name, ok, [NewItem(item, True, ())], (), now)

    async def go():
        async with Fetcher(rig.cfg.fetch) as f:
            p = Pipeline(rig.cfg, rig.store, Matcher(rig.cfg.matcher_watchlists()), f, Notifier([]))
            waiting = []
            for name in names:  # one poll every 30 ms for 0.9 s
                waiting.append(asyncio.ensure_future(p._commit(poll(name))))
                await asyncio.sleep(0.03)
            return await asyncio.gather(*waiting, return_exceptions=True)

    outcomes = asyncio.run(go())
    assert sum(groups) == 30
    assert groups[0] == 1 and len(groups) <= 6, groups  # the first at once, then one group per write
    assert isinstance(outcomes[7], KeyError)  # a source the store does not know: that poll alone fails
    for name, outcome in zip(names, outcomes, strict=True):
        if name != "n7":
            assert [st.item.guid for st in outcome.stored] == [f"{name}-1"] and not outcome.stored[0].joined
            assert rig.state(name).etag == '"e"'
    rig.store.close()


def test_a_polls_cpu_work_runs_on_the_work_threads_sized_to_the_machine(tmp_path, srv):
    """Parsing, the known-key lookup and the analysis run on the daemon's work threads (one per
    usable CPU, at least 2), not on the event loop's default executor."""
    from monitor.batch import usable_cpus
    from monitor.daemon import work_threads

    now = datetime.now(UTC)
    rig = Rig(tmp_path, f"sqlite:///{tmp_path}/m.db", srv,
              {"wire": srv.feed("/w.xml", rss("Wire", "https://w.example/", items(4, now, timedelta(hours=1))))})
    ran: list[str] = []

    async def go(work):
        async with Fetcher(rig.cfg.fetch) as f:
            p = Pipeline(rig.cfg, rig.store, Matcher(rig.cfg.matcher_watchlists()), f, Notifier([]), work=work)
            for name in ("_fresh_items", "_analyse"):
                real = getattr(p, name)

                def spy(*args, _real=real, _name=name):
                    ran.append(f"{_name} on {threading.current_thread().name.split('_')[0]}")
                    return _real(*args)

                setattr(p, name, spy)
            return await p.poll(rig.cfg.sources[0])

    with work_threads() as work:
        assert work._max_workers == max(2, usable_cpus())
        report = asyncio.run(go(work))
    assert (report.status, report.new) == ("ok", 4)
    assert ran == ["_fresh_items on poll-work", "_analyse on poll-work"]
    rig.store.close()


def rdf(base: str, titles: list[str]) -> bytes:
    """An RSS 1.0 (RDF) feed: not for the lxml fast path, feedparser parses it."""
    entries = "".join(f'<item rdf:about="{base}{k}"><title>{t}</title><link>{base}{k}</link>'
                      f"<description>{t}, officials said.</description></item>" for k, t in enumerate(titles))
    return ('<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
            f'xmlns="http://purl.org/rss/1.0/"><channel rdf:about="{base}"><title>R</title><link>{base}</link>'
            f"<description>d</description></channel>{entries}</rdf:RDF>").encode()


def test_plain_feeds_never_start_the_parse_pool_and_the_first_feed_needing_feedparser_does(tmp_path, srv):
    from monitor.daemon import PARSE_POOL_MIN_SOURCES, parse_pool

    now = datetime.now(UTC)
    sources = {"plain": srv.feed("/plain.xml", rss("Plain", "https://p.example/", items(5, now, timedelta(hours=1)))),
               "rdf1": srv.feed("/rdf1.xml", rdf("https://r1.example/", ["Missile test", "Naval drill"])),
               "rdf2": srv.feed("/rdf2.xml", rdf("https://r2.example/", ["Bomber flight", "Carrier visit", "Talks"]))}
    rig = Rig(tmp_path, f"sqlite:///{tmp_path}/m.db", srv, sources)

    async def go(pool):
        async with Fetcher(rig.cfg.fetch) as f:
            p = Pipeline(rig.cfg, rig.store, Matcher(rig.cfg.matcher_watchlists()), f, Notifier([]), parse_pool=pool)
            by_name = {s.name: s for s in rig.cfg.sources}
            plain = await p.poll(by_name["plain"])
            started_by_plain = pool._warm is not None
            first = await p.poll(by_name["rdf1"])  # starts the pool; parsed in a thread meanwhile
            deadline = time.monotonic() + 60
            while not pool.wanted() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            second = await p.poll(by_name["rdf2"])  # parsed in a worker
            return plain, started_by_plain, first, second

    with parse_pool(PARSE_POOL_MIN_SOURCES) as pool:
        if pool is None:
            pytest.skip("one usable CPU: no parse pool")
        plain, started_by_plain, first, second = asyncio.run(go(pool))
        assert (plain.status, plain.new) == ("ok", 5) and not started_by_plain
        assert (first.status, first.new) == ("ok", 2) and (second.status, second.new) == ("ok", 3)
        assert pool.wanted() and len(pool._processes) >= 2
    rig.store.close()
    with sqlite3.connect(tmp_path / "m.db") as db:
        assert {r[0] for r in db.execute("select i.title from items i join sources s on s.id = i.source_id "
                                         "where s.name = 'rdf2'")} == {"Bomber flight", "Carrier visit", "Talks"}


def _story_items(n: int, start: datetime) -> list[dict]:
    """Items with texts of their own, long enough to have band keys; the second a copy of the first."""
    rng = random.Random(5)
    vocab = [f"w{k:03d}" for k in range(400)]
    out = [dict(title=f"Region {k} reports " + " ".join(rng.sample(vocab, 4)), link=f"https://s.example/{k}",
                guid=f"s{k}", description=" ".join(rng.sample(vocab, 40)) + ".",
                published=start - k * timedelta(minutes=7)) for k in range(n)]
    out[1] = dict(out[0], link="https://s.example/copy", guid="copy", published=start - timedelta(minutes=3))
    return out


def _stored_fingerprints(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("select i.guid, i.story_id, f.size, f.signature, f.lead_key, f.title_key, f.title, f.words "
                          "from items i join fingerprints f on f.item_id = i.id order by i.guid").fetchall()


def _kill_workers(pool) -> None:
    # Killing one worker breaks the pool, whose manager then ends and reaps
    # the others: a worker may be gone by the time its turn comes.
    for proc in list(pool._processes.values()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, 9)
        proc.join(10)


@pytest.mark.parametrize("workers", ["up", "killed"])
def test_a_poll_of_many_new_items_has_them_fingerprinted_in_the_parse_pool_and_stores_what_threads_store(
        tmp_path, srv, workers, caplog):
    from monitor import dedupe, pipeline
    from monitor.daemon import PARSE_POOL_MIN_SOURCES, parse_pool

    now = datetime.now(UTC)
    entries = _story_items(pipeline.POOL_FINGERPRINTS + 4, now)
    url = srv.feed("/many.xml", rss("Many", "https://s.example/", entries))

    def run(where: Path, pool):
        where.mkdir()
        rig = Rig(where, f"sqlite:///{where}/m.db", srv, {"many": url})
        submitted: list = []

        async def go():
            async with Fetcher(rig.cfg.fetch) as f:
                p = Pipeline(rig.cfg, rig.store, Matcher(rig.cfg.matcher_watchlists()), f, Notifier([]),
                             parse_pool=pool)
                report = await p.poll(rig.cfg.sources[0])
                return report, p.parse_pool

        if pool is not None:
            submit = pool.submit
            pool.submit = lambda fn, *args, **kw: (submitted.append(fn), submit(fn, *args, **kw))[1]
        report, left = asyncio.run(go())
        rig.store.close()
        return report, left, submitted, _stored_fingerprints(where / "m.db")

    threads = run(tmp_path / "threads", None)
    with parse_pool(PARSE_POOL_MIN_SOURCES) as pool:
        if pool is None:
            pytest.skip("one usable CPU: no parse pool")
        deadline = time.monotonic() + 60
        while not pool.wanted() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.wanted()
        if workers == "killed":
            _kill_workers(pool)
        report, left, submitted, stored = run(tmp_path / "pool", pool)
    assert threads[0].new == report.new == len(entries)
    assert stored == threads[3]  # the same fingerprints, the same stories
    assert len({story for _, story, *_ in stored}) == len(entries) - 1  # the copy joined its original
    assert dedupe.fingerprints in submitted  # sent to the workers
    if workers == "up":
        assert left is pool and "parse pool broken" not in caplog.text
    else:  # made in a thread instead, and the pipeline stops using the pool
        assert left is None and "parse pool broken" in caplog.text


def test_the_parse_pool_starts_its_workers_when_first_wanted_and_parses_in_them():
    from monitor.daemon import PARSE_POOL_MIN_SOURCES, parse_pool
    from monitor.parse import parse_feed

    with parse_pool(PARSE_POOL_MIN_SOURCES - 1) as none:
        assert none is None  # a handful of sources: threads only
    body = rss("Feed", "https://f.example/", items(3, datetime.now(UTC), timedelta(hours=1)))
    with parse_pool(PARSE_POOL_MIN_SOURCES) as pool:
        if pool is None:
            pytest.skip("one usable CPU: no parse pool")
        time.sleep(0.3)
        assert not pool._processes  # nothing wanted it yet: no worker costs a cycle of plain feeds CPU
        deadline = time.monotonic() + 60
        while not pool.wanted() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.wanted()  # started in the background by the first call
        pids = {p.pid for p in pool._processes.values()}
        assert len(pids) >= 2 and os.getpid() not in pids
        feed = pool.submit(parse_feed, body, "https://f.example/feed.xml", "application/rss+xml", False).result(60)
    assert [e.title for e in feed.entries] == ["Quiet story 0", "Quiet story 1", "Quiet story 2"]
