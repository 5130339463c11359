"""The watchlist query language: parsing, precedence, canonical form and every error."""
from __future__ import annotations

import random
import re

import pytest

from monitor.query import (
    And,
    Field,
    Near,
    Not,
    Or,
    QuerySyntaxError,
    Regex,
    Term,
    evaluate,
    fold_case,
    fold_text,
    iter_terms,
    parse_alias_entry,
    parse_query,
    word_spans,
    words_of,
)


def t(*words: str, prefix: bool = False) -> Term:
    return Term(tuple(words), prefix)


# --------------------------------------------------------------------------- terms

def test_single_term_is_case_folded():
    assert parse_query("Missile") == t("missile")


def test_quoted_phrase():
    assert parse_query('"Ballistic  Missile"') == t("ballistic", "missile")


def test_quoted_single_word_is_the_same_term_as_bare():
    assert parse_query('"missile"') == parse_query("missile")


def test_prefix_wildcard():
    assert parse_query("launch*") == t("launch", prefix=True)


def test_prefix_wildcard_on_last_word_of_phrase():
    assert parse_query('"ballistic missil*"') == t("ballistic", "missil", prefix=True)


@pytest.mark.parametrize("query, words", [
    ("U.S.", ("u", "s")),
    ("Korea's", ("korea",)),
    ("Korea’s", ("korea",)),
    ("KOREA'S", ("korea",)),
    ("U.S.'s", ("u", "s")),
    ("it's", ("it",)),
    ("O'Neil", ("o", "neil")),
    ('"U.S. Navy"', ("u", "s", "navy")),
    ('"North Korea\'s missile"', ("north", "korea", "missile")),
    ("24/7", ("24", "7")),
])
def test_term_with_punctuation_becomes_a_phrase_of_its_words(query, words):
    assert parse_query(query) == Term(words)


@pytest.mark.parametrize("query, variants", [
    ("test-fire", [("test", "fire"), ("testfire",)]),
    ("B-52", [("b", "52"), ("b52",)]),
    ("Hwasong‐18", [("hwasong", "18"), ("hwasong18",)]),  # U+2010 hyphen
    ("test–fire", [("test", "fire"), ("testfire",)]),  # en dash
    ('"strategic cruise-missile"', [("strategic", "cruise", "missile"), ("strategic", "cruisemissile")]),
    ('"surface-to-air missile"', [("surface", "to", "air", "missile"), ("surfacetoair", "missile")]),
    ('"a-b c-d"', [("a", "b", "c", "d"), ("a", "b", "cd"), ("ab", "c", "d"), ("ab", "cd")]),
    ('"a-b c-d e-f g-h"', [("a", "b", "c", "d", "e", "f", "g", "h"), ("ab", "cd", "ef", "gh")]),
])
def test_hyphenated_term_is_an_or_of_spaced_and_closed_forms(query, variants):
    assert parse_query(query) == Or(tuple(Term(v) for v in variants))


@pytest.mark.parametrize("query", ['"test fire"', '"test - fire"', "-fire", "test-", "test_fire"])
def test_spaced_or_dangling_hyphen_has_no_closed_form(query):
    assert not isinstance(parse_query(query), Or)


def test_punctuated_term_with_wildcard():
    assert parse_query("test-fire*") == Or((t("test", "fire", prefix=True), t("testfire", prefix=True)))
    assert parse_query("U.S.A*") == t("u", "s", "a", prefix=True)


