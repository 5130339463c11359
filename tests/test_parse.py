"""parse_feed on real feed bytes: the seed articles as RSS, Atom, dates, entities, and hostile XML."""
from __future__ import annotations

import html
import time
from datetime import UTC, datetime, timedelta

import pytest
from conftest import SEEDS
from feedserver import ENTITY_BOMB, XXE, atom, rss

from monitor.parse import FeedParseError, make_xml_safe, parse_feed

ORIG_LINK = "https://sputnik.example/20161020/us-south-korea-strategic-weapons-1046556.html"
OTHER_LINK = "https://almanar.example/story/us-vows-deploy-strategic-assets-korean-peninsula"
TITLE_000 = "US Ready to Further Deploy Strategic Weapons in South Korea to Counter North"
TITLE_002 = "US Vows to Deploy Strategic Assets to Korean Peninsula After North’s Nuclear Law"



def paras(name: str) -> list[str]:
    path = next(SEEDS.glob(f"{name}_*.txt"))
    return [p.strip() for p in path.read_text().splitlines() if p.strip()]


def as_html(ps: list[str]) -> str:
    return "".join(f"<p>{html.escape(p)}</p>" for p in ps)


def all_text(feed) -> str:
    return "\n".join(f"{e.title}\n{e.summary_html}\n{e.content_html}\n{e.link}" for e in feed.entries) + (feed.title or "")


@pytest.fixture
def seed_feed() -> bytes:
    now = datetime.now(UTC)
    return rss("Seeds", "https://seeds.example/", [
        dict(title=TITLE_000, link=ORIG_LINK, guid="sputnik-1046556", description=as_html(paras("000")),
             published=now - timedelta(minutes=50)),
        dict(title=TITLE_002, link=OTHER_LINK, description=as_html(paras("002")), content=as_html(paras("002")[5:]),
             published=now - timedelta(minutes=35)),
    ])


# ---------------------------------------------------------------- good feeds

def test_seed_articles_as_rss(seed_feed):
    feed = parse_feed(seed_feed, "https://seeds.example/feed.xml", "application/rss+xml; charset=utf-8")
    assert feed.title == "Seeds" and feed.warning is None
    first, second = feed.entries
    assert first.guid == "sputnik-1046556" and first.link == ORIG_LINK and first.title == TITLE_000
    assert "<p>MOSCOW (Sputnik) — The United States confirmed" in first.summary_html
    assert "This story first appeared on Sputnik &amp; is reposted" in first.summary_html
    assert first.content_html == ""
    assert second.title == TITLE_002  # the curly apostrophe survives the trip
    assert second.guid is None  # no <guid>: normalize falls back to the canonical link
    assert "EDSCG" in second.content_html and "Please Wait..." in second.summary_html
    for e in feed.entries:
        assert e.published is not None and e.published.tzinfo is not None
        assert e.published.utcoffset() == timedelta(0)
        assert timedelta(0) < datetime.now(UTC) - e.published < timedelta(hours=2)


def test_atom_feed_resolves_relative_links_and_reads_updated():
    body = atom("Atom News", [dict(id="urn:uuid:1", title="Missile test", link="/news/1",
                                   updated=datetime(2024, 3, 1, 12, 0, tzinfo=UTC), summary="<p>Short</p>",
                                   content="<p>Long <b>body</b></p>")])
    feed = parse_feed(body, "https://atom.example/feeds/all.atom", "application/atom+xml")
    (e,) = feed.entries
    assert e.guid == "urn:uuid:1" and e.title == "Missile test"
    assert e.link == "https://atom.example/news/1"
    assert e.summary_html == "<p>Short</p>" and e.content_html == "<p>Long <b>body</b></p>"
    assert e.published == datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def test_atom_offset_dates_become_utc():
    body = (b'<feed xmlns="http://www.w3.org/2005/Atom"><title>A</title><entry><id>1</id><title>t</title>'
            b"<published>2024-01-02T03:04:05+02:00</published><updated>2024-05-05T00:00:00Z</updated></entry></feed>")
    (e,) = parse_feed(body).entries
    assert e.published == datetime(2024, 1, 2, 1, 4, 5, tzinfo=UTC)  # published wins over updated


def test_feed_without_dates_guids_or_links():
    body = rss("No dates", "https://n.example/", [dict(title="First", description="one"),
                                                  dict(title="Second", description="two")])
    feed = parse_feed(body)
    assert [e.title for e in feed.entries] == ["First", "Second"]
    assert all(e.published is None and e.guid is None and e.link is None for e in feed.entries)


def test_dates_in_the_future_are_dropped_and_old_ones_kept():
    future = datetime.now(UTC) + timedelta(days=3)
    old = datetime(2001, 9, 11, 12, 0, tzinfo=UTC)
    soon = datetime.now(UTC) + timedelta(hours=2)  # a clock a little ahead: kept
    feed = parse_feed(rss("Dates", "https://d.example/", [dict(title="future", published=future),
                                                          dict(title="old", published=old),
                                                          dict(title="soon", published=soon)]))
    by_title = {e.title: e.published for e in feed.entries}
    assert by_title["future"] is None
    assert by_title["old"] == old
    assert by_title["soon"] is not None


