"""Matcher: which watchlists an item (title + text) matches, with what score, and why.

Rules:
- Matching is by whole normalised words (:mod:`monitor.query`, "Text rules": NFKC, case
  folding, accents stripped, possessive ``'s`` dropped, every CJK character a word). Title
  and text are two fields. So ``test`` never matches inside ``contest``, "Korea's" contains
  the word ``korea``, "test-fire" the words ``test`` and ``fire``, "Café" the word ``cafe``.
- A term matches one word; ``launch*`` any word starting with ``launch``; a phrase its
  words consecutively (with any non-word characters between them); a phrase never runs
  from the end of the title into the text. A ``/regex/`` is searched in the folded text of
  each field (:func:`~monitor.query.fold_text`).
- ``a NEAR/n b``: occurrences in the same field, not overlapping, with at most ``n`` words
  between the end of one and the start of the other (``ONEAR``: ``a`` first); see
  :mod:`monitor.query`.
- Scoring (:class:`~monitor.model.WatchlistSpec`): a watchlist's clauses are its ``query``
  (weight 1; required when set) and its ``signals`` (optional, weighted). A true clause adds
  ``weight * title_weight`` when it is also true in the title alone (the item with an empty
  text), else ``weight``; the score is the sum, query first, then signals in order. The
  watchlist fires when (it has no query or its query is true), no ``exclude`` query is true
  (anywhere in title or text) and score >= ``min_score``. A watchlist needs a query or at
  least one signal, and with no query ``min_score`` must be above 0 (else it would fire on
  every item). Plain ``(name, query)`` / ``(name, query, aliases)`` tuples are watchlists
  with the :class:`~monitor.model.WatchlistSpec` defaults (score 1, or 2 when the query is
  true in the title alone).
- A hit (:class:`~monitor.model.WatchlistHit`) reports, in watchlist config order, each
  watchlist that fires, with its score, its severity and ``terms``: the surfaces that made
  its true clauses (query and signals, not excludes) true, de-duplicated, in the order they
  first occur (title before text). A surface is the item's own spelling of the occurrence,
  lower-cased (``fold_case``; "Ballistic-Missile" for ``"ballistic missile"``, "launched"
  for ``launch*``, "café" for ``cafe``; in ASCII text a single word is the term's word). Only
  terms under no NOT count; an OR reports only its branches that are true; a NEAR the
  operand terms that take part in a qualifying pair; a term under ``title:``/``text:`` only
  its spellings in that field; a regex the text it matched.
- :meth:`Matcher.explain` gives the same decisions clause by clause, with the offsets of
  every occurrence in the original title and text (for snippets and highlighting).

How (built for thousands of watchlists):
- Every distinct term of every clause (queries, signals and excludes) of every watchlist is
  one key of a single Aho-Corasick automaton. The automaton runs over the item's *word
  string*: each field's normalised words joined by single spaces, framed by spaces, fields
  separated by ``\\0``. A word key is ``" launch "``, a prefix key ``" launch"``, a phrase
  key ``" ballistic missile "``: keys can only match on word boundaries, and a phrase cannot
  cross fields. One pass finds every term occurrence (``ahocorasick_rs``, overlapping
  matches: measured 1.5-2x faster per item than pyahocorasick here). For ASCII text (and
  text whose only non-ASCII characters are common punctuation, mapped to ASCII first) the
  word string is built with bytes operations; other text goes word by word through
  :func:`~monitor.query.normalize_word` (cached).
- :meth:`Matcher.match_many` (the bulk path: ``monitor match``, a poll's new items) builds
  the word strings of many ASCII-path items at once, joined by ``ITEM_SEP``, and scans them
  with one call of a bytes automaton; an item in which no term occurs costs no Python work
  beyond its share of those calls. Results are those of :meth:`Matcher.match`.
- An inverted index (term -> watchlists whose query that term's presence can make true,
  i.e. where it sits under no NOT or an even number of them; for a watchlist without a
  query, the terms of its signals) selects the few watchlists worth evaluating. The parser
  rejects a query that is true for an empty item, which is what makes skipping all other
  watchlists exact. Regexes cannot be automaton keys: a watchlist whose query (or, without
  one, a signal) could be made true by regexes alone is evaluated for every item; a regex
  under AND with ordinary terms is only searched when the watchlist is a candidate, and
  after the cheaper conditions beside it.
- Each clause is compiled once to a Python boolean expression over the terms that occurred
  (``tid in h``); signals are evaluated only for candidates whose query is true, excludes
  only for watchlists about to fire. A watchlist with only a query costs one expression and
  one more for the title-alone check. A NEAR or a field test only looks at positions once
  the terms it needs occur at all (``tid in h`` first). Clauses of the same shape share one
  compiled template (the code is copied with each clause's numbers as its constants), so
  building costs little more than parsing.
- The terms of a hit: for a simple query (see ``_is_simple``) in a plain item they come
  straight from the word string (a word is its own surface, a prefix's is the word it
  starts), and the hit of a query made true by one word is made once and reused; only
  phrases and positional clauses go through ``_Item.surfaces``.
- Occurrences keep their end offset in the word string, from which the field and the word
  index follow (:class:`_Item`); NEAR and field restrictions are compiled to calls that
  look at those positions, computed lazily only for items that reach such a clause.
"""
from __future__ import annotations

import codecs
import itertools
import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import FunctionType

import ahocorasick_rs

from .model import ClauseExplanation, Explanation, WatchlistHit, WatchlistSpec
from .query import (
    APOSTROPHES,
    ASCII_POSSESSIVE_RE,
    FIELDS,
    LEAD_WORDS,
    WORD_RE,
    And,
    Field,
    Leaf,
    Near,
    Node,
    Not,
    Or,
    QuerySyntaxError,
    Regex,
    Term,
    evaluate,
    fold_case,
    fold_text,
    iter_terms,
    parse_query,
    word_spans,
    words_of,
)

#: Separates the title's words from the text's in the word string; never part of a key.
FIELD_SEP = "\x00"

Present = dict[int, list[int]]  # id of a term that occurs in an item -> end offsets of its key
_NOTHING: frozenset[int] = frozenset()
WatchlistEntry = WatchlistSpec | tuple[str, str] | tuple[str, str, Mapping[str, Sequence[str]] | None]


class WatchlistQueryError(QuerySyntaxError):
    """A watchlist clause that does not parse; names the watchlist and the clause
    (``clause``: "query", "signals[2]", "exclude[0]")."""

    def __init__(self, watchlist: str, error: QuerySyntaxError, clause: str = "query"):
        self.watchlist = watchlist
        self.clause = clause
        where = "" if clause == "query" else f"{clause}: "
        super().__init__(f"watchlist {watchlist!r}: {where}{error.message}", error.query, error.column)


class WatchlistSpecError(ValueError):
    """A watchlist that cannot work as specified (no query and no signals, ...)."""


@dataclass(frozen=True, eq=False)  # compared and hashed by identity (cheap dict keys)
class _Clause:
    kind: str  # "query", "signal" or "exclude"
    label: str  # "query", "signals[1]", "exclude[0]"
    text: str  # canonical query text
    node: Node
    weight: float
    positive: tuple[int, ...]  # ids of its leaves under no NOT, in query order (regexes: ~rid)
    leaves: tuple[int, ...]  # ids of all its leaves (regexes: ~rid)
    simple: bool  # true => every positive leaf that occurred helped make it true
    positional: bool = False  # has a NEAR, field or regex (its test needs the item, not just the terms)
    plain_terms: frozenset[int] | None = None  # simple and without regex: ``positive`` as a set (else None)


@dataclass(frozen=True, eq=False)
class _Watchlist:
    name: str
    severity: str
    min_score: float
    title_weight: float
    query: _Clause | None
    signals: tuple[_Clause, ...]
    excludes: tuple[_Clause, ...]

    @property
    def clauses(self) -> tuple[_Clause, ...]:
        return ((self.query,) if self.query else ()) + self.signals + self.excludes

    @property
    def plain(self) -> bool:
        """Only a query, whose points always reach ``min_score``: the hot path needs nothing else."""
        return (self.query is not None and not self.signals and not self.excludes
                and self.min_score <= min(self.query.weight, self.query.weight * self.title_weight))