@pytest.mark.parametrize("query, words", [
    ("미사일", ("미", "사", "일")),  # CJK: every character is a word
    ("ミサイル", ("ミ", "サ", "イ", "ル")),
    ("导弹", ("导", "弹")),
    ("北朝鮮ミサイル", ("北", "朝", "鮮", "ミ", "サ", "イ", "ル")),
    ("ｶﾞ", ("ガ",)),  # half-width katakana with a voiced mark: NFKC
    ("Ракета", ("ракета",)),
    ('"баллистическая ракета"', ("баллистическая", "ракета")),
    ("πύραυλος", ("πυραυλοσ",)),  # accents stripped; casefold makes final sigma σ
    ("ΠΎΡΑΥΛΟΣ", ("πυραυλοσ",)),
    ("İstanbul", ("istanbul",)),
    ("naïve", ("naive",)),
    ("nai\u0308ve", ("naive",)),  # decomposed: the combining mark is part of the word
    ("Straße", ("strasse",)),  # casefold
    ("ＩＣＢＭ", ("icbm",)),  # full-width: NFKC
    ("ﬁre", ("fire",)),  # ligature: NFKC
    ("Zürich", ("zurich",)),
    ("KN-23형", ("kn", "23", "형")),
    ("मिसाइल", ("मिसाइल",)),  # Devanagari vowel signs do not split the word
])
def test_unicode_words(query, words):
    node = parse_query(query)
    assert (node.children[0] if isinstance(node, Or) else node) == Term(words)


@pytest.mark.parametrize("text", [
    "North Korea’s test-fire, (U.S.'s) Straße ½ Café 북한미사일을 ﬁre ＩＣＢＭ  naïve nai\u0308ve Ⅹ",
    "O'Neil's dog's 'quoted' s's 's x.'s .'s", "İSTANBUL ǅ ΣΟΦΟΣ", "", "...", "a\u200bb",
])
def test_word_spans_are_the_words_with_their_offsets(text):
    spans = word_spans(text)
    assert tuple(w for w, _, _ in spans) == words_of(text)
    for word, start, end in spans:
        assert 0 <= start < end <= len(text)
        assert words_of(text[start:end]) and word in words_of(text[start:end]), (word, text[start:end])


def test_word_spans_of_cjk_characters_are_single_characters():
    assert word_spans("북한미사일") == [("북", 0, 1), ("한", 1, 2), ("미", 2, 3), ("사", 3, 4), ("일", 4, 5)]
    assert word_spans("Korea's Café") == [("korea", 0, 5), ("cafe", 8, 12)]
    assert word_spans("Straße") == [("strasse", 0, 6)]


def test_fold_text_keeps_punctuation_and_maps_offsets():
    assert fold_text("Korea's TEST-fire") == ("korea's test-fire", None)
    folded, spans = fold_text("Korea’s Café — Straße")
    assert folded == "korea's cafe — strasse"
    assert spans is not None and len(spans) == len(folded)
    start = folded.index("strasse")
    assert (spans[start][0], spans[start + len("strasse") - 1][1]) == (15, 21)
    assert spans[folded.index("cafe")] == (8, 9)


def test_mark_ranges_are_current():
    import sys
    import unicodedata

    from monitor.query import _MARK_RANGES

    ranges, start = [], None
    for code in range(sys.maxunicode + 1):
        if unicodedata.category(chr(code))[0] == "M":
            if start is None:
                start = code
            prev = code
        elif start is not None:
            ranges.append(f"{start:04X}" if start == prev else f"{start:04X}-{prev:04X}")
            start = None
    assert _MARK_RANGES.split() == ranges


def test_fold_case_preserves_length():
    for text in ["İSTANBUL İzmir", "ΟΔΟΣ", "Straße", "ǅ", "plain ascii"]:
        assert len(fold_case(text)) == len(text)
    assert fold_case("İzmir") == "izmir"


def test_words_of_splits_like_the_matcher():
    assert words_of("North Korea's test-fire, (U.S.)") == ("north", "korea", "test", "fire", "u", "s")
    assert words_of("Korea’s KOREA'S Korea's's") == ("korea", "korea", "korea")


@pytest.mark.parametrize("word", ["and", "or", "not", "And", "Or", "Not", "ANDROID", "ORBIT", "NOTE", "NOT-A"])
def test_operator_words_in_other_case_or_longer_are_terms(word):
    node = parse_query(f"missile {word}")
    assert node == And((t("missile"), parse_query(f'"{word}"')))


# --------------------------------------------------------------------------- operators

def test_implicit_and_between_juxtaposed_operands():
    assert parse_query("north korea") == And((t("north"), t("korea")))
    assert parse_query("north korea") == parse_query("north AND korea")


