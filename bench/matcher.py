"""Matcher speed: generated watchlists over generated items on one core, against a naive
per-watchlist regex evaluator run in the same process (which also checks the answers).

Usage (from the project root)::

    .venv/bin/python bench/matcher.py [--items N] [--watchlists N] [--baseline-items N]
                                      [--repeat N] [--seed N] [--corpus DIR] [--json] [--strict]

What one run does (defaults: 1,000 watchlists, 50,000 items, seed 1):

- Generates the watchlists with a seeded RNG: 3-8 terms each (words, "phrases", prefix*
  wildcards, @aliases), shaped as OR lists, AND of OR groups, AND NOT, NEAR/n and ONEAR/n,
  and title:/text:/lead: fields; some have signals, excludes, a min_score or a title_weight
  of their own, a few have signals only.
- Generates the items with the same RNG from the vocabulary of ``../shared/corpus`` (title
  and summary words, drawn by frequency; synthetic words when the corpus is missing): a title
  and a summary-sized text (some long texts, for ``lead:``), punctuation, capitals,
  possessives, hyphens, some typographic quotes; a fraction of the items get surfaces of
  watchlist terms mixed in (also NEAR pairs within their distance), so that a realistic
  fraction of the items fires something.
- (a) times ``Matcher.match_many`` (the bulk path, ``BULK`` items per call) over all items,
  one process, one core (``--repeat`` passes; the best pass is the figure, the median is
  shown too), and ``Matcher.match`` (one item per call) beside it; the two must give the
  same hits;
- (b) times the naive baseline over the first ``--baseline-items`` items: every watchlist
  evaluated on its own, its boolean structure walked naively, each term a compiled whole-word,
  case-insensitive Python regex searched in the title and in the text (NEAR from the word
  positions of the regex matches); reports its items/s and the matcher/baseline ratio;
- (c) times building the Matcher from the 1,000 specs (the query parse caches cleared
  before each build, so parsing counts): the median of ``--repeat`` builds;
- checks agreement: on the baseline items, the watchlists that fire and their scores must be
  the same for the Matcher and the naive evaluator (the generator only makes queries the
  evaluator implements exactly), and prints the rate and the first disagreements.

Targets (PASS/FAIL; ``--strict`` exits 1 when one is missed): Matcher >= 50,000 items/s on
one core, >= 20x the baseline, compile <= 1 s, agreement 100%. Speeds depend on the machine
and its load; the ratio is the portable figure. Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import bisect
import gc
import math
import random
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):  # run as a script from anywhere
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from _words import corpus_items, cumulative, emit, progress, synthetic_counts  # noqa: E402

from monitor import query as query_module  # noqa: E402
from monitor.matcher import Matcher  # noqa: E402
from monitor.model import Signal, WatchlistSpec  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"

TARGET_ITEMS_PER_S = 50_000
TARGET_RATIO = 20.0
TARGET_COMPILE_S = 1.0
#: Items per Matcher.match_many call (a poll brings up to a few hundred; `monitor match` uses 64).
BULK = 256

#: Words of the text that belong to ``lead:`` (monitor.query.LEAD_WORDS).
LEAD_WORDS = query_module.LEAD_WORDS
#: The most frequent words of the vocabulary make up the item text.
FILLER_WORDS = 4000
#: Share of watchlist terms drawn from the rarer filler words.
COMMON_TERMS = 0.04
#: Never used as watchlist terms (operators in other cases, field names).
RESERVED = frozenset({"and", "or", "not", "near", "onear", "title", "text", "lead"})


# --------------------------------------------------------------------------- vocabulary


@dataclass
class Vocabulary:
    filler: list[str]  # item words, most frequent first
    cum_weights: list[float]  # for random.choices over ``filler``
    terms: list[str]  # watchlist terms that items only have where they are mixed in
    common_terms: list[str]  # watchlist terms that item text also uses on its own, rarely
    source: str  # corpus path or "synthetic"


def load_vocabulary(corpus: Path, rng: random.Random) -> Vocabulary:
    """Word frequencies of the corpus titles and summaries; synthetic words without it."""
    counts: Counter[str] = Counter()
    word = re.compile(r"[A-Za-z]{2,}")
    for d in corpus_items(corpus):
        counts.update(w.lower() for w in word.findall(f"{d.get('title') or ''} {d.get('summary') or ''}"))
    if len(counts) >= 2000:
        source = str(corpus)
    else:  # no corpus: pseudo-words with a Zipf-like frequency
        source = "synthetic"
        counts = synthetic_counts(rng)
    ranked = [w for w, _ in counts.most_common() if w != "s"]
    filler = ranked[:FILLER_WORDS]
    cum = cumulative(filler, counts)

    def usable(words: list[str]) -> list[str]:
        return [w for w in words if len(w) >= 4 and w not in RESERVED]

    # watchlist terms: mostly words the filler never uses (names, topics: items have them
    # only where they are mixed in), some that it uses now and then
    return Vocabulary(filler, cum, usable(ranked[FILLER_WORDS:FILLER_WORDS + 12000]),
                      usable(ranked[FILLER_WORDS * 3 // 4:FILLER_WORDS]), source)


# --------------------------------------------------------------------------- watchlists


@dataclass(frozen=True)
class Leaf:
    """A term: one word, a phrase of words, the last one possibly a prefix (``*``)."""

    words: tuple[str, ...]
    prefix: bool = False
    full: str = ""  # for a prefix: a word it was cut from (what items spell)

    def query(self) -> str:
        body = " ".join(self.words) + ("*" if self.prefix else "")
        return f'"{body}"' if len(self.words) > 1 else body

    def entry(self) -> str:  # as an alias entry
        return " ".join(self.words) + ("*" if self.prefix else "")


# The abstract query both sides use: ("leaf", Leaf) | ("alias", name, (Leaf, ...)) |
# ("or", (node, ...)) | ("and", (node, ...)) | ("not", node) | ("field", name, node) |
# ("near", (atom, ...), (atom, ...), distance, ordered)   [atom: a leaf or an alias node]
Node = tuple


@dataclass
class Watchlist:
    name: str
    query: Node | None
    signals: list[tuple[Node, float]] = field(default_factory=list)
    exclude: list[Node] = field(default_factory=list)
    aliases: dict[str, list[str]] = field(default_factory=dict)
    min_score: float = 1.0
    title_weight: float = 2.0

    def spec(self) -> WatchlistSpec:
        return WatchlistSpec(
            name=self.name, query=render(self.query) if self.query is not None else None,
            aliases=self.aliases or None,
            signals=tuple(Signal(render(q), w) for q, w in self.signals),
            exclude=tuple(render(x) for x in self.exclude),
            min_score=self.min_score, title_weight=self.title_weight)


def render(node: Node) -> str:
    """The query text of an abstract node."""
    kind = node[0]
    if kind == "leaf":
        return node[1].query()
    if kind == "alias":
        return f"@{node[1]}"
    if kind in ("or", "and"):
        return "(" + f" {kind.upper()} ".join(render(c) for c in node[1]) + ")"
    if kind == "not":
        return f"NOT {render(node[1])}"
    if kind == "field":
        inner = render(node[2])
        return f"{node[1]}:{inner if inner.startswith('(') else f'({inner})'}"
    if kind == "near":
        def operand(atoms: Sequence[Node]) -> str:
            return render(atoms[0]) if len(atoms) == 1 else "(" + " OR ".join(render(a) for a in atoms) + ")"
        return f"({operand(node[1])} {'ONEAR' if node[4] else 'NEAR'}/{node[3]} {operand(node[2])})"
    raise ValueError(kind)


def atoms_of(node: Node) -> list[Node]:
    """The leaf and alias nodes under ``node`` that are under no NOT."""
    kind = node[0]
    if kind in ("leaf", "alias"):
        return [node]
    if kind in ("or", "and"):
        return [a for c in node[1] for a in atoms_of(c)]
    if kind == "field":
        return atoms_of(node[2])
    if kind == "near":
        return list(node[1]) + list(node[2])
    return []  # NOT


class WatchlistGenerator:
    def __init__(self, vocab: Vocabulary, rng: random.Random):
        self.vocab = vocab
        self.rng = rng
        # prefixes of the frequent item words: a wildcard cut to one of them would fire on
        # most items
        self.taken = {w[:k] for w in vocab.filler[:FILLER_WORDS * 3 // 4] for k in range(4, len(w) + 1)}

    def prefix_of(self, w: str) -> str | None:
        cut = w[:len(w) - self.rng.randint(1, 2)]
        return None if cut in self.taken else cut

    def word(self) -> str:
        rng = self.rng
        return rng.choice(self.vocab.common_terms if rng.random() < COMMON_TERMS else self.vocab.terms)

    def leaf(self) -> Leaf:
        r = self.rng.random()
        if r < 0.62:
            return Leaf((self.word(),))
        if r < 0.82:  # a phrase of two different words, sometimes ending in a prefix
            a = self.word()
            b = self.word()
            while b == a or b.startswith(a[:4]):
                b = self.word()
            if len(b) >= 7 and self.rng.random() < 0.2:
                return Leaf((a, b[:len(b) - self.rng.randint(1, 2)]), prefix=True, full=b)
            return Leaf((a, b))
        while True:
            w = self.word()
            cut = self.prefix_of(w) if len(w) >= 7 else None
            if cut is not None:
                return Leaf((cut,), prefix=True, full=w)

    def group(self, n: int) -> Node:
        leaves = [("leaf", self.leaf()) for _ in range(n)]
        return leaves[0] if n == 1 else ("or", tuple(leaves))

    def make(self, index: int) -> Watchlist:
        rng = self.rng
        n = rng.randint(3, 8)  # terms in the query (an alias counts its entries)
        w = Watchlist(f"w{index:04d}", None)
        shape = rng.random()
        if shape < 0.28:  # a OR b OR ...
            w.query = self.group(n)
        elif shape < 0.43:  # (a OR b) AND (c OR d ...)
            k = rng.randint(1, n - 2)
            w.query = ("and", (self.group(k), self.group(n - k)))
        elif shape < 0.56:  # (a OR b ...) AND NOT z
            w.query = ("and", (self.group(n - 1), ("not", ("leaf", self.leaf()))))
        elif shape < 0.71:  # (a OR b) NEAR/d (c OR d ...), ONEAR in a third of them
            k = rng.randint(1, min(3, n - 1))
            left = tuple(("leaf", self.leaf()) for _ in range(k))
            right = tuple(("leaf", self.leaf()) for _ in range(n - k))
            near: Node = ("near", left, right, rng.randint(1, 10), rng.random() < 0.33)
            w.query = ("field", "title", near) if rng.random() < 0.1 else near
        elif shape < 0.84:  # fields
            k = rng.randint(1, n - 1)
            name = rng.choice(("title", "text", "lead", "lead"))
            restricted: Node = ("field", name, self.group(k))
            w.query = ("and", (restricted, self.group(n - k))) if rng.random() < 0.6 \
                else ("or", (restricted, self.group(n - k)))
        else:  # @alias AND (c OR d) / @alias OR c OR d
            k = rng.randint(2, min(4, n - 1))
            name = f"a{index}"
            entries = [self.leaf() for _ in range(k)]
            w.aliases[name] = [e.entry() for e in entries]
            alias: Node = ("alias", name, tuple(entries))
            rest = self.group(n - k)
            if rng.random() < 0.5:
                w.query = ("and", (alias, rest))
            else:
                w.query = ("or", (alias, *(rest[1] if rest[0] == "or" else (rest,))))
        extra = rng.random()
        if extra < 0.18:  # signals, sometimes a min_score that needs them
            w.signals = [(self.group(rng.randint(1, 3)), rng.choice((0.5, 1.0, 1.5, 2.0)))
                         for _ in range(rng.randint(1, 3))]
            if rng.random() < 0.5:
                w.min_score = rng.choice((1.5, 2.0, 2.5, 3.0))
        elif extra < 0.26:  # an exclude
            w.exclude = [self.group(rng.randint(1, 2)) for _ in range(rng.randint(1, 2))]
        elif extra < 0.29:  # signals only
            w.query = None
            w.signals = [(self.group(rng.randint(1, 3)), rng.choice((1.0, 1.5, 2.0)))
                         for _ in range(rng.randint(2, 3))]
            w.min_score = rng.choice((1.0, 2.0, 3.0))
        if rng.random() < 0.1:
            w.title_weight = rng.choice((1.0, 1.5, 3.0))
        return w


# --------------------------------------------------------------------------- items


class ItemGenerator:
    def __init__(self, vocab: Vocabulary, watchlists: Sequence[Watchlist], rng: random.Random,
                 mix_rate: float = 0.25):
        self.vocab = vocab
        self.watchlists = watchlists
        self.rng = rng
        self.mix_rate = mix_rate

    def words(self, n: int) -> list[str]:
        return self.rng.choices(self.vocab.filler, cum_weights=self.vocab.cum_weights, k=n)

    def surface(self, atom: Node) -> str:
        """How an item might spell an atom (a leaf or one alias entry)."""
        rng = self.rng
        leaf: Leaf = rng.choice(atom[2]) if atom[0] == "alias" else atom[1]
        words = list(leaf.words)
        if leaf.prefix:
            words[-1] = leaf.full if rng.random() < 0.6 else words[-1] + rng.choice(("s", "ed", "ing", "er"))
        if rng.random() < 0.3:
            words = [x.capitalize() for x in words]
        return ("-" if len(words) > 1 and rng.random() < 0.2 else " ").join(words)

    def mix_in(self, title: list[str], text: list[str]) -> None:
        """Put surfaces of one or two watchlists' terms into the item."""
        rng = self.rng
        for _ in range(rng.choice((1, 1, 1, 2))):
            w = rng.choice(self.watchlists)
            nodes = ([w.query] if w.query is not None else []) + [q for q, _ in w.signals]
            node = rng.choice(nodes)
            if node[0] == "field":
                node = node[2]
            if node[0] == "near":
                a, b = self.surface(rng.choice(node[1])), self.surface(rng.choice(node[2]))
                gap = [self.word_gap(node[3])]
                pair = [a, *gap[0], b] if node[4] or rng.random() < 0.7 else [b, *gap[0], a]
                target = title if rng.random() < 0.25 else text
                at = rng.randint(0, len(target))
                target[at:at] = pair
                continue
            atoms = atoms_of(node)
            for atom in rng.sample(atoms, min(len(atoms), rng.choice((1, 1, 2, 3)))):
                target = title if rng.random() < 0.3 else text
                target.insert(rng.randint(0, len(target)), self.surface(atom))

    def word_gap(self, distance: int) -> list[str]:
        return self.words(self.rng.randint(0, distance + (2 if self.rng.random() < 0.2 else 0)))

    def spell(self, tokens: list[str], sentence: bool) -> str:
        """Tokens as prose: capitals, commas, sentence ends, possessives, hyphens, quotes."""
        rng = self.rng
        out: list[str] = []
        start = True
        for i, tok in enumerate(tokens):
            if start or rng.random() < 0.08:
                tok = tok[:1].upper() + tok[1:]
            r = rng.random()
            if r < 0.03 and " " not in tok:
                tok += "'s" if rng.random() < 0.85 else "\u2019s"
            elif r < 0.045 and i + 1 < len(tokens):
                tok += "-"  # glued to the next word below
            elif r < 0.05:
                tok = f"\u201c{tok}\u201d"
            start = False
            if sentence and i + 1 < len(tokens):
                r = rng.random()
                if r < 0.07:
                    tok += "."
                    start = True
                elif r < 0.14:
                    tok += ","
                elif r < 0.145:
                    tok += " \u2014"
            out.append(tok)
        text = " ".join(out).replace("- ", "-")
        return text + "." if sentence and text else text

    def item(self) -> tuple[str, str]:
        rng = self.rng
        title = self.words(rng.randint(5, 12))
        text = self.words(rng.randint(100, 160) if rng.random() < 0.1 else rng.randint(15, 60))
        if rng.random() < self.mix_rate:
            self.mix_in(title, text)
        return self.spell(title, False), self.spell(text, True)


