"""bench/dedupe_speed.py: a tiny run (two small sizes) through main --json, checking the
report's structure and that the measured reposts really joined their stories in the
database; the --strict logic and the size parsing. No timing assertions: speeds depend on
the machine."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sqlite3
from collections import Counter

import pytest
from conftest import ROOT, load_script

from monitor import dedupe

SCRIPT = ROOT / "bench" / "dedupe_speed.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(SCRIPT, "bench_dedupe_speed")


@pytest.fixture(scope="module")
def tiny(bench, tmp_path_factory):
    """One run at 200 and 1,000 stored items, 50 measured items each; (report, db path)."""
    db = tmp_path_factory.mktemp("dedupe") / "bench.db"
    mp = pytest.MonkeyPatch()
    mp.setattr(bench, "TEXT_POOL", 300)  # fewer texts to borrow: a quicker start
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            status = bench.main(["--sizes", "200,1000", "--measure", "50", "--poll", "10", "--db", str(db), "--json"])
    finally:
        mp.undo()
    assert status == 0
    return json.loads(out.getvalue()), db


def test_a_row_per_size_with_times_and_ratios(tiny):
    report, _ = tiny
    rows = report["sizes"]
    assert [r["size"] for r in rows] == [200, 1000]
    assert rows[0]["stored"] == 200 and rows[0]["filled"] == 200
    assert rows[1]["stored"] == 1000  # topped up past the first size's measured items
    assert rows[1]["filled"] == 1000 - rows[0]["items_after"]
    for r in rows:
        assert r["items"] == 50
        assert r["ms_per_item"] > 0 and r["fingerprint_ms"] > 0 and r["commit_ms"] > 0 and r["plain_commit_ms"] > 0
        assert r["ms_per_item"] == pytest.approx(r["fingerprint_ms"] + r["commit_ms"], abs=2e-4)
        assert r["db_mb"] > 0 and r["peak_rss_growth_mb"] >= 0
        # warm-up polls and 50 measured + 50 plain items were stored
        assert r["items_after"] == r["stored"] + 2 * 10 + 2 * 50
    assert rows[0]["ratio"] == 1.0
    assert rows[1]["ratio"] == pytest.approx(rows[1]["ms_per_item"] / rows[0]["ms_per_item"], abs=1e-3)
    names = [t["name"] for t in report["targets"]]
    assert names == ["ms/item at 200 stored", "ms/item at 1,000 stored", "cost at 1,000 / at 200",
                     "peak RSS growth at 1,000", "reposts joined their story"]
    assert all(isinstance(t["pass"], bool) for t in report["targets"])


def test_reposts_joined_their_stories(tiny):
    report, db = tiny
    for r in report["sizes"]:
        assert r["reposts"] == 15 and r["new_stories"] == 35
        assert r["reposts_joined"] >= 14  # each found its original's story through the lookup
        assert r["new_joined"] <= 1
    assert report["targets"][-1]["pass"]
    # in the database: every joined item added an item but no story
    conn = sqlite3.connect(db)
    try:
        items = conn.execute("SELECT count(*) FROM items").fetchone()[0]
        stories = conn.execute("SELECT count(*) FROM stories").fetchone()[0]
        fingerprints = conn.execute("SELECT count(*) FROM fingerprints").fetchone()[0]
        bench_items = conn.execute("SELECT count(*) FROM items WHERE guid LIKE 'bench-%'").fetchone()[0]
        bench_joined = conn.execute(
            "SELECT count(*) FROM items i WHERE i.guid LIKE 'bench-%' AND EXISTS "
            "(SELECT 1 FROM items o WHERE o.story_id = i.story_id AND o.id < i.id)").fetchone()[0]
    finally:
        conn.close()
    last = report["sizes"][-1]
    assert items == last["items_after"] == fingerprints
    assert stories == last["stories_after"] < items
    assert bench_items == 2 * (2 * 10 + 2 * 50)
    assert bench_joined >= sum(r["reposts_joined"] for r in report["sizes"])
    for r in report["sizes"]:  # measured joins add items, not stories
        assert (r["items_after"] - r["stories_after"]) - (r["stored"] - r["stories"]) >= r["reposts_joined"]


def test_fill_rows_look_like_commit_poll_rows(tiny):
    _, db = tiny
    conn = sqlite3.connect(db)
    try:
        fill = conn.execute("SELECT at FROM fingerprints WHERE item_id = (SELECT min(id) FROM items)").fetchone()[0]
        stored = conn.execute("SELECT at FROM fingerprints WHERE item_id = (SELECT max(id) FROM items "
                              "WHERE guid LIKE 'bench-%' AND content != '')").fetchone()
        per_item = Counter(n for n, in conn.execute("SELECT count(*) FROM story_bands GROUP BY item_id"))
        items = conn.execute("SELECT count(*) FROM items").fetchone()[0]
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    assert len(fill) == len("2026-01-02 03:04:05.000000") and fill[10] == " "
    assert stored is None or len(stored[0]) == len(fill)
    # as many band rows per item as a fingerprint has: shingle bands, or a brief's word bands
    assert set(per_item) == {dedupe.BANDS, dedupe.WORD_BANDS}
    assert per_item.total() > items / 2  # most items have text enough for bands
    assert journal == "wal"  # restored after the fill


def test_text_report(bench, tiny, capsys):
    report, _ = tiny
    bench.print_report(report)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("dedupe speed bench:")
    assert sum(1 for line in lines if line.strip().startswith(("200 ", "1,000 "))) == 2
    assert any(line.strip().startswith("reposts joined their story") and line.rstrip().endswith(("PASS", "FAIL"))
               for line in lines)


def test_strict_exit_status(bench, monkeypatch, capsys):
    def fake(passes):
        def run(*_args, **_kwargs):
            return {"targets": [{"name": "x", "value": 1, "target": "y", "pass": passes}]}
        return run

    monkeypatch.setattr(bench, "run", fake(False))
    assert bench.main(["--json"]) == 0
    assert bench.main(["--json", "--strict"]) == 1
    monkeypatch.setattr(bench, "run", fake(True))
    assert bench.main(["--json", "--strict"]) == 0
    capsys.readouterr()


def test_sizes_must_ascend(bench):
    assert bench._sizes("10_000,100000") == (10_000, 100_000)
    for bad in ("1000,100", "0,10", "a,b", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            bench._sizes(bad)


def test_existing_db_is_refused(bench, tmp_path, capsys):
    db = tmp_path / "x.db"
    db.write_bytes(b"")
    with pytest.raises(SystemExit):
        bench.main(["--db", str(db)])
    assert "exists" in capsys.readouterr().err
