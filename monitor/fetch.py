"""Fetch: one HTTP poll of a source with aiohttp; the only module that does network I/O to sources.

Rules:
- One ClientSession per Fetcher (TCPConnector limit = fetch.concurrency) and a semaphore of the
  same size around each fetch; the User-Agent from the config on every request.
- Politeness per host: at most ``fetch.per_host`` requests in flight to one host, and request
  starts at least ``fetch.host_delay`` apart. A host's entry is dropped once it is idle (nothing
  in flight or waiting, its delay over) when the table is swept, so a long-running daemon that
  fetches article pages from ever new hosts (full text) keeps a table the size of what is active.
- ``429``/``503`` with ``Retry-After`` (seconds or an HTTP date, capped at a day) are errors
  carrying ``retry_after``; ``Cache-Control: max-age`` is reported as ``max_age``: the
  scheduler (monitor.polling) honours both.
- Conditional GET: If-None-Match / If-Modified-Since from the last poll; 304 -> "not_modified"
  (keeping the validators we sent when the server repeats none).
- Timeouts: ``timeout`` for the whole fetch (connect to last byte), ``connect_timeout`` to connect,
  ``read_timeout`` between two reads. A server that accepts and never answers is given up.
- Size: at most ``max_bytes`` downloaded (a larger Content-Length is refused before reading) and
  at most ``max_bytes`` after decompression. aiohttp does not decompress: gzip and deflate are
  inflated here, chunk by chunk with a bounded output, so a gzip bomb never takes more memory
  than the cap. Other content codings are an error. At most MAX_REDIRECTS redirects.
- ``fetch`` never raises for network, HTTP, size or decoding problems: it returns status "error"
  and a reason an operator understands ("HTTP 404", "timed out after 30s", "connection refused",
  "body exceeds 20 MB limit", "too many redirects (more than 5)", ...).
"""
from __future__ import annotations

import asyncio
import socket
import time
import zlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp

from .config import FetchConfig
from .model import FetchResult

MAX_REDIRECTS = 5
HOST_SWEEP_MIN = 1024  # per-host entries kept before idle ones are first dropped
CHUNK = 64 * 1024
INFLATE_STEP = 1024 * 1024  # most bytes one zlib call may produce
ACCEPT = "application/rss+xml, application/atom+xml, application/rdf+xml;q=0.9, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"


class FetchError(Exception):
    """A fetch problem with an operator-facing reason (internal: fetch() turns it into a result)."""


