"""normalize: HTML to text, canonical links, FeedEntry -> Item."""
from __future__ import annotations

import html
from datetime import UTC, datetime

import pytest
from conftest import SEEDS
from feedserver import rss

from monitor.model import FeedEntry
from monitor.normalize import canonical_link, html_to_text, normalize_entry
from monitor.parse import parse_feed

REPOST_LINK = ("https://repost.example/news/2016/10/us-ready-to-deploy-strategic-weapons-korea/"
               "?utm_source=rss&utm_medium=feed")


def seed_text(name: str) -> str:
    return next(SEEDS.glob(f"{name}_*.txt")).read_text()


# ---------------------------------------------------------------- html_to_text

@pytest.mark.parametrize(("source", "text"), [
    ("<p>Tom &amp; Jerry&nbsp;&#8217;s</p>", "Tom & Jerry ’s"),
    ("<p>one</p><p>two</p>", "one\ntwo"),
    ("a<br>b<br/>c", "a\nb\nc"),
    ("<div>x<div>y</div>z</div>", "x\ny\nz"),
    ("<ul><li>first</li><li>second</li></ul>after", "first\nsecond\nafter"),
    ("<h2>Head</h2>para <b>bold</b> <i>it</i>", "Head\npara bold it"),
    ("<p>  lots   of \n\t space  </p>", "lots of space"),
    ("<p>wrapped\nsource\r\nlines</p>", "wrapped source lines"),
    ("<pre>line 1\nline 2</pre>after", "line 1\nline 2\nafter"),
    ("<script>alert('x')</script><style>p{}</style><p>kept</p><noscript>js off</noscript>", "kept"),
    ("<table><tr><td>a</td><td>b</td></tr></table>", "a\nb"),
    ("<!-- comment --><p>visible</p>", "visible"),
    ("<p>unclosed <b>bold <i>and more", "unclosed bold and more"),
    ("</div></div>stray closers</p>", "stray closers"),
    ("<p>x</p></body></html>after the end", "x\nafter the end"),
    ("a < b and c > d", "a < b and c > d"),
    ("x <3 y", "x <3 y"),
    ("", ""),
    ("   \n\n ", ""),
    ("<p></p><br><div> </div>", ""),
    ("AT&amp;T &lt;rocks&gt;", "AT&T <rocks>"),
    ("nul\x00 and\x07 bell", "nul and bell"),
])
def test_html_to_text(source, text):
    assert html_to_text(source) == text


def test_none_is_empty():
    assert html_to_text(None) == ""


def test_plain_text_only_has_its_whitespace_normalised():
    assert html_to_text("First  line\n\n\n  second\tline  \n") == "First line\nsecond line"


def test_nesting_deeper_than_libxml2_allows_keeps_its_text():
    deep = "<div>" * 2000 + "deep text" + "</div>" * 2000 + "<p>after</p>"
    assert html_to_text(deep) == "deep text\nafter"
    bold = "<b>" * 500 + "bold text"
    assert html_to_text(bold) == "bold text"


def test_seed_002_text_survives_as_plain_text():
    raw = seed_text("002")
    text = html_to_text(raw)
    lines = [" ".join(line.split()) for line in raw.splitlines() if line.strip()]
    assert text.splitlines() == lines
    assert "No Script" in text and "Please Wait..." in text and "40 Years of Hezbollah" in text


def test_seed_002_text_survives_as_feed_html():
    raw = seed_text("002")
    paras = [p.strip() for p in raw.splitlines() if p.strip()]
    text = html_to_text("".join(f"<p>{html.escape(p)}</p>" for p in paras))
    assert text.splitlines() == [" ".join(p.split()) for p in paras]
    assert 'they will "stand ready for all possible scenarios," the statement added.' in text
    assert "folder_openUnited States access_time 11 days ago" in text


# ---------------------------------------------------------------- canonical_link