@dataclass(slots=True)
class _Fast:
    """What the hot loop needs of a watchlist that has only a query (see ``Matcher.match``)."""

    watchlist: _Watchlist
    clause: _Clause
    leaves: frozenset[int] | None  # its term ids (None when it has a regex)
    positive: tuple[int, ...] | None  # its positive term ids when the query is simple (no regex)
    positional: bool  # has a NEAR, field or regex (its test needs the item)
    points: float  # score when true
    title_points: float  # score when true in the title alone
    hits: dict[int, WatchlistHit]  # tid (~tid: not in the title alone) -> the hit of that term alone
    words_only: bool = False  # ``positive`` is set and all its terms are single words
    positive_set: frozenset[int] = frozenset()  # ``positive`` as a set


def _as_spec(entry: WatchlistEntry) -> WatchlistSpec:
    if isinstance(entry, WatchlistSpec):
        return entry
    name, query = entry[0], entry[1]
    aliases = entry[2] if len(entry) > 2 else None  # type: ignore[misc]
    return WatchlistSpec(name, query, aliases)


class Matcher:
    """All watchlists compiled into one automaton; ``match`` runs one pass per item."""

    def __init__(self, watchlists: Iterable[WatchlistEntry]):
        """``watchlists``: :class:`WatchlistSpec`, or (name, query) / (name, query, aliases)
        tuples, in config order. Raises :class:`WatchlistQueryError` for a clause that does
        not parse and :class:`WatchlistSpecError` for an unusable spec."""
        self._term_ids: dict[Term, int] = {}
        self._terms: list[Term] = []
        self._regex_ids: dict[Regex, int] = {}
        self._regexes: list[Regex] = []
        self._watchlists: list[_Watchlist] = []
        watchers: list[list[int]] = []  # term id -> indexes of watchlists it can make true
        always: list[int] = []  # watchlists that regexes alone can make true
        mentions: dict[int, list[int]] = {}  # term id -> watchlists with it in the query or a signal
        with_regex: list[int] = []  # watchlists with a regex in the query or a signal
        sources: list[str] = []  # the compiled expression of every clause, in clause order
        for index, entry in enumerate(watchlists):
            spec = _as_spec(entry)
            watchlist = self._compile_watchlist(spec, sources)
            self._watchlists.append(watchlist)
            triggers = [watchlist.query] if watchlist.query is not None else list(watchlist.signals)
            regex_only = False
            for clause in triggers:
                regexes: set[Leaf] = set()
                for leaf, nots in iter_terms(clause.node):
                    if isinstance(leaf, Regex):
                        regexes.add(leaf)
                        continue
                    tid = self._term_ids[leaf]
                    while len(watchers) <= tid:
                        watchers.append([])
                    if nots % 2 == 0 and index not in watchers[tid][-1:]:
                        watchers[tid].append(index)  # its presence can make the clause true
                regex_only = regex_only or _regexes_can_make_true(clause.node, regexes)
            if regex_only:
                always.append(index)
            for clause in (watchlist.query, *watchlist.signals) if watchlist.query else watchlist.signals:
                for lid in clause.leaves:
                    if lid < 0:
                        if index not in with_regex[-1:]:
                            with_regex.append(index)
                    elif index not in mentions.setdefault(lid, [])[-1:]:
                        mentions[lid].append(index)
        while len(watchers) < len(self._terms):
            watchers.append([])
        self._watchers: list[tuple[int, ...]] = [tuple(w) for w in watchers]
        self._always = tuple(always)
        self._mentions = mentions
        self._with_regex = tuple(with_regex)
        tests = _compile_tests(sources)
        self._tests: dict[_Clause, Callable[[Present, _Item], bool]] = {}
        clauses = [c for w in self._watchlists for c in w.clauses]
        for clause, test in zip(clauses, tests, strict=True):
            self._tests[clause] = test
        # per watchlist index, for the hot loop: the query's test (None without a query)
        self._query_tests: list[Callable[[Present, _Item], bool] | None] = [
            self._tests[w.query] if w.query is not None else None for w in self._watchlists]
        self._key_lengths = [len(_key(t)) for t in self._terms]
        self._kinds = [_PHRASE if t.is_phrase else _PREFIX if t.prefix else _WORD for t in self._terms]
        self._n_words = [len(t.words) for t in self._terms]
        self._fast: list[_Fast | None] = [self._fast_path(w) if w.plain else None for w in self._watchlists]
        # per watchlist index, everything the hot loop looks up: (query test or None, does
        # that test need the item (positions, regexes), _Fast or None)
        self._plans: list[tuple[Callable[[Present, _Item], bool] | None, bool, _Fast | None]] = [
            (test, w.query is not None and w.query.positional, fast)
            for w, test, fast in zip(self._watchlists, self._query_tests, self._fast, strict=True)]
        self._automaton = self._build_automaton()

    def _fast_path(self, watchlist: _Watchlist) -> _Fast:
        clause: _Clause = watchlist.query  # type: ignore[assignment]
        regex = any(lid < 0 for lid in clause.leaves)
        positive = clause.positive if clause.simple and not regex else None
        return _Fast(watchlist, clause, None if regex else frozenset(clause.leaves), positive,
                     clause.positional, clause.weight, clause.weight * watchlist.title_weight, {},
                     positive is not None and all(self._kinds[t] == _WORD for t in positive),
                     frozenset(positive or ()))

    # ------------------------------------------------------------------ building

    def _compile_watchlist(self, spec: WatchlistSpec, sources: list[str]) -> _Watchlist:
        name = spec.name
        if spec.query is None and not spec.signals:
            raise WatchlistSpecError(f"watchlist {name!r}: needs a query or at least one signal")
        if not (math.isfinite(spec.min_score) and math.isfinite(spec.title_weight)):
            raise WatchlistSpecError(f"watchlist {name!r}: min_score and title_weight must be finite numbers")
        if spec.query is None and spec.min_score <= 0:
            raise WatchlistSpecError(f"watchlist {name!r}: without a query, min_score must be above 0 "
                                     "(else it would fire on every item)")

        def clause(kind: str, label: str, text: str, weight: float) -> _Clause:
            if not math.isfinite(weight):
                raise WatchlistSpecError(f"watchlist {name!r}: {label}: weight must be a finite number")
            try:
                node = parse_query(text, spec.aliases)
            except QuerySyntaxError as e:
                raise WatchlistQueryError(name, e, label) from None
            positive: list[int] = []
            leaves: list[int] = []
            for leaf, nots in iter_terms(node):
                lid = self._leaf_id(leaf)
                if lid not in leaves:
                    leaves.append(lid)
                if nots == 0 and lid not in positive:
                    positive.append(lid)
            simple = _is_simple(node)
            made = _Clause(kind, label, str(node), node, float(weight), tuple(positive), tuple(leaves), simple,
                           _positional(node),
                           frozenset(positive) if simple and all(lid >= 0 for lid in leaves) else None)
            sources.append(_source(node, self._term_ids, self._regex_ids))
            return made

        query = clause("query", "query", spec.query, 1.0) if spec.query is not None else None
        signals = tuple(clause("signal", f"signals[{i}]", s.query, s.weight) for i, s in enumerate(spec.signals))
        excludes = tuple(clause("exclude", f"exclude[{i}]", text, 0.0) for i, text in enumerate(spec.exclude))
        return _Watchlist(name, spec.severity, float(spec.min_score), float(spec.title_weight),
                          query, signals, excludes)

    def _leaf_id(self, leaf: Leaf) -> int:
        """Id of a term (>= 0) or of a regex (``~rid``, < 0); identical leaves are shared."""
        if isinstance(leaf, Regex):
            rid = self._regex_ids.get(leaf)
            if rid is None:
                rid = self._regex_ids[leaf] = len(self._regexes)
                self._regexes.append(leaf)
            return ~rid
        tid = self._term_ids.get(leaf)
        if tid is None:
            tid = self._term_ids[leaf] = len(self._terms)
            self._terms.append(leaf)
        return tid

    def _build_automaton(self) -> ahocorasick_rs.AhoCorasick | None:
        """The automaton over word strings (overlapping matches: a word inside a phrase
        counts too); the one over joined ASCII word strings (bytes) is made on first use."""
        self._bytes_automaton: ahocorasick_rs.BytesAhoCorasick | None = None
        if not self._terms:
            return None
        return ahocorasick_rs.AhoCorasick([_key(t) for t in self._terms], matchkind=ahocorasick_rs.MatchKind.Standard)

    def _joined_automaton(self) -> ahocorasick_rs.BytesAhoCorasick:
        automaton = self._bytes_automaton
        if automaton is None:
            # keys of non-ASCII terms never match an ASCII word string; they stay (as UTF-8
            # bytes) so that a key's index is its term id
            automaton = self._bytes_automaton = ahocorasick_rs.BytesAhoCorasick(
                [_key(t).encode() for t in self._terms], matchkind=ahocorasick_rs.MatchKind.Standard)
        return automaton

    @property
    def term_count(self) -> int:
        """How many distinct terms the automaton holds (identical terms are shared)."""
        return len(self._terms)

    @property
    def names(self) -> list[str]:
        return [w.name for w in self._watchlists]

    def query(self, name: str) -> Node | None:
        """The parsed query of watchlist ``name`` (``str()`` of it is canonical; None if it
        has only signals)."""
        w = next(w for w in self._watchlists if w.name == name)
        return w.query.node if w.query is not None else None

    # ------------------------------------------------------------------ matching

    def _scan(self, title: str, text: str) -> _Item:
        ws, plain = _word_string(title, text)
        present: Present = {}
        if self._automaton is not None:
            present = _present(self._automaton.find_matches_as_indexes(ws, overlapping=True), 1,
                               ws.index(FIELD_SEP))[0]
        return _Item(self, ws, present, title, text, plain)

    def match(self, title: str, text: str) -> list[WatchlistHit]:
        """The watchlists the item fires, in config order, each with score, terms and severity."""
        if self._automaton is None and not self._always:
            return []
        ws, plain = _word_string(title, text)
        return self._match_ws(title, text, ws, plain)

    def match_many(self, items: Sequence[tuple[str, str]]) -> list[list[WatchlistHit]]:
        """``[match(title, text) for title, text in items]``, faster for many items: their
        word strings are built together and scanned in one pass (:func:`_joined_word_strings`)."""
        if self._automaton is None and not self._always:
            return [[] for _ in items]
        out: list[list[WatchlistHit] | None] = [None] * len(items)
        singles, groups = _joined_word_strings(items)
        for index, (ws, plain) in singles.items():
            out[index] = self._match_ws(*items[index], ws, plain)
        if groups:
            find = self._joined_automaton().find_matches_as_indexes
            evaluate, always = self._evaluate, self._always
            for where, joined, seps in groups:
                wss = joined.decode("ascii")
                matches = find(joined, overlapping=True)
                # matches come in order of their end: walk the items along
                m, n_matches = 0, len(matches)
                for k, index in enumerate(where):
                    lo, hi = seps[k] + 1, seps[k + 1]  # item k's word string is wss[lo:hi]
                    first = m
                    while m < n_matches and matches[m][2] <= hi:
                        m += 1
                    if m > first or always:
                        ws = wss[lo:hi]
                        sep = ws.index(FIELD_SEP)
                        present, n_title = _present(matches[first:m], lo + 1, sep)
                        out[index] = evaluate(*items[index], ws, True, present, n_title, sep)
                    else:
                        out[index] = []
        return out  # type: ignore[return-value]

    def _match_ws(self, title: str, text: str, ws: str, plain: bool) -> list[WatchlistHit]:
        """:meth:`match`, given the item's word string (see :func:`_word_string`)."""
        automaton = self._automaton
        sep = ws.index(FIELD_SEP)
        present: Present = {}
        n_title = 0
        if automaton is not None:
            # title and text at once (no key contains FIELD_SEP)
            present, n_title = _present(automaton.find_matches_as_indexes(ws, overlapping=True), 1, sep)
            if not present and not self._always:
                return []
        return self._evaluate(title, text, ws, plain, present, n_title, sep)

    def _evaluate(self, title: str, text: str, ws: str, plain: bool, present: Present,
                  n_title: int, sep: int) -> list[WatchlistHit]:
        """The hits of an item whose word string is ``ws`` (its FIELD_SEP at ``sep``) and in
        which the terms ``present`` occur (the first ``n_title`` of them in the title)."""
        watchers = self._watchers
        if present:
            if len(present) == 1 and not self._always:
                candidates: Sequence[int] = watchers[next(iter(present))]
            else:
                pool = set(self._always)
                for tid in present:
                    pool.update(watchers[tid])
                candidates = sorted(pool)
        elif self._always:
            candidates = self._always
        else:
            return []
        item: _Item | None = None  # made when a test or the terms need it
        title_ids: set[int] | frozenset[int] | None = None  # the terms that occur in the title, when needed
        plans = self._plans
        kinds = self._kinds
        hits: list[WatchlistHit] = []
        for index in candidates:
            test, needs_item, fast = plans[index]
            if needs_item and item is None:
                item = _Item(self, ws, present, title, text, plain)
                item._sep = sep
            if test is not None and not test(present, item):  # type: ignore[arg-type]
                continue
            if fast is None:
                if item is None:
                    item = _Item(self, ws, present, title, text, plain)
                    item._sep = sep
                hit = self._full_hit(self._watchlists[index], item)
                if hit is not None:
                    hits.append(hit)
                continue
            # a watchlist with only a query, which is true: is it true in the title alone?
            if title_ids is None:  # (occurrences come in order: the title's terms came first)
                title_ids = set(itertools.islice(present, n_title)) if n_title else _NOTHING
            leaves = fast.leaves
            if leaves is not None and (not title_ids or leaves.isdisjoint(title_ids)):
                in_title = False  # none of its terms is in the title (and it has no regex)
            elif fast.positional:
                view = item.title_view()  # type: ignore[union-attr]  # made above: its test needs it
                in_title = view is not None and test(view.present, view)  # type: ignore[misc]
            else:  # only presence tests ("tid in h"): no item needed
                in_title = test(title_ids, None)  # type: ignore[misc,arg-type]
            if plain and fast.positive is not None:
                # a simple query: every positive term that occurs helped make it true
                tids = fast.positive_set.intersection(present)
                if len(tids) == 1:
                    (tid,) = tids
                    if kinds[tid] == _WORD:  # a word's surface is the word
                        hit = fast.hits.get(tid if in_title else ~tid)
                        if hit is None:
                            hit = self._word_hit(fast, tid, in_title)
                        hits.append(hit)
                        continue
                elif tids and fast.words_only:  # words never overlap: the order of first ends is the order first seen
                    terms = self._terms
                    w = fast.watchlist
                    hits.append(WatchlistHit(
                        w.name, fast.title_points if in_title else fast.points,
                        tuple(terms[t].words[0] for t in sorted(tids, key=lambda t: present[t][0])), w.severity))
                    continue
                found = self._plain_surfaces(tids, present, ws)
                if found is not None:
                    w = fast.watchlist
                    hits.append(WatchlistHit(w.name, fast.title_points if in_title else fast.points, found,
                                             w.severity))
                    continue
            if item is None:
                item = _Item(self, ws, present, title, text, plain)
                item._sep = sep
            w = fast.watchlist
            hits.append(WatchlistHit(w.name, fast.title_points if in_title else fast.points,
                                     item.surfaces([fast.clause]), w.severity))
        return hits

    def _plain_surfaces(self, tids: Iterable[int], present: Present, ws: str) -> tuple[str, ...] | None:
        """What ``_Item.surfaces`` gives for a simple clause whose occurred positive terms are
        ``tids``, in a plain item, when they are all words or one-word prefixes (their
        surfaces are in the word string); None otherwise."""
        kinds, n_words, key_lengths, terms = self._kinds, self._n_words, self._key_lengths, self._terms
        firsts: list[tuple[int, str]] = []
        for tid in tids:
            kind = kinds[tid]
            ends = present[tid]
            if kind == _WORD:  # its only surface is the word
                firsts.append((ends[0] - key_lengths[tid] + 1, terms[tid].words[0]))
            elif kind == _PREFIX and n_words[tid] == 1:  # the whole word of each occurrence
                seen: dict[str, int] = {}
                for end in ends:
                    seen.setdefault(ws[end - key_lengths[tid] + 2:ws.find(" ", end)], end)
                firsts.extend((end - key_lengths[tid] + 1, surface) for surface, end in seen.items())
            else:
                return None
        firsts.sort()  # (one term's surfaces are in order already: sorting changes nothing)
        return tuple(dict.fromkeys(surface for _, surface in firsts))

    def _word_hit(self, fast: _Fast, tid: int, in_title: bool) -> WatchlistHit:
        """The hit of a query-only watchlist made true by the single word ``tid`` (cached)."""
        w = fast.watchlist
        hit = fast.hits[tid if in_title else ~tid] = WatchlistHit(
            w.name, fast.title_points if in_title else fast.points, self._terms[tid].words, w.severity)
        return hit

    def _full_hit(self, watchlist: _Watchlist, item: _Item) -> WatchlistHit | None:
        """The hit of a watchlist with signals or excludes (its query, if any, is true)."""
        tests, present = self._tests, item.present
        score = 0.0
        true: list[_Clause] = []
        for clause in (watchlist.query, *watchlist.signals) if watchlist.query else watchlist.signals:
            if clause is not watchlist.query and not tests[clause](present, item):
                continue
            true.append(clause)
            score += self._points(watchlist, clause, item)
        if score < watchlist.min_score or not true:
            return None
        for clause in watchlist.excludes:
            if tests[clause](present, item):
                return None
        found = None
        if item.plain and all(c.plain_terms is not None for c in true):  # as in match's fast path
            found = self._plain_surfaces(set().union(*(c.plain_terms.intersection(present) for c in true)),  # type: ignore[union-attr]
                                         present, item.ws)
        return WatchlistHit(watchlist.name, score, item.surfaces(true) if found is None else found,
                            watchlist.severity)

    def _points(self, watchlist: _Watchlist, clause: _Clause, item: _Item) -> float:
        """What a true clause adds to the score."""
        if not clause.positional:  # only presence tests: the title's terms are enough
            if self._tests[clause](item.title_present(), None):  # type: ignore[arg-type]
                return clause.weight * watchlist.title_weight
            return clause.weight
        title = item.title_view()
        if title is not None and self._tests[clause](title.present, title):
            return clause.weight * watchlist.title_weight
        return clause.weight

    # ------------------------------------------------------------------ explaining

    def explain(self, title: str, text: str, near_misses: bool = False) -> list[Explanation]:
        """Why each watchlist fired on the item (and, with ``near_misses``, why each watchlist
        one of whose query or signal terms occurred, or regexes matched, did not), in config
        order: every clause with its truth, title-alone truth, points, terms and the spans of
        those terms' occurrences in the original ``title``/``text``. Agrees with
        :meth:`match` (same fired watchlists, same scores)."""
        item = self._scan(title, text)
        present, tests = item.present, self._tests
        # the watchlists that can fire or be near misses: a query or signal term occurred, or
        # they have a regex (a superset of match's candidates)
        relevant = set(self._with_regex)
        for tid in present:
            relevant.update(self._mentions.get(tid, ()))
        out: list[Explanation] = []
        for index in sorted(relevant):
            watchlist = self._watchlists[index]
            query = watchlist.query
            triggered = query is None or tests[query](item.present, item)
            score = 0.0
            clauses: list[ClauseExplanation] = []
            occurred = False
            for clause in watchlist.clauses:
                true = tests[clause](present, item)
                if clause.kind != "exclude":
                    occurred = occurred or any(
                        (lid in present) if lid >= 0 else item.regex_true(~lid, None) for lid in clause.leaves)
                title_view = item.title_view()
                in_title = title_view is not None and tests[clause](title_view.present, title_view)
                points = 0.0
                if true and clause.kind != "exclude":
                    points = self._points(watchlist, clause, item)
                    score += points
                if true:
                    used = item.contributing([clause])
                else:
                    used = [(lid, None) for lid in clause.leaves if (lid in present if lid >= 0 else
                                                                      item.regex_true(~lid, None))]
                clauses.append(ClauseExplanation(
                    kind=clause.kind, query=clause.text, weight=clause.weight, true=true,
                    in_title=in_title, points=points, terms=item.surfaces_of(used),
                    spans=item.spans_of(used)))
            excluded = any(c.true for c in clauses if c.kind == "exclude")
            fired = triggered and not excluded and score >= watchlist.min_score and any(
                c.true for c in clauses if c.kind != "exclude")
            if fired or (near_misses and occurred):
                out.append(Explanation(watchlist.name, fired, score, watchlist.min_score, excluded,
                                       watchlist.severity, tuple(clauses)))
        return out


