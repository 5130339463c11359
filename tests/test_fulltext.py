"""Full text (`full_text: true`): the article page is fetched and its main text, not the page
furniture, reaches the matcher and the store; failures leave the feed's text."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import yaml
from feedserver import FeedServer, rss

from monitor.config import load_config
from monitor.fetch import Fetcher
from monitor.matcher import Matcher
from monitor.notify import Notifier
from monitor.pipeline import Pipeline
from monitor.store import Store

ARTICLE = """<!doctype html><html><head><title>Launch</title></head><body>
<nav><a href="/">Home</a> <a href="/world">World</a> Subscribe to our newsletter for daily updates</nav>
<article><h1>Pyongyang fires a new solid-fuel rocket</h1>
<p>SEOUL - North Korea test-fired an intercontinental ballistic missile on Thursday, South Korea's
military said, the first such launch this year. The missile flew for about 70 minutes before
landing in the sea east of the peninsula, according to the Joint Chiefs of Staff.</p>
<p>Japan's defence ministry said it came down outside its exclusive economic zone and that no
damage to ships or aircraft had been reported. Analysts said the test appeared to involve a
new solid-fuel design that can be readied for launch more quickly than older liquid-fuel types.</p>
</article>
<footer>Copyright 2026 Example News. All rights reserved. Cookie settings. Privacy policy.</footer>
</body></html>"""


@pytest.fixture
def srv():
    with FeedServer() as s:
        yield s


def run_poll(tmp_path, srv, full_text: bool, link: str):
    feed = rss("Example", "https://news.example/", [dict(
        title="Officials comment on Thursday's events", link=link, guid="a1",
        description="Officials spoke on Thursday.", published=datetime.now(UTC))])
    url = srv.feed(f"/feed-{full_text}.xml", feed)
    doc = {"database": {"url": f"sqlite:///{tmp_path}/m-{full_text}.db"}, "fetch": {"timeout": "5s"},
           "sources": [{"name": "ex", "url": url, "full_text": full_text}],
           "watchlists": [{"name": "missile-tests", "query": "missile* NEAR/5 (launch* OR test*)"}]}
    (tmp_path / f"m-{full_text}.yaml").write_text(yaml.safe_dump(doc))
    cfg = load_config(tmp_path / f"m-{full_text}.yaml")
    store = Store(cfg.database.url)
    store.upgrade()
    store.sync_sources([(s.name, s.url) for s in cfg.sources])

    async def go():
        async with Fetcher(cfg.fetch) as f:
            p = Pipeline(cfg, store, Matcher(cfg.matcher_watchlists()), f, Notifier([]))
            return await p.poll(cfg.sources[0])

    report = asyncio.run(go())
    (item,) = list(store.iter_items(datetime(2000, 1, 1, tzinfo=UTC)))
    store.close()
    return report, item


def test_full_text_brings_the_article_to_the_matcher_without_the_furniture(tmp_path, srv):
    page = srv.raw("/story/1.html", 200, ARTICLE.encode(), {"Content-Type": "text/html; charset=utf-8"})
    report, item = run_poll(tmp_path, srv, True, page)
    assert report.alerts == 1
    assert "test-fired an intercontinental ballistic missile" in item.item.content
    assert "Subscribe to our newsletter" not in item.item.content and "Cookie settings" not in item.item.content
    assert item.item.summary == "Officials spoke on Thursday."  # the feed's own summary stays
    plain_report, plain = run_poll(tmp_path, srv, False, page)
    assert plain_report.alerts == 0 and "missile" not in plain.item.content


def test_a_page_that_fails_leaves_the_feed_text_and_the_poll_succeeds(tmp_path, srv):
    missing = srv.raw("/story/missing.html", 404, b"gone")
    report, item = run_poll(tmp_path, srv, True, missing)
    assert report.status == "ok" and report.new == 1 and item.item.summary == "Officials spoke on Thursday."
