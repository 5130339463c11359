"""Fetch against a real HTTP server on 127.0.0.1: validators, errors, caps, bombs, timeouts, concurrency."""
from __future__ import annotations

import asyncio
import gzip
import resource
import time
import zlib
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from feedserver import ENTITY_BOMB, XXE, FeedServer, SilentServer, atom, repeat, rss
from sinks import free_port

from monitor import fetch as fetch_module
from monitor.config import FetchConfig
from monitor.fetch import Fetcher, fetch_sync
from monitor.parse import FeedParseError, parse_feed

MB = 1_000_000
GOOD = rss("Good", "https://good.example/", [
    dict(title=f"Story {i}", link=f"https://good.example/{i}", guid=f"g{i}", description=f"<p>Body {i}</p>",
         published=datetime.now(UTC) - timedelta(minutes=i)) for i in range(5)])
ATOM = atom("Atom", [dict(id="urn:1", title="Atom story", link="https://a.example/1",
                          updated=datetime.now(UTC), content="<p>x</p>")])
BOMB_INFLATED = 200 * MB  # spaces; compresses about 1000:1


def cfg(**over) -> FetchConfig:
    base = dict(timeout="1s", connect_timeout="1s", read_timeout="1s", max_bytes=1 * MB, concurrency=10,
                user_agent="news-monitor-test/1.0 (+tests)")
    base.update(over)
    return FetchConfig(**base)


