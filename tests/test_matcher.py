"""The matcher: whole-word boolean matching of many watchlists, the terms it reports, and
agreement with a plain regex oracle on corpus items."""
from __future__ import annotations

import json
import random
import re
from bisect import bisect_left
from collections import Counter
from pathlib import Path

import pytest

from monitor.matcher import (
    FIELD_SEP,
    Matcher,
    WatchlistQueryError,
    WatchlistSpecError,
    _Item,
    _word_string,
    _word_string_general,
    word_string,
    word_strings,
)
from monitor.model import Explanation, Signal, WatchlistHit, WatchlistSpec
from monitor.query import LEAD_WORDS, QuerySyntaxError, word_spans, words_of

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
    assert terms("korea", "North Korea’s missile") == ("korea",)
    assert terms('"korea missile"', "North Korea's missile") == ("korea's missile",)
    assert matches("fire", "a test-fire")
    assert matches("test", "a test-fire")
    assert not matches("s", "North Korea's missile")
    assert matches('"u s navy"', "the U.S.'s navy")


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
    assert terms("test-fire", "a testfire") == ("testfire",)  # the closed form too
    assert not matches('"test fire"', "testfire")  # written with a space: no closed form
    assert matches('"test fire"', "test-fire")
    assert terms("test-fire*", "it test-fired two") == ("test-fired",)
    assert terms("test-fire*", "it testfired two") == ("testfired",)
    assert terms("Hwasong-18", "the Hwasong18 and Hwasong-18") == ("hwasong18", "hwasong-18")
    assert terms('"strategic cruise-missile"', "strategic cruisemissiles, strategic cruise missile") == (
        "strategic cruise missile",)
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
    assert terms('"баллистическая ракета"', "Баллистическая ракета запущена") == ("баллистическая ракета",)
    assert terms("ракет*", "две ракеты") == ("ракеты",)
    assert not matches("ракета", "ракетами")  # whole words in Cyrillic


@pytest.mark.parametrize("query, text, surface", [
    ("미사일", "북한이 미사일을 발사했다", "미사일"),  # inside a longer run of Hangul
    ("미사일", "북한미사일", "미사일"),
    ("ミサイル", "北朝鮮が弾道ミサイルを発射", "ミサイル"),
    ("导弹", "朝鲜发射弹道导弹", "导弹"),
    ('"弾道ミサイル"', "弾道ミサイル発射", "弾道ミサイル"),
    ("ミサ*", "ミサイル", "ミサ"),
])
def test_cjk_terms_match_inside_runs_of_characters(query, text, surface):
    assert terms(query, text) == (surface,)


def test_cjk_near_counts_characters():
    assert matches("北朝鮮 NEAR/2 発射", "北朝鮮がミ発射")  # two characters between
    assert not matches("北朝鮮 NEAR/2 発射", "北朝鮮がミサ発射")


@pytest.mark.parametrize("query, text, surface", [
    ("cafe", "Café au lait", "café"),
    ("café", "CAFE", "cafe"),
    ("zurich", "Zürich", "zürich"),
    ("strasse", "Straße", "straße"),
    ("icbm", "ＩＣＢＭ launch", "ｉｃｂｍ"),
    ("naive", "nai\u0308ve", "nai\u0308ve"),
    ('"korea missile"', "Korea’s missile", "korea’s missile"),
    ("πυραυλος", "ΠΎΡΑΥΛΟΣ", "πύραυλος"),
])
def test_accents_width_and_case_are_folded_and_the_items_spelling_reported(query, text, surface):
    assert terms(query, text) == (surface,)


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
    assert found.score == 2.0  # the query is true in the title alone


def test_plain_query_scores_one_or_the_title_weight():
    assert hits("a OR b OR c", "a b a")[0].score == 2.0  # true in the title alone
    assert hits("a OR b OR c", "x", "c")[0].score == 1.0
    assert hits("a AND b", "a", "b")[0].score == 1.0  # needs the text
    assert hits("a AND b", "a b", "b")[0].score == 2.0
    assert hits("a NOT b", "a", "c")[0].score == 2.0
    assert hits("text:a OR b", "a", "a")[0].score == 1.0  # text:a is false in the title alone
    assert isinstance(hits("a", "a")[0].score, float)


def test_negated_terms_are_never_reported():
    found = hits("missile NOT (game AND video)", "missile game", "")[0]
    assert found.terms == ("missile",)
    assert found.score == 2.0


def test_only_branches_that_made_the_query_true_are_reported():
    found = hits("(missile AND launch) OR (rocket AND test)", "missile rocket test", "")[0]
    assert found.terms == ("rocket", "test")
    found = hits("(missile AND launch) OR rocket OR test", "missile test", "")[0]
    assert found.terms == ("test",)


def test_hit_is_a_model_watchlist_hit():
    assert hits("missile", "Missile") == [WatchlistHit("w", 2.0, ("missile",), "high")]
    assert hits("missile", "", "Missile") == [WatchlistHit("w", 1.0, ("missile",), "high")]


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
    assert by_name["or8"] == WatchlistHit("or8", 2.0, ("missile",))
    assert by_name["and250"] == WatchlistHit("and250", 1.0, ("missile", "w250"))
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
    assert word_string("North Korea's", "Test-fire, (ICBM)!") == " north korea \x00 test fire icbm "
    assert word_string("", "") == " \x00 "
    assert word_string("Korea’s “Café”", "北朝鮮") == " korea cafe \x00 北 朝 鮮 "


