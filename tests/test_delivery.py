"""Delivery control against real sinks on loopback and real databases, with a clock the tests
control: routes, digest and instant channels side by side, max_per_hour folding, silences,
retries with dead letters and admin notices, source health notices."""
from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from monitor.config import load_config
from monitor.matcher import Matcher
from monitor.model import FetchResult, Item
from monitor.notify import Notifier
from monitor.pipeline import CHANNEL_TRIP, SEND_CONCURRENCY, Pipeline
from monitor.schedule import schedule_of
from monitor.store import NewItem, SourceHealthPolicy, Store

T0 = datetime(2026, 11, 23, 10, 5, tzinfo=UTC)  # a Monday
OK = FetchResult(url="http://127.0.0.1:9/feed.xml", status="ok", http_status=200)
WATCHLISTS = [
    {"name": "missile-tests", "query": "missile", "severity": "critical"},
    {"name": "deployments", "query": "carrier", "severity": "info"},
]
_rng = random.Random(5)
_WORDS = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "po", "ra", "se", "ti", "vu", "ze")
          for b in ("bar", "cen", "dol", "fim", "gax", "hul", "jep", "kor", "lun", "mav")]


class Rig:
    """A config file, a store, a pipeline and its notifier, driven with explicit times."""

    def __init__(self, tmp_path: Path, db_url: str, channels: list[dict], **extra: object):
        doc = {"database": {"url": db_url},
               "sources": [{"name": n, "url": f"http://127.0.0.1:9/{n}.xml"} for n in ("wire", "kcna-en", "kcna-kr")],
               "watchlists": WATCHLISTS, "channels": channels,
               "delivery": {"retry_initial": "30s", "retry_max": "10m", "timeout": "5s"}}
        for key, value in extra.items():
            doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) else value
        path = tmp_path / "monitor.yaml"
        path.write_text(yaml.safe_dump(doc))
        self.cfg = load_config(path)
        self.store = Store(self.cfg.database.url)
        self.store.upgrade()
        self.store.sync_sources([(s.name, s.url) for s in self.cfg.sources])
        self.matcher = Matcher(self.cfg.matcher_watchlists())
        self.notifier = Notifier(self.cfg.enabled_channels, timeout=5)
        self.pipeline = Pipeline(self.cfg, self.store, self.matcher, None, self.notifier)  # type: ignore[arg-type]
        self.n = 0

    def alert(self, title: str, at: datetime, source: str = "wire") -> str:
        """Store one new story whose item matches what ``title`` says; returns its title."""
        self.n += 1
        words = " ".join(_rng.choice(_WORDS) for _ in range(40))
        title = f"{title} {self.n} {_rng.choice(_WORDS)} {_rng.choice(_WORDS)}"
        item = Item(guid=f"{source}-{self.n}", link=f"https://{source}.example/{self.n}/story",
                    canonical_link=f"https://{source}.example/{self.n}/story", title=title,
                    summary=f"{title}. {words}", content="", published=at)
        hits = tuple(self.matcher.match(item.title, item.text))
        assert hits, title
        out = self.store.commit_poll(source, OK, [NewItem(item, True, hits)], self.pipeline.channels_for(source),
                                     at)
        assert out.alerts == 1
        return title

    def deliver(self, at: datetime, ignore_backoff: bool = False):
        return asyncio.run(self.pipeline.deliver(ignore_backoff=ignore_backoff, now=at))

    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for a in self.store.recent_alerts(T0 - timedelta(days=400)):
            for d in a.deliveries:
                counts[d.status] = counts.get(d.status, 0) + 1
        return counts

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def rigs():
    made: list[Rig] = []
    yield made
    for r in made:
        r.close()


def bodies(receiver, path: str) -> list[dict]:
    return [r.json() for r in receiver.accepted(path)]


# ------------------------------------------------------------------ schedules (pure)