class Fetcher:
    """One shared aiohttp session. ``async with Fetcher(cfg) as f: await f.fetch(url, etag, last_modified)``.
    ``fetch`` never raises for network/HTTP/size problems: it returns FetchResult(status="error", error=...)."""

    def __init__(self, cfg: FetchConfig):
        self.cfg = cfg
        self._session: aiohttp.ClientSession | None = None
        self._slots: asyncio.Semaphore | None = None
        self._hosts: dict[str, _Host] = {}
        self._sweep_at = HOST_SWEEP_MIN  # the table size at which idle hosts are dropped next

    async def __aenter__(self) -> Fetcher:
        cfg = self.cfg
        connector = aiohttp.TCPConnector(limit=cfg.concurrency, ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(
            total=_seconds(cfg.timeout), sock_connect=_seconds(cfg.connect_timeout),
            sock_read=_seconds(cfg.read_timeout),
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False,
            headers={"User-Agent": cfg.user_agent, "Accept": ACCEPT, "Accept-Encoding": "gzip, deflate"},
        )
        self._slots = asyncio.Semaphore(cfg.concurrency)
        return self

    async def __aexit__(self, *exc) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, url: str, etag: str | None = None, last_modified: str | None = None) -> FetchResult:
        """GET ``url`` (conditionally when a validator is given). Never raises for network, HTTP,
        size or decoding problems."""
        if self._session is None or self._slots is None:
            raise RuntimeError("Fetcher used outside `async with`")
        host = self._host(url)
        host.users += 1
        try:
            async with host.slots, self._slots:
                await host.wait_turn(_seconds(self.cfg.host_delay))
                started = time.monotonic()
                try:
                    # The session's total timeout covers the body as well; this bounds our own work too.
                    async with asyncio.timeout(_seconds(self.cfg.timeout) + 1):
                        result = await self._get(url, etag, last_modified)
                except FetchError as e:
                    result = FetchResult(url=url, status="error", error=str(e))
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
                    result = FetchResult(url=url, status="error", error=self._describe(e, url))
                return _with_elapsed(result, time.monotonic() - started)
        finally:
            host.users -= 1

    def _host(self, url: str) -> _Host:
        try:
            key = (urlsplit(url).hostname or "").lower()
        except ValueError:
            key = ""
        host = self._hosts.get(key)
        if host is None:
            if len(self._hosts) >= self._sweep_at:
                self._sweep()
            host = self._hosts[key] = _Host(self.cfg.per_host)
        return host

    def _sweep(self) -> None:
        """Drop the entries of idle hosts. Run when the table reaches twice its size after the
        last sweep (at least HOST_SWEEP_MIN), so its cost per new host is constant."""
        now = time.monotonic()
        self._hosts = {key: host for key, host in self._hosts.items() if not host.idle(now)}
        self._sweep_at = max(HOST_SWEEP_MIN, 2 * len(self._hosts))

    @property
    def hosts_tracked(self) -> int:
        """How many hosts have a politeness entry now (idle ones included until the next sweep)."""
        return len(self._hosts)

    async def _get(self, url: str, etag: str | None, last_modified: str | None) -> FetchResult:
        if not url.lower().startswith(("http://", "https://")):
            raise FetchError(f"unsupported URL (only http:// and https://): {url}")
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        assert self._session is not None
        # aiohttp counts the redirect responses seen, the one it refuses included: +1 follows exactly 5
        async with self._session.get(url, headers=headers, max_redirects=MAX_REDIRECTS + 1) as resp:
            final_url = str(resp.url)
            new_etag = resp.headers.get("ETag")
            new_modified = resp.headers.get("Last-Modified")
            max_age = cache_max_age(resp.headers.get("Cache-Control"))
            if resp.status == 304:
                return FetchResult(url=final_url, status="not_modified", http_status=304,
                                   etag=new_etag or etag, last_modified=new_modified or last_modified,
                                   max_age=max_age)
            if not 200 <= resp.status < 300:
                resp.close()  # do not download an error page
                wait = retry_after(resp.headers.get("Retry-After")) if resp.status in (429, 503) else None
                why = f"HTTP {resp.status}" + (f" (retry after {wait:.0f} s)" if wait is not None else "")
                return FetchResult(url=final_url, status="error", http_status=resp.status, error=why,
                                   retry_after=wait)
            try:
                body = await read_body(resp, self.cfg.max_bytes)
            except FetchError as e:
                resp.close()  # stop the transfer: the connection is not reused
                return FetchResult(url=final_url, status="error", http_status=resp.status, error=str(e))
            return FetchResult(url=final_url, status="ok", http_status=resp.status, body=body,
                               content_type=resp.headers.get("Content-Type"), etag=new_etag,
                               last_modified=new_modified, max_age=max_age)

    def _describe(self, e: BaseException, url: str) -> str:
        """An operator-facing reason for an exception raised while fetching."""
        cfg = self.cfg
        if isinstance(e, aiohttp.TooManyRedirects):
            return f"too many redirects (more than {MAX_REDIRECTS})"
        if isinstance(e, aiohttp.ConnectionTimeoutError):
            return f"connect timed out after {_fmt_seconds(cfg.connect_timeout)}"
        if isinstance(e, aiohttp.SocketTimeoutError):
            return f"timed out after {_fmt_seconds(cfg.read_timeout)} without data (read timeout)"
        if isinstance(e, TimeoutError):  # asyncio.TimeoutError is TimeoutError since 3.11
            return f"timed out after {_fmt_seconds(cfg.timeout)}"
        if isinstance(e, aiohttp.InvalidUrlRedirectClientError | aiohttp.NonHttpUrlRedirectClientError):
            return f"redirected to an unusable URL: {e}"
        if isinstance(e, aiohttp.InvalidURL | ValueError):
            return f"invalid URL: {url}"
        if isinstance(e, aiohttp.ClientConnectorDNSError):
            return f"DNS lookup failed for {e.host}"
        if isinstance(e, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
            return f"TLS error: {e}"
        if isinstance(e, aiohttp.ClientConnectorError):
            return _connect_reason(e.os_error, f"{e.host}:{e.port}")
        if isinstance(e, aiohttp.ServerDisconnectedError):
            return "server closed the connection without a complete response"
        if isinstance(e, aiohttp.ClientPayloadError):
            return f"incomplete response body: {e}"
        if isinstance(e, aiohttp.ClientResponseError):
            return f"invalid HTTP response: {e.message}"
        if isinstance(e, ConnectionRefusedError | socket.gaierror | OSError):
            return _connect_reason(e, url)
        if isinstance(e, aiohttp.ClientError):
            return f"HTTP client error: {e.__class__.__name__}: {e}"
        return f"fetch failed: {e.__class__.__name__}: {e}"


class _Host:
    """Per-host politeness: at most ``per_host`` requests in flight, and request starts at
    least ``host_delay`` apart."""

    def __init__(self, per_host: int):
        self.slots = asyncio.Semaphore(per_host)
        self.users = 0  # fetches holding or waiting for a slot of this host
        self._next = 0.0
        self._lock = asyncio.Lock()

    def idle(self, now: float) -> bool:
        """Nothing in flight or waiting, and the next start is not held back: dropping this
        entry changes nothing for the next request to the host."""
        return self.users == 0 and self._next <= now

    async def wait_turn(self, delay: float) -> None:
        if delay <= 0:
            return
        async with self._lock:
            now = time.monotonic()
            if self._next > now:
                await asyncio.sleep(self._next - now)
            self._next = max(now, self._next) + delay


#: Longest Retry-After honoured (a server asking for more gets polled again after this).
MAX_RETRY_AFTER = 24 * 3600.0


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - datetime.now(UTC)).total_seconds()), MAX_RETRY_AFTER)


