"""``monitor backtest``: one watchlist over the items already stored, read-only, on real SQLite
and PostgreSQL databases filled through the store API."""
from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from conftest import ROOT

from monitor.config import load_config
from monitor.explain import backtest_command
from monitor.model import FetchResult, Item
from monitor.store import NewItem, Store

NOW = datetime.now(UTC).replace(microsecond=0)
OK = FetchResult(url="http://127.0.0.1/feed.xml", status="ok", http_status=200)

# (guid, source, days ago first seen, fresh, title, summary)
ITEMS = [
    ("old", "wire", 40, True, "Missile launched long ago", "Outside the default 30 days."),
    ("a", "wire", 10, True, "North Korea launches ballistic missile", "The missile flew east."),
    ("quiet", "agency", 9, True, "Weather report", "Sunny."),
    ("stale", "agency", 5, False, "Missile launch from the archive", "First seen already old."),
    ("contest", "wire", 3, True, "Contest results", "A testament to testing; no launch."),
    ("b", "agency", 1, True, "Iran test-launches missile", "A missile was launched at noon."),
]


def fill(url: str) -> None:
    s = Store(url)
    s.upgrade()
    s.sync_sources([("wire", "http://127.0.0.1/wire.xml"), ("agency", "http://127.0.0.1/agency.xml")])
    for guid, source, days, fresh, title, summary in ITEMS:
        seen = NOW - timedelta(days=days)
        item = Item(guid=guid, link=f"https://example.org/{guid}", canonical_link=f"https://example.org/{guid}",
                    title=title, summary=summary, content="", published=seen)
        s.commit_poll(source, OK, [NewItem(item, fresh)], now=seen)
    s.close()


def write_config(tmp_path: Path, db_url: str, **watchlist) -> Path:
    cfg = tmp_path / "monitor.yaml"
    cfg.write_text(yaml.safe_dump({
        "database": {"url": db_url},
        "watchlists": [{"name": "missile-tests", "query": "missile AND launch*", **watchlist},
                       {"name": "drills", "query": "exercise"}],
    }))
    return cfg