def test_interval_schedules_align_to_multiples_and_cron_follows_the_zone():
    hourly = schedule_of("1h")
    assert hourly.next_after(T0) == datetime(2026, 11, 23, 11, 0, tzinfo=UTC)
    assert hourly.next_after(datetime(2026, 11, 23, 11, 0, tzinfo=UTC)) == datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert schedule_of("15m").next_after(T0) == datetime(2026, 11, 23, 10, 15, tzinfo=UTC)
    weekdays = schedule_of("0 8 * * 1-5", "Europe/Paris")  # 08:00 in Paris = 07:00 UTC in winter
    assert weekdays.next_after(T0) == datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
    friday = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    assert weekdays.next_after(friday) == datetime(2026, 11, 30, 7, 0, tzinfo=UTC)  # skips the weekend
    summer = schedule_of("0 8 * * *", "Europe/Paris").next_after(datetime(2026, 7, 1, 12, tzinfo=UTC))
    assert summer == datetime(2026, 7, 2, 6, 0, tzinfo=UTC)  # CEST: UTC+2
    for bad in ("5s", "0 8 * *", "61 * * * *", "every day"):
        with pytest.raises(ValueError):
            schedule_of(bad)


# ------------------------------------------------------------------ digest + instant

def test_digest_and_instant_channels_side_by_side(tmp_path, db_url, receiver, rigs):
    rig = Rig(tmp_path, db_url, [
        {"name": "desk", "url": receiver.url("/desk")},
        {"name": "daily", "url": receiver.url("/daily"), "mode": "digest", "every": "1h"},
    ])
    rigs.append(rig)
    assert rig.deliver(T0).sent == 0  # starts the digest schedule: next at 11:00
    first = [rig.alert("Missile launch", T0 + timedelta(minutes=m)) for m in (1, 2)]
    carrier = rig.alert("Carrier group sails", T0 + timedelta(minutes=3))
    rig.deliver(T0 + timedelta(minutes=4))
    assert len(bodies(receiver, "/desk")) == 3  # instant: one message each, at once
    assert bodies(receiver, "/daily") == []
    rig.deliver(T0 + timedelta(minutes=50))
    assert bodies(receiver, "/daily") == []  # not due yet
    rig.deliver(datetime(2026, 11, 23, 11, 0, 10, tzinfo=UTC))
    (digest,) = bodies(receiver, "/daily")
    assert "3 stories" in digest["title"] and "digest" in digest["title"]
    text = digest["message"]
    # grouped by watchlist (critical first), newest first inside a group
    assert text.index("missile-tests") < text.index(first[1]) < text.index(first[0]) < text.index("deployments")
    assert text.index("deployments") < text.index(carrier)
    assert len(bodies(receiver, "/desk")) == 3  # the desk got nothing again
    rig.deliver(datetime(2026, 11, 23, 12, 0, 10, tzinfo=UTC))
    assert len(bodies(receiver, "/daily")) == 1  # an empty digest is not sent
    late = rig.alert("Missile test", datetime(2026, 11, 23, 12, 30, tzinfo=UTC))
    rig.deliver(datetime(2026, 11, 23, 12, 31, tzinfo=UTC))
    assert len(bodies(receiver, "/desk")) == 4 and len(bodies(receiver, "/daily")) == 1
    rig.deliver(datetime(2026, 11, 23, 13, 0, 5, tzinfo=UTC))
    second = bodies(receiver, "/daily")[1]
    assert "1 stor" in second["title"] and late in second["message"] and first[0] not in second["message"]
    assert rig.statuses() == {"sent": 8}


def test_cron_digest_waits_for_its_local_time(tmp_path, db_url, receiver, rigs):
    rig = Rig(tmp_path, db_url, [{"name": "morning", "url": receiver.url("/am"), "mode": "digest",
                                  "every": "0 8 * * 1-5", "timezone": "Europe/Paris"}])
    rigs.append(rig)
    rig.deliver(T0)
    title = rig.alert("Missile launch", T0 + timedelta(hours=1))
    rig.deliver(datetime(2026, 11, 24, 6, 59, tzinfo=UTC))  # 07:59 in Paris
    assert bodies(receiver, "/am") == []
    rig.deliver(datetime(2026, 11, 24, 7, 0, 20, tzinfo=UTC))  # 08:00 in Paris
    (digest,) = bodies(receiver, "/am")
    assert title in digest["message"]


