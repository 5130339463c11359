"""The ``monitor`` command: a thin shell over the functions the daemon uses.

Exit status: 0 success; 1 the database or runtime is unusable (or bad input lines in
``match``); 2 the configuration is invalid (every problem printed as ``file:line: key: ...``).
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import click

from . import logs
from .config import Config, ConfigError, load_config, summarize

DEFAULT_CONFIG = "config/monitor.yaml"
CONFIG_OPTION = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), show_default=True,
    default=lambda: os.environ.get("MONITOR_CONFIG", DEFAULT_CONFIG),
    help="Main YAML config file (env MONITOR_CONFIG).",
)


def _load(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as e:
        click.echo(f"configuration error{'s' if len(e.messages) > 1 else ''} in {path}:", err=True)
        for m in e.messages:
            click.echo(m, err=True)
        sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="news-monitor")
def cli() -> None:
    """News-monitoring alert daemon: polls feeds, matches watchlists, alerts once per story."""


@cli.command()
@CONFIG_OPTION
@click.option("--once", is_flag=True, help="Poll every source once, send what is due, and exit.")
def run(config_path: str, once: bool) -> None:
    """Run the daemon (or one cycle with --once)."""
    from .daemon import Daemon, ServeError
    from .store import DatabaseError

    logs.setup()  # config warnings (e.g. a disabled channel) get the same line format
    cfg = _load(config_path)
    logs.setup(cfg.logging.level, cfg.logging.format)
    try:
        daemon = Daemon(cfg)
        code = asyncio.run(daemon.run_once() if once else daemon.run_forever())
    except (DatabaseError, ServeError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    sys.exit(code)


@cli.command()
@CONFIG_OPTION
def check(config_path: str) -> None:
    """Validate the configuration and print a summary."""
    cfg = _load(config_path)
    click.echo(summarize(cfg))
    click.echo("configuration OK")


@cli.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@CONFIG_OPTION
def db_upgrade(config_path: str) -> None:
    """Apply pending schema migrations (the daemon also does this at start)."""
    from .store import DatabaseError, Store, safe_url

    cfg = _load(config_path)
    try:
        store = Store(cfg.database.url)
        store.upgrade()
        store.close()
    except DatabaseError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    click.echo(f"database {safe_url(cfg.database.url)} is up to date")


@cli.command()
@CONFIG_OPTION
@click.argument("input_", metavar="INPUT")
def match(config_path: str, input_: str) -> None:
    """Dry run of the watchlists over INPUT: a feed file, a URL, or JSON Lines of
    {"id", "title", "summary", "link"} ('-' reads stdin). Prints one JSON line per item;
    writes nothing to the database and sends nothing."""
    from .matcher import Matcher

    cfg = _load(config_path)
    matcher = Matcher(cfg.matcher_watchlists())
    write = sys.stdout.write
    enc = json.JSONEncoder(ensure_ascii=False).encode  # one encoder; this loop is the hot path
    bad = 0
    for record in _match_input(input_, cfg):
        if isinstance(record, str):  # an error about one input line
            click.echo(record, err=True)
            bad += 1
            continue
        rid, link, title, text = record
        hits = matcher.match(title, text)
        found = enc([{"name": h.name, "score": h.score, "terms": list(h.terms)} for h in hits]) if hits else "[]"
        write(f'{{"id": {enc(rid)}, "link": {enc(link)}, "watchlists": {found}}}\n')
    sys.stdout.flush()
    sys.exit(1 if bad else 0)


def _match_input(input_: str, cfg: Config) -> Iterator[tuple[str, str | None, str, str] | str]:
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


def _jsonl_records(lines: Iterable[str], name: str) -> Iterator[tuple[str, str | None, str, str] | str]:
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


def _feed_records(body: bytes, name: str) -> Iterator[tuple[str, str | None, str, str]]:
    from .normalize import normalize_entry
    from .parse import FeedParseError, parse_feed

    try:
        feed = parse_feed(body, name)
    except FeedParseError as e:
        raise click.ClickException(f"{name}: {e}") from None
    for entry in feed.entries:
        item = normalize_entry(entry)
        yield (item.guid, item.link, item.title, item.text)


def main() -> None:
    cli(prog_name="monitor")


if __name__ == "__main__":
    main()