def test_ascii_fast_path_agrees_with_the_general_path():
    samples = ["", "A", "  lead and trail  ", "tabs\tand\nnew lines", "x_y z-9 O'Neil", "\x00 sneaky", "ALL CAPS!!",
               "Korea's KOREA'S U.S.'s it's 's x's. 'S'sS", "Korea’s — “quoted” …\xa0nbsp", "a.'s b'ss c's_"]
    for title in samples:
        for text in samples:
            assert word_string(title, text) == _word_string_general(title, text), (title, text)


def test_word_string_agrees_with_words_of_on_corpus_items():
    for title, text in _corpus_items(2000, seed=1):
        assert word_string(title, text) == _word_string_general(title, text)
        assert word_string(title, text).split(FIELD_SEP)[1].split() == list(words_of(text))


def _awkward_items() -> list[tuple[str, str]]:
    """Items the joined path must hand back exactly as the one-by-one path: separators inside
    fields, non-Latin text, possessives and apostrophes at the ends, runs of punctuation,
    empty fields."""
    return [
        ("", ""), ("Korea's", "x's"), ("'s", "'S'"), ("a\x01b", "sep inside"), ("title", "text \x00 with FIELD_SEP"),
        ("Пхеньян запустил ракету", "КНДР"), ("北朝鮮がミサイル発射", "米韓"), ("Korea’s — “quoted” …", "\xa0nbsp’s"),
        ("  lead and trail  ", "\t\n"), ("!!!", "..."), ("U.S.'s test", "it's the U.S.' s"), ("Café crème", "naïve"),
        ("x_y z-9 O'Neil", "test-fire test fire"), ("ALL CAPS!!", "end's"),
    ]


@pytest.mark.parametrize("size", [1, 7, 8, 50, 3000])
def test_word_strings_together_equal_one_by_one(size):
    base = _corpus_items(3000, seed=5) + _awkward_items()
    rng = random.Random(size)
    for _ in range(3):
        items = [rng.choice(base) for _ in range(size)]
        assert word_strings(items) == [_word_string(title, text) for title, text in items]


def test_match_many_equals_match_item_by_item():
    items = _corpus_items(1500, seed=6) + _awkward_items()
    random.Random(2).shuffle(items)
    specs = [
        ("plain", "missile OR missiles OR launch* OR ракету OR ミサイル"),
        ("phrase", '"ballistic missile" OR "north korea*" OR korea'),
        ("near", "(missile* OR rocket*) NEAR/5 (test* OR launch* OR fire*)"),
        ("field", "title:(korea OR missile) AND NOT text:weather"),
        ("regex", "/hwasong-?\\d+/ OR icbm"),
        WatchlistSpec("scored", None, signals=(Signal("missile", 1.0), Signal("test*", 0.5)), min_score=1.2),
        WatchlistSpec("excluded", "missile* OR launch*", exclude=("game", "stock")),
    ]
    matcher = Matcher(specs)
    one_by_one = [matcher.match(title, text) for title, text in items]
    assert sum(map(bool, one_by_one)) > 100  # the watchlists really fire
    for size in (1, 9, 64, len(items)):
        together = [hit for k in range(0, len(items), size) for hit in matcher.match_many(items[k:k + size])]
        assert together == one_by_one


# --------------------------------------------------------------------------- regex oracle

def _corpus_items(limit: int, seed: int) -> list[tuple[str, str]]:
    if not CORPUS.exists():
        pytest.skip(f"corpus not found at {CORPUS}")
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r.get("title") or r.get("summary")]
    random.Random(seed).shuffle(rows)
    return [(r.get("title") or "", r.get("summary") or "") for r in rows[:limit]]


def _oracle_items(limit: int, seed: int) -> list[tuple[str, str]]:
    return [(_no_possessives(title), _no_possessives(text)) for title, text in _corpus_items(limit, seed)]


def _oracle_pattern(words: tuple[str, ...], prefix: bool) -> re.Pattern[str]:
    body = r"\W+".join(map(re.escape, words))
    return re.compile(r"(?<!\w)" + body + ("" if prefix else r"(?!\w)"), re.IGNORECASE)


def _no_possessives(text: str) -> str:
    """The oracle's own take on the possessive rule: 's / ’s after a word (or "word.") goes."""
    return re.sub(r"(\w\.?)['’][sS](?!\w)", r"\1", text)