def test_and_binds_tighter_than_or():
    assert parse_query("a OR b AND c") == Or((t("a"), And((t("b"), t("c")))))
    assert parse_query("a AND b OR c") == Or((And((t("a"), t("b"))), t("c")))


def test_implicit_and_binds_tighter_than_or():
    assert parse_query("a b OR c d") == Or((And((t("a"), t("b"))), And((t("c"), t("d")))))


def test_not_binds_tighter_than_and():
    assert parse_query("a AND NOT b c") == And((t("a"), Not(t("b")), t("c")))
    assert parse_query("a NOT b") == And((t("a"), Not(t("b"))))


def test_not_applies_to_a_group():
    assert parse_query("a NOT (b OR c)") == And((t("a"), Not(Or((t("b"), t("c"))))))


def test_parentheses_override_precedence():
    assert parse_query("(a OR b) AND c") == And((Or((t("a"), t("b"))), t("c")))


def test_nested_parentheses_and_flattening():
    assert parse_query("a AND (b AND (c AND d))") == And((t("a"), t("b"), t("c"), t("d")))
    assert parse_query("((a OR (b OR c)))") == Or((t("a"), t("b"), t("c")))
    assert parse_query("(a OR b) (c OR (d e))") == And((Or((t("a"), t("b"))), Or((t("c"), And((t("d"), t("e")))))))


def test_double_negation_cancels():
    assert parse_query("a AND NOT NOT b") == And((t("a"), t("b")))


def test_repeated_operands_collapse():
    assert parse_query("a OR a OR A") == t("a")


def test_multi_line_query_from_yaml():
    query = '(missile* OR\n "cruise missile*")\nAND\n(launch* OR test*)\n'
    assert parse_query(query) == And((
        Or((t("missile", prefix=True), t("cruise", "missile", prefix=True))),
        Or((t("launch", prefix=True), t("test", prefix=True))),
    ))


def test_shipped_style_query_parses():
    node = parse_query("""
      (missile* OR ICBM* OR "ballistic rocket*" OR "satellite launch*")
      AND (launch* OR test* OR "test-fire*" OR fired OR "flight test*")
      AND NOT ("video game*" OR "stock price*")
    """)
    assert isinstance(node, And) and len(node.children) == 3
    assert isinstance(node.children[2], Not)
    assert t("test", "fire", prefix=True) in node.children[1].children


def test_iter_terms_reports_negation_depth():
    node = parse_query('a (b OR NOT c) NOT (d NOT "e f")')
    assert list(iter_terms(node)) == [(t("a"), 0), (t("b"), 0), (t("c"), 1), (t("d"), 1), (t("e", "f"), 2)]


# --------------------------------------------------------------------------- canonical form

@pytest.mark.parametrize("query, canonical", [
    ("Missile", "missile"),
    ("north korea", "north AND korea"),
    ("a OR b c", "a OR b AND c"),
    ("(a OR b) c", "(a OR b) AND c"),
    ("a NOT (b OR c)", "a AND NOT (b OR c)"),
    ("a NOT (b c)", "a AND NOT (b AND c)"),
    ('test-fire* OR "ballistic missile"', '"test fire*" OR testfire* OR "ballistic missile"'),
    ("미사일 OR 导弹", '"미사일" OR "导弹"'),
    ("/hwasong-?1[5-9]/ missile", "/hwasong-?1[5-9]/ AND missile"),
    (r"title:/a\/b c/", r"title:/a\/b c/"),
    ("NOT b a", "NOT b AND a"),
])
def test_str_is_canonical(query, canonical):
    assert str(parse_query(query)) == canonical


def _random_node(rng: random.Random, depth: int) -> object:
    if depth == 0 or rng.random() < 0.3:
        words = tuple(rng.choice(["alpha", "beta", "gamma", "and", "or", "not", "x1"]) for _ in range(rng.randint(1, 3)))
        return Term(words, rng.random() < 0.3)
    kind = rng.choice([And, Or, Not])
    if kind is Not:
        return Not(_random_node(rng, depth - 1))
    return kind(tuple(_random_node(rng, depth - 1) for _ in range(rng.randint(2, 3))))