def test_digest_that_fails_is_retried_and_sent_once(tmp_path, db_url, receiver, rigs):
    rig = Rig(tmp_path, db_url, [{"name": "daily", "url": receiver.url("/daily"), "mode": "digest", "every": "1h"}])
    rigs.append(rig)
    rig.deliver(T0)
    rig.alert("Missile launch", T0 + timedelta(minutes=1))
    receiver.fail_next = 1
    report = rig.deliver(datetime(2026, 11, 23, 11, 0, 5, tzinfo=UTC))
    assert report.failed == 1 and bodies(receiver, "/daily") == []
    rig.deliver(datetime(2026, 11, 23, 11, 5, tzinfo=UTC))  # the retry (backoff ~30 s), not the next hour
    assert len(bodies(receiver, "/daily")) == 1
    rig.deliver(datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC))
    assert len(bodies(receiver, "/daily")) == 1 and rig.statuses() == {"sent": 1}


# ------------------------------------------------------------------ rate limits

def test_fifty_alerts_against_max_per_hour_ten(tmp_path, db_url, receiver, rigs):
    rig = Rig(tmp_path, db_url, [{"name": "pager", "url": receiver.url("/pager"), "max_per_hour": 10}])
    rigs.append(rig)
    for k in range(50):
        rig.alert("Missile launch", T0 + timedelta(seconds=k))
    first = rig.deliver(T0 + timedelta(minutes=1))
    assert (first.sent, first.folded) == (10, 40)
    assert len(bodies(receiver, "/pager")) == 10
    rig.deliver(T0 + timedelta(minutes=30))  # the hour is used up: nothing more
    assert len(bodies(receiver, "/pager")) == 10
    rig.deliver(T0 + timedelta(minutes=62))
    got = bodies(receiver, "/pager")
    assert len(got) == 11  # 10 instant messages, then one digest
    digest = got[-1]
    assert "40" in digest["title"] and "folded" in (digest["title"] + digest["message"]).lower()
    everything = "\n".join(b["message"] for b in got)
    for n in range(1, 51):  # none lost, none twice (each message shows its item's link once)
        assert everything.count(f"https://wire.example/{n}/story") == 1, n
    rig.deliver(T0 + timedelta(hours=3))
    assert len(bodies(receiver, "/pager")) == 11
    assert rig.statuses() == {"sent": 50}


# ------------------------------------------------------------------ silences

def test_a_silence_suppresses_exactly_what_it_matches_until_it_expires(tmp_path, db_url, receiver, rigs):
    rig = Rig(tmp_path, db_url, [{"name": "desk", "url": receiver.url("/desk")}])
    rigs.append(rig)
    sid = rig.store.add_silence("missile-tests", T0 + timedelta(hours=6), query="hwasong", comment="known drill",
                                now=T0)
    by_source = rig.store.add_silence("deployments", T0 + timedelta(hours=6), source="kcna-*", now=T0)
    quiet = rig.alert("Hwasong missile drill", T0 + timedelta(minutes=1))  # silence 1
    loud = rig.alert("Missile launch", T0 + timedelta(minutes=2))  # missile-tests, no hwasong
    carrier_kcna = rig.alert("Carrier group seen", T0 + timedelta(minutes=3), source="kcna-en")  # silence 2
    carrier_wire = rig.alert("Carrier group seen", T0 + timedelta(minutes=4))  # other source
    both = rig.alert("Hwasong missile and carrier", T0 + timedelta(minutes=5))  # only the deployments hit is left
    report = rig.deliver(T0 + timedelta(minutes=6))
    assert (report.sent, report.silenced) == (3, 2)
    got = "\n".join(b["title"] + "\n" + b["message"] for b in bodies(receiver, "/desk"))
    assert quiet not in got and carrier_kcna not in got
    assert loud in got and carrier_wire in got and both in got
    (mixed,) = [b for b in bodies(receiver, "/desk") if both in b["title"]]
    assert mixed["title"].startswith("[deployments]")
    listed = {a.title: a.deliveries[0] for a in rig.store.recent_alerts(T0)}
    assert (listed[quiet].status, listed[quiet].silence_id) == ("silenced", sid)
    assert (listed[carrier_kcna].status, listed[carrier_kcna].silence_id) == ("silenced", by_source)
    # expiry: the same kind of item goes through once the silence has ended
    later = rig.alert("Hwasong missile drill", T0 + timedelta(hours=7))
    rig.deliver(T0 + timedelta(hours=7, minutes=1))
    assert later in "\n".join(b["title"] for b in bodies(receiver, "/desk"))
    # expire by hand: a silence added and expired at once suppresses nothing
    s3 = rig.store.add_silence("missile-tests", T0 + timedelta(days=1), now=T0 + timedelta(hours=8))
    assert rig.store.expire_silence(s3, now=T0 + timedelta(hours=8, minutes=1)) is not None
    after = rig.alert("Missile launch", T0 + timedelta(hours=8, minutes=2))
    rig.deliver(T0 + timedelta(hours=8, minutes=3))
    assert after in "\n".join(b["title"] for b in bodies(receiver, "/desk"))
    assert [s.id for s in rig.store.silences(T0 + timedelta(hours=8, minutes=5))] == []