def test_agrees_with_a_regex_oracle_on_corpus_items():
    rng = random.Random(20240917)
    items = _corpus_items(500, seed=3)
    oracle_items = _oracle_items(500, seed=3)
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
        found_in[term] = {i for i, (title, text) in enumerate(oracle_items) if pattern.search(title) or pattern.search(text)}

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
                oracle_title = oracle_items[i][0]
                in_title = {term for term in positive if _oracle_pattern(*term).search(oracle_title)}
                title_alone = bool(in_title) and not (negated is not None and _oracle_pattern(*negated).search(oracle_title))
                assert hit.score == (2.0 if title_alone else 1.0), (query, title, text, hit)
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
    assert found == [WatchlistHit("w", 1.0, ("missile", "launched", "tests"))]
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
        WatchlistHit("b", 2.0, ("missile",)),
        WatchlistHit("c", 2.0, ("kim jong-un", "missile")),
    ]
    # terms of NEAR, fields and aliases share the one automaton with plain terms
    assert m.term_count == 5


def test_unknown_alias_in_matcher_names_the_watchlist():
    with pytest.raises(WatchlistQueryError, match="watchlist 'w': unknown alias '@dprk'") as info:
        Matcher([("w", "missile @dprk", {})])
    assert info.value.column == 9


# --------------------------------------------------------------------------- scoring: signals, excludes, min_score

def spec(**kw) -> WatchlistSpec:
    return WatchlistSpec(kw.pop("name", "w"), **kw)


def test_signals_add_their_weight_doubled_when_true_in_the_title_alone():
    m = Matcher([spec(query="missile*", signals=(Signal("launch*", 2.0), Signal('"ballistic missile"', 1.5)))])
    # query in the title (1 * 2), launch* in the title (2 * 2), "ballistic missile" in the text (1.5)
    assert m.match("Missile launched", "a ballistic missile") == [
        WatchlistHit("w", 7.5, ("missile", "launched", "ballistic missile"), "high")]
    assert m.match("x", "missile") == [WatchlistHit("w", 1.0, ("missile",), "high")]


def test_title_weight_and_severity_are_per_watchlist():
    m = Matcher([spec(query="missile", title_weight=3.0, severity="critical")])
    assert m.match("Missile", "") == [WatchlistHit("w", 3.0, ("missile",), "critical")]
    m = Matcher([spec(query="missile", title_weight=1.0)])
    assert m.match("Missile", "missile")[0].score == 1.0


def test_min_score_needs_enough_signals():
    m = Matcher([spec(query="missile", signals=(Signal("launch*"), Signal("test*")), min_score=3.0)])
    assert m.match("x", "missile launch") == []  # 1 + 1
    assert [h.score for h in m.match("x", "missile launch test")] == [3.0]
    assert [h.score for h in m.match("missile", "launch")] == [3.0]  # 2 + 1
    assert m.match("x", "launch test") == []  # the query is required


def test_query_only_watchlist_with_a_high_min_score():
    m = Matcher([spec(query="missile", min_score=2.0)])
    assert m.match("x", "missile") == []
    assert [h.score for h in m.match("missile", "")] == [2.0]


def test_signals_only_watchlist():
    m = Matcher([spec(signals=(Signal("launch*", 1.0), Signal("missile*", 1.0)), min_score=2.0)])
    assert m.match("x", "launch") == []
    assert m.match("x", "launch of a missile") == [WatchlistHit("w", 2.0, ("launch", "missile"), "high")]
    assert m.match("launch", "") == [WatchlistHit("w", 2.0, ("launch",), "high")]  # in the title: 1 * 2


def test_exclude_vetoes_anywhere():
    m = Matcher([spec(query="missile", exclude=('"video game"', "title:review"))])
    assert m.match("Missile", "") != []
    assert m.match("Missile", "in a video game") == []
    assert m.match("Missile review", "") == []
    assert m.match("Missile", "a review") != []  # title:review only looks at the title


def test_terms_come_from_true_clauses_only_in_first_seen_order():
    m = Matcher([spec(query="missile", signals=(Signal("launch*"), Signal("satellite")), exclude=("game",))])
    assert m.match("Launch", "missile launched") == [WatchlistHit("w", 1.0 + 2.0, ("launch", "missile", "launched"))]


def test_negative_weight_signal_lowers_the_score():
    m = Matcher([spec(query="missile", signals=(Signal("anniversary", -1.0),), min_score=1.0)])
    assert m.match("x", "missile") != []
    assert m.match("x", "missile anniversary") == []


def test_spec_without_query_or_signals_is_rejected():
    with pytest.raises(WatchlistSpecError, match="'w': needs a query or at least one signal"):
        Matcher([spec()])
    with pytest.raises(WatchlistSpecError, match="min_score must be above 0"):
        Matcher([spec(signals=(Signal("a"),), min_score=0.0)])
    with pytest.raises(WatchlistSpecError, match=r"signals\[0\]: weight must be a finite number"):
        Matcher([spec(query="a", signals=(Signal("b", float("nan")),))])


@pytest.mark.parametrize("kwargs, clause, column", [
    ({"query": "a AND (b"}, "query", 7),
    ({"query": "a", "signals": (Signal("b"), Signal("c"), Signal("d NOT"))}, "signals[2]", 3),
    ({"signals": (Signal("b"),), "exclude": ("x", '"y')}, "exclude[1]", 1),
    ({"query": "a", "exclude": ("@nope",)}, "exclude[0]", 1),
])
def test_bad_clause_names_the_watchlist_and_clause(kwargs, clause, column):
    with pytest.raises(WatchlistQueryError) as info:
        Matcher([("ok", "fine"), spec(name="bad", **kwargs)])
    err = info.value
    assert (err.watchlist, err.clause, err.column) == ("bad", clause, column)
    assert str(err).startswith("watchlist 'bad': " + ("" if clause == "query" else f"{clause}: "))
    assert err.caret().endswith("^")


