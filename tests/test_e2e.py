"""End to end: `monitor` as a subprocess against real loopback servers (feeds over HTTP, an
SMTP sink, a webhook receiver) and real databases."""
from __future__ import annotations

import email
import email.policy
import gzip
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from feedserver import ENTITY_BOMB, XXE, FeedServer, SilentServer, rss
from seedfeeds import ORIG_LINK, OTHER_LINK, REPOST_LINK, TITLE_000, TITLE_002, ago, seed_feeds
from sinks import SmtpSink, WebhookReceiver, free_port

WATCHLISTS = str(ROOT / "config" / "watchlists" / "*.yaml")


def monitor(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, **(env or {})}
    e.pop("MONITOR_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "monitor", *args], capture_output=True, text=True,
                          timeout=timeout, env=e, cwd=ROOT)


def write_config(tmp: Path, db_url: str, sources: dict[str, str], channels: dict[str, str],
                 **extra) -> Path:
    cfg = {
        "database": {"url": db_url},
        "server": {"port": 0},
        "include": [WATCHLISTS],
        "sources": [{"name": n, "url": u} for n, u in sources.items()],
        "channels": [{"name": n, "url": u} for n, u in channels.items()],
        **extra,
    }
    p = tmp / "monitor.yaml"
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return p


def serve(srv: FeedServer, feeds: dict[str, bytes]) -> dict[str, str]:
    return {path.rsplit("/", 1)[-1].split(".")[0]: srv.feed(path, body) for path, body in feeds.items()}


def hook_texts(receiver: WebhookReceiver) -> list[str]:
    out = []
    for r in receiver.requests:
        d = r.json()
        out.append(f"{d.get('title', '')}\n{d.get('message', '')}")
    return out


def _mail_text(raw: bytes) -> str:
    m = email.message_from_bytes(raw, policy=email.policy.default)
    return (m["Subject"] or "") + "".join("\n" + p.get_content() for p in m.walk() if not p.is_multipart())


def mail_texts(smtp: SmtpSink) -> list[str]:
    out = []
    for m in smtp.messages:
        text = m["Subject"] or ""
        for part in m.walk():
            if not part.is_multipart():
                text += "\n" + part.get_content()
        out.append(text)
    return out


@pytest.fixture
def feeds():
    with FeedServer() as srv:
        yield srv