# --------------------------------------------------------------------------- word string

def _ascii_punctuation() -> dict[int, str]:
    """Non-ASCII characters the word string may treat as ASCII without changing any word:
    apostrophes (-> ``'``) and common non-word punctuation, spaces and symbols (-> space)."""
    table = {ord(c): "'" for c in APOSTROPHES}
    for lo, hi in ((0x80, 0x100), (0x2000, 0x2070), (0x20A0, 0x20C1), (0x2190, 0x2200), (0x2500, 0x2600),
                   (0x3000, 0x3004), (0x3008, 0x3012), (0xFEFF, 0xFF00)):
        for code in range(lo, hi):
            if code not in table and not WORD_RE.match(chr(code)):
                table[code] = " "
    return table


_PUNCTUATION_TO_ASCII = _ascii_punctuation()

# Bytes translation for the ASCII fast path of word_string: A-Z -> a-z, every ASCII
# character that is not a word character (\w) -> space, except the field separator.
_ASCII_FOLD = bytes(
    c + 32 if 65 <= c <= 90 else c if chr(c).isalnum() or chr(c) in "_" + FIELD_SEP else 32
    for c in range(128)
) + bytes(range(128, 256))
_possessive_sub = ASCII_POSSESSIVE_RE.sub
_collapse_spaces = re.compile(b"  +").sub