def test_a_silence_added_after_the_alert_was_queued_still_stops_it(tmp_path, db_url, receiver, rigs):
    rig = Rig(tmp_path, db_url, [{"name": "daily", "url": receiver.url("/daily"), "mode": "digest", "every": "1h"}])
    rigs.append(rig)
    rig.deliver(T0)
    title = rig.alert("Missile launch", T0 + timedelta(minutes=1))
    other = rig.alert("Carrier group", T0 + timedelta(minutes=2))
    rig.store.add_silence("missile-tests", T0 + timedelta(hours=2), now=T0 + timedelta(minutes=30))
    rig.deliver(datetime(2026, 11, 23, 11, 0, 5, tzinfo=UTC))
    (digest,) = bodies(receiver, "/daily")
    assert other in digest["message"] and title not in digest["message"] + digest["title"]
    assert rig.statuses() == {"sent": 1, "silenced": 1}


# ------------------------------------------------------------------ retries, dead letters

def test_a_receiver_failing_three_times_gets_the_message_once(tmp_path, db_url, receiver, rigs):
    rig = Rig(tmp_path, db_url, [{"name": "hook", "url": receiver.url("/hook")}])
    rigs.append(rig)
    title = rig.alert("Missile launch", T0)
    receiver.fail_next = 3
    for minutes in (1, 11, 21, 31, 41, 51):
        rig.deliver(T0 + timedelta(minutes=minutes))
    tries = [r for r in receiver.requests if r.path == "/hook"]
    assert [r.status for r in tries] == [500, 500, 500, 200]
    assert title in tries[-1].json()["title"]
    (a,) = rig.store.recent_alerts(T0)
    assert (a.deliveries[0].status, a.deliveries[0].attempts) == ("sent", 4)


def test_backoff_grows_between_attempts(tmp_path, db_url, receiver, rigs):
    rig = Rig(tmp_path, db_url, [{"name": "hook", "url": receiver.url("/hook")}])
    rigs.append(rig)
    rig.alert("Missile launch", T0)
    receiver.status = 500
    rig.deliver(T0)
    rig.deliver(T0 + timedelta(seconds=20))  # before the first retry (30 s +-10%)
    assert len(receiver.requests) == 1
    rig.deliver(T0 + timedelta(seconds=34))
    rig.deliver(T0 + timedelta(seconds=34 + 50))  # second delay is ~60 s
    assert len(receiver.requests) == 2
    rig.deliver(T0 + timedelta(seconds=34 + 70))
    assert len(receiver.requests) == 3


