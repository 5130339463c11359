"""The matcher: whole-word boolean matching of many watchlists, the terms it reports, and
agreement with a plain regex oracle on corpus items."""
from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from monitor.matcher import Matcher, WatchlistQueryError, _word_string_general, word_string
from monitor.model import WatchlistHit
from monitor.query import QuerySyntaxError, words_of

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CORPUS = SHARED / "corpus" / "items.jsonl"


def hits(query: str, title: str, text: str = "") -> list[WatchlistHit]:
    return Matcher([("w", query)]).match(title, text)


def matches(query: str, title: str, text: str = "") -> bool:
    return bool(hits(query, title, text))


def terms(query: str, title: str, text: str = "") -> tuple[str, ...]:
    found = hits(query, title, text)
    assert found, "expected a match"
    return found[0].terms


# --------------------------------------------------------------------------- words

@pytest.mark.parametrize("text", ["Missile test today", "a TEST.", "(test)", "test", "pre; test-fire"])
def test_whole_word_matches(text):
    assert matches("test", text)


@pytest.mark.parametrize("text", ["testament", "contest", "attest", "tests", "retest", "test_case", "test2"])
def test_never_inside_a_word(text):
    assert not matches("test", text)


def test_case_insensitive_both_ways():
    assert matches("MISSILE", "a missile")
    assert matches("missile", "A MISSILE")
    assert matches("Ракета", "РАКЕТА взлетела")


@pytest.mark.parametrize("text, surface", [
    ("they launch today", "launch"),
    ("it LAUNCHED", "launched"),
    ("more launches", "launches"),
    ("launchpad fire", "launchpad"),
])
def test_prefix_wildcard(text, surface):
    assert terms("launch*", text) == (surface,)


@pytest.mark.parametrize("text", ["relaunch", "launc", "pre-launc"])
def test_prefix_wildcard_is_anchored_at_word_start(text):
    assert not matches("launch*", text)


def test_possessive_and_hyphen_split_words():
    assert terms("korea", "North Korea's missile") == ("korea",)
    assert matches("fire", "a test-fire")
    assert matches("test", "a test-fire")


# --------------------------------------------------------------------------- phrases

@pytest.mark.parametrize("text", [
    "a ballistic missile", "Ballistic-Missile", "ballistic\n  missile", "ballistic, missile", "ballistic (missile)",
])
def test_phrase_matches_consecutive_words_across_punctuation(text):
    assert matches('"ballistic missile"', text)


@pytest.mark.parametrize("text", ["ballistic cruise missile", "missile ballistic", "ballistics missile", "ballistic missiles"])
def test_phrase_needs_the_exact_words_in_order(text):
    assert not matches('"ballistic missile"', text)


def test_phrase_prefix_on_last_word():
    assert terms('"ballistic missil*"', "two ballistic missiles and a ballistic missile") == (
        "ballistic missiles", "ballistic missile")


def test_punctuated_query_term_matches_any_punctuation_between_words():
    for text in ["test-fire", "test fire", "TEST–FIRE", "test - fire"]:
        assert matches("test-fire", text), text
    assert not matches("test-fire", "testfire")
    assert terms("test-fire*", "it test-fired two") == ("test-fired",)
    assert terms("U.S.", "The U.S. Navy") == ("u.s",)
    assert not matches("U.S.", "US Navy")


def test_phrase_does_not_span_title_into_text():
    assert not matches('"north korea"', "Talks in the North", "Korea said")
    assert matches('"north korea"', "Talks in North Korea", "")
    assert matches("north korea", "Talks in the North", "Korea said")  # AND may use both


def test_reported_phrase_keeps_the_items_spelling_lower_cased():
    assert terms('"ballistic missile"', "A Ballistic-Missile was fired") == ("ballistic-missile",)
    assert terms('"ballistic missile"', "A BALLISTIC\n\tMISSILE") == ("ballistic missile",)


# --------------------------------------------------------------------------- boolean logic

def test_and_or_not():
    q = "(missile OR rocket) AND (launch* OR test*) NOT \"video game*\""
    assert matches(q, "Rocket launched")
    assert matches(q, "Missile", "was tested")
    assert not matches(q, "Missile report")
    assert not matches(q, "Rocket launch in a video game")
    assert not matches(q, "Rocket launch", "new video games")


