"""``monitor match``: run the watchlists over a file, URL or stdin and print JSON lines.

Input records are read by :func:`read_records` (shared with ``--explain``): a feed (RSS,
Atom) fetched or read from a file, or JSON Lines of ``{"id", "title", "summary", "text",
"link"}`` (summary, text and content joined, one that repeats another left out, as the daemon
does). This is the matcher's bulk path, so the loop is kept lean.

Rules:
- One output line per item, in input order: ``{"id": …, "link": …, "watchlists": [{"name":
  …, "score": …, "severity": …, "terms": […]}]}`` (:func:`format_line`); a bad input line is reported on
  stderr as ``NAME:LINE: invalid JSON line (…)`` and makes the exit status 1.
- ``jobs``: worker processes. 0 means one per CPU this process may run on
  (``os.sched_getaffinity``), 1 means none. Workers are used only for a JSON Lines *file*
  of at least :data:`PARALLEL_MIN_BYTES` (stdin, URLs and feeds are always read serially):
  after the matcher is built the process forks; the file is split into byte ranges on line
  boundaries, the parent matches the first range and prints it while each child matches
  one further range into a temporary file, which the parent then copies out in order. The
  output and the error messages (with their line numbers) are byte for byte those of the
  serial path.
"""
from __future__ import annotations

import gc
import io
import json
import math
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click

from .config import Config
from .model import join_text

if TYPE_CHECKING:
    from .matcher import Matcher
    from .model import WatchlistHit

Record = tuple[str, str | None, str, str]  # (id, link, title, text)

#: Smallest JSON Lines file worth splitting over worker processes.
PARALLEL_MIN_BYTES = 1 << 20

_encode = json.JSONEncoder(ensure_ascii=False).encode
_scan_json = json.JSONDecoder().scan_once  # json.loads's parser (C), settings as json.loads
_string = json.encoder.encode_basestring  # type: ignore[attr-defined]  # C speed; what _encode does for a str


def format_line(rid: str, link: object, hits: Sequence[WatchlistHit],
                hit_json: Callable[[WatchlistHit], str] | None = None) -> str:
    """One output line (with its newline): exactly ``json.dumps`` of ``{"id", "link",
    "watchlists": [{"name", "score", "severity", "terms"}]}`` with ``ensure_ascii=False``
    (``hit_json``: how one hit is written, :func:`_hit_json` by default)."""
    found = f"[{', '.join(map(hit_json or _hit_json, hits))}]" if hits else "[]"
    shown_link = "null" if link is None else _string(link) if isinstance(link, str) else _encode(link)
    return f'{{"id": {_string(rid)}, "link": {shown_link}, "watchlists": {found}}}\n'


def _hit_json(h: WatchlistHit) -> str:
    """``json.dumps`` of one hit as :func:`format_line` shows it."""
    return (f'{{"name": {_string(h.name)}, "score": '
            f'{float.__repr__(h.score) if math.isfinite(h.score) else _encode(h.score)}, '
            f'"severity": {_string(h.severity)}, "terms": [{", ".join(map(_string, h.terms))}]}}')


class _LineFormatter:
    """:func:`format_line` for the bulk loop: the matcher hands out the same hit objects
    again and again (it caches the common ones), so each one's JSON is made once. Entries
    keep their hit alive, so an ``id`` is never reused while it is a key."""

    LIMIT = 1 << 14  # entries before the cache starts over

    def __init__(self) -> None:
        self._cache: dict[int, tuple[WatchlistHit, str]] = {}

    def _hit_json(self, h: WatchlistHit) -> str:
        cache = self._cache
        got = cache.get(id(h))
        if got is None or got[0] is not h:
            if len(cache) >= self.LIMIT:
                cache.clear()
            got = cache[id(h)] = (h, _hit_json(h))
        return got[1]

    def __call__(self, rid: str, link: object, hits: Sequence[WatchlistHit]) -> str:
        return format_line(rid, link, hits, self._hit_json)


def match_command(cfg: Config, input_: str, jobs: int = 0) -> int:
    """Print one JSON line per item; returns the exit status (1 if any input line was bad)."""
    from .matcher import Matcher

    # the configuration and the matcher live to the end: keep them out of garbage collections
    # (a build among the config's objects would walk them again and again) and of copy-on-write
    gc.freeze()
    enabled = gc.isenabled()
    gc.disable()  # building makes no garbage cycles
    try:
        matcher = Matcher(cfg.matcher_watchlists())
    finally:
        if enabled:
            gc.enable()
    gc.freeze()
    workers = worker_count(jobs)
    if workers > 1:
        path = _parallel_input(input_)
        if path is not None:
            return match_file_parallel(matcher, path, input_, workers, sys.stdout)
    return _match_records(matcher, read_records(input_, cfg), sys.stdout, sys.stderr)


