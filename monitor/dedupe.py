"""Dedupe: the fingerprint of an item, and whether two fingerprints are one story.

Rules:
- The fingerprint is taken from the item's text after *story normalisation*: page chrome
  lines dropped ("No Script", "Please Wait...", "folder_open…", "access_time 11 days ago",
  "starAdd to favorites", "By Staff, Agencies", share/subscribe lines, a line that repeats
  the title, and short lines without sentence punctuation such as section names and
  banners), syndication credit lines dropped ("This story first appeared on …", "Reposted
  with permission", "Source: …", "© …"), a dateline at the start of a paragraph dropped
  ("MOSCOW (Sputnik) —", "SEOUL, Oct. 5 (Yonhap) --", "Pyongyang, August 2 (KCNA) --",
  "ISLAMABAD -", "Reuters -"), a trailing "… Read more" cut, and repeated paragraphs
  collapsed to their first occurrence. Words are the matcher's (case, accents, NFKC
  folded); dotted abbreviations lose their dots ("U.S." is "us"); markup that reached the
  text as text (``<A HREF=…>``, a feed that escaped its HTML twice) is dropped.
- Shingles are the word 3-grams of that text (the words themselves when it has fewer than
  three), hashed to 32 bits. The fingerprint holds a MinHash signature of them
  (``NUM_PERM`` values, datasketch) and their count; LSH band keys (``BANDS`` bands of
  ``ROWS`` values each of the signature's first ``BANDS`` x ``ROWS`` values, hashed to a
  signed 64-bit integer) find candidates; the lead key
  (the first ``LEAD_KEY_WORDS`` words) finds copies cut short, which MinHash alone ranks low.
- A *brief* (``WORD_SET_MIN`` to ``WORD_SET_MAX`` content words: the headline's and the
  text's words without English function words and digits, lightly stemmed) also keeps its
  content-word set and the numbers it states ("4,400" as 4400), hashed, and ``WORD_BANDS``
  LSH band keys of ``WORD_ROWS`` values of their MinHash *instead of* shingle band keys: a
  near copy of a brief shares most of its words too, so the word bands find it (and each
  band row is a random index page to write and to read). A copy on the other side of the
  brief limit still meets it by its lead key.
- The title key is the folded title without an outlet suffix (" | Site", " - Site Name"),
  an "UPDATE:"/"BREAKING:" prefix or a trailing agency tag ("(AP)", "(Reuters)").
- Two fingerprints are the same story when (estimated from the signatures):
  - both have text (``MIN_TEXT_SHINGLES`` shingles or more) and are at most ``NEAR_DAYS``
    apart: the Jaccard similarity of the shingle sets is at least ``JACCARD``; or the
    shorter is at least ``CONTAINMENT`` contained in the longer and shares the lead key (a
    copy cut short). Below ``FAR_JACCARD``, the headlines must also share at least
    ``TITLE_OVERLAP`` of the shorter one's words (the title assist): unrelated headlines over a
    shared stock sentence or background paragraph are not one story. Two briefs at most
    ``WORD_NEAR`` apart whose headlines pass that test are also one story when their
    content-word sets reach ``WORD_JACCARD`` and their figures agree (when both state
    numbers, at least one is common): two outlets' own briefs of one event;
  - both have text and are further apart: only near-identical texts (``FAR_JACCARD``);
  - one of them has (almost) no text — a photo or video page, a headline-only entry: the
    title keys are equal and the two are at most ``NEAR_DAYS`` apart.
  The caller looks only within the story window (default 7 days), and further than
  ``NEAR_DAYS`` only at items sharing two band keys or more (a near-identical text shares most
  of them), and picks the most similar candidate; an item that joins none opens a new story.
"""
from __future__ import annotations

import hashlib
import math
import re
import zlib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property, lru_cache

import numpy as np

from .model import Item
from .query import words_of