def test_always_failing_receiver_is_dead_lettered_with_an_admin_notice(tmp_path, db_url, receiver, smtp, rigs):
    rig = Rig(tmp_path, db_url, [{"name": "hook", "url": receiver.url("/hook")},
                                 {"name": "admin", "url": smtp.url(to="ops@example.org")}],
              delivery={"max_attempts": 3})
    rigs.append(rig)
    title = rig.alert("Missile launch", T0)
    receiver.status = 500
    for minutes in range(0, 60, 10):
        rig.deliver(T0 + timedelta(minutes=minutes))
    assert len(receiver.requests) == 3  # then it is given up on
    (row,) = rig.store.outbox(("dead",))
    assert row.channel == "hook" and row.attempts == 3 and "500" in (row.last_error or "")
    mails = smtp.wait_for(1)
    assert len(mails) == 1
    assert "dead-lettered" in mails[0]["Subject"] and title in mails[0].get_body(("html", "plain")).get_content()
    assert len(smtp.messages) == 1  # the admin channel gets no alerts of its own
    # an operator re-queues it once the receiver works again: delivered once
    receiver.status = 200
    assert rig.store.retry(None, now=T0 + timedelta(hours=2)) == 1
    rig.deliver(T0 + timedelta(hours=2, minutes=1))
    assert [r.status for r in receiver.requests] == [500, 500, 500, 200]
    assert rig.store.outbox() == [] and rig.statuses() == {"sent": 1}


def test_a_channel_that_fails_three_sends_in_a_row_is_not_tried_again_in_that_pass(tmp_path, db_url, receiver, rigs):
    rig = Rig(tmp_path, db_url, [{"name": "hook", "url": receiver.url("/hook")}])
    rigs.append(rig)
    titles = [rig.alert(f"Missile launch {k}", T0 + timedelta(seconds=k)) for k in range(10)]
    receiver.status = 500
    rig.deliver(T0 + timedelta(minutes=1))
    tried = len(receiver.requests)  # then the channel counts as down for this pass
    assert CHANNEL_TRIP <= tried <= CHANNEL_TRIP + SEND_CONCURRENCY - 1  # (sends in flight finish)
    rows = rig.store.outbox(("pending",))
    assert len(rows) == 10 and all(r.attempts == 1 for r in rows)  # every row failed once and backs off
    skipped = [r for r in rows if (r.last_error or "").startswith("not tried")]
    assert len(skipped) == 10 - tried and all("500" in (r.last_error or "") for r in skipped)
    rig.deliver(T0 + timedelta(minutes=1, seconds=5))  # nothing is due before its backoff
    assert len(receiver.requests) == tried
    receiver.status = 200
    rig.deliver(T0 + timedelta(minutes=10))
    sent = [r.json()["title"] for r in receiver.requests if r.status == 200]
    assert len(sent) == 10
    assert all(any(t in s for s in sent) for t in titles) and rig.statuses() == {"sent": 10}


def test_max_age_dead_letters_a_row_at_its_next_failure(tmp_path, db_url, receiver, rigs):
    rig = Rig(tmp_path, db_url, [{"name": "hook", "url": receiver.url("/hook")}],
              delivery={"max_attempts": 100, "max_age": "1h"})
    rigs.append(rig)
    rig.alert("Missile launch", T0)
    receiver.status = 500
    rig.deliver(T0)
    assert rig.statuses() == {"pending": 1}
    rig.deliver(T0 + timedelta(minutes=61))
    assert rig.statuses() == {"dead": 1}


# ------------------------------------------------------------------ routes

def test_routes_pick_channels_with_continue(tmp_path, db_url, receiver, rigs):
    rig = Rig(tmp_path, db_url, [
        {"name": "pager", "url": receiver.url("/pager")},
        {"name": "korea", "url": receiver.url("/korea")},
        {"name": "desk", "url": receiver.url("/desk"), "min_severity": "high"},
        {"name": "archive", "url": receiver.url("/archive")},
    ], routes=[
        {"match": {"severity": "critical"}, "channels": ["pager"], "continue": True},
        {"match": {"source": "kcna-*"}, "channels": ["korea"]},
        {"match": {"watchlist": ["missile-tests", "deployments"]}, "channels": ["desk", "archive"]},
    ])
    rigs.append(rig)
    missile_wire = rig.alert("Missile launch", T0)  # critical -> pager, continue -> desk + archive
    missile_kcna = rig.alert("Missile launch", T0, source="kcna-kr")  # pager, then korea (stops)
    carrier = rig.alert("Carrier group", T0)  # info -> desk refuses it (min_severity high) -> archive
    rig.deliver(T0 + timedelta(minutes=1))
    got = {p: {b["title"].split("] ", 1)[1] for b in bodies(receiver, p)} for p in ("/pager", "/korea", "/desk", "/archive")}
    assert got == {"/pager": {missile_wire, missile_kcna}, "/korea": {missile_kcna},
                   "/desk": {missile_wire}, "/archive": {missile_wire, carrier}}


