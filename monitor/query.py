"""Watchlist query language: parse a boolean query into a small immutable AST, and the text
rules that query terms and item text share.

Query rules (grammar in ``query.lark``, parsed with lark's LALR parser):

- Operators ``AND``, ``OR``, ``NOT`` are uppercase keywords; ``and``/``or``/``not`` in any
  other case are ordinary terms. Precedence: ``NOT`` > ``AND`` > ``OR``; parentheses group.
  Juxtaposition is ``AND``: ``north korea`` == ``north AND korea``.
- A bare term or a ``"quoted phrase"`` is split into words exactly as the matcher splits
  text (:func:`words_of`, see "Text rules" below), so ``U.S.`` is the phrase ``"u s"``,
  ``Korea's`` the word ``korea`` and ``미사일`` the phrase of its three characters.
- Hyphens: a term or phrase with a hyphen between two letters or digits (``test-fire``,
  ``Hwasong-18``, ``"strategic cruise-missile"``; any of ``- ‐ ‑ ‒ – − ﹣ －``) also matches
  the closed form: it becomes an OR of the spaced and the closed spelling,
  ``"test fire" OR testfire``. The spaced form matches "test-fire" and "test fire" (the
  hyphen only separates words). Each hyphenated compound is spaced or closed as a whole;
  with up to three compounds in one term every combination is included, with more only
  all-spaced and all-closed. A term written with a space (``"test fire"``) matches the
  spaced and hyphenated spellings only, never "testfire".
- A ``*`` directly after the last word makes it a prefix: ``launch*``, ``"ballistic missil*"``.
  ``*`` anywhere else is an error.
- Regexes: ``/pattern/`` is a Python ``re`` pattern searched (``re.search``, so whole words
  are *not* implied) case-insensitively in the *folded field text* of the title and of the
  text (:func:`fold_text`: NFKC, case folded, accents stripped, curly apostrophes made
  straight, but punctuation, spacing and possessives kept as the item has them), each field
  on its own. Non-ASCII characters of the pattern are folded the same way, so ``/café/``
  finds "Cafe" and "CAFÉ". A ``/`` inside the pattern is written ``\\/``; the pattern runs
  to the first unescaped ``/`` (spaces, quotes and parentheses included), and nothing may be
  glued after the closing ``/`` (no flags). A pattern that does not compile, is empty or
  matches the empty string (``/x*/`` would match every item) is an error at its column.
  Regexes may stand anywhere a term may, inside fields too, but not as NEAR operands or
  alias entries.
- A query must require at least one term to be present (``NOT foo`` or ``a OR NOT b``
  would match an empty item, i.e. nearly everything), and is rejected otherwise.
- Proximity: ``a NEAR/n b`` is true when an occurrence of ``a`` and one of ``b`` are in the
  same field (title or text), do not overlap, and have at most ``n`` words *between* them
  (the words after the end of the first and before the start of the second), in either
  order: ``missile NEAR/1 test`` accepts "missile test" (0 words between) and "test of
  missile" (1), not "missile was never tested" (``tested`` is not ``test``) or "missile x y
  test" (2). ``a ONEAR/n b`` is the same with ``a`` before ``b``. ``n`` is an integer from 1
  to 100 (``NEAR/0`` is an error). In CJK text every character is a word, so there the
  distance counts characters. NEAR binds tighter than NOT and AND: ``NOT a NEAR/5 b c`` is
  ``(NOT (a NEAR/5 b)) AND c``. Each operand is a term, phrase, wildcard, ``@alias`` or a
  parenthesised OR-group of those; NOT, AND, a field, a regex or another NEAR inside an
  operand is an error (put a field around the whole NEAR: ``title:(a NEAR/5 b)``).
- Fields: ``title:x``, ``title:"a phrase"``, ``title:/re/``, ``title:( ... )`` and
  ``text:( ... )`` make the sub-query match within that field only (a NOT inside means "not
  in that field"); bare terms search both. ``lead:( ... )`` matches within the *lead*: the
  title and the first :data:`LEAD_WORDS` (100) words of the text, where a news story says
  what happened (an occurrence counts when it ends within them; a NEAR pair must still be
  in one field, title or text). Fields do not nest.
- Aliases: ``@name`` expands to an OR of the alias's entries, each parsed like a quoted
  phrase (so it may end in ``*``, and a hyphen gives the closed form too). Aliases come from
  ``parse_query(text, aliases)``; an unknown alias is an error at the ``@``.
- Empty groups (``()``, ``a OR ()``) and empty phrases are errors.
- Every error is a :class:`QuerySyntaxError` with a 1-based column into the query text.

Text rules (:func:`words_of`; the matcher's word string and explain spans follow the same
rules, see :mod:`monitor.matcher`):

- Curly and other apostrophes (``’ ‘ ʼ ‛ ′ ＇``) count as ``'``.
- A word is a run of word characters: Unicode ``\\w`` (letters, digits, ``_``) and combining
  marks (so a decomposed "é" or a Devanagari vowel sign does not split a word). Every other
  character only separates words.
- Possessives: ``'s`` (or ``’s``) right after a word, or after ``word.``, and not followed by
  a word character, is dropped: "Korea's" and "Korea’s" are the word ``korea``; "U.S.'s" is
  ``u s``.
- Each word is normalised: NFKC (full-width letters, ligatures, superscripts), case folded
  (``str.casefold``: "Straße" is ``strasse``), accents stripped (NFKD, combining diacritical
  marks U+0300–U+036F and their supplements removed, NFC again: "Café" is ``cafe``, "ё" is
  ``е``); normalisation may split a word ("½" is ``1`` and ``2``).
- CJK: every Han, Hiragana, Katakana and Hangul character is a word of its own, so a
  query term ``ミサイル``, ``미사일`` or ``导弹`` is a phrase of single characters and matches
  that run inside longer text ("북한미사일을" contains ``미사일``). Cyrillic, Greek and other
  scripts keep whole words.

The AST (:class:`Term`, :class:`Regex`, :class:`And`, :class:`Or`, :class:`Not`,
:class:`Near`, :class:`Field`) is flattened (no ``And`` directly inside an ``And``), aliases
are expanded, and ``str(node)`` is a canonical query that parses back to an equal node.
"""
from __future__ import annotations