def test_excludes_and_signals_are_evaluated_only_when_needed(monkeypatch):
    calls: list[int] = []
    original = _Item.regex_true

    def counting(self, rid, field):
        calls.append(rid)
        return original(self, rid, field)

    monkeypatch.setattr(_Item, "regex_true", counting)
    m = Matcher([spec(query="missile", signals=(Signal("/sig/"),), exclude=("/exc/",))])
    assert m.match("rocket", "sig exc") == []
    assert calls == []  # not a candidate: nothing evaluated
    assert m.match("missile", "sig exc") == []
    assert set(calls) == {0, 1}
    calls.clear()
    m = Matcher([spec(query="missile", exclude=("/exc/",), min_score=5.0)])
    assert m.match("missile", "exc") == []
    assert calls == []  # the score is too low: the exclude is never looked at


# --------------------------------------------------------------------------- regex terms

def test_regex_terms_search_the_folded_field_text():
    assert terms("/hwasong-?1[5-9]/", "Hwasong-18 and HWASONG17") == ("hwasong-18", "hwasong17")
    assert terms("/test/", "a contest") == ("test",)  # not whole words
    assert terms("/korea's/", "North Korea’s") == ("korea’s",)  # apostrophes folded, possessive kept
    assert terms("/café/", "CAFE") == ("cafe",)
    assert terms("/cafe au/", "Café au lait") == ("café au",)
    assert not matches("/a b/", "a", "b")  # never across fields
    assert terms("title:/x+/", "xx", "xxx") == ("xx",)
    assert not matches("text:/x+/", "xx", "")


def test_regex_alone_makes_a_watchlist_always_evaluated():
    m = Matcher([("re", "/hwasong-?1[5-9]/"), ("plain", "missile"), ("and", "/kn-?2[0-9]/ AND missile")])
    assert m._always == (0,)
    assert [h.name for h in m.match("Hwasong-18", "")] == ["re"]  # no automaton key occurs at all
    assert [h.name for h in m.match("KN-23", "")] == []
    assert [h.name for h in m.match("KN-23 missile", "")] == ["plain", "and"]
    assert Matcher([("re", "/abc/")]).match("x abc", "") == [WatchlistHit("re", 2.0, ("abc",))]


def test_regex_under_not_and_in_signals():
    assert matches("missile NOT /game[sr]?/", "missile")
    assert not matches("missile NOT /game[sr]?/", "missile gamers")
    m = Matcher([spec(signals=(Signal("/icbm|slbm/", 2.0),), min_score=2.0)])
    assert m.match("x", "an SLBM") == [WatchlistHit("w", 2.0, ("slbm",))]
    assert m._always == (0,)


def test_regex_and_term_surfaces_are_ordered_by_position():
    assert terms("missile AND /launch\\w*/", "Missile", "launched the missile") == ("missile", "launched")
    assert terms("missile AND /launch\\w*/", "launch", "the missile") == ("launch", "missile")


# --------------------------------------------------------------------------- explain

def test_explain_lists_clauses_with_points_terms_and_spans():
    m = Matcher([spec(name="mt", query="missile*", signals=(Signal("launch*", 2.0), Signal("satellite")),
                      exclude=('"video game"',), min_score=3.0, severity="critical")])
    title, text = "North Korea’s missile launch", "It launched a Missile; no satellite. Missiles."
    (e,) = m.explain(title, text)
    assert (e.name, e.matched, e.score, e.min_score, e.excluded, e.severity) == ("mt", True, 2.0 + 4.0 + 1.0, 3.0,
                                                                                False, "critical")
    query, launch, satellite, exclude = e.clauses
    assert (query.kind, query.query, query.true, query.in_title, query.points) == ("query", "missile*", True, True, 2.0)
    assert query.terms == ("missile", "missiles")
    assert query.spans == (("title", 14, 21), ("text", 14, 21), ("text", 37, 45))
    assert [title[14:21], text[14:21], text[37:45]] == ["missile", "Missile", "Missiles"]
    assert (launch.kind, launch.weight, launch.points, launch.terms) == ("signal", 2.0, 4.0, ("launch", "launched"))
    assert (satellite.in_title, satellite.points, satellite.spans) == (False, 1.0, (("text", 26, 35),))
    assert (exclude.kind, exclude.true, exclude.points, exclude.terms, exclude.spans) == ("exclude", False, 0.0, (), ())
    assert m.match(title, text)[0].score == e.score