def gzip_bomb(inflated: int) -> bytes:
    """A gzip stream of ``inflated`` spaces, built incrementally (never holding the inflated bytes)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b" " * MB
    out = [comp.compress(b"<rss>")]
    for _ in range(inflated // MB):
        out.append(comp.compress(block))
    out.append(comp.compress(b"</rss>"))
    out.append(comp.flush())
    return b"".join(out)


async def _drip(request: web.Request) -> web.StreamResponse:
    """Headers at once, then one byte every 0.1 s: never idle long enough for the read timeout."""
    resp = web.StreamResponse(headers={"Content-Type": "application/rss+xml"})
    await resp.prepare(request)
    try:
        for _ in range(600):
            await resp.write(b" ")
            await asyncio.sleep(0.1)
    except (ConnectionError, RuntimeError):
        pass
    return resp


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return gzip_bomb(BOMB_INFLATED)


@pytest.fixture(scope="module")
def server(bomb):
    srv = FeedServer().start()
    srv.feed("/feeds/good.xml", GOOD)
    srv.feed("/feeds/atom.xml", ATOM, content_type="application/atom+xml")
    srv.raw("/feeds/missing.xml", 404, b"not here")
    srv.raw("/feeds/error.xml", 500, b"boom")
    srv.raw("/feeds/garbage.xml", 200, bytes(range(256)) * 64, {"Content-Type": "application/rss+xml"})
    srv.raw("/feeds/html.xml", 200, b"<html><body><p>Please Wait...</p></body></html>", {"Content-Type": "text/html"})
    srv.raw("/feeds/truncated.xml", 200, GOOD[: len(GOOD) // 2], {"Content-Type": "application/rss+xml"})
    srv.raw("/feeds/bomb.xml", 200, ENTITY_BOMB, {"Content-Type": "application/rss+xml"})
    srv.raw("/feeds/xxe.xml", 200, XXE, {"Content-Type": "application/rss+xml"})
    srv.raw("/feeds/huge-declared.xml", 200, b" " * (5 * MB), {"Content-Type": "application/rss+xml"})
    srv.stream("/feeds/huge.xml", repeat(b"<!-- filler -->" * 4096, 30 * MB))
    srv.raw("/feeds/gzbomb.xml", 200, bomb, {"Content-Type": "application/rss+xml", "Content-Encoding": "gzip"})
    srv.raw("/feeds/gzip.xml", 200, gzip.compress(GOOD), {"Content-Encoding": "gzip"})
    srv.raw("/feeds/gzip2.xml", 200, gzip.compress(GOOD[:100]) + gzip.compress(GOOD[100:]),
            {"Content-Encoding": "gzip"})
    srv.raw("/feeds/gzip-padded.xml", 200, gzip.compress(GOOD) + b"\x00" * 16, {"Content-Encoding": "gzip"})
    srv.raw("/feeds/deflate.xml", 200, zlib.compress(GOOD), {"Content-Encoding": "deflate"})
    raw_deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    srv.raw("/feeds/rawdeflate.xml", 200, raw_deflate.compress(GOOD) + raw_deflate.flush(),
            {"Content-Encoding": "deflate"})
    srv.raw("/feeds/gzip-cut.xml", 200, gzip.compress(GOOD)[:-200], {"Content-Encoding": "gzip"})
    srv.raw("/feeds/notgzip.xml", 200, b"this is not gzip at all", {"Content-Encoding": "gzip"})
    srv.raw("/feeds/brotli.xml", 200, b"\x1b\x00", {"Content-Encoding": "br"})
    srv.redirect("/feeds/moved.xml", "/feeds/good.xml", status=301)
    srv.redirect("/feeds/loop.xml", "/feeds/loop.xml")
    srv.redirect("/feeds/to-file.xml", "file:///etc/passwd")
    srv.hang("/feeds/slow.xml")
    srv.handle("/feeds/drip.xml", _drip)
    yield srv
    srv.stop()


def fetch(url: str, config: FetchConfig | None = None, **kw):
    async def one():
        async with Fetcher(config or cfg()) as f:
            return await f.fetch(url, **kw)
    return asyncio.run(one())


# ---------------------------------------------------------------- good feeds, validators

def test_good_feed_is_fetched_with_validators(server):
    r = fetch(server.url("/feeds/good.xml"))
    assert r.status == "ok" and r.ok and r.http_status == 200
    assert r.body == GOOD
    assert r.content_type == "application/rss+xml; charset=utf-8"
    assert r.etag and r.etag.startswith('"')
    assert r.last_modified == "Mon, 01 Jan 2024 00:00:00 GMT"
    assert r.error is None and 0 < r.elapsed < 5
    assert len(parse_feed(r.body, r.url, r.content_type).entries) == 5


def test_request_headers_name_the_client_and_allow_compression(server):
    fetch(server.url("/feeds/atom.xml"))
    _, headers = [req for req in server.requests if req[0] == "/feeds/atom.xml"][-1]
    assert headers["User-Agent"] == "news-monitor-test/1.0 (+tests)"
    assert headers["Accept-Encoding"] == "gzip, deflate"
    assert "application/rss+xml" in headers["Accept"]


def test_conditional_get_gives_not_modified(server):
    first = fetch(server.url("/feeds/good.xml"))
    again = fetch(server.url("/feeds/good.xml"), etag=first.etag, last_modified=first.last_modified)
    assert again.status == "not_modified" and again.http_status == 304 and again.body is None
    assert again.etag == first.etag and again.last_modified == first.last_modified
    _, headers = server.requests[-1]
    assert headers["If-None-Match"] == first.etag
    assert headers["If-Modified-Since"] == first.last_modified


def test_if_modified_since_alone_gives_not_modified(server):
    r = fetch(server.url("/feeds/atom.xml"), last_modified="Mon, 01 Jan 2024 00:00:00 GMT")
    assert r.status == "not_modified"


def test_changed_validator_gets_the_body(server):
    r = fetch(server.url("/feeds/good.xml"), etag='"stale"')
    assert r.status == "ok" and r.body == GOOD


def test_atom_feed(server):
    r = fetch(server.url("/feeds/atom.xml"))
    assert r.ok and r.content_type == "application/atom+xml"
    assert parse_feed(r.body, r.url, r.content_type).entries[0].title == "Atom story"


def test_redirect_is_followed_and_final_url_reported(server):
    r = fetch(server.url("/feeds/moved.xml"))
    assert r.ok and r.body == GOOD
    assert r.url == server.url("/feeds/good.xml")


@pytest.mark.parametrize("path", ["/feeds/gzip.xml", "/feeds/gzip2.xml", "/feeds/gzip-padded.xml",
                                  "/feeds/deflate.xml", "/feeds/rawdeflate.xml"])
def test_compressed_bodies_are_decoded(server, path):
    r = fetch(server.url(path))
    assert r.ok, r.error
    assert r.body == GOOD


def test_fetch_sync_runs_one_fetch(server):
    r = fetch_sync(server.url("/feeds/good.xml"), cfg())
    assert r.ok and r.body == GOOD


# ---------------------------------------------------------------- errors with reasons

@pytest.mark.parametrize(("path", "status"), [("/feeds/missing.xml", 404), ("/feeds/error.xml", 500)])
def test_http_errors(server, path, status):
    r = fetch(server.url(path))
    assert r.status == "error" and r.http_status == status
    assert r.error == f"HTTP {status}"
    assert r.body is None


def test_connection_refused():
    r = fetch(f"http://127.0.0.1:{free_port()}/feed.xml")
    assert r.status == "error" and r.error == "connection refused"


def test_redirect_loop(server):
    r = fetch(server.url("/feeds/loop.xml"))
    assert r.status == "error" and r.error == "too many redirects (more than 5)"
    assert server.hits["/feeds/loop.xml"] == 6  # the first request and five redirects followed


@pytest.mark.parametrize(("hops", "ok"), [(5, True), (6, False)])
def test_up_to_five_redirects_are_followed(server, hops, ok):
    for i in range(hops):
        server.redirect(f"/chain{hops}/{i}", f"/chain{hops}/{i + 1}" if i + 1 < hops else "/feeds/good.xml")
    r = fetch(server.url(f"/chain{hops}/0"))
    assert r.ok is ok, r.error


def test_redirect_to_a_file_url_is_refused(server):
    r = fetch(server.url("/feeds/to-file.xml"))
    assert r.status == "error" and "root:" not in (r.error or "")
    assert r.body is None


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/feed", "not a url"])
def test_non_http_urls_are_refused(url):
    r = fetch(url)
    assert r.status == "error" and r.error.startswith("unsupported URL")


def test_unsupported_content_encoding(server):
    r = fetch(server.url("/feeds/brotli.xml"))
    assert r.status == "error" and r.error == "unsupported content encoding 'br' (only gzip and deflate)"


def test_truncated_and_corrupt_gzip(server):
    cut = fetch(server.url("/feeds/gzip-cut.xml"))
    assert cut.status == "error" and cut.error == "gzip body is truncated"
    bad = fetch(server.url("/feeds/notgzip.xml"))
    assert bad.status == "error" and bad.error.startswith("cannot decode gzip body")


# ---------------------------------------------------------------- size caps and bombs

def test_declared_length_over_the_cap_is_refused_before_reading(server):
    r = fetch(server.url("/feeds/huge-declared.xml"))
    assert r.status == "error" and r.http_status == 200
    assert r.error == "body exceeds 1 MB limit (Content-Length 5 MB)"


def test_streamed_body_over_the_cap_is_cut_off(server):
    started = time.monotonic()
    r = fetch(server.url("/feeds/huge.xml"), cfg(timeout="10s"))
    assert r.status == "error" and r.error == "body exceeds 1 MB limit"
    assert time.monotonic() - started < 5
    time.sleep(0.2)
    assert server.sent["/feeds/huge.xml"] < 30 * MB  # the download stopped; the server did not finish


def _peak_rss_kb() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _current_rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return _peak_rss_kb()


def _reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the high-water mark (Linux)
    except OSError:
        pass


def test_gzip_bomb_is_stopped_at_the_cap_with_bounded_memory(server, bomb):
    assert len(bomb) < 1 * MB  # it gets past the download cap: only the inflated size can stop it
    _reset_peak_rss()
    before = _current_rss_kb()
    started = time.monotonic()
    r = fetch(server.url("/feeds/gzbomb.xml"), cfg(timeout="20s"))
    grew_mb = (_peak_rss_kb() - before) / 1024
    assert r.status == "error" and r.error == "decompressed body exceeds 1 MB limit"
    assert time.monotonic() - started < 5
    assert grew_mb < 60, f"peak memory grew by {grew_mb:.0f} MB for a {BOMB_INFLATED // MB} MB bomb"


def test_gzip_bomb_with_a_roomy_cap_still_stops_at_it(server):
    r = fetch(server.url("/feeds/gzbomb.xml"), cfg(timeout="20s", max_bytes=20 * MB))
    assert r.status == "error" and r.error == "decompressed body exceeds 20 MB limit"


# ---------------------------------------------------------------- timeouts

def test_server_that_never_answers_is_given_up_at_the_timeout(server):
    started = time.monotonic()
    r = fetch(server.url("/feeds/slow.xml"), cfg(timeout="1s", read_timeout="30s"))
    assert r.status == "error" and r.error == "timed out after 1s"
    assert time.monotonic() - started < 3


def test_silent_socket_is_given_up_at_the_timeout():
    with SilentServer() as silent:
        started = time.monotonic()
        r = fetch(silent.url(), cfg(timeout="1s", read_timeout="30s"))
    assert r.status == "error" and r.error == "timed out after 1s"
    assert time.monotonic() - started < 3


def test_read_timeout_names_itself(server):
    r = fetch(server.url("/feeds/slow.xml"), cfg(timeout="10s", read_timeout="0.5s"))
    assert r.status == "error" and r.error == "timed out after 0.5s without data (read timeout)"
    assert r.elapsed < 3


def test_a_trickling_body_is_cut_at_the_total_timeout(server):
    r = fetch(server.url("/feeds/drip.xml"), cfg(timeout="1s", read_timeout="5s"))
    assert r.status == "error" and r.error == "timed out after 1s"
    assert r.elapsed < 3


# ---------------------------------------------------------------- concurrency

def test_concurrency_is_limited(server):
    active = 0
    peak = 0

    async def busy(request: web.Request) -> web.StreamResponse:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.2)
        active -= 1
        return web.Response(body=GOOD)

    server.handle("/feeds/busy.xml", busy)

    async def many():
        async with Fetcher(cfg(concurrency=2, timeout="10s")) as f:
            return await asyncio.gather(*(f.fetch(server.url("/feeds/busy.xml")) for _ in range(6)))

    results = asyncio.run(many())
    assert all(r.ok for r in results)
    assert peak == 2


def test_good_source_succeeds_beside_hostile_ones(server):
    hostile = ["missing", "error", "garbage", "html", "truncated", "bomb", "xxe", "huge", "huge-declared",
               "gzbomb", "loop", "slow", "drip", "brotli"]

    async def all_at_once():
        async with Fetcher(cfg(timeout="2s", read_timeout="2s", concurrency=20)) as f:
            urls = [server.url(f"/feeds/{name}.xml") for name in hostile] + [server.url("/feeds/good.xml")]
            return await asyncio.gather(*(f.fetch(u) for u in urls))

    started = time.monotonic()
    *bad, good = asyncio.run(all_at_once())
    assert time.monotonic() - started < 6
    assert good.ok and good.body == GOOD
    assert len(parse_feed(good.body, good.url, good.content_type).entries) == 5
    by_name = dict(zip(hostile, bad, strict=True))
    for name in ("missing", "error", "huge", "huge-declared", "gzbomb", "loop", "slow", "drip", "brotli"):
        assert by_name[name].status == "error", name
    # fetched fine, refused (or defused) by the parser
    for name in ("garbage", "html"):
        with pytest.raises(FeedParseError):
            parse_feed(by_name[name].body, by_name[name].url, by_name[name].content_type)
    for name in ("bomb", "xxe", "truncated"):
        feed = parse_feed(by_name[name].body, by_name[name].url, by_name[name].content_type)
        text = " ".join(e.title + e.summary_html for e in feed.entries)
        assert "root:" not in text and "lollol" not in text


# --------------------------------------------------------------------------- politeness and server hints

def test_per_host_limit_and_politeness_delay(server):
    active = 0
    peak = 0
    starts: list[float] = []

    async def busy(request: web.Request) -> web.StreamResponse:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        starts.append(time.monotonic())
        await asyncio.sleep(0.1)
        active -= 1
        return web.Response(body=GOOD)

    server.handle("/feeds/polite.xml", busy)

    async def many(**over):
        async with Fetcher(cfg(concurrency=10, timeout="10s", **over)) as f:
            return await asyncio.gather(*(f.fetch(server.url("/feeds/polite.xml")) for _ in range(6)))

    assert all(r.ok for r in asyncio.run(many(per_host=2)))
    assert peak == 2
    starts.clear()
    peak = 0
    assert all(r.ok for r in asyncio.run(many(per_host=6, host_delay="0.15s")))
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.14  # request starts to one host are spaced out


def test_idle_hosts_are_dropped_from_the_politeness_table_and_hosts_held_back_are_kept(monkeypatch):
    """Full text fetches article pages from ever new hosts: a long-running daemon must not keep
    an entry for each host it ever saw, nor forget one whose politeness delay is still running."""
    monkeypatch.setattr(fetch_module, "HOST_SWEEP_MIN", 8)
    port = free_port()  # nothing listens: every 127.0.0.N refuses at once (all loopback)

    def url(n: int) -> str:
        return f"http://127.0.0.{n}:{port}/feed.xml"

    async def run():
        async with Fetcher(cfg()) as f:  # no host delay: a host is idle once its fetch is over
            for n in range(2, 102):
                assert not (await f.fetch(url(n))).ok
                assert f.hosts_tracked <= 8
        async with Fetcher(cfg(host_delay="0.6s")) as f:
            for n in range(2, 22):  # all within their delay: none may be dropped
                await f.fetch(url(n))
            assert f.hosts_tracked == 20
            started = time.monotonic()
            await f.fetch(url(2))  # its turn comes 0.6 s after its first start
            assert time.monotonic() - started >= 0.3
            await asyncio.sleep(0.7)
            for n in range(30, 50):  # the table is swept when it doubles (at 32 here): the first 20 are idle
                await f.fetch(url(n))
            assert f.hosts_tracked <= 20  # 40 without the sweep

    asyncio.run(run())


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_reported_in_seconds_or_from_a_date(server, status):
    server.raw("/feeds/busy-secs.xml", status, headers={"Retry-After": "120"})
    when = (datetime.now(UTC) + timedelta(minutes=10)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    server.raw("/feeds/busy-date.xml", status, headers={"Retry-After": when})
    server.raw("/feeds/busy-none.xml", status)
    secs = fetch_sync(server.url("/feeds/busy-secs.xml"), cfg())
    assert (secs.status, secs.retry_after) == ("error", 120.0) and "retry after 120 s" in secs.error
    dated = fetch_sync(server.url("/feeds/busy-date.xml"), cfg())
    assert 500 < dated.retry_after <= 600
    assert fetch_sync(server.url("/feeds/busy-none.xml"), cfg()).retry_after is None


def test_cache_control_max_age_is_reported(server):
    server.feed("/feeds/cached.xml", GOOD, headers={"Cache-Control": "public, max-age=900"})
    assert fetch_sync(server.url("/feeds/cached.xml"), cfg()).max_age == 900.0
    assert fetch_sync(server.url("/feeds/good.xml"), cfg()).max_age is None


def test_header_parsers():
    from monitor.fetch import MAX_RETRY_AFTER, cache_max_age, retry_after

    assert retry_after("30") == 30.0 and retry_after("99999999") == MAX_RETRY_AFTER
    assert retry_after("soon") is None and retry_after(None) is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: now
    assert cache_max_age('no-cache, max-age="60"') == 60.0 and cache_max_age("s-maxage=5") == 5.0
    assert cache_max_age("no-store") is None