def test_canonical_form_reparses_to_an_equivalent_query():
    rng = random.Random(5)
    checked = 0
    for _ in range(400):
        node = _random_node(rng, 4)
        text = str(node)
        try:
            parsed = parse_query(text)
        except QuerySyntaxError as e:
            assert e.message == "query needs at least one term that must be present"
            continue
        terms = sorted({term for term, _ in iter_terms(node)}, key=str)
        for _ in range(20):  # same truth table on random assignments
            present = frozenset(term for term in terms if rng.random() < 0.5)
            assert evaluate(parsed, present) == evaluate(node, present), text
        assert parse_query(str(parsed)) == parsed
        checked += 1
    assert checked > 200


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("query, message, column", [
    ("", "empty query", 1),
    ("   \n ", "empty query", 1),
    ("missile AND (test", "missing closing parenthesis", 13),
    ("(a OR (b AND c)", "missing closing parenthesis", 1),
    ("a AND (b OR (c)", "missing closing parenthesis", 7),
    ("missile)", "unmatched closing parenthesis", 8),
    ("(a) OR b)", "unmatched closing parenthesis", 9),
    ("missile AND", "AND needs a term after it", 9),
    ("missile OR", "OR needs a term after it", 9),
    ("missile NOT", "NOT needs a term after it", 9),
    ("a AND (b OR)", "OR needs a term after it", 10),
    ("AND missile", "AND needs a term before it", 1),
    ("OR missile", "OR needs a term before it", 1),
    ("a (OR b)", "OR needs a term before it", 4),
    ("a AND OR b", "expected a term after AND, found OR", 7),
    ("a NOT AND b", "expected a term after NOT, found AND", 7),
    ("()", "empty parentheses", 1),
    ("missile AND ()", "empty parentheses", 13),
    ("missile ( )", "empty parentheses", 9),
    ('"ballistic missile', "unterminated quote", 1),
    ('missile AND "test', "unterminated quote", 13),
    ('"a" "b', "unterminated quote", 5),
    ("*", "a lone '*' is not a term", 1),
    ("missile AND *", "a lone '*' is not a term", 13),
    ('"*"', "a lone '*' is not a term", 2),
    ("te*st", "wildcard '*' is only allowed at the end of a term", 3),
    ("*launch", "wildcard '*' is only allowed at the end of a term", 1),
    ("launch**", "wildcard '*' is only allowed at the end of a term", 7),
    ('"missil* test"', "wildcard '*' is only allowed at the end of a phrase", 8),
    ("test-*", "wildcard '*' must directly follow a letter or digit", 6),
    ('"ballistic *"', "wildcard '*' must directly follow a letter or digit", 12),
    ('""', "empty phrase", 1),
    ('a OR "  "', "empty phrase", 6),
    ("a OR --", "term '--' has no letters or digits", 6),
    ('a "..."', "phrase '...' has no letters or digits", 3),
    ("NOT foo", "query needs at least one term that must be present", 1),
    ("a OR NOT b", "query needs at least one term that must be present", 6),
    ("NOT (a AND b)", "query needs at least one term that must be present", 1),
    ("(NOT a) OR (b AND NOT c) OR NOT d", "query needs at least one term that must be present", 2),
])
def test_errors_have_a_message_and_column(query, message, column):
    with pytest.raises(QuerySyntaxError) as info:
        parse_query(query)
    err = info.value
    assert err.message.startswith(message), err.message
    assert err.column == column, (err.message, err.column)
    assert err.query == query
    assert str(err) == f"{err.message} at column {column}"


def test_query_error_is_a_value_error_with_a_caret():
    with pytest.raises(ValueError) as info:
        parse_query("missile AND (test")
    assert info.value.caret() == "missile AND (test\n            ^"