def cache_max_age(value: str | None) -> float | None:
    """``max-age`` (or ``s-maxage``) seconds from a Cache-Control header; None when absent."""
    if not value:
        return None
    found = None
    for part in value.split(","):
        name, _, arg = part.strip().partition("=")
        if name.lower() in ("max-age", "s-maxage") and arg.strip().strip('"').isdigit():
            found = float(arg.strip().strip('"'))
    return found


def _connect_reason(err: BaseException, where: str) -> str:
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, socket.gaierror):
        return f"DNS lookup failed ({err.strerror})"
    if isinstance(err, TimeoutError):
        return "connect timed out"
    strerror = getattr(err, "strerror", None) or str(err) or err.__class__.__name__
    return f"cannot connect to {where}: {strerror}"


# ---------------------------------------------------------------- body, capped and decoded

async def read_body(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The response body, decompressed, never more than ``max_bytes`` downloaded or inflated.
    Raises FetchError with the reason."""
    declared = resp.content_length
    if declared is not None and declared > max_bytes:
        raise FetchError(f"body exceeds {_fmt_size(max_bytes)} limit (Content-Length {_fmt_size(declared)})")
    decoder = _Inflater.for_encoding(resp.headers.get("Content-Encoding"), max_bytes)
    raw = 0
    out = bytearray()
    async for chunk in resp.content.iter_chunked(CHUNK):
        raw += len(chunk)
        if raw > max_bytes:
            raise FetchError(f"body exceeds {_fmt_size(max_bytes)} limit")
        if decoder is None:
            out += chunk
        else:
            decoder.feed(chunk, out)
    if decoder is not None:
        decoder.finish(out)
    return bytes(out)


class _Inflater:
    """Incremental gzip/deflate decoding into a bounded buffer (zlib ``max_length``): the output
    never grows past the cap, however much a small input would inflate to."""

    def __init__(self, kind: str, max_bytes: int):
        self.kind = kind
        self.max_bytes = max_bytes
        self.decoder: zlib._Decompress | None = None  # created on the first bytes (deflate sniffs them)
        self.members = 0  # complete streams decoded
        self.ignore_rest = False  # after a deflate stream, or after junk that follows a gzip member

    @classmethod
    def for_encoding(cls, header: str | None, max_bytes: int) -> _Inflater | None:
        codings = [c.strip().lower() for c in (header or "").split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        if not codings:
            return None
        if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
            return cls("deflate" if codings[0] == "deflate" else "gzip", max_bytes)
        raise FetchError(f"unsupported content encoding {header!r} (only gzip and deflate)")

    def _new_decoder(self, first: bytes) -> zlib._Decompress:
        if self.kind == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        # "deflate" should be zlib-wrapped (RFC 9110); some servers send raw deflate.
        zlib_header = len(first) >= 2 and first[0] & 0x0F == 8 and (first[0] << 8 | first[1]) % 31 == 0
        return zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)

    def feed(self, data: bytes, out: bytearray) -> None:
        while data and not self.ignore_rest:
            if self.decoder is None:
                self.decoder = self._new_decoder(data)
            # at most one byte more than fits (that detects the overflow), and never a big piece at once
            limit = min(self.max_bytes - len(out) + 1, INFLATE_STEP)
            try:
                piece = self.decoder.decompress(data, limit)
            except zlib.error as e:
                if self.members:  # bytes after a complete gzip member that are not one: ignore them
                    self.ignore_rest = True
                    return
                raise FetchError(f"cannot decode {self.kind} body: {e}") from None
            out += piece
            if len(out) > self.max_bytes:
                raise FetchError(f"decompressed body exceeds {_fmt_size(self.max_bytes)} limit")
            if self.decoder.eof:
                self.members += 1
                data = self.decoder.unused_data  # gzip may have several members, one after another
                self.decoder = None
                self.ignore_rest = self.kind == "deflate"  # deflate has one stream
            else:
                rest = self.decoder.unconsumed_tail
                if not piece and len(rest) == len(data):
                    raise FetchError(f"cannot decode {self.kind} body: no progress")  # never loop forever
                data = rest

    def finish(self, out: bytearray) -> None:
        if self.decoder is None or self.ignore_rest:
            return  # nothing was sent, or the last stream ended
        try:
            tail = self.decoder.flush(max(0, self.max_bytes - len(out)) + 1)
        except zlib.error as e:
            raise FetchError(f"cannot decode {self.kind} body: {e}") from None
        out += tail
        if len(out) > self.max_bytes:
            raise FetchError(f"decompressed body exceeds {_fmt_size(self.max_bytes)} limit")
        if not self.decoder.eof:
            raise FetchError(f"{self.kind} body is truncated")


# ---------------------------------------------------------------- helpers

def _seconds(td: timedelta) -> float:
    return td.total_seconds()


def _fmt_seconds(td: timedelta) -> str:
    return f"{td.total_seconds():g}s"


def _fmt_size(n: int) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= size:
            return f"{n / size:.4g} {unit}"
    return f"{n} bytes"


def _with_elapsed(result: FetchResult, elapsed: float) -> FetchResult:
    return replace(result, elapsed=round(elapsed, 6))


def fetch_sync(url: str, cfg: FetchConfig) -> FetchResult:
    """One fetch outside any event loop (for `monitor match URL`)."""

    async def one() -> FetchResult:
        async with Fetcher(cfg) as fetcher:
            return await fetcher.fetch(url)

    return asyncio.run(one())
