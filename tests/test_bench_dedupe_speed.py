"""bench/dedupe_speed.py: a tiny run (two small sizes) through main --json, checking the
report's structure and that the measured reposts really joined their stories in the
database; the --strict logic and the size parsing. No timing assertions: speeds depend on
the machine."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import re
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
def tiny_run(bench, tmp_path_factory):
    """One run at 200 and 1,000 stored items, 50 measured items each, each size measured
    twice, in turn: at 200 in two rounds (30 and 20 items), the database put back before the
    second, at 1,000 in one; (report, db path, progress lines)."""
    db = tmp_path_factory.mktemp("dedupe") / "bench.db"
    mp = pytest.MonkeyPatch()
    mp.setattr(bench, "TEXT_POOL", 300)  # fewer texts to borrow: a quicker start
    mp.setattr(bench, "MAX_GROWTH", 0.5)  # at 200: 40 items a round at most (with plain and warm-up ones, 100)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = bench.main(["--sizes", "200,1000", "--measure", "50", "--poll", "10", "--repeats", "2",
                                 "--db", str(db), "--json"])
    finally:
        mp.undo()
    assert status == 0
    return json.loads(out.getvalue()), db, err.getvalue().splitlines()


@pytest.fixture(scope="module")
def tiny(tiny_run):
    """(report, db path) of ``tiny_run``."""
    return tiny_run[:2]


def test_a_row_per_size_with_times_and_ratios(tiny):
    report, _ = tiny
    rows = report["sizes"]
    assert [r["size"] for r in rows] == [200, 1000]
    assert rows[0]["stored"] == 200 and rows[0]["filled"] == 200
    assert rows[1]["stored"] == 1000 and rows[1]["filled"] == 800  # each size measured on a copy of its database
    for r in rows:
        assert r["items"] == 50
        assert r["ms_per_item"] > 0 and r["fingerprint_ms"] > 0 and r["commit_ms"] > 0 and r["plain_commit_ms"] > 0
        assert r["ms_per_item"] == pytest.approx(r["fingerprint_ms"] + r["commit_ms"], abs=2e-4)
        assert r["db_mb"] > 0 and r["peak_rss_growth_mb"] >= 0
    # at 200: a warm-up poll of each kind and 30 measured + 30 plain items, the database put back,
    # then a warm-up poll of each kind and 20 + 20; at 1,000 all 50 + 50 in one round
    assert [r["rounds"] for r in rows] == [2, 1]
    assert rows[0]["stored_most"] == 200 + 2 * 10 + 2 * 30
    assert rows[0]["items_after"] == 200 + 2 * 10 + 2 * 20
    assert rows[1]["stored_most"] == rows[1]["items_after"] == 1000 + 2 * 10 + 2 * 50
    assert rows[0]["ratio"] == 1.0
    assert rows[1]["ratio"] == pytest.approx(rows[1]["ms_per_item"] / rows[0]["ms_per_item"], abs=1e-3)
    assert rows[0]["plain_ratio"] == 1.0
    assert rows[1]["plain_ratio"] == pytest.approx(rows[1]["plain_commit_ms"] / rows[0]["plain_commit_ms"], abs=1e-3)
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
    assert bench_items == 2 * 10 + 2 * 50  # only the last measurement's: at 1,000, on a copy of the filled database
    assert bench_joined >= report["sizes"][-1]["reposts_joined"]
    # measured joins add items, not stories (at 1,000, measured in one round: all of them are there)
    assert (last["items_after"] - last["stories_after"]) - (last["stored"] - last["stories"]) >= last["reposts_joined"]


def test_each_size_is_measured_in_turn_and_shows_its_median_run(tiny_run):
    report, db, lines = tiny_run
    measuring = [re.sub(r" \(.* MB\)", "", line.split(": ")[0]) for line in lines if line.startswith("measuring at")]
    # each run starts at another size; the last one in order (a kept database ends at the largest)
    assert measuring == ["measuring at 1,000 stored items, run 1 of 2", "measuring at 200 stored items, run 1 of 2",
                         "measuring at 200 stored items, run 2 of 2", "measuring at 1,000 stored items, run 2 of 2"]
    assert report["repeats"] == 2
    base, big = report["sizes"]
    for r in (base, big):
        assert len(r["runs_ms_per_item"]) == len(r["runs_plain_commit_ms"]) == 2
        assert r["ms_per_item"] == pytest.approx(min(r["runs_ms_per_item"]), abs=1e-4)  # the lower of two
        assert r["plain_commit_ms"] in r["runs_plain_commit_ms"]
    assert base["runs_ratio"] == [1.0, 1.0]
    assert big["runs_ratio"] == [pytest.approx(a / b, abs=1e-3)
                                 for a, b in zip(big["runs_ms_per_item"], base["runs_ms_per_item"], strict=True)]
    # no snapshot left beside the kept database
    assert sorted(p.name for p in db.parent.iterdir() if not p.name.endswith(("-wal", "-shm"))) == ["bench.db"]


def test_the_median_run(bench):
    runs = [{"ms_per_item": x, "k": k} for k, x in enumerate([0.9, 0.7, 0.8])]
    assert bench.median_run(runs)["k"] == 2
    assert bench.median_run(runs[:2])["k"] == 1  # of two, the lower
    assert bench.median_run(runs[:1])["k"] == 0


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
    assert sum(1 for line in lines if line.strip().startswith(("200 ", "1,000 "))) == 4  # a row and its runs each
    assert sum(1 for line in lines if line.strip().startswith(("200  ms/item", "1,000  ms/item"))) == 2
    assert any("ratio" in line and "plain r." in line for line in lines)  # the header of the table
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


def test_repeats_must_be_at_least_one(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--repeats", "0"])
    assert "--repeats must be at least 1" in capsys.readouterr().err


def test_existing_db_is_refused(bench, tmp_path, capsys):
    db = tmp_path / "x.db"
    db.write_bytes(b"")
    with pytest.raises(SystemExit):
        bench.main(["--db", str(db)])
    assert "exists" in capsys.readouterr().err


@pytest.fixture(scope="module")
def colliding(bench, tmp_path_factory):
    """A run at 2,000 stored items, mostly synthetic, whose fill shares band keys with the
    measured new stories at 1 in 100 pairs; (report, db path)."""
    db = tmp_path_factory.mktemp("dedupe") / "colliding.db"
    return _run(bench, (2000,), n_measure=60, poll=20, db=db, real_min=50, collisions="0.01"), db


def _run(bench, sizes: tuple[int, ...], **kwargs) -> dict:
    """``bench.run`` with a small pool of texts (a quicker start)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench, "TEXT_POOL", 200)
        return bench.run(sizes, **kwargs)