def test_entities_in_titles_are_decoded():
    body = (b'<?xml version="1.0"?><rss version="2.0"><channel><title>Caf&#233; &amp; Co</title>'
            b"<item><title>Tom &amp; Jerry &#8217;s caf&#xE9; &lt;3</title></item>"
            b"<item><title><![CDATA[Kim & Co <launch>]]></title></item></channel></rss>")
    feed = parse_feed(body)
    assert feed.title == "Café & Co"
    assert feed.entries[0].title == "Tom & Jerry ’s café <3"
    assert "Kim & Co" in feed.entries[1].title


def test_html_entities_undeclared_in_xml_still_decode_with_a_warning():
    body = b'<rss version="2.0"><channel><title>t</title><item><title>Caf&eacute;&nbsp;news</title></item></channel></rss>'
    feed = parse_feed(body)
    assert feed.entries[0].title == "Café\xa0news"
    assert feed.warning and "undefined entity" in feed.warning


def test_latin1_feed_is_decoded():
    body = '<?xml version="1.0" encoding="iso-8859-1"?><rss version="2.0"><channel><title>Zürich</title>' \
           "<item><title>Défense</title></item></channel></rss>"
    feed = parse_feed(body.encode("iso-8859-1"), content_type="application/rss+xml")
    assert feed.title == "Zürich" and feed.entries[0].title == "Défense"


def test_utf16_feed_is_decoded():
    body = '<?xml version="1.0" encoding="utf-16"?><rss version="2.0"><channel><title>Ωmega</title>' \
           "<item><title>Ракета</title></item></channel></rss>"
    feed = parse_feed(body.encode("utf-16"))
    assert feed.title == "Ωmega" and feed.entries[0].title == "Ракета"


def test_empty_channel_is_a_feed_with_no_entries():
    feed = parse_feed(b'<rss version="2.0"><channel><title>Quiet</title></channel></rss>')
    assert feed.title == "Quiet" and feed.entries == []


def test_bozo_feed_with_entries_is_kept_with_a_warning():
    body = b'<rss version="2.0"><channel><title>t</title><item><title>a & b</title></item></channel></rss>'
    feed = parse_feed(body)
    assert feed.entries[0].title == "a & b"
    assert feed.warning and feed.warning.startswith("XML error at line 1")


# ---------------------------------------------------------------- not feeds