NUM_PERM = 64
#: LSH: BANDS bands of ROWS values (the signature's first BANDS x ROWS). Each band key is a
#: row in a random place of the band index, the bulk of what storing an item writes. 8 bands
#: of 3 find a pair at Jaccard 0.5 with p = 0.66, 0.6 with p = 0.86, 0.7 with p = 0.96 (as
#: 16 bands of 4 did, with half the rows) and one at 0.1 with p = 0.008.
BANDS = 8
ROWS = 3
SEED = 20161020
#: Same story when the estimated Jaccard similarity of the shingle sets reaches this.
JACCARD = 0.5
#: ... or when the shorter text is this much contained in the longer and the leads agree.
CONTAINMENT = 0.8
#: Below this many shingles a text is too short to compare; titles decide (see rules).
MIN_TEXT_SHINGLES = 4
LEAD_KEY_WORDS = 12
#: Copies of one story appear within this many days of each other; beyond, only near-identical
#: texts (``FAR_JACCARD``) are one story, and headline-only pages never join.
NEAR_DAYS = 2
FAR_JACCARD = 0.8
#: Texts that are not near-identical need headlines in common too: this share of the shorter
#: headline's words.
TITLE_OVERLAP = 0.34
SHINGLE = 3
#: Briefs (a feed summary, a wire brief: at most this many distinct content words, about two
#: sentences) also keep their content-word set: two outlets' own briefs of one event share its
#: words more than its word 3-grams.
WORD_SET_MAX = 32
#: ... and are one story when at most ``WORD_NEAR`` apart, with headlines in common
#: (``TITLE_OVERLAP``), and their content-word sets this similar (Jaccard).
WORD_JACCARD = 0.4
#: Briefs of one event come out within hours of each other; a day apart, the same words are
#: the next launch, the next raid, the next statement.
WORD_NEAR = timedelta(hours=12)
#: A content-word set smaller than this says too little to compare.
WORD_SET_MIN = 8
#: LSH over the content-word set: WORD_BANDS bands of WORD_ROWS MinHash values. A pair at
#: Jaccard 0.4, the brief rule's threshold, is found with p = 0.27, at 0.5 with p = 0.54, at
#: 0.6 with p = 0.81, at 0.7 with p = 0.96 (two briefs of one event are also found by their
#: headline). Same-topic briefs share words: with 16 bands of 3 (p = 0.65 at 0.4), 2.3e-4 of
#: the pairs of unrelated corpus briefs shared a band key — at a million stored items ~110
#: unrelated briefs to read and compare for each new one; with 12 bands of 4, 4.0e-5, and
#: natural-group recall 843/904 instead of 844/904 (bench/dedupe_quality.py).
WORD_BANDS = 12
WORD_ROWS = 4
#: In a brief's word set, content words hash below 2^31 and numbers at or above.
_WORD_MASK = 0x7FFFFFFF
_NUMBER_BIT = 0x80000000

# MinHash, datasketch's "affine32" scheme (datasketch.MinHash(num_perm=NUM_PERM, seed=SEED,
# hashfunc=int)): each 32-bit shingle hash is pre-mixed with MurmurHash3's finalizer, then
# permuted as a * h + b mod 2^32 with odd a. It is written out here because importing the
# datasketch package imports scipy (half a second of every `monitor run --once`) for LSH
# tuning we do not use; tests/test_dedupe.py pins the signatures to datasketch's own, so
# fingerprints stored by either stay comparable.
_GEN = np.random.RandomState(SEED)
_A = (_GEN.randint(0, 1 << 31, NUM_PERM, dtype=np.uint32) * np.uint32(2) + np.uint32(1)).reshape(1, -1)
_B = _GEN.randint(0, 1 << 32, NUM_PERM, dtype=np.uint32).reshape(1, -1)
del _GEN


def minhash(hashes: Collection[int]) -> np.ndarray:
    """The MinHash signature (NUM_PERM uint32) of a non-empty collection of 32-bit hashes."""
    hv = np.fromiter(hashes, dtype=np.uint32, count=len(hashes)).reshape(-1, 1)
    hv = hv ^ (hv >> np.uint32(16))
    hv = hv * np.uint32(0x85EBCA6B)
    hv = hv ^ (hv >> np.uint32(13))
    hv = hv * np.uint32(0xC2B2AE35)
    hv = hv ^ (hv >> np.uint32(16))
    return (hv * _A + _B).min(axis=0)


# ---------------------------------------------------------------- story normalisation