def word_string(title: str, text: str) -> str:
    """The word string the automaton runs over: ``" <title words> \\0 <text words> "``, the
    normalised words of each field separated by single spaces."""
    return _word_string(title, text)[0]


def _word_string(title: str, text: str) -> tuple[str, bool]:
    """The word string, and whether it was built on the ASCII path (then every word is its
    original characters lower-cased, so a word term's surface is the word itself)."""
    if FIELD_SEP in title or FIELD_SEP in text:  # a field holds the separator itself
        return _word_string_translated(title, text)
    joined = f" {title} {FIELD_SEP} {text} "
    if not joined.isascii():  # (O(1)) the commonest punctuation first: str.replace is fast
        for char, ascii_ in _COMMON_PUNCTUATION:
            if char in joined:
                joined = joined.replace(char, ascii_)
    try:  # ASCII, once (the rest of) the punctuation of _PUNCTUATION_TO_ASCII is mapped (by the codec)
        both = joined.encode("ascii", _PUNCTUATION_ERRORS)
    except UnicodeEncodeError:  # other non-ASCII characters
        return _word_string_translated(title, text)
    # fast path: gives exactly what the general path gives. After the translation only
    # spaces separate words, and runs of them become one.
    if 39 in both:  # an apostrophe: drop possessives (two spaces keep the offsets)
        both = _possessive_sub(b"  ", both)
    return _collapse_spaces(b" ", both.translate(_ASCII_FOLD)).decode("ascii"), True


