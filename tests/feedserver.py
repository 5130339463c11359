"""A real HTTP server on 127.0.0.1 for tests: aiohttp.web in a background thread.

    with FeedServer() as srv:
        url = srv.feed("/feeds/good.xml", rss_bytes)     # 200 with ETag/Last-Modified; 304 on a conditional GET
        srv.raw("/missing", 404, b"not here")             # status, headers and body served as given
        srv.redirect("/loop", "/loop")                    # 302 to a path or URL
        srv.stream("/big", lambda: iter(chunks))          # chunked body, written chunk by chunk
        srv.hang("/never")                                # headers never come
        srv.handle("/custom", async_handler)              # any aiohttp handler(request)
        srv.hits["/feeds/good.xml"], srv.requests, srv.sent["/big"]

Also: SilentServer (a TCP port that accepts connections and never says a word), a closed port
(a free port comes from ``sinks.free_port()``) and feed builders (``rss``, ``atom``). Nothing here is mocked: the code under
test talks HTTP over loopback sockets.
"""
from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from xml.sax.saxutils import escape

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LAST_MODIFIED = "Mon, 01 Jan 2024 00:00:00 GMT"


class FeedServer:
    """Loopback HTTP server; register routes before or after start (thread-safe enough for tests)."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.hits: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()  # body bytes written by stream() routes
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.times: list[tuple[float, str]] = []  # (time.time(), path) of every request
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> FeedServer:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as e:  # noqa: BLE001 - reported to the starting thread
                errors.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="feedserver", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _cleanup(self) -> None:
        assert self._stopping is not None and self._runner is not None
        self._stopping.set()
        await self._runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> FeedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path] += 1
        self.requests.append((request.path, dict(request.headers)))
        self.times.append((time.time(), request.path))
        handler = self.routes.get(request.path)
        if handler is None:
            return web.Response(status=404, text="no such route")
        return await handler(request)

    # ------------------------------------------------------------ routes
    def handle(self, path: str, handler: Handler) -> str:
        self.routes[path] = handler
        return self.url(path)

    def feed(self, path: str, body: bytes, content_type: str = "application/rss+xml; charset=utf-8",
             last_modified: str = LAST_MODIFIED, headers: dict[str, str] | None = None) -> str:
        """A feed with validators: 304 when If-None-Match or If-Modified-Since matches
        (``headers``: more response headers, e.g. Cache-Control)."""
        etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
        extra = dict(headers or {})

        async def serve(request: web.Request) -> web.StreamResponse:
            headers = {"ETag": etag, "Last-Modified": last_modified, **extra}
            inm, ims = request.headers.get("If-None-Match"), request.headers.get("If-Modified-Since")
            if (inm and inm == etag) or (not inm and ims and ims == last_modified):
                return web.Response(status=304, headers=headers)
            return web.Response(body=body, headers={**headers, "Content-Type": content_type})

        return self.handle(path, serve)

    def raw(self, path: str, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> str:
        """Served exactly as given (a Content-Encoding header is not acted on)."""
        async def serve(request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, body=body, headers=headers or {})

        return self.handle(path, serve)

    def redirect(self, path: str, to: str, status: int = 302) -> str:
        async def serve(request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, headers={"Location": to})

        return self.handle(path, serve)

    def stream(self, path: str, chunks: Callable[[], Iterable[bytes]], headers: dict[str, str] | None = None,
               delay: float = 0.0) -> str:
        """A chunked body written chunk by chunk (``delay`` seconds apart); stops when the client leaves."""
        async def serve(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers=headers or {"Content-Type": "application/rss+xml"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            try:
                for chunk in chunks():
                    await resp.write(chunk)
                    self.sent[path] += len(chunk)
                    if delay:
                        await asyncio.sleep(delay)
                await resp.write_eof()
            except (ConnectionError, RuntimeError, asyncio.CancelledError):
                pass  # the client went away, as a capped download should
            return resp

        return self.handle(path, serve)

    def hang(self, path: str) -> str:
        """Accepts the request and never answers (until the server stops)."""
        async def serve(request: web.Request) -> web.StreamResponse:
            assert self._stopping is not None
            await self._stopping.wait()
            return web.Response(status=503)

        return self.handle(path, serve)


class SilentServer:
    """A listening TCP socket that never accepts: connections complete in the kernel's backlog and
    then hear nothing, ever."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def url(self, path: str = "/feed.xml") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def repeat(chunk: bytes, total: int) -> Callable[[], Iterator[bytes]]:
    """Chunks of ``chunk`` adding up to ``total`` bytes, made lazily (nothing big held in memory)."""
    def gen() -> Iterator[bytes]:
        left = total
        while left > 0:
            piece = chunk if left >= len(chunk) else chunk[:left]
            left -= len(piece)
            yield piece
    return gen


