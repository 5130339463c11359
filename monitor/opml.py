"""OPML: the feed lists readers export. Read into sources (name, url), never trusted as XML.

Rules:
- Every ``<outline>`` with an ``xmlUrl`` (any depth, any ``type``) is a feed; its name is its
  ``title`` (else ``text``, else the URL's host and path) reduced to a short slug of letters,
  digits, ``-`` and ``_``; names are made unique within the file (``-2``, ``-3`` ...).
- Only ``http``/``https`` URLs are kept; the others are reported and skipped.
- The XML is parsed without entity expansion, DTDs or network access, with a size cap.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

MAX_OPML_BYTES = 20_000_000


class OpmlError(ValueError):
    """An OPML file that cannot be read; str() is the reason."""


@dataclass(frozen=True)
class OpmlFeed:
    name: str  # unique within the file
    url: str
    line: int  # where its outline is, for messages
    base: str = ""  # the slug before it was made unique


def slug(text: str, limit: int = 48) -> str:
    s = re.sub(r"[^A-Za-z0-9_-]+", "-", text.strip().lower()).strip("-_")
    return s[:limit].rstrip("-_") or "feed"


def read_opml(path: str | Path) -> tuple[list[OpmlFeed], list[str]]:
    """The feeds of an OPML file and the problems with skipped outlines (``line: why``)."""
    from lxml import etree

    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise OpmlError(f"cannot read {p}: {e.strerror or e}") from None
    if len(data) > MAX_OPML_BYTES:
        raise OpmlError(f"{p}: larger than {MAX_OPML_BYTES // 1_000_000} MB")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                             recover=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as e:
        raise OpmlError(f"{p}:{e.lineno or 0}: not well-formed XML ({e.msg})") from None
    if root.tag.lower() != "opml":
        raise OpmlError(f"{p}: not an OPML file (the root element is <{root.tag}>)")
    feeds: list[OpmlFeed] = []
    skipped: list[str] = []
    used: dict[str, int] = {}
    for el in root.iter("outline"):
        url = (el.get("xmlUrl") or el.get("xmlurl") or "").strip()
        if not url:
            continue
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            skipped.append(f"{el.sourceline}: {url!r} is not an http(s) URL")
            continue
        label = el.get("title") or el.get("text") or ""
        if not label.strip():
            parts = urlsplit(url)
            label = (parts.hostname or "") + parts.path
        base = slug(label)
        n = used.get(base, 0) + 1
        used[base] = n
        feeds.append(OpmlFeed(base if n == 1 else f"{base}-{n}", url, el.sourceline or 0, base))
    return feeds, skipped