def test_without_routes_every_channel_but_admin_gets_what_it_accepts(tmp_path, receiver, smtp, rigs):
    rig = Rig(tmp_path, f"sqlite:///{tmp_path}/m.db", [
        {"name": "all", "url": receiver.url("/all")},
        {"name": "crit", "url": receiver.url("/crit"), "min_severity": "critical"},
        {"name": "admin", "url": smtp.url()},
    ])
    rigs.append(rig)
    rig.alert("Missile launch", T0)
    rig.alert("Carrier group", T0)
    rig.deliver(T0 + timedelta(minutes=1))
    assert len(bodies(receiver, "/all")) == 2 and len(bodies(receiver, "/crit")) == 1
    assert smtp.messages == []


# ------------------------------------------------------------------ source health

def test_source_failing_for_source_alert_after_sends_one_notice_and_one_on_recovery(tmp_path, db_url, smtp, rigs):
    rig = Rig(tmp_path, db_url, [{"name": "admin", "url": smtp.url(to="ops@example.org")}],
              alerts={"source_alert_after": "6h"})
    rigs.append(rig)
    health = SourceHealthPolicy(timedelta(hours=6), notify=True)
    failed = FetchResult(url="http://127.0.0.1:9/wire.xml", status="error", error="HTTP 503")
    for hours in (0, 3, 5):
        rig.store.record_failure("wire", failed, T0 + timedelta(hours=hours), health)
    rig.deliver(T0 + timedelta(hours=5, minutes=1))
    assert smtp.messages == []
    for hours in (6, 7, 8):
        rig.store.record_failure("wire", failed, T0 + timedelta(hours=hours), health)
    rig.deliver(T0 + timedelta(hours=8, minutes=1))
    (failing,) = smtp.wait_for(1)
    assert "wire" in failing["Subject"] and "failing" in failing["Subject"]
    assert "HTTP 503" in failing.get_body(("html", "plain")).get_content()
    rig.store.commit_poll("wire", OK, [], (), T0 + timedelta(hours=9))
    rig.store.commit_poll("wire", OK, [], (), T0 + timedelta(hours=10))
    rig.deliver(T0 + timedelta(hours=10, minutes=1))
    mails = smtp.wait_for(2)
    assert len(mails) == 2 and "recovered" in mails[1]["Subject"]
    rig.store.record_failure("wire", failed, T0 + timedelta(hours=11), health)  # a new failure run starts
    rig.deliver(T0 + timedelta(hours=11, minutes=1))
    assert len(smtp.messages) == 2


def test_admin_notices_wait_for_the_admin_channel_and_are_sent_once(tmp_path, receiver, rigs):
    rig = Rig(tmp_path, f"sqlite:///{tmp_path}/m.db", [{"name": "admin", "url": receiver.url("/admin")}])
    rigs.append(rig)
    rig.store.add_notice("source_failing", "source 'x' failing", "details", now=T0)
    receiver.fail_next = 1
    rig.deliver(T0)
    rig.deliver(T0 + timedelta(minutes=5))
    rig.deliver(T0 + timedelta(minutes=10))
    assert [r.status for r in receiver.requests] == [500, 200]
    assert "source 'x' failing" in json.dumps(receiver.accepted()[0].json())


def test_crontab_weekday_numbers_mean_what_cron_says():
    from monitor.schedule import crontab_weekdays

    assert crontab_weekdays("1-5") == "mon,tue,wed,thu,fri"
    assert crontab_weekdays("0") == crontab_weekdays("7") == "sun"
    assert crontab_weekdays("*/2") == "sun,tue,thu,sat"
    assert crontab_weekdays("5-7,1") == "sun,mon,fri,sat"
    assert crontab_weekdays("mon-fri") == "mon-fri" and crontab_weekdays("*") == "*"
    sunday = schedule_of("30 9 * * 0")
    assert sunday.next_after(T0) == datetime(2026, 11, 29, 9, 30, tzinfo=UTC)  # 2026-11-29 is a Sunday
    with pytest.raises(ValueError):
        schedule_of("0 8 * * 8")


