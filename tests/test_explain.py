"""``monitor match --explain`` / ``--near-misses`` / ``--json``: the report's layout on explanations
as the matcher's contract defines them (model.Explanation), and the command end to end with the
real matcher on real input files."""
from __future__ import annotations

import json
import subprocess
import sys

import yaml
from conftest import ROOT

from monitor.explain import context, render_item
from monitor.model import ClauseExplanation, Explanation

TITLE = "North Korea test-fires ballistic missile"
TEXT = ("The missile was launched from Pyongyang at dawn, officials said.\n"
        "It was not a video game.")


def span(field: str, source: str, needle: str, nth: int = 0) -> tuple[str, int, int]:
    start = -1
    for _ in range(nth + 1):
        start = source.index(needle, start + 1)
    return (field, start, start + len(needle))


# --------------------------------------------------------------------------- context snippets


def test_context_marks_the_occurrence_and_cuts_at_word_boundaries():
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma"
    start = text.index("kappa")
    out = context(text, start, start + 5, width=40)
    assert "[[kappa]]" in out and out.startswith("…") and out.endswith("…")
    assert len(out) <= 40 + 6  # the width plus the marks and ellipses
    inner = out.strip("…")
    assert inner == inner.strip() and text.replace("kappa", "[[kappa]]").find(inner) >= 0  # whole words only


def test_context_collapses_whitespace_and_needs_no_ellipsis_for_short_text():
    assert context("a\n\n  missile\tflew", 5, 12) == "a [[missile]] flew"
    assert context("missile", 0, 7, mark=str.upper) == "MISSILE"


# --------------------------------------------------------------------------- the report


def explanation(matched: bool = True, excluded: bool = False) -> Explanation:
    return Explanation(
        name="missile-tests", matched=matched, score=3.5 if not excluded else 3.5, min_score=2.0,
        excluded=excluded, severity="critical",
        clauses=(
            ClauseExplanation("query", "missile*", 1.0, True, True, 2.0, ("missile",),
                              (span("title", TITLE, "missile"), span("text", TEXT, "missile"))),
            ClauseExplanation("signal", "launch*", 1.5, True, False, 1.5, ("launched",),
                              (span("text", TEXT, "launched"),)),
            ClauseExplanation("signal", "icbm", 2.0, False, False, 0.0, (), ()),
            ClauseExplanation("exclude", '"video game"', 0.0, excluded, False, 0.0,
                              ("video game",) if excluded else (),
                              (span("text", TEXT, "video game"),) if excluded else ()),
        ))


def test_report_of_a_fired_watchlist():
    out = render_item("a", "https://x.example/a", TITLE, TEXT, [explanation()])
    assert out == (
        "== a: North Korea test-fires ballistic missile\n"
        "   https://x.example/a\n"
        "  FIRED: missile-tests [critical] score 3.5 >= min_score 2\n"
        "    query   true   weight 1, +2 (in title):  missile*\n"
        "      'missile' title: …test-fires ballistic [[missile]]\n"
        "                text: The [[missile]] was launched from…\n"
        "    signal  true   weight 1.5, +1.5:  launch*\n"
        "      'launched' text: The missile was [[launched]] from Pyongyang at dawn,…\n"
        "    signal  false  weight 2, +0:  icbm\n"
        "    exclude false  no veto:  \"video game\"\n"
        "\n")


def test_report_of_an_excluded_near_miss_and_of_items_with_nothing_to_show():
    out = render_item("b", None, TITLE, TEXT, [explanation(matched=False, excluded=True)], near_misses=True)
    lines = out.splitlines()
    assert lines[0] == "== b: North Korea test-fires ballistic missile"
    assert lines[1] == "  near miss: missile-tests [critical] score 3.5 >= min_score 2; EXCLUDED (an exclude query is true)"
    assert "    exclude true   vetoes:  \"video game\"" in lines
    assert "      'video game' text: …said. It was not a [[video game]]." in lines
    assert render_item("c", None, "Contest results", "", []) == "c: Contest results -- no watchlist fired\n"
    assert render_item("c", None, "", "", [], near_misses=True) == "c: (untitled) -- no watchlist terms occur\n"


