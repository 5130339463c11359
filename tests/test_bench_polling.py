"""bench/polling.py: a tiny run (20 feeds of 5 items, 50 sources for the memory phase) as a
subprocess with --json, checking that every figure is there with sane values, that the ratios
agree with the times and that the work was real (the items in the SQLite databases); the
feed files, the log summary, the --strict logic and a missing nginx. No timing assertions:
speeds depend on the machine. Skipped without nginx."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import pytest
from conftest import ROOT, load_script

SCRIPT = ROOT / "bench" / "polling.py"
NGINX = Path("/usr/sbin/nginx")
FEEDS, ITEMS, BIG, BIG_ITEMS = 20, 5, 50, 5
CHANGED = 2  # 10% of 20 feeds, per change round

PHASES = ("first_poll", "steady", "naive", "limit_full", "limit_steady", "floor", "cli_first", "cli_steady", "memory")


@pytest.fixture(scope="module")
def bench():
    return load_script(SCRIPT, "bench_polling")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny run; (report, work directory)."""
    if not NGINX.is_file():
        pytest.skip(f"{NGINX} is missing (apt-get install nginx-light)")
    work = tmp_path_factory.mktemp("polling") / "work"
    cmd = [sys.executable, str(SCRIPT), "--feeds", str(FEEDS), "--items", str(ITEMS), "--big", str(BIG),
           "--big-items", str(BIG_ITEMS), "--workdir", str(work), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout), work


def count(db: Path, table: str = "items") -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


def test_every_phase_has_positive_times_and_consistent_ratios(tiny):
    report, work = tiny
    phases = report["phases"]
    assert set(phases) == set(PHASES)
    assert report["workdir"] == str(work)
    naive = phases["naive"]["seconds"]
    for name in PHASES:
        p = phases[name]
        assert p["seconds"] > 0, name
        assert p["feeds"] == (BIG if name == "memory" else FEEDS)
        assert p["vs_naive"] == pytest.approx(naive / p["seconds"], rel=0.02, abs=0.01), name
    r = report["ratios"]
    assert r["first_vs_naive"] == phases["first_poll"]["vs_naive"]
    assert r["steady_vs_naive"] == phases["steady"]["vs_naive"]
    assert r["steady_vs_limit"] == pytest.approx(phases["steady"]["seconds"] / phases["limit_steady"]["seconds"],
                                                 rel=0.02, abs=0.01)
    assert r["naive_vs_floor"] == phases["floor"]["vs_naive"]
    assert r["first_vs_limit"] == pytest.approx(phases["first_poll"]["seconds"] / phases["limit_full"]["seconds"],
                                                rel=0.02, abs=0.01)
    for name in ("first_poll", "steady"):
        lag = phases[name]["lag_ms"]
        assert lag["samples"] > 0
        assert 0 <= lag["p50"] <= lag["p99"] <= lag["max"]
        assert phases[name]["config_and_daemon_seconds"] > 0
        assert 10 < phases[name]["rss_before_mb"] <= phases[name]["peak_rss_mb"] < 10_000
    for name in ("cli_first", "cli_steady", "memory"):
        p = phases[name]
        assert p["exit"] == 0
        assert 10 < p["peak_rss_mb"] <= p["tree_peak_mb"] < 10_000
        assert p["tree_pss_sum_peak_mb"] <= p["tree_peak_mb"]
        assert p["tree_processes"] >= 1
        assert p["rss_method"] == ("GNU time %M" if Path("/usr/bin/time").is_file() else "VmHWM sampled every 50 ms")
    names = [t["name"] for t in report["targets"]]
    assert names == ["first poll: faster than naive", "steady cycle: faster than naive",
                     "steady cycle: time / limit (cond.)", f"peak memory at {BIG} sources (MB)",
                     "event-loop lag p99, first poll (ms)", "event-loop lag p99, steady cycle (ms)"]
    assert all(isinstance(t["pass"], bool) for t in report["targets"])
    assert report["targets"][3]["value"] == phases["memory"]["tree_peak_mb"]