def _present(matches: Iterable[tuple[int, int, int]], shift: int, sep: int) -> tuple[Present, int]:
    """The terms that occur, from the automaton's matches ``(tid, start, end)`` in order of
    their end: each term's offsets of its key's last character (``end - shift``) in the word
    string whose FIELD_SEP is at ``sep``, and how many terms occur in the title (the first
    ones in the dict, since title matches end first)."""
    present: Present = {}
    get = present.get
    n_title = 0
    for tid, _, end in matches:
        end -= shift
        ends = get(tid)
        if ends is None:
            present[tid] = [end]
            if end < sep:
                n_title += 1
        else:
            ends.append(end)
    return present, n_title


#: Separates items in the joined word strings of :func:`word_strings`.
ITEM_SEP = "\x01"
#: _ASCII_FOLD keeping ITEM_SEP.
_ASCII_FOLD_JOINED = _ASCII_FOLD[:1] + ITEM_SEP.encode() + _ASCII_FOLD[2:]
#: Below this many items, :func:`word_strings` builds them one by one.
_JOIN_MIN = 8
#: ... and it joins at most about this many characters at once.
_JOIN_CHARS = 1 << 16


def word_strings(items: Sequence[tuple[str, str]]) -> list[tuple[str, bool]]:
    """``[_word_string(title, text) for title, text in items]``, built together (see
    :func:`_joined_word_strings`)."""
    out: list[tuple[str, bool] | None] = [None] * len(items)
    singles, groups = _joined_word_strings(items)
    for index, got in singles.items():
        out[index] = got
    for where, joined, _ in groups:
        for index, ws in zip(where, joined.decode("ascii").split(ITEM_SEP), strict=True):
            out[index] = (ws, True)
    return out  # type: ignore[return-value]


Joined = tuple[list[int], bytes, list[int]]  # (item indexes, their word strings joined, separator offsets)


def _joined_word_strings(items: Sequence[tuple[str, str]]) -> tuple[dict[int, tuple[str, bool]], list[Joined]]:
    """The word strings of ``items``: ``(singles, groups)``. ``singles`` maps an item's index
    to ``_word_string(title, text)``; each group ``(where, joined, seps)`` holds the word
    strings of the items ``where`` (all on the ASCII path), joined by ``ITEM_SEP``, as
    bytes, with the separators' offsets framed by -1 and ``len(joined)`` (item ``k`` is
    ``joined[seps[k] + 1:seps[k + 1]]``).

    The joined path runs over many items at once (one encode, one possessive pass, one
    translate), and runs of spaces become one with numpy instead of a regex per item (which
    costs about as much as the rest of the word string). Items it cannot take (a field
    holding FIELD_SEP or ITEM_SEP, or text that needs the general path) go one by one; each
    word string is the same either way (tests/test_matcher.py checks it)."""
    singles: dict[int, tuple[str, bool]] = {}
    groups: list[Joined] = []
    if len(items) < _JOIN_MIN:
        for index, (title, text) in enumerate(items):
            singles[index] = _word_string(title, text)
        return singles, groups
    parts: list[str] = []
    where: list[int] = []
    size = 0
    for index, (title, text) in enumerate(items):
        joined = f" {title} {FIELD_SEP} {text} "
        if joined.count(FIELD_SEP) != 1 or ITEM_SEP in joined:
            singles[index] = _word_string(title, text)
            continue
        parts.append(joined)
        where.append(index)
        size += len(joined)
        if size >= _JOIN_CHARS:
            _join_ascii(parts, where, items, singles, groups)
            parts, where, size = [], [], 0
    if parts:
        _join_ascii(parts, where, items, singles, groups)
    return singles, groups


def _join_ascii(parts: list[str], where: list[int], items: Sequence[tuple[str, str]],
                singles: dict[int, tuple[str, bool]], groups: list[Joined]) -> None:
    """Add the group of ``parts`` (items joined as in :func:`_word_string`, at indexes
    ``where``) to ``groups``; items with other non-ASCII characters go to ``singles``."""
    import numpy as np  # (imported when first needed: not every command matches in bulk)

    big = ITEM_SEP.join(parts)
    if not big.isascii():
        for char, ascii_ in _COMMON_PUNCTUATION:
            if char in big:
                big = big.replace(char, ascii_)
    try:
        both = big.encode("ascii", _PUNCTUATION_ERRORS)
    except UnicodeEncodeError:  # some item needs the general path: sort them out
        keep_parts, keep_where = [], []
        for part, index in zip(parts, where, strict=True):
            try:
                part.encode("ascii", _PUNCTUATION_ERRORS)
            except UnicodeEncodeError:
                singles[index] = _word_string(*items[index])
                continue
            keep_parts.append(part)
            keep_where.append(index)
        if keep_parts:
            _join_ascii(keep_parts, keep_where, items, singles, groups)
        return
    if 39 in both:  # an apostrophe: drop possessives (ITEM_SEP is not a word character)
        both = _possessive_sub(b"  ", both)
    folded = np.frombuffer(both.translate(_ASCII_FOLD_JOINED), np.uint8)
    space = folded == 32
    keep = np.empty(len(folded), np.bool_)
    keep[0] = True
    np.logical_not(space[1:] & space[:-1], out=keep[1:])  # a space right after a space goes
    collapsed = folded[keep]
    seps = [-1, *np.flatnonzero(collapsed == 1).tolist(), len(collapsed)]
    groups.append((where, collapsed.tobytes(), seps))


def _word_string_translated(title: str, text: str) -> tuple[str, bool]:
    """:func:`_word_string` for text with non-ASCII characters besides the mapped
    punctuation, or with FIELD_SEP in it."""
    if not title.isascii():
        title = title.translate(_PUNCTUATION_TO_ASCII)
        if not title.isascii():
            return _word_string_general(title, text), False
    if not text.isascii():
        text = text.translate(_PUNCTUATION_TO_ASCII)
        if not text.isascii():
            return _word_string_general(title, text), False
    if FIELD_SEP in title or FIELD_SEP in text:
        return _word_string_general(title, text), True
    both = f" {title} {FIELD_SEP} {text} ".encode("ascii")
    if 39 in both:
        both = _possessive_sub(b"  ", both)
    return _collapse_spaces(b" ", both.translate(_ASCII_FOLD)).decode("ascii"), True


