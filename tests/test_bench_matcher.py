"""bench/matcher.py: a tiny run as a subprocess (the report's structure, and full agreement
between the Matcher and the naive evaluator), the naive evaluator on hand-made cases, and the
report/--strict logic. No timing assertions: speeds depend on the machine."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, load_script

from monitor.matcher import Matcher

SCRIPT = ROOT / "bench" / "matcher.py"
TARGETS = {"matcher items/s (one core)", "matcher / naive baseline", "compile seconds", "agreement with naive"}


@pytest.fixture(scope="module")
def bench():
    return load_script(SCRIPT, "bench_matcher")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)


def test_tiny_run(tmp_path):
    r = _run("--items", "500", "--watchlists", "50", "--repeat", "2", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["items"], out["watchlists"], out["seed"]) == (500, 50, 1)
    assert out["terms"] > 50
    assert 0 < out["items_firing_fraction"] < 1 and out["hits_per_item"] > 0  # agreement is not on empty answers
    assert out["item_chars_mean"] > 100
    assert out["matcher"]["items_per_s"] > 0 and len(out["matcher"]["pass_seconds"]) == 2
    assert out["baseline"]["items"] == 500 and out["baseline"]["items_per_s"] > 0
    assert out["ratio"] > 0
    assert out["compile"]["median_seconds"] > 0 and len(out["compile"]["build_seconds"]) == 2
    assert out["agreement"] == {"items": 500, "agree": 500, "rate": 1.0, "examples": []}
    assert {t["name"] for t in out["targets"]} == TARGETS
    assert all(isinstance(t["pass"], bool) for t in out["targets"])
    assert "Matcher.match over 500 items" in r.stderr  # progress goes to stderr


def test_synthetic_vocabulary_without_a_corpus(tmp_path):
    r = _run("--items", "300", "--watchlists", "40", "--baseline-items", "200", "--repeat", "1", "--seed", "5",
             "--corpus", str(tmp_path / "missing"), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["corpus"] == "synthetic"
    assert out["agreement"]["items"] == 200 and out["agreement"]["rate"] == 1.0
    assert out["hits_per_item"] > 0


def test_text_report(tmp_path):
    r = _run("--items", "200", "--watchlists", "30", "--repeat", "1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("matcher bench: 30 watchlists")
    assert any("Matcher.match, one core" in line and "items/s" in line for line in lines)
    assert any("naive regex baseline" in line for line in lines)
    assert any(line.strip().startswith("agreement with naive") and line.rstrip().endswith("PASS") for line in lines)


def test_strict_exit_status(bench, monkeypatch, capsys):
    def fake(passes):
        def run(*_args, **_kwargs):
            return {"targets": [{"name": n, "value": 1, "target": "x", "pass": passes} for n in sorted(TARGETS)]}
        return run

    monkeypatch.setattr(bench, "run", fake(False))
    assert bench.main(["--json"]) == 0
    assert bench.main(["--json", "--strict"]) == 1
    monkeypatch.setattr(bench, "run", fake(True))
    assert bench.main(["--json", "--strict"]) == 0
    capsys.readouterr()


def _leaf(bench, *words: str, prefix: bool = False):
    return ("leaf", bench.Leaf(tuple(words), prefix))


@pytest.mark.parametrize("title, text", [
    ("North Korea's missile test", ""),
    ("Test of a missile", "Nothing else."),
    ("", "The missile was, they said, never tested."),
    ("Ballistic-missile launch", "A launcher and launches."),
    ("Quiet day", " ".join(["word"] * 99) + " espresso cafe"),
    ("Quiet day", " ".join(["word"] * 100) + " espresso"),
    ("Café “missile” — test", "Korea’s missile test-fire"),
])
def test_naive_evaluator_agrees_with_the_matcher(bench, title, text):
    b = bench
    watchlists = [
        b.Watchlist("near", ("near", (_leaf(b, "missile"),), (_leaf(b, "test"),), 1, False)),
        b.Watchlist("onear", ("near", (_leaf(b, "missile"),), (_leaf(b, "test"),), 2, True)),
        b.Watchlist("phrase", ("or", (_leaf(b, "ballistic", "missile"), _leaf(b, "korea", "missile")))),
        b.Watchlist("prefix", ("and", (_leaf(b, "launch", prefix=True), ("not", _leaf(b, "launcher"))))),
        b.Watchlist("lead", ("field", "lead", _leaf(b, "espresso"))),
        b.Watchlist("title", ("or", (("field", "title", _leaf(b, "missile")), ("field", "text", _leaf(b, "cafe"))))),
        b.Watchlist("scored", _leaf(b, "missile"), signals=[(_leaf(b, "test"), 1.5)], min_score=3.0),
        b.Watchlist("signals", None, signals=[(_leaf(b, "quiet"), 1.0), (_leaf(b, "word"), 1.0)], min_score=2.0),
        b.Watchlist("alias", ("and", (("alias", "x", (b.Leaf(("test", "fire")), b.Leaf(("tested",)))),
                                       _leaf(b, "missile"))),
                    aliases={"x": ["test fire", "tested"]}),
    ]
    matcher = Matcher([w.spec() for w in watchlists])
    naive = [b.NaiveWatchlist(w) for w in watchlists]
    got = {h.name: h.score for h in matcher.match(title, text)}
    assert got == b.naive_match(naive, title, text)


def test_generated_queries_parse_and_cover_the_language(bench):
    import random

    rng = random.Random(2)
    vocab = bench.load_vocabulary(ROOT / "no-corpus", rng)
    gen = bench.WatchlistGenerator(vocab, rng)
    specs = [gen.make(i).spec() for i in range(300)]
    Matcher(specs)  # every query parses
    text = " ".join(s.query or "" for s in specs)
    for needle in (" NEAR/", " ONEAR/", '"', "*", "title:", "text:", "lead:", "@", " AND NOT ", " OR "):
        assert needle in text, needle
    assert any(s.signals for s in specs) and any(s.exclude for s in specs)
    assert any(s.query is None for s in specs) and any(s.min_score != 1.0 for s in specs)
    assert all(3 <= _terms(s) <= 8 for s in specs if s.query)


def _terms(spec) -> int:
    """Terms of a generated query, an @alias counting its entries."""
    import re

    query = re.sub(r"\b(title|text|lead):", " ", spec.query)
    written = re.findall(r'"[^"]*"|@\w+|[a-z][a-z*]*', query)
    return len(written) + sum(len(entries) - 1 for entries in (spec.aliases or {}).values())
