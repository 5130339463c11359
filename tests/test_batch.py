"""``monitor match`` (monitor.batch): the JSON lines it prints, and ``--jobs``: a JSON Lines file
split over worker processes gives byte for byte the output of the serial path, bad lines
included (reported on stderr with their line numbers, exit status 1); feeds and stdin are
read serially."""
from __future__ import annotations

import io
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from feedserver import rss

from monitor import batch
from monitor.matcher import Matcher
from monitor.model import Signal, WatchlistHit, WatchlistSpec

WATCHLISTS = [
    {"name": "missile-tests", "query": 'missile* OR "ballistic rocket" OR icbm', "severity": "critical",
     "signals": [{"query": "launch*", "weight": 1.5}], "exclude": ['"video game"']},
    {"name": "nuclear", "query": "nuclear NEAR/3 (test OR tests OR device)", "severity": "high"},
    {"name": "drills", "signals": [{"query": "exercise*"}, {"query": "drill*"}], "min_score": 2, "severity": "info"},
    {"name": "cafes", "query": "title:cafe OR lead:espresso"},
]
SPECS = [
    WatchlistSpec("missile-tests", 'missile* OR "ballistic rocket" OR icbm', signals=(Signal("launch*", 1.5),),
                  exclude=('"video game"',), severity="critical"),
    WatchlistSpec("nuclear", "nuclear NEAR/3 (test OR tests OR device)"),
    WatchlistSpec("drills", None, signals=(Signal("exercise*"), Signal("drill*")), min_score=2, severity="info"),
    WatchlistSpec("cafes", "title:cafe OR lead:espresso"),
]

WORDS = tuple(" ".join([
    "the a of officials said on monday missile missiles launched launch ballistic rocket nuclear test tests",
    "device drills exercise exercises navy video game cafe espresso Café weather market report korea’s",
    "Korea's north south ICBM stocks fell rose"]).split(" "))


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "monitor.yaml"
    cfg.write_text(yaml.safe_dump({"database": {"url": f"sqlite:///{tmp_path}/never.db"}, "watchlists": WATCHLISTS}))
    return cfg


def _line(rng: random.Random, n: int) -> str:
    """One input line: mostly items, some bad lines, blank lines and odd values."""
    r = rng.random()
    if r < 0.02:
        return "not json"
    if r < 0.03:
        return json.dumps([1, 2, 3])
    if r < 0.035:
        return '{"id": "x", "title": "unterminated'
    if r < 0.04:
        return '{"id": "y"} trailing'
    if r < 0.05:
        return ""
    words = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    d: dict = {"title": words(rng.randint(3, 10)), "summary": words(rng.randint(10, 40))}
    if rng.random() < 0.9:
        d["id"] = f"item-{n}"
    elif rng.random() < 0.5:
        d["id"] = n  # a number: printed as a string
    if rng.random() < 0.3:
        d["text"] = words(rng.randint(20, 140))
    if rng.random() < 0.8:
        d["link"] = f"https://news.example/{n}?q=\u00e9"
    elif rng.random() < 0.5:
        d["link"] = n  # not a string: printed as JSON
    return json.dumps(d, ensure_ascii=rng.random() < 0.5)


def _jsonl(path: Path, min_bytes: int, seed: int = 1) -> Path:
    """A JSON Lines file of at least ``min_bytes``, with \\n, \\r\\n and \\r line ends."""
    rng = random.Random(seed)
    parts: list[bytes] = []
    size = n = 0
    while size < min_bytes:
        n += 1
        end = rng.choices([b"\n", b"\r\n", b"\r"], weights=[90, 8, 2])[0]
        line = _line(rng, n).encode("utf-8") + end
        if rng.random() < 0.002:
            line = b'{"id": "bad-utf8", "title": "caf\xe9 missile"}' + end  # invalid UTF-8: replaced
        parts.append(line)
        size += len(line)
    path.write_bytes(b"".join(parts))
    return path