def test_the_work_was_real(tiny):
    report, work = tiny
    ph = report["phases"]
    first, steady = ph["first_poll"], ph["steady"]
    # first poll: every item of every feed stored (wire copies too: they join a story)
    assert first["status"] == {"ok": FEEDS} and first["failed"] == 0
    assert first["items"] == first["new"] == first["stored"] == first["db_items"] == FEEDS * ITEMS
    assert 0 < first["stories"] <= FEEDS * ITEMS
    assert first["alerts_stored"] == first["alerts"] >= 0
    # steady cycle: the changed feeds answered 200 with one new item each, the others 304
    assert steady["changed"] == CHANGED
    assert steady["status"] == {"ok": CHANGED, "not_modified": FEEDS - CHANGED}
    assert steady["new"] == steady["stored"] == CHANGED
    assert steady["items"] == CHANGED * (ITEMS + 1)
    assert count(work / "m.db") == FEEDS * ITEMS + CHANGED
    # baselines saw every item (after the first change round)
    assert ph["naive"]["items"] == ph["limit_full"]["items"] == FEEDS * ITEMS + CHANGED
    assert ph["naive"]["errors"] == 0
    assert ph["limit_full"]["status"] == {"200": FEEDS}
    assert ph["limit_steady"]["status"] == {"200": CHANGED, "304": FEEDS - CHANGED}
    # the floor: every item of the files as they were after the second change round, each stage
    # timed, every row inserted; its time is for the naive run's items on every CPU
    floor = ph["floor"]
    assert floor["items"] == FEEDS * ITEMS + 2 * CHANGED
    assert set(floor["stages_cpu_s"]) == {"parse", "normalize", "fingerprint", "match", "insert"}
    assert all(v >= 0 for v in floor["stages_cpu_s"].values())
    assert floor["cpu_s"] == pytest.approx(sum(floor["stages_cpu_s"].values()), abs=0.01)
    assert floor["seconds"] == pytest.approx(floor["ms_per_item"] * ph["naive"]["items"] / 1000 / floor["cpus"],
                                             abs=0.002)
    assert count(work / "floor.db") == count(work / "floor.db", "fingerprints") == floor["items"]
    assert count(work / "floor.db", "story_bands") > 0
    # monitor run --once: a fresh database after two change rounds, then a third
    cli_first, cli_steady = ph["cli_first"], ph["cli_steady"]
    assert cli_first["stored"] == FEEDS * ITEMS + 2 * CHANGED
    assert cli_steady["status"] == {"ok": CHANGED, "not_modified": FEEDS - CHANGED}
    assert cli_steady["stored"] == CHANGED
    assert count(work / "cli.db") == FEEDS * ITEMS + 3 * CHANGED
    # memory phase: every source, every item
    assert ph["memory"]["status"] == {"ok": BIG}
    assert count(work / "big.db") == ph["memory"]["stored"] == BIG * BIG_ITEMS
    assert count(work / "big.db", "sources") == BIG
    assert count(work / "m.db", "alerts") == first["alerts_stored"] + steady["alerts_stored"]


def test_text_report(bench, tiny, capsys):
    report, _ = tiny
    bench.print_report(report)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("polling bench:")
    for label in ("naive: feedparser.parse(url)", "project first poll", "project steady cycle",
                  "monitor run --once, first poll", f"monitor run --once, {BIG} sources x {BIG_ITEMS}"):
        assert any(line.strip().startswith(label) for line in lines), label
    assert any("event-loop lag, steady cycle: p50" in line for line in lines)
    assert any(line.strip().startswith("floor of a first poll") and "at most" in line for line in lines)
    targets = [line for line in lines if line.rstrip().endswith((" OK", " MISSED"))]
    assert len(targets) == len(report["targets"])