def test_explain_spans_point_into_the_original_strings():
    m = Matcher([("w", '"korea missile" OR 미사일 OR cafe OR /hwasong-?18/ OR "strategic cruise-missile"')])
    title, text = "İİ North KOREA’S  missile", "북한미사일 — Café; HWASONG-18, strategic cruisemissile"
    (e,) = m.explain(title, text)
    spans = e.clauses[0].spans
    shown = [(title if f == "title" else text)[a:b] for f, a, b in spans]
    assert shown == ["KOREA’S  missile", "미사일", "Café", "HWASONG-18", "strategic cruisemissile"]
    assert e.clauses[0].terms == ("korea’s missile", "미사일", "café", "hwasong-18", "strategic cruisemissile")


def test_explain_near_misses():
    m = Matcher([("a", "missile AND launch"), ("b", "rocket"), ("c", "missile NOT test"),
                 spec(name="d", query="missile", exclude=("test",))])
    assert [e.name for e in m.explain("missile test", "")] == []
    got = m.explain("missile test", "", near_misses=True)
    assert [(e.name, e.matched) for e in got] == [("a", False), ("c", False), ("d", False)]
    a, c, d = got
    assert a.clauses[0].true is False and a.clauses[0].terms == ("missile",)  # the terms that occurred
    assert c.clauses[0].terms == ("missile", "test")
    assert d.excluded and d.score == 2.0 and d.clauses[1].terms == ("test",)


def test_explain_false_clause_in_title_alone():
    m = Matcher([("w", "missile NOT test")])
    (e,) = m.explain("missile", "test", near_misses=True)
    assert (e.matched, e.clauses[0].true, e.clauses[0].in_title, e.clauses[0].points) == (False, False, True, 0.0)


def _random_specs(rng: random.Random, vocabulary: list[str], n: int) -> list[WatchlistSpec]:
    def term() -> str:
        roll = rng.random()
        if roll < 0.15:
            return f'"{rng.choice(vocabulary)} {rng.choice(vocabulary)}"'
        if roll < 0.3:
            return rng.choice(vocabulary)[:4] + "*"
        if roll < 0.35:
            return f"title:{rng.choice(vocabulary)}"
        if roll < 0.36:
            return f"/{rng.choice(vocabulary)[:3]}[a-z]*s/"
        return rng.choice(vocabulary)

    def group(k: int) -> str:
        return "(" + " OR ".join(term() for _ in range(k)) + ")"

    def query() -> str:
        shape = rng.randrange(5)
        if shape == 0:  # NEAR operands: plain words only
            return (f"({' OR '.join(rng.choice(vocabulary) for _ in range(2))}) "
                    f"{rng.choice(['NEAR', 'ONEAR'])}/{rng.randint(1, 8)} "
                    f"({' OR '.join(rng.choice(vocabulary) for _ in range(3))})")
        if shape == 1:
            return f"{group(2)} AND {group(3)}"
        if shape == 2:
            return f"{group(4)} AND NOT {term()}"
        return group(rng.randint(1, 4))

    specs = []
    for k in range(n):
        signals = tuple(Signal(query(), rng.choice([0.5, 1.0, 2.0, -1.0])) for _ in range(rng.randint(0, 3)))
        has_query = not signals or rng.random() < 0.7
        specs.append(WatchlistSpec(
            f"r{k}", query() if has_query else None, None, signals,
            tuple(query() for _ in range(rng.randint(0, 2)) if rng.random() < 0.5),
            min_score=rng.choice([0.5, 1.0, 2.0, 3.0]), title_weight=rng.choice([1.0, 2.0, 3.0]),
            severity=rng.choice(["info", "high", "critical"])))
    return specs


def test_explain_agrees_with_match_on_the_corpus():
    if not CORPUS.exists():
        pytest.skip(f"corpus not found at {CORPUS}")
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    items = [(r.get("title") or "", r.get("text") or r.get("summary") or "") for r in rows]
    rng = random.Random(7)
    counts = Counter(w for title, text in items[::7] for w in set(words_of(title + " " + text)) if len(w) > 3)
    vocabulary = [w for w, c in counts.most_common(400)[40:]]  # frequent, not the most frequent
    specs = _random_specs(rng, vocabulary, 80)
    m = Matcher(specs)
    fired = near = 0
    for title, text in items[::2]:
        got = {h.name: h for h in m.match(title, text)}
        explained = m.explain(title, text, near_misses=True)
        matched = {e.name: e for e in explained if e.matched}
        assert set(matched) == set(got), title
        for name, e in matched.items():
            assert e.score == got[name].score
            assert e.severity == got[name].severity
            assert set(got[name].terms) <= {t for c in e.clauses if c.true and c.kind != "exclude" for t in c.terms}
        assert [e.name for e in m.explain(title, text)] == list(got)
        fired += len(got)
        near += len(explained) - len(matched)
        for e in explained:
            for c in e.clauses:
                for field, start, end in c.spans:
                    assert 0 <= start < end <= len(title if field == "title" else text)
    assert fired > 1000 and near > 1000  # the random watchlists really do fire and miss


def test_explain_agrees_with_match_for_the_shipped_watchlists():
    from conftest import ROOT

    from monitor.config import load_config

    if not CORPUS.exists():
        pytest.skip(f"corpus not found at {CORPUS}")
    m = Matcher(load_config(ROOT / "config" / "monitor.yaml", env={}).matcher_watchlists())
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        title, text = r.get("title") or "", r.get("text") or ""
        got = [(h.name, h.score) for h in m.match(title, text)]
        assert [(e.name, e.score) for e in m.explain(title, text) if e.matched] == got


