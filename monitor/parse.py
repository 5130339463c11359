"""Parse: feed bytes -> ParsedFeed, with feedparser as the parser of record; XML made safe first.

Rules:
- Before feedparser sees the bytes they are decoded to UTF-8 (feedparser's own detection: HTTP
  charset, BOM, XML declaration) and all before the root element but the XML declaration is
  removed: every DOCTYPE with its internal subset, comments, PIs. No entity declared by a feed is
  ever expanded (no "billion laughs"), no external entity is ever loaded (no XXE). References to entities the feed declared itself are
  dropped; the predefined XML and HTML entities keep their usual meaning.
- Work is bounded: bodies over MAX_BODY_BYTES or with more than MAX_MARKUP tags are refused.
  feedparser's cost is linear in the markup, whatever the nesting depth.
- FeedParseError (a reason for the log) when the bytes are not a usable feed: empty, garbage,
  an HTML page, a document without a channel/feed element, malformed XML with no entry recovered.
  A feed that parses with a problem (feedparser's bozo) but yields entries is fine: the problem
  goes into ParsedFeed.warning. Truncated XML gives whatever entries feedparser recovers.
- ``ttl``: the feed's own freshness hint in seconds (RSS ``<ttl>`` minutes, else
  ``sy:updatePeriod`` / ``sy:updateFrequency``), for adaptive polling.
- Entries: guid = id, link, title (feedparser's text), summary_html = summary, content_html =
  first content value, published = published or updated date as aware UTC; a date more than a
  day in the future is dropped (None).
"""
from __future__ import annotations

import html.entities
import re
import time
import xml.sax
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime

import feedparser
from feedparser.encodings import convert_to_utf8

from .fastparse import fast_parse
from .model import FeedEntry, ParsedFeed, plausible_published

MAX_BODY_BYTES = 64 * 1024 * 1024  # fetch caps bodies well below this; this guards other callers
MAX_MARKUP = 1_000_000  # '<' characters: ~20 s of feedparser at worst; real feeds use far fewer


class FeedParseError(ValueError):
    """The bytes are not a usable feed; str(err) is the reason for the log."""


def warm() -> None:
    """Nothing: a parse worker that runs it has started and imported this module."""


class ParsePool(ProcessPoolExecutor):
    """Worker processes for feedparser. They start when first wanted (``wanted()``), in the
    background: a worker takes ~0.5 s of CPU to start (the forkserver, then its imports), which
    a cycle of plain feeds never pays (lxml parses those in a thread, see ``parse_plain``); the
    pipeline parses in threads until they are up."""

    def __init__(self, workers: int, mp_context) -> None:
        super().__init__(max_workers=workers, mp_context=mp_context)
        self._workers = workers
        self._warm: list[Future] | None = None

    def wanted(self) -> bool:
        """The workers are up to take a parse; the first call starts them (and says False)."""
        if self._warm is None:
            self._warm = [self.submit(warm) for _ in range(self._workers)]  # each submit starts a worker
        return all(f.done() for f in self._warm)


def parse_feed(body: bytes, url: str | None = None, content_type: str | None = None, fast: bool = True) -> ParsedFeed:
    """Parse one feed document. Raises FeedParseError when it is not a usable feed.

    ``fast``: plain well-formed RSS 2.0 / Atom 1.0 goes through ``monitor.fastparse`` (lxml,
    same items); everything else, and everything with ``fast=False``, through feedparser."""
    data, warnings = _prepare(body, content_type)
    if fast:
        quick = fast_parse(data)
        if quick is not None:
            return replace(quick, warning="; ".join(warnings) or None)
    headers = {"content-type": "application/xml; charset=utf-8"}
    if url:
        headers["content-location"] = url  # base for relative links
    parsed = feedparser.parse(data, response_headers=headers)
    _check_is_feed(parsed, data, content_type)
    if parsed.get("bozo"):
        warnings.append(_bozo_reason(parsed.get("bozo_exception")))
    entries = [_entry(e) for e in parsed.entries]
    title = parsed.feed.get("title") or None
    return ParsedFeed(title=title, entries=entries, warning="; ".join(warnings) or None, ttl=_ttl(parsed.feed))


def parse_plain(body: bytes, content_type: str | None = None) -> ParsedFeed | None:
    """``parse_feed``'s fast path alone: the feed when it is plain RSS 2.0 / Atom 1.0 (lxml,
    quick enough for a thread), None when it needs feedparser. Raises FeedParseError as
    ``parse_feed`` does for bodies no parser takes."""
    data, warnings = _prepare(body, content_type)
    quick = fast_parse(data)
    return None if quick is None else replace(quick, warning="; ".join(warnings) or None)