def test_seed_articles_alert_on_json_and_email_once(tmp_path, feeds, receiver, smtp, db_url):
    sources = serve(feeds, seed_feeds())
    cfg = write_config(tmp_path, db_url, sources, {"hook": receiver.url("/hook"), "desk-mail": smtp.url()})
    r = monitor("run", "--once", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    hooks, mails = hook_texts(receiver), mail_texts(smtp)
    # the repost joins the story of article 000: one message per story on each channel
    assert len(hooks) == 2 and len(mails) == 2, r.stderr
    for texts in (hooks, mails):
        a = [t for t in texts if "sputnik.example" in t or "repost.example" in t]
        b = [t for t in texts if OTHER_LINK in t]
        assert len(a) == 1 and len(b) == 1 and a[0] is not b[0]
        assert TITLE_000 in a[0] and "strategic-deployments" in a[0]
        # whichever copy made the alert, the message names both outlets
        assert "sputnik (sputnik.example)" in a[0] and "reposter (repost.example)" in a[0], a[0]
        assert TITLE_002 in b[0] and "almanar" in b[0] and "strategic-deployments" in b[0]
        assert "sputnik" not in b[0] and "repost" not in b[0]
        assert "deploy" in b[0].lower()  # a matched term is shown
    subjects = [m["Subject"] for m in smtp.messages]
    assert any(s.startswith("[") and s.endswith("] " + TITLE_002) and "strategic-deployments" in s.split("]")[0]
               for s in subjects), subjects
    assert all(m.get_content_type() == "multipart/alternative" for m in smtp.messages)
    poll_lines = [line for line in r.stderr.splitlines() if " poll " in line]
    assert len(poll_lines) == 3 and all("status=ok" in line and "new=1" in line for line in poll_lines)

    r2 = monitor("run", "--once", "--config", str(cfg))
    assert r2.returncode == 0, r2.stderr
    assert len(receiver.requests) == 2 and len(smtp.messages) == 2, "the second run re-sent"
    assert "status=not_modified" in r2.stderr


def test_stories_lists_every_item_once_and_repost_updates_follow(tmp_path, feeds, receiver):
    """`monitor stories` after the seed run: two stories, the repost inside article 000's;
    with notify_on_repost, a new outlet carrying a story after its alert went out brings one
    "now reported by" update, and a second run sends nothing more."""
    paths = seed_feeds()
    first = {"sputnik": paths["/feeds/sputnik.xml"], "almanar": paths["/feeds/almanar.xml"]}
    sources = serve(feeds, {f"/feeds/{k}.xml": v for k, v in first.items()})
    db = f"sqlite:///{tmp_path}/m.db"
    cfg = write_config(tmp_path, db, sources, {"hook": receiver.url("/hook")},
                       stories={"notify_on_repost": True})
    r = monitor("run", "--once", "--config", str(cfg))
    assert r.returncode == 0 and len(receiver.requests) == 2, r.stderr
    # the reposter appears later: its copy joins the story already alerted
    sources = {**sources, **serve(feeds, {"/feeds/reposter.xml": paths["/feeds/reposter.xml"]})}
    cfg = write_config(tmp_path, db, sources, {"hook": receiver.url("/hook")}, stories={"notify_on_repost": True})
    r = monitor("run", "--once", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    texts = hook_texts(receiver)
    assert len(texts) == 3, texts
    update = texts[2]
    assert "now reported by 2 outlets" in update and "reposter (repost.example)" in update, update
    assert "sputnik (sputnik.example)" in update and TITLE_000 in update
    r = monitor("run", "--once", "--config", str(cfg))
    assert r.returncode == 0 and len(receiver.requests) == 3, "a second run re-sent"

    r = monitor("stories", "--json", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    stories = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(stories) == 2
    links = [i["link"] for st in stories for i in st["items"]]
    assert len(links) == 3 and len(set(links)) == 3  # every stored item in exactly one story
    merged = next(st for st in stories if len(st["items"]) == 2)
    assert {i["source"] for i in merged["items"]} == {"sputnik", "reposter"}
    assert {i["title"] for i in merged["items"]} == {TITLE_000, TITLE_000 + " | Repost Daily"}
    assert all(set(i) == {"link", "source", "title"} for st in stories for i in st["items"])
    text = monitor("stories", "--since", "1d", "--config", str(cfg))
    assert text.returncode == 0 and "2 stories, 3 items" in text.stderr, text.stderr
    assert "2 items, 2 outlets  alerted" in text.stdout and OTHER_LINK in text.stdout
    (tmp_path / "other").mkdir()
    missing = write_config(tmp_path / "other", f"sqlite:///{tmp_path}/none.db", {}, {})
    r = monitor("stories", "--config", str(missing))
    assert r.returncode == 1 and "no database" in r.stderr


def test_channels_down_lose_nothing_and_deliver_once(tmp_path, feeds, receiver):
    sources = serve(feeds, seed_feeds())
    smtp_port = free_port()
    mail_url = f"mailto://127.0.0.1:{smtp_port}?from=monitor@example.org&to=desk@example.org"
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path}/m.db", sources, {"hook": receiver.url("/hook"), "mail": mail_url})
    receiver.status = 500
    r1 = monitor("run", "--once", "--config", str(cfg))
    assert r1.returncode == 0, r1.stderr
    assert len(receiver.requests) >= 2  # it tried
    assert "send failed" in r1.stderr and "500" in r1.stderr
    tried = len(receiver.requests)
    receiver.status = 200
    from aiosmtpd.controller import Controller

    got: list[bytes] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            got.append(envelope.content)
            return "250 OK"

    ctl = Controller(Handler(), hostname="127.0.0.1", port=smtp_port)
    ctl.start()
    try:
        r2 = monitor("run", "--once", "--config", str(cfg))
        r3 = monitor("run", "--once", "--config", str(cfg))
    finally:
        ctl.stop()
    assert r2.returncode == 0 and r3.returncode == 0, r2.stderr + r3.stderr
    delivered = [json.dumps(r.json()) for r in receiver.requests[tried:]]
    assert len(delivered) == 2 and len(got) == 2, r2.stderr
    mails = [_mail_text(g) for g in got]
    for texts in (delivered, mails):
        assert sum("sputnik.example" in t or "repost.example" in t for t in texts) == 1
        assert sum(OTHER_LINK in t for t in texts) == 1
    with sqlite3.connect(tmp_path / "m.db") as db:
        assert db.execute("select count(*) from deliveries where status != 'sent'").fetchone()[0] == 0


def test_hostile_sources_beside_a_good_one(tmp_path, feeds, receiver):
    good = serve(feeds, {"/feeds/good.xml": seed_feeds()["/feeds/almanar.xml"]})
    truncated = seed_feeds()["/feeds/almanar.xml"]
    huge = rss("Huge", "https://huge.example/", [dict(title=f"Item {i}", link=f"https://huge.example/{i}",
                                                      description="quarterly figures " * 400) for i in range(600)])
    gz_bomb = gzip.compress(b"<rss>" + b" " * (200 << 20) + b"</rss>", compresslevel=9)
    hostile = {
        "missing": feeds.raw("/missing.xml", 404, b"not here"),
        "error": feeds.raw("/error.xml", 500, b"boom"),
        "garbage": feeds.raw("/garbage.xml", 200, bytes(range(256)) * 64, {"Content-Type": "application/rss+xml"}),
        "html": feeds.raw("/html.xml", 200, b"<html><body><p>Please Wait...</p></body></html>",
                          {"Content-Type": "text/html"}),
        "truncated": feeds.raw("/truncated.xml", 200, truncated[: len(truncated) // 2]),
        "bomb": feeds.raw("/bomb.xml", 200, ENTITY_BOMB),
        "xxe": feeds.raw("/xxe.xml", 200, XXE),
        "huge": feeds.raw("/huge.xml", 200, huge),
        "gzbomb": feeds.raw("/gzbomb.xml", 200, gz_bomb, {"Content-Encoding": "gzip"}),
        "hang": feeds.hang("/hang.xml"),
        "refused": f"http://127.0.0.1:{free_port()}/feed.xml",
    }
    with SilentServer() as silent:
        hostile["silent"] = silent.url()
        cfg = write_config(tmp_path, f"sqlite:///{tmp_path}/m.db", {**good, **hostile},
                           {"hook": receiver.url("/hook")},
                           fetch={"timeout": "4s", "read_timeout": "3s", "connect_timeout": "2s", "max_bytes": "2MB"})
        t0 = time.monotonic()
        r = monitor("run", "--once", "--config", str(cfg), timeout=100)
        elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert elapsed < 60
    texts = hook_texts(receiver)
    assert any(OTHER_LINK in t for t in texts), r.stderr
    assert not any("root:" in t for t in texts)
    polls = {line.split("source=")[1].split()[0]: line for line in r.stderr.splitlines() if " poll " in line}
    assert "status=ok" in polls["good"]
    for name in ("missing", "error", "garbage", "html", "huge", "gzbomb", "hang", "refused", "silent"):
        assert "status=error" in polls[name] and "error=" in polls[name], polls[name]
    assert "404" in polls["missing"] and "500" in polls["error"]
    assert "exceeds" in polls["huge"] and "exceeds" in polls["gzbomb"]


def test_old_items_are_stored_silently_and_restart_never_realerts(tmp_path, feeds, receiver):
    body = rss("Wire", "https://wire.example/", [
        dict(title="North Korea fires ballistic missile into the sea", link="https://wire.example/old",
             description="Pyongyang launched a ballistic missile.", published=ago(60 * 24 * 5)),
        dict(title="North Korea test-fires new ICBM", link="https://wire.example/new",
             description="The missile was launched on a lofted trajectory.", published=ago(30)),
        dict(title="Missile launch reported by state media", link="https://wire.example/undated",
             description="A ballistic missile launch was reported."),
    ])
    sources = serve(feeds, {"/wire.xml": body})
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path}/m.db", sources, {"hook": receiver.url("/hook")})
    assert monitor("run", "--once", "--config", str(cfg)).returncode == 0
    texts = hook_texts(receiver)
    assert len(texts) == 2 and any("wire.example/new" in t for t in texts) and any("undated" in t for t in texts)
    assert all("missile-tests" in t for t in texts)
    feeds.feed("/wire.xml", body + b"\n")  # a changed body (new ETag) with the same items
    assert monitor("run", "--once", "--config", str(cfg)).returncode == 0
    assert len(receiver.requests) == 2
    with sqlite3.connect(tmp_path / "m.db") as db:
        assert db.execute("select count(*), sum(fresh) from items").fetchone() == (3, 2)


def test_channel_watchlist_filter_and_disabled_channel(tmp_path, feeds, receiver):
    body = rss("Wire", "https://wire.example/", [
        dict(title="North Korea test-fires ballistic missile", link="https://wire.example/missile",
             description="The missile was launched from Pyongyang.", published=ago(10)),
        dict(title="US deploys strategic bombers to Guam", link="https://wire.example/bombers",
             description="B-52 strategic bombers were deployed to Andersen Air Force Base.", published=ago(10)),
    ])
    sources = serve(feeds, {"/wire.xml": body})
    cfg = tmp_path / "monitor.yaml"
    cfg.write_text(yaml.safe_dump({
        "database": {"url": f"sqlite:///{tmp_path}/m.db"}, "server": {"port": 0}, "include": [WATCHLISTS],
        "sources": [{"name": n, "url": u} for n, u in sources.items()],
        "channels": [{"name": "missiles-only", "url": receiver.url("/missiles"), "watchlists": ["missile-tests"]},
                     {"name": "slack", "url": "${E2E_UNSET_SLACK:-}"}],
    }))
    r = monitor("run", "--once", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("disabled") == 1
    (sent,) = hook_texts(receiver)
    assert "wire.example/missile" in sent and "missile-tests" in sent
    assert r.stderr.count(" alert ") == 2  # both alerts are recorded and logged


def test_match_dry_run_prints_one_line_per_item(tmp_path, feeds):
    items = tmp_path / "items.jsonl"
    items.write_text("\n".join(json.dumps(d) for d in [
        {"id": "a", "title": "North Korea test-fires ballistic missile", "summary": "Launched at dawn.",
         "link": "https://x.example/a"},
        {"id": "b", "title": "Contest results", "summary": "A testament to testing.", "link": "https://x.example/b"},
    ]) + "\n")
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path}/never.db", {}, {})
    r = monitor("match", "--config", str(cfg), str(items))
    assert r.returncode == 0, r.stderr
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert [o["id"] for o in out] == ["a", "b"]
    assert [w["name"] for w in out[0]["watchlists"]] == ["missile-tests"] and out[1]["watchlists"] == []
    assert out[0]["watchlists"][0]["terms"] and out[0]["link"] == "https://x.example/a"
    assert not (tmp_path / "never.db").exists()  # a dry run touches no database
    # the same from stdin, and from a feed served over HTTP
    r = subprocess.run([sys.executable, "-m", "monitor", "match", "--config", str(cfg), "-"], input=items.read_text(),
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert [json.loads(line)["id"] for line in r.stdout.splitlines()] == ["a", "b"]
    url = serve(feeds, {"/seed.xml": seed_feeds()["/feeds/almanar.xml"]})["seed"]
    r = monitor("match", "--config", str(cfg), url)
    (line,) = r.stdout.splitlines()
    assert json.loads(line)["link"] == OTHER_LINK and json.loads(line)["watchlists"]


def test_check_reports_config_errors_with_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sorces:\n  - name: wire\n    url: http://127.0.0.1:9/feed.xml\n"
                   "watchlists:\n  - name: probe\n    query: 'missile AND (test'\n")
    r = monitor("check", "--config", str(bad))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "bad.yaml:1" in r.stderr and "sorces" in r.stderr and "column" in r.stderr and "^" in r.stderr
    ok = monitor("check", "--config", str(ROOT / "config" / "monitor.yaml"))
    assert ok.returncode == 0 and "missile-tests" in ok.stdout and "strategic-deployments" in ok.stdout


def test_unusable_database_exits_1_with_a_message(tmp_path):
    (tmp_path / "file").write_text("")
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path}/file/sub/m.db", {}, {})
    r = monitor("run", "--once", "--config", str(cfg))
    assert r.returncode == 1 and "Traceback" not in r.stderr and "error:" in r.stderr


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except OSError as e:
        return getattr(e, "code", 0) or 0, str(e)


def _wait_for(cond, timeout: float = 30, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return cond()


def _daemon(cfg: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MONITOR_DATABASE_URL"}
    return subprocess.Popen([sys.executable, "-m", "monitor", "run", "--config", str(cfg)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_daemon_serves_health_and_metrics_alerts_and_stops_on_sigterm(tmp_path, feeds, receiver, db_url):
    sources = serve(feeds, seed_feeds())
    port = free_port()
    cfg = write_config(tmp_path, db_url, sources, {"hook": receiver.url("/hook")}, server={"port": port})
    proc = _daemon(cfg)
    try:
        assert _wait_for(lambda: _get(f"http://127.0.0.1:{port}/healthz")[0] == 200), "no /healthz"
        assert _wait_for(lambda: len(receiver.requests) >= 2), "the daemon did not alert"
        status, body = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and 'monitor_polls_total{source="almanar",status="ok"}' in body
        def health() -> dict:
            return json.loads(_get(f"http://127.0.0.1:{port}/healthz")[1])
        assert _wait_for(lambda: health()["items"] == 3), "the daemon did not store every item"
        assert health()["status"] == "ok" and health()["alerts"] == 2  # the repost joined its story
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
        assert time.monotonic() - t0 < 10 and proc.returncode == 0, out
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sighup_reloads_a_valid_config_and_keeps_the_running_one_on_error(tmp_path, feeds, receiver):
    sources = serve(feeds, seed_feeds())
    first = dict(list(sources.items())[:1])
    port = free_port()
    db = f"sqlite:///{tmp_path}/m.db"
    cfg = write_config(tmp_path, db, first, {"hook": receiver.url("/hook")}, server={"port": port})
    proc = _daemon(cfg)
    try:
        assert _wait_for(lambda: _get(f"http://127.0.0.1:{port}/readyz")[0] == 200), "never ready"
        assert json.loads(_get(f"http://127.0.0.1:{port}/readyz")[1])["status"] == "ready"
        assert _wait_for(lambda: len(feeds.hits) >= 1), "the first source was not polled"
        polled_before = set(feeds.hits)
        # a broken config: the reload is refused, named, and the daemon goes on with the old one
        good_text = cfg.read_text()
        cfg.write_text(good_text + "sources: [oops\n")
        proc.send_signal(signal.SIGHUP)
        time.sleep(2)
        assert proc.poll() is None and _get(f"http://127.0.0.1:{port}/readyz")[0] == 200
        # a valid one with every seed source: the new ones are polled without a restart
        write_config(tmp_path, db, sources, {"hook": receiver.url("/hook")}, server={"port": port})
        proc.send_signal(signal.SIGHUP)
        assert _wait_for(lambda: len(set(feeds.hits)) > len(polled_before)), "new sources were not polled"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    failed = [line for line in out.splitlines() if "reload failed" in line]
    assert len(failed) == 1 and "monitor.yaml" in failed[0] and "kept=" in failed[0], out
    assert sum("reloaded" in line for line in out.splitlines()) == 1, out


def test_kill_9_during_a_send_loses_nothing(tmp_path, feeds):
    """The receiver never answers, so the daemon is killed while sends are in flight; after a
    restart with a working receiver every alert arrives."""
    sources = serve(feeds, seed_feeds())
    with SilentServer() as silent, WebhookReceiver() as receiver:
        port = free_port()
        hook_url = receiver.url("/hook")
        cfg = write_config(tmp_path, f"sqlite:///{tmp_path}/m.db", sources,
                           {"hook": f"json://127.0.0.1:{silent.port}/hook"}, server={"port": port},
                           delivery={"timeout": "60s"})
        proc = _daemon(cfg)
        try:
            def alerts_committed() -> bool:
                status, body = _get(f"http://127.0.0.1:{port}/healthz")
                return status == 200 and json.loads(body)["alerts"] == 2 and json.loads(body)["items"] == 3
            assert _wait_for(alerts_committed), "alerts were not recorded"
            time.sleep(1.0)  # sends are now hanging on the silent receiver
        finally:
            proc.kill()
            proc.wait()
        cfg = write_config(tmp_path, f"sqlite:///{tmp_path}/m.db", sources, {"hook": hook_url})
        r = monitor("run", "--once", "--config", str(cfg))
        assert r.returncode == 0, r.stderr
        assert len(receiver.requests) == 2
        assert {ORIG_LINK in t or REPOST_LINK.split("?")[0] in t or OTHER_LINK in t for t in hook_texts(receiver)} == {True}


def test_db_upgrade_creates_the_schema(tmp_path, db_url):
    cfg = write_config(tmp_path, db_url, {}, {})
    r = monitor("db", "upgrade", "--config", str(cfg))
    assert r.returncode == 0 and "up to date" in r.stdout, r.stderr
    from sqlalchemy import create_engine, inspect

    engine = create_engine(db_url)
    try:
        assert {"sources", "items", "stories", "alerts", "deliveries"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_match_uses_aliases_proximity_and_fields(tmp_path):
    cfg = tmp_path / "monitor.yaml"
    cfg.write_text(yaml.safe_dump({
        "aliases": {"dprk": ["North Korea", "DPRK", "Pyongyang"]},
        "watchlists": [{"name": "dprk-launch", "query": "@dprk AND title:(missile NEAR/3 launch*)"}],
    }))
    items = tmp_path / "items.jsonl"
    items.write_text("\n".join(json.dumps(d) for d in [
        {"id": "hit", "title": "Missile was launched", "summary": "Pyongyang said so."},
        {"id": "far", "title": "Missile programme review as officials plan a launch", "summary": "DPRK"},
        {"id": "body-only", "title": "Statement", "summary": "North Korea launched a missile."},
    ]) + "\n")
    r = monitor("match", "--config", str(cfg), str(items))
    assert r.returncode == 0, r.stderr
    got = {d["id"]: [w["name"] for w in d["watchlists"]] for d in map(json.loads, r.stdout.splitlines())}
    assert got == {"hit": ["dprk-launch"], "far": [], "body-only": []}


def test_channels_receive_only_hits_at_or_above_their_min_severity(tmp_path, feeds, receiver, smtp):
    body = rss("Wire", "https://wire.example/", [
        dict(title="Navy holds routine exercise", link="https://wire.example/drill",
             description="A routine exercise off the coast.", published=ago(10)),
        dict(title="North Korea launches ballistic missile", link="https://wire.example/missile",
             description="The missile was launched at dawn &amp; flew east.", published=ago(10)),
        dict(title="Underground nuclear test detected", link="https://wire.example/nuclear",
             description="Seismologists detected a nuclear test; a missile was launched too.", published=ago(10)),
    ])
    sources = serve(feeds, {"/wire.xml": body})
    cfg = tmp_path / "monitor.yaml"
    cfg.write_text(yaml.safe_dump({
        "database": {"url": f"sqlite:///{tmp_path}/m.db"}, "server": {"port": 0},
        "sources": [{"name": n, "url": u} for n, u in sources.items()],
        "watchlists": [
            {"name": "drills", "query": "exercise", "severity": "info"},
            {"name": "missile-tests", "query": "missile AND launch*"},  # severity high by default
            {"name": "nuclear-tests", "query": '"nuclear test"', "severity": "critical"},
        ],
        "channels": [
            {"name": "all", "url": receiver.url("/all")},
            {"name": "high", "url": receiver.url("/high"), "min_severity": "high"},
            {"name": "crit", "url": receiver.url("/crit"), "min_severity": "critical"},
            {"name": "crit-drills", "url": receiver.url("/crit-drills"), "min_severity": "critical",
             "watchlists": ["drills"]},
            {"name": "mail", "url": smtp.url(), "watchlists": ["missile-tests", "drills"]},
        ],
    }))
    r = monitor("run", "--once", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    by_path: dict[str, list[dict]] = {}
    for req in receiver.requests:
        by_path.setdefault(req.path, []).append(req.json())
    links = {p: sorted(d["message"].split("Link: ")[1].split()[0].rsplit("/", 1)[1] for d in reqs)
             for p, reqs in by_path.items()}
    assert links == {"/all": ["drill", "missile", "nuclear"], "/high": ["missile", "nuclear"], "/crit": ["nuclear"]}
    # a channel is told only about the hits it accepts
    (crit,) = by_path["/crit"]
    assert crit["title"] == "[nuclear-tests] Underground nuclear test detected"
    assert "nuclear-tests (critical, score" in crit["message"] and "missile-tests" not in crit["message"]
    (high_nuclear,) = [d for d in by_path["/high"] if "nuclear" in d["title"]]
    assert high_nuclear["title"] == "[missile-tests, nuclear-tests] Underground nuclear test detected"
    assert "missile-tests (high, score" in high_nuclear["message"]
    # email: severity, score and terms per watchlist; the terms marked in the snippet
    mails = smtp.wait_for(2)
    assert sorted(m["Subject"] for m in mails) == [
        "[drills] Navy holds routine exercise", "[missile-tests] North Korea launches ballistic missile",
        "[missile-tests] Underground nuclear test detected"]
    (missile,) = [m for m in mails if "ballistic" in m["Subject"]]
    rich = missile.get_body(("html",)).get_content()
    assert "missile-tests</strong> (high, score" in rich
    assert ("<blockquote>The <mark>missile</mark> was <mark>launched</mark> at dawn &amp; flew east."
            "</blockquote>") in rich
    assert "missile-tests (high, score" in missile.get_body(("plain",)).get_content()


def test_check_summary_shows_severity_min_score_and_min_severity(tmp_path):
    cfg = tmp_path / "monitor.yaml"
    cfg.write_text(yaml.safe_dump({
        "watchlists": [{"name": "nuclear-tests", "query": '"nuclear test"', "severity": "critical",
                        "min_score": 2.5, "signals": [{"query": "yield", "weight": 1.5}],
                        "exclude": ['"video game"']}],
        "channels": [{"name": "pager", "url": "json://127.0.0.1:9/x", "min_severity": "critical"}],
    }))
    r = monitor("check", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "nuclear-tests: severity critical, min_score 2.5, 1 signal, 1 exclude" in r.stdout
    assert "pager: enabled; all watchlists; min_severity critical" in r.stdout


def test_admin_channel_hears_of_a_failing_source_and_its_recovery(tmp_path, feeds, receiver, smtp):
    sources = serve(feeds, seed_feeds())
    dead = f"http://127.0.0.1:{free_port()}/gone.xml"  # nothing listens there
    extra = {"alerts": {"source_alert_after": "0s"},
             "routes": [{"match": {"watchlist": "strategic-deployments"}, "channels": ["hook"]}]}
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path}/m.db", {**sources, "flaky": dead},
                       {"hook": receiver.url("/hook"), "admin": smtp.url(to="ops@example.org")}, **extra)
    r = monitor("run", "--once", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert len(hook_texts(receiver)) == 2  # the seeds alert as ever; admin gets no alerts
    (notice,) = smtp.wait_for(1)
    assert notice["Subject"].startswith("[monitor] source 'flaky' failing since")
    assert "connection refused" in _mail_text(notice.as_bytes()).lower()
    r = monitor("run", "--once", "--config", str(cfg))  # still failing: no second notice
    assert r.returncode == 0 and len(smtp.messages) == 1, r.stderr
    back = feeds.feed("/feeds/flaky.xml", rss("Flaky", "https://flaky.example/", []))
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path}/m.db", {**sources, "flaky": back},
                       {"hook": receiver.url("/hook"), "admin": smtp.url(to="ops@example.org")}, **extra)
    r = monitor("run", "--once", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    mails = smtp.wait_for(2)
    assert len(mails) == 2 and mails[1]["Subject"] == "[monitor] source 'flaky' recovered"
    assert len(hook_texts(receiver)) == 2


def test_a_source_may_have_its_own_source_alert_after(tmp_path, smtp):
    def dead() -> str:
        return f"http://127.0.0.1:{free_port()}/gone.xml"  # nothing listens there

    cfg = write_config(tmp_path, f"sqlite:///{tmp_path}/m.db", {}, {"admin": smtp.url(to="ops@example.org")},
                       alerts={"source_alert_after": "6h"})
    text = yaml.safe_load(cfg.read_text())
    text["sources"] = [{"name": "patient", "url": dead()},
                       {"name": "urgent", "url": dead(), "source_alert_after": "0s"}]
    cfg.write_text(yaml.safe_dump(text, sort_keys=False))
    r = monitor("check", "--config", str(cfg))
    assert r.returncode == 0 and "source notices after 6h (1 source with their own)" in r.stdout, r.stderr
    r = monitor("run", "--once", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    (notice,) = smtp.wait_for(1)
    assert notice["Subject"].startswith("[monitor] source 'urgent' failing since")
    time.sleep(0.5)
    assert len(smtp.messages) == 1  # 'patient' fails too, but not for 6 hours yet


def test_hostile_sources_under_load_do_not_stop_the_good_ones(tmp_path, feeds):
    """Many sources (so feeds are parsed in the worker-process pool), a tenth of them hostile:
    every good one completes the cycle and stores its items; every hostile one is recorded."""
    from datetime import UTC, datetime

    now = time.time()
    good = {}
    for k in range(150):
        items = [dict(title=f"Outlet {k} story {j}", link=f"https://o{k}.example/{j}", guid=f"o{k}-{j}",
                      description=f"Report number {j} from outlet {k} about the harbour works.",
                      published=datetime.fromtimestamp(now - 600 * j, UTC))
                 for j in range(5)]
        good[f"good{k}"] = feeds.feed(f"/many/good{k}.xml", rss(f"Outlet {k}", f"https://o{k}.example/", items))
    huge = rss("Huge", "https://huge.example/", [dict(title=f"Item {i}", link=f"https://huge.example/{i}",
                                                      description="quarterly figures " * 400) for i in range(600)])
    hostile = {}
    for copy in range(2):
        hostile |= {
            f"missing{copy}": feeds.raw(f"/h{copy}/missing.xml", 404, b"not here"),
            f"garbage{copy}": feeds.raw(f"/h{copy}/garbage.xml", 200, bytes(range(256)) * 64,
                                        {"Content-Type": "application/rss+xml"}),
            f"bomb{copy}": feeds.raw(f"/h{copy}/bomb.xml", 200, ENTITY_BOMB),
            f"xxe{copy}": feeds.raw(f"/h{copy}/xxe.xml", 200, XXE),
            f"huge{copy}": feeds.raw(f"/h{copy}/huge.xml", 200, huge),
            f"hang{copy}": feeds.hang(f"/h{copy}/hang.xml"),
            f"refused{copy}": f"http://127.0.0.1:{free_port()}/feed.xml",
            f"busy{copy}": feeds.raw(f"/h{copy}/busy.xml", 429, b"", {"Retry-After": "3600"}),
        }
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path}/m.db", {**good, **hostile}, {},
                       fetch={"timeout": "4s", "read_timeout": "3s", "connect_timeout": "2s", "max_bytes": "2MB"})
    t0 = time.monotonic()
    r = monitor("run", "--once", "--config", str(cfg), timeout=150)
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    assert elapsed < 90
    polls = {line.split("source=")[1].split()[0]: line for line in r.stderr.splitlines() if " poll " in line}
    assert all("status=ok" in polls[name] for name in good), [polls.get(n) for n in good if "status=ok" not in polls.get(n, "")]
    for name in hostile:
        if name.startswith(("missing", "garbage", "huge", "hang", "refused", "busy")):
            assert "status=error" in polls[name], polls[name]
    with sqlite3.connect(tmp_path / "m.db") as db:
        stored = db.execute("select count(*) from items i join sources s on s.id = i.source_id "
                            "where s.name like 'good%'").fetchone()[0]
        busy = db.execute("select next_poll_at from sources where name = 'busy0'").fetchone()[0]
    assert stored == 150 * 5
    assert busy is not None  # Retry-After pushed its next poll out (checked in test_polling)
    assert "parse pool broken" not in r.stderr


def test_run_once_prunes_story_keys_of_items_older_than_the_window(tmp_path, feeds, receiver):
    sources = serve(feeds, {"/wire.xml": rss("Wire", "https://wire.example/", [
        dict(title="North Korea test-fires new ICBM", link="https://wire.example/new",
             description="The missile was launched on a lofted trajectory, state media said on Tuesday, "
                         "and flew for more than an hour before landing in the sea.", published=ago(30))])})
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path}/m.db", sources, {"hook": receiver.url("/hook")},
                       stories={"window": "3d"})
    assert monitor("run", "--once", "--config", str(cfg)).returncode == 0
    with sqlite3.connect(tmp_path / "m.db") as db:  # make that item first seen 5 days ago
        db.execute("update items set first_seen_at = datetime('now', '-5 days')")
        assert db.execute("select count(*) from story_bands").fetchone()[0] > 0
    feeds.feed("/wire.xml", rss("Wire", "https://wire.example/", [
        dict(title="Another story entirely", link="https://wire.example/other",
             description="Nothing in this one is like the other one at all, not a single phrase of it is.",
             published=ago(5))]))
    r = monitor("run", "--once", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "pruned" in r.stderr
    with sqlite3.connect(tmp_path / "m.db") as db:  # only the new item's band rows and fingerprint are left
        new_id = db.execute("select id from items where link = 'https://wire.example/other'").fetchone()[0]
        assert db.execute("select distinct item_id from story_bands").fetchall() == [(new_id,)]
        assert db.execute("select item_id from fingerprints").fetchall() == [(new_id,)]
        assert db.execute("select count(*) from items").fetchone()[0] == 2
