"""bench/hostile_load.py: a small run (one source of every hostile kind beside 26 good
feeds) as a subprocess with --json, checking its figures against the databases and logs it
leaves, and that a failed check makes --strict exit 1. Skipped without nginx."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, load_script

SCRIPT = ROOT / "bench" / "hostile_load.py"
NGINX = Path("/usr/sbin/nginx")
FEEDS, ITEMS = 40, 3


@pytest.fixture(scope="module")
def bench():
    return load_script(SCRIPT, "bench_hostile_load")


@pytest.fixture(scope="module")
def small(tmp_path_factory, bench):
    if not NGINX.is_file():
        pytest.skip(f"{NGINX} is missing (apt-get install nginx-light)")
    work = tmp_path_factory.mktemp("hostile") / "work"
    cmd = [sys.executable, str(SCRIPT), "--feeds", str(FEEDS), "--hostile", str(len(bench.KINDS)),
           "--items", str(ITEMS), "--workdir", str(work), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout), work


def test_every_kind_once_and_the_good_sources_complete(small, bench):
    report, work = small
    assert report["hostile_by_kind"].keys() == set(bench.KINDS)
    for kind in bench.MUST_FAIL:
        assert report["hostile_by_kind"][kind] == {"error": 1}, kind
    checks = {c["name"]: c for c in report["targets"]}
    good = FEEDS - len(bench.KINDS)
    assert checks["good sources polled ok (mixed run)"]["value"] == f"{good}/{good}"
    assert all(c["pass"] for c in report["targets"]), report["targets"]
    # the figures are the databases' own
    with sqlite3.connect(work / "mixed.db") as db:
        stored = db.execute("SELECT count(*) FROM items i JOIN sources s ON s.id = i.source_id "
                            "WHERE s.name LIKE 'good%'").fetchone()[0]
        passwd = db.execute("SELECT count(*) FROM items WHERE title LIKE '%root:%' OR summary LIKE '%root:%'"
                            ).fetchone()[0]
    assert stored == good * ITEMS and passwd == 0
    assert checks["good items stored (mixed vs baseline)"]["value"] == f"{stored}/{stored}"
    log = (work / "mixed.log").read_text()
    assert "status=error" in log and "exceeds" in log and "429" in log


def test_a_failing_check_fails_strict(bench, capsys):
    runs = {label: {"seconds": 1.0, "tree_peak_mb": 100.0, "summary": {"statuses": {}},
                    "stored": {"good0": 2, "\0leaked": 0}, "polls": {"good0": "poll source=good0 status=ok"}}
            for label in ("baseline", "mixed")}
    runs["mixed"]["polls"]["hang0"] = "poll source=hang0 status=ok items=0"  # a hang that "succeeded"
    report = bench.report(runs, [("good0", "u")], [("hang0", "hang")], 2, 1, 2, "test")
    assert not all(c["pass"] for c in report["targets"])
    assert bench.emit(report, False, True, bench.print_report) == 1
    assert "FAIL" in capsys.readouterr().out