def _prepare(body: bytes, content_type: str | None) -> tuple[bytes, list[str]]:
    """The body checked for size, as UTF-8, made safe for XML parsing; the warnings on the way."""
    if len(body) > MAX_BODY_BYTES:
        raise FeedParseError(f"feed too large to parse ({len(body):,} bytes)")
    if not body or body.isspace():
        raise FeedParseError("not a feed: empty body")
    warnings: list[str] = []
    data = _to_utf8(body, content_type, warnings)
    if data.count(b"<") > MAX_MARKUP:
        raise FeedParseError(f"feed has too much markup to parse (more than {MAX_MARKUP:,} tags)")
    return make_xml_safe(data, warnings), warnings


_PERIODS = {"hourly": 3600, "daily": 86400, "weekly": 604800, "monthly": 2592000, "yearly": 31536000}


def _ttl(feed: feedparser.FeedParserDict) -> float | None:
    """How long the feed says it stays fresh: RSS ``<ttl>`` (minutes), else the syndication
    module's ``updatePeriod`` divided by ``updateFrequency``. None when it says nothing usable."""
    try:
        ttl = float(str(feed.get("ttl", "")).strip())
        if 0 < ttl < 60 * 24 * 366:
            return ttl * 60
    except ValueError:
        pass
    period = _PERIODS.get(str(feed.get("sy_updateperiod", "")).strip().lower())
    if period is None:
        return None
    try:
        frequency = int(str(feed.get("sy_updatefrequency", "1")).strip() or "1")
    except ValueError:
        frequency = 1
    return period / max(1, frequency)


# ---------------------------------------------------------------- encoding

_ADDED_DECLARATION = b"<?xml version='1.0' encoding='utf-8'?>\n"


def _to_utf8(body: bytes, content_type: str | None, warnings: list[str]) -> bytes:
    """Decode as feedparser would (RFC 3023 rules, BOM, XML declaration), re-encoded as UTF-8 with a
    matching declaration: the safety pass below then only has to read UTF-8."""
    result: dict = {}
    headers = {"content-type": content_type} if content_type else {}
    data = convert_to_utf8(headers, body, result)
    if not body.lstrip().startswith((b"<?xml", b"\xef\xbb\xbf<?xml")) and data.startswith(_ADDED_DECLARATION):
        data = data[: len(_ADDED_DECLARATION) - 1] + data[len(_ADDED_DECLARATION):]  # keep line numbers
    exc = result.get("bozo_exception")
    if exc is not None and not result.get("encoding"):
        raise FeedParseError(f"not a feed: {exc}")
    if exc is not None and not isinstance(exc, feedparser.NonXMLContentType):
        warnings.append(str(exc))
    return data


# ---------------------------------------------------------------- XML safety

_NAME = rb"[A-Za-z_:\x80-\xff][-A-Za-z0-9_.:\x80-\xff]*"
_ENTITY_DECL = re.compile(rb"<!ENTITY\s+(%\s+)?(" + _NAME + rb")", re.IGNORECASE)
_ENTITY_REF = re.compile(rb"&(" + _NAME + rb");")
_DOCTYPE_TOKEN = re.compile(rb"[\"'\[\]>]|<!--|<\?")
_SAFE_ENTITIES = frozenset({"amp", "lt", "gt", "quot", "apos"}) | frozenset(html.entities.name2codepoint)


def make_xml_safe(data: bytes, warnings: list[str] | None = None) -> bytes:
    """Keep only the XML declaration before the root element: every DOCTYPE (with its internal
    subset), other declaration, comment, PI and stray text there is removed, and so are references
    to the entities those declarations named. Expects UTF-8 (or another ASCII-compatible) bytes.

    Raises FeedParseError for a declaration that does not end (nothing safe can be cut out of it).
    """
    declared: set[bytes] = set()
    head = b""
    removed_doctype = False
    pos = 0
    while True:
        lt = data.find(b"<", pos)
        if lt < 0:
            return data  # no element at all: nothing to make safe, feedparser will say it is no feed
        if data.startswith(b"<?", lt):
            close = data.find(b"?>", lt + 2)
            if close < 0:
                raise FeedParseError("not a feed: unterminated processing instruction before the root element")
            if not head and data[lt:lt + 6].lower() in (b"<?xml ", b"<?xml?"):
                head = data[lt:close + 2]
            pos = close + 2
        elif data.startswith(b"<!--", lt):
            close = data.find(b"-->", lt + 4)
            if close < 0:
                raise FeedParseError("not a feed: unterminated comment before the root element")
            pos = close + 3
        elif data.startswith(b"<!", lt):
            end = _declaration_end(data, lt)
            if end < 0:
                raise FeedParseError("not a feed: unterminated declaration (DOCTYPE) before the root element")
            declared.update(m.group(2) for m in _ENTITY_DECL.finditer(data, lt, end) if not m.group(1))
            removed_doctype = True
            pos = end
        elif _is_name_start(data, lt + 1):
            pos = lt
            break
        else:
            pos = lt + 1
    if removed_doctype and warnings is not None:
        warnings.append("DOCTYPE removed (entities a feed declares are never expanded)")
    rest = data[pos:]
    if declared:
        rest = _drop_entity_references(rest, declared)
    # removed lines become empty lines, so parser errors still name the feed's own line numbers
    newlines = b"\n" * (data.count(b"\n", 0, pos) - head.count(b"\n"))
    return head + newlines + rest


