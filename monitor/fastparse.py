"""A fast path for plain, well-formed RSS 2.0 and Atom 1.0 feeds, with lxml.

feedparser stays the parser of record (``monitor.parse``): this module only answers for the
feeds it fully understands, and says None for everything else, which then goes to feedparser.
It must give the same items as feedparser wherever it answers; ``tests/test_fastparse.py``
checks that on the project's feed fixtures and on feeds built from the corpus.

Rules (anything outside them -> None):
- The bytes are well-formed XML (after ``parse.make_xml_safe``), parsed without entity
  expansion, DTDs or network; the root is ``<rss>`` with a ``<channel>``, or an Atom 1.0 ``<feed>``.
- RSS items: ``guid``, ``link``, ``title``, ``description``, ``content:encoded``, ``pubDate``
  (RFC 822, as ``email.utils`` reads it). Atom entries: ``id``, the ``alternate`` (or
  rel-less) ``link``, ``title`` / ``summary`` / ``content`` of type text or html,
  ``published`` or ``updated`` (RFC 3339).
- Titles may carry markup (``<b>`` in escaped text): the items compare equal after
  ``normalize_entry`` turns it into text. ``tests/test_fastparse.py`` is the judge.
- Bail out (None) on what feedparser treats specially: script or style in a title, an xhtml or
  out-of-line Atom text construct, a relative link, ``xml:base``, an item without a guid and
  a link, a date this module cannot read, an RSS guid used as the link (``isPermaLink``
  without a ``<link>``).
"""
from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from lxml import etree

from .model import FeedEntry, ParsedFeed, plausible_published

ATOM = "{http://www.w3.org/2005/Atom}"
CONTENT_ENCODED = "{http://purl.org/rss/1.0/modules/content/}encoded"
XML_BASE = "{http://www.w3.org/XML/1998/namespace}base"


class _Bail(Exception):
    """Not for the fast path: let feedparser do it."""


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, recover=False,
                           huge_tree=False, remove_comments=True, remove_pis=True)


def fast_parse(data: bytes) -> ParsedFeed | None:
    """The feed, or None when it is not one this fast path answers for."""
    try:
        root = etree.fromstring(data, _parser())
    except (etree.XMLSyntaxError, ValueError):
        return None
    try:
        if root.tag == "rss":
            return _rss(root)
        if root.tag == f"{ATOM}feed":
            return _atom(root)
    except _Bail:
        return None
    return None


def _text(el: etree._Element | None) -> str:
    if el is None:
        return ""
    if len(el):  # child elements inside a text field: markup feedparser would handle
        raise _Bail
    return (el.text or "").strip()  # feedparser strips every element's text


def _plain_title(text: str) -> str:
    if "<script" in text.lower() or "<style" in text.lower():  # feedparser's sanitiser has work to do
        raise _Bail
    return text


def _absolute(url: str) -> str:
    url = url.strip()
    if url and not url.lower().startswith(("http://", "https://")):
        raise _Bail
    return url


def _rss_date(text: str) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        raise _Bail from None
    if when is None:
        raise _Bail
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return _checked(when.astimezone(UTC))


def _atom_date(text: str) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _Bail from None
    if when.tzinfo is None:
        raise _Bail
    return _checked(when.astimezone(UTC))


def _checked(when: datetime) -> datetime | None:
    return plausible_published(when.replace(microsecond=0))


def _rss(root: etree._Element) -> ParsedFeed:
    channel = root.find("channel")
    if channel is None or root.get(XML_BASE) or channel.get(XML_BASE):
        raise _Bail
    entries = []
    for item in channel.iter("item"):
        if item.get(XML_BASE):
            raise _Bail
        guid_el = item.find("guid")
        guid = _text(guid_el).strip()
        link = _absolute(_text(item.find("link")))
        if not link and guid_el is not None and (guid_el.get("isPermaLink") or "true").lower() != "false":
            raise _Bail  # feedparser takes a permalink guid as the link
        if not guid and not link:
            raise _Bail
        content = _text(item.find(CONTENT_ENCODED))
        entries.append(FeedEntry(
            guid=guid or None, link=link or None, title=_plain_title(_text(item.find("title"))),
            summary_html=_text(item.find("description")) or content, content_html=content,
            published=_rss_date(_text(item.find("pubDate"))),
        ))
    title = _text(channel.find("title")).strip() or None
    return ParsedFeed(title=title, entries=entries, ttl=_rss_ttl(channel))


def _rss_ttl(channel: etree._Element) -> float | None:
    text = _text(channel.find("ttl")).strip()
    try:
        ttl = float(text)
    except ValueError:
        ttl = 0
    if 0 < ttl < 60 * 24 * 366:
        return ttl * 60
    if channel.find("{http://purl.org/rss/1.0/modules/syndication/}updatePeriod") is not None:
        raise _Bail  # the syndication module: feedparser reads it
    return None


def _atom_text(el: etree._Element | None, title: bool = False) -> str:
    if el is None:
        return ""
    kind = (el.get("type") or "text").lower()
    if kind not in ("text", "html") or el.get("src") or el.get(XML_BASE):
        raise _Bail
    text = _text(el)
    if title and kind == "html":
        raise _Bail
    return text


def _atom(root: etree._Element) -> ParsedFeed:
    if root.get(XML_BASE):
        raise _Bail
    entries = []
    for entry in root.iter(f"{ATOM}entry"):
        if entry.get(XML_BASE):
            raise _Bail
        link = ""
        for el in entry.findall(f"{ATOM}link"):
            if (el.get("rel") or "alternate") == "alternate":
                link = _absolute(el.get("href") or "")
                break
        guid = _text(entry.find(f"{ATOM}id")).strip()
        if not guid and not link:
            raise _Bail
        published = entry.find(f"{ATOM}published")
        if published is None:
            published = entry.find(f"{ATOM}updated")
        content = _atom_text(entry.find(f"{ATOM}content"))
        entries.append(FeedEntry(
            guid=guid or None, link=link or None, title=_atom_text(entry.find(f"{ATOM}title"), title=True),
            # feedparser gives an entry without a summary its content as the summary
            summary_html=_atom_text(entry.find(f"{ATOM}summary")) or content, content_html=content,
            published=_atom_date(_text(published)),
        ))
    title = _text(root.find(f"{ATOM}title")).strip() or None
    return ParsedFeed(title=title, entries=entries)