def test_report_limits_occurrences_per_term():
    text = "missile " * 7
    spans = tuple(("text", i * 8, i * 8 + 7) for i in range(7))
    e = Explanation("w", True, 1, 1, False, "high", (
        ClauseExplanation("query", "missile", 1, True, False, 1, ("missile",), spans),))
    lines = render_item("d", None, "T", text, [e]).splitlines()
    assert sum("[[missile]]" in line for line in lines) == 3
    assert lines[-2].strip() == "(+4 more)"


# --------------------------------------------------------------------------- end to end


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monitor", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, input=stdin)


def _config(tmp_path):
    cfg = tmp_path / "monitor.yaml"
    cfg.write_text(yaml.safe_dump({
        "database": {"url": f"sqlite:///{tmp_path}/never.db"},
        "watchlists": [
            {"name": "missile-tests", "query": "missile*", "severity": "critical", "min_score": 2,
             "signals": [{"query": "launch*", "weight": 1.5}, {"query": "icbm", "weight": 2}],
             "exclude": ['"video game"']},
            {"name": "drills", "signals": [{"query": "exercise*"}], "min_score": 2, "severity": "info"},
        ],
    }))
    items = tmp_path / "items.jsonl"
    items.write_text("\n".join(json.dumps(d) for d in [
        {"id": "fired", "title": "North Korea test-fires ballistic missile",
         "summary": "The missile was launched from Pyongyang at dawn.", "link": "https://x.example/a"},
        {"id": "vetoed", "title": "Missile launched", "summary": "A scene in a video game."},
        {"id": "weak", "title": "Navy statement", "summary": "Routine exercises continue."},
        {"id": "nothing", "title": "Contest results", "summary": "A testament to testing."},
    ]) + "\nnot json\n")
    return cfg, items


def test_explain_end_to_end(tmp_path):
    cfg, items = _config(tmp_path)
    r = _run("match", "--explain", "--config", str(cfg), str(items))
    assert r.returncode == 1, r.stderr  # the bad line
    assert "items.jsonl:5: invalid JSON line" in r.stderr and "Traceback" not in r.stderr
    out = r.stdout
    assert "== fired: North Korea test-fires ballistic missile" in out
    # missile* in the title: 1 x title_weight 2; launch* in the text: 1.5
    assert "  FIRED: missile-tests [critical] score 3.5 >= min_score 2" in out
    assert "weight 1, +2 (in title):  missile*" in out
    assert "[[missile]]" in out and "[[launched]]" in out
    assert "vetoed: Missile launched -- no watchlist fired" in out  # excluded: not shown without --near-misses
    assert "weak: Navy statement -- no watchlist fired" in out
    assert "nothing: Contest results -- no watchlist fired" in out
    assert out.rstrip().endswith("4 items: 1 fired")
    assert not (tmp_path / "never.db").exists()


def test_near_misses_end_to_end(tmp_path):
    cfg, items = _config(tmp_path)
    r = _run("match", "--near-misses", "--config", str(cfg), str(items))
    out = r.stdout
    assert "  near miss: missile-tests [critical] score" in out and "EXCLUDED" in out
    assert "[[video game]]" in out
    assert "  near miss: drills [info] score 1 < min_score 2" in out
    assert "nothing: Contest results -- no watchlist terms occur" in out
    assert out.rstrip().endswith("4 items: 1 fired, 2 with near misses only")


def test_explain_json(tmp_path):
    cfg, items = _config(tmp_path)
    r = _run("match", "--explain", "--json", "--config", str(cfg), "-", stdin=items.read_text())
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["id"] for row in rows] == ["fired", "vetoed", "weak", "nothing"]
    (e,) = rows[0]["explanations"]
    assert (e["name"], e["matched"], e["score"], e["severity"]) == ("missile-tests", True, 3.5, "critical")
    assert [c["kind"] for c in e["clauses"]] == ["query", "signal", "signal", "exclude"]
    assert rows[3]["explanations"] == []