def _is_name_start(data: bytes, i: int) -> bool:
    return i < len(data) and (chr(data[i]).isalpha() or data[i] in b"_:" or data[i] >= 0x80)


def _declaration_end(data: bytes, start: int) -> int:
    """Index just past the ``<!...>`` declaration (e.g. a DOCTYPE) starting at ``start``: quoted
    literals, comments, PIs and an internal subset ``[...]`` are skipped. -1 when it never ends."""
    pos = start + 2
    in_subset = False
    while True:
        m = _DOCTYPE_TOKEN.search(data, pos)
        if m is None:
            return -1
        tok = m.group()
        if tok in (b'"', b"'"):
            close = data.find(tok, m.end())
            if close < 0:
                return -1
            pos = close + 1
        elif tok in (b"<!--", b"<?"):
            close = data.find(b"-->" if tok == b"<!--" else b"?>", m.end())
            if close < 0:
                return -1
            pos = close + (3 if tok == b"<!--" else 2)
        elif tok == b"[":
            in_subset = True
            pos = m.end()
        elif tok == b"]":
            in_subset = False
            pos = m.end()
        elif tok == b">" and not in_subset:
            return m.end()
        else:
            pos = m.end()


def _drop_entity_references(data: bytes, declared: set[bytes]) -> bytes:
    """Remove references to entities only the (removed) DOCTYPE defined; the XML and HTML ones stay."""
    drop = {n for n in declared if n.decode("utf-8", "replace") not in _SAFE_ENTITIES}
    if not drop:
        return data
    return _ENTITY_REF.sub(lambda m: b"" if m.group(1) in drop else m.group(0), data)


# ---------------------------------------------------------------- is it a feed?

_HTML_HINT = re.compile(rb"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html[\s>]|head[\s>]|body[\s>])",
                        re.IGNORECASE | re.DOTALL)


def _check_is_feed(parsed: feedparser.FeedParserDict, data: bytes, content_type: str | None) -> None:
    version = parsed.get("version") or ""
    exc = parsed.get("bozo_exception") if parsed.get("bozo") else None
    if parsed.entries:
        return
    if not version:
        mime = (content_type or "").split(";")[0].strip().lower()
        if _HTML_HINT.match(data[:4096]) or (mime in ("text/html", "application/xhtml+xml") and b"<rss" not in data
                                             and b"<feed" not in data):
            raise FeedParseError("not a feed: got an HTML page")
        if isinstance(exc, xml.sax.SAXException):
            raise FeedParseError(f"not a feed: {_bozo_reason(exc)}")
        raise FeedParseError("not a feed: no RSS, Atom or RDF root element")
    if not parsed.feed:
        raise FeedParseError("not a feed: no channel or feed element")
    if isinstance(exc, xml.sax.SAXException):
        raise FeedParseError(f"malformed feed, no entry recovered: {_bozo_reason(exc)}")


def _bozo_reason(exc: BaseException | None) -> str:
    if exc is None:
        return "malformed feed"
    if isinstance(exc, xml.sax.SAXParseException):
        return f"XML error at line {exc.getLineNumber()}, column {exc.getColumnNumber()}: {exc.getMessage()}"
    return str(exc) or exc.__class__.__name__


# ---------------------------------------------------------------- entries

def _entry(e: feedparser.FeedParserDict) -> FeedEntry:
    content = e.get("content") or []
    return FeedEntry(
        guid=(e.get("id") or "").strip() or None,
        link=(e.get("link") or "").strip() or None,
        title=e.get("title") or "",
        summary_html=e.get("summary") or "",
        content_html=(content[0].get("value") or "") if content else "",
        published=_published(e),
    )


def _published(e: feedparser.FeedParserDict) -> datetime | None:
    parsed: time.struct_time | None = e.get("published_parsed") or e.get("updated_parsed")
    if not parsed:
        return None
    try:
        when = datetime(*parsed[:5], min(parsed[5], 59), tzinfo=UTC)
    except (TypeError, ValueError, OverflowError):
        return None
    return plausible_published(when)