# --------------------------------------------------------------------------- lead:

def filler(n: int, word: str = "x") -> str:
    return " ".join([word] * n)


def agree(query: str, title: str, text: str) -> Explanation | None:
    """match() and explain() on one watchlist: they agree on firing and score; returns the
    explanation (None when it did not fire)."""
    m = Matcher([("w", query)])
    got = m.match(title, text)
    explained = [e for e in m.explain(title, text, near_misses=True) if e.matched]
    assert [(h.name, h.score) for h in got] == [(e.name, e.score) for e in explained], (query, title, text)
    assert [e.name for e in m.explain(title, text)] == [h.name for h in got]
    return explained[0] if explained else None


def lead_matches(query: str, title: str, text: str) -> bool:
    return agree(query, title, text) is not None


def shown_spans(e: Explanation, title: str, text: str) -> list[str]:
    return [(title if f == "title" else text)[a:b] for c in e.clauses for f, a, b in c.spans]


def test_lead_is_the_title_and_the_first_100_words_of_the_text():
    assert LEAD_WORDS == 100
    assert lead_matches("lead:target", "Target today", filler(300))  # in the title: always in the lead
    assert lead_matches("lead:target", "t", "target " + filler(300))  # word 1
    assert lead_matches("lead:target", "t", filler(99) + " target " + filler(300))  # word 100
    assert not lead_matches("lead:target", "t", filler(100) + " target " + filler(300))  # word 101
    assert not lead_matches("lead:target", "t", filler(500) + " target")
    assert lead_matches("target", "t", filler(100) + " target")  # a bare term searches the whole text
    assert lead_matches("text:target", "t", filler(100) + " target")


def test_lead_words_are_counted_like_the_matcher_splits_text():
    # punctuation and possessives are not words; a hyphen separates two
    text = "x, " * 97 + "Korea's test-fire target"  # words 98, 99, 100, 101
    assert lead_matches("lead:fire", "t", text)
    assert not lead_matches("lead:target", "t", text)
    # "½" is two words after normalisation (1 and 2): target is word 101
    assert not lead_matches("lead:target", "t", filler(98) + " ½ target")
    assert lead_matches("lead:target", "t", filler(97) + " ½ target")


def test_lead_phrase_counts_when_it_ends_within_the_lead():
    assert lead_matches('lead:"a b"', "t", filler(98) + " a b c")  # words 99-100
    assert not lead_matches('lead:"a b"', "t", filler(99) + " a b c")  # words 100-101: straddles
    assert lead_matches('lead:"a b*"', "t", filler(98) + " a bee c")
    assert not lead_matches('lead:"a b*"', "t", filler(99) + " a bee c")
    assert lead_matches('lead:"a b"', "x a b", filler(200))  # in the title


def test_lead_phrase_never_runs_from_the_title_into_the_text():
    assert not lead_matches('lead:"a b"', "x a", "b c")


def test_lead_near_needs_both_occurrences_in_the_lead_and_in_one_field():
    assert lead_matches("lead:(a NEAR/3 b)", "t", filler(95) + " a x b " + filler(10))  # words 96, 98
    assert lead_matches("lead:(a NEAR/3 b)", "t", filler(97) + " a x b " + filler(10))  # words 98, 100
    assert not lead_matches("lead:(a NEAR/3 b)", "t", filler(98) + " a x b " + filler(10))  # b is word 101
    assert not lead_matches("lead:(b NEAR/3 a)", "t", filler(98) + " a x b " + filler(10))
    assert not lead_matches("lead:(a NEAR/3 b)", "x a", "b " + filler(200))  # title + text: two fields
    assert lead_matches("lead:(a NEAR/3 b)", "a x b", filler(200))
    assert lead_matches("a NEAR/3 b", "t", filler(98) + " a x b")  # without lead: anywhere
    # an earlier qualifying pair counts even when a later one straddles the boundary
    assert lead_matches("lead:(a ONEAR/1 b)", "t", "a b " + filler(96) + " a x b")
    assert not lead_matches("lead:(a ONEAR/1 b)", "t", "b a " + filler(96) + " a x b")


def test_lead_near_reports_only_the_pair_in_the_lead():
    title, text = "t", "a x b " + filler(200) + " a b"
    e = agree("lead:(a NEAR/3 b)", title, text)
    assert e is not None
    assert e.clauses[0].spans == (("text", 0, 1), ("text", 4, 5))


def test_lead_regex_searches_the_title_and_the_first_100_words():
    assert lead_matches("lead:/kn-?2[0-9]/", "KN-23 launched", filler(200))
    assert lead_matches("lead:/kn-?2[0-9]/", "t", filler(98) + " KN-23")  # kn, 23: words 99-100
    assert not lead_matches("lead:/kn-?2[0-9]/", "t", filler(99) + " KN-23")  # 23 is word 101
    assert not lead_matches("lead:/kn-?2[0-9]/", "t", filler(200) + " KN-23")
    assert lead_matches("/kn-?2[0-9]/", "t", filler(200) + " KN-23")
    e = agree("lead:/kn-?2[0-9]/", "t", "KN-23 " + filler(200) + " KN-24")
    assert e is not None and e.clauses[0].spans == (("text", 0, 5),)
    assert e.clauses[0].terms == ("kn-23",)