def test_nested_parentheses():
    q = "korea* AND ((missile AND (launch OR test)) OR (satellite AND (rocket OR carrier)))"
    assert matches(q, "Koreans", "satellite on a rocket")
    assert matches(q, "Korea", "missile test")
    assert not matches(q, "Korea", "missile and satellite")
    assert not matches(q, "Japan", "missile test")


def test_unicode_words_in_query_and_text():
    assert terms("미사일 OR ракета", "북한 미사일 발사") == ("미사일",)
    assert terms("미사일 OR ракета", "Россия: ракета «Сармат»") == ("ракета",)
    assert not matches("미사일", "미사일을")  # a different word (with a particle) is not the term
    assert terms('"баллистическая ракета"', "Баллистическая ракета запущена") == ("баллистическая ракета",)
    assert terms("ракет*", "две ракеты") == ("ракеты",)


def test_length_changing_lower_case_keeps_offsets_right():
    # 'İ'.lower() is two characters; a naive lower() would shift the phrase's span
    text = "İİİ İSTANBUL: North-Korea test-fired"
    assert terms('"north korea" OR istanbul OR test-fire*', text) == ("istanbul", "north-korea", "test-fired")


# --------------------------------------------------------------------------- hits, terms, score

def test_hits_in_config_order_only_matching_ones():
    m = Matcher([("c", "carrier"), ("a", "missile"), ("b", "nothing"), ("d", "missile OR carrier")])
    assert [h.name for h in m.match("Missile and carrier", "")] == ["c", "a", "d"]
    assert m.match("Weather", "") == []


def test_terms_are_surfaces_first_seen_deduplicated_title_first():
    q = "(missile* OR rocket*) AND (launch* OR \"ballistic missile\")"
    found = hits(q, "Rocket launched", "A ballistic missile launched; rockets launched.")[0]
    assert found.terms == ("rocket", "launched", "ballistic missile", "missile", "rockets")
    assert found.score == 4.0  # rocket*, launch*, "ballistic missile", missile*


def test_score_counts_distinct_positive_terms():
    assert hits("a OR b OR c", "a b a")[0].score == 2.0
    assert hits("a OR b OR c", "c")[0].score == 1.0
    assert isinstance(hits("a", "a")[0].score, float)


def test_negated_terms_are_never_reported():
    found = hits("missile NOT (game AND video)", "missile game", "")[0]
    assert found.terms == ("missile",)
    assert found.score == 1.0


def test_only_branches_that_made_the_query_true_are_reported():
    found = hits("(missile AND launch) OR (rocket AND test)", "missile rocket test", "")[0]
    assert found.terms == ("rocket", "test")
    assert found.score == 2.0
    found = hits("(missile AND launch) OR rocket OR test", "missile test", "")[0]
    assert found.terms == ("test",)


def test_hit_is_a_model_watchlist_hit():
    assert hits("missile", "Missile") == [WatchlistHit("w", 1.0, ("missile",))]


def test_empty_item_and_empty_matcher():
    assert hits("missile", "", "") == []
    assert Matcher([]).match("missile", "launch") == []


# --------------------------------------------------------------------------- many watchlists

def test_many_watchlists_sharing_terms():
    watchlists = []
    for k in range(300):
        watchlists.append((f"or{k}", f"missile OR rocket OR w{k}"))
        watchlists.append((f"and{k}", f"missile AND w{k} AND NOT rocket"))
    m = Matcher(watchlists)
    assert m.term_count == 2 + 300  # identical terms are compiled once
    found = m.match("Missile w7", "w250")
    assert [h.name for h in found] == [n for k in range(300) for n in (f"or{k}", f"and{k}")
                                       if n.startswith("or") or k in (7, 250)]
    by_name = {h.name: h for h in found}
    assert by_name["or7"] == WatchlistHit("or7", 2.0, ("missile", "w7"))
    assert by_name["or8"] == WatchlistHit("or8", 1.0, ("missile",))
    assert by_name["and250"] == WatchlistHit("and250", 2.0, ("missile", "w250"))
    assert [h.name for h in m.match("rocket w7", "")] == [f"or{k}" for k in range(300)]


def test_same_term_in_a_watchlist_positive_and_negated():
    q = "(missile OR launch) AND NOT (missile AND game)"
    assert matches(q, "missile")
    assert not matches(q, "missile game")
    assert terms(q, "launch game") == ("launch",)