def test_caret_on_multi_line_query_points_into_the_right_line():
    with pytest.raises(QuerySyntaxError) as info:
        parse_query("missile\nAND (test OR\n   launch")
    assert info.value.column == 13
    assert info.value.caret() == "AND (test OR\n    ^"


def test_deep_nesting_is_an_error_not_a_crash():
    with pytest.raises(QuerySyntaxError, match="nested"):
        parse_query("(" * 60 + "a" + ")" * 60)
    assert parse_query("(" * 20 + "a" + ")" * 20) == t("a")
    # NOT NOT cancels while parsing, so long NOT chains never nest deeply
    assert parse_query("a AND " + "NOT " * 2000 + "(b OR c)") == And((t("a"), Or((t("b"), t("c")))))
    assert parse_query("a AND " + "NOT " * 2001 + "b") == And((t("a"), Not(t("b"))))


def test_not_alone_would_match_everything():
    with pytest.raises(QuerySyntaxError, match="at least one term that must be present"):
        parse_query('NOT "video game"')
    assert parse_query("missile NOT game") == And((t("missile"), Not(t("game"))))


# --------------------------------------------------------------------------- NEAR, fields, aliases

def test_near_and_onear_parse_with_or_group_operands():
    assert parse_query("missile NEAR/10 (test* OR launch*)") == Near(
        t("missile"), Or((t("test", prefix=True), t("launch", prefix=True))), 10)
    assert parse_query('a ONEAR/3 "b c"') == Near(t("a"), t("b", "c"), 3, ordered=True)


def test_near_binds_tighter_than_not_and_and():
    assert parse_query("NOT a NEAR/5 b c") == And((Not(Near(t("a"), t("b"), 5)), t("c")))
    assert parse_query("x a NEAR/5 b OR y") == Or((And((t("x"), Near(t("a"), t("b"), 5))), t("y")))


def test_nearby_and_lower_case_near_are_terms():
    assert parse_query("nearby OR NEARBY") == t("nearby")
    assert parse_query("a near b") == And((t("a"), t("near"), t("b")))


@pytest.mark.parametrize("query, message, column", [
    ("a NEAR/0 b", "from 1 to 100", 8),
    ("a NEAR/101 b", "from 1 to 100", 8),
    ("a ONEAR/x b", "from 1 to 100", 9),
    ("a NEAR b", "NEAR needs a distance", 3),
    ("a NEAR/ b", "from 1 to 100", 8),
    ("(NOT a) NEAR/5 b", "left operand of NEAR/5 contains NOT", 9),
    ("a NEAR/5 (b c)", "right operand of NEAR/5 contains AND", 3),
    ("a NEAR/5 (b OR c d)", "contains AND", 3),
    ("title:a NEAR/3 b", "put the field around the NEAR", 9),
    ("(a NEAR/2 b) NEAR/2 c", "contains another NEAR", 14),
    ("a NEAR/2 b NEAR/2 c", "exactly two operands", 12),
    ("a NEAR/5", "NEAR/5 needs a term after it", 3),
    ("NEAR/5 a", "NEAR/5 needs a term before it", 1),
    ("a AND NEAR/5 b", "expected a term after AND, found NEAR/5", 7),
])
def test_near_errors_have_columns(query, message, column):
    with pytest.raises(QuerySyntaxError, match=re.escape(message)) as info:
        parse_query(query)
    assert info.value.column == column


def test_fields_parse():
    assert parse_query("title:(a OR b) text:x") == And((Field("title", Or((t("a"), t("b")))), Field("text", t("x"))))
    assert parse_query('title:"a b"') == Field("title", t("a", "b"))
    assert parse_query("title:launch*") == Field("title", t("launch", prefix=True))
    assert parse_query("title:(a NEAR/5 b)") == Field("title", Near(t("a"), t("b"), 5))
    assert parse_query("subtitle:x") == t("subtitle", "x")  # only title:, text: and lead: are fields


