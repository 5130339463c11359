"""The lxml fast path gives the same items as feedparser wherever it answers, and answers for
the plain feeds most publishers serve (else it would be dead weight)."""
from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from conftest import SHARED
from feedserver import ENTITY_BOMB, XXE, atom, rss
from seedfeeds import seed_feeds

from monitor.fastparse import fast_parse
from monitor.normalize import normalize_entry
from monitor.parse import _to_utf8, make_xml_safe, parse_feed

NOW = datetime.now(UTC).replace(microsecond=0)


def corpus_feeds(n: int = 40, per: int = 12) -> list[bytes]:
    rows = [json.loads(line) for line in (SHARED / "corpus" / "items.jsonl").read_text().splitlines() if line.strip()]
    rng = random.Random(7)
    feeds = []
    for k in range(n):
        picked = rng.sample(rows, per)
        items = [dict(title=r["title"], link=f"https://o{k}.example/{j}", guid=f"o{k}-{j}" if j % 2 else None,
                      description=r.get("summary") or "", content=r.get("text") if j % 3 == 0 else None,
                      published=NOW - timedelta(minutes=37 * j)) for j, r in enumerate(picked)]
        items = [{key: v for key, v in it.items() if v is not None} for it in items]
        feeds.append(rss(f"Outlet {k}", f"https://o{k}.example/", items))
        feeds.append(atom(f"Atom {k}", [dict(id=f"urn:o{k}:{j}", title=r["title"], link=f"https://a{k}.example/{j}",
                                             updated=NOW - timedelta(hours=j), content=r.get("summary") or "x")
                                        for j, r in enumerate(picked)]))
    return feeds


def fixture_feeds() -> list[bytes]:
    odd = [
        # relative links, xml:base, entities, CDATA, markup in titles, permalink guids, odd dates
        b'<rss version="2.0"><channel><title>t</title><item><title>A</title><link>/rel/1</link></item></channel></rss>',
        b'<rss version="2.0" xml:base="https://b.example/"><channel><title>t</title><item><title>A</title>'
        b'<link>x/1</link></item></channel></rss>',
        b'<rss version="2.0"><channel><title>t</title><item><title>AT&amp;T &lt;b&gt;wins&lt;/b&gt;</title>'
        b'<link>https://e.example/1</link><description><![CDATA[<p>Body <script>x()</script> text</p>]]></description>'
        b'</item></channel></rss>',
        b'<rss version="2.0"><channel><title>t</title><item><title>P</title><guid>https://g.example/1</guid>'
        b'</item></channel></rss>',
        b'<rss version="2.0"><channel><title>t</title><item><title>D</title><link>https://d.example/1</link>'
        b'<pubDate>2026-11-20T10:00:00Z</pubDate></item></channel></rss>',
        b'<rss version="2.0"><channel><title>t</title><item><title>E</title><link>https://d.example/2</link>'
        b'<pubDate>Fri, 20 Nov 2026 10:00:00 EST</pubDate><description>plain &amp; simple</description>'
        b'</item></channel></rss>',
        b'<rss version="2.0"><channel><title>t</title><ttl>45</ttl><item><title>F</title><link>https://d.example/3</link>'
        b'<description>  spaced  </description></item></channel></rss>',
        b'<feed xmlns="http://www.w3.org/2005/Atom"><title>a</title><entry><id>urn:1</id><title type="html">'
        b'&lt;b&gt;x&lt;/b&gt;</title><link href="https://a.example/1"/><summary type="xhtml"><div xmlns='
        b'"http://www.w3.org/1999/xhtml">hi</div></summary></entry></feed>',
        b'<feed xmlns="http://www.w3.org/2005/Atom"><title>a</title><entry><id>urn:2</id><title>T</title>'
        b'<link rel="enclosure" href="https://a.example/x.mp3"/><link href="https://a.example/2"/>'
        b'<published>2026-11-20T10:00:00+02:00</published><summary>s</summary><content type="html">'
        b'&lt;p&gt;c&lt;/p&gt;</content></entry></feed>',
        XXE, ENTITY_BOMB,
    ]
    return [*seed_feeds().values(), *odd]


def items_of(feed) -> list:
    return [normalize_entry(e) for e in feed.entries]


def prepared(body: bytes) -> bytes:
    warnings: list[str] = []
    return make_xml_safe(_to_utf8(body, "application/rss+xml", warnings), warnings)


@pytest.mark.parametrize("source", ["corpus", "fixtures"])
def test_fast_path_gives_feedparsers_items_wherever_it_answers(source):
    feeds = corpus_feeds() if source == "corpus" else fixture_feeds()
    answered = 0
    for body in feeds:
        slow = parse_feed(body, "https://feed.example/rss", "application/rss+xml", fast=False)
        quick = fast_parse(prepared(body))
        if quick is None:
            continue
        answered += 1
        assert items_of(quick) == items_of(slow), body[:300]
        assert quick.title == slow.title and quick.ttl == slow.ttl
        assert items_of(parse_feed(body, "https://feed.example/rss", "application/rss+xml")) == items_of(slow)
    if source == "corpus":
        # plain RSS and Atom take the fast path (a corpus title with markup sends its feed to feedparser)
        assert answered >= 0.8 * len(feeds)
    else:
        assert 5 <= answered < len(feeds)  # the odd ones go to feedparser


def test_fast_path_declines_what_feedparser_must_handle():
    for body in (b"<html><body>no</body></html>", b"not xml at all", b"<rss><channel><item><title>x",
                 b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/>'):
        assert fast_parse(body) is None