def backtest(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MONITOR_DATABASE_URL"}
    return subprocess.run([sys.executable, "-m", "monitor", "backtest", "--config", str(cfg), *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)


def story_lines(out: str) -> list[str]:
    return [line for line in out.splitlines()[1:-1]]


def _day(days: int) -> str:
    return (NOW - timedelta(days=days)).strftime("%Y-%m-%d %H:%M")


def _counts(url: str) -> dict[str, int]:
    s = Store(url)
    try:
        return s.counts()
    finally:
        s.close()


def test_backtest_prints_one_line_per_story_and_a_summary_and_writes_nothing(tmp_path, db_url):
    fill(db_url)
    cfg = write_config(tmp_path, db_url)
    before = _counts(db_url)
    sqlite_file = tmp_path / "monitor.db"
    digest = hashlib.sha256(sqlite_file.read_bytes()).hexdigest() if sqlite_file.exists() else None

    r = backtest(cfg, "--watchlist", "missile-tests")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("backtest of 'missile-tests' (severity high, min_score 1) on items first seen since ")
    assert story_lines(r.stdout) == [
        f"{_day(10)}  wire  score 2  North Korea launches ballistic missile  [launches, missile]",
        f"{_day(1)}  agency  score 2  Iran test-launches missile  [launches, missile, launched]",
    ]
    assert lines[-1] == ("4 items scanned, 2 matched, 2 stories; 1 stale item skipped (first seen already "
                         "older than alerts.max_age; --include-stale scans them)")

    r = backtest(cfg, "-w", "missile-tests", "--since", "100d", "--include-stale")
    assert [line.split("  ")[3] for line in story_lines(r.stdout)] == [
        "Missile launched long ago", "North Korea launches ballistic missile", "Missile launch from the archive",
        "Iran test-launches missile"]
    assert r.stdout.splitlines()[-1] == "6 items scanned, 4 matched, 4 stories"

    r = backtest(cfg, "-w", "missile-tests", "--since", "2d")
    assert [line.split("  ")[3] for line in story_lines(r.stdout)] == ["Iran test-launches missile"]
    assert r.stdout.splitlines()[-1] == "1 item scanned, 1 matched, 1 story"

    r = backtest(cfg, "-w", "missile-tests", "--limit", "1")
    assert len(story_lines(r.stdout)) == 1
    assert r.stdout.splitlines()[-1].startswith("1 item scanned, 1 matched, 1 story (stopped at --limit 1)")

    r = backtest(cfg, "-w", "drills")
    assert r.returncode == 0 and story_lines(r.stdout) == []
    assert r.stdout.splitlines()[-1].startswith("4 items scanned, 0 matched, 0 stories")

    assert _counts(db_url) == before
    if digest is not None:
        assert hashlib.sha256(sqlite_file.read_bytes()).hexdigest() == digest


def test_backtest_uses_the_watchlist_as_now_written(tmp_path, db_url):
    fill(db_url)
    # edited: a required query, a weighted signal and a threshold only a title hit reaches
    cfg = write_config(tmp_path, db_url, query="missile", signals=[{"query": "launch*", "weight": 1}],
                       min_score=3.5, title_weight=2, exclude=["iran"])
    r = backtest(cfg, "-w", "missile-tests", "--since", "100d")
    assert r.returncode == 0, r.stderr
    # "old": missile (title, 2) + launched (title, 2) = 4; "a": 2 + 2 = 4; "b" is excluded
    assert [line.split("  ")[2:4] for line in story_lines(r.stdout)] == [
        ["score 4", "Missile launched long ago"], ["score 4", "North Korea launches ballistic missile"]]


def test_unknown_watchlist_is_exit_2_with_a_suggestion(tmp_path):
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path}/none.db")
    r = backtest(cfg, "--watchlist", "missile-test")
    assert r.returncode == 2
    assert r.stderr.strip() == "error: unknown watchlist 'missile-test' (did you mean 'missile-tests'?)"
    r = backtest(cfg, "--watchlist", "zzz")
    assert r.returncode == 2 and "known: missile-tests, drills" in r.stderr
    r = backtest(cfg, "--watchlist", "drills", "--since", "soon")
    assert r.returncode == 2 and "invalid duration 'soon'" in r.stderr
    assert not (tmp_path / "none.db").exists()


def test_missing_or_unmigrated_database_is_exit_1_and_nothing_is_created(tmp_path, db_url):
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path}/data/none.db")
    r = backtest(cfg, "-w", "drills")
    assert r.returncode == 1 and "no database at" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "data").exists()
    s = Store(db_url)  # exists (created by connecting), never migrated
    with s.engine.begin() as c:
        c.exec_driver_sql("create table unrelated (x integer)")
    s.close()
    r = backtest(write_config(tmp_path, db_url), "-w", "drills")
    assert r.returncode == 1 and "has no schema yet" in r.stderr and "monitor db upgrade" in r.stderr
    s = Store(db_url)
    from sqlalchemy import inspect
    assert "items" not in inspect(s.engine).get_table_names()  # the backtest migrated nothing
    s.close()


def test_reads_in_batches_and_reports_progress(tmp_path):
    url = f"sqlite:///{tmp_path}/m.db"
    fill(url)
    cfg = load_config(write_config(tmp_path, url), env={})
    out, progress = io.StringIO(), io.StringIO()
    code = backtest_command(cfg, "missile-tests", timedelta(days=100), include_stale=True, out=out,
                            progress=progress, progress_every=0, batch_size=2)
    assert code == 0
    assert out.getvalue().splitlines()[-1] == "6 items scanned, 4 matched, 4 stories"
    reports = progress.getvalue().splitlines()
    assert reports[0].startswith("scanned 1 items, 1 matched, 1 stories (")
    assert reports[-1].startswith("scanned 6 items, 4 matched, 4 stories (")