@pytest.mark.parametrize("query, message, column", [
    ("title:(text:a)", "fields do not nest", 8),
    ("title:", "title: needs a term after it", 1),
    ("a text:()", "empty parentheses", 8),
    ("NOT title:x", "at least one term that must be present", 1),
    ("title:(NOT x)", "at least one term that must be present", 8),
])
def test_field_errors_have_columns(query, message, column):
    with pytest.raises(QuerySyntaxError, match=re.escape(message)) as info:
        parse_query(query)
    assert info.value.column == column


ALIASES = {"dprk": ["North Korea", "DPRK", "Pyongyang", "Kim Jong Un"], "launch": ["launch*"]}


def test_alias_expands_to_an_or_of_its_entries():
    assert parse_query("@dprk missile", ALIASES) == And((
        Or((t("north", "korea"), t("dprk"), t("pyongyang"), t("kim", "jong", "un"))), t("missile")))
    assert parse_query("missile NEAR/5 @launch", ALIASES) == Near(t("missile"), t("launch", prefix=True), 5)
    assert parse_query("title:(@launch OR test)", ALIASES) == Field("title", Or((t("launch", prefix=True), t("test"))))
    assert parse_query("dprk OR @dprk", ALIASES) == parse_query('dprk OR "north korea" OR pyongyang OR "kim jong un"')


@pytest.mark.parametrize("query, aliases, message, column", [
    ("missile @dprkk", ALIASES, "unknown alias '@dprkk' (did you mean '@dprk'?)", 9),
    ("@dprk", None, "unknown alias '@dprk' (no aliases are defined)", 1),
    ("a @", ALIASES, "'@' alone is not an alias", 3),
    ("a @bad!", ALIASES, "'@bad!' is not an alias", 3),
    ("a @x", {"x": []}, "alias '@x' has no entries", 3),
    ("a @x", {"x": ["ok", "*"]}, "alias '@x': entry '*'", 3),
])
def test_alias_errors_have_columns(query, aliases, message, column):
    with pytest.raises(QuerySyntaxError, match=re.escape(message)) as info:
        parse_query(query, aliases)
    assert info.value.column == column


@pytest.mark.parametrize("query", [
    "a NEAR/3 b", "NOT a NEAR/3 b c", "(a OR b*) ONEAR/7 \"c d\"", "title:(a OR b) text:\"c d\"",
    "text:(x NEAR/2 y) OR NOT title:z AND w", "@dprk NEAR/3 @launch",
])
def test_canonical_form_round_trips_with_new_operators(query):
    node = parse_query(query, ALIASES)
    assert parse_query(str(node)) == node


def test_empty_groups_are_still_errors():
    for query in ("()", "a OR ()", "OR ()", "missile NEAR/3 ()"):
        with pytest.raises(QuerySyntaxError):
            parse_query(query)


# --------------------------------------------------------------------------- regex terms

def test_regex_term_parses_to_a_regex_node():
    assert parse_query("/hwasong-?1[5-9]/") == Regex("hwasong-?1[5-9]")
    assert parse_query("/hwasong-?1[5-9]/ missile") == And((Regex("hwasong-?1[5-9]"), t("missile")))
    # spaces, quotes, parentheses and an escaped slash belong to the pattern
    assert parse_query('/a b (c) "d"/') == Regex('a b (c) "d"')
    assert parse_query(r"/24\/7/ OR x") == Or((Regex(r"24\/7"), t("x")))
    # the pattern is kept as written (case and all); matching is case-insensitive
    assert parse_query("/ICBM|SLBM/") == Regex("ICBM|SLBM")


def test_regex_offset_is_not_compared_but_kept_for_messages():
    node = parse_query("missile AND /kn-?2[0-9]/")
    assert isinstance(node, And)
    regex = node.children[1]
    assert isinstance(regex, Regex) and regex.offset == 12
    assert regex == Regex("kn-?2[0-9]")
    assert hash(regex) == hash(Regex("kn-?2[0-9]"))


def test_regex_compiled_is_case_insensitive_and_folds_non_ascii():
    assert Regex("café").compiled.search("cafe au lait")
    assert Regex("ICBM").compiled.search("an icbm")
    assert not Regex("café").compiled.search("caffe")