def test_bad_query_names_the_watchlist():
    with pytest.raises(QuerySyntaxError) as info:
        Matcher([("ok", "missile"), ("broken", "missile AND (test")])
    err = info.value
    assert isinstance(err, WatchlistQueryError)
    assert err.watchlist == "broken"
    assert "broken" in str(err) and "missing closing parenthesis" in str(err)
    assert err.column == 13
    assert err.caret().endswith("\n            ^")


# --------------------------------------------------------------------------- word string

def test_word_string_separates_fields_and_folds_case():
    assert word_string("North Korea's", "Test-fire, (ICBM)!") == " north korea s \x00 test fire icbm "
    assert word_string("", "") == " \x00 "


def test_ascii_fast_path_agrees_with_the_general_path():
    samples = ["", "A", "  lead and trail  ", "tabs\tand\nnew lines", "x_y z-9 O'Neil", "\x00 sneaky", "ALL CAPS!!"]
    for title in samples:
        for text in samples:
            assert word_string(title, text) == _word_string_general(title, text), (title, text)


# --------------------------------------------------------------------------- regex oracle

def _corpus_items(limit: int, seed: int) -> list[tuple[str, str]]:
    if not CORPUS.exists():
        pytest.skip(f"corpus not found at {CORPUS}")
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r.get("title") or r.get("summary")]
    random.Random(seed).shuffle(rows)
    return [(r.get("title") or "", r.get("summary") or "") for r in rows[:limit]]


def _oracle_pattern(words: tuple[str, ...], prefix: bool) -> re.Pattern[str]:
    body = r"\W+".join(map(re.escape, words))
    return re.compile(r"(?<!\w)" + body + ("" if prefix else r"(?!\w)"), re.IGNORECASE)


def test_agrees_with_a_regex_oracle_on_corpus_items():
    rng = random.Random(20240917)
    items = _corpus_items(500, seed=3)
    token_lists = [words_of(title) + words_of(text) for title, text in items]
    vocabulary = sorted({w for tokens in token_lists for w in tokens if len(w) > 2})
    counts = Counter(w for tokens in token_lists for w in set(tokens))
    frequent = [w for w, _ in counts.most_common(150)]

    def random_term() -> tuple[tuple[str, ...], bool]:
        roll = rng.random()
        if roll < 0.2:  # a phrase of two words that follow each other in some item
            tokens = rng.choice([ts for ts in token_lists if len(ts) > 1])
            k = rng.randrange(len(tokens) - 1)
            return (tokens[k], tokens[k + 1]), rng.random() < 0.2
        word = rng.choice(vocabulary)
        if roll < 0.35 and len(word) > 4:
            return (word[:rng.randint(3, len(word) - 1)],), True
        return (word,), False

    def spell(words: tuple[str, ...], prefix: bool) -> str:
        shown = [w.capitalize() if rng.random() < 0.3 else w for w in words]
        body = " ".join(shown) + ("*" if prefix else "")
        return f'"{body}"' if len(words) > 1 or body.upper() in ("AND", "OR", "NOT") else body

    queries = []  # (name, text, positive terms, negated term or None)
    for k in range(300):
        positive = [random_term() for _ in range(rng.randint(1, 5))]
        negated = None
        if k % 3 == 0:  # half the time a frequent word, so that NOT really blocks hits
            negated = ((rng.choice(frequent),), False) if rng.random() < 0.5 else random_term()
        text = " OR ".join(spell(*term) for term in positive)
        if negated is not None:
            text = f"({text}) AND NOT {spell(*negated)}"
        queries.append((f"q{k}", text, positive, negated))
    matcher = Matcher([(name, text) for name, text, _, _ in queries])

    found_in: dict[tuple[tuple[str, ...], bool], set[int]] = {}  # term -> items it occurs in
    for term in {term for _, _, pos, neg in queries for term in [*pos, *([neg] if neg else [])]}:
        pattern = _oracle_pattern(*term)
        found_in[term] = {i for i, (title, text) in enumerate(items) if pattern.search(title) or pattern.search(text)}

    agreed = expected_hits = blocked = 0
    for i, (title, text) in enumerate(items):
        got = {h.name: h for h in matcher.match(title, text)}
        for name, query, positive, negated in queries:
            present = {term for term in positive if i in found_in[term]}
            want = bool(present) and not (negated is not None and i in found_in[negated])
            blocked += bool(present) and not want
            assert (name in got) == want, (query, title, text)
            if want:
                expected_hits += 1
                hit = got[name]
                assert hit.score == float(len(present)), (query, title, text, hit)
                for surface in hit.terms:  # every reported surface is an occurrence of a present term
                    words = words_of(surface)
                    assert any(words[:-1] == ws[:-1] and (words[-1].startswith(ws[-1]) if prefix else words[-1] == ws[-1])
                               and len(words) == len(ws) for ws, prefix in present), (surface, query)
            agreed += 1
    assert expected_hits > 1000  # the queries really do hit
    assert blocked > 50  # and NOT really blocks
    assert agreed == len(items) * len(queries)