import difflib
import itertools
import re
import unicodedata
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources

from lark import Lark, Token
from lark.exceptions import UnexpectedToken, VisitError
from lark.lexer import Lexer

#: Deepest nesting a query may have (parentheses; ``NOT NOT x`` cancels to ``x`` while parsing).
MAX_DEPTH = 50
#: Largest NEAR/n distance.
MAX_DISTANCE = 100
#: What may follow ``@`` (the same rule config.py applies to alias names).
ALIAS_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
#: Field names, in the order the matcher numbers them. ``lead`` is not a third part of the
#: item but the title plus the first :data:`LEAD_WORDS` words of the text.
FIELDS = ("title", "text", "lead")
#: How many words of the text belong to the ``lead:`` field (with the whole title).
LEAD_WORDS = 100


class QuerySyntaxError(ValueError):
    """A query that does not parse. ``column`` is 1-based within ``query``."""

    def __init__(self, message: str, query: str, column: int):
        self.message = message
        self.query = query
        self.column = column
        super().__init__(f"{message} at column {column}")

    def caret(self) -> str:
        """The query with a caret under the bad spot (two lines)."""
        line_start = self.query.rfind("\n", 0, max(self.column - 1, 0)) + 1
        line_end = self.query.find("\n", line_start)
        line = self.query[line_start:] if line_end == -1 else self.query[line_start:line_end]
        return f"{line}\n{' ' * (self.column - 1 - line_start)}^"


# --------------------------------------------------------------------------- text rules
# Shared with the matcher so that query terms and item text are split identically.

#: Combining marks (Unicode categories Mn, Mc, Me; Unicode 14 as in Python 3.11): word
#: characters besides ``\w``. Generated with unicodedata; tests check it is current.
_MARK_RANGES = (
    "0300-036F 0483-0489 0591-05BD 05BF 05C1-05C2 05C4-05C5 05C7 0610-061A 064B-065F 0670 06D6-06DC "
    "06DF-06E4 06E7-06E8 06EA-06ED 0711 0730-074A 07A6-07B0 07EB-07F3 07FD 0816-0819 081B-0823 "
    "0825-0827 0829-082D 0859-085B 0898-089F 08CA-08E1 08E3-0903 093A-093C 093E-094F 0951-0957 "
    "0962-0963 0981-0983 09BC 09BE-09C4 09C7-09C8 09CB-09CD 09D7 09E2-09E3 09FE 0A01-0A03 0A3C "
    "0A3E-0A42 0A47-0A48 0A4B-0A4D 0A51 0A70-0A71 0A75 0A81-0A83 0ABC 0ABE-0AC5 0AC7-0AC9 "
    "0ACB-0ACD 0AE2-0AE3 0AFA-0AFF 0B01-0B03 0B3C 0B3E-0B44 0B47-0B48 0B4B-0B4D 0B55-0B57 "
    "0B62-0B63 0B82 0BBE-0BC2 0BC6-0BC8 0BCA-0BCD 0BD7 0C00-0C04 0C3C 0C3E-0C44 0C46-0C48 "
    "0C4A-0C4D 0C55-0C56 0C62-0C63 0C81-0C83 0CBC 0CBE-0CC4 0CC6-0CC8 0CCA-0CCD 0CD5-0CD6 "
    "0CE2-0CE3 0D00-0D03 0D3B-0D3C 0D3E-0D44 0D46-0D48 0D4A-0D4D 0D57 0D62-0D63 0D81-0D83 0DCA "
    "0DCF-0DD4 0DD6 0DD8-0DDF 0DF2-0DF3 0E31 0E34-0E3A 0E47-0E4E 0EB1 0EB4-0EBC 0EC8-0ECD "
    "0F18-0F19 0F35 0F37 0F39 0F3E-0F3F 0F71-0F84 0F86-0F87 0F8D-0F97 0F99-0FBC 0FC6 102B-103E "
    "1056-1059 105E-1060 1062-1064 1067-106D 1071-1074 1082-108D 108F 109A-109D 135D-135F "
    "1712-1715 1732-1734 1752-1753 1772-1773 17B4-17D3 17DD 180B-180D 180F 1885-1886 18A9 "
    "1920-192B 1930-193B 1A17-1A1B 1A55-1A5E 1A60-1A7C 1A7F 1AB0-1ACE 1B00-1B04 1B34-1B44 "
    "1B6B-1B73 1B80-1B82 1BA1-1BAD 1BE6-1BF3 1C24-1C37 1CD0-1CD2 1CD4-1CE8 1CED 1CF4 1CF7-1CF9 "
    "1DC0-1DFF 20D0-20F0 2CEF-2CF1 2D7F 2DE0-2DFF 302A-302F 3099-309A A66F-A672 A674-A67D "
    "A69E-A69F A6F0-A6F1 A802 A806 A80B A823-A827 A82C A880-A881 A8B4-A8C5 A8E0-A8F1 A8FF "
    "A926-A92D A947-A953 A980-A983 A9B3-A9C0 A9E5 AA29-AA36 AA43 AA4C-AA4D AA7B-AA7D AAB0 "
    "AAB2-AAB4 AAB7-AAB8 AABE-AABF AAC1 AAEB-AAEF AAF5-AAF6 ABE3-ABEA ABEC-ABED FB1E FE00-FE0F "
    "FE20-FE2F 101FD 102E0 10376-1037A 10A01-10A03 10A05-10A06 10A0C-10A0F 10A38-10A3A 10A3F "
    "10AE5-10AE6 10D24-10D27 10EAB-10EAC 10F46-10F50 10F82-10F85 11000-11002 11038-11046 11070 "
    "11073-11074 1107F-11082 110B0-110BA 110C2 11100-11102 11127-11134 11145-11146 11173 "
    "11180-11182 111B3-111C0 111C9-111CC 111CE-111CF 1122C-11237 1123E 112DF-112EA 11300-11303 "
    "1133B-1133C 1133E-11344 11347-11348 1134B-1134D 11357 11362-11363 11366-1136C 11370-11374 "
    "11435-11446 1145E 114B0-114C3 115AF-115B5 115B8-115C0 115DC-115DD 11630-11640 116AB-116B7 "
    "1171D-1172B 1182C-1183A 11930-11935 11937-11938 1193B-1193E 11940 11942-11943 119D1-119D7 "
    "119DA-119E0 119E4 11A01-11A0A 11A33-11A39 11A3B-11A3E 11A47 11A51-11A5B 11A8A-11A99 "
    "11C2F-11C36 11C38-11C3F 11C92-11CA7 11CA9-11CB6 11D31-11D36 11D3A 11D3C-11D3D 11D3F-11D45 "
    "11D47 11D8A-11D8E 11D90-11D91 11D93-11D97 11EF3-11EF6 16AF0-16AF4 16B30-16B36 16F4F "
    "16F51-16F87 16F8F-16F92 16FE4 16FF0-16FF1 1BC9D-1BC9E 1CF00-1CF2D 1CF30-1CF46 1D165-1D169 "
    "1D16D-1D172 1D17B-1D182 1D185-1D18B 1D1AA-1D1AD 1D242-1D244 1DA00-1DA36 1DA3B-1DA6C "
    "1DA75 1DA84 1DA9B-1DA9F 1DAA1-1DAAF 1E000-1E006 1E008-1E018 1E01B-1E021 1E023-1E024 1E026-1E02A "
    "1E130-1E136 1E2AE 1E2EC-1E2EF 1E8D0-1E8D6 1E944-1E94A E0100-E01EF"
)