@pytest.mark.parametrize("query", [
    "/hwasong-?1[5-9]/", "/a b/ OR c", r"/a\/b c/ AND NOT d", 'missile NOT /game[sr]?/',
    "title:/x+/", "text:(/ab+/ OR c)", "lead:/kn-?23/", "(/a+/ OR b) AND (c OR /d+/)", '/"q"/ x',
])
def test_regex_canonical_form_round_trips(query):
    node = parse_query(query)
    assert parse_query(str(node)) == node
    assert str(parse_query(str(node))) == str(node)


def test_regexes_in_iter_terms_and_evaluate():
    node = parse_query("(/a+/ OR b) NOT /c+/")
    assert list(iter_terms(node)) == [(Regex("a+"), 0), (t("b"), 0), (Regex("c+"), 1)]
    assert evaluate(node, {Regex("a+")})
    assert not evaluate(node, {Regex("a+"), Regex("c+")})


def test_regex_inside_a_field():
    assert parse_query("title:/x+/") == Field("title", Regex("x+"))
    assert parse_query("text:(/ab+/ OR c)") == Field("text", Or((Regex("ab+"), t("c"))))
    assert parse_query("lead:/kn-?23/ missile") == And((Field("lead", Regex("kn-?23")), t("missile")))
    assert parse_query("title:(a NOT /b+/)") == Field("title", And((t("a"), Not(Regex("b+")))))


@pytest.mark.parametrize("query, message, column", [
    # a pattern that does not compile: the column of re's error inside the pattern
    ("/(unclosed/", "bad regex: missing ), unterminated subpattern", 2),
    ("missile AND /(unclosed/", "bad regex: missing ), unterminated subpattern", 14),
    ("/[a-/", "bad regex: unterminated character set", 2),
    ("x /a)/", "bad regex: unbalanced parenthesis", 5),
    ("/a{2,1}/", "bad regex: min repeat greater than max repeat", 4),
    ("title:/(x/", "bad regex: missing ), unterminated subpattern", 8),
    # empty
    ("//", "empty regex", 1),
    ("a OR //", "empty regex", 6),
    ("lead://", "empty regex", 6),
    # a pattern that matches the empty string would match every item
    ("/x*/", "regex /x*/ can match empty text", 1),
    ("a OR /x*/", "regex /x*/ can match empty text", 6),
    ("/^/", "regex /^/ can match empty text", 1),
    (r"/\b/", r"regex /\b/ can match empty text", 1),
    ("/a|/", "regex /a|/ can match empty text", 1),
    ("/(missile)?/", "regex /(missile)?/ can match empty text", 1),
    # flags glued after the closing slash
    ("/x/i", "unexpected 'i' after the regex's closing '/'", 4),
    ("a /x/gi b", "unexpected 'gi' after the regex's closing '/'", 6),
    ("/x/)", "unmatched closing parenthesis", 4),  # ')' ends the token: not glued
    # unterminated
    ("a /b", "unterminated regex", 3),
    (r"a /b\/", "unterminated regex", 3),
    # not as a NEAR operand
    ("a NEAR/3 /b/", "the right operand of NEAR/3 contains a regex", 3),
    ("/b/ NEAR/3 a", "the left operand of NEAR/3 contains a regex", 5),
    ("(a OR /b+/) ONEAR/3 c", "the left operand of ONEAR/3 contains a regex", 13),
    # a regex alone under NOT requires nothing
    ("NOT /x/", "query needs at least one term that must be present", 1),
    ("/a/ OR NOT b", "query needs at least one term that must be present", 8),
])
def test_regex_errors_have_a_message_and_column(query, message, column):
    with pytest.raises(QuerySyntaxError) as info:
        parse_query(query)
    err = info.value
    assert err.message.startswith(message), err.message
    assert err.column == column, (err.message, err.column)


def test_regex_error_caret_points_into_the_pattern():
    with pytest.raises(QuerySyntaxError) as info:
        parse_query("missile AND /(unclosed/")
    assert info.value.caret() == "missile AND /(unclosed/\n             ^"