# ------------------------------------------------------------------ the operator commands

def monitor_cli(cfg: Path, *args: str):
    import subprocess
    import sys

    from conftest import ROOT

    return subprocess.run([sys.executable, "-m", "monitor", *args, "--config", str(cfg)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def test_silence_outbox_and_alerts_commands(tmp_path, receiver, rigs):
    rig = Rig(tmp_path, f"sqlite:///{tmp_path}/m.db", [{"name": "hook", "url": receiver.url("/hook")}],
              delivery={"max_attempts": 1})
    rigs.append(rig)
    cfg = tmp_path / "monitor.yaml"
    # a silence from the command line, checked against the config first
    bad = monitor_cli(cfg, "silence", "add", "--watchlist", "missle-tests", "--for", "1h", "--comment", "x")
    assert bad.returncode == 2 and "did you mean 'missile-tests'" in bad.stderr
    bad = monitor_cli(cfg, "silence", "add", "--watchlist", "missile-tests", "--match", "(hwasong", "--for", "1h",
                      "--comment", "x")
    assert bad.returncode == 2 and "column" in bad.stderr and "^" in bad.stderr
    ok = monitor_cli(cfg, "silence", "add", "--watchlist", "missile-tests", "--match", "hwasong", "--for", "6h",
                     "--comment", "known drill")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("silence 1 active until") and "matching 'hwasong'" in ok.stdout
    listed = monitor_cli(cfg, "silence", "list", "--json")
    (s,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (s["id"], s["watchlist"], s["match"], s["active"], s["comment"]) == (1, "missile-tests", "hwasong", True,
                                                                            "known drill")
    now = datetime.now(UTC)  # after the silence began
    quiet = rig.alert("Hwasong missile drill", now)
    loud = rig.alert("Missile launch", now)
    receiver.status = 500
    rig.deliver(now)  # one attempt allowed: the loud one is dead at once
    out = monitor_cli(cfg, "outbox")
    assert out.returncode == 0 and "0 pending, 1 dead" in out.stdout and "monitor outbox retry" in out.stdout
    (row,) = [json.loads(line) for line in monitor_cli(cfg, "outbox", "--dead", "--json").stdout.splitlines()]
    assert row["status"] == "dead" and row["title"] == loud and "500" in row["last_error"]
    alerts = [json.loads(line) for line in monitor_cli(cfg, "alerts", "--json").stdout.splitlines()]
    states = {a["title"]: a["deliveries"][0] for a in alerts}
    assert states[quiet]["status"] == "silenced" and states[quiet]["silence"] == 1
    assert states[loud]["status"] == "dead"
    text = monitor_cli(cfg, "alerts", "--since", "1h", "--watchlist", "missile-tests").stdout
    assert "silenced by #1" in text and "dead after 1 attempts" in text and text.rstrip().endswith("2 alerts")
    assert monitor_cli(cfg, "outbox", "retry").returncode == 2  # neither IDs nor --all
    again = monitor_cli(cfg, "outbox", "retry", str(row["id"]))
    assert again.returncode == 0 and "re-queued 1 row" in again.stdout
    receiver.status = 200
    rig.deliver(datetime.now(UTC))
    assert [b["title"] for b in bodies(receiver, "/hook")] == [f"[missile-tests] {loud}"]
    assert "0 pending, 0 dead" in monitor_cli(cfg, "outbox").stdout
    expired = monitor_cli(cfg, "silence", "expire", "1")
    assert expired.returncode == 0 and "silence 1 expired" in expired.stdout
    assert "no active silences" in monitor_cli(cfg, "silence", "list").stdout
    assert "expired" in monitor_cli(cfg, "silence", "list", "--all").stdout
    assert monitor_cli(cfg, "silence", "expire", "99").returncode == 2