def _char_class(ranges: str) -> str:
    """``"0300-036F 0483"`` as the inside of a regex character class."""
    out = []
    for part in ranges.split():
        lo, _, hi = part.partition("-")
        out.append(re.escape(chr(int(lo, 16))) + (f"-{re.escape(chr(int(hi, 16)))}" if hi else ""))
    return "".join(out)


_W = r"\w" + _char_class(_MARK_RANGES)  # word characters, inside [...]
#: A word of item or query text: a run of word characters (``\w`` and combining marks).
WORD_RE = re.compile(f"[{_W}]+")
#: Words in order, skipping a possessive ``'s`` (group 1 is None for those).
_SEGMENT_RE = re.compile(rf"'(?:(?<=[{_W}]')|(?<=[{_W}]\.'))[sS](?![{_W}])|([{_W}]+)")
#: The same for ASCII text (``\w`` is ``[A-Za-z0-9_]`` there; no marks).
_ASCII_SEGMENT_RE = re.compile(r"'(?:(?<=\w')|(?<=\w\.'))[sS](?!\w)|(\w+)", re.ASCII)
#: A possessive in ASCII bytes, replaced by two spaces on the matcher's fast path.
ASCII_POSSESSIVE_RE = re.compile(rb"'(?:(?<=\w')|(?<=\w\.'))[sS](?!\w)")  # literal first: fast

#: Characters read as an apostrophe: ’ ‘ ʼ ‛ ′ ＇ (ʼ is a letter to ``\w``, so it must go first).
APOSTROPHES = "\u2019\u2018\u02bc\u201b\u2032\uff07"
_APOSTROPHE_TABLE = str.maketrans(dict.fromkeys(APOSTROPHES, "'"))
#: Hyphens that join the parts of a compound in a query term.
HYPHENS = "-\u2010\u2011\u2012\u2013\u2212\ufe63\uff0d"
#: Combining diacritical marks removed by accent folding (after NFKD).
_DIACRITICS = dict.fromkeys(itertools.chain(range(0x300, 0x370), range(0x1AB0, 0x1B00), range(0x1DC0, 0x1E00),
                                            range(0x20D0, 0x2100), range(0xFE20, 0xFE30)))
#: Scripts whose every character is a word: Hangul Jamo, CJK punctuation-free blocks
#: (Hiragana, Katakana, Hangul, Han with extensions and compatibility ideographs).
_CJK = ("1100-11FF 3005-3007 3021-3029 3038-303C 3041-3096 309D-309F 30A1-30FA 30FC-30FF 3131-318E "
        "31F0-31FF 3400-4DBF 4E00-9FFF A960-A97C AC00-D7A3 D7B0-D7FB F900-FAFF FF66-FF9F "
        "20000-3134F")