#: Lines of page chrome that are never part of a story (matched case-insensitively, whole line).
_CHROME = re.compile(
    r"""^(?:
        no\s*script | please\s+wait\.*\s* | loading\.*\s* | javascript\s+(?:is\s+)?(?:required|disabled).*
      | folder_open.* | access_time.* | star\s*add\s+to\s+favou?rites | add\s+to\s+favou?rites
      | by\s+staff(?:,\s*agencies)? | by\s+[\w.' -]{1,40},\s*agencies
      | (?:share|tweet|email|print|comment|subscribe|advertisement|sponsored|related(?:\s+(?:news|stories|articles))?)
        (?:\s+(?:this|on|to|now|article|story|us))*\s*:?
      | (?:read|see)\s+(?:more|also|full\s+story)\b.* | click\s+here\b.* | follow\s+us\b.*
      | \d+\s+(?:seconds?|minutes?|hours?|days?|weeks?|months?|years?)\s+ago
      | (?:breaking|latest|top)\s+news
    )$""",
    re.IGNORECASE | re.VERBOSE,
)
#: Syndication credit lines: a short line that says where the text came from.
_CREDIT = re.compile(
    r"""(?:^\W*(?:\(c\)|©|copyright\b|source\s*:|via\s*:|\(end\)))
      | \b(?:first|originally)\s+(?:appeared|published|ran|posted)\b
      | \b(?:re)?(?:posted|published|printed|produced)\s+(?:here\s+)?with\s+(?:kind\s+)?permission\b
      | \b(?:republished|reprinted|reproduced|syndicated)\s+(?:from|by|under|with|via)\b
      | \bcontent[-\s](?:sharing|syndication)\b | \ball\s+rights\s+reserved\b
    """,
    re.IGNORECASE | re.VERBOSE,
)
_CREDIT_MAX_WORDS = 40
#: A credit line has one of these (lower-cased): a cheap test before the regex.
_CREDIT_HINTS = ("permission", "publish", "appeared", "posted", "printed", "produced", "syndicat", "rights reserved",
                 "content", "(c)", "©", "copyright", "source", "via", "(end)", " ran ")
#: A dateline opening a paragraph: a place (and date) with a parenthesised outlet, an
#: upper-case place, or a bare agency name, then a dash.
_DATELINE = re.compile(
    r"""^(?:
        (?:(?:[A-Z][\w.'’/-]*|\d{1,4}),?\s+){0,4}\([^()\n]{1,40}\)\s*(?:--|[-–—])
      | [A-Z][A-Z.'’/ ,-]{1,50}?(?:,\s*[A-Z][a-z]+\.?(?:\s+\d{1,2})?)?\s+(?:--|[-–—])
      | (?:AP|AFP|Reuters|UPI|Xinhua|Yonhap|KCNA|TASS|Sputnik|dpa|ANSA|EFE)\s*(?:--|[-–—])
    )\s+""",
    re.VERBOSE,
)
#: Markup that reached the text as text (a feed that escaped its HTML twice): not words of the story.
_MARKUP = re.compile(r"<[A-Za-z/!][^<>]{0,500}>")
_READ_MORE = re.compile(r"\s*(?:…|\.\.\.)?\s*\(?(?:read|continue|see)\s+(?:more|reading|full\s+story)\)?\W*$",
                        re.IGNORECASE)
_ABBREVIATION = re.compile(r"\b(?:[A-Za-z]\.){2,}")
_SENTENCE_END = re.compile(r"[.!?:;\"”’)\]]$|[.!?]\s")
_SHORT_LINE_WORDS = 5

#: Title decorations that differ between outlets carrying one story.
_TITLE_PREFIX = re.compile(
    r"^\s*(?:\((?:\d+(?:st|nd|rd|th)\s+)?(?:lead|update\s*\d*|urgent|corrected|recasts?)\)\s*[:\-–—|]?"
    r"|\W*(?:update[ds]?|breaking(?:\s+news)?|exclusive|watch|video|live|just\s+in)(?:\s*\d+)?\s*[:\-–—|])\s*",
    re.IGNORECASE)
_TITLE_SUFFIX = re.compile(r"\s+(?:[|–—]|-|::)\s+[^|–—]{1,40}$")
_TITLE_AGENCY = re.compile(r"\s*\((?:AP|AFP|Reuters|UPI|Xinhua|Yonhap|KCNA|TASS|Sputnik|dpa|[A-Z][\w.]{1,15})\)\s*$")


def _strip_abbreviations(text: str) -> str:
    if "." not in text:
        return text
    return _ABBREVIATION.sub(lambda m: m.group(0).replace(".", ""), text)


