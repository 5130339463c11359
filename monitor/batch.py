"""``monitor match``: run the watchlists over a file, URL or stdin and print JSON lines.

Input records are read by :func:`read_records` (shared with ``--explain``): a feed (RSS,
Atom) fetched or read from a file, or JSON Lines of ``{"id", "title", "summary", "text",
"link"}``. This is the matcher's bulk path, so the loop is kept lean.
"""
from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import click

from .config import Config

Record = tuple[str, str | None, str, str]  # (id, link, title, text)


def match_command(cfg: Config, input_: str, jobs: int = 0) -> int:
    """Print one JSON line per item; returns the exit status (1 if any input line was bad)."""
    from .matcher import Matcher

    matcher = Matcher(cfg.matcher_watchlists())
    write = sys.stdout.write
    enc = json.JSONEncoder(ensure_ascii=False).encode  # one encoder; this loop is the hot path
    bad = 0
    for record in read_records(input_, cfg):
        if isinstance(record, str):  # an error about one input line
            click.echo(record, err=True)
            bad += 1
            continue
        rid, link, title, text = record
        hits = matcher.match(title, text)
        found = enc([{"name": h.name, "score": h.score, "terms": list(h.terms)} for h in hits]) if hits else "[]"
        write(f'{{"id": {enc(rid)}, "link": {enc(link)}, "watchlists": {found}}}\n')
    sys.stdout.flush()
    return 1 if bad else 0


def read_records(input_: str, cfg: Config) -> Iterator[Record | str]:
    """Yield (id, link, title, text) per item, or an error string for a bad line."""
    from .fetch import fetch_sync

    if input_.startswith(("http://", "https://")):
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
        if head.lstrip()[:1] == b"{":
            yield from _jsonl_records(io.TextIOWrapper(stream, encoding="utf-8", errors="replace"), input_)
        else:
            yield from _feed_records(stream.read(), input_)


def _jsonl_records(lines: Iterable[str], name: str) -> Iterator[Record | str]:
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        try:
            d = json.loads(line)
            if not isinstance(d, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            yield f"{name}:{n}: invalid JSON line ({e})"
            continue
        text = "\n".join(str(d[k]) for k in ("summary", "text", "content") if d.get(k))
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