_CJK_RE = re.compile(f"[{_char_class(_CJK)}]")
_CJK_SPLIT_RE = re.compile(f"[{_char_class(_CJK)}]|[^{_char_class(_CJK)}]+")


def fold_case(text: str) -> str:
    """Lower-case ``text`` without changing its length, so offsets stay valid.

    ``str.lower`` maps a few characters to two (``'İ'.lower() == 'i̇'``); those keep only
    the first character of their lower-case form. (Used for reporting the item's own
    spelling; matching uses the full normalisation of :func:`normalize_word`.)
    """
    low = text.lower()
    if len(low) == len(text):  # lower() never shrinks, so equal length means 1:1
        return low
    return "".join(c.lower()[0] for c in text)


@lru_cache(maxsize=1 << 16)
def fold(text: str) -> str:
    """NFKC, case folding and accent stripping of ``text`` (a word, or any characters)."""
    if text.isascii():
        return text.lower()
    s = unicodedata.normalize("NFKC", text).casefold()
    if s.isascii():
        return s
    return unicodedata.normalize("NFC", unicodedata.normalize("NFKD", s).translate(_DIACRITICS))


@lru_cache(maxsize=1 << 16)
def normalize_word(segment: str) -> tuple[str, ...]:
    """The words one run of word characters of the original text becomes: usually one,
    folded (:func:`fold`); more when normalisation brings a separator in or it has CJK."""
    s = fold(segment)
    if s.isalnum() and s.isascii():
        return (s,)
    out: list[str] = []
    for part in WORD_RE.findall(s):
        if _CJK_RE.search(part):
            out.extend(_CJK_SPLIT_RE.findall(part))
        else:
            out.append(part)
    return tuple(out)


def words_of(text: str) -> tuple[str, ...]:
    """The normalised words of ``text``, as the matcher sees them (see the module rules)."""
    if text.isascii():
        return tuple(filter(None, _ASCII_SEGMENT_RE.findall(text.lower())))  # the pattern ignores case
    out: list[str] = []
    for segment in _SEGMENT_RE.findall(text.translate(_APOSTROPHE_TABLE)):
        if segment:
            out.extend((segment.lower(),) if segment.isascii() else normalize_word(segment))
    return tuple(out)


def word_spans(text: str) -> list[tuple[str, int, int]]:
    """Each word of :func:`words_of` with the (start, end) of its characters in ``text``.

    A word that normalisation changed keeps the span of the original run it came from; the
    characters of a CJK run get a span each when normalisation kept them one for one."""
    out: list[tuple[str, int, int]] = []
    ascii_text = text.isascii()
    pattern = _ASCII_SEGMENT_RE if ascii_text else _SEGMENT_RE
    source = text if ascii_text else text.translate(_APOSTROPHE_TABLE)
    for m in pattern.finditer(source):
        segment = m.group(1)
        if not segment:
            continue
        start, end = m.span()
        if segment.isascii():
            out.append((segment.lower(), start, end))
            continue
        words = normalize_word(segment)
        folded = fold(segment)
        if len(folded) == len(segment) and all(len(fold(c)) == 1 for c in segment):
            at = 0  # one character for one: find each word's characters in the folded run
            for word in words:
                at = folded.index(word, at)
                out.append((word, start + at, start + at + len(word)))
                at += len(word)
        else:
            out.extend((word, start, end) for word in words)
    return out


def fold_text(text: str) -> tuple[str, list[tuple[int, int]] | None]:
    """The folded text regexes search (:func:`fold` applied per run of word characters and
    per other character), and for each of its characters the (start, end) in ``text`` it
    came from; ``None`` when the two are the same length and aligned (ASCII text)."""
    if text.isascii():
        return text.lower(), None
    source = text.translate(_APOSTROPHE_TABLE)
    pieces: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in itertools.chain(WORD_RE.finditer(source), (None,)):
        start, end = (m.span() if m is not None else (len(source), len(source)))
        for i in range(pos, start):  # separators, one by one
            folded = fold(source[i])
            pieces.append(folded)
            spans.extend([(i, i + 1)] * len(folded))
        if m is None:
            break
        run = source[start:end]
        folded = fold(run)
        pieces.append(folded)
        if len(folded) == len(run) and all(len(fold(c)) == 1 for c in run):
            spans.extend((i, i + 1) for i in range(start, end))
        else:
            spans.extend([(start, end)] * len(folded))
        pos = end
    return "".join(pieces), spans


def is_word_char(char: str) -> bool:
    return WORD_RE.match(char) is not None


def _join_words(words: Sequence[str]) -> str:
    """Words as a query spells them: spaces between, none between two CJK characters."""
    out = words[0]
    for prev, word in itertools.pairwise(words):
        out += word if (len(prev) == 1 and len(word) == 1 and _CJK_RE.match(prev) and _CJK_RE.match(word)) \
            else f" {word}"
    return out


_COMPOUND_RE = re.compile(f"[{_W}]+(?:[{re.escape(HYPHENS)}][{_W}]+)+")
_HYPHEN_RE = re.compile(f"[{re.escape(HYPHENS)}]")
#: Most hyphenated compounds in one term for which every spaced/closed combination is made.
MAX_COMPOUNDS = 3