def _punctuation_error(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler for the ASCII encoder: the characters of _PUNCTUATION_TO_ASCII
    become their ASCII stand-ins (one for one, so offsets stay valid); any other non-ASCII
    character is an error. (Called once per run of non-ASCII characters: much cheaper than
    ``str.translate`` over the whole text.)"""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    mapped = error.object[error.start:error.end].translate(_PUNCTUATION_TO_ASCII)
    if not mapped.isascii():
        raise error
    return mapped, error.end


_PUNCTUATION_ERRORS = "monitor.matcher.punctuation"
codecs.register_error(_PUNCTUATION_ERRORS, _punctuation_error)
#: The commonest of them in news text (curly quotes, dashes), with their stand-ins.
_COMMON_PUNCTUATION = tuple((c, _PUNCTUATION_TO_ASCII[ord(c)]) for c in "\u2019\u201c\u201d\u2014\u2018\u2013")


def _ascii_text(text: str) -> str:
    """The text of a field of a plain item (see :func:`_word_string`) with its punctuation
    mapped to ASCII: the same words at the same offsets, for the ASCII path of word_spans."""
    if text.isascii():
        return text
    try:
        return text.encode("ascii", _PUNCTUATION_ERRORS).decode("ascii")
    except UnicodeEncodeError:  # pragma: no cover - a plain item's text always maps
        return text


def _plain_runs(field: str) -> bytes | None:
    """A field of a plain item as the ASCII path folds it, before runs of spaces become one:
    its words are the runs of other bytes, at their offsets in the field (None when the
    field holds FIELD_SEP, which is not a space there)."""
    runs = _ascii_text(field).encode("ascii")
    if 39 in runs:  # (an apostrophe)
        runs = _possessive_sub(b"  ", runs)
    runs = runs.translate(_ASCII_FOLD)
    return None if 0 in runs else runs


#: A word in the bytes of _plain_runs.
_RUN_RE = re.compile(b"[^ ]+")


def _word_string_general(title: str, text: str) -> str:
    return f" {' '.join([*words_of(title), FIELD_SEP, *words_of(text)])} "


def _key(term: Term) -> str:
    """The automaton key of a term: framed by spaces, open at the end for a prefix."""
    return f" {' '.join(term.words)}" + ("" if term.prefix else " ")


# --------------------------------------------------------------------------- compiled clauses

def _operand_ids(node: Node, term_ids: Mapping[Term, int]) -> tuple[int, ...]:
    """Term ids of a NEAR operand (a Term or an Or of Terms)."""
    return tuple(term_ids[t] for t in (node.children if isinstance(node, Or) else (node,)))  # type: ignore[misc]


def _cost(node: Node) -> int:
    """How expensive a node is to test: 0 presence checks, 1 positions, 2 regex searches."""
    if isinstance(node, Term):
        return 0
    if isinstance(node, Regex):
        return 2
    if isinstance(node, Near | Field):
        return max(1, _cost(node.child) if isinstance(node, Field) else 1)
    if isinstance(node, Not):
        return _cost(node.child)
    return max(_cost(c) for c in node.children)


def _source(node: Node, term_ids: Mapping[Term, int], regex_ids: Mapping[Regex, int]) -> str:
    """The clause as ``lambda h, c: <boolean expression of "tid in h">``.

    The source holds only integers, tuples of them, ``None``, ``True``/``False``, ``in``,
    ``and``, ``or``, ``not``, parentheses and calls of the helpers ``_t``/``_x``/``_n``/``_r``
    (nothing from the query text), so evaluating it is safe. AND operands are ordered
    cheapest first (truth does not depend on the order)."""
    def source(n: Node, field: int | None) -> str:
        if isinstance(n, Term):
            tid = term_ids[n]
            # a field test only when the term occurs at all (the test implies it)
            return f"{tid} in h" if field is None else f"({tid} in h and {('_t', '_x', '_l')[field]}(h, c, {tid}))"
        if isinstance(n, Regex):
            return f"_r(c, {regex_ids[n]}, {field})"
        if isinstance(n, Not):
            return f"not ({source(n.child, field)})"
        if isinstance(n, Field):
            return source(n.child, FIELDS.index(n.name))
        if isinstance(n, Near):
            # positions are looked at only when both sides occur (which the NEAR implies)
            left, right = _operand_ids(n.left, term_ids), _operand_ids(n.right, term_ids)
            return (f"(({' or '.join(f'{t} in h' for t in left)}) and ({' or '.join(f'{t} in h' for t in right)})"
                    f" and _n(c, {left}, {right}, {n.distance}, {n.ordered}, {field}))")
        children = sorted(n.children, key=_cost) if isinstance(n, And) else n.children
        joiner = " and " if isinstance(n, And) else " or "
        return "(" + joiner.join(source(c, field) for c in children) + ")"

    return f"lambda h, c: {source(node, None)}"


def _compile_tests(sources: list[str]) -> list[Callable[[Present, _Item], bool]]:
    """Compile every clause's expression. Clauses of the same shape (the same source up to
    its integers) share one compiled template: each distinct template is compiled once (all
    in one ``compile`` call) and each clause gets a copy of its template's code with its own
    integers as the constants, so it runs exactly as if compiled on its own."""
    if not sources:
        return []
    template_of: dict[str, int] = {}  # template source -> index in templates
    templates: list[str] = []
    plans: list[tuple[int, tuple[int, ...]]] = []  # per clause: (template, its integers)
    for src in sources:
        values: dict[int, int] = {}  # integer -> placeholder number, in order of appearance

        def placeholder(m: re.Match[str], values: dict[int, int] = values) -> str:
            return str(_PLACEHOLDER + values.setdefault(int(m.group()), len(values)))

        template = _INTEGER_RE.sub(placeholder, src)
        index = template_of.get(template)
        if index is None:
            index = template_of[template] = len(templates)
            templates.append(template)
        plans.append((index, tuple(values)))
    scope = {"__builtins__": {}, "_t": _in_title, "_x": _in_text, "_l": _in_lead, "_n": _near, "_r": _regex}
    compiled = eval(compile("[\n" + ",\n".join(templates) + "\n]", "<watchlist clauses>", "eval"), scope)
    codes = [f.__code__ for f in compiled]
    out: list[Callable[[Present, _Item], bool]] = []
    for index, values in plans:
        code = codes[index]
        out.append(FunctionType(code.replace(co_consts=tuple(_fill(c, values) for c in code.co_consts)), scope,
                                code.co_name))
    return out


#: Integer literals of a clause source (term, regex and field numbers, NEAR distances).
_INTEGER_RE = re.compile(r"\b\d+\b")
#: Placeholders stand for them in a template (larger than any of them).
_PLACEHOLDER = 1 << 60


def _fill(const: object, values: tuple[int, ...]) -> object:
    """A template's constant with the placeholders replaced by ``values``."""
    if type(const) is int and const >= _PLACEHOLDER:
        return values[const - _PLACEHOLDER]
    if type(const) is tuple:
        return tuple(_fill(c, values) for c in const)
    return const


def _in_title(h: Present, item: _Item, tid: int) -> bool:
    ends = h.get(tid)
    return ends is not None and ends[0] < item.sep  # ends ascend


def _in_text(h: Present, item: _Item, tid: int) -> bool:
    ends = h.get(tid)
    return ends is not None and ends[-1] > item.sep


def _in_lead(h: Present, item: _Item, tid: int) -> bool:
    ends = h.get(tid)
    return ends is not None and ends[0] <= item.lead_end


def _in_field(h: Present, item: _Item, tid: int, field: int) -> bool:
    return (_in_title, _in_text, _in_lead)[field](h, item, tid)


def _regex(item: _Item, rid: int, field: int | None) -> bool:
    return item.regex_true(rid, field)


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


def _regexes_can_make_true(node: Node, regexes: set[Leaf]) -> bool:
    """Can some of ``regexes`` matching, with no term occurring, make ``node`` true? (Every
    subset is tried; with very many regexes the answer is a conservative yes.)"""
    if not regexes:
        return False
    if len(regexes) > 10:
        return True
    found = list(regexes)
    return any(evaluate(node, set(subset)) for k in range(1, len(found) + 1)
               for subset in itertools.combinations(found, k))


def _positional(node: Node) -> bool:
    """Does ``node`` contain a NEAR, a field restriction or a regex (truth depends on more
    than which terms occur)?"""
    if isinstance(node, Near | Field | Regex):
        return True
    if isinstance(node, Not):
        return _positional(node.child)
    return isinstance(node, And | Or) and any(_positional(c) for c in node.children)


def _is_simple(node: Node) -> bool:
    """True when, whenever the clause is true, every occurred positive term helped make it so:
    no OR (outside a NOT) has an AND among its children that could be false, and no NEAR,
    field restriction or regex (outside a NOT) decides which occurrences count."""
    if isinstance(node, Near | Field | Regex):
        return False
    if isinstance(node, Term | Not):
        return True
    if isinstance(node, Or):
        return all(isinstance(c, Term | Not) for c in node.children)
    return all(_is_simple(c) for c in node.children)


_WORD, _PREFIX, _PHRASE = 0, 1, 2

# the folded texts (see _Item.folded) a regex restricted to a field is searched in
_REGEX_FIELDS: dict[int | None, tuple[int, ...]] = {None: (0, 1), 0: (0,), 1: (1,), 2: (0, 2)}