@pytest.mark.parametrize(("body", "content_type", "reason"), [
    (b"", None, "not a feed: empty body"),
    (b"   \n ", None, "not a feed: empty body"),
    (bytes(range(256)) * 64, "application/rss+xml", "not a feed: XML error"),
    (b"<html><body><p>Please Wait...</p></body></html>", "text/html", "not a feed: got an HTML page"),
    (b"<!DOCTYPE html><html><head><title>x</title></head><body>hi</body></html>", None, "not a feed: got an HTML page"),
    (b"<p>Just a fragment</p>", "text/html; charset=utf-8", "not a feed: got an HTML page"),
    (b'<?xml version="1.0"?><rss version="2.0"></rss>', None, "not a feed: no channel or feed element"),
    (b'<?xml version="1.0"?><catalog><book>x</book></catalog>', None, "not a feed: no RSS, Atom or RDF root"),
    (b'{"items": []}', "application/json", "not a feed"),
    (b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "b">', None, "not a feed: unterminated declaration"),
])
def test_not_a_feed(body, content_type, reason):
    with pytest.raises(FeedParseError) as err:
        parse_feed(body, "https://x.example/feed", content_type)
    assert str(err.value).startswith(reason)


def test_truncated_feed_gives_the_entries_before_the_cut(seed_feed):
    cut = seed_feed[: seed_feed.index(b"</item>") + 200]
    feed = parse_feed(cut)
    assert feed.entries and feed.entries[0].title == TITLE_000
    assert feed.warning and "XML error" in feed.warning


def test_feed_truncated_before_any_entry_is_an_error(seed_feed):
    with pytest.raises(FeedParseError, match="no entry recovered"):
        parse_feed(seed_feed[:200])


# ---------------------------------------------------------------- hostile XML

def test_entity_bomb_is_not_expanded():
    started = time.monotonic()
    feed = parse_feed(ENTITY_BOMB)
    assert time.monotonic() - started < 1
    assert "lol" not in all_text(feed)
    assert feed.warning and "DOCTYPE removed" in feed.warning


def test_xxe_does_not_read_files():
    feed = parse_feed(XXE, "http://x.example/feed.xml", "application/rss+xml")
    text = all_text(feed)
    assert "root:" not in text and "&x;" not in text
    assert feed.entries[0].title == "North Korea test-fires a ballistic missile"


def _secret(tmp_path) -> tuple[str, str]:
    marker = "SECRET-MARKER-7f3a"
    path = tmp_path / "secret.txt"
    path.write_text(marker)
    return marker, path.as_uri()


@pytest.mark.parametrize("template", [
    # external general entity
    '<!DOCTYPE r [<!ENTITY x SYSTEM "{uri}">]><rss version="2.0"><channel><title>t</title><item><title>a &x;</title></item></channel></rss>',
    # external parameter entity pulled into the DTD
    '<!DOCTYPE r [<!ENTITY % p SYSTEM "{uri}"> %p;]><rss version="2.0"><channel><title>t</title><item><title>a</title></item></channel></rss>',
    # external DTD subset
    '<!DOCTYPE rss SYSTEM "{uri}"><rss version="2.0"><channel><title>t</title><item><title>a &x;</title></item></channel></rss>',
    # entity hidden behind a comment with quotes and brackets in it
    '<!DOCTYPE r [<!-- "]> --><!ENTITY x SYSTEM "{uri}">]><rss version="2.0"><channel><title>t</title><item><title>a &x;</title></item></channel></rss>',
    # DOCTYPE after a comment and a PI, lower-case keyword
    '<!-- hi --><?pi x?><!doctype r [<!ENTITY x SYSTEM "{uri}">]><rss version="2.0"><channel><title>t</title><item><title>a &x;</title></item></channel></rss>',
])
def test_external_entities_never_reach_the_output(tmp_path, template):
    marker, uri = _secret(tmp_path)
    body = ('<?xml version="1.0"?>\n' + template.format(uri=uri)).encode()
    try:
        feed = parse_feed(body)
    except FeedParseError:
        return  # refusing is fine too
    assert marker not in all_text(feed)


def test_xxe_in_utf16_is_neutralised_too(tmp_path):
    marker, uri = _secret(tmp_path)
    body = (f'<?xml version="1.0" encoding="utf-16"?><!DOCTYPE r [<!ENTITY x SYSTEM "{uri}">]>'
            '<rss version="2.0"><channel><title>t</title><item><title>a &x;</title></item></channel></rss>').encode("utf-16")
    feed = parse_feed(body)
    assert marker not in all_text(feed) and feed.entries[0].title.strip() == "a"


def test_entity_declared_inside_a_prolog_comment_is_not_used():
    # feedparser's own DOCTYPE handling reads entity declarations with a line-based regex; a comment
    # must not smuggle a (large) entity to its loose parser.
    big = "A" * 10_000
    body = (f'<?xml version="1.0"?>\n<!--\n<!DOCTYPE x [\n<!ENTITY a "{big}">\n]>\n-->\n'
            '<rss version="2.0"><channel><title>t</title><item><title>&a;&a;&a;</title></item></channel></rss>').encode()
    feed = parse_feed(body)
    assert big not in all_text(feed)


def test_quadratic_blowup_entity_is_not_expanded():
    big = "B" * 50_000
    refs = "&a;" * 20_000  # 1 GB if expanded
    body = (f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "{big}">]><rss version="2.0"><channel><title>t</title>'
            f"<item><title>x</title><description>{refs}</description></item></channel></rss>").encode()
    started = time.monotonic()
    feed = parse_feed(body)
    assert time.monotonic() - started < 2
    assert "BBBB" not in all_text(feed)


def test_make_xml_safe_keeps_the_declaration_and_line_numbers():
    data = b'<?xml version="1.0"?>\n<!DOCTYPE r [\n<!ENTITY x "y">\n]>\n<rss>&x;&amp;&nbsp;</rss>'
    safe = make_xml_safe(data)
    assert safe == b'<?xml version="1.0"?>\n\n\n\n<rss>&amp;&nbsp;</rss>'


def test_deeply_nested_document_finishes():
    depth = 50_000
    body = (b'<rss version="2.0"><channel><title>t</title><item><title>deep</title><description>'
            + b"<div>" * depth + b"x" + b"</div>" * depth + b"</description></item></channel></rss>")
    started = time.monotonic()
    feed = parse_feed(body)
    assert time.monotonic() - started < 10
    assert feed.entries[0].title == "deep"


def test_too_much_markup_is_refused_quickly():
    body = b'<rss version="2.0"><channel><title>t</title><item><title>x</title>' + b"<a/>" * 1_100_000
    started = time.monotonic()
    with pytest.raises(FeedParseError, match="too much markup"):
        parse_feed(body)
    assert time.monotonic() - started < 2


def test_many_declared_entities_and_references_stay_linear():
    decls = "".join(f'<!ENTITY e{i} "v{i}">' for i in range(5000))
    refs = "".join(f"&e{i % 5000};&amp;" for i in range(200_000))
    body = (f'<?xml version="1.0"?><!DOCTYPE r [{decls}]><rss version="2.0"><channel><title>t</title>'
            f"<item><title>x</title><description>{refs}</description></item></channel></rss>").encode()
    started = time.monotonic()
    feed = parse_feed(body)
    assert time.monotonic() - started < 10
    assert "v1" not in feed.entries[0].summary_html