def test_feed_files(bench, tmp_path):
    now = datetime.now(UTC)
    corpus = [(f"Title {i}", f"Summary number {i} of the corpus.") for i in range(200)]
    feeds = bench.FeedSet(tmp_path, "feeds", 3, 4, corpus, 1, now)
    feeds.write_all()
    d = feedparser.parse((tmp_path / "feeds" / "feeds00002.xml").read_bytes())
    assert not d.bozo and d.feed.title == "Outlet 2"
    assert [e.link for e in d.entries] == [f"https://outlet2.example/{j}" for j in (3, 2, 1, 0)]  # newest first
    for e in d.entries:
        published = datetime(*e.published_parsed[:6], tzinfo=UTC)
        assert now - timedelta(days=1, seconds=1) <= published <= now
        assert e.title.startswith("Title ") and "<p>Summary number" in e.summary
    assert feeds.document(2) == feeds.document(2)  # deterministic
    feeds.add_items([2], now + timedelta(seconds=5))
    d = feedparser.parse((tmp_path / "feeds" / "feeds00002.xml").read_bytes())
    assert len(d.entries) == 5 and d.entries[0].link == "https://outlet2.example/4"
    assert bench.changed_count(2000, 0.1) == 200 and bench.changed_count(20, 0.1) == 2
    assert bench.changed_count(3, 0.01) == 1


def test_log_summary_and_percentile(bench, tmp_path):
    log = tmp_path / "x.log"
    log.write_text(
        "2026-01-01T00:00:00.000Z INFO monitor.daemon started sources=2\n"
        "2026-01-01T00:00:00.100Z INFO monitor.pipeline poll source=s0 status=ok http=200 items=5 new=5 alerts=1 "
        "duration_ms=12 next_in=900s\n"
        "2026-01-01T00:00:00.200Z WARNING monitor.pipeline poll source=s1 status=error items=0 new=0 alerts=0 "
        'duration_ms=3 error="HTTP 404"\n'
        "2026-01-01T00:00:00.300Z INFO monitor.daemon once done sources=2 failed=1 new=5 alerts=1 sent=0\n",
        encoding="utf-8")
    s = bench.log_summary(log)
    assert s["statuses"] == {"ok": 1, "error": 1} and s["polls"] == 2
    assert (s["items"], s["new"], s["alerts"]) == (5, 5, 1)
    assert s["errors"] == ["HTTP 404"] and s["once_done"]["failed"] == "1"
    assert bench.percentile([], 99) == 0.0
    values = list(range(1, 101))
    assert bench.percentile(values, 50) == 50 and bench.percentile(values, 99) == 99
    assert bench.percentile(values, 100) == 100 and bench.percentile([7.0], 99) == 7.0


def test_strict_exit_status(bench, monkeypatch, capsys):
    def fake(passes):
        def run(_settings):
            return {"targets": [{"name": "x", "value": 1, "target": "y", "pass": passes}]}
        return run

    exists = ["--nginx", sys.executable]  # any executable: run() is replaced
    monkeypatch.setattr(bench, "run", fake(False))
    assert bench.main([*exists, "--json"]) == 0
    assert bench.main([*exists, "--json", "--strict"]) == 1
    monkeypatch.setattr(bench, "run", fake(True))
    assert bench.main([*exists, "--json", "--strict"]) == 0
    capsys.readouterr()


def test_missing_nginx_exits_2(bench, tmp_path, capsys):
    assert bench.main(["--nginx", str(tmp_path / "nginx"), "--feeds", "2"]) == 2
    assert "nginx not found" in capsys.readouterr().err


def test_tree_sampler_sees_the_child_and_not_the_wrapper(bench):
    proc = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(30 << 20); time.sleep(1)"])
    try:
        time.sleep(0.5)
        sampler = bench.TreeSampler(proc.pid)
        sampler.sample()
        assert sampler.main == proc.pid and sampler.processes == 1
        assert sampler.main_hwm_kb > 30 << 10 and sampler.peak_rss_kb > 30 << 10 and sampler.peak_pss_kb > 0
    finally:
        proc.wait()
    if not Path("/usr/bin/time").is_file():
        return
    proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", "/dev/null", "sleep", "1"])
    try:
        time.sleep(0.5)
        sampler = bench.TreeSampler(proc.pid, wrapped=True)
        sampler.sample()
        assert sampler.main is not None and sampler.main != proc.pid and sampler.processes == 1
    finally:
        proc.wait()