Used = list[tuple[int, int | None]]  # (leaf id, field or None) that made a clause true


class _Item:
    """One item as the clauses see it: the word string, the terms that occurred and where,
    and (lazily, cached) word positions, regex results, the title-alone view, and the
    surfaces and original spans of occurrences."""

    __slots__ = ("matcher", "ws", "present", "title", "text", "plain", "title_only", "_sep", "_lead", "_occ",
                 "_title_present", "_title_view", "_regex", "_folded", "_spans", "_firsts", "_present_terms",
                 "_runs")

    def __init__(self, matcher: Matcher, ws: str, present: Present, title: str, text: str, plain: bool,
                 title_only: bool = False):
        self.matcher = matcher
        self.ws = ws
        self.present = present
        self.title = title
        self.text = text
        self.plain = plain
        self.title_only = title_only
        self._sep = -1
        self._lead: tuple[int, int] | None = None
        # caches, made when first needed
        self._occ: dict[int, list[Occurrence]] | None = None
        self._title_present: Present | None = None
        self._title_view: _Item | None | bool = False  # False: not made yet
        self._regex: dict[tuple[int, int], bool] | None = None
        self._folded: list[tuple[str, list[tuple[int, int]] | None] | None] | None = None
        self._spans: list[list[tuple[str, int, int]] | None] | None = None
        self._firsts: dict[int, list[tuple[int, str]]] | None = None
        self._present_terms: frozenset[Leaf] | None = None
        self._runs: list[bytes | None | bool] | None = None  # per field: see _plain_runs (False: not made)

    @property
    def sep(self) -> int:
        """Offset of the field separator in the word string: title keys end before it."""
        if self._sep < 0:
            self._sep = self.ws.index(FIELD_SEP)
        return self._sep

    @property
    def lead_end(self) -> int:
        """Offset in the word string of the space after the last word of the lead (the title
        and the first ``LEAD_WORDS`` words of the text): a key ending at or before it is in
        the lead."""
        return self._lead_bounds()[0]

    @property
    def lead_last(self) -> int:
        """Word index (counted across fields, like :data:`Occurrence`) of the lead's last word."""
        return self._lead_bounds()[1]

    def _lead_bounds(self) -> tuple[int, int]:
        lead = self._lead
        if lead is None:
            ws, sep = self.ws, self.sep
            end = sep + 1  # the space before the text's first word
            for _ in range(LEAD_WORDS):
                end = ws.find(" ", end + 1)
                if end < 0:
                    end = len(ws)
                    break
            lead = self._lead = (end, ws.count(" ", 0, sep) + LEAD_WORDS - 1)
        return lead

    def title_present(self) -> Present:
        """The terms that occur in the title, with the end offsets of those occurrences."""
        present = self._title_present
        if present is None:
            sep = self.sep
            present = self._title_present = {}
            for tid, ends in self.present.items():
                if ends[0] < sep:
                    present[tid] = ends if ends[-1] < sep else [e for e in ends if e < sep]
        return present

    def title_view(self) -> _Item | None:
        """The item as if its text were empty (None when nothing occurs in the title and no
        regex could be true there)."""
        view = self._title_view
        if view is False:
            present = self.title_present()
            view = None
            if present or (self.matcher._regexes and self.title.strip()):
                view = _Item(self.matcher, self.ws, present, self.title, "", self.plain, title_only=True)
                view._sep = self.sep
                if self._folded is not None:
                    view._folded = [self._folded[0], None]
                if self._spans is not None:
                    view._spans = [self._spans[0], None]
            self._title_view = view
        return view  # type: ignore[return-value]

    # ---------------------------------------------------------------- positions

    def field_of(self, end: int) -> int:
        return 0 if end < self.sep else 1

    def occurrences(self, tids: Sequence[int], field: int | None = None) -> list[Occurrence]:
        """Occurrences of the terms ``tids`` (those present), optionally in one field only."""
        out: list[Occurrence] = []
        for tid in tids:
            if tid in self.present:
                if self._occ is None:
                    self._occ = {}
                occ = self._occ.get(tid)
                if occ is None:
                    occ = self._occ[tid] = self._locate(tid)
                if field is None:
                    out.extend(occ)
                elif field == 2:
                    last = self.lead_last
                    out.extend(o for o in occ if o[0] == 0 or o[2] <= last)
                else:
                    out.extend(o for o in occ if o[0] == field)
        return out

    def _locate(self, tid: int) -> list[Occurrence]:
        matcher = self.matcher
        key_length, span = matcher._key_lengths[tid], matcher._n_words[tid] - 1
        sep, count = self.sep, self.ws.count
        out = []
        for end in self.present[tid]:
            start = end - key_length + 1  # the space before the first word
            first = count(" ", 0, start)  # spaces before it == words before it
            out.append((0 if start < sep else 1, first, first + span))
        return out

    def word_index(self, start: int) -> tuple[int, int]:
        """(field, index of the word within its field) of the word starting at ``start + 1``,
        where ``start`` is the leading space of an occurrence in the word string."""
        sep = self.sep
        if start < sep:
            return 0, self.ws.count(" ", 0, start + 1) - 1
        return 1, self.ws.count(" ", sep + 1, start + 1) - 1

    # ---------------------------------------------------------------- regexes

    def folded(self, field: int) -> tuple[str, list[tuple[int, int]] | None]:
        """The folded text of the title (0) or the text (1)."""
        if self._folded is None:
            self._folded = [None, None]
        got = self._folded[field]
        if got is None:
            got = self._folded[field] = fold_text(self.title if field == 0 else self.text)
        return got

    def lead_chars(self) -> int:
        """Length of the text's part of the lead: up to the end of its ``LEAD_WORDS``-th word."""
        spans = self.spans(1)
        return len(self.text) if len(spans) <= LEAD_WORDS else spans[LEAD_WORDS - 1][2]

    def regex_true(self, rid: int, field: int | None) -> bool:
        """Does regex ``rid`` find a match in ``field`` (None: title or text; 2: the lead, i.e.
        the title or the text's first words)?"""
        if field is None:
            return self.regex_true(rid, 0) or (not self.title_only and self.regex_true(rid, 1))
        if field == 2:
            return self._search(rid, 0) or (not self.title_only and self._search(rid, 2))
        if field == 1 and self.title_only:
            return False
        return self._search(rid, field)

    def _search(self, rid: int, field: int) -> bool:
        key = (rid, field)
        if self._regex is None:
            self._regex = {}
        got = self._regex.get(key)
        if got is None:
            if field == 2:
                got = bool(self.regex_matches(rid, 2, first=True))
            else:
                got = self.matcher._regexes[rid].compiled.search(self.folded(field)[0]) is not None
            self._regex[key] = got
        return got

    def regex_matches(self, rid: int, field: int, first: bool = False) -> list[tuple[int, int]]:
        """(start, end) in the original field of every non-empty match of regex ``rid`` (only
        the first with ``first``). Field 2: the matches in the whole text that end within the
        text's part of the lead (the text is searched whole, so ``$`` or a lookahead never
        takes the end of the lead for the end of the text), offsets into the text."""
        if field != 0 and self.title_only:
            return []
        folded, spans = self.folded(min(field, 1))
        limit = self.lead_chars() if field == 2 else len(folded) + len(self.text) + 1
        out = []
        for m in self.matcher._regexes[rid].compiled.finditer(folded):
            a, b = m.span()
            if a == b:
                continue
            span = (a, b) if spans is None else (spans[a][0], spans[b - 1][1])
            if span[0] >= limit:
                break
            if span[1] <= limit:
                out.append(span)
                if first:
                    break
        return out

    # ---------------------------------------------------------------- contributing terms

    def contributing(self, clauses: Sequence[_Clause]) -> Used:
        """(leaf id, field or None) of the positive leaves that made the (true) clauses true."""
        used: Used = []
        present = self.present
        for clause in clauses:
            if clause.simple:
                for lid in clause.positive:
                    if lid in present and (lid, None) not in used:
                        used.append((lid, None))
            else:
                self._contributing(clause.node, used, None)
        return used

    def _contributing(self, node: Node, out: Used, field: int | None) -> None:
        matcher = self.matcher
        if isinstance(node, Term | Regex):
            lid = matcher._term_ids[node] if isinstance(node, Term) else ~matcher._regex_ids[node]
            if (lid, field) not in out:
                out.append((lid, field))
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
            ids = matcher._term_ids
            lefts = [t for t in _operand_ids(node.left, ids) if t in self.present]
            rights = [t for t in _operand_ids(node.right, ids) if t in self.present]
            pairs = [(lt, rt) for lt in lefts for rt in rights
                     if _close(self.occurrences((lt,), field), self.occurrences((rt,), field),
                               node.distance, node.ordered)]
            for tid in dict.fromkeys([lt for lt, _ in pairs] + [rt for _, rt in pairs]):
                if (tid, field) not in out:
                    out.append((tid, field))
        # a NOT contributes no terms

    def _true(self, node: Node, field: int | None) -> bool:
        """Exact truth of ``node`` for this item, within ``field`` if given."""
        matcher = self.matcher
        if field is None and not _positional(node):
            if self._present_terms is None:
                terms = matcher._terms
                self._present_terms = frozenset(terms[t] for t in self.present)
            return evaluate(node, self._present_terms)
        if isinstance(node, Term):
            tid = matcher._term_ids[node]
            if field is None:
                return tid in self.present
            return _in_field(self.present, self, tid, field)
        if isinstance(node, Regex):
            return self.regex_true(matcher._regex_ids[node], field)
        if isinstance(node, Not):
            return not self._true(node.child, field)
        if isinstance(node, Field):
            return self._true(node.child, FIELDS.index(node.name))
        if isinstance(node, Near):
            ids = matcher._term_ids
            return _near(self, _operand_ids(node.left, ids), _operand_ids(node.right, ids),
                         node.distance, node.ordered, field)
        if isinstance(node, And):
            return all(self._true(c, field) for c in node.children)
        return any(self._true(c, field) for c in node.children)

    # ---------------------------------------------------------------- surfaces and spans

    def surfaces(self, clauses: Sequence[_Clause]) -> tuple[str, ...]:
        """The terms of a hit: surfaces of what made the (true) clauses true."""
        return self.surfaces_of(self.contributing(clauses))

    def surfaces_of(self, used: Used) -> tuple[str, ...]:
        """Distinct surfaces of the occurrences of ``used``, in order of first occurrence."""
        if not used:
            return ()
        if len(used) == 1 and used[0][1] is None and used[0][0] >= 0:
            return tuple(surface for _, surface in self._firsts_of(used[0][0]))
        regexes = any(lid < 0 for lid, _ in used)
        firsts: list[tuple[int | tuple[int, int], str]] = []
        for lid, field in used:
            if lid < 0:
                firsts.extend(self._regex_firsts(~lid, field))
                continue
            found = self._firsts_of(lid) if field is None else self._firsts_of(lid, field)
            if regexes:  # order by (field, offset in the original) like the regex matches
                firsts.extend((self._original_start(start), surface) for start, surface in found)
            else:
                firsts.extend(found)
        firsts.sort()  # type: ignore[arg-type]
        return tuple(dict.fromkeys(surface for _, surface in firsts))

    def _original_start(self, start: int) -> tuple[int, int]:
        """(field, offset in the original field) of the occurrence whose leading space is at
        ``start`` in the word string."""
        field, first = self.word_index(start)
        return field, self.spans(field)[first][1]

    def _firsts_of(self, tid: int, field: int | None = None) -> list[tuple[int, str]]:
        """(start, surface) of the first occurrence of each distinct surface of term ``tid``
        (in ``field`` only, if given), in order of occurrence; ``start`` is the offset of
        the occurrence's leading space in the word string. Cached when ``field`` is None."""
        if self._firsts is None:
            self._firsts = {}
        if field is None:
            got = self._firsts.get(tid)
            if got is not None:
                return got
        matcher = self.matcher
        kind, key_length, n_words = matcher._kinds[tid], matcher._key_lengths[tid], matcher._n_words[tid]
        ends = self.present[tid]
        if field == 2:
            lead_end = self.lead_end
            ends = [e for e in ends if e <= lead_end]
        elif field is not None:
            sep = self.sep
            ends = [e for e in ends if (e < sep) == (field == 0)]
        if kind == _WORD and self.plain:  # in ASCII text a word's only surface is the word
            out = [(ends[0] - key_length + 1, matcher._terms[tid].words[0])] if ends else []
        else:
            ws = self.ws
            seen: dict[str, int] = {}
            for end in ends:
                start = end - key_length + 1
                if kind == _PREFIX and self.plain and n_words == 1:
                    surface = ws[start + 1:ws.find(" ", end)]
                else:
                    f, first = self.word_index(start)
                    a, b = self.word_bounds(f, first, first + n_words - 1)
                    source = self.title if f == 0 else self.text
                    surface = " ".join(fold_case(source[a:b]).split())
                seen.setdefault(surface, start)
            out = [(start, surface) for surface, start in seen.items()]
        if field is None:
            self._firsts[tid] = out
        return out

    def _regex_firsts(self, rid: int, field: int | None) -> list[tuple[tuple[int, int], str]]:
        out = []
        for f in _REGEX_FIELDS[field]:
            source = self.title if f == 0 else self.text
            for start, stop in self.regex_matches(rid, f):
                out.append(((min(f, 1), start), " ".join(fold_case(source[start:stop]).split())))
        return out

    def word_bounds(self, field: int, first: int, last: int) -> tuple[int, int]:
        """(start of word ``first``, end of word ``last``) of a field in its original text,
        as :meth:`spans` has them; in a plain item without tokenising the whole field."""
        spans = self._spans[field] if self._spans is not None else None
        if spans is None and self.plain:
            runs = self._runs[field] if self._runs is not None else False
            if runs is False:
                if self._runs is None:
                    self._runs = [False, False]
                runs = self._runs[field] = _plain_runs(self.title if field == 0 else self.text)
            if runs is not None:
                found = _RUN_RE.finditer(runs)
                head = next(itertools.islice(found, first, None))
                tail = head if last == first else next(itertools.islice(found, last - first - 1, None))
                return head.start(), tail.end()
        spans = self.spans(field)
        return spans[first][1], spans[last][2]

    def spans(self, field: int) -> list[tuple[str, int, int]]:
        """(word, start, end) of every word of a field, as the word string has them."""
        if self._spans is None:
            self._spans = [None, None]
        got = self._spans[field]
        if got is None:
            source = self.title if field == 0 else self.text
            # a plain item's non-ASCII characters are all mapped punctuation: word_spans of
            # the mapped text is the same, on its (much faster) ASCII path
            got = self._spans[field] = word_spans(_ascii_text(source) if self.plain else source)
        return got

    def spans_of(self, used: Used) -> tuple[tuple[str, int, int], ...]:
        """(field name, start, end) in the original title/text of every occurrence of
        ``used`` (within its field restriction), in order."""
        out: set[tuple[int, int, int]] = set()
        matcher = self.matcher
        for lid, field in used:
            if lid < 0:
                for f in _REGEX_FIELDS[field]:
                    out.update((min(f, 1), a, b) for a, b in self.regex_matches(~lid, f))
                continue
            key_length, n_words = matcher._key_lengths[lid], matcher._n_words[lid]
            for end in self.present.get(lid, ()):
                if field == 2 and end > self.lead_end:
                    continue
                f, first = self.word_index(end - key_length + 1)
                if field is not None and field != 2 and f != field:
                    continue
                spans = self.spans(f)
                out.add((f, spans[first][1], spans[first + n_words - 1][2]))
        return tuple((FIELDS[f], a, b) for f, a, b in sorted(out))
