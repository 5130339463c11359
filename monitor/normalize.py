"""Normalize: a FeedEntry (feed HTML, raw link) becomes an Item (plain text, canonical link, stable guid).

Rules:
- HTML becomes plain text with lxml: entities decoded; script, style, template, noscript, svg and
  iframe dropped; block elements (p, br, div, li, headings, ...) end a line, a line break in the
  HTML source does not (except in <pre>); whitespace is collapsed inside each line and blank lines
  are dropped. Text without tags only has its whitespace (and any entities) normalised. Broken
  HTML, "a < b" and documents nested deeper than libxml2 allows (256 levels) still give their
  text (the last through the standard-library parser).
- The canonical link lower-cases scheme and host, drops default ports, the fragment (except
  "#!" routes), tracking parameters (utm_*, fbclid, gclid, ...) and a trailing slash on the path,
  and sorts the remaining query parameters. http and https stay as given.
- The title is one line. ``content`` is empty when it says the same as ``summary``.
- The guid is never empty: the feed's guid, else the canonical link, else "sha1:" + the SHA-1 of
  title and summary.
"""
from __future__ import annotations

import hashlib
import html as htmllib
import re
import threading
from html.parser import HTMLParser as _StdlibHTMLParser
from urllib.parse import unquote_plus, urlsplit, urlunsplit

import lxml.html
from lxml import etree

from .model import FeedEntry, Item

# ---------------------------------------------------------------- html_to_text

# Elements whose content is never text a reader sees.
_SKIP = frozenset({"script", "style", "template", "noscript", "svg", "iframe", "object", "head", "title"})
# Elements that start and end a line.
_BLOCK = frozenset({
    "address", "article", "aside", "blockquote", "body", "caption", "center", "dd", "details", "dialog",
    "dir", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3",
    "h4", "h5", "h6", "header", "hgroup", "hr", "html", "li", "main", "menu", "nav", "ol", "p", "pre",
    "section", "summary", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
})
_LINE_BREAK = frozenset({"br"})
# Characters XML (and so lxml) refuses: C0 controls except tab/newline/CR, DEL is fine.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
# libxml2 drops whatever follows "</html>"; without these end tags it lands in <body> where it belongs.
_DOCUMENT_END = re.compile(r"</\s*(?:body|html)\s*>", re.IGNORECASE)
_local = threading.local()


def _parser() -> lxml.html.HTMLParser:
    """One parser per thread: its error_log must describe this thread's last parse."""
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = lxml.html.HTMLParser(
            remove_comments=True, remove_pis=True, no_network=True, recover=True, default_doctype=False,
        )
    return parser


def html_to_text(html: str | None) -> str:
    """Plain text of an HTML fragment: one line per block, no blank lines, entities decoded."""
    if not html:
        return ""
    html = _CONTROL.sub("", html)
    if "<" not in html:
        # Plain text: nothing to parse (entity references are still decoded, as a browser would).
        return _tidy_lines(htmllib.unescape(html) if "&" in html else html)
    text = _lxml_text(html)
    if text is None:
        text = _stdlib_text(html)
    return _tidy_lines(text)


def _tidy_lines(text: str) -> str:
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def _lxml_text(html: str) -> str | None:
    """Text through lxml, or None when libxml2 gave up (e.g. nesting deeper than its limit)."""
    parser = _parser()
    try:
        root = lxml.html.document_fromstring(_DOCUMENT_END.sub("", html), parser=parser)
    except (etree.ParserError, etree.XMLSyntaxError, ValueError):
        return None
    if any(e.type_name == "ERR_RESOURCE_LIMIT" or e.level_name == "FATAL" for e in parser.error_log):
        return None
    parts: list[str] = []
    _collect(root, parts)
    return "".join(parts)


def _collect(root: etree._Element, parts: list[str]) -> None:
    """Walk the tree without recursion; block elements add line breaks around their text."""
    stack: list[tuple[etree._Element, bool]] = [(root, False)]
    in_pre = 0
    while stack:
        el, closing = stack.pop()
        tag = el.tag.lower() if isinstance(el.tag, str) else ""
        if closing:
            if tag in _BLOCK:
                parts.append("\n")
            in_pre -= tag == "pre"
            if el.tail:
                parts.append(_inline(el.tail, in_pre))
            continue
        if tag in _SKIP or not tag:  # comments / PIs / entities have a non-str tag
            if el.tail:
                parts.append(_inline(el.tail, in_pre))
            continue
        if tag in _LINE_BREAK or tag in _BLOCK:
            parts.append("\n")
        in_pre += tag == "pre"
        if el.text:
            parts.append(_inline(el.text, in_pre))
        stack.append((el, True))
        stack.extend((child, False) for child in reversed(el))


