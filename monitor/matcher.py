"""Matcher: which watchlists an item (title + text) matches, and why.

Rules:
- Matching is case-insensitive and by whole words. Title and text are case-folded
  (:func:`~monitor.query.fold_case`, length-preserving) and split into words, runs of
  Unicode ``\\w``; every other character only separates words. So ``test`` never matches
  inside ``contest``, ``Korea's`` contains the word ``korea``, ``test-fire`` the words
  ``test`` and ``fire``.
- A term matches one word; ``launch*`` any word starting with ``launch``; a phrase its
  words consecutively (with any non-word characters between them). Title and text are
  two fields: a phrase never runs from the end of the title into the text.
- A hit reports, in watchlist config order, each matching watchlist with ``terms``: the
  matched words or phrases as the item spells them (lower-cased, de-duplicated, in the
  order they first occur, title before text) from the positive terms (under no NOT) that
  made the query true; ``score`` is how many distinct such query terms matched.

How (built for thousands of watchlists):
- Every distinct term of every watchlist is one key of a single Aho-Corasick automaton.
  The automaton runs over the item's *word string*: each field's words joined by single
  spaces, framed by spaces, fields separated by ``\\0``. A word key is ``" launch "``, a
  prefix key ``" launch"``, a phrase key ``" ballistic missile "``: keys can only match on
  word boundaries, and a phrase cannot cross fields. One pass finds every term occurrence.
- An inverted index (term → watchlists whose query that term's presence can make true,
  i.e. where it sits under no NOT or an even number of them) selects the few watchlists
  worth evaluating; each query is compiled once to a Python boolean expression over the
  terms that occurred. The parser rejects a query that is true for an empty item, which
  is what makes skipping all other watchlists exact. Identical terms are shared.
- Occurrences keep their position in the word string, from which the field and the word
  index follow (:meth:`_Explainer.locate`): what proximity operators and field
  restrictions will need.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import ahocorasick

from .model import WatchlistHit
from .query import (
    WORD_RE,
    And,
    Node,
    Not,
    Or,
    QuerySyntaxError,
    Term,
    evaluate,
    fold_case,
    iter_terms,
    parse_query,
)

#: Separates the title's words from the text's in the word string; never part of a key.
FIELD_SEP = "\x00"
#: Field names by the field index :meth:`_Explainer.locate` returns.
FIELDS = ("title", "text")

_find_words = WORD_RE.findall

Present = dict[int, list[int]]  # id of a term that occurs in an item -> end offsets of its key


class WatchlistQueryError(QuerySyntaxError):
    """A watchlist whose query does not parse; names the watchlist."""

    def __init__(self, watchlist: str, error: QuerySyntaxError):
        self.watchlist = watchlist
        super().__init__(f"watchlist {watchlist!r}: {error.message}", error.query, error.column)


@dataclass(frozen=True)
class _Watchlist:
    name: str
    query: Node
    test: Callable[[Present], bool]  # is the query true, given the terms that occurred
    positive: tuple[int, ...]  # ids of its terms under no NOT, in query order
    simple: bool  # query true => every positive term that occurred helped make it true


class Matcher:
    """All watchlists compiled into one automaton; ``match`` runs one pass per item."""

    def __init__(self, watchlists: Sequence[tuple[str, str]]):
        self._term_ids: dict[Term, int] = {}
        self._terms: list[Term] = []
        self._watchlists: list[_Watchlist] = []
        watchers: list[list[int]] = []  # term id -> indexes of watchlists it can make true
        for index, (name, text) in enumerate(watchlists):
            try:
                node = parse_query(text)
            except QuerySyntaxError as e:
                raise WatchlistQueryError(name, e) from None
            positive: list[int] = []
            for term, nots in iter_terms(node):
                tid = self._term_id(term)
                if tid == len(watchers):
                    watchers.append([])
                if nots % 2 == 0 and index not in watchers[tid][-1:]:
                    watchers[tid].append(index)  # its presence can make the query true
                if nots == 0 and tid not in positive:
                    positive.append(tid)
            self._watchlists.append(_Watchlist(
                name, node, _compile_test(node, self._term_ids, name), tuple(positive), _is_simple(node)))
        self._watchers: list[tuple[int, ...]] = [tuple(w) for w in watchers]
        self._tests = [w.test for w in self._watchlists]
        self._key_lengths = [len(_key(t)) for t in self._terms]
        self._kinds = [_PHRASE if t.is_phrase else _PREFIX if t.prefix else _WORD for t in self._terms]
        # A plain word's only surface is itself, so the hit of a watchlist whose single
        # contributing term is a plain word is known in advance (hits are immutable).
        self._word_hits: dict[tuple[int, int], WatchlistHit] = {
            (index, tid): WatchlistHit(w.name, 1.0, self._terms[tid].words)
            for index, w in enumerate(self._watchlists) for tid in w.positive if self._kinds[tid] == _WORD}
        self._automaton = self._build_automaton()

    def _term_id(self, term: Term) -> int:
        tid = self._term_ids.get(term)
        if tid is None:
            tid = self._term_ids[term] = len(self._terms)
            self._terms.append(term)
        return tid

    def _build_automaton(self) -> ahocorasick.Automaton | None:
        if not self._terms:
            return None
        automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        for tid, term in enumerate(self._terms):
            automaton.add_word(_key(term), tid)
        automaton.make_automaton()
        return automaton

    @property
    def term_count(self) -> int:
        """How many distinct terms the automaton holds (identical terms are shared)."""
        return len(self._terms)

    @property
    def names(self) -> list[str]:
        return [w.name for w in self._watchlists]

    def query(self, name: str) -> Node:
        """The parsed query of watchlist ``name`` (``str()`` of it is canonical)."""
        return next(w.query for w in self._watchlists if w.name == name)

    def match(self, title: str, text: str) -> list[WatchlistHit]:
        """The watchlists the item matches, in config order, each with its score and terms."""
        if self._automaton is None:
            return []
        ws = word_string(title, text)
        present: dict[int, list[int]] = {}  # term id -> end offsets of its occurrences
        for end, tid in self._automaton.iter(ws):
            ends = present.get(tid)
            if ends is None:
                present[tid] = [end]
            else:
                ends.append(end)
        if not present:
            return []
        watchers = self._watchers
        if len(present) == 1:
            candidates: Sequence[int] = watchers[next(iter(present))]
        else:
            pool: set[int] = set()
            for tid in present:
                pool.update(watchers[tid])
            candidates = sorted(pool)
        tests = self._tests
        matched = [index for index in candidates if tests[index](present)]
        if not matched:
            return []
        hits: list[WatchlistHit] = []
        explainer: _Explainer | None = None
        for index in matched:
            watchlist = self._watchlists[index]
            tids = None
            if watchlist.simple:
                tids = [t for t in watchlist.positive if t in present]
                if len(tids) == 1:
                    known = self._word_hits.get((index, tids[0]))
                    if known is not None:
                        hits.append(known)
                        continue
            if explainer is None:
                explainer = _Explainer(self, ws, (title, text), present)
            hits.append(explainer.hit(watchlist, tids))
        return hits


# Bytes translation for the ASCII fast path of word_string: A-Z -> a-z, every ASCII
# character that is not a word character (\w) -> space, except the field separator.
_ASCII_FOLD = bytes(
    c + 32 if 65 <= c <= 90 else c if chr(c).isalnum() or chr(c) in "_" + FIELD_SEP else 32
    for c in range(128)
) + bytes(range(128, 256))


def word_string(title: str, text: str) -> str:
    """The word string the automaton runs over: ``" <title words> \\0 <text words> "``, the
    case-folded words of each field separated by single spaces."""
    if title.isascii() and text.isascii() and FIELD_SEP not in title and FIELD_SEP not in text:
        # fast path (isascii is O(1)); gives exactly what the general path gives
        both = f"{title} {FIELD_SEP} {text}".encode("ascii").translate(_ASCII_FOLD)
        return f" {b' '.join(both.split()).decode('ascii')} "
    return _word_string_general(title, text)


def _word_string_general(title: str, text: str) -> str:
    return f" {' '.join([*_find_words(fold_case(title)), FIELD_SEP, *_find_words(fold_case(text))])} "


def _key(term: Term) -> str:
    """The automaton key of a term: framed by spaces, open at the end for a prefix."""
    return f" {' '.join(term.words)}" + ("" if term.prefix else " ")


def _compile_test(node: Node, term_ids: Mapping[Term, int], name: str) -> Callable[[Present], bool]:
    """Compile the query into ``lambda h: <boolean expression of "tid in h">``.

    The generated source holds only integers, ``in``, ``and``, ``or``, ``not`` and
    parentheses (nothing from the query text), so evaluating it is safe.
    """
    def source(n: Node) -> str:
        if isinstance(n, Term):
            return f"{term_ids[n]} in h"
        if isinstance(n, Not):
            return f"not ({source(n.child)})"
        joiner = " and " if isinstance(n, And) else " or "
        return "(" + joiner.join(source(c) for c in n.children) + ")"

    code = compile(f"lambda h: {source(node)}", f"<watchlist {name}>", "eval")
    return eval(code, {"__builtins__": {}})


def _is_simple(node: Node) -> bool:
    """True when, whenever the query is true, every occurred positive term helped make it so:
    no OR (outside a NOT) has an AND among its children that could be false."""
    if isinstance(node, Term | Not):
        return True
    if isinstance(node, Or):
        return all(isinstance(c, Term | Not) for c in node.children)
    return all(_is_simple(c) for c in node.children)


_WORD, _PREFIX, _PHRASE = 0, 1, 2


class _Explainer:
    """Per item: turns the occurrences of a matched watchlist's terms into a WatchlistHit.
    Built only for items that match something; caches what it learns per term."""

    __slots__ = ("matcher", "ws", "fields", "present", "sep", "_firsts", "_single", "_lows", "_spans", "_present_terms")

    def __init__(self, matcher: Matcher, ws: str, fields: tuple[str, str], present: Present):
        self.matcher = matcher
        self.ws = ws
        self.fields = fields
        self.present = present
        self.sep = ws.index(FIELD_SEP)
        self._firsts: dict[int, list[tuple[int, str]]] = {}
        self._single: dict[int, tuple[str, ...]] = {}
        self._lows: list[str | None] = [None, None]
        self._spans: list[list[tuple[int, int]] | None] = [None, None]
        self._present_terms: frozenset[Term] | None = None

    def hit(self, watchlist: _Watchlist, tids: list[int] | None = None) -> WatchlistHit:
        """The hit of a matched watchlist; ``tids``: its contributing terms, if known."""
        if tids is None:
            tids = []
            self._contributing(watchlist.query, tids)
        if len(tids) == 1:
            terms = self._terms_of(tids[0])
        else:
            firsts: list[tuple[int, str]] = []
            for tid in tids:
                firsts.extend(self._firsts_of(tid))
            firsts.sort()
            terms = tuple(dict.fromkeys(surface for _, surface in firsts))
        return WatchlistHit(watchlist.name, float(len(tids)), terms)

    def _terms_of(self, tid: int) -> tuple[str, ...]:
        """The distinct surfaces of one term in order of occurrence; cached."""
        terms = self._single.get(tid)
        if terms is None:
            terms = self._single[tid] = tuple(surface for _, surface in self._firsts_of(tid))
        return terms

    def _contributing(self, node: Node, out: list[int]) -> None:
        """Collect positive term ids of ``node`` (known true) that made it true."""
        if isinstance(node, Term):
            tid = self.matcher._term_ids[node]
            if tid not in out:
                out.append(tid)
        elif isinstance(node, And):
            for child in node.children:
                self._contributing(child, out)
        elif isinstance(node, Or):
            if self._present_terms is None:
                terms = self.matcher._terms
                self._present_terms = frozenset(terms[t] for t in self.present)
            for child in node.children:
                if evaluate(child, self._present_terms):
                    self._contributing(child, out)
        # a NOT contributes no terms

    def locate(self, start: int) -> tuple[int, int]:
        """(field index, word index in that field) of the word starting at ``start + 1``,
        where ``start`` is the leading space of an occurrence in the word string."""
        field = 0 if start < self.sep else 1
        field_start = 0 if field == 0 else self.sep + 1
        return field, self.ws.count(" ", field_start, start + 1) - 1

    def _firsts_of(self, tid: int) -> list[tuple[int, str]]:
        """(start, surface) of the first occurrence of each distinct surface of term ``tid``,
        in order of occurrence; cached."""
        firsts = self._firsts.get(tid)
        if firsts is not None:
            return firsts
        matcher = self.matcher
        kind, key_length = matcher._kinds[tid], matcher._key_lengths[tid]
        ends = self.present[tid]
        if kind == _WORD:
            firsts = [(ends[0] - key_length + 1, matcher._terms[tid].words[0])]
        else:
            seen: dict[str, int] = {}
            n_words = len(matcher._terms[tid].words)
            for end in ends:
                start = end - key_length + 1
                if kind == _PREFIX:
                    surface = self.ws[start + 1:self.ws.find(" ", end)]
                else:
                    surface = self._original(start, n_words)
                seen.setdefault(surface, start)
            firsts = [(start, surface) for surface, start in seen.items()]
        self._firsts[tid] = firsts
        return firsts

    def _original(self, start: int, n_words: int) -> str:
        """The item's own (lower-cased) spelling of ``n_words`` words from ``start``:
        ``test-fired`` rather than ``test fired``; whitespace runs become one space."""
        field, first = self.locate(start)
        low = self._lows[field]
        spans = self._spans[field]
        if low is None or spans is None:
            low = self._lows[field] = fold_case(self.fields[field])
            spans = self._spans[field] = [m.span() for m in WORD_RE.finditer(low)]
        return " ".join(low[spans[first][0]:spans[first + n_words - 1][1]].split())