def hyphen_variants(raw: str) -> list[str]:
    """``raw`` and its spellings with hyphenated compounds closed: ``"test-fire"`` gives
    ``["test-fire", "testfire"]`` (see the module rules)."""
    compounds = list(_COMPOUND_RE.finditer(raw))
    if not compounds:
        return [raw]
    if len(compounds) <= MAX_COMPOUNDS:
        choices = list(itertools.product((False, True), repeat=len(compounds)))
    else:
        choices = [(False,) * len(compounds), (True,) * len(compounds)]
    out = []
    for closed in choices:
        pieces, pos = [], 0
        for m, close in zip(compounds, closed, strict=True):
            pieces.append(raw[pos:m.start()])
            pieces.append(_HYPHEN_RE.sub("", m.group()) if close else m.group())
            pos = m.end()
        pieces.append(raw[pos:])
        out.append("".join(pieces))
    return out


# --------------------------------------------------------------------------- AST

@dataclass(frozen=True)
class Term:
    """One or more consecutive words; ``prefix`` makes the last word match any word it starts."""

    words: tuple[str, ...]
    prefix: bool = False

    @property
    def is_phrase(self) -> bool:
        return len(self.words) > 1

    def __str__(self) -> str:
        body = _join_words(self.words) + ("*" if self.prefix else "")
        return f'"{body}"' if self.is_phrase else body


@dataclass(frozen=True)
class Regex:
    """``/pattern/``: a Python regex searched in the folded text of a field (see the rules).
    ``offset`` (0-based, of the opening slash; not compared) is for error messages."""

    pattern: str
    offset: int = field(default=0, compare=False, repr=False)

    @property
    def compiled(self) -> re.Pattern[str]:
        return _compile_regex(self.pattern)

    def __str__(self) -> str:
        return f"/{self.pattern}/"


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]

    def __str__(self) -> str:
        return " AND ".join(_wrap(c, Or) for c in self.children)


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]

    def __str__(self) -> str:
        return " OR ".join(str(c) for c in self.children)


@dataclass(frozen=True)
class Not:
    child: Node

    def __str__(self) -> str:
        return f"NOT {_wrap(self.child, (And, Or))}"


@dataclass(frozen=True)
class Near:
    """``left NEAR/distance right`` (``ONEAR`` when ``ordered``); operands are a Term or an
    Or of Terms. ``offset`` (0-based, of the operator; not compared) is for error messages."""

    left: Term | Or
    right: Term | Or
    distance: int
    ordered: bool = False
    offset: int = field(default=0, compare=False, repr=False)

    @property
    def children(self) -> tuple[Node, Node]:
        return (self.left, self.right)

    def __str__(self) -> str:
        op = "ONEAR" if self.ordered else "NEAR"
        return f"{_wrap(self.left, Or)} {op}/{self.distance} {_wrap(self.right, Or)}"


@dataclass(frozen=True)
class Field:
    """``name:(child)``: ``child`` evaluated over one field (``"title"``, ``"text"`` or
    ``"lead"``: the title and the first :data:`LEAD_WORDS` words of the text)."""

    name: str
    child: Node
    offset: int = field(default=0, compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.name}:{_wrap(self.child, (And, Or, Not, Near))}"


@dataclass(frozen=True)
class AliasRef:
    """``@name`` before expansion (only inside the parser; never in a returned tree)."""

    name: str
    offset: int = field(default=0, compare=False)

    def __str__(self) -> str:
        return f"@{self.name}"


Node = Term | Regex | And | Or | Not | Near | Field
Leaf = Term | Regex


def _wrap(node: Node, needs_parens: type | tuple[type, ...]) -> str:
    return f"({node})" if isinstance(node, needs_parens) else str(node)


def iter_terms(node: Node, nots: int = 0) -> Iterator[tuple[Leaf, int]]:
    """Every term and regex of ``node`` (in query order) with the number of NOTs above it: 0
    for a positive one; an even number means its presence can still make the query true."""
    if isinstance(node, Term | Regex):
        yield node, nots
    elif isinstance(node, Not):
        yield from iter_terms(node.child, nots + 1)
    elif isinstance(node, Field):
        yield from iter_terms(node.child, nots)
    elif isinstance(node, AliasRef):
        return
    else:
        for child in node.children:
            yield from iter_terms(child, nots)


def evaluate(node: Node, present: set[Leaf] | frozenset[Leaf]) -> bool:
    """Truth of ``node`` when exactly the terms (and regexes) in ``present`` occur
    (reference semantics).

    Positions are unknown here, so a NEAR counts as true when both operands are, and a field
    restriction as true when its sub-query is: exact for the empty set (the parser's check),
    an upper bound otherwise."""
    if isinstance(node, Term | Regex):
        return node in present
    if isinstance(node, Not):
        return not evaluate(node.child, present)
    if isinstance(node, Field):
        return evaluate(node.child, present)
    if isinstance(node, AliasRef):
        return False
    if isinstance(node, Near):
        return evaluate(node.left, present) and evaluate(node.right, present)
    if isinstance(node, And):
        return all(evaluate(c, present) for c in node.children)
    return any(evaluate(c, present) for c in node.children)


def depth(node: Node) -> int:
    """Levels of the tree: 1 for a lone term."""
    if isinstance(node, Term | Regex | AliasRef):
        return 1
    if isinstance(node, Not | Field):
        return 1 + depth(node.child)
    return 1 + max(depth(c) for c in node.children)


# --------------------------------------------------------------------------- parsing

class _Error(Exception):
    """Raised inside parser callbacks; carries (message, 0-based offset)."""

    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.message = message
        self.offset = offset