@pytest.mark.parametrize(("url", "canonical"), [
    ("https://Repost.Example:443/news/x/?utm_source=rss&utm_medium=feed#top", "https://repost.example/news/x"),
    (REPOST_LINK, "https://repost.example/news/2016/10/us-ready-to-deploy-strategic-weapons-korea"),
    ("HTTP://Example.COM:80/a/B/", "http://example.com/a/B"),
    ("http://example.com:443/x", "http://example.com:443/x"),
    ("https://example.com:8443/x", "https://example.com:8443/x"),
    ("https://example.com", "https://example.com/"),
    ("https://example.com/", "https://example.com/"),
    ("https://example.com/?b=2&a=1", "https://example.com/?a=1&b=2"),
    ("https://example.com/p?id=7&fbclid=abc&gclid=def&UTM_Campaign=x&mc_cid=1&mc_eid=2&igshid=3",
     "https://example.com/p?id=7"),
    ("https://example.com/p?msclkid=1&dclid=2&yclid=3&_ga=4&ref_src=5&cmpid=6&ncid=7&sr_share=8",
     "https://example.com/p"),
    ("https://example.com/p?q=a%20b&x", "https://example.com/p?q=a%20b&x"),
    ("https://example.com/app#!/story/42", "https://example.com/app#!/story/42"),
    ("  https://example.com/x  ", "https://example.com/x"),
    ("http://[::1]:80/feed/", "http://[::1]/feed"),
    ("mailto:desk@example.org ", "mailto:desk@example.org"),
    ("/relative/path", "/relative/path"),
])
def test_canonical_link(url, canonical):
    assert canonical_link(url) == canonical


@pytest.mark.parametrize("url", [None, "", "   "])
def test_canonical_link_of_nothing(url):
    assert canonical_link(url) is None


def test_canonical_link_is_idempotent():
    for url in ("https://Repost.Example:443/news/x/?utm_source=rss#top", "https://e.example/?b=1&a=2"):
        once = canonical_link(url)
        assert canonical_link(once) == once


# ---------------------------------------------------------------- normalize_entry

def test_normalize_entry():
    when = datetime(2024, 5, 1, 8, 30, tzinfo=UTC)
    item = normalize_entry(FeedEntry(
        guid=" g-1 ", link=" https://News.example/a/?utm_source=x ", title="<b>Missile</b>\n  test &amp; more",
        summary_html="<p>Short</p>", content_html="<p>Short</p><p>Long body</p>", published=when))
    assert item.guid == "g-1"
    assert item.link == "https://News.example/a/?utm_source=x"
    assert item.canonical_link == "https://news.example/a"
    assert item.title == "Missile test & more"
    assert item.summary == "Short" and item.content == "Short\nLong body"
    assert item.published == when
    assert item.text == "Short\nLong body"


def test_content_equal_to_summary_is_dropped():
    item = normalize_entry(FeedEntry(guid="g", link=None, title="t", summary_html="<p>Same</p>",
                                     content_html="<div>Same</div>"))
    assert item.summary == "Same" and item.content == ""


def test_guid_falls_back_to_the_canonical_link_then_a_content_hash():
    by_link = normalize_entry(FeedEntry(guid=None, link=REPOST_LINK, title="t"))
    assert by_link.guid == "https://repost.example/news/2016/10/us-ready-to-deploy-strategic-weapons-korea"
    a = normalize_entry(FeedEntry(guid="  ", link="", title="Title", summary_html="<p>Body</p>"))
    b = normalize_entry(FeedEntry(guid=None, link=None, title="Title", summary_html="Body"))
    c = normalize_entry(FeedEntry(guid=None, link=None, title="Other", summary_html="Body"))
    assert a.guid.startswith("sha1:") and len(a.guid) == 45
    assert a.guid == b.guid != c.guid
    assert a.link is None and a.canonical_link is None
    empty = normalize_entry(FeedEntry(guid=None, link=None, title=""))
    assert empty.guid.startswith("sha1:")


def test_seed_feed_end_to_end():
    paras = [p.strip() for p in seed_text("000").splitlines() if p.strip()]
    body = rss("Repost Daily", "https://repost.example/", [dict(
        title="US Ready to Further Deploy Strategic Weapons in South Korea to Counter North | Repost Daily",
        link=REPOST_LINK, description="".join(f"<p>{html.escape(p)}</p>" for p in paras))])
    (entry,) = parse_feed(body, "https://repost.example/feed.xml").entries
    item = normalize_entry(entry)
    assert item.guid == item.canonical_link == (
        "https://repost.example/news/2016/10/us-ready-to-deploy-strategic-weapons-korea")
    assert item.link == REPOST_LINK
    assert item.summary.splitlines() == [" ".join(p.split()) for p in paras]
    assert "This story first appeared on Sputnik & is reposted here with permission." in item.summary
    assert item.content == ""