# --------------------------------------------------------------------------- naive baseline

_POSSESSIVE = re.compile(r"(?<=\w)'[sS](?!\w)")
_WORD = re.compile(r"\w+")
_FIELDS = {"title": 0, "text": 1, "lead": 2}


def leaf_regexes(leaf: Leaf) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Whole-word, case-insensitive; the words of a phrase with any non-word characters
    between them; a prefix runs to the end of its word. The first finds an occurrence, the
    second every occurrence, overlapping ones too (group 1), for NEAR."""
    parts = [re.escape(w) for w in leaf.words]
    last = parts[-1] + (r"\w*" if leaf.prefix else "")
    body = r"\W+".join([*parts[:-1], last])
    return (re.compile(rf"\b(?:{body})\b", re.IGNORECASE),
            re.compile(rf"(?=\b({body})\b)", re.IGNORECASE))


class NaiveItem:
    """An item as the naive evaluator sees it: two fields of plain text (curly apostrophes
    straightened and possessive 's removed, so that the regexes work on whole words)."""

    def __init__(self, title: str, text: str):
        self.fields = (_POSSESSIVE.sub("", title.replace("\u2019", "'")),
                       _POSSESSIVE.sub("", text.replace("\u2019", "'")))
        self._starts: list[list[int] | None] = [None, None]
        self._lead_end: int | None = None

    def starts(self, f: int) -> list[int]:
        got = self._starts[f]
        if got is None:
            got = self._starts[f] = [m.start() for m in _WORD.finditer(self.fields[f])]
        return got

    def lead_end(self) -> int:
        """Offset in the text where its ``LEAD_WORDS``-th word ends."""
        if self._lead_end is None:
            words = list(_WORD.finditer(self.fields[1]))
            self._lead_end = words[LEAD_WORDS - 1].end() if len(words) >= LEAD_WORDS else len(self.fields[1])
        return self._lead_end


class NaiveWatchlist:
    """One watchlist for the naive evaluator, with its own compiled regexes."""

    def __init__(self, w: Watchlist):
        self.name = w.name
        self.w = w
        self.regexes: dict[Leaf, tuple[re.Pattern[str], re.Pattern[str]]] = {}
        for node in ([w.query] if w.query is not None else []) + [q for q, _ in w.signals] + w.exclude:
            self._compile(node)

    def _compile(self, node: Node) -> None:
        kind = node[0]
        if kind == "leaf":
            self.regexes.setdefault(node[1], leaf_regexes(node[1]))
        elif kind == "alias":
            for leaf in node[2]:
                self.regexes.setdefault(leaf, leaf_regexes(leaf))
        elif kind in ("or", "and"):
            for c in node[1]:
                self._compile(c)
        elif kind == "not":
            self._compile(node[1])
        elif kind == "field":
            self._compile(node[2])
        elif kind == "near":
            for a in (*node[1], *node[2]):
                self._compile(a)

    def score(self, item: NaiveItem, title_only: Callable[[], NaiveItem]) -> float | None:
        """The score when the watchlist fires on the item, else None (WatchlistSpec rules)."""
        w = self.w
        score = 0.0
        fired = False
        clauses = ([(w.query, 1.0)] if w.query is not None else []) + w.signals
        for n, (clause, weight) in enumerate(clauses):
            if not self.true(clause, item, None):
                if n == 0 and w.query is not None:
                    return None
                continue
            fired = True
            score += weight * w.title_weight if self.true(clause, title_only(), None) else weight
        if not fired or score < w.min_score:
            return None
        if any(self.true(x, item, None) for x in w.exclude):
            return None
        return score

    def true(self, node: Node, item: NaiveItem, f: int | None) -> bool:
        kind = node[0]
        if kind == "leaf":
            return self.occurs(self.regexes[node[1]][0], item, f)
        if kind == "alias":
            return any(self.occurs(self.regexes[leaf][0], item, f) for leaf in node[2])
        if kind == "or":
            return any(self.true(c, item, f) for c in node[1])
        if kind == "and":
            return all(self.true(c, item, f) for c in node[1])
        if kind == "not":
            return not self.true(node[1], item, f)
        if kind == "field":
            return self.true(node[2], item, _FIELDS[node[1]])
        if kind == "near":
            left, right = self.positions(node[1], item, f), self.positions(node[2], item, f)
            distance, ordered = node[3], node[4]
            for lf, lfirst, llast in left:
                for rf, rfirst, rlast in right:
                    if lf != rf:
                        continue
                    if rfirst > llast and rfirst - llast - 1 <= distance:
                        return True
                    if not ordered and lfirst > rlast and lfirst - rlast - 1 <= distance:
                        return True
            return False
        raise ValueError(kind)

    @staticmethod
    def occurs(regex: re.Pattern[str], item: NaiveItem, f: int | None) -> bool:
        if f is None:
            return regex.search(item.fields[0]) is not None or regex.search(item.fields[1]) is not None
        if f == 2:  # lead: the title, or an occurrence ending within the text's first words
            if regex.search(item.fields[0]) is not None:
                return True
            m = regex.search(item.fields[1])
            return m is not None and m.end() <= item.lead_end()
        return regex.search(item.fields[f]) is not None

    def positions(self, atoms: Sequence[Node], item: NaiveItem, f: int | None) -> list[tuple[int, int, int]]:
        """(field, first word, last word) of every occurrence of the atoms (in field ``f``)."""
        out = []
        leaves = [leaf for a in atoms for leaf in (a[2] if a[0] == "alias" else (a[1],))]
        for leaf in leaves:
            regex = self.regexes[leaf][1]
            for fi in ((0, 1) if f in (None, 2) else (f,)):
                starts = item.starts(fi)
                for m in regex.finditer(item.fields[fi]):
                    if f == 2 and fi == 1 and m.end(1) > item.lead_end():
                        continue
                    first = bisect.bisect_left(starts, m.start(1))
                    out.append((fi, first, first + len(leaf.words) - 1))
        return out


def naive_match(naive: Sequence[NaiveWatchlist], title: str, text: str) -> dict[str, float]:
    item = NaiveItem(title, text)
    alone: list[NaiveItem] = []

    def title_only() -> NaiveItem:
        if not alone:
            alone.append(NaiveItem(title, ""))
        return alone[0]

    out = {}
    for w in naive:
        s = w.score(item, title_only)
        if s is not None:
            out[w.name] = s
    return out


# --------------------------------------------------------------------------- the run


def clear_parse_caches() -> None:
    """Forget parsed queries, so a Matcher build parses them (as a fresh process does)."""
    for name in ("_parse_cached", "_expand_cached"):
        cached = getattr(query_module, name, None)
        if cached is not None and hasattr(cached, "cache_clear"):
            cached.cache_clear()


def run(n_items: int = 50_000, n_watchlists: int = 1000, baseline_items: int = 2000, repeat: int = 3,
        seed: int = 1, corpus: Path = DEFAULT_CORPUS) -> dict:
    rng = random.Random(seed)
    t0 = time.perf_counter()
    vocab = load_vocabulary(corpus, rng)
    gen = WatchlistGenerator(vocab, rng)
    watchlists = [gen.make(i) for i in range(n_watchlists)]
    specs = [w.spec() for w in watchlists]
    progress(f"generating {n_items:,} items from {vocab.source} ...")
    items_gen = ItemGenerator(vocab, watchlists, rng)
    items = [items_gen.item() for _ in range(n_items)]
    progress(f"  generated in {time.perf_counter() - t0:.1f} s")

    # (c) compile: parse + build, cold parse caches; the first build also warms the parser up
    progress(f"compiling {n_watchlists:,} watchlists ({repeat} builds) ...")
    Matcher(specs)
    builds = []
    for _ in range(max(1, repeat)):
        clear_parse_caches()
        gc.collect()
        t = time.perf_counter()
        matcher = Matcher(specs)
        builds.append(time.perf_counter() - t)
    compile_s = statistics.median(builds)

    # (a) the matcher over all items, one core
    gc.collect()
    gc.freeze()  # the items and the matcher are long-lived; collections skip them
    # the bulk path (Matcher.match_many, BULK items per call: what `monitor match` and a poll
    # use) is the figure; one item per call (Matcher.match) is shown beside it
    match, match_many = matcher.match, matcher.match_many
    passes: list[float] = []
    single: list[float] = []
    results: list[list] = []
    for k in range(max(1, repeat)):
        progress(f"Matcher.match_many over {n_items:,} items, pass {k + 1}/{repeat} ...")
        t = time.perf_counter()
        if k == 0:
            results = [hit for i in range(0, n_items, BULK) for hit in match_many(items[i:i + BULK])]
        else:
            for i in range(0, n_items, BULK):
                match_many(items[i:i + BULK])
        passes.append(time.perf_counter() - t)
        progress(f"Matcher.match over {n_items:,} items, pass {k + 1}/{repeat} ...")
        t = time.perf_counter()
        if k == 0:
            one_by_one = [match(title, text) for title, text in items]
            if one_by_one != results:  # the two paths must agree exactly
                raise SystemExit("Matcher.match and Matcher.match_many disagree")
            del one_by_one
        else:
            for title, text in items:
                match(title, text)
        single.append(time.perf_counter() - t)
    best = min(passes)
    hits = sum(len(r) for r in results)
    fired_items = sum(1 for r in results if r)

    # (b) the naive baseline, and agreement on the same items
    nb = min(baseline_items, n_items)
    progress(f"naive baseline over {nb:,} items ...")
    naive = [NaiveWatchlist(w) for w in watchlists]
    t = time.perf_counter()
    expected = [naive_match(naive, title, text) for title, text in items[:nb]]
    naive_s = time.perf_counter() - t
    gc.unfreeze()

    agree = 0
    examples = []
    for i, want in enumerate(expected):
        got = {h.name: h.score for h in results[i]}
        if got == want:
            agree += 1
        elif len(examples) < 5:
            title, text = items[i]
            examples.append({"item": i, "title": title, "text": text[:300], "matcher": got, "naive": want,
                             "queries": {n: specs[int(n[1:])].query for n in set(got) ^ set(want)}})

    matcher_rate = n_items / best
    naive_rate = nb / naive_s if naive_s > 0 else math.inf
    ratio = matcher_rate / naive_rate if naive_rate else math.inf
    agreement = agree / nb if nb else 1.0
    targets = [
        {"name": "matcher items/s (one core)", "value": round(matcher_rate), "target": f">= {TARGET_ITEMS_PER_S:,}",
         "pass": matcher_rate >= TARGET_ITEMS_PER_S},
        {"name": "matcher / naive baseline", "value": round(ratio, 1), "target": f">= {TARGET_RATIO:g}x",
         "pass": ratio >= TARGET_RATIO},
        {"name": "compile seconds", "value": round(compile_s, 3), "target": f"<= {TARGET_COMPILE_S:g}",
         "pass": compile_s <= TARGET_COMPILE_S},
        {"name": "agreement with naive", "value": round(agreement, 4), "target": "= 1",
         "pass": agree == nb},
    ]
    return {
        "seed": seed,
        "corpus": vocab.source,
        "watchlists": n_watchlists,
        "terms": matcher.term_count,
        "items": n_items,
        "item_chars_mean": round(sum(len(a) + len(b) for a, b in items) / max(1, n_items), 1),
        "items_firing_fraction": round(fired_items / max(1, n_items), 4),
        "hits_per_item": round(hits / max(1, n_items), 3),
        "matcher": {"items_per_s": round(matcher_rate), "items_per_s_median": round(n_items / statistics.median(passes)),
                    "pass_seconds": [round(p, 4) for p in passes], "bulk": BULK},
        "match_one": {"items_per_s": round(n_items / min(single)),
                      "items_per_s_median": round(n_items / statistics.median(single)),
                      "pass_seconds": [round(p, 4) for p in single]},
        "baseline": {"items": nb, "seconds": round(naive_s, 3), "items_per_s": round(naive_rate, 1)},
        "ratio": round(ratio, 1),
        "compile": {"median_seconds": round(compile_s, 4), "build_seconds": [round(b, 4) for b in builds]},
        "agreement": {"items": nb, "agree": agree, "rate": round(agreement, 4), "examples": examples},
        "targets": targets,
    }


def print_report(r: dict, out=sys.stdout) -> None:
    m, b, c, a = r["matcher"], r["baseline"], r["compile"], r["agreement"]
    print(f"matcher bench: {r['watchlists']:,} watchlists ({r['terms']:,} distinct terms), {r['items']:,} items "
          f"(mean {r['item_chars_mean']:.0f} chars; {100 * r['items_firing_fraction']:.1f}% fire a watchlist, "
          f"{r['hits_per_item']:.2f} hits/item); seed {r['seed']}; vocabulary {r['corpus']}", file=out)
    status = {t["name"]: ("PASS" if t["pass"] else "FAIL", t["target"]) for t in r["targets"]}
    one = r["match_one"]
    rows = [
        ("Matcher.match_many, one core", f"{m['items_per_s']:>10,} items/s",
         f"{m['bulk']} per call; best of {len(m['pass_seconds'])} passes; median {m['items_per_s_median']:,}",
         status["matcher items/s (one core)"]),
        ("Matcher.match, one core", f"{one['items_per_s']:>10,} items/s",
         f"one per call; best of {len(one['pass_seconds'])} passes; median {one['items_per_s_median']:,}", None),
        ("naive regex baseline", f"{b['items_per_s']:>10,.1f} items/s", f"{b['items']:,} items, {b['seconds']:.1f} s",
         None),
        ("matcher / baseline", f"{r['ratio']:>10,.1f}x", "", status["matcher / naive baseline"]),
        (f"compile {r['watchlists']:,} watchlists", f"{c['median_seconds']:>10.3f} s",
         f"median of {len(c['build_seconds'])} builds, parsing included", status["compile seconds"]),
        ("agreement with naive", f"{100 * a['rate']:>10.2f} %", f"{a['agree']:,}/{a['items']:,} items",
         status["agreement with naive"]),
    ]
    for label, value, note, st in rows:
        tail = f"  target {st[1]:<10} {st[0]}" if st else ""
        print(f"  {label:<30} {value:<18} {f'({note})' if note else '':<56}{tail}", file=out)
    for ex in a["examples"]:
        print(f"  disagreement on item {ex['item']}: matcher {ex['matcher']} naive {ex['naive']}\n"
              f"    title: {ex['title']!r}\n    queries: {ex['queries']}", file=out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=50_000, help="items to match (%(default)s)")
    ap.add_argument("--watchlists", type=int, default=1000, help="watchlists to generate (%(default)s)")
    ap.add_argument("--baseline-items", type=int, default=2000,
                    help="items for the naive baseline and the agreement check (%(default)s)")
    ap.add_argument("--repeat", type=int, default=3, help="matcher passes and compile builds (%(default)s)")
    ap.add_argument("--seed", type=int, default=1, help="RNG seed (%(default)s)")
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="corpus directory (%(default)s)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)
    if args.items < 1 or args.watchlists < 1 or args.baseline_items < 1 or args.repeat < 1:
        ap.error("--items, --watchlists, --baseline-items and --repeat must be at least 1")
    report = run(args.items, args.watchlists, args.baseline_items, args.repeat, args.seed, args.corpus)
    return emit(report, args.json, args.strict, print_report)


if __name__ == "__main__":
    sys.exit(main())