def _monitor(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MONITOR_DATABASE_URL"}
    return subprocess.run([sys.executable, "-m", "monitor", *args], capture_output=True, timeout=300, cwd=ROOT,
                          input=stdin, env=env)


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("batch")
    items = _jsonl(tmp / "items.jsonl", batch.PARALLEL_MIN_BYTES + 200_000)
    assert items.stat().st_size > batch.PARALLEL_MIN_BYTES
    return _config(tmp), items


@pytest.fixture(scope="module")
def serial(big):
    cfg, items = big
    return _monitor("match", "--config", str(cfg), "--jobs", "1", str(items))


def test_serial_output(big, serial):
    _, items = big
    assert serial.returncode == 1  # there are bad lines
    out = serial.stdout.decode("utf-8")
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) > 1000
    for row in rows:
        assert list(row) == ["id", "link", "watchlists"]
        for w in row["watchlists"]:
            assert list(w) == ["name", "score", "severity", "terms"]
            assert w["severity"] in ("info", "high", "critical")
    fired = {w["name"] for row in rows for w in row["watchlists"]}
    assert fired == {"missile-tests", "nuclear", "drills", "cafes"}
    assert any(w["severity"] == "critical" for row in rows for w in row["watchlists"])
    errors = serial.stderr.decode("utf-8").splitlines()
    assert errors and all(f"{items}:" in e and "invalid JSON line" in e for e in errors)
    assert "Traceback" not in serial.stderr.decode("utf-8")
    # the line numbers are those of the file (\n, \r\n and \r each end a line), and exactly
    # the bad lines are reported
    lines = io.TextIOWrapper(io.BytesIO(items.read_bytes()), encoding="utf-8", errors="replace").readlines()
    numbers = [int(e.split(f"{items}:", 1)[1].split(":", 1)[0]) for e in errors]
    assert numbers == [n for n, line in enumerate(lines, 1) if line.strip() and _bad(line)]


def _bad(line: str) -> bool:
    try:
        return not isinstance(json.loads(line), dict)
    except ValueError:
        return True


@pytest.mark.parametrize("jobs", ["2", "3", "0"])
def test_jobs_give_the_serial_output_byte_for_byte(big, serial, jobs):
    cfg, items = big
    r = _monitor("match", "--config", str(cfg), "--jobs", jobs, str(items))
    assert r.returncode == serial.returncode == 1
    assert r.stdout == serial.stdout
    assert r.stderr == serial.stderr


def test_stdin_is_read_serially_with_the_same_output(big, serial):
    cfg, items = big
    r = _monitor("match", "--config", str(cfg), "--jobs", "2", "-", stdin=items.read_bytes())
    assert r.returncode == 1
    assert r.stdout == serial.stdout
    assert r.stderr.decode().replace("-:", f"{items}:") == serial.stderr.decode()


def test_feed_file(tmp_path):
    cfg = _config(tmp_path)
    feed = tmp_path / "feed.xml"
    filler = " ".join(["Weather report for the region."] * 1500)  # large enough for workers
    feed.write_bytes(rss("Test feed", "https://news.example/", [
        {"title": "North Korea launches ballistic missile", "link": "https://news.example/a", "guid": "a",
         "description": f"The missile was launched at dawn. {filler}"},
        {"title": "Weather", "link": "https://news.example/b", "guid": "b", "description": f"Sunny. {filler}"},
        {"title": "Cafe opens", "link": "https://news.example/c", "guid": "c", "description": "Espresso."},
    ] * 12))
    assert feed.stat().st_size > batch.PARALLEL_MIN_BYTES  # but a feed: read serially
    one = _monitor("match", "--config", str(cfg), "--jobs", "1", str(feed))
    two = _monitor("match", "--config", str(cfg), "--jobs", "2", str(feed))
    assert one.returncode == two.returncode == 0, one.stderr
    assert one.stdout == two.stdout and one.stderr == two.stderr
    rows = [json.loads(line) for line in one.stdout.decode().splitlines()]
    assert len(rows) == 36
    first = rows[0]
    assert first["id"] == "a" and first["link"] == "https://news.example/a"
    # missile* true in the title alone (1 x title_weight 2) + launch* too (1.5 x 2); terms in
    # order of first occurrence, title first
    assert first["watchlists"] == [{"name": "missile-tests", "score": 5.0, "severity": "critical",
                                    "terms": ["launches", "missile", "launched"]}]
    assert rows[1]["watchlists"] == []
    assert rows[2]["watchlists"] == [{"name": "cafes", "score": 2.0, "severity": "high", "terms": ["cafe", "espresso"]}]


def test_small_file_and_missing_file(tmp_path):
    cfg = _config(tmp_path)
    items = tmp_path / "few.jsonl"
    items.write_text('{"id": "1", "title": "ICBM launched", "link": null}\n\n{"title": "nothing"}\n')
    r = _monitor("match", "--config", str(cfg), "--jobs", "2", str(items))
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines() == [
        '{"id": "1", "link": null, "watchlists": [{"name": "missile-tests", "score": 5.0, "severity": "critical", '
        '"terms": ["icbm", "launched"]}]}',
        '{"id": "3", "link": null, "watchlists": []}',
    ]
    r = _monitor("match", "--config", str(cfg), str(tmp_path / "absent.jsonl"))
    assert r.returncode != 0 and b"no such file" in r.stderr