def worker_count(jobs: int) -> int:
    """Processes to use for ``--jobs``: 0 -> one per usable CPU."""
    return jobs if jobs > 0 else usable_cpus()


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity; the machine's count elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _match_records(matcher: Matcher, records: Iterable[Record | str], out: TextIO, err: TextIO) -> int:
    write, match_many, line = out.write, matcher.match_many, _LineFormatter()
    # items are matched (Matcher.match_many) and their lines written a block at a time (as
    # the stream's buffer would), except on a terminal (line buffered), which sees each line
    # at once as before
    block = 1 if getattr(out, "line_buffering", False) else _BLOCK
    bad = done = 0
    pending: list[tuple[str, object, str, str]] = []  # items not yet matched and written

    def flush() -> None:
        hits = match_many([(title, text) for _, _, title, text in pending])
        write("".join([line(rid, link, found) for (rid, link, _, _), found in zip(pending, hits, strict=True)]))
        pending.clear()

    collect = gc.isenabled()
    # Matching makes no reference cycles: the cyclic collector would only walk the young
    # objects over and over. It runs once every _COLLECT_EVERY items instead.
    gc.disable()
    try:
        for record in records:
            if isinstance(record, str):  # an error about one input line
                if pending:
                    flush()
                click.echo(record, file=err)
                bad += 1
                continue
            pending.append(record)
            if len(pending) >= block:
                flush()
            done += 1
            if collect and not done % _COLLECT_EVERY:
                gc.collect(1)
        if pending:
            flush()
    finally:
        if collect:
            gc.enable()
    out.flush()
    err.flush()
    return 1 if bad else 0


#: Output lines the bulk loop writes at a time (about a stream buffer's worth).
_BLOCK = 64
#: Items between two runs of the cyclic garbage collector in the bulk loop.
_COLLECT_EVERY = 4096


def read_records(input_: str, cfg: Config) -> Iterator[Record | str]:
    """Yield (id, link, title, text) per item, or an error string for a bad line."""
    if input_.startswith(("http://", "https://")):
        from .fetch import fetch_sync  # aiohttp: only imported when needed

        result = fetch_sync(input_, cfg.fetch)
        if not result.ok:
            raise click.ClickException(f"cannot fetch {input_}: {result.error or result.status}")
        yield from _feed_records(result.body or b"", input_)
        return
    if input_ == "-":
        stream = sys.stdin.buffer
    else:
        p = Path(input_)
        if not p.is_file():
            raise click.ClickException(f"{input_}: no such file")
        stream = p.open("rb")
    with stream:
        head = stream.peek(64)[:64] if hasattr(stream, "peek") else b""
        if _is_jsonl(head):
            yield from _jsonl_records(io.TextIOWrapper(stream, encoding="utf-8", errors="replace"), input_)
        else:
            yield from _feed_records(stream.read(), input_)


def _is_jsonl(head: bytes) -> bool:
    return head.lstrip()[:1] == b"{"