@pytest.mark.parametrize("entry", ["/a/", " /hwasong-?1[5-9]/ ", "/x*/"])
def test_regex_is_not_an_alias_entry(entry):
    with pytest.raises(QuerySyntaxError, match=re.escape("a regex is not an alias entry")) as info:
        parse_query("missile @dprk", {"dprk": ["DPRK", entry]})
    assert info.value.column == 9  # the '@'
    assert info.value.message.startswith(f"alias '@dprk': entry {entry!r}: ")
    with pytest.raises(QuerySyntaxError, match="a regex is not an alias entry") as info:
        parse_alias_entry(entry)
    assert info.value.column == entry.index("/") + 1


def test_alias_entries_with_slashes_that_are_not_regexes_are_terms():
    assert parse_alias_entry("24/7") == t("24", "7")
    assert parse_query("@x", {"x": ["a/b/"]}) == t("a", "b")


# --------------------------------------------------------------------------- lead:

def test_lead_field_parses():
    assert parse_query("lead:(a NEAR/5 b)") == Field("lead", Near(t("a"), t("b"), 5))
    assert parse_query('lead:"x y"') == Field("lead", t("x", "y"))
    assert parse_query("lead:launch*") == Field("lead", t("launch", prefix=True))
    assert parse_query("lead:(a OR b) NOT lead:c") == And((Field("lead", Or((t("a"), t("b")))),
                                                            Not(Field("lead", t("c")))))
    assert parse_query("x AND NOT lead:y") == And((t("x"), Not(Field("lead", t("y")))))
    assert parse_query("lead:(@dprk OR test)", ALIASES) == Field(
        "lead", Or((t("north", "korea"), t("dprk"), t("pyongyang"), t("kim", "jong", "un"), t("test"))))
    assert parse_query("lead:test-fire") == Field("lead", Or((t("test", "fire"), t("testfire"))))


def test_lead_is_a_field_only_as_written():
    assert parse_query("Lead:x") == t("lead", "x")  # fields are lower case, like the operators' case rule
    assert parse_query("leads:x") == t("leads", "x")
    assert parse_query("lead") == t("lead")


@pytest.mark.parametrize("query, message, column", [
    ("lead:(title:a)", "fields do not nest: title: inside lead:(...)", 7),
    ("lead:(a OR text:b)", "fields do not nest: text: inside lead:(...)", 12),
    ("title:(lead:a)", "fields do not nest: lead: inside title:(...)", 8),
    ("text:(x NOT lead:y)", "fields do not nest: lead: inside text:(...)", 13),
    ("lead:(lead:a)", "fields do not nest: lead: inside lead:(...)", 7),
    ("lead:", "lead: needs a term after it", 1),
    ("a lead:()", "empty parentheses", 8),
    ("lead:(NOT x)", "query needs at least one term that must be present", 7),
    ("NOT lead:x", "query needs at least one term that must be present", 1),
    ("lead:a NEAR/3 b", "put the field around the NEAR", 8),
    ("lead:(a NEAR/0 b)", "from 1 to 100", 14),
])
def test_lead_errors_have_columns(query, message, column):
    with pytest.raises(QuerySyntaxError, match=re.escape(message)) as info:
        parse_query(query)
    assert info.value.column == column


@pytest.mark.parametrize("query, canonical", [
    ("lead:(a NEAR/5 b)", "lead:(a NEAR/5 b)"),
    ('lead:"X Y"', 'lead:"x y"'),
    ("lead:(a b) OR c", "lead:(a AND b) OR c"),
    ("x NOT lead:(y OR z)", "x AND NOT lead:(y OR z)"),
    ("lead:(NOT a b)", "lead:(NOT a AND b)"),
    ("lead:/kn-?23/", "lead:/kn-?23/"),
    ("lead:(a ONEAR/2 (b OR c*))", "lead:(a ONEAR/2 (b OR c*))"),
])
def test_lead_canonical_form_round_trips(query, canonical):
    node = parse_query(query)
    assert str(node) == canonical
    assert parse_query(str(node)) == node