@pytest.mark.parametrize("query", ["lead:/x$/", "lead:/x(?! y)/", r"lead:/x(?!\s+y)/"])
def test_lead_regex_does_not_see_the_cut_as_the_end_of_the_text(query):
    # "x" is word 100, followed by " y": neither regex matches the text, nor should it the lead
    assert not lead_matches(query, "t", "a " * 99 + "x y")


def test_not_lead():
    q = "x AND NOT lead:y"
    assert lead_matches(q, "x", filler(100, "z") + " y")  # y only after the lead
    assert not lead_matches(q, "x", "y")
    assert not lead_matches(q, "x y", "")
    assert not lead_matches(q, "x", filler(99, "z") + " y")
    assert lead_matches("x NOT lead:/y+/", "x", filler(100, "z") + " yy")
    assert not lead_matches("x NOT lead:/y+/", "x", filler(99, "z") + " yy")
    assert lead_matches('x NOT lead:"y z"', "x", filler(99, "w") + " y z")  # straddles: not in the lead


def test_lead_inside_or_and_with_other_fields():
    q = "lead:missile* OR title:rocket"
    assert lead_matches(q, "Rocket", "")
    assert lead_matches(q, "t", "missiles")
    assert not lead_matches(q, "t", filler(100) + " missiles rocket")
    q = "lead:missile AND text:launch"
    assert lead_matches(q, "Missile", filler(300) + " launch")
    assert not lead_matches(q, "Missile launch", "")


def test_lead_clause_true_in_the_title_alone_scores_the_title_weight():
    assert hits("lead:missile", "Missile", "")[0].score == 2.0
    assert hits("lead:missile", "x", "Missile")[0].score == 1.0
    m = Matcher([spec(query="missile", signals=(Signal("lead:launch*", 2.0),))])
    assert m.match("Missile launched", "")[0].score == 2.0 + 4.0
    assert m.match("Missile", "launched")[0].score == 2.0 + 2.0
    assert m.match("Missile", filler(100) + " launched")[0].score == 2.0


def test_lead_with_an_empty_title_or_a_short_or_empty_text():
    assert lead_matches("lead:target", "", "target")
    assert lead_matches("lead:target", "", filler(99) + " target")
    assert not lead_matches("lead:target", "", filler(100) + " target")
    assert lead_matches("lead:target", "target", "")
    assert not lead_matches("lead:target", "", "")
    assert lead_matches('lead:"a b"', "", "a b")  # the whole (short) text is the lead
    assert lead_matches("lead:(a NEAR/1 b)", "", "b x a")
    assert lead_matches("lead:/tar.et/", "", "a target")
    assert not lead_matches("lead:/tar.et/", "", "")


def test_lead_explain_spans_point_into_the_original_text_within_the_lead():
    title = "Launch report"
    text = filler(99) + " launched " + filler(5) + " launches"
    e = agree("lead:launch*", title, text)
    assert e is not None
    assert shown_spans(e, title, text) == ["Launch", "launched"]
    assert e.clauses[0].terms == ("launch", "launched")
    # a regex: the title's matches and the text's within the lead only
    e = agree("lead:/launch\\w*/", title, text)
    assert e is not None
    assert shown_spans(e, title, text) == ["Launch", "launched"]
    assert e.clauses[0].terms == ("launch", "launched")


def test_lead_explain_spans_and_terms_in_non_ascii_text():
    title = "Prüfung"
    text = "Été " * 98 + "Straße Café " + "Café " * 3
    e = agree('lead:cafe OR lead:"strasse cafe"', title, text)
    assert e is not None
    # words 99-100: the phrase, and "Café" (word 100) on its own; the three after are out
    assert shown_spans(e, title, text) == ["Straße Café", "Café"]
    assert e.clauses[0].terms == ("straße café", "café")
    e = agree("lead:(prufung OR cafe)", title, "Café " + text)
    assert e is not None
    assert shown_spans(e, title, "Café " + text) == ["Prüfung", "Café"]
    e = agree("lead:/caf./", title, "Été " * 99 + "Café x")
    assert e is not None and shown_spans(e, title, "Été " * 99 + "Café x") == ["Café"]
    assert not lead_matches("lead:/caf./", title, "Été " * 100 + "Café")
    assert lead_matches("lead:ete", "", "Été")