# --------------------------------------------------------------------------- NEAR, fields, aliases

@pytest.mark.parametrize("title, expected", [
    ("missile test", True),          # 0 words between
    ("test of missile", True),       # 1 word between, other order
    ("missile, a test", True),
    ("missile x y test", False),     # 2 words between
    ("missile was tested", False),   # whole words only
])
def test_near_counts_words_between(title, expected):
    assert matches("missile NEAR/1 test", title) is expected


def test_onear_needs_order():
    assert matches("missile ONEAR/3 test", "missile of the test")
    assert not matches("missile ONEAR/3 test", "test of the missile")
    assert matches("missile ONEAR/3 test", "test of the missile and a test")


def test_near_with_or_group_and_wildcards_reports_contributing_terms():
    found = hits("missile NEAR/10 (test* OR launch*)", "Missile", "Launched a missile; tests later")
    assert found == [WatchlistHit("w", 3.0, ("missile", "launched", "tests"))]
    # a group member that occurs, but not near, does not count
    far = "missile launch " + "x " * 20 + "tests"
    assert terms("missile NEAR/3 (test* OR launch*)", far) == ("missile", "launch")


def test_near_never_spans_title_into_text():
    assert not matches("missile NEAR/3 launch", "big missile", "launch today")
    assert matches("missile NEAR/3 launch", "big missile launch", "")
    assert matches("missile NEAR/3 launch", "x", "missile launch")


def test_near_occurrences_must_not_overlap():
    assert not matches('"north korea" NEAR/2 korea', "north korea")
    assert matches('"north korea" NEAR/2 korea', "north korea and korea")
    assert matches("korea NEAR/2 korea", "korea x korea")
    assert not matches("korea NEAR/2 korea", "korea")


def test_near_under_not():
    assert matches("missile NOT missile NEAR/2 test", "missile", "far away test " + "x " * 5)
    assert not matches("missile NOT missile NEAR/2 test", "missile test")


def test_fields_restrict_terms():
    assert matches("title:launch", "Launch today", "")
    assert not matches("title:launch", "today", "launch")
    assert matches("text:launch", "today", "launch")
    assert not matches("text:launch", "launch", "today")
    assert matches("title:(missile NOT test)", "missile", "test")
    assert not matches("title:(missile NOT test)", "missile test", "")
    assert matches("text:(missile NEAR/2 test)", "missile test", "a missile test")
    assert not matches("text:(missile NEAR/2 test)", "missile test", "missile")
    assert matches('title:"ballistic missile" AND text:launch*', "Ballistic Missile", "launched")


def test_field_reports_only_spellings_in_that_field():
    assert terms("title:launch*", "Launches today", "launched yesterday") == ("launches",)
    assert terms("text:launch*", "Launches today", "launched yesterday") == ("launched",)
    assert terms("text:launch", "launch", "x launch") == ("launch",)


def test_aliases_in_matcher_and_two_tuple_still_works():
    aliases = {"dprk": ["North Korea", "DPRK", "Pyongyang", "Kim Jong Un"]}
    m = Matcher([("a", "@dprk missile", aliases), ("b", "missile"), ("c", "missile NEAR/3 @dprk", aliases)])
    assert m.match("Kim Jong-Un watches missile", "") == [
        WatchlistHit("a", 2.0, ("kim jong-un", "missile")),
        WatchlistHit("b", 1.0, ("missile",)),
        WatchlistHit("c", 2.0, ("kim jong-un", "missile")),
    ]
    # terms of NEAR, fields and aliases share the one automaton with plain terms
    assert m.term_count == 5


def test_unknown_alias_in_matcher_names_the_watchlist():
    with pytest.raises(WatchlistQueryError, match="watchlist 'w': unknown alias '@dprk'") as info:
        Matcher([("w", "missile @dprk", {})])
    assert info.value.column == 9