def _jsonl_records(lines: Iterable[str], name: str, first_line: int = 1) -> Iterator[Record | str]:
    loads, scan = json.loads, _scan_json
    for n, raw in enumerate(lines, first_line):
        line = raw.strip()
        if not line:
            continue
        try:  # the C scanner json.loads ends in, without its per-call overhead
            d, end = scan(line, 0)
            if end != len(line) or type(d) is not dict:
                raise ValueError
        except (ValueError, StopIteration, RecursionError):
            try:  # not a plain object: json.loads says what is wrong (same message as ever)
                d = loads(line)
                if not isinstance(d, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                yield f"{name}:{n}: invalid JSON line ({e})"
                continue
        summary, body, content = d.get("summary"), d.get("text"), d.get("content")
        text = join_text(summary, body, content) if body or content else str(summary) if summary else ""
        rid = d.get("id", n)
        yield (str(rid) if rid is not None else str(n), d.get("link"), str(d.get("title") or ""), text)


def _feed_records(body: bytes, name: str) -> Iterator[Record]:
    from .normalize import normalize_entry
    from .parse import FeedParseError, parse_feed

    try:
        feed = parse_feed(body, name)
    except FeedParseError as e:
        raise click.ClickException(f"{name}: {e}") from None
    for entry in feed.entries:
        item = normalize_entry(entry)
        yield (item.guid, item.link, item.title, item.text)


# --------------------------------------------------------------------------- worker processes

def _parallel_input(input_: str) -> Path | None:
    """The file to split over workers, or None when ``input_`` must be read serially."""
    if not hasattr(os, "fork") or input_ == "-" or input_.startswith(("http://", "https://")):
        return None
    path = Path(input_)
    try:
        if not path.is_file() or path.stat().st_size < PARALLEL_MIN_BYTES:
            return None
        with path.open("rb") as f:
            head = f.read(64)
    except OSError:
        return None
    return path if _is_jsonl(head) else None


def _line_breaks(data: bytes, end: int) -> int:
    """Lines that end before ``end``, counted as universal newlines count them (\\n, \\r\\n, \\r)."""
    return data.count(b"\n", 0, end) + data.count(b"\r", 0, end) - data.count(b"\r\n", 0, end)


def _ranges(data: bytes, parts: int) -> list[tuple[int, int]]:
    """Up to ``parts`` byte ranges covering ``data``, each ending just after a ``\\n``."""
    size = len(data)
    bounds = [0]
    for k in range(1, parts):
        cut = data.find(b"\n", max(size * k // parts, bounds[-1]))
        if cut == -1 or cut + 1 >= size:
            break
        bounds.append(cut + 1)
    bounds.append(size)
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def match_file_parallel(matcher: Matcher, path: Path, name: str, workers: int, out: TextIO) -> int:
    """Match a JSON Lines file with ``workers`` processes (this one and forked children);
    writes to ``out`` exactly what the serial path writes; returns the exit status."""
    data = path.read_bytes()  # children share it (fork); a few tens of MB at most in practice
    ranges = _ranges(data, workers)
    firsts = [_line_breaks(data, start) + 1 for start, _ in ranges]
    encoding, errors = out.encoding or "utf-8", out.errors or "strict"
    out.flush()
    sys.stderr.flush()
    children: list[tuple[int, tempfile._TemporaryFileWrapper, tempfile._TemporaryFileWrapper]] = []
    running: set[int] = set()
    try:
        for (start, end), first in zip(ranges[1:], firsts[1:], strict=True):
            result = tempfile.TemporaryFile()  # noqa: SIM115 - closed below, after the child
            problems = tempfile.TemporaryFile()  # noqa: SIM115
            pid = os.fork()
            if pid == 0:  # the child: match one range, then leave without cleanup handlers
                code = 2
                try:
                    code = _match_range(matcher, data, start, end, first, name,
                                        io.TextIOWrapper(result, encoding=encoding, errors=errors, newline="\n"),
                                        io.TextIOWrapper(problems, encoding="utf-8", errors="replace",
                                                         newline="\n"))
                except BaseException:  # noqa: BLE001 - the parent reports it (exit status 2)
                    try:
                        problems.seek(0)
                        problems.truncate()
                        problems.write(traceback.format_exc().encode("utf-8", "replace"))
                        problems.flush()
                    except BaseException:  # noqa: BLE001, S110
                        pass
                finally:
                    os._exit(code)
            children.append((pid, result, problems))
            running.add(pid)
        start, end = ranges[0]
        bad = _match_range(matcher, data, start, end, firsts[0], name, out, sys.stderr)
        for pid, result, problems in children:
            _, status = os.waitpid(pid, 0)
            running.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            problems.seek(0)
            report = problems.read().decode("utf-8", "replace")
            if code not in (0, 1):
                raise click.ClickException(f"a worker process failed (exit status {code}): {report.strip()[-800:]}")
            if report:
                sys.stderr.write(report)
                sys.stderr.flush()
            result.seek(0)
            out.flush()
            if hasattr(out, "buffer"):
                shutil.copyfileobj(result, out.buffer, 1 << 20)
                out.buffer.flush()
            else:  # a text-only stream (tests)
                out.write(result.read().decode(encoding, errors))
            bad |= code
        return 1 if bad else 0
    finally:
        for pid in running:  # children not waited for (an error here): stop them
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        for _, result, problems in children:
            result.close()
            problems.close()


def _match_range(matcher: Matcher, data: bytes, start: int, end: int, first_line: int, name: str,
                 out: TextIO, err: TextIO) -> int:
    lines = io.TextIOWrapper(io.BytesIO(data[start:end]), encoding="utf-8", errors="replace")
    return _match_records(matcher, _jsonl_records(lines, name, first_line), out, err)