# --------------------------------------------------------------------------- in process


@pytest.fixture(scope="module")
def matcher():
    return Matcher(SPECS)


def _serial(matcher: Matcher, path: Path, capsys) -> tuple[int, str, str]:
    out = io.StringIO()
    with path.open("rb") as f:
        lines = io.TextIOWrapper(f, encoding="utf-8", errors="replace")
        code = batch._match_records(matcher, batch._jsonl_records(lines, str(path)), out, sys.stderr)
    return code, out.getvalue(), capsys.readouterr().err


@pytest.mark.parametrize("workers", [2, 3, 5, 40])
def test_match_file_parallel_equals_serial(tmp_path, matcher, capsys, workers):
    path = _jsonl(tmp_path / "items.jsonl", 60_000, seed=workers)
    code, want, want_err = _serial(matcher, path, capsys)
    out = io.StringIO()
    got_code = batch.match_file_parallel(matcher, path, str(path), workers, out)
    assert (got_code, out.getvalue(), capsys.readouterr().err) == (code, want, want_err)
    assert code == 1 and want_err


def test_ranges_cover_the_data_on_line_boundaries():
    rng = random.Random(3)
    for _ in range(200):
        data = b"".join(rng.choice([b"ab\n", b"\n", b"xyz", b"\r\n", b"q\r"]) for _ in range(rng.randint(0, 40)))
        for parts in (1, 2, 3, 7):
            ranges = batch._ranges(data, parts)
            assert len(ranges) <= parts
            assert b"".join(data[a:b] for a, b in ranges) == data
            assert all(data[b - 1:b] == b"\n" for _, b in ranges[:-1])


def test_jsonl_errors_are_those_of_json_loads():
    bad = ["not json", "[1, 2]", '"text"', "{", '{"a": 1} x', '{"a": 1}{"b": 2}', "\ufeff{}", "{'a': 1}", "nan"]
    got = list(batch._jsonl_records(bad, "in"))
    for n, (line, message) in enumerate(zip(bad, got, strict=True), 1):
        try:
            d = json.loads(line)
            reason = "not a JSON object" if not isinstance(d, dict) else None
        except ValueError as e:
            reason = str(e)
        assert message == f"in:{n}: invalid JSON line ({reason})"


def test_jsonl_records_fields():
    lines = ['{"id": 7, "title": "T", "summary": "s", "text": "t", "content": "c", "link": "L"}',
             '  {"title": null, "summary": "", "text": "only text"}  ',
             '{"id": null, "summary": 5}',
             '{"title": "T", "summary": "same", "text": ""}']
    assert list(batch._jsonl_records(lines, "in", first_line=10)) == [
        ("7", "L", "T", "s\nt\nc"), ("11", None, "", "only text"), ("12", None, "", "5"), ("13", None, "T", "same")]


def test_a_summary_repeated_in_the_text_is_matched_once():
    # as the daemon's Item.text: a summary that is part of the body is not joined again, so
    # explain does not show every snippet twice
    lines = ['{"summary": "Lead para.", "text": "Lead para. More text."}',
             '{"summary": "Lead para. More text.", "text": "Lead para."}',
             '{"summary": "Other", "text": "Body", "content": "Body"}']
    assert [r[3] for r in batch._jsonl_records(lines, "in")] == [
        "Lead para. More text.", "Lead para. More text.", "Other\nBody"]


def test_line_formatter_equals_json_dumps():
    fmt = batch._LineFormatter()
    hits = [WatchlistHit("a", 2.0, ("x", "ü"), "high"), WatchlistHit("b\"q", 1.5, (), "info"),
            WatchlistHit("c", math.inf, ("t",), "critical"), WatchlistHit("d", 1e-7, ("\n",), "high")]
    for rid, link, hs in [("1", None, hits), ("é", "https://x/é", hits[:1]), ("2", 5, []), ("3", None, hits[1:])]:
        want = json.dumps({"id": rid, "link": link, "watchlists": [
            {"name": h.name, "score": h.score, "severity": h.severity, "terms": list(h.terms)} for h in hs]},
            ensure_ascii=False) + "\n"
        assert fmt(rid, link, hs) == want == batch.format_line(rid, link, hs)
        assert fmt(rid, link, hs) == want  # again, from the cache