def title_words(title: str) -> tuple[str, ...]:
    """The words of ``title`` that every outlet shares (decorations removed)."""
    t = " ".join(title.split())
    for _ in range(2):
        t = _TITLE_PREFIX.sub("", t)
    stripped = _TITLE_SUFFIX.sub("", t)
    if len(words_of(stripped)) >= 2:  # "Fed - Rates" keeps its words; a site suffix goes
        t = stripped
    t = _TITLE_AGENCY.sub("", t)
    return words_of(_strip_abbreviations(t))


def _is_credit(line: str) -> bool:
    low = line.lower()
    return any(hint in low for hint in _CREDIT_HINTS) and _CREDIT.search(line) is not None


def story_paragraphs(title: str, text: str) -> list[tuple[str, tuple[str, ...]]]:
    """The paragraphs of ``text`` that belong to the story (see the module rules), in order,
    each once, with their folded words."""
    return _story_paragraphs(title_words(title), text)


def _story_paragraphs(title_key: tuple[str, ...], text: str) -> list[tuple[str, tuple[str, ...]]]:
    seen: set[tuple[str, ...]] = set()
    out: list[tuple[str, tuple[str, ...]]] = []
    for raw in text.splitlines():
        if "<" in raw:
            raw = _MARKUP.sub(" ", raw)
        line = " ".join(raw.split())
        if not line or (len(line) < 80 and _CHROME.match(line)):
            continue
        n_words = line.count(" ") + 1
        if n_words <= _CREDIT_MAX_WORDS and _is_credit(line):
            continue
        dateline = _DATELINE.match(line)
        if dateline:
            line = line[dateline.end():]
        tail = line[-30:].lower()
        if "more" in tail or "reading" in tail or "story" in tail:
            line = _READ_MORE.sub("", line)
        words = words_of(_strip_abbreviations(line))
        if not words:
            continue
        if len(words) <= 2 * len(title_key) + 2 and (words == title_key or title_words(line) == title_key):
            continue  # the headline repeated on the page
        if len(words) < _SHORT_LINE_WORDS and not _SENTENCE_END.search(line):  # a banner or section name
            continue
        if words in seen:
            continue
        seen.add(words)
        out.append((line, words))
    return out


def story_words(title: str, text: str) -> list[str]:
    """The folded words of the story text, paragraphs in order."""
    return _story_words(title_words(title), text)


def _story_words(title_key: tuple[str, ...], text: str) -> list[str]:
    return [word for _, words in _story_paragraphs(title_key, text) for word in words]


def shingles(words: list[str]) -> set[int]:
    """32-bit hashes of the word ``SHINGLE``-grams (of the words themselves when fewer)."""
    if len(words) < SHINGLE:
        grams = words
    else:  # the n-grams: word i with the SHINGLE - 1 after it (the shorter slices end the zip)
        grams = map(" ".join, zip(*(words[i:] for i in range(SHINGLE)), strict=False))
    return set(map(zlib.crc32, map(str.encode, grams)))


#: English function words and newswire filler: not content words.
_STOPWORDS = """
a about above after again against ago all also am an and any are as at be been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
him his how i if in into is it its just may me might more most much must my no nor not now of off on once only
or other our out over own said same say says she should so some such than that the their them then there these
they this those through to too under until up upon us very was we were what when where which while who whom why
will with would yet you your
one two three new first last
ap afp reuters upi inc corp co ltd plc
"""
STOPWORDS = frozenset(_STOPWORDS.split())


def _stem(word: str) -> str:
    """A light English suffix strip, so that "drives" and "drive", "talks" and "talked" agree."""
    if len(word) > 5:
        for suffix in ("ing", "ed", "es"):
            if word.endswith(suffix):
                return word[:-len(suffix)]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def content_words(title_key: tuple[str, ...], words: list[str]) -> set[str]:
    """The content words of a story (its headline's and its text's words, function words,
    one-letter words and digits out, lightly stemmed)."""
    found = set(map(_content_word, title_key))
    found.update(map(_content_word, words))
    found.discard("")
    return found


@lru_cache(maxsize=1 << 16)
def _content_word(word: str) -> str:
    """``word`` stemmed, or "" when it is not a content word."""
    if len(word) < 2 or word in STOPWORDS or word.isdigit():
        return ""
    return _stem(word)


_NUMBER = re.compile(r"\d+(?:[,.]\d+)*")


def numbers(lines: list[str]) -> set[str]:
    """The numbers written in ``lines`` ("4,400" and "4400" are one; "76th" is 76)."""
    return {m.group(0).replace(",", "") for line in lines for m in _NUMBER.finditer(line)}


