"""Several replicas on one database: claimed sources with leases, heartbeats, delivery leases
(store level, on SQLite and PostgreSQL), and three daemons as separate processes sharing 300
sources on the PostgreSQL of this machine (skipped without it)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from feedserver import FeedServer, rss
from sqlalchemy import text

from monitor.model import FetchResult
from monitor.store import PollCommit, PollSchedule, Store

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)
NAMES = [f"s{k}" for k in range(10)]


@pytest.fixture
def store(db_url):
    s = Store(db_url)
    s.upgrade()
    s.sync_sources([(n, f"http://127.0.0.1:9/{n}.xml") for n in NAMES], NAMES, now=T0)
    yield s
    s.close()


def names(states) -> set[str]:
    return {st.name for st in states}


def test_claims_are_disjoint_and_bounded(store):
    a = store.claim_sources("a", T0, LEASE, 4)
    b = store.claim_sources("b", T0, LEASE, 100)
    assert len(a) == 4 and len(b) == 6 and not names(a) & names(b)
    assert store.claim_sources("c", T0, LEASE, 100) == []


def test_a_lease_runs_out_unless_heartbeats_renew_it(store):
    held = names(store.claim_sources("a", T0, LEASE, 100))
    assert store.claim_sources("b", T0 + LEASE - timedelta(seconds=1), LEASE, 100) == []
    assert store.heartbeat("a", LEASE, now=T0 + timedelta(seconds=50)) == 10  # renewed to T0 + 110 s
    assert store.claim_sources("b", T0 + timedelta(seconds=100), LEASE, 100) == []
    # "a" stops heartbeating: after its lease, "b" takes every source it held
    assert names(store.claim_sources("b", T0 + timedelta(seconds=111), LEASE, 100)) == held


def test_recording_the_poll_ends_the_lease_and_sets_the_next_poll(store):
    (st,) = store.claim_sources("a", T0, LEASE, 1)
    ok = FetchResult(url="u", status="not_modified", http_status=304)
    store.record_quiet_polls([(st.name, ok, T0, PollSchedule(T0 + timedelta(minutes=5), 300.0))])
    others = names(store.claim_sources("b", T0 + timedelta(seconds=1), LEASE, 100))
    assert st.name not in others and len(others) == 9  # not due again before its next poll
    assert st.name in names(store.claim_sources("c", T0 + timedelta(minutes=5), LEASE, 100))
    assert store.source_state(st.name).next_poll_at == T0 + timedelta(minutes=5)


def test_claims_on_sqlite_in_one_step_statements_are_what_the_orm_claims(tmp_path, monkeypatch):
    """On SQLite claim_sources reads the due states packed into one JSON array and updates the
    leases in one statement; states (NULLs, text, times), order, limit and leases are the ORM
    path's (PostgreSQL's)."""
    import monitor.store as store_module

    def scenario(path, one_step: bool) -> list:
        monkeypatch.setattr(store_module, "SQLITE_ONE_STEP", one_step)
        s = Store(f"sqlite:///{path}")
        s.upgrade()
        s.sync_sources([(n, f"http://127.0.0.1:9/{n}.xml") for n in NAMES], NAMES[:-1], now=T0)  # the last retired
        odd = FetchResult(url="u", status="not_modified", http_status=304, etag='W/"x|\x1f\u00e9"',
                          last_modified="Mon, 23 Nov 2026 11:00:00 GMT")
        s.record_quiet_polls([(NAMES[1], odd, T0, PollSchedule(T0 - timedelta(minutes=1), 300.0, 2.5, "c" * 40)),
                              (NAMES[2], odd, T0, PollSchedule(T0 + timedelta(minutes=1), 60.0)),
                              (NAMES[3], odd, T0, PollSchedule(T0 - timedelta(minutes=3), None))])
        s.record_failure(NAMES[4], FetchResult(url="u", status="error", error="HTTP 500"), T0,
                         schedule=PollSchedule(T0 - timedelta(minutes=2)))
        out = [s.claim_sources("a", T0, LEASE, 4), s.claim_sources("b", T0, LEASE, 100),
               s.claim_sources("c", T0 + timedelta(minutes=2), LEASE, 100)]
        with s.engine.connect() as c:
            out.append([tuple(r) for r in c.execute(text(
                "SELECT name, leased_by, lease_until FROM sources ORDER BY name"))])
        s.close()
        return out

    one_step = scenario(tmp_path / "one.db", True)
    assert one_step == scenario(tmp_path / "orm.db", False)
    monkeypatch.setattr(store_module, "SQLITE_MAX_PARAMS", 5)  # leases set three at a time
    assert one_step == scenario(tmp_path / "chunked.db", True)
    a, b, c, _ = one_step
    # never polled first, then the most overdue; not the retired one, nor one not due yet
    assert [st.name for st in a] == ["s0", "s5", "s6", "s7"] and [st.name for st in b] == ["s8", "s3", "s4", "s1"]
    assert b[1].etag == 'W/"x|\x1f\u00e9"' and b[1].next_poll_at == T0 - timedelta(minutes=3)
    assert b[3].items_per_day == 2.5 and b[3].poll_interval == 300.0 and b[3].body_hash == "c" * 40
    assert b[2].consecutive_failures == 1 and a[0].etag is None and a[0].next_poll_at is None
    assert [st.name for st in c] == ["s0", "s5", "s6", "s7", "s8", "s3", "s4", "s1", "s2"]  # the leases ran out


def test_a_group_commit_and_a_heartbeat_on_the_same_sources_do_not_deadlock(pg_url):
    """A group commit updates several sources' rows in one transaction, and so does the
    heartbeat renewing their leases: were each to take its locks in its own order (the polls'
    order, the table's), PostgreSQL would abort one as a deadlock (seen in CI, with three
    replicas). Both lock their rows in id order, so the heartbeat waits and both succeed."""
    store = Store(pg_url)
    store.upgrade()
    store.sync_sources([(n, f"http://127.0.0.1:9/{n}.xml") for n in NAMES], NAMES, now=T0)
    try:
        assert len(store.claim_sources("a", T0, LEASE, 100)) == 10
        first_written, heartbeat_sent = threading.Event(), threading.Event()
        mark_success = store._mark_success

        def pausing(s, *args):
            out = mark_success(s, *args)
            s.flush()
            if not first_written.is_set():
                first_written.set()  # s9's row is written: let the heartbeat start on the rest
                heartbeat_sent.wait(5)
                time.sleep(0.5)
            return out

        store._mark_success = pausing
        ok = FetchResult(url="u", status="ok", http_status=200)
        polls = [PollCommit(name, ok, [], (), T0, schedule=PollSchedule(T0 + timedelta(minutes=5), 300.0))
                 for name in ("s9", "s0")]
        results: dict[str, object] = {}

        def beat():
            first_written.wait(5)
            heartbeat_sent.set()
            try:
                results["heartbeat"] = store.heartbeat("a", LEASE, now=T0 + timedelta(seconds=1))
            except Exception as e:  # noqa: BLE001 - reported by the assertion below
                results["heartbeat"] = e

        t = threading.Thread(target=beat)
        t.start()
        results["commit"] = store.commit_polls(polls)
        t.join(10)
        assert not isinstance(results["commit"], Exception) and not any(
            isinstance(r, Exception) for r in results["commit"]), results
        assert results["heartbeat"] == 8, results  # s0 and s9 were recorded: their leases ended
    finally:
        store.close()


def test_retiring_a_replica_gives_its_leases_back_at_once(store):
    store.register_replica("a", "host", 1, now=T0)
    held = names(store.claim_sources("a", T0, LEASE, 3))
    store.retire_replica("a", now=T0 + timedelta(seconds=1))
    assert names(store.claim_sources("b", T0 + timedelta(seconds=2), LEASE, 100)) >= held
    (info,) = store.replicas(T0 + timedelta(seconds=2))
    assert info.id == "a" and info.stopped_at is not None and info.sources == 0


def test_sources_not_in_the_config_are_never_claimed(store):
    store.sync_sources([(n, f"http://127.0.0.1:9/{n}.xml") for n in NAMES], NAMES[:3], now=T0)
    assert names(store.claim_sources("a", T0, LEASE, 100)) == set(NAMES[:3])
    store.sync_sources([(n, f"http://127.0.0.1:9/{n}.xml") for n in NAMES], NAMES, now=T0)  # back in the config
    assert len(store.claim_sources("a", T0, LEASE, 100)) == 7


def test_replicas_lists_who_holds_what(store):
    store.register_replica("a", "h1", 11, now=T0)
    store.register_replica("b", "h2", 22, now=T0 + timedelta(seconds=1))
    store.claim_sources("a", T0, LEASE, 4)
    assert store.claim_channel("desk", "b", T0, LEASE)
    got = {r.id: r for r in store.replicas(T0 + timedelta(seconds=2))}
    assert (got["a"].sources, got["a"].channels, got["a"].host, got["a"].pid) == (4, (), "h1", 11)
    assert (got["b"].sources, got["b"].channels) == (0, ("desk",))


def test_one_replica_at_a_time_delivers_a_channel(store):
    assert store.claim_channel("desk", "a", T0, LEASE)
    assert store.claim_channel("desk", "a", T0 + timedelta(seconds=5), LEASE)  # its own: renewed
    assert not store.claim_channel("desk", "b", T0 + timedelta(seconds=10), LEASE)
    assert store.claim_channel("mail", "b", T0 + timedelta(seconds=10), LEASE)  # another channel is free
    store.release_channel("desk", "a")
    assert store.claim_channel("desk", "b", T0 + timedelta(seconds=11), LEASE)
    # a holder that stops renewing loses it when the lease runs out
    assert store.claim_channel("desk", "c", T0 + timedelta(seconds=11) + LEASE + timedelta(seconds=1), LEASE)


def test_outbox_rows_are_claimed_one_by_one_and_a_failure_ends_the_claim(store):
    from monitor.model import Item, WatchlistHit
    from monitor.store import NewItem, RetryPolicy

    hit = (WatchlistHit("missile-tests", 1.0, ("missile",)),)
    items = [NewItem(Item(guid=f"g{k}", link=f"https://wire.example/{k}", canonical_link=f"https://wire.example/{k}",
                          title=f"Missile story {k} about a different launch site number {k}",
                          summary=f"Completely separate report {k} " + " ".join(f"w{k}x{j}" for j in range(30)),
                          content="", published=T0), True, hit) for k in range(6)]
    ok = FetchResult(url="u", status="ok", http_status=200)
    store.commit_poll("s0", ok, items, [("hook", lambda h: True)], T0)
    a = store.due_deliveries(T0, channels=["hook"], limit=4, claim=("a", LEASE))
    b = store.due_deliveries(T0, channels=["hook"], limit=100, claim=("b", LEASE))
    assert len(a) == 4 and len(b) == 2 and not {d.id for d in a} & {d.id for d in b}
    assert store.due_deliveries(T0, channels=["hook"], claim=("c", LEASE)) == []
    # a failed attempt is recorded: its claim ends, and its retry waits for the backoff only
    store.record_failures([a[0].id], "HTTP 500", T0 + timedelta(seconds=30), RetryPolicy(20, timedelta(days=2)), T0)
    store.mark_sent(a[1].id, T0)
    retry = store.due_deliveries(T0 + timedelta(seconds=31), channels=["hook"], claim=("c", LEASE))
    assert [d.id for d in retry] == [a[0].id]
    # "a" dies: the two rows it still holds are someone else's once its lease runs out
    later = store.due_deliveries(T0 + LEASE + timedelta(seconds=1), channels=["hook"], claim=("c", LEASE))
    assert {d.id for d in later} == {d.id for d in a[2:]} | {d.id for d in b}


def test_replicas_claiming_at_the_same_moment_never_share_a_source(db_url):
    store = Store(db_url)
    store.upgrade()
    many = [f"m{k}" for k in range(400)]
    store.sync_sources([(n, f"http://127.0.0.1:9/{n}.xml") for n in many], many, now=T0)
    got: dict[str, list[str]] = defaultdict(list)
    barrier = threading.Barrier(4)

    def claimer(replica: str) -> None:
        own = Store(db_url)
        try:
            barrier.wait()
            for _ in range(20):
                got[replica] += [st.name for st in own.claim_sources(replica, T0, LEASE, 7)]
        finally:
            own.close()

    threads = [threading.Thread(target=claimer, args=(f"r{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    claimed = [n for names_ in got.values() for n in names_]
    assert len(claimed) == len(set(claimed)) == len(many)  # each once, all of them (4 x 20 x 7 > 400)
    assert sum(1 for names_ in got.values() if names_) >= 2  # the work really was shared
    store.close()


# ---------------------------------------------------------------- three daemons as processes

N_SOURCES = 300
INTERVAL = 10  # seconds: sources.min_interval = max_interval
DAEMON_LEASE = 6  # seconds (heartbeat 2 s)


def _feed(k: int, now: float, extra: list[dict] | None = None) -> bytes:
    items = [dict(title=f"Outlet {k} harbour works report", link=f"https://o{k}.example/{k}", guid=f"o{k}",
                  description=f"Report number {k} about the harbour works and the new quay.",
                  published=datetime.fromtimestamp(now - 3600, UTC))]
    return rss(f"Outlet {k}", f"https://o{k}.example/", (extra or []) + items)


def _start(cfg: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ}
    env.pop("MONITOR_DATABASE_URL", None)
    return subprocess.Popen([sys.executable, "-m", "monitor", "run", "--config", str(cfg)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def test_three_replicas_share_the_sources_alert_once_and_survive_a_kill(tmp_path, pg_url, receiver):
    """300 sources, 3 replicas, several cycles: each source polled once per cycle; one story from
    30 outlets (polled by different replicas) alerts once; after a kill -9 the others poll
    what the dead one held."""
    now = time.time()
    missile = dict(title="North Korea test-fires ballistic missile into the sea",
                   link="https://wire-a.example/missile", guid="wire-a-missile",
                   description="North Korea test-fired a ballistic missile into the sea on Monday, the "
                               "South Korean military said. The launch is the third this month.",
                   published=datetime.fromtimestamp(now - 300, UTC))
    outlets = range(1, 31)  # the same story from 30 outlets: with 3 replicas, several of them poll one
    reposts = {k: {**missile, "link": f"https://wire{k}.example/2026/missile?utm_source=x", "guid": f"wire{k}-missile"}
               for k in outlets}
    with FeedServer() as srv:
        urls = {f"s{k}": srv.feed(f"/f/{k}.xml", _feed(k, now)) for k in range(N_SOURCES)}
        cfg = {
            "database": {"url": pg_url},
            "server": {"port": 0},
            "include": [str(ROOT / "config" / "watchlists" / "*.yaml")],
            "fetch": {"concurrency": 20, "per_host": 20, "min_interval": f"{INTERVAL}s",
                      "max_interval": f"{INTERVAL}s"},
            "replicas": {"lease": f"{DAEMON_LEASE}s", "heartbeat": "2s", "claim_every": "0.5s"},
            "delivery": {"interval": "1s"},
            "sources": [{"name": n, "url": u, "interval": f"{INTERVAL}s"} for n, u in urls.items()],
            "channels": [{"name": "hook", "url": receiver.url("/hook")}],
        }
        path = tmp_path / "monitor.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        logs = [tmp_path / f"r{k}.log" for k in range(3)]
        procs = [_start(path, log) for log in logs]
        try:
            time.sleep(12)  # the first cycle: every source polled once by one of them
            for k in outlets:
                srv.feed(f"/f/{k}.xml", _feed(k, now, [reposts[k]]))
            time.sleep(INTERVAL + 6)
            # kill -9 one replica mid-cycle; what it held is polled by the others within a lease
            victim = procs[0]
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(10)
            killed_at = time.time()
            time.sleep(INTERVAL + DAEMON_LEASE + 6)
            replicas = subprocess.run([sys.executable, "-m", "monitor", "replicas", "--all", "--json", "--config",
                                       str(path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
        finally:
            _stop(procs)
        times = list(srv.times)
    stderr = "\n".join(log.read_text() for log in logs)
    assert "Traceback" not in stderr, stderr[-3000:]
    by_feed: dict[str, list[float]] = defaultdict(list)
    for t, p in times:
        by_feed[p].append(t)
    assert len(by_feed) == N_SOURCES
    # one poll per source per cycle: never two requests for a feed closer than most of an
    # interval (the jitter is +-10 %), whichever replicas made them (outside the kill, after
    # which what the killed one had fetched but not recorded is fetched again, once)
    def closest(lo: float, hi: float) -> float:
        gaps = [b - a for ts in by_feed.values() for a, b in zip(sorted(ts), sorted(ts)[1:], strict=False)
                if lo <= a and b < hi]
        return min(gaps) if gaps else INTERVAL
    assert closest(0, killed_at - 1) > INTERVAL * 0.75
    assert closest(killed_at + DAEMON_LEASE + 1, float("inf")) > INTERVAL * 0.75
    cycles = Counter(sum(1 for t in ts if t < killed_at) for ts in by_feed.values())
    assert min(cycles) >= 2, cycles  # every source polled in each of the cycles before the kill
    # ... and every source kept being polled after the kill, within an interval and a lease
    late = [p for p, ts in by_feed.items() if max(ts) < killed_at + 1]
    assert not late, late[:5]
    # the story's outlets were polled by different replicas, and it made one alert, sent once
    def took_it(log: Path) -> bool:
        return any(f" poll source=s{k} " in line and " new=1 " in line
                   for line in log.read_text().splitlines() for k in outlets)
    assert sum(map(took_it, logs)) >= 2
    titles = Counter(r.json().get("title", "") for r in receiver.requests)
    assert sum(n for title, n in titles.items() if "ballistic missile" in title) == 1, titles
    assert all(n == 1 for n in titles.values()), titles
    # the replicas were all there, and the killed one is the lost one
    rows = [json.loads(line) for line in replicas.stdout.splitlines() if line.startswith("{")]
    assert replicas.returncode == 0 and len(rows) == 3, replicas.stderr
    states = Counter(r["state"] for r in rows)
    assert states["lost"] == 1 and states["alive"] + states["stopped"] == 2, rows
    assert next(r for r in rows if r["state"] == "lost")["pid"] == victim.pid


@pytest.mark.parametrize("acted_on", [False, True], ids=["not-accepted", "accepted"])
def test_a_replica_killed_during_a_send_its_messages_go_out_from_another(tmp_path, pg_url, receiver, acted_on):
    """Replica A sends both seed alerts and is killed with the sends in flight; replica B takes
    the channel over once A's lease runs out and sends them. When the receiver had not acted
    on A's requests, each alert is accepted exactly once; when it had (only its answer was
    late), each is accepted twice: at least once, at most twice, never lost."""
    from seedfeeds import seed_feeds

    with FeedServer() as srv:
        sources = {path.rsplit("/", 1)[-1].split(".")[0]: srv.feed(path, body) for path, body in seed_feeds().items()}
        cfg = {
            "database": {"url": pg_url},
            "server": {"port": 0},
            "include": [str(ROOT / "config" / "watchlists" / "*.yaml")],
            "replicas": {"lease": "4s", "heartbeat": "1s", "claim_every": "0.5s"},
            "delivery": {"interval": "1s", "timeout": "60s"},
            "sources": [{"name": n, "url": u} for n, u in sources.items()],
            "channels": [{"name": "hook", "url": receiver.url("/hook")}],
        }
        path = tmp_path / "monitor.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        receiver.hold_next, receiver.hold_seconds, receiver.hold_accepted = 100, 60.0, acted_on
        a = _start(path, tmp_path / "a.log")
        b = None
        try:
            deadline = time.time() + 60
            while len(receiver.requests) < 2 and time.time() < deadline:  # both sends in flight
                time.sleep(0.2)
            assert len(receiver.requests) == 2, (tmp_path / "a.log").read_text()[-2000:]
            os.killpg(a.pid, signal.SIGKILL)
            a.wait(10)
            receiver.hold_next = 0  # from now on the receiver answers at once
            b = _start(path, tmp_path / "b.log")
            deadline = time.time() + 60
            while len(receiver.requests) < 4 and time.time() < deadline:
                time.sleep(0.2)
            time.sleep(3)  # nothing more comes
        finally:
            _stop([p for p in (a, b) if p is not None])
    titles = Counter(r.json()["title"] for r in receiver.accepted())
    assert len(titles) == 2 and len(receiver.requests) == 4, receiver.requests
    assert set(titles.values()) == ({2} if acted_on else {1}), titles
    assert "Traceback" not in (tmp_path / "b.log").read_text()


def test_claims_failing_are_logged_when_they_start_and_when_they_recover_not_every_second(tmp_path, caplog):
    import asyncio
    import logging

    from monitor.config import load_config
    from monitor.daemon import Daemon

    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump({"database": {"url": f"sqlite:///{tmp_path}/m.db"}, "server": {"port": 0},
                                    "sources": [{"name": "s0", "url": "http://127.0.0.1:9/f.xml"}]}))
    daemon = Daemon(load_config(path, env={}))
    daemon.store.upgrade()
    daemon._pipeline = object()  # claiming needs one; nothing is polled here
    working = daemon.store.claim_sources

    def down(*args, **kwargs):
        raise OSError("database is down")

    async def claims(n: int) -> None:
        for _ in range(n):
            await daemon._claim_job()

    caplog.set_level(logging.INFO, logger="monitor.daemon")
    daemon.store.claim_sources = down
    asyncio.run(claims(5))
    daemon.store.claim_sources = lambda *a, **k: []  # back (nothing due)
    asyncio.run(claims(2))
    lines = [r.getMessage() for r in caplog.records]
    (failed,) = [r for r in caplog.records if r.getMessage() == "claim failed"]
    assert "database is down" in failed.fields["error"] and failed.levelno == logging.ERROR
    assert sum("claim recovered" in m for m in lines) == 1
    daemon.store.claim_sources = working
    daemon.store.close()
