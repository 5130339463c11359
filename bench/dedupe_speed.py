"""Dedupe speed: the cost of storing an item — its fingerprint, the story lookup and the
database writes of ``Store.commit_poll`` — on SQLite, with 10k, 100k and 1M items stored in
the story window, against the smallest size measured in the same run.

Usage (from the project root)::

    .venv/bin/python bench/dedupe_speed.py [--sizes 10000,100000,1000000] [--measure N]
                                           [--reposts F] [--poll N] [--window DAYS] [--seed N]
                                           [--db PATH] [--keep] [--corpus DIR]
                                           [--collisions corpus|none|RATE] [--repeats N]
                                           [--json] [--strict]

What one run does (defaults: sizes 10,000, 100,000 and 1,000,000, 5,000 measured items per
size in polls of 50, 30% of them reposts, a 7-day window, seed 1, each size measured 3 times):

- Creates a SQLite database in a temporary directory (``--db PATH`` names a new file instead,
  which is kept; ``--keep`` keeps the temporary one), applies the migrations
  (``Store.upgrade``) and adds 20 sources (``sync_sources``).
- Generates item texts with a seeded RNG from the vocabulary of ``../shared/corpus`` (its
  titles and texts, words drawn by frequency; synthetic words without it): a title, and a
  text whose length in words is drawn from the corpus's texts (so a few are headline-only
  pages), in sentences and paragraphs; the summary is the first sentence.
- Grows the database to each size in turn, ascending (step 1), and keeps a copy of it at
  each size and the generator's state then; then measures each size from its copy and that
  state (steps 2-4), the sizes in turn, ``--repeats`` times, each run starting at another
  size (100k, 1M, 10k; then 1M, 10k, 100k; then 10k, 100k, 1M): every size and every run
  stores the same new stories (the reposts are of each size's own stored items), and a slow
  spell of the machine, or a place in the order, falls on every size alike instead of on one.
  A size's row is its median run (by ms/item; of two, the faster), its memory figure the
  largest of its runs; each run's ms/item and its ratio to the smallest size's in the same run
  are listed too. The copies take the database's size again on disk (2.6 GB at 1M) and are
  deleted at the end.
  At each size:

  1. **Fill**: grows the database to that many stored items with direct inserts (sqlite3
     ``executemany`` on its own connection, ``journal_mode=OFF``, ``synchronous=OFF`` and a
     1 GB page cache while filling; WAL is restored and that connection closed before
     measuring) of the rows ``commit_poll`` writes: a story, an item (a text of realistic
     length), a fingerprint row and its band rows. All fill items have their ``at`` inside
     the story window (the last 0.9 windows), so every band lookup ranges over all of them.
     Most fill items are *synthetic*: a random MinHash signature (numpy; its band rows hold
     its sketch, ``dedupe.sketches``) and random band keys — a signature's band keys are
     hashes, uniform 64-bit values, so they are drawn directly instead of hashing each
     random signature with ``dedupe.band_keys`` — unique lead and title keys, and a size,
     band count and content-word blob length (briefs) taken from a real fingerprint of a
     generated text. Some of their band keys are
     *colliding* ones (``--collisions corpus``, the default): unrelated news shares band keys
     now and then (same-topic briefs, an agency's stock phrases), and every stored item that
     shares one with a new item is a candidate the store reads and compares. How often is
     measured on the corpus (``collision_rates``: pairs of ``items.jsonl`` sharing a band key,
     not in one natural duplicate group and not similar enough to be merged, per pair, for
     briefs and for longer texts), and that many fill items per new item (rate x stored items
     of its kind) copy one of their keys from the new stories measured later (their texts and
     fingerprints are made up front). ``--collisions none``: all random, no false candidates.
     2% of them (at least 1,000 per fill) are *real*: generated texts
     fingerprinted with ``dedupe.fingerprint``, dated within the last 36 hours, a quarter of
     them reposts of earlier real ones in the same story (stories of several items). The
     band rows of each chunk are inserted in key order (the primary key is the lookup index;
     sorted inserts touch each page once per chunk).
  2. **Measure**: stores ``--measure`` new items through the real path, as the pipeline
     does: ``dedupe.fingerprint(title, text)`` then ``Store.commit_poll`` (``now`` fixed
     for the run, ``StoryPolicy(window)``, one channel), ``--poll`` items per poll from one
     source. ``--reposts`` of them are reposts of stored real items (the corpus's repost
     edits: " | Site" suffix, "UPDATE:" prefix, an agency tag, outlet dateline, credit line,
     page chrome, the lead doubled, the text cut short with "…"), the rest new stories; 5%
     matched a watchlist (an alert and an outbox row when they open a story). The figure is
     wall time / items, fingerprinting included. Interleaved with those polls, as many other
     new items go through ``commit_poll`` with an *empty* fingerprint (nothing to look up,
     no band rows): the **plain** baseline — what storing an item costs at that size without
     story merging. One poll of each kind runs first as a warm-up (not timed). The size
     holds while measuring: the measured, plain and warm-up items may add at most
     ``MAX_GROWTH`` (20%) of the stored items, so where they would add more (at 10k, 10,000
     items would double it) the items are measured in rounds (``measure_rounds``: at 10k 6
     rounds of ~850; at 100k and 1M one), the database file put back as it was
     before each round but the first, with a warm-up before each (``rounds`` and
     ``stored_most`` in the JSON output).
  3. Checks that the lookups worked: each repost must have joined its original's story, and
     a new story should join none.
  4. **Memory**: the growth of the process's peak RSS during the measured polls (all rounds,
     and the restores and warm-ups between them) over its RSS when they start (Linux: the
     peak is reset through ``/proc/self/clear_refs``; elsewhere ``ru_maxrss``, which cannot
     be reset, is used and the figure is only an upper bound).
     Before they start, the store's writing connection reads the tables until its SQLite page
     cache is full (``WRITER_CACHE_KB``) or holds the whole database (``fill_writer_cache``),
     as in a daemon that has run a while: the figure is what the polls add beyond that bound.

  Steps 2-4 run in a new Python process of their own (``measure_apart``; the fill runs in the
  first one), which opens the database anew, as a daemon started on a database of that size does:
  how much the same allocations add to a process's RSS depends on what its heap went through
  before (the fill's 1 GB cache and rows, freed), so in the filling process the memory figure
  grew with the fill, not with what the polls hold.

Targets (PASS/FAIL; ``--strict`` exits 1 when one is missed): at every size <= 1 ms per item
(fingerprint + commit); cost(size) / cost(smallest size) <= 1.5 ("flat"); peak RSS growth of
the measured phase <= 1.5 x that at the smallest size + 32 MB (memory does not grow with the
stored items: only caches bounded by configuration may); at least 95% of the reposts join
their original's story (a broken lookup would otherwise look fast). Printed beside them, not a
target: the plain baseline's own ratio (``plain r.``), how much storing an item grows with the
database without any story merging (its guid and link indexes outgrow the cache too). Speeds
depend on the machine and its load (this VM varies up to 1.5x); the ratios are the portable
figures. The WAL is copied into the database file by the store's checkpointer thread, as in
the daemon (at most every ``CHECKPOINT_EVERY_S``, concurrently with the polls: the figure is
wall time, so its work shows only as what it takes from them, disk and CPU); 5,000 items
(100 polls of each kind) average over enough of its runs that one more or less does not move
the figure. Progress goes to stderr. Filling 1M items takes a few minutes; ``--sizes`` takes
larger ones too (4M: a 10.6 GB database, about ten minutes in all).
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import hashlib
import itertools
import json
import os
import pickle
import random
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):  # run as a script from anywhere
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from _words import corpus_items, cumulative, emit, progress, synthetic_counts  # noqa: E402

from monitor import dedupe  # noqa: E402
from monitor.dedupe import Fingerprint  # noqa: E402
from monitor.model import FetchResult, Item, WatchlistHit, join_text  # noqa: E402
from monitor.store import NewItem, Store, StoryPolicy, UTCDateTime, _hour  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)

TARGET_MS_PER_ITEM = 1.0
TARGET_FLAT_RATIO = 1.5
MEMORY_RATIO = 1.5
MEMORY_SLACK_MB = 32.0
TARGET_REPOSTS_JOINED = 0.95
#: Times each size is measured (``--repeats``), the sizes in turn; the figures are the median run's.
DEFAULT_REPEATS = 3

SOURCES = 20
#: Share of the measured items that matched a watchlist.
HIT_SHARE = 0.05
#: Share of the fill items with real fingerprints (at least REAL_MIN per fill); a quarter
#: of those are reposts of earlier real ones.
REAL_SHARE = 0.02
REAL_MIN = 1000
REAL_COPY_SHARE = 0.25
#: Real fill items are dated within this many hours before now (reposts come within hours).
REAL_HOURS = 36
#: Measured items are dated within this many hours before now.
MEASURED_HOURS = 3
#: Generated texts the synthetic fill items borrow (title, summary, content, fingerprint size).
TEXT_POOL = 2048
#: Band-key collisions per pair of unrelated items when the corpus is missing (briefs, texts):
#: what ``collision_rates`` measured on ../shared/corpus on 2026-11-25 (12 word bands of 4).
DEFAULT_COLLISIONS = {"brief": 4.0e-5, "text": 8.6e-5}
#: Real items remembered as originals for the measured reposts.
RESERVOIR = 5000
FILL_CHUNK = 25_000
FILL_CACHE_KB = 1_000_000
MAX_TEXT_WORDS = 3000
OUTLETS = ("Korea Herald Wire", "Defense Daily Digest", "Asia Times Online", "Global Security Monitor",
           "The Pacific Ledger", "Newswire Today", "Strategic Review", "World Report")
DATELINES = ("SEOUL (KHW) —", "TOKYO (AP) --", "WASHINGTON, Oct. 5 (Reuters) -", "BEIJING -",
             "Pyongyang, August 2 (KCNA) --", "MOSCOW (Sputnik) —")
EMPTY = Fingerprint(b"", 0, None, "", (), None)
HIT = (WatchlistHit("missile-tests", 2.0, ("missile",)),)


# --------------------------------------------------------------------------- texts


@dataclass
class Vocabulary:
    words: list[str]  # most frequent first
    cum_weights: list[float]
    lengths: list[int]  # words per text in the corpus (the length distribution)
    source: str  # corpus path or "synthetic"


_TOKEN = re.compile(r"[A-Za-z][A-Za-z'’-]*[A-Za-z]|[A-Za-z]|\d+")


def load_vocabulary(corpus: Path, rng: random.Random, top: int = 20_000) -> Vocabulary:
    """Word frequencies and text lengths of the corpus titles and texts; synthetic without it."""
    counts: Counter[str] = Counter()
    lengths: list[int] = []
    for d in corpus_items(corpus):
        text_words = _TOKEN.findall(d.get("text") or "")
        lengths.append(len(text_words))
        counts.update(text_words)
        counts.update(_TOKEN.findall(d.get("title") or ""))
    if len(counts) >= 2000 and lengths:
        source = str(corpus)
    else:  # no corpus: pseudo-words with a Zipf-like frequency, log-normal text lengths
        source = "synthetic"
        counts = synthetic_counts(rng)
        lengths = [0] * 2 + [int(rng.lognormvariate(3.7, 1.0)) for _ in range(98)]
    ranked = [w for w, _ in counts.most_common(top)]
    cum = cumulative(ranked, counts)
    return Vocabulary(ranked, cum, lengths, source)


def _kind(fp: Fingerprint) -> str | None:
    """Which band keys a fingerprint has: a brief's word bands, a text's shingle bands, or none."""
    return None if not fp.bands else "brief" if fp.words else "text"


def collision_rates(corpus: Path) -> dict | None:
    """How often two unrelated corpus items share a band key: for briefs (word bands) and for
    texts (shingle bands), the pairs of ``items.jsonl`` that share one, are not in one natural
    duplicate group (``dup_groups.jsonl``) and are not similar enough to be merged
    (``dedupe.similarity``, as if published together), per pair of items of that kind.
    None when the corpus is missing."""
    fps: dict[str, Fingerprint] = {}
    for d in corpus_items(corpus):
        fp = dedupe.fingerprint(d.get("title") or "", join_text(d.get("summary") or "", d.get("text") or ""))
        if d.get("id") and _kind(fp):
            fps[d["id"]] = fp
    if len(fps) < 100:
        return None
    group_of: dict[str, int] = {}
    groups = corpus / "dup_groups.jsonl"
    if groups.is_file():
        with groups.open(encoding="utf-8") as f:
            for k, line in enumerate(f):
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    for i in json.loads(line)["ids"]:
                        group_of[i] = k
    by_key: dict[int, list[str]] = {}
    for i, fp in fps.items():
        for key in set(fp.bands):
            by_key.setdefault(key, []).append(i)
    pairs = {(a, b) for ids in by_key.values() if len(ids) > 1 for a, b in itertools.combinations(sorted(ids), 2)}
    kinds = Counter(_kind(fp) for fp in fps.values())
    false = Counter(_kind(fps[a]) for a, b in pairs
                    if (group_of.get(a, -1) != group_of.get(b, -2)) and dedupe.similarity(fps[a], fps[b]) <= 0)
    rates = {kind: false[kind] / (n * (n - 1) / 2) if n > 1 else 0.0 for kind, n in kinds.items()}
    return {"brief": rates.get("brief", 0.0), "text": rates.get("text", 0.0), "items": dict(kinds),
            "false_pairs": dict(false)}


def collision_plan(how: str, corpus: Path) -> dict:
    """The band-key collision rates the fill reproduces: ``how`` is "corpus" (measured by
    ``collision_rates``; ``DEFAULT_COLLISIONS`` when the corpus is missing), "none", or a
    number (per pair, both kinds)."""
    if how == "none":
        return {"source": "none", "rates": None}
    if how != "corpus":
        rate = float(how)
        return {"source": "given", "rates": {"brief": rate, "text": rate}}
    measured = collision_rates(corpus)
    if measured is None:
        return {"source": "default (no corpus)", "rates": dict(DEFAULT_COLLISIONS)}
    return {"source": str(corpus), "rates": {"brief": measured["brief"], "text": measured["text"]},
            "items": measured["items"], "false_pairs": measured["false_pairs"]}


class TextGenerator:
    """Seeded news-like items: (title, summary, content)."""

    def __init__(self, vocab: Vocabulary, rng: random.Random):
        self.vocab = vocab
        self.rng = rng

    def words(self, n: int) -> list[str]:
        return self.rng.choices(self.vocab.words, cum_weights=self.vocab.cum_weights, k=n)

    def title(self) -> str:
        return " ".join(w[:1].upper() + w[1:] for w in self.words(self.rng.randint(5, 11)))

    def sentence(self, n: int) -> str:
        words = self.words(n)
        if n > 8 and self.rng.random() < 0.5:
            k = self.rng.randrange(3, n - 3)
            words[k] += ","
        s = " ".join(words)
        return s[:1].upper() + s[1:] + "."

    def text(self) -> str:
        """Paragraphs of sentences; the length in words drawn from the corpus texts."""
        rng = self.rng
        target = min(MAX_TEXT_WORDS, rng.choice(self.vocab.lengths))
        paragraphs: list[str] = []
        done = 0
        while done < target:
            sentences = []
            for _ in range(rng.randint(1, 3)):
                n = min(max(1, target - done), rng.randint(8, 26))
                sentences.append(self.sentence(n))
                done += n
                if done >= target:
                    break
            paragraphs.append(" ".join(sentences))
        return "\n".join(paragraphs)

    def item(self) -> tuple[str, str, str]:
        content = self.text()
        first = content.split("\n", 1)[0]
        summary = first.split(". ", 1)[0] + "." if ". " in first else first
        return self.title(), summary, content

    def repost(self, title: str, content: str) -> tuple[str, str, str]:
        """Another outlet's copy: 1-3 of the corpus's repost edits (see reposts.jsonl)."""
        rng = self.rng
        outlet = rng.choice(OUTLETS)
        edits = rng.sample(("title", "dateline", "credit", "boilerplate", "lead", "cut"), rng.randint(1, 3))
        if content.strip() and "title" not in edits and rng.random() < 0.5:
            edits.append("title")
        if not content.strip():
            edits = ["title"]  # a headline-only page: only its headline can change
        paragraphs = content.split("\n") if content else []
        if "title" in edits:
            kind = rng.randrange(3)
            title = (f"{title} | {outlet}" if kind == 0 else f"UPDATE: {title}" if kind == 1 else f"{title} (AP)")
        if "cut" in edits and paragraphs:
            words = content.split(" ")
            keep = max(12, int(len(words) * rng.uniform(0.7, 0.95)))
            if keep < len(words):
                paragraphs = " ".join(words[:keep]).split("\n")
                paragraphs[-1] += " …"
        if "lead" in edits and paragraphs:
            paragraphs.insert(0, paragraphs[0])
        if "dateline" in edits and paragraphs:
            paragraphs[0] = f"{rng.choice(DATELINES)} {paragraphs[0]}"
        if "boilerplate" in edits and paragraphs:
            paragraphs = ["No Script", "Please Wait...", title, "access_time 2 hours ago", *paragraphs,
                          "Share this"]
        if "credit" in edits and paragraphs:
            paragraphs.append(f"This story first appeared on {outlet}.")
        content = "\n".join(paragraphs)
        first = next((p for p in paragraphs if len(p) > 60), paragraphs[0] if paragraphs else "")
        return title, first, content


# --------------------------------------------------------------------------- memory


def _status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float:
    kb = _status_kb("VmRSS")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS (Linux >= 4.0); False when it cannot be."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return _status_kb("VmHWM") is not None
    except OSError:
        return False


def release_heap() -> None:
    """Return freed heap memory to the system (glibc ``malloc_trim``; a no-op elsewhere)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def peak_rss_mb() -> float:
    kb = _status_kb("VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


# --------------------------------------------------------------------------- the database


@dataclass
class Original:
    """A stored real item that measured reposts copy."""

    title: str
    content: str
    story_id: int


@dataclass
class Bench:
    """The database being grown and measured, and what the generator remembers."""

    path: Path
    store: Store
    gen: TextGenerator
    rng: random.Random
    nprng: np.random.Generator
    now: datetime
    window: timedelta
    source_ids: list[int]
    pool: list[tuple[str, str, str, Fingerprint]] = field(default_factory=list)
    reservoir: list[Original] = field(default_factory=list)
    seen_real: int = 0
    serial: int = 0
    #: The new stories the measured polls will bring, made up front (title, summary, content,
    #: fingerprint), taken in order by ``make_batches``; fill items copy band keys from them.
    future: list[tuple[str, str, str, Fingerprint]] = field(default_factory=list)
    future_next: int = 0
    #: Per kind ("brief", "text"): the future stories' band keys (one row each) and the chance
    #: that a fill item's band key is copied from one of them (see ``plan_collisions``).
    collide: dict[str, tuple[np.ndarray, float]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def remember(self, original: Original) -> None:
        """Reservoir sampling: a uniform sample of the real items stored so far."""
        self.seen_real += 1
        if len(self.reservoir) < RESERVOIR:
            self.reservoir.append(original)
        else:
            k = self.rng.randrange(self.seen_real)
            if k < RESERVOIR:
                self.reservoir[k] = original

    def db_mb(self) -> float:
        total = 0
        for suffix in ("", "-wal"):
            p = Path(f"{self.path}{suffix}")
            if p.exists():
                total += p.stat().st_size
        return total / 1e6

    def counts(self) -> tuple[int, int]:
        """(items, stories) in the database."""
        with sqlite3.connect(self.path) as conn:
            items = conn.execute("SELECT count(*) FROM items").fetchone()[0]
            stories = conn.execute("SELECT count(*) FROM stories").fetchone()[0]
        conn.close()
        return items, stories


def open_bench(path: Path, seed: int, corpus: Path, window: timedelta, future: int = 0,
               collisions: dict[str, float] | None = None) -> Bench:
    """A new database and its text generator; ``future`` new stories made up front, and fill
    items colliding with them at ``collisions`` (per pair of one kind; None: never)."""
    rng = random.Random(seed)
    vocab = load_vocabulary(corpus, rng)
    store = Store(f"sqlite:///{path}")
    store.upgrade()
    store.sync_sources([(f"outlet-{i:02d}", f"https://outlet{i:02d}.example/feed.xml") for i in range(SOURCES)])
    with sqlite3.connect(path) as conn:
        source_ids = [r[0] for r in conn.execute("SELECT id FROM sources ORDER BY id")]
    conn.close()
    now = datetime.now(UTC).replace(microsecond=0)
    b = Bench(path, store, TextGenerator(vocab, rng), rng, np.random.default_rng(seed), now, window, source_ids)
    for _ in range(TEXT_POOL):
        title, summary, content = b.gen.item()
        b.pool.append((title, summary, content, dedupe.fingerprint(title, join_text(summary, content))))
    for _ in range(future):
        title, summary, content = b.gen.item()
        b.future.append((title, summary, content, dedupe.fingerprint(title, join_text(summary, content))))
    if collisions:
        b.collide = plan_collisions(b.future, collisions)
    return b


def plan_collisions(future: list[tuple[str, str, str, Fingerprint]],
                    rates: dict[str, float]) -> dict[str, tuple[np.ndarray, float]]:
    """For each kind with future stories: their band keys, and the chance ``q`` that a fill
    item's band key (each of its B) is one of theirs (a random one's, same band), so that a
    future story shares a key with ``rate`` x (stored items of its kind) of them on average:
    N x B x q / F = rate x N, so q = rate x F / B (at most 1)."""
    plans: dict[str, tuple[np.ndarray, float]] = {}
    for kind in ("brief", "text"):
        rows = [fp.bands for *_, fp in future if _kind(fp) == kind]
        if not rows or not rates.get(kind):
            continue
        keys = np.array(rows, dtype=np.int64)
        plans[kind] = keys, min(1.0, rates[kind] * len(rows) / keys.shape[1])
    return plans


def _stamps(bench: Bench, ages_s: np.ndarray) -> np.ndarray:
    """``now - age``, to the microsecond (UTC, naive)."""
    return np.datetime64(bench.now.replace(tzinfo=None), "us") - (ages_s * 1e6).astype("timedelta64[us]")


def _at_strings(bench: Bench, ages_s: np.ndarray) -> list[str]:
    """``now - age`` as the store writes a UTCDateTime on SQLite ('YYYY-MM-DD HH:MM:SS.ffffff')."""
    return [s.replace("T", " ") for s in np.datetime_as_string(_stamps(bench, ages_s), unit="us").tolist()]


def _at_hours(bench: Bench, ages_s: np.ndarray) -> np.ndarray:
    """The band rows' hour (``store._hour``) of the times ``_at_strings`` writes."""
    return _stamps(bench, ages_s).astype("datetime64[h]").astype(np.int64)


def check_time_format(bench: Bench) -> None:
    """The fill writes datetimes as strings: they must be what the store writes and compares."""
    engine = bench.store.engine
    process = UTCDateTime().dialect_impl(engine.dialect).bind_processor(engine.dialect)
    when = bench.now - timedelta(seconds=1234.5)
    want = process(when) if process is not None else when
    got = _at_strings(bench, np.array([1234.5]))[0]
    if got != want:
        raise RuntimeError(f"fill datetime format {got!r} differs from the store's {want!r}")
    if int(_at_hours(bench, np.array([1234.5]))[0]) != _hour(when):
        raise RuntimeError("fill band hours differ from the store's")


def _sha1(s: str) -> str:
    return hashlib.sha1(s.encode("utf-8")).hexdigest()


def fill(bench: Bench, n: int, real_min: int = REAL_MIN, chunk: int = FILL_CHUNK) -> dict:
    """Add ``n`` stored items with direct inserts (see the module docstring); returns timings."""
    t0 = time.perf_counter()
    if n <= 0:
        return {"items": 0, "rows": 0, "seconds": 0.0}
    bench.store.disconnect()  # no other connection (its checkpointer's neither): the journal mode can change
    conn = sqlite3.connect(bench.path, isolation_level=None, timeout=120)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute(f"PRAGMA cache_size=-{FILL_CACHE_KB}")
    next_item = (conn.execute("SELECT max(id) FROM items").fetchone()[0] or 0) + 1
    next_story = (conn.execute("SELECT max(id) FROM stories").fetchone()[0] or 0) + 1
    rng, nprng, gen = bench.rng, bench.nprng, bench.gen
    real_n = min(n, max(real_min, round(REAL_SHARE * n)))
    real_mask = np.zeros(n, dtype=bool)
    real_mask[nprng.choice(n, size=real_n, replace=False)] = True
    window_s = bench.window.total_seconds()
    rows_total = 0
    pool_kinds = np.array([_kind(fp) or "" for *_, fp in bench.pool])
    last_report = time.perf_counter()
    done = 0
    while done < n:
        m = min(chunk, n - done)
        ids = np.arange(next_item, next_item + m, dtype=np.int64)
        real = real_mask[done:done + m]
        ages = nprng.uniform(0.0, 0.9 * window_s, size=m)
        ages[real] = nprng.uniform(3600.0, REAL_HOURS * 3600.0, size=int(real.sum()))
        seen_ages = np.maximum(ages - nprng.uniform(0.0, 1800.0, size=m), 0.0)
        ats, seens = _at_strings(bench, ages), _at_strings(bench, seen_ages)
        hours = _at_hours(bench, ages)
        sigs = nprng.bytes(m * 4 * dedupe.NUM_PERM)
        width = dedupe.BANDS + dedupe.WORD_BANDS
        keys = nprng.integers(-2**63, 2**63 - 1, size=(m, width), dtype=np.int64, endpoint=True)
        pool_ix = nprng.integers(0, len(bench.pool), size=m)
        sources = nprng.integers(0, len(bench.source_ids), size=m)
        n_bands = np.zeros(m, dtype=np.int64)  # band keys of each synthetic item (its pool text's count)
        stories, items, fps = [], [], []
        real_bands: list[tuple[int, int, int, bytes]] = []
        for k in range(m):
            iid = int(ids[k])
            at, seen = ats[k], seens[k]
            src = bench.source_ids[int(sources[k])]
            link = f"https://outlet{src:02d}.example/news/{iid}"
            guid = f"fill-{iid}"
            if real[k]:
                copy = bench.reservoir and rng.random() < REAL_COPY_SHARE
                if copy:
                    original = rng.choice(bench.reservoir)
                    title, summary, content = gen.repost(original.title, original.content)
                    story = original.story_id
                else:
                    title, summary, content = gen.item()
                    story = next_story
                    next_story += 1
                    stories.append((story, title[:2000], seen))
                fp = dedupe.fingerprint(title, join_text(summary, content))
                fps.append((iid, story, at, fp.size, fp.signature, fp.lead_key, fp.title_key, fp.title,
                            fp.words or None))
                real_bands.extend((band, iid, int(hours[k]), fp.band_sketch) for band in set(fp.bands))
                bench.remember(Original(title, content, story))
            else:
                ptitle, summary, content, pfp = bench.pool[int(pool_ix[k])]
                title = f"{ptitle} {iid}"
                story = next_story
                next_story += 1
                stories.append((story, title, seen))
                fp_title = f"{pfp.title} {iid}" if pfp.title else ""
                fps.append((iid, story, at, pfp.size, sigs[k * 256:(k + 1) * 256] if pfp.size else b"",
                            _sha1(f"lead {iid}") if pfp.lead_key else None,
                            _sha1(fp_title) if fp_title else None, fp_title,
                            nprng.bytes(len(pfp.words)) if pfp.words else None))
                n_bands[k] = len(pfp.bands)
            items.append((iid, src, story, guid, _sha1(guid), link, link, _sha1(link), title, summary, content,
                          at, seen, 1))
        for kind, (future_keys, q) in bench.collide.items():  # some keys a later measured story will have
            width_k = future_keys.shape[1]
            mine = ~real & (pool_kinds[pool_ix] == kind)
            copied = (nprng.random((m, width_k)) < q) & mine[:, None]
            rows_k, slots = np.nonzero(copied)
            keys[rows_k, slots] = future_keys[nprng.integers(0, len(future_keys), size=slots.size), slots]
        # band rows: the synthetic ones from numpy, the real ones as computed; in key order
        band_keys = keys[np.arange(width)[None, :] < n_bands[:, None]]  # row-major: item by item
        band_ids, band_hours = np.repeat(ids, n_bands), np.repeat(hours, n_bands)
        sketches = dedupe.sketches(np.frombuffer(sigs, dtype="<u4").reshape(m, dedupe.NUM_PERM))
        band_sketches = np.repeat(sketches, n_bands, axis=0)
        if real_bands:
            rk, ri, rh, rs = zip(*real_bands, strict=True)
            band_keys = np.concatenate([band_keys, np.array(rk, dtype=np.int64)])
            band_ids = np.concatenate([band_ids, np.array(ri, dtype=np.int64)])
            band_hours = np.concatenate([band_hours, np.array(rh, dtype=np.int64)])
            band_sketches = np.concatenate([band_sketches,
                                            np.frombuffer(b"".join(rs), dtype=np.uint8).reshape(len(rs), -1)])
        order = np.argsort(band_keys, kind="stable")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO stories (id, title, created_at) VALUES (?, ?, ?)", stories)
        conn.executemany("INSERT INTO items (id, source_id, story_id, guid, guid_key, link, canonical_link, "
                         "link_key, title, summary, content, published_at, first_seen_at, fresh) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", items)
        conn.executemany("INSERT INTO fingerprints (item_id, story_id, at, size, signature, lead_key, title_key, "
                         "title, words) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", fps)
        conn.executemany("INSERT INTO story_bands (band_key, item_id, at_hour, sketch) VALUES (?, ?, ?, ?)",
                         zip(band_keys[order].tolist(), band_ids[order].tolist(), band_hours[order].tolist(),
                             [row.tobytes() for row in band_sketches[order]], strict=True))
        conn.execute("COMMIT")
        rows_total += len(stories) + 2 * m + len(band_keys)
        next_item += m
        done += m
        t = time.perf_counter()
        if t - last_report >= 5 or done == n:
            last_report = t
            el = t - t0
            progress(f"  fill {done:,}/{n:,} items, {el:.0f} s ({done / el:,.0f} items/s, "
                     f"{rows_total / el:,.0f} rows/s)")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    # The fill wrote without syncing: flush it to disk now, or the kernel's writeback of it
    # would slow the fsyncs of the measured polls' checkpoints. And give the fill's page
    # cache back to the system while the measuring process (measure_apart) runs: it and the
    # kernel's file cache of the database need that memory more than this idle heap.
    progress(f"  synced to disk in {_sync(bench.path):.1f} s")
    release_heap()
    return {"items": n, "rows": rows_total, "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------- measuring


@dataclass
class Batch:
    """One poll's items, and for each the story it must join (None: a new story)."""

    source: str
    items: list[tuple[Item, tuple[WatchlistHit, ...]]]
    expect: list[int | None]


def make_batches(bench: Bench, n: int, poll: int, repost_share: float, plain: bool = False) -> list[Batch]:
    rng, gen = bench.rng, bench.gen
    n_reposts = 0 if plain or not bench.reservoir else min(round(n * repost_share), n)
    originals = (rng.sample(bench.reservoir, n_reposts) if n_reposts <= len(bench.reservoir)
                 else [rng.choice(bench.reservoir) for _ in range(n_reposts)]) if n_reposts else []
    kinds: list[Original | None] = [*originals, *([None] * (n - n_reposts))]
    rng.shuffle(kinds)
    batches: list[Batch] = []
    for start in range(0, n, poll):
        src = rng.randrange(SOURCES)
        batch = Batch(f"outlet-{src:02d}", [], [])
        for original in kinds[start:start + poll]:
            if original is None and not plain and bench.future_next < len(bench.future):
                title, summary, content, _ = bench.future[bench.future_next]
                bench.future_next += 1
            elif original is None:
                title, summary, content = gen.item()
            else:
                title, summary, content = gen.repost(original.title, original.content)
            bench.serial += 1
            link = f"https://outlet{src:02d}.example/{'p' if plain else 'n'}/{bench.serial}"
            published = bench.now - timedelta(seconds=rng.uniform(0, MEASURED_HOURS * 3600))
            item = Item(guid=f"bench-{bench.serial}", link=link, canonical_link=link, title=title, summary=summary,
                        content=content, published=published)
            hits = HIT if rng.random() < HIT_SHARE else ()
            batch.items.append((item, hits))
            batch.expect.append(original.story_id if original is not None else None)
        batches.append(batch)
    return batches


CHANNELS = (("ops", lambda _hit: True),)


def _commit(bench: Bench, batch: Batch, plain: bool) -> tuple[float, float, list]:
    """Fingerprint and store one poll; (fingerprint seconds, commit seconds, stored items)."""
    t0 = time.perf_counter()
    if plain:
        new = [NewItem(item, True, hits, EMPTY) for item, hits in batch.items]
    else:
        new = [NewItem(item, True, hits, dedupe.fingerprint(item.title, item.text)) for item, hits in batch.items]
    t1 = time.perf_counter()
    result = FetchResult(url=f"https://{batch.source}.example/feed.xml", status="ok", http_status=200,
                         etag=f'"{bench.serial}"')
    out = bench.store.commit_poll(batch.source, result, new, CHANNELS, bench.now, StoryPolicy(window=bench.window))
    t2 = time.perf_counter()
    if len(out.stored) != len(batch.items):
        raise RuntimeError(f"commit_poll stored {len(out.stored)} of {len(batch.items)} new items")
    return t1 - t0, t2 - t1, out.stored


#: The tables ``fill_writer_cache`` reads, the ones read most last (they stay in the cache).
WARM_TABLES = ("items", "fingerprints", "story_bands")


def fill_writer_cache(bench: Bench) -> None:
    """Read the tables through the store's writing connection until its SQLite page cache
    holds as much as it may (``WRITER_CACHE_KB``) or the whole database: the state of a
    daemon that has run a while. The memory figure is then what the polls add beyond that
    configured bound, at every size (else the cache filling up counts as growth at the sizes
    larger than it, and at the smallest size only as far as its database reaches)."""
    with bench.store._writing() as s:
        for table in WARM_TABLES:
            s.connection().exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()


#: The items a measurement stores (the measured ones, as many plain ones and a warm-up poll of
#: each) may grow the database by at most this share of its stored items before its file is
#: put back as it was (``measure``): else the figure at 10k would be that of 10k to 20k (5,000
#: measured and 5,000 plain items), and the cost per item rises over that span (more index
#: pages per poll's rows: ~0.53 ms an item at 10-12k, ~0.63 at 16-22k). Not much less: each
#: round starts on new connections (cold statement and page caches), which costs more the
#: shorter the rounds (rounds of 200 items at 10k measured ~0.6 ms).
MAX_GROWTH = 0.2


def measure_rounds(stored: int, n: int, poll: int) -> list[int]:
    """The measured items of each round ``measure`` runs at ``stored`` items, the database put
    back before each but the first: whole polls that, with as many plain items and a warm-up
    poll of each kind, add at most MAX_GROWTH x ``stored`` items (at least one poll), in rounds
    of about equal size (one round of ``n`` where that fits)."""
    most = max(1, int(MAX_GROWTH * stored / (2 * poll)) - 1) * poll
    rounds = -(-n // most)
    per_round = min(n, -(-n // (rounds * poll)) * poll)  # whole polls, the rounds about equal
    return [min(per_round, n - start) for start in range(0, n, per_round)]


def _sync(path: Path) -> float:
    """Flush ``path`` to disk (fsync); the seconds it took. After a file is written in bulk
    (the fill, a copy of the database), else the kernel's writeback of it (2.6 GB at 1M) runs
    during the measured polls and slows the fsyncs of their checkpoints."""
    t = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t


def _checkpointed_copy(bench: Bench, to: Path) -> None:
    """Copy the database file to ``to`` with nothing left in its WAL (the store's connections
    closed first: the next use opens new ones), flushed to disk."""
    bench.store.disconnect()
    conn = sqlite3.connect(bench.path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    shutil.copyfile(bench.path, to)
    _sync(to)


def _restore(bench: Bench, snapshot: Path) -> None:
    """Put the database file back as ``snapshot`` holds it, flushed to disk."""
    bench.store.disconnect()
    for suffix in ("-wal", "-shm"):
        Path(f"{bench.path}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(snapshot, bench.path)
    _sync(bench.path)


def _warm_up(bench: Bench, poll: int, repost_share: float) -> None:
    """A poll of each kind, not timed (connections, statements), then the writer's page cache
    filled (``fill_writer_cache``)."""
    _commit(bench, make_batches(bench, poll, poll, repost_share)[0], False)
    _commit(bench, make_batches(bench, poll, poll, 0, plain=True)[0], True)
    fill_writer_cache(bench)


def measure(bench: Bench, n: int, poll: int, repost_share: float) -> dict:
    """Time ``n`` items through fingerprint + commit_poll, interleaved with ``n`` plain ones, at
    the database's size: in the rounds of ``measure_rounds``, the database file put
    back as it was before each round but the first (and a warm-up before each), so that it
    never holds more than MAX_GROWTH more items than at the start."""
    stored, _ = bench.counts()
    plan = measure_rounds(stored, n, poll)
    snapshot = None
    if len(plan) > 1:
        snapshot = bench.path.with_name(bench.path.name + ".steady")
        _checkpointed_copy(bench, snapshot)
    fp_s = commit_s = plain_s = 0.0
    per_poll: list[float] = []
    reposts = joined_right = new_stories = new_joined = 0
    rss0 = peak0 = 0.0
    exact = False
    most = rounds = 0
    # every round's polls made up front (their texts are not what the figure is about)
    work = [(make_batches(bench, k, poll, repost_share), make_batches(bench, k, poll, 0, plain=True)) for k in plan]
    try:
        for batches, plain in work:
            if rounds:
                _restore(bench, snapshot)
            gc.collect()
            _warm_up(bench, poll, repost_share)
            gc.collect()
            if not rounds:  # the peak from here on, over every round (and what the later rounds' starts do)
                rss0 = rss_mb()
                exact = reset_peak_rss()
                peak0 = peak_rss_mb()
            for batch, other in zip(batches, plain, strict=True):
                f, c, stored_items = _commit(bench, batch, False)
                fp_s += f
                commit_s += c
                per_poll.append(1000 * (f + c) / len(batch.items))
                _, c, _ = _commit(bench, other, True)
                plain_s += c
                for st, expect in zip(stored_items, batch.expect, strict=True):
                    if expect is None:
                        new_stories += 1
                        new_joined += st.joined
                    else:
                        reposts += 1
                        joined_right += st.joined and st.story_id == expect
            most = max(most, bench.counts()[0])
            rounds += 1
    finally:
        if snapshot is not None:
            snapshot.unlink(missing_ok=True)
    peak = peak_rss_mb()
    growth = peak - rss0 if exact else max(0.0, peak - peak0)
    per_poll.sort()
    return {
        "items": n,
        "ms_per_item": 1000 * (fp_s + commit_s) / n,
        "fingerprint_ms": 1000 * fp_s / n,
        "commit_ms": 1000 * commit_s / n,
        "plain_commit_ms": 1000 * plain_s / n,
        "p95_poll_ms_per_item": per_poll[min(len(per_poll) - 1, int(0.95 * len(per_poll)))],
        "reposts": reposts,
        "reposts_joined": joined_right,
        "new_stories": new_stories,
        "new_joined": new_joined,
        "rounds": rounds,
        "stored_most": most,
        "rss_mb": rss0,
        "peak_rss_growth_mb": growth,
        "memory_method": "VmHWM reset" if exact else "ru_maxrss (upper bound)",
    }


def _generator_fields(bench: Bench) -> dict:
    """The bench's fields but the store: the generator's state, by field name."""
    return {f.name: getattr(bench, f.name) for f in fields(bench) if f.name != "store"}


#: The argument that makes the script the process ``measure_apart`` starts (not a user option).
CHILD_FLAG = "--measure-handoff"


def measure_apart(bench: Bench, n: int, poll: int, repost_share: float) -> dict:
    """``measure`` in a new Python process of its own, which opens the database anew; the
    bench's generator state (random streams, the serial, the new stories taken) comes back.

    Why: the memory figure is the growth of the process's peak RSS, and how much a poll's
    allocations add to it depends on what the process's heap went through before, more than
    on the database's size: measured in the process that had just filled the database to a
    million items (a 1 GB SQLite cache and the fill's rows, freed), the same polls grew it by
    ~44 MB; in a process that had only loaded the bench's state, by ~19 MB, and by ~21 MB at
    10,000 items (both there ~13 MB of what SQLite and Python hold, at every size). In a
    process of its own every size starts alike, as a daemon started on a database of that
    size does."""
    bench.store.disconnect()  # the measuring process is the database's only user meanwhile
    state = _generator_fields(bench)
    with tempfile.TemporaryDirectory(prefix="dedupe-measure-") as tmp:
        handoff = Path(tmp) / "handoff.pickle"
        with handoff.open("wb") as f:
            pickle.dump({"bench": state, "n": n, "poll": poll, "repost_share": repost_share,
                         "max_growth": MAX_GROWTH}, f, protocol=pickle.HIGHEST_PROTOCOL)
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), CHILD_FLAG, str(handoff), __name__],
                              stdout=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"measuring in a process of its own failed (exit status {done.returncode}); "
                               "its messages are above")
        with handoff.open("rb") as f:
            back = pickle.load(f)  # builtins only
    bench.rng.setstate(back["rng"])  # the text generator's too: it draws from bench.rng
    bench.nprng.bit_generator.state = back["nprng"]
    bench.serial, bench.future_next = back["serial"], back["future_next"]
    return back["figures"]


def _measure_handoff(handoff: Path, home: str) -> int:
    """The process ``measure_apart`` starts: measure, and hand back the figures and the state
    that measuring changed. ``home`` is the name the starting process knows this module by
    (its pickle names this module's classes by it)."""
    global MAX_GROWTH
    sys.modules.setdefault(home, sys.modules[__name__])
    with handoff.open("rb") as f:
        job = pickle.load(f)
    MAX_GROWTH = job["max_growth"]
    state = job["bench"]
    bench = Bench(store=Store(f"sqlite:///{state['path']}"), **state)
    try:
        figures = measure(bench, job["n"], job["poll"], job["repost_share"])
    finally:
        bench.store.close()
    with handoff.open("wb") as f:
        pickle.dump({"figures": figures, "rng": bench.rng.getstate(), "nprng": bench.nprng.bit_generator.state,
                     "serial": bench.serial, "future_next": bench.future_next}, f)
    return 0


# --------------------------------------------------------------------------- the run


def _state_of(bench: Bench) -> bytes:
    """``_generator_fields``, pickled: ``_set_state`` puts them back."""
    return pickle.dumps(_generator_fields(bench), protocol=pickle.HIGHEST_PROTOCOL)


def _set_state(bench: Bench, state: bytes) -> None:
    for name, value in pickle.loads(state).items():
        setattr(bench, name, value)


def median_run(runs: list[dict]) -> dict:
    """The run whose ms/item is the median of ``runs`` (the lower one of an even count)."""
    return sorted(runs, key=lambda m: m["ms_per_item"])[(len(runs) - 1) // 2]


def run(sizes: tuple[int, ...] = DEFAULT_SIZES, n_measure: int = 5000, poll: int = 50, repost_share: float = 0.3,
        window_days: float = 7.0, seed: int = 1, db: Path | None = None, keep: bool = False,
        corpus: Path = DEFAULT_CORPUS, real_min: int = REAL_MIN, collisions: str = "corpus",
        repeats: int = DEFAULT_REPEATS) -> dict:
    t_start = time.perf_counter()
    progress(f"band-key collisions: {collisions} ...")
    rates = collision_plan(collisions, corpus)
    tmpdir = None
    if db is None:
        tmpdir = Path(tempfile.mkdtemp(prefix="dedupe-bench-"))
        path = tmpdir / "bench.db"
    else:
        path = db
    window = timedelta(days=window_days)
    rows = []
    fill_total = 0.0
    bench = None
    filled: list[tuple[int, dict, Path, bytes]] = []  # (size, its row so far, snapshot, generator state)
    try:
        progress(f"creating {path} and generating texts ...")
        # the new stories the measured polls bring: the same at every size (its warm-up polls' and its own)
        future = (max(len(measure_rounds(size, n_measure, poll)) * (poll - round(poll * repost_share))
                      + n_measure - round(n_measure * repost_share) for size in sizes) if rates["rates"] else 0)
        bench = open_bench(path, seed, corpus, window, future, rates["rates"])
        kind_share = Counter(_kind(fp) for *_, fp in bench.pool)
        rates["copy_chance"] = {kind: round(q, 4) for kind, (_, q) in bench.collide.items()}
        check_time_format(bench)
        for size in sizes:
            stored, _ = bench.counts()
            to_fill = max(0, size - stored)
            progress(f"growing to {size:,} stored items: filling {to_fill:,} ...")
            f = fill(bench, to_fill, real_min=real_min)
            fill_total += f["seconds"]
            stored, stories = bench.counts()
            expected = sum(rate * stored * kind_share[kind] / len(bench.pool) * kind_share[kind] / len(bench.pool)
                           for kind, rate in (rates["rates"] or {}).items())
            row = {"size": size, "stored": stored, "stories": stories, "db_mb": round(bench.db_mb(), 1),
                   "false_candidates": round(expected, 1),
                   "filled": f["items"], "fill_rows": f["rows"], "fill_seconds": round(f["seconds"], 2),
                   "fill_items_per_s": round(f["items"] / f["seconds"]) if f["seconds"] else None,
                   "fill_rows_per_s": round(f["rows"] / f["seconds"]) if f["seconds"] else None}
            snapshot = path.with_name(f"{path.name}.at-{size}")
            _checkpointed_copy(bench, snapshot)  # measured from this copy; the fill goes on in the file
            filled.append((size, row, snapshot, _state_of(bench)))
        runs: dict[int, list[dict]] = {size: [] for size in sizes}
        for rep in range(repeats):
            # each run starts at another size (a Latin square): the measurement in a given place of
            # a run was seen to be faster or slower by a few percent, whichever code it ran. The
            # last run goes in order, so that a kept database ends at the largest size.
            turn = (rep - repeats + 1) % len(filled)
            for size, row, snapshot, state in filled[turn:] + filled[:turn]:
                _restore(bench, snapshot)
                _set_state(bench, state)  # the same polls at every size and in every run
                progress(f"measuring at {row['stored']:,} stored items ({row['db_mb']:,.0f} MB), run {rep + 1} of "
                         f"{repeats}: {n_measure:,} items in polls of {poll}, and as many plain ...")
                m = measure_apart(bench, n_measure, poll, repost_share)
                m["items_after"], m["stories_after"] = bench.counts()
                m["db_mb_after"] = round(bench.db_mb(), 1)
                progress(f"  {m['ms_per_item']:.3f} ms/item (fingerprint {m['fingerprint_ms']:.3f} + commit "
                         f"{m['commit_ms']:.3f}; plain commit {m['plain_commit_ms']:.3f}); reposts joined "
                         f"{m['reposts_joined']}/{m['reposts']}; peak RSS +{m['peak_rss_growth_mb']:.1f} MB; "
                         f"{m['rounds']} round(s), at most {m['stored_most']:,} items stored")
                runs[size].append(m)
        for size, row, _, _ in filled:
            m = median_run(runs[size])
            rows.append({**row, **{k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()},
                         # memory: the bound must hold in every run
                         "peak_rss_growth_mb": round(max(r["peak_rss_growth_mb"] for r in runs[size]), 4),
                         "runs_ms_per_item": [round(r["ms_per_item"], 4) for r in runs[size]],
                         "runs_plain_commit_ms": [round(r["plain_commit_ms"], 4) for r in runs[size]]})
    finally:
        if bench is not None:
            bench.store.close()  # its writer and checkpointer threads too, also when a size failed
        for *_, snapshot, _ in filled:
            snapshot.unlink(missing_ok=True)
        if tmpdir is not None and not keep:
            shutil.rmtree(tmpdir, ignore_errors=True)
    base = rows[0]
    for r in rows:
        r["ratio"] = round(r["ms_per_item"] / base["ms_per_item"], 3) if base["ms_per_item"] else None
        # each run's against the smallest size's in the same run (measured minutes apart)
        r["runs_ratio"] = [round(a / b, 3) for a, b in zip(r["runs_ms_per_item"], base["runs_ms_per_item"],
                                                           strict=True)]
        r["dedupe_over_plain"] = round(r["ms_per_item"] / r["plain_commit_ms"], 2) if r["plain_commit_ms"] else None
        r["plain_ratio"] = (round(r["plain_commit_ms"] / base["plain_commit_ms"], 3) if base["plain_commit_ms"]
                            else None)
    mem_limit = MEMORY_RATIO * base["peak_rss_growth_mb"] + MEMORY_SLACK_MB
    targets = []
    for r in rows:
        targets.append({"name": f"ms/item at {r['stored']:,} stored", "value": round(r["ms_per_item"], 3),
                        "target": f"<= {TARGET_MS_PER_ITEM:g} ms", "pass": r["ms_per_item"] <= TARGET_MS_PER_ITEM})
    for r in rows[1:]:
        targets.append({"name": f"cost at {r['stored']:,} / at {base['stored']:,}", "value": r["ratio"],
                        "target": f"<= {TARGET_FLAT_RATIO:g}x", "pass": r["ratio"] <= TARGET_FLAT_RATIO})
    for r in rows[1:]:
        targets.append({"name": f"peak RSS growth at {r['stored']:,}", "value": round(r["peak_rss_growth_mb"], 1),
                        "target": f"<= {mem_limit:.1f} MB", "pass": r["peak_rss_growth_mb"] <= mem_limit})
    joined = min((r["reposts_joined"] / r["reposts"] for r in rows if r["reposts"]), default=1.0)
    targets.append({"name": "reposts joined their story", "value": round(joined, 4),
                    "target": f">= {TARGET_REPOSTS_JOINED:g}", "pass": joined >= TARGET_REPOSTS_JOINED})
    return {
        "seed": seed,
        "corpus": bench.gen.vocab.source,
        "db": str(path) if (tmpdir is None or keep) else None,
        "window_days": window_days,
        "measure": n_measure,
        "repeats": repeats,
        "poll": poll,
        "reposts_share": repost_share,
        "fill_seconds": round(fill_total, 1),
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "collisions": rates,
        "sizes": rows,
        "memory_rule": f"peak RSS growth <= {MEMORY_RATIO:g} x {base['peak_rss_growth_mb']:.1f} MB "
                       f"+ {MEMORY_SLACK_MB:g} MB",
        "targets": targets,
    }


def print_report(r: dict, out=None) -> None:
    out = out or sys.stdout
    print(f"dedupe speed bench: fingerprint + Store.commit_poll on SQLite; {r['measure']:,} items per size in polls "
          f"of {r['poll']} ({100 * r['reposts_share']:.0f}% reposts of stored items), window "
          f"{r['window_days']:g} days, seed {r['seed']}; vocabulary {r['corpus']}", file=out)
    c = r["collisions"]
    if c["rates"]:
        copy = ", ".join(f"{k} {v:.3f}" for k, v in c.get("copy_chance", {}).items())
        print(f"  band-key collisions of unrelated items ({c['source']}): briefs {c['rates']['brief']:.2e}, texts "
              f"{c['rates']['text']:.2e} per pair; a fill key copied from a measured story: {copy}", file=out)
    else:
        print("  band-key collisions: none (every fill key random)", file=out)
    print(f"  fill {r['fill_seconds']:,.1f} s in all; run {r['total_seconds']:,.1f} s; process peak RSS "
          f"{r['peak_rss_mb']:,.0f} MB{'; database kept at ' + r['db'] if r['db'] else ''}", file=out)
    head = (f"  {'stored':>10} {'db MB':>8} {'fill s':>7} {'fill it/s':>9}  {'ms/item':>7} {'= fp':>6} "
            f"{'+ commit':>8} {'p95 poll':>8} {'plain':>6} {'ratio':>6} {'plain r.':>8} {'false c.':>8}  {'reposts joined':>14} "
            f"{'new joined':>10} {'RSS MB':>7} {'peak +MB':>8}")
    print(head, file=out)
    for s in r["sizes"]:
        fill_rate = f"{s['fill_items_per_s']:,}" if s["fill_items_per_s"] else "-"
        print(f"  {s['stored']:>10,} {s['db_mb']:>8,.0f} {s['fill_seconds']:>7,.1f} {fill_rate:>9}  "
              f"{s['ms_per_item']:>7.3f} {s['fingerprint_ms']:>6.3f} {s['commit_ms']:>8.3f} "
              f"{s['p95_poll_ms_per_item']:>8.3f} {s['plain_commit_ms']:>6.3f} {s['ratio']:>5.2f}x {s['plain_ratio']:>7.2f}x "
              f"{s['false_candidates']:>8,.1f}  "
              f"{s['reposts_joined']:>6,}/{s['reposts']:<7,} {s['new_joined']:>4,}/{s['new_stories']:<5,} "
              f"{s['rss_mb']:>7,.0f} {s['peak_rss_growth_mb']:>8.1f}", file=out)
    print("  (ms/item = fingerprint + commit_poll per item; plain = commit_poll per item with an empty fingerprint;"
          " ratio = ms/item / ms/item at the smallest size; plain r. = plain / plain at the smallest size, how storing"
          " an item grows with the database without story merging; false c. = stored items sharing a band key with a new"
          " story without being a copy, expected from the collision rates)", file=out)
    if r.get("repeats", 1) > 1:
        print(f"  {r['repeats']} runs a size, the sizes in turn; a row shows its median run (peak +MB: the largest of"
              " its runs); each run's ms/item and ratio (to the smallest size's in the same run):", file=out)
        for s in r["sizes"]:
            print(f"  {s['stored']:>10,}  ms/item {' '.join(f'{x:.3f}' for x in s['runs_ms_per_item'])}   ratio "
                  f"{' '.join(f'{x:.2f}x' for x in s['runs_ratio'])}", file=out)
    print(f"  memory rule: {r['memory_rule']}", file=out)
    for t in r["targets"]:
        print(f"  {t['name']:<36} {t['value']!s:>10}  target {t['target']:<12} {'PASS' if t['pass'] else 'FAIL'}",
              file=out)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s.replace("_", "")) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if not sizes or any(s < 1 for s in sizes) or list(sizes) != sorted(set(sizes)):
        raise argparse.ArgumentTypeError("sizes must be positive and ascending")
    return sizes


def _collisions(text: str) -> str:
    if text in ("corpus", "none"):
        return text
    try:
        rate = float(text)
    except ValueError:
        rate = -1.0
    if not 0 <= rate <= 1:
        raise argparse.ArgumentTypeError(f"not corpus, none or a rate between 0 and 1: {text!r}")
    return text


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [CHILD_FLAG]:
        return _measure_handoff(Path(argv[1]), argv[2])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=_sizes, default=DEFAULT_SIZES,
                    help="stored items to measure at, ascending (10000,100000,1000000)")
    ap.add_argument("--measure", type=int, default=5000, help="items timed at each size (%(default)s)")
    ap.add_argument("--poll", type=int, default=50, help="items per commit_poll (%(default)s)")
    ap.add_argument("--reposts", type=float, default=0.3, help="share of measured items that are reposts (%(default)s)")
    ap.add_argument("--window", type=float, default=7.0, help="story window in days (%(default)s)")
    ap.add_argument("--seed", type=int, default=1, help="RNG seed (%(default)s)")
    ap.add_argument("--db", type=Path, help="SQLite file to create and keep (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary database")
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="corpus directory (%(default)s)")
    ap.add_argument("--collisions", default="corpus", type=_collisions,
                    help="band keys unrelated items share: corpus (measured on it), none, or a rate per pair")
    ap.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                    help="times each size is measured, the sizes in turn; figures of the median run (%(default)s)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)
    if args.measure < 1 or args.poll < 1 or args.repeats < 1:
        ap.error("--measure, --poll and --repeats must be at least 1")
    if not 0 <= args.reposts <= 1:
        ap.error("--reposts must be between 0 and 1")
    if args.window <= 0:
        ap.error("--window must be positive")
    if args.db is not None and (args.db.exists() or Path(f"{args.db}-wal").exists()):
        ap.error(f"--db {args.db} exists: name a new file")
    report = run(args.sizes, args.measure, args.poll, args.reposts, args.window, args.seed, args.db, args.keep,
                 args.corpus, collisions=args.collisions, repeats=args.repeats)
    return emit(report, args.json, args.strict, print_report)


if __name__ == "__main__":
    sys.exit(main())