def _term(raw: str, offset: int, quoted: bool) -> Node:
    """A Term (or an Or of its hyphen variants) from a bare term or a phrase body starting at
    ``offset`` in the query."""
    prefix = False
    star = raw.find("*")
    if star != -1:
        what = "phrase" if quoted else "term"
        if raw.strip() == "*":
            raise _Error("a lone '*' is not a term; put it at the end of a word, e.g. launch*",
                         offset + star)
        if star != len(raw) - 1:
            raise _Error(f"wildcard '*' is only allowed at the end of a {what}", offset + star)
        if star == 0 or not is_word_char(raw[star - 1]):
            raise _Error("wildcard '*' must directly follow a letter or digit", offset + star)
        prefix = True
        raw = raw[:-1]
    if raw.isascii() and raw.isalnum():  # the common case: one plain word
        return Term((raw.lower(),), prefix)
    terms: list[Term] = []
    for variant in hyphen_variants(raw):
        words = words_of(variant)
        if not words:
            if quoted and not raw.strip():
                raise _Error("empty phrase", offset - 1)
            raise _Error(f"{'phrase' if quoted else 'term'} {raw!r} has no letters or digits",
                         offset - 1 if quoted else offset)
        term = Term(words, prefix)
        if term not in terms:
            terms.append(term)
    return terms[0] if len(terms) == 1 else Or(tuple(terms))


@lru_cache(maxsize=1024)
def _compile_regex(pattern: str) -> re.Pattern[str]:
    """A regex term's pattern, its non-ASCII characters folded like the text, compiled
    case-insensitively."""
    if not pattern.isascii():
        pattern = "".join(c if c.isascii() else re.escape(fold(c)) for c in pattern)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return re.compile(pattern, re.IGNORECASE)


def _regex(tok: Token) -> Regex:
    """Check a REGEX token (``/pattern/``) and build the node; errors point into it."""
    text, at = str(tok), tok.start_pos
    i = 1
    while i < len(text) and text[i] != "/":
        i += 2 if text[i] == "\\" else 1
    if i >= len(text):
        raise _Error("unterminated regex: a regex ends with '/' (write \\/ for a slash inside it)", at)
    if i != len(text) - 1:
        raise _Error(f"unexpected {text[i + 1:]!r} after the regex's closing '/' (regexes take no "
                     "flags and are always case-insensitive; put a space after the '/')", at + i + 1)
    pattern = text[1:-1]
    if not pattern:
        raise _Error("empty regex", at)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            re.compile(pattern)
        compiled = _compile_regex(pattern)
    except re.error as e:
        raise _Error(f"bad regex: {e.msg}", at + 1 + (e.pos or 0) if e.pos is not None else at) from None
    except (OverflowError, RecursionError) as e:  # pragma: no cover - pathological patterns
        raise _Error(f"bad regex: {e}", at) from None
    for probe in _EMPTY_PROBES:
        m = compiled.search(probe)
        if m is not None and m.start() == m.end():
            raise _Error(f"regex /{pattern}/ can match empty text (e.g. x*, ^, \\b alone), so it would "
                         "match nearly every item", at)
    return Regex(pattern, at)


#: Texts on which a regex term must not find an empty match.
_EMPTY_PROBES = ("", " ", "a", "1", "a b. 1")


def _near_operator(tok: Token) -> tuple[int, bool]:
    """(distance, ordered) of a ``NEAR/n`` / ``ONEAR/n`` token; errors point at the number."""
    text = str(tok)
    ordered = text.startswith("O")
    keyword, slash, number = text.partition("/")
    if not slash:
        raise _Error(f"{keyword} needs a distance, e.g. {keyword}/10", tok.start_pos)
    at = tok.start_pos + len(keyword) + 1
    if not re.fullmatch(r"[0-9]{1,4}", number) or not 1 <= int(number) <= MAX_DISTANCE:
        shown = repr(number) if number else "nothing"
        raise _Error(f"{keyword} distance must be a whole number from 1 to {MAX_DISTANCE} "
                     f"(got {shown})", at)
    return int(number), ordered


def _bad_near_operand(node: object) -> str | None:
    """What makes ``node`` unfit as a NEAR operand, or None if it is fit."""
    if isinstance(node, Term | AliasRef):
        return None
    if isinstance(node, Or):
        return next((b for b in map(_bad_near_operand, node.children) if b), None)
    return {Not: "NOT", And: "AND", Field: "a field", Near: "another NEAR", Regex: "a regex"}.get(type(node), "?")


def _inner_field(node: object) -> Field | None:
    if isinstance(node, Field):
        return node
    if isinstance(node, Not):
        return _inner_field(node.child)
    for child in getattr(node, "children", ()):
        found = _inner_field(child)
        if found is not None:
            return found
    return None


def _flatten(kind: type, children: list[Node]) -> Node:
    flat: list[Node] = []
    for child in children:
        for c in (child.children if isinstance(child, kind) else (child,)):  # type: ignore[union-attr]
            if c not in flat:
                flat.append(c)
    return flat[0] if len(flat) == 1 else kind(tuple(flat))