# ---------------------------------------------------------------- fingerprints

@dataclass(frozen=True)
class Fingerprint:
    """What the store keeps of an item to find its story later."""

    signature: bytes  # NUM_PERM little-endian uint32 MinHash values; empty when no text
    size: int  # number of distinct shingles
    lead_key: str | None  # sha1 of the first LEAD_KEY_WORDS words, when there are that many
    title: str  # the title words (see title_words), space-separated
    bands: tuple[int, ...]  # LSH band keys (signed 64-bit), empty when the text is too short
    at: datetime | None = None  # when the story happened, as far as the item says
    words: bytes = b""  # a short text's content words: sorted 32-bit hashes, little-endian; else empty

    @property
    def has_text(self) -> bool:
        return self.size >= MIN_TEXT_SHINGLES

    @property
    def title_key(self) -> str | None:
        """sha1 of the title words (None when the title has none)."""
        return hashlib.sha1(self.title.encode("utf-8")).hexdigest() if self.title else None

    # Derived values are computed once per fingerprint (a stored one is compared with many new
    # items); cached_property keeps them in the instance's __dict__, not in its fields.
    @cached_property
    def _values(self) -> np.ndarray:
        return np.frombuffer(self.signature, dtype="<u4")

    def values(self) -> np.ndarray:
        return self._values

    def word_hashes(self) -> np.ndarray:
        return np.frombuffer(self.words, dtype="<u4")

    @cached_property
    def word_set(self) -> frozenset[int]:
        """The content-word and number hashes (of a brief; empty otherwise)."""
        return frozenset(self.word_hashes().tolist())

    @cached_property
    def number_set(self) -> frozenset[int]:
        """The number hashes of a brief's word set."""
        return frozenset(h for h in self.word_set if h >= _NUMBER_BIT)

    @cached_property
    def band_sketch(self) -> bytes:
        """``sketch(signature)``: what its band rows keep."""
        return sketch(self.signature)

    @cached_property
    def sketch_bits(self) -> int:
        """``band_sketch`` as an integer (``sketch_int``), for ``sketch_same``."""
        return sketch_int(self.band_sketch)

    @cached_property
    def title_set(self) -> frozenset[str]:
        """The title words, as a set."""
        return frozenset(self.title.split())


def _sha1(words: tuple[str, ...] | list[str]) -> str:
    return hashlib.sha1(" ".join(words).encode("utf-8")).hexdigest()


#: Odd 64-bit multipliers mixing a band's values (ROWS or WORD_ROWS; and its number) into one key.
_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
                 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x94D049BB133111EB, 0xBF58476D1CE4E5B9][:max(ROWS, WORD_ROWS)],
                dtype=np.uint64)
_SALT = np.uint64(0x2545F4914F6CDD1D)
_BAND_SALT = (np.arange(BANDS, dtype=np.uint64) + np.uint64(1)) * _SALT
_WORD_BAND_SALT = (np.arange(WORD_BANDS, dtype=np.uint64) + np.uint64(BANDS + 1)) * _SALT


def band_keys(values: np.ndarray) -> tuple[int, ...]:
    """The LSH band keys of a signature: each band's ROWS values mixed into a signed 64-bit
    integer (multiply-xorshift; the same on every machine and in every process)."""
    return _band_keys(values[:BANDS * ROWS], BANDS, ROWS, _BAND_SALT)


def word_band_keys(values: np.ndarray) -> tuple[int, ...]:
    """The LSH band keys of a content-word MinHash signature: its first WORD_BANDS x WORD_ROWS
    values, salted apart from the shingle bands (one key space, one table)."""
    return _band_keys(values[:WORD_BANDS * WORD_ROWS], WORD_BANDS, WORD_ROWS, _WORD_BAND_SALT)


def bands_of(signature: bytes, size: int, words: bytes) -> tuple[int, ...]:
    """The band keys of a stored fingerprint (its ``signature``, ``size`` and ``words``), as
    ``fingerprint`` made them: a brief's word bands, else shingle bands when it has text."""
    if words:
        return word_band_keys(minhash(np.frombuffer(words, dtype="<u4")))
    if size >= MIN_TEXT_SHINGLES and signature:
        return band_keys(np.frombuffer(signature, dtype="<u4"))
    return ()


