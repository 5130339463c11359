"""bench/dedupe_quality.py: the scoring arithmetic, and a small corpus through the real store."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, load_script

SCRIPT = ROOT / "bench" / "dedupe_quality.py"

WIRE = ("North Korea fired two short-range ballistic missiles into the sea off its east coast on "
        "Tuesday, the South Korean military said, the third launch this month as the allies began drills.")
OTHER = ("Pakistan test-fired a nuclear-capable medium-range ballistic missile on Wednesday, the army "
         "said, days after a short-range test that drew protests from its neighbour.")
COLGATE = ("Colgate-Palmolive will cut about 4,400 jobs and close a third of its factories worldwide as "
           "part of a four-year restructuring, the consumer goods maker said on Tuesday.")


@pytest.fixture(scope="module")
def dq():
    return load_script(SCRIPT, "dedupe_quality")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _item(id_, title, text, date="2024-08-01", origin="kcna", link=None):
    return {"id": id_, "origin": origin, "date": date, "title": title, "summary": text, "text": text,
            "link": link}


@pytest.fixture
def corpus(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    _write_jsonl(d / "items.jsonl", [
        _item("a", "DPRK fires missiles", WIRE),
        _item("b", "DPRK fires missiles", WIRE),                      # natural verbatim copy of a
        _item("c", "Pakistan tests missile", OTHER, date="2024-08-02"),
        _item("d", "Colgate to cut jobs", COLGATE, date=None, origin="agnews"),
        _item("e", "Colgate to cut workforce", "Consumer goods maker said today it would close plants.",
              date=None, origin="agnews"),                             # same event, other words: missed
    ])
    repost = _item("a-r1", "DPRK fires missiles | Wire Daily", "SEOUL (WD) — " + WIRE +
                   "\nThis story first appeared on Wire and is reposted here with permission.",
                   date="2024-08-02", origin="repost", link="https://wiredaily.example/2024/08/dprk?utm_source=x")
    repost["repost_of"] = "a"
    repost["transforms"] = ["dateline", "credit"]
    _write_jsonl(d / "reposts.jsonl", [repost])
    _write_jsonl(d / "dup_groups.jsonl", [
        {"group": "nat-1", "ids": ["a", "b"], "kind": "verbatim", "note": ""},
        {"group": "nat-2", "ids": ["d", "e"], "kind": "same-event", "note": ""},
    ])
    _write_jsonl(d / "hard_negatives.jsonl", [{"ids": ["a", "c"], "note": "different launches"}])
    return d


def test_gold_clusters_join_reposts_to_their_originals_group(dq, corpus):
    c = dq.load_corpus(corpus)
    gold = dq.gold_clusters(c)
    assert gold["a"] == gold["b"] == gold["a-r1"] == "nat-1"
    assert gold["d"] == gold["e"] == "nat-2"
    assert gold["c"] == "c"


def test_score_counts_pairs_by_kind_and_hard_negatives(dq, corpus):
    c = dq.load_corpus(corpus)
    gold = dq.gold_clusters(c)
    # a made-up result: a, b, a-r1 and c merged; d and e apart
    stories = {"a": 1, "b": 1, "a-r1": 1, "c": 1, "d": 2, "e": 3}
    r = dq.score(c, stories, gold, examples=5)
    assert (r["true_pairs"], r["false_pairs"], r["gold_pairs"]) == (3, 3, 4)
    assert r["precision"] == 0.5 and r["recall"] == 0.75
    assert r["repost_pairs"] == [1, 1] and r["natural_pairs"] == [1, 2]
    assert r["natural_by_kind"] == {"same-event": [0, 1], "verbatim": [1, 1]}
    assert r["hard_negative_pairs"] == [1, 1]
    assert r["examples"]["merged_hard_negatives"] == [("a", "c")]


def test_run_stores_the_corpus_through_the_store_and_scores_it(dq, corpus):
    r = dq.run(corpus)
    res = r["result"]
    assert res["items"] == 6
    assert res["repost_pairs"] == [1, 1]  # the repost (dateline, credit, site suffix) joined a
    assert res["natural_by_kind"]["verbatim"] == [1, 1]
    assert res["natural_by_kind"]["same-event"] == [0, 1]  # different words: not merged
    assert res["hard_negative_pairs"] == [0, 1]
    assert res["precision"] == 1.0 and res["false_pairs"] == 0
    targets = {t["name"]: t["pass"] for t in r["targets"]}
    assert targets["pairwise precision"] and not targets["recall, natural-group pairs"]
    assert r["baseline"]["natural_pairs"][0] >= 1  # the feed reader merges the identical headline


def test_main_prints_the_report_and_strict_fails_on_a_missed_target(dq, corpus, capsys):
    assert dq.main(["--corpus", str(corpus)]) == 0
    out = capsys.readouterr().out
    assert "pairwise precision" in out and "feed reader" in out and "FAIL" in out
    assert dq.main(["--corpus", str(corpus), "--strict", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["result"]["items"] == 6