class _Builder:
    """lark callbacks (run during the LALR parse, no recursion): build AST nodes."""

    def term(self, children: list[Token]) -> Node:
        tok = children[0]
        return _term(str(tok), tok.start_pos, quoted=False)

    def phrase(self, children: list[Token]) -> Node:
        tok = children[0]
        return _term(str(tok)[1:-1], tok.start_pos + 1, quoted=True)

    def regex(self, children: list[Token]) -> Regex:
        return _regex(children[0])

    def group(self, children: list) -> Node:
        return children[1]

    def negation(self, children: list[Node]) -> Node:
        child = children[0]
        return child.child if isinstance(child, Not) else Not(child)  # NOT NOT a == a

    def alias(self, children: list[Token]) -> AliasRef:
        tok = children[0]
        name = str(tok)[1:]
        if not ALIAS_NAME_RE.fullmatch(name):
            shown = f"'@{name}' is not" if name else "'@' alone is not"
            raise _Error(f"{shown} an alias: write @ and a name of letters, digits, '_', '.' or '-', "
                         "e.g. @dprk", tok.start_pos)
        return AliasRef(name, tok.start_pos)

    def field(self, children: list) -> Field:
        tok, child = children
        inner = _inner_field(child)
        if inner is not None:
            raise _Error(f"fields do not nest: {inner.name}: inside {tok}(...)", inner.offset)
        return Field(str(tok)[:-1], child, tok.start_pos)

    def near_expr(self, children: list) -> Near:
        if len(children) > 3:
            tok = children[3]
            raise _Error(f"{tok} after another NEAR: a NEAR takes exactly two operands; combine "
                         "several with AND, e.g. a NEAR/5 b AND b NEAR/5 c", tok.start_pos)
        left, tok, right = children
        distance, ordered = _near_operator(tok)
        for operand, side in ((left, "left"), (right, "right")):
            bad = _bad_near_operand(operand)
            if bad:
                raise _Error(f"the {side} operand of {tok} contains {bad}: NEAR operands may only be "
                             "terms, phrases, wildcards, @aliases or parenthesised OR-groups of those"
                             + (" (put the field around the NEAR: title:(a NEAR/5 b))"
                                if bad == "a field" else ""), tok.start_pos)
        return Near(left, right, distance, ordered, tok.start_pos)

    def and_expr(self, children: list[Node]) -> Node:
        return _flatten(And, children)

    def or_expr(self, children: list[Node]) -> Node:
        return _flatten(Or, children)


class _TokenLexer(Lexer):
    """lark's lexer slot: the parse input is the token list :func:`_tokens` made, so the
    query is lexed once, by one regex, with no per-token bookkeeping. The regex is built here
    from the grammar's terminals exactly as lark's basic lexer orders them (priority, then
    longest possible match), and string terminals a regex terminal also matches (``AND``,
    ``OR``, ``NOT``) become keywords, as lark's basic lexer makes them."""

    __future_interface__ = 2

    def __init__(self, conf) -> None:  # noqa: ANN001 - lark's LexerConf
        terminals = sorted(conf.terminals, key=lambda t: (-t.priority, -t.pattern.max_width,
                                                          -len(t.pattern.value), t.name))
        regexes = [t for t in terminals if t.pattern.type == "re"]
        self.keywords: dict[str, str] = {}
        alternatives = []
        for t in terminals:
            if t.pattern.type == "str" and any(re.fullmatch(r.pattern.to_regexp(), t.pattern.value) for r in regexes):
                self.keywords[t.pattern.value] = t.name
            else:
                alternatives.append(f"(?P<{t.name}>{t.pattern.to_regexp()})")
        self.pattern = re.compile("|".join(alternatives))
        self.ignore = frozenset(conf.ignore)

    def lex(self, lexer_state, parser_state) -> Iterator[Token]:  # noqa: ANN001
        return iter(lexer_state.text)


@cache
def _parser() -> Lark:
    grammar = resources.files(__package__).joinpath("query.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", lexer=_TokenLexer, transformer=_Builder(),
                propagate_positions=False, maybe_placeholders=False)


def _tokens(text: str) -> list[Token]:
    """The tokens of ``text``; quotes and regexes must close, parentheses balance and not
    nest too deep (checked here, left to right, so the first problem is reported)."""
    lexer: _TokenLexer = _parser().parser.lexer  # type: ignore[attr-defined]
    match, keywords, ignore = lexer.pattern.match, lexer.keywords, lexer.ignore
    out: list[Token] = []
    opened: list[int] = []
    pos, n = 0, len(text)
    while pos < n:
        m = match(text, pos)
        if m is None:  # every character but an unclosed '"' starts some token
            raise _Error("unterminated quote", pos)
        kind = m.lastgroup
        assert kind is not None
        end = m.end()
        if kind not in ignore:
            value = m.group()
            if kind == "TERM":
                kind = keywords.get(value, kind)
            elif kind == "LPAR":
                opened.append(pos)
                if len(opened) > MAX_DEPTH:
                    raise _Error(f"parentheses nested more than {MAX_DEPTH} deep", pos)
            elif kind == "RPAR":
                if not opened:
                    raise _Error("unmatched closing parenthesis", pos)
                opened.pop()
            out.append(Token(kind, value, pos))
        pos = end
    if opened:
        raise _Error("missing closing parenthesis", opened[-1])
    return out


