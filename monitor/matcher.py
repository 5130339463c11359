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
  made the query true; ``score`` is how many distinct such query terms matched. Terms
  inside a NEAR, a field restriction or an expanded ``@alias`` count like any other: a NEAR
  contributes the operand terms that take part in a qualifying pair, and a term under
  ``title:``/``text:`` reports only its spellings in that field.
- ``a NEAR/n b``: occurrences in the same field, not overlapping, with at most ``n`` words
  between the end of one and the start of the other (``ONEAR``: ``a`` first); see
  :mod:`monitor.query`.

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
  index follow (:class:`_Item`); NEAR and field restrictions are compiled to calls that
  look at those positions, computed lazily only for items that reach such a query. Terms
  inside NEAR, fields and aliases are keys of the same single automaton.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import ahocorasick

from .model import WatchlistHit, WatchlistSpec
from .query import (
    FIELDS,
    WORD_RE,
    And,
    Field,
    Near,
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
    test: Callable[[Present, _Item], bool]  # is the query true, given the terms that occurred
    positive: tuple[int, ...]  # ids of its terms under no NOT, in query order
    simple: bool  # query true => every positive term that occurred helped make it true


class Matcher:
    """All watchlists compiled into one automaton; ``match`` runs one pass per item."""

    def __init__(self, watchlists: Sequence[WatchlistSpec | tuple[str, str] | tuple[str, str, Mapping[str, Sequence[str]] | None]]):
        """``watchlists``: (name, query) or (name, query, aliases) in config order."""
        self._term_ids: dict[Term, int] = {}
        self._terms: list[Term] = []
        self._watchlists: list[_Watchlist] = []
        watchers: list[list[int]] = []  # term id -> indexes of watchlists it can make true
        for index, entry in enumerate(watchlists):
            if isinstance(entry, WatchlistSpec):
                # TODO(issue 3): signals, exclude, min_score, title_weight, severity
                name, text, aliases = entry.name, entry.query or "", entry.aliases
            else:
                name, text = entry[0], entry[1]
                aliases = entry[2] if len(entry) > 2 else None  # type: ignore[misc]
            try:
                node = parse_query(text, aliases)
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
        self._n_words = [len(t.words) for t in self._terms]
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
        item = _Item(self, ws, present)
        matched = [index for index in candidates if tests[index](present, item)]
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
                explainer = _Explainer(self, item, (title, text))
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


def _operand_ids(node: Node, term_ids: Mapping[Term, int]) -> tuple[int, ...]:
    """Term ids of a NEAR operand (a Term or an Or of Terms)."""
    return tuple(term_ids[t] for t in (node.children if isinstance(node, Or) else (node,)))  # type: ignore[misc]


def _compile_test(node: Node, term_ids: Mapping[Term, int], name: str) -> Callable[[Present, _Item], bool]:
    """Compile the query into ``lambda h, c: <boolean expression of "tid in h">``.

    The generated source holds only integers, tuples of them, ``None``, ``True``/``False``,
    ``in``, ``and``, ``or``, ``not``, parentheses and calls of the position helpers
    ``_t``/``_x``/``_n`` (nothing from the query text), so evaluating it is safe.
    """
    def source(n: Node, field: int | None) -> str:
        if isinstance(n, Term):
            tid = term_ids[n]
            return f"{tid} in h" if field is None else f"{'_t' if field == 0 else '_x'}(h, c, {tid})"
        if isinstance(n, Not):
            return f"not ({source(n.child, field)})"
        if isinstance(n, Field):
            return source(n.child, FIELDS.index(n.name))
        if isinstance(n, Near):
            return (f"_n(c, {_operand_ids(n.left, term_ids)}, {_operand_ids(n.right, term_ids)}, "
                    f"{n.distance}, {n.ordered}, {field})")
        joiner = " and " if isinstance(n, And) else " or "
        return "(" + joiner.join(source(c, field) for c in n.children) + ")"

    code = compile(f"lambda h, c: {source(node, None)}", f"<watchlist {name}>", "eval")
    return eval(code, {"__builtins__": {}, "_t": _in_title, "_x": _in_text, "_n": _near})


def _in_title(h: Present, item: _Item, tid: int) -> bool:
    ends = h.get(tid)
    return ends is not None and ends[0] < item.sep  # ends ascend


def _in_text(h: Present, item: _Item, tid: int) -> bool:
    ends = h.get(tid)
    return ends is not None and ends[-1] > item.sep


def _near(item: _Item, left: tuple[int, ...], right: tuple[int, ...], distance: int, ordered: bool,
          field: int | None) -> bool:
    """Is an occurrence of a ``left`` term within ``distance`` words of one of a ``right`` term?"""
    lo = item.occurrences(left, field)
    if not lo:
        return False
    ro = item.occurrences(right, field)
    return bool(ro) and _close(lo, ro, distance, ordered)


Occurrence = tuple[int, int, int]  # (field, first word, last word); word indexes count across fields


def _close(lo: list[Occurrence], ro: list[Occurrence], distance: int, ordered: bool) -> bool:
    """Some pair (l, r) in the same field, not overlapping, with at most ``distance`` words
    between them; r after l when ``ordered``."""
    by_start = sorted(ro, key=lambda o: o[1])
    starts = [o[1] for o in by_start]
    by_end = ends = None
    if not ordered:
        by_end = sorted(ro, key=lambda o: o[2])
        ends = [o[2] for o in by_end]
    for field, first, last in lo:
        # the first right occurrence starting after l: if it is too far or in the next
        # field, so is every later one
        i = bisect_left(starts, last + 1)
        if i < len(starts) and starts[i] <= last + 1 + distance and by_start[i][0] == field:
            return True
        if by_end is not None and ends is not None:
            j = bisect_right(ends, first - 1) - 1
            if j >= 0 and ends[j] >= first - 1 - distance and by_end[j][0] == field:
                return True
    return False


class _Item:
    """Per item, for queries that need positions: the word string, where the title ends,
    and (lazily, cached) the word positions of each term's occurrences."""

    __slots__ = ("matcher", "ws", "present", "_sep", "_spaces", "_occ")

    def __init__(self, matcher: Matcher, ws: str, present: Present):
        self.matcher = matcher
        self.ws = ws
        self.present = present
        self._sep = -1
        self._spaces: list[int] | None = None
        self._occ: dict[int, list[Occurrence]] = {}

    @property
    def sep(self) -> int:
        """Offset of the field separator in the word string: title keys end before it."""
        if self._sep < 0:
            self._sep = self.ws.index(FIELD_SEP)
        return self._sep

    def in_field(self, start: int) -> int:
        return 0 if start < self.sep else 1

    def occurrences(self, tids: Sequence[int], field: int | None = None) -> list[Occurrence]:
        """Occurrences of the terms ``tids`` (those present), optionally in one field only."""
        out: list[Occurrence] = []
        for tid in tids:
            if tid in self.present:
                occ = self._occ.get(tid)
                if occ is None:
                    occ = self._occ[tid] = self._locate(tid)
                out.extend(occ if field is None else [o for o in occ if o[0] == field])
        return out

    def _locate(self, tid: int) -> list[Occurrence]:
        spaces = self._spaces
        if spaces is None:
            ws = self.ws
            spaces = self._spaces = [i for i in range(len(ws)) if ws[i] == " "]
        matcher = self.matcher
        key_length, span = matcher._key_lengths[tid], matcher._n_words[tid] - 1
        sep = self.sep
        out = []
        for end in self.present[tid]:
            start = end - key_length + 1  # the space before the first word
            first = bisect_left(spaces, start)  # spaces before it == words before it
            out.append((0 if start < sep else 1, first, first + span))
        return out


def _positional(node: Node) -> bool:
    """Does ``node`` contain a NEAR or a field restriction (truth depends on positions)?"""
    if isinstance(node, Near | Field):
        return True
    if isinstance(node, Not):
        return _positional(node.child)
    return isinstance(node, And | Or) and any(_positional(c) for c in node.children)


def _is_simple(node: Node) -> bool:
    """True when, whenever the query is true, every occurred positive term helped make it so:
    no OR (outside a NOT) has an AND among its children that could be false, and no NEAR or
    field restriction (outside a NOT) decides which occurrences count."""
    if isinstance(node, Near | Field):
        return False
    if isinstance(node, Term | Not):
        return True
    if isinstance(node, Or):
        return all(isinstance(c, Term | Not) for c in node.children)
    return all(_is_simple(c) for c in node.children)


_WORD, _PREFIX, _PHRASE = 0, 1, 2


class _Explainer:
    """Per item: turns the occurrences of a matched watchlist's terms into a WatchlistHit.
    Built only for items that match something; caches what it learns per term."""

    __slots__ = ("matcher", "item", "ws", "fields", "present", "sep", "_firsts", "_single", "_lows", "_spans",
                 "_present_terms")

    def __init__(self, matcher: Matcher, item: _Item, fields: tuple[str, str]):
        self.matcher = matcher
        self.item = item
        self.ws = item.ws
        self.fields = fields
        self.present = item.present
        self.sep = item.sep
        self._firsts: dict[int, list[tuple[int, str]]] = {}
        self._single: dict[int, tuple[str, ...]] = {}
        self._lows: list[str | None] = [None, None]
        self._spans: list[list[tuple[int, int]] | None] = [None, None]
        self._present_terms: frozenset[Term] | None = None

    def hit(self, watchlist: _Watchlist, tids: list[int] | None = None) -> WatchlistHit:
        """The hit of a matched watchlist; ``tids``: its contributing terms, if known."""
        if tids is not None:
            used: list[tuple[int, int | None]] = [(tid, None) for tid in tids]
        else:
            used = []
            self._contributing(watchlist.query, used, None)
        if len(used) == 1 and used[0][1] is None:
            terms = self._terms_of(used[0][0])
        else:
            firsts: list[tuple[int, str]] = []
            for tid, field in used:
                firsts.extend(self._firsts_of(tid) if field is None else self._firsts_in(tid, field))
            firsts.sort()
            terms = tuple(dict.fromkeys(surface for _, surface in firsts))
        return WatchlistHit(watchlist.name, float(len(dict.fromkeys(tid for tid, _ in used))), terms)

    def _terms_of(self, tid: int) -> tuple[str, ...]:
        """The distinct surfaces of one term in order of occurrence; cached."""
        terms = self._single.get(tid)
        if terms is None:
            terms = self._single[tid] = tuple(surface for _, surface in self._firsts_of(tid))
        return terms

    def _contributing(self, node: Node, out: list[tuple[int, int | None]], field: int | None) -> None:
        """Collect (term id, field or None) of the positive terms of ``node`` (known true,
        within ``field`` if given) that made it true."""
        if isinstance(node, Term):
            key = (self.matcher._term_ids[node], field)
            if key not in out:
                out.append(key)
        elif isinstance(node, And):
            for child in node.children:
                self._contributing(child, out, field)
        elif isinstance(node, Or):
            for child in node.children:
                if self._true(child, field):
                    self._contributing(child, out, field)
        elif isinstance(node, Field):
            self._contributing(node.child, out, FIELDS.index(node.name))
        elif isinstance(node, Near):
            ids = self.matcher._term_ids
            item = self.item
            lefts = [t for t in _operand_ids(node.left, ids) if t in self.present]
            rights = [t for t in _operand_ids(node.right, ids) if t in self.present]
            pairs = [(lt, rt) for lt in lefts for rt in rights
                     if _close(item.occurrences((lt,), field), item.occurrences((rt,), field),
                               node.distance, node.ordered)]
            for tid in dict.fromkeys([lt for lt, _ in pairs] + [rt for _, rt in pairs]):
                if (tid, field) not in out:
                    out.append((tid, field))
        # a NOT contributes no terms

    def _true(self, node: Node, field: int | None) -> bool:
        """Exact truth of ``node`` for this item, within ``field`` if given."""
        if field is None and not _positional(node):
            if self._present_terms is None:
                terms = self.matcher._terms
                self._present_terms = frozenset(terms[t] for t in self.present)
            return evaluate(node, self._present_terms)
        if isinstance(node, Term):
            tid = self.matcher._term_ids[node]
            if field is None:
                return tid in self.present
            return (_in_title if field == 0 else _in_text)(self.present, self.item, tid)
        if isinstance(node, Not):
            return not self._true(node.child, field)
        if isinstance(node, Field):
            return self._true(node.child, FIELDS.index(node.name))
        if isinstance(node, Near):
            ids = self.matcher._term_ids
            return _near(self.item, _operand_ids(node.left, ids), _operand_ids(node.right, ids),
                         node.distance, node.ordered, field)
        if isinstance(node, And):
            return all(self._true(c, field) for c in node.children)
        return any(self._true(c, field) for c in node.children)

    def _firsts_in(self, tid: int, field: int) -> list[tuple[int, str]]:
        """Like :meth:`_firsts_of`, for the occurrences in one field only (not cached)."""
        sep = self.sep
        ends = [e for e in self.present[tid] if (e < sep) == (field == 0)]
        return self._scan(tid, ends) if ends else []

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
        firsts = self._firsts[tid] = self._scan(tid, self.present[tid])
        return firsts

    def _scan(self, tid: int, ends: list[int]) -> list[tuple[int, str]]:
        matcher = self.matcher
        kind, key_length = matcher._kinds[tid], matcher._key_lengths[tid]
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