def _band_keys(values: np.ndarray, bands: int, rows: int, salt: np.ndarray) -> tuple[int, ...]:
    with np.errstate(over="ignore"):
        v = values.astype(np.uint64).reshape(bands, rows) * _MIX[:rows]
        h = np.bitwise_xor.reduce(v, axis=1) ^ salt
        h ^= h >> np.uint64(31)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(29)
    return tuple(h.view(np.int64).tolist())


def fingerprint(title: str, text: str, at: datetime | None = None) -> Fingerprint:
    """The fingerprint of an item (title and body text, already plain text)."""
    title_key = title_words(title)
    paragraphs = _story_paragraphs(title_key, text)
    words = [word for _, line_words in paragraphs for word in line_words]
    grams = shingles(words)
    title_text = " ".join(title_key)
    lead_key = _sha1(words[:LEAD_KEY_WORDS]) if len(words) >= LEAD_KEY_WORDS else None
    if not grams:
        return Fingerprint(b"", 0, lead_key, title_text, (), at)
    values = minhash(grams).astype("<u4")
    if len(grams) < MIN_TEXT_SHINGLES:
        return Fingerprint(values.tobytes(), len(grams), lead_key, title_text, (), at)
    content = content_words(title_key, words)
    if not WORD_SET_MIN <= len(content) <= WORD_SET_MAX:
        return Fingerprint(values.tobytes(), len(grams), lead_key, title_text, band_keys(values), at)
    word_set = sorted({zlib.crc32(w.encode("utf-8")) & _WORD_MASK for w in content}
                      | {zlib.crc32(n.encode("ascii")) | _NUMBER_BIT
                         for n in numbers([title, *(line for line, _ in paragraphs)])})
    return Fingerprint(values.tobytes(), len(grams), lead_key, title_text, word_band_keys(minhash(word_set)), at,
                       np.array(word_set, dtype="<u4").tobytes())


def fingerprints(items: Iterable[Item]) -> list[Fingerprint]:
    """``fingerprint(item.title, item.text)`` of each item: many in one call, for a worker
    process (which also joins each item's text, see ``Item.text``)."""
    return [fingerprint(item.title, item.text) for item in items]


def jaccard(a: Fingerprint, b: Fingerprint) -> float:
    """Estimated Jaccard similarity of the two shingle sets (0 when either has no text)."""
    if not a.signature or not b.signature:
        return 0.0
    return float(np.count_nonzero(a.values() == b.values())) / NUM_PERM


def containment(a: Fingerprint, b: Fingerprint, j: float | None = None) -> float:
    """How much of the smaller shingle set is in the larger, estimated from the Jaccard
    similarity and the set sizes: |A∩B| = J(|A|+|B|)/(1+J)."""
    j = jaccard(a, b) if j is None else j
    small = min(a.size, b.size)
    if not small:
        return 0.0
    return min(1.0, j * (a.size + b.size) / (1 + j) / small)


def numbers_disagree(a: Fingerprint, b: Fingerprint) -> bool:
    """Whether two briefs state different figures: both have numbers, and none in common."""
    na, nb = a.number_set, b.number_set
    return bool(na) and bool(nb) and na.isdisjoint(nb)


def word_jaccard(a: Fingerprint, b: Fingerprint) -> float:
    """Jaccard similarity of two short texts' content-word sets (0 unless both have one)."""
    if not a.words or not b.words:
        return 0.0
    wa, wb = a.word_set, b.word_set
    common = len(wa & wb)
    return common / (len(wa) + len(wb) - common)


def title_overlap(a: Fingerprint, b: Fingerprint) -> float:
    """Share of the shorter title's words that the other title has (0 when one has none)."""
    wa, wb = a.title_set, b.title_set
    if not wa or not wb:
        return 0.0
    return len(wa & wb) / min(len(wa), len(wb))