def parse_query(text: str, aliases: Mapping[str, Sequence[str]] | None = None) -> Node:
    """Parse a watchlist query; raise :class:`QuerySyntaxError` for anything malformed.

    ``aliases`` maps a name to its entries for ``@name`` (see :func:`parse_alias_entry`);
    an ``@name`` not in it is an error. Results are cached by query text (the AST is
    immutable): config checking and the matcher parse the same queries, and a config reload
    parses them again.
    """
    node = _parse_cached(text)
    if "@" not in text:
        return node
    used = list(dict.fromkeys(_alias_refs(node)))
    if not used:
        return node
    aliases = aliases or {}
    for ref in used:
        if ref.name not in aliases:
            close = difflib.get_close_matches(ref.name, list(aliases), n=1, cutoff=0.6)
            hint = f" (did you mean '@{close[0]}'?)" if close else (
                "" if aliases else " (no aliases are defined)")
            raise QuerySyntaxError(f"unknown alias '@{ref.name}'{hint}", text, ref.offset + 1)
    names = dict.fromkeys(ref.name for ref in used)
    return _expand_cached(text, tuple((name, tuple(aliases[name])) for name in names))


def parse_alias_entry(entry: str) -> Node:
    """One alias entry as a term (its words, like a quoted phrase, optionally ending in ``*``),
    or an OR of its hyphen variants. An entry written like a regex (``/.../``) is an error:
    regexes are not alias entries (it would otherwise silently become the phrase of its
    words)."""
    stripped = entry.strip()
    if len(stripped) >= 2 and stripped[0] == "/" and stripped[-1] == "/":
        raise QuerySyntaxError("a regex is not an alias entry (entries are terms or phrases; write the "
                               "regex in the query itself)", entry, entry.index("/") + 1)
    try:
        return _term(entry, 0, quoted=True)
    except _Error as e:
        raise QuerySyntaxError(e.message, entry, max(e.offset, 0) + 1) from None


def _alias_refs(node: object) -> Iterator[AliasRef]:
    if isinstance(node, AliasRef):
        yield node
    elif isinstance(node, Not | Field):
        yield from _alias_refs(node.child)
    else:
        for child in getattr(node, "children", ()):
            yield from _alias_refs(child)


@lru_cache(maxsize=8192)
def _expand_cached(text: str, aliases: tuple[tuple[str, tuple[str, ...]], ...]) -> Node:
    table = dict(aliases)

    def expand(node: Node | AliasRef) -> Node:
        if isinstance(node, Term | Regex):
            return node
        if isinstance(node, AliasRef):
            entries = table[node.name]
            if not entries:
                raise QuerySyntaxError(f"alias '@{node.name}' has no entries", text, node.offset + 1)
            terms: list[Node] = []
            for entry in entries:
                try:
                    terms.append(parse_alias_entry(entry))
                except QuerySyntaxError as e:
                    raise QuerySyntaxError(f"alias '@{node.name}': entry {entry!r}: {e.message}",
                                           text, node.offset + 1) from None
            return _flatten(Or, terms)
        if isinstance(node, Not):
            return Not(expand(node.child))
        if isinstance(node, Field):
            return Field(node.name, expand(node.child), node.offset)
        if isinstance(node, Near):
            return Near(expand(node.left), expand(node.right),  # type: ignore[arg-type]
                        node.distance, node.ordered, node.offset)
        return _flatten(type(node), [expand(c) for c in node.children])

    return expand(_parse_cached(text))


@lru_cache(maxsize=8192)
def _parse_cached(text: str) -> Node:
    if not text.strip():
        raise QuerySyntaxError("empty query", text, 1)
    tokens: list[Token] = []
    try:
        tokens = _tokens(text)
        try:
            node: Node = _parser().parse(tokens)  # type: ignore[arg-type]
        except VisitError as e:  # pragma: no cover - lark wraps some callback errors
            raise e.orig_exc from None
        except UnexpectedToken as e:
            raise _unexpected(text, tokens, e) from None
    except _Error as e:
        raise QuerySyntaxError(e.message, text, e.offset + 1) from None
    try:
        too_deep = depth(node) > MAX_DEPTH
    except RecursionError:
        too_deep = True
    if too_deep:
        raise QuerySyntaxError(f"query is nested more than {MAX_DEPTH} levels deep", text, 1)
    if evaluate(node, frozenset()):
        first_not = next((t.start_pos for t in tokens if t.type == "_NOT"), 0)
        raise QuerySyntaxError("query needs at least one term that must be present", text, first_not + 1)
    return node


_OPERATORS = {"_AND": "AND", "_OR": "OR", "_NOT": "NOT"}


def _operator(tok: Token | None) -> str | None:
    """The operator a token is, as the query spells it (None for terms and brackets)."""
    if tok is None:
        return None
    if tok.type in ("NEAR", "FIELD"):
        return str(tok)
    return _OPERATORS.get(tok.type)


def _unexpected(text: str, tokens: list[Token], err: UnexpectedToken) -> _Error:
    """Explain a parse error in the query's own terms, from the tokens around it."""
    bad = err.token
    at_end = bad.type == "$END"
    index = len(tokens) if at_end else next(
        (i for i, t in enumerate(tokens) if t.start_pos == bad.start_pos), len(tokens))
    prev = tokens[index - 1] if index > 0 else None
    prev_op = _operator(prev)
    if at_end or bad.type == "RPAR":
        if prev is not None and prev.type == "LPAR":
            return _Error("empty parentheses", prev.start_pos)
        if prev_op:
            return _Error(f"{prev_op} needs a term after it", prev.start_pos)
    bad_op = None if at_end else _operator(bad)
    if bad_op:
        if prev_op:
            return _Error(f"expected a term after {prev_op}, found {bad_op}", bad.start_pos)
        return _Error(f"{bad_op} needs a term before it", bad.start_pos)
    where = "end of query" if at_end else repr(str(bad))
    return _Error(f"unexpected {where}", len(text) if at_end else bad.start_pos)