def test_fill_items_share_band_keys_with_the_measured_new_stories_at_the_given_rate(colliding):
    report, db = colliding
    assert report["collisions"]["rates"] == {"brief": 0.01, "text": 0.01}
    assert 0 < report["collisions"]["copy_chance"]["brief"] <= 1
    conn = sqlite3.connect(db)
    try:
        def kind_of(where: str) -> dict[str, int]:
            return dict(conn.execute(
                "SELECT CASE WHEN f.words IS NULL THEN 'text' ELSE 'brief' END, count(*) FROM items i "
                f"JOIN fingerprints f ON f.item_id = i.id WHERE {where} "
                "AND EXISTS (SELECT 1 FROM story_bands b WHERE b.item_id = i.id) GROUP BY 1").fetchall())

        # synthetic fill items (a story of their own, a title ending in their id) and measured new stories
        synthetic = kind_of("i.guid LIKE 'fill-%' AND i.title LIKE '% ' || i.id")
        measured = kind_of("i.guid LIKE 'bench-%' AND i.link LIKE '%/n/%' AND i.id = "
                           "(SELECT min(o.id) FROM items o WHERE o.story_id = i.story_id)")
        shared = dict(conn.execute(
            "SELECT CASE WHEN f.words IS NULL THEN 'text' ELSE 'brief' END, count(DISTINCT b.item_id || '-' || o.item_id) "
            "FROM items i JOIN fingerprints f ON f.item_id = i.id JOIN story_bands b ON b.item_id = i.id "
            "JOIN story_bands o ON o.band_key = b.band_key AND o.item_id != b.item_id "
            "JOIN items x ON x.id = o.item_id AND x.guid LIKE 'fill-%' AND x.title LIKE '% ' || x.id "
            "WHERE i.guid LIKE 'bench-%' AND i.link LIKE '%/n/%' AND i.id = "
            "(SELECT min(s.id) FROM items s WHERE s.story_id = i.story_id) GROUP BY 1").fetchall())
    finally:
        conn.close()
    assert synthetic.get("brief", 0) > 500 and measured.get("brief", 0) > 10
    for kind in measured:
        expected = 0.01 * synthetic.get(kind, 0) * measured[kind]  # each new story: rate x fill items of its kind
        assert 0.5 * expected <= shared.get(kind, 0) <= 2 * expected, (kind, shared, expected)
    row = report["sizes"][0]
    assert row["false_candidates"] > 5
    assert row["reposts_joined"] >= 0.9 * row["reposts"]  # the candidates did not crowd out the copies


def test_without_collisions_no_fill_key_is_a_measured_storys(bench, tmp_path):
    db = tmp_path / "none.db"
    report = _run(bench, (300,), n_measure=20, poll=10, db=db, real_min=20, collisions="none")
    assert report["collisions"]["rates"] is None and report["sizes"][0]["false_candidates"] == 0
    conn = sqlite3.connect(db)
    try:
        shared = conn.execute(
            "SELECT count(*) FROM story_bands b JOIN items i ON i.id = b.item_id AND i.guid LIKE 'bench-%' "
            "JOIN story_bands o ON o.band_key = b.band_key JOIN items x ON x.id = o.item_id "
            "AND x.guid LIKE 'fill-%' AND x.title LIKE '% ' || x.id").fetchone()[0]
    finally:
        conn.close()
    assert shared == 0