def _inline(text: str, in_pre: int) -> str:
    """Source line breaks in HTML text are spaces, except inside <pre>."""
    return text if in_pre else text.replace("\r", " ").replace("\n", " ")


class _TextCollector(_StdlibHTMLParser):
    """Fallback extractor with the same rules; no depth limit, linear time."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0
        self.in_pre = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in _SKIP:
            self.skipping += 1
        elif tag in _BLOCK or tag in _LINE_BREAK:
            self.parts.append("\n")
        self.in_pre += tag == "pre"

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        if tag in _BLOCK or tag in _LINE_BREAK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in _BLOCK:
            self.parts.append("\n")
        if tag == "pre":
            self.in_pre = max(0, self.in_pre - 1)

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(_inline(data, self.in_pre))


def _stdlib_text(html: str) -> str:
    collector = _TextCollector()
    collector.feed(html)
    collector.close()
    return "".join(collector.parts)


# ---------------------------------------------------------------- canonical_link

# Query parameters that only say how a reader arrived (compared lower-cased); ``utm_*`` too.
TRACKING_PARAMS = frozenset({
    "fbclid", "gclid", "gclsrc", "dclid", "gbraid", "wbraid", "msclkid", "mc_cid", "mc_eid", "igshid",
    "yclid", "_ga", "_gl", "ref_src", "ref_url", "cmpid", "cmp", "ncid", "sr_share", "ocid", "icid",
    "smid", "ftag", "mkt_tok", "_hsenc", "_hsmi", "hsctatracking", "__twitter_impression", "at_medium",
    "at_campaign", "at_custom1", "at_custom2", "at_custom3", "at_custom4", "wt.mc_id", "wt_mc", "s_cid",
    "ns_source", "ns_mchannel", "ns_campaign", "ns_linkname", "ns_fee", "oly_anon_id", "oly_enc_id",
    "vero_id", "vero_conv", "rb_clickid", "soc_src", "soc_trk", "spm", "share", "xtor", "guccounter",
})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _is_tracking(param: str) -> bool:
    key = unquote_plus(param.split("=", 1)[0]).strip().lower()
    return key.startswith("utm_") or key in TRACKING_PARAMS


def canonical_link(url: str | None) -> str | None:
    """The form two outlets' links to one page share; None for no link. Non-http(s) text comes back stripped."""
    if url is None:
        return None
    url = url.strip()
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.netloc:
        return url
    netloc = _canonical_netloc(parts.netloc, scheme)
    path = parts.path.rstrip("/") or "/"
    query = "&".join(sorted(p for p in parts.query.split("&") if p and not _is_tracking(p)))
    fragment = parts.fragment if parts.fragment.startswith("!") else ""  # "#!/story/1" is a route
    return urlunsplit((scheme, netloc, path, query, fragment))


def _canonical_netloc(netloc: str, scheme: str) -> str:
    userinfo, _, hostport = netloc.rpartition("@")
    if hostport.startswith("["):  # IPv6 literal
        host, _, rest = hostport.partition("]")
        host, port = host + "]", rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = hostport.partition(":")
    host = host.lower()
    if port.isdigit() and int(port) == _DEFAULT_PORTS[scheme]:
        port = ""
    hostport = f"{host}:{port}" if port else host
    return f"{userinfo}@{hostport}" if userinfo else hostport


# ---------------------------------------------------------------- normalize_entry

def entry_keys(entry: FeedEntry) -> tuple[str | None, str | None]:
    """(guid, canonical link) of ``entry`` as :func:`normalize_entry` gives them, without
    turning its HTML into text (cheap: a poll checks which items it has seen already before
    it normalises only the others). The guid is None when the entry has neither a guid nor a
    link: then it is made from the entry's text."""
    link = (entry.link or "").strip() or None
    canonical = canonical_link(link)
    return (entry.guid or "").strip() or canonical, canonical


def normalize_entry(entry: FeedEntry) -> Item:
    title = " ".join(html_to_text(entry.title).split())
    summary = html_to_text(entry.summary_html)
    content = html_to_text(entry.content_html)
    if content == summary:
        content = ""
    link = (entry.link or "").strip() or None
    guid, canonical = entry_keys(entry)
    guid = guid or _content_guid(title, summary)
    return Item(
        guid=guid, link=link, canonical_link=canonical, title=title, summary=summary, content=content,
        published=entry.published,
    )


def _content_guid(title: str, summary: str) -> str:
    return "sha1:" + hashlib.sha1(f"{title}\n{summary}".encode()).hexdigest()