def test_lead_counts_cjk_characters_as_words():
    assert lead_matches("lead:导弹", "t", "朝" * 98 + "导弹发射")  # characters 99-100
    assert not lead_matches("lead:导弹", "t", "朝" * 99 + "导弹发射")  # 100-101
    assert lead_matches("lead:/导弹/", "t", "朝" * 98 + "导弹")
    assert not lead_matches("lead:/导弹/", "t", "朝" * 99 + "导弹")
    assert lead_matches("lead:(北朝鮮 NEAR/2 発射)", "t", "北朝鮮がミ発射" + "あ" * 200)
    assert not lead_matches("lead:(北朝鮮 NEAR/2 発射)", "t", "あ" * 95 + "北朝鮮がミ発射")  # 発 is 102
    title, text = "北朝鮮ミサイル", "あ" * 98 + "ミサイル" + "ミサイル"
    e = agree("lead:ミサイル", title, text)
    assert e is not None
    assert e.clauses[0].spans == (("title", 3, 7),)  # the text's first one ends at character 102
    e = agree("lead:ミサ*", title, text)
    assert e is not None
    assert e.clauses[0].spans == (("title", 3, 5), ("text", 98, 100))


def _lead_oracle_occurrences(words: tuple[str, ...], pattern: tuple[str, ...], prefix: bool) -> list[tuple[int, int]]:
    k = len(pattern)
    out = []
    for i in range(len(words) - k + 1):
        got = words[i:i + k]
        if got[:-1] == pattern[:-1] and (got[-1].startswith(pattern[-1]) if prefix else got[-1] == pattern[-1]):
            out.append((i, i + k - 1))
    return out


def test_lead_agrees_with_an_oracle_on_random_items():
    """Random items whose text is about LEAD_WORDS long; the oracle counts the words itself."""
    rng = random.Random(1009)
    spellings = {"alpha": ["alpha", "Alpha", "ÁLPHA", "alpha's"], "alps": ["alps", "Alps"],
                 "beta": ["beta", "Béta", "BETA"], "gamma": ["gamma", "Gamma"], "x": ["x", "X", "½", "导弹", "x-y"]}
    vocab = list(spellings)
    terms = {"alpha": (("alpha",), False), "ab": (("alpha", "beta"), False), "alp": (("alp",), True),
             "bg": (("beta", "gamma"), False), "beta": (("beta",), False), "gamma": (("gamma",), False)}
    queries = {
        "lead:alpha": lambda o: bool(o["alpha"]),
        'lead:"alpha beta"': lambda o: bool(o["ab"]),
        "lead:alp*": lambda o: bool(o["alp"]),
        "lead:(alpha NEAR/2 beta)": lambda o: near(o["alpha"], o["beta"], 2, False),
        'lead:(alpha ONEAR/3 "beta gamma")': lambda o: near(o["alpha"], o["bg"], 3, True),
        "gamma AND NOT lead:alpha": lambda o: bool(o["all_gamma"]) and not o["alpha"],
        'lead:(alp* OR "beta gamma") AND lead:beta': lambda o: bool(o["alp"] or o["bg"]) and bool(o["beta"]),
    }

    def near(lo, ro, distance, ordered):
        return any(fl == fr and (sr > el and sr - el - 1 <= distance or
                                 not ordered and sl > er and sl - er - 1 <= distance)
                   for fl, sl, el in lo for fr, sr, er in ro)

    def item() -> tuple[str, str]:
        # mostly filler, with a few key words placed around the lead's end (word 100)
        def words(n: int, near: int) -> str:
            chosen = [rng.choice(spellings["x"]) for _ in range(n)]
            for _ in range(rng.randint(0, 5)):
                at = min(n - 1, max(0, near + rng.randint(-4, 3))) if rng.random() < 0.8 else rng.randrange(n)
                chosen[at] = rng.choice(spellings[rng.choice(vocab[:-1])])
            return "".join(w + rng.choice([" ", ", ", " — ", "\n"]) for w in chosen)
        return words(rng.randint(1, 4), 0) if rng.random() < 0.3 else "", words(rng.randint(80, 110), LEAD_WORDS - 3)

    m = Matcher([(query, query) for query in queries])
    fired = missed = 0
    for _ in range(300):
        title, text = item()
        title_words, text_words = words_of(title), words_of(text)
        occ: dict[str, list[tuple[int, int, int]]] = {}
        for name, (pattern, prefix) in terms.items():
            occ[name] = [(0, s, e) for s, e in _lead_oracle_occurrences(title_words, pattern, prefix)] + [
                (1, s, e) for s, e in _lead_oracle_occurrences(text_words, pattern, prefix) if e < LEAD_WORDS]
        occ["all_gamma"] = _lead_oracle_occurrences(title_words + ("\x00",) + text_words, ("gamma",), False)
        want = [name for name, oracle in queries.items() if oracle(occ)]
        got = [h.name for h in m.match(title, text)]
        assert got == want, (title, text)
        explained = m.explain(title, text, near_misses=True)
        assert [e.name for e in explained if e.matched] == got
        starts = [start for _, start, _ in word_spans(text)]
        for e in explained:  # a true lead clause's spans are all within the lead
            for c in e.clauses:
                if c.true and e.name != "gamma AND NOT lead:alpha":
                    for f, _, end in c.spans:  # the words of the span are among the first 100
                        assert f == "title" or bisect_left(starts, end) <= LEAD_WORDS, (e.name, text)
        fired += len(got)
        missed += len(queries) - len(got)
    assert fired > 150 and missed > 150