# ---------------------------------------------------------------- feed builders

def rss(title: str, site: str, items: Iterable[dict], extra_head: str = "") -> bytes:
    """RSS 2.0 bytes. Item keys: title, link, guid, description (HTML, escaped here), content
    (content:encoded, HTML), published (datetime) - each optional. Titles are escaped here."""
    out = ['<?xml version="1.0" encoding="utf-8"?>', extra_head,
           '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel>',
           f"<title>{escape(title)}</title><link>{escape(site)}</link><description>{escape(title)}</description>"]
    for it in items:
        parts = ["<item>"]
        if "title" in it:
            parts.append(f"<title>{escape(it['title'])}</title>")
        if it.get("link"):
            parts.append(f"<link>{escape(it['link'])}</link>")
        if it.get("guid"):
            parts.append(f'<guid isPermaLink="false">{escape(it["guid"])}</guid>')
        if it.get("published"):
            parts.append(f"<pubDate>{format_datetime(it['published'])}</pubDate>")
        if "description" in it:
            parts.append(f"<description>{escape(it['description'])}</description>")
        if "content" in it:
            parts.append(f"<content:encoded><![CDATA[{it['content']}]]></content:encoded>")
        parts.append("</item>")
        out.append("".join(parts))
    out.append("</channel></rss>")
    return "\n".join(out).encode()


def atom(title: str, entries: Iterable[dict]) -> bytes:
    """Atom 1.0 bytes. Entry keys: id, title, link, updated (datetime), summary, content (HTML)."""
    now = datetime.now(UTC).isoformat()
    out = ['<?xml version="1.0" encoding="utf-8"?>', '<feed xmlns="http://www.w3.org/2005/Atom">',
           f"<title>{escape(title)}</title><id>urn:feed:{escape(title)}</id><updated>{now}</updated>"]
    for e in entries:
        parts = ["<entry>"]
        if "id" in e:
            parts.append(f"<id>{escape(e['id'])}</id>")
        parts.append(f"<title>{escape(e.get('title', ''))}</title>")
        if e.get("link"):
            parts.append(f'<link rel="alternate" href="{escape(e["link"])}"/>')
        if e.get("updated"):
            parts.append(f"<updated>{e['updated'].isoformat()}</updated>")
        if "summary" in e:
            parts.append(f'<summary type="html">{escape(e["summary"])}</summary>')
        if "content" in e:
            parts.append(f'<content type="html">{escape(e["content"])}</content>')
        parts.append("</entry>")
        out.append("".join(parts))
    out.append("</feed>")
    return "\n".join(out).encode()


# ---------------------------------------------------------------- hostile payloads

# "billion laughs": nine levels of entities, each ten times the one below
ENTITY_BOMB = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
               + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
                          for i in range(1, 10))
               + b']><rss version="2.0"><channel><title>&lol9;</title><item><title>&lol9;</title></item></channel></rss>')
# an external entity pointing at a local file; the item reads like a missile test, so a resolved
# entity would reach an alert
XXE = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
       b'<rss version="2.0"><channel><title>x</title><item><title>North Korea test-fires a ballistic missile &x;</title>'
       b'<link>http://x.example/1</link><description>Pyongyang launched a ballistic missile.</description>'
       b'</item></channel></rss>')