#: Two briefs of different launches in one agency's wording: their content words alike (they
#: share a word band), their figures all different (so not one story).
LAUNCH = ("The army fired {} ballistic missiles at {} from {} launchers on the eastern coast on Tuesday, flying {} "
          "kilometres to {} metres high before falling into the sea {} minutes later, officials said. It was the "
          "{}th launch this year.")
STRIKE = ("Workers at {} car plants walked out for {} hours on Monday over pay, the union said, after talks on a {} "
          "percent rise broke down in the {}th round; {} more plants may join within {} days, {} delegates warned.")


def test_collision_rates_count_unrelated_pairs_sharing_a_band_key(bench, tmp_path):
    rng = random.Random(7)

    def word() -> str:
        return "".join(rng.choice("bcdfghklmnprstvz") + rng.choice("aeiou") for _ in range(3))

    rows = [{"id": f"x{k}", "title": " ".join(word() for _ in range(6)),
             "summary": " ".join(word() for _ in range(14)) + ".", "text": ""} for k in range(110)]
    rows += [
        {"id": "a", "title": "Army fires ballistic missiles into the sea", "summary": LAUNCH.format(3, 6, 2, 600, 50, 9, 12)},
        {"id": "b", "title": "Army fires ballistic missiles off the coast", "summary": LAUNCH.format(14, 15, 16, 450, 80, 17, 18)},
        {"id": "c", "title": "Army fires ballistic missiles into the sea", "summary": LAUNCH.format(3, 6, 2, 600, 50, 9, 12)},
        {"id": "e", "title": "Car workers strike over pay", "summary": STRIKE.format(21, 22, 23, 24, 25, 26, 27)},
        {"id": "f", "title": "Car workers walk out over pay", "summary": STRIKE.format(30, 31, 32, 33, 34, 35, 36)},
    ]
    for r in rows:
        r["text"] = ""
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "dup_groups.jsonl").write_text(json.dumps({"group": "g", "ids": ["e", "f"]}) + "\n", encoding="utf-8")
    fps = {r["id"]: dedupe.fingerprint(r["title"], r["summary"]) for r in rows}
    for x, y in (("a", "b"), ("e", "f")):  # the premise: alike enough to share a key, not one story
        assert set(fps[x].bands) & set(fps[y].bands) and dedupe.similarity(fps[x], fps[y]) == 0
    got = bench.collision_rates(tmp_path)
    assert got["items"] == {"brief": len(rows)}
    # a-b and c-b; not a-c (a copy), not e-f (one group), and no two fillers
    assert got["false_pairs"] == {"brief": 2}
    assert got["brief"] == pytest.approx(2 / (len(rows) * (len(rows) - 1) / 2)) and got["text"] == 0
    assert bench.collision_rates(tmp_path / "missing") is None


def _small_bench(bench, tmp_path, future: int = 40):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench, "TEXT_POOL", 100)
        b = bench.open_bench(tmp_path / "apart.db", 3, bench.DEFAULT_CORPUS, bench.timedelta(days=7), future=future)
    bench.fill(b, 300, real_min=50)
    return b


def test_measuring_apart_hands_back_the_generator_state(bench, tmp_path):
    """measure_apart runs in a process of its own; the texts it drew and the new stories it
    took count in this one, as when ``measure`` runs in this process."""
    b = _small_bench(bench, tmp_path)
    try:
        serial, taken, before = b.serial, b.future_next, b.rng.getstate()
        draw = b.rng.random()  # the next draw, were the state not moved on
        b.rng.setstate(before)
        m = bench.measure_apart(b, 20, 10, 0.3)
        items, _ = b.counts()
    finally:
        b.store.close()
    assert m["items"] == 20 and m["rounds"] == 1 and m["reposts"] == 6 and m["new_stories"] == 14
    assert m["reposts_joined"] >= 5
    # a warm-up poll of each kind (10 + 10 items) and 20 measured + 20 plain ones, in the database
    assert b.serial == serial + 60 and items == 300 + 60
    assert b.future_next == taken + 7 + 14  # the warm-up's new stories and the measured ones
    assert b.rng.random() != draw  # moved on as the measuring process drew


def test_a_failed_measuring_process_is_an_error(bench, tmp_path, monkeypatch):
    b = _small_bench(bench, tmp_path, future=0)
    monkeypatch.setattr(bench, "CHILD_FLAG", "--no-such-option")  # the started process refuses it
    try:
        with pytest.raises(RuntimeError, match="process of its own failed"):
            bench.measure_apart(b, 10, 10, 0.3)
    finally:
        b.store.close()