def similarity(a: Fingerprint, b: Fingerprint) -> float:
    """How strongly ``a`` and ``b`` are one story: 0 when they are not (see the module
    rules), else a score in (0, 1] for picking the best of several candidates."""
    apart = abs(a.at - b.at) if a.at is not None and b.at is not None else timedelta(0)
    near = apart <= timedelta(days=NEAR_DAYS)
    if a.has_text and b.has_text:
        j = jaccard(a, b)
        if not near:
            return j if j >= FAR_JACCARD else 0.0
        if j < FAR_JACCARD and title_overlap(a, b) < TITLE_OVERLAP:
            return 0.0  # unrelated headlines over shared passages (a stock sentence, background): not one story
        if j >= JACCARD:
            return j
        if a.lead_key is not None and a.lead_key == b.lead_key and containment(a, b, j) >= CONTAINMENT:
            return max(j, 0.5 * CONTAINMENT)
        w = word_jaccard(a, b) if apart <= WORD_NEAR else 0.0
        if w >= WORD_JACCARD and not numbers_disagree(a, b):
            return 0.5 * w  # two short write-ups of one event: below a shared text
        return 0.0
    if not a.title or a.title != b.title or apart > timedelta(days=NEAR_DAYS):
        return 0.0
    return 0.45 - apart.total_seconds() / 86400 / 100  # headline-only page: below any text match, nearest first


_SIGNATURE_BYTES = 4 * NUM_PERM


def similarities(a: Fingerprint, others: Sequence[Fingerprint]) -> list[float]:
    """``[similarity(a, b) for b in others]``, the same values, for many candidates at once
    (a new item meets up to the store's ``MAX_CANDIDATES``, most of them other stories that
    share a band key with it): the signatures are compared in one numpy operation, and only
    the pairs a rule could still join are looked at further; the others are 0 without
    touching their headlines or word sets."""
    out = [0.0] * len(others)
    texts: list[int] = []
    for i, b in enumerate(others):
        if a.has_text and b.has_text and len(a.signature) == len(b.signature) == _SIGNATURE_BYTES:
            texts.append(i)
        else:
            out[i] = similarity(a, b)
    if not texts:
        return out
    stacked = np.frombuffer(b"".join([others[i].signature for i in texts]), dtype="<u4").reshape(len(texts), NUM_PERM)
    same = np.count_nonzero(stacked == a.values(), axis=1).tolist()
    near, word_near = timedelta(days=NEAR_DAYS), WORD_NEAR
    for i, n in zip(texts, same, strict=True):
        b = others[i]
        j = n / NUM_PERM  # jaccard(a, b)
        apart = abs(a.at - b.at) if a.at is not None and b.at is not None else timedelta(0)
        if apart > near:
            out[i] = j if j >= FAR_JACCARD else 0.0
        elif (j >= JACCARD or (a.lead_key is not None and a.lead_key == b.lead_key)
              or (a.words and b.words and apart <= word_near)):
            out[i] = similarity(a, b)  # a rule may join them: the whole test
    return out


#: A band row keeps its fingerprint's *sketch*: the two low bits of each signature value
#: (16 bytes). Each value two signatures share shows as equal bits, so the count of equal
#: lanes is at least the count of equal values: a stored item whose sketch agrees with an
#: item's in fewer than SKETCH_MIN_SAME lanes has a Jaccard estimate below JACCARD with it,
#: known before its fingerprint is loaded. Unrelated texts agree in about a quarter of the
#: lanes (16 of 64; 19 with a band of 3 values in common), near copies in most.
SKETCH_MIN_SAME = math.ceil(JACCARD * NUM_PERM)
_SKETCH_LOW = int("01" * NUM_PERM, 2)  # the low bit of each lane of two bits


def sketch(signature: bytes) -> bytes:
    """The sketch of a signature: its values' two low bits, four values a byte (16 bytes;
    empty without a signature)."""
    if len(signature) != _SIGNATURE_BYTES:
        return b""
    return sketches(np.frombuffer(signature, dtype="<u4").reshape(1, NUM_PERM))[0].tobytes()


def sketches(values: np.ndarray) -> np.ndarray:
    """``sketch`` of each row of ``values`` (rows of NUM_PERM uint32 values), as rows of bytes."""
    lanes = (values & 3).astype(np.uint8)
    return lanes[:, 0::4] | lanes[:, 1::4] << 2 | lanes[:, 2::4] << 4 | lanes[:, 3::4] << 6


def sketch_int(data: bytes) -> int:
    """A sketch as the integer ``sketch_same`` takes (big-endian, as its hex digits read)."""
    return int.from_bytes(data, "big")


def sketch_same(a: int, b: int) -> int:
    """In how many lanes two sketches (``sketch_int``) agree: at least as many as the values
    their signatures share, so below SKETCH_MIN_SAME their Jaccard estimate is below JACCARD."""
    x = a ^ b
    return NUM_PERM - ((x | x >> 1) & _SKETCH_LOW).bit_count()
