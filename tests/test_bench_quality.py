"""bench/watchlist_quality.py: the scoring arithmetic on a tiny synthetic corpus."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, load_script

SCRIPT = ROOT / "bench" / "watchlist_quality.py"


@pytest.fixture(scope="module")
def wq():
    return load_script(SCRIPT, "watchlist_quality")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _item(id_, origin, title, text="", summary=""):
    return {"id": id_, "origin": origin, "date": None, "title": title, "summary": summary, "text": text,
            "link": None}


def _label(id_, missile, deploy=False, note=""):
    return {"id": id_, "missile_test": missile, "nuclear_test": False, "strategic_deployment": deploy,
            "note": note}


@pytest.fixture
def corpus(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    _write_jsonl(d / "items.jsonl", [
        _item("ag-1", "agnews", "Missile launch today", "A launch."),           # TP
        _item("ag-2", "agnews", "Stocks fall", "A missile launch was cancelled."),  # FP
        _item("kcna-1", "kcna", "Rocket fired", "Nothing else."),              # FN
        _item("kcna-2", "kcna", "Title only page", "", summary="missile launch"),  # TP via summary
        _item("ag-3", "agnews", "Weather", "Sunny."),                          # TN
        _item("csis-1", "csis", "Missile launch", "SRBM."),                    # TP
        _item("csis-2", "csis", "Border clash", "Shots."),                     # FN
    ])
    _write_jsonl(d / "labels.jsonl", [
        _label("ag-1", True), _label("ag-2", False, note="cancelled"), _label("kcna-1", True),
        _label("kcna-2", True), _label("ag-3", False),
        {**_label("csis-1", True), "strategic_deployment": None},
        {**_label("csis-2", True), "strategic_deployment": None},
    ])
    _write_jsonl(d / "reposts.jsonl", [
        {**_item("ag-2-r1", "repost", "Stocks fall | Site", "A missile launch was cancelled."), "repost_of": "ag-2"},
        {**_item("kcna-1-r1", "repost", "UPDATE: missile launch", "x"), "repost_of": "kcna-1"},
    ])
    return d


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "monitor.yaml"
    path.write_text('watchlists:\n  - name: missile-tests\n    query: \'"missile launch"\'\n'
                    '  - name: other\n    query: weather\n', encoding="utf-8")
    return path


def test_counts_and_f1(wq, corpus, config):
    report = wq.score(corpus, config, errors_for=["missile-tests"])
    news = report.row("missile-tests", "news")
    assert (news.tp, news.fp, news.fn, news.n) == (2, 1, 1, 5)
    assert news.precision == pytest.approx(2 / 3)
    assert news.recall == pytest.approx(2 / 3)
    assert news.f1 == pytest.approx(2 / 3)
    csis = report.row("missile-tests", "csis")
    assert (csis.tp, csis.fp, csis.fn) == (1, 0, 1)
    assert csis.f1 == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    both = report.row("missile-tests", "all")
    assert (both.tp, both.fp, both.fn, both.n) == (3, 1, 2, 7)
    reposts = report.row("missile-tests", "reposts")
    assert (reposts.tp, reposts.fp, reposts.fn) == (1, 1, 0)  # scored with the original's labels
    assert report.skipped_watchlists == ["other"]
    assert report.no_watchlist == ["nuclear_test", "strategic_deployment"]
    kinds = {(e["kind"], e["id"]) for e in report.errors["missile-tests"]}
    assert kinds == {("FP", "ag-2"), ("FN", "kcna-1"), ("FN", "csis-2"), ("FP", "ag-2-r1")}


def test_baselines_skip_null_labels(wq, corpus, config):
    report = wq.score(corpus, config)
    naive = report.row("baseline:naive-missile", "news")
    assert (naive.tp, naive.fp, naive.fn) == (2, 1, 1)
    deploy = report.row("baseline:feed-reader-rule", "csis")
    assert deploy.n == 0 and deploy.as_dict()["f1"] is None


def test_main_json_and_strict(wq, corpus, config, capsys):
    assert wq.main(["--corpus", str(corpus), "--config", str(config), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {t["holds"] for t in out["targets"]} == {False}
    assert wq.main(["--corpus", str(corpus), "--config", str(config), "--strict"]) == 1
