"""The ``monitor`` command: a thin shell over the functions the daemon uses.

Exit status: 0 success; 1 the database or runtime is unusable (or bad input lines in
``match``); 2 the configuration is invalid (every problem printed as ``file:line: key: ...``),
or a usage error (an unknown ``backtest --watchlist``, a bad option).
"""
from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta

import click

from . import logs
from .config import Config, ConfigError, load_config, summarize

DEFAULT_CONFIG = "config/monitor.yaml"
CONFIG_OPTION = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), show_default=True,
    default=lambda: os.environ.get("MONITOR_CONFIG", DEFAULT_CONFIG),
    help="Main YAML config file (env MONITOR_CONFIG).",
)


def leave(code: int) -> None:
    """Exit with ``code`` at once, without the interpreter's teardown: a one-shot command
    (``run --once``, ``match``) ends with a big config, matcher and database layer in memory,
    and freeing them object by object took ~0.3-0.4 s, longer than a quiet poll cycle of
    1,000 sources. Everything that matters is committed (the store is closed) or flushed
    here first; nothing else runs at exit."""
    import logging

    logging.shutdown()  # flush and close the log handlers
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a closed or broken pipe: nothing more to say there
            stream.flush()
    os._exit(code)


@contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: loading a config and building the matcher make
    many long-lived objects and no garbage cycles, and the collector would walk them again
    and again (a quarter of the start-up time with 1,000 watchlists)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _load(path: str, check_channels: bool = True) -> Config:
    try:
        with no_cyclic_gc():
            return load_config(path, check_channels=check_channels)
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
    from .daemon import Daemon, ServeError, freeze_start_up
    from .store import DatabaseError

    logs.setup()  # config warnings (e.g. a disabled channel) get the same line format
    cfg = _load(config_path)
    logs.setup(cfg.logging.level, cfg.logging.format)
    try:
        daemon = Daemon(cfg)
        freeze_start_up()
        import asyncio

        code = asyncio.run(daemon.run_once() if once else daemon.run_forever())
    except (DatabaseError, ServeError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    if once:
        leave(code)  # (run_once closed the store)
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
@click.option("--explain", is_flag=True,
              help="For each item, show which clauses fired, the matched terms in context, score and threshold.")
@click.option("--near-misses", is_flag=True,
              help="With --explain (implied): also show watchlists whose terms occurred but that did not fire.")
@click.option("--jobs", "-j", type=click.IntRange(min=0), default=0, show_default=True,
              help="Worker processes for large inputs (0: one per CPU core, 1: no workers).")
@click.option("--json", "as_json", is_flag=True,
              help="With --explain: one JSON object per item instead of the readable report.")
def match(config_path: str, input_: str, explain: bool, near_misses: bool, jobs: int, as_json: bool) -> None:
    """Dry run of the watchlists over INPUT: a feed file, a URL, or JSON Lines of
    {"id", "title", "summary", "link"} ('-' reads stdin). Prints one JSON line per item
    (or, with --explain, a readable report); writes nothing to the database and sends nothing."""
    cfg = _load(config_path, check_channels=False)  # sends nothing: channel URLs do not matter
    if explain or near_misses:
        from .explain import explain_command

        sys.exit(explain_command(cfg, input_, near_misses=near_misses, as_json=as_json))
    from .batch import match_command

    leave(match_command(cfg, input_, jobs=jobs))  # (it flushed its output; it opens no database)


def _duration(_ctx: click.Context, _param: click.Parameter, value: str) -> timedelta:
    from .durations import parse_duration

    try:
        td = parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    if td <= timedelta(0):
        raise click.BadParameter(f"{value!r}: must be longer than 0s")
    return td


@cli.command()
@CONFIG_OPTION
@click.option("--watchlist", "-w", "name", required=True,
              help="The watchlist to try, as the config defines it now (edited or new).")
@click.option("--since", default="30d", show_default=True, callback=_duration,
              help="How far back: items first seen within this duration (30d, 12h, 1w ...).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Stop after this many stories.")
@click.option("--include-stale", is_flag=True,
              help="Also scan items first seen already older than alerts.max_age (never alerted on).")
def backtest(config_path: str, name: str, since: timedelta, limit: int | None, include_stale: bool) -> None:
    """What one watchlist would have alerted on among the items already in the database.

    Reads the database read-only (it must be at the current schema) and sends nothing:
    one line per story (time first seen, source, score, title, matched terms), then a
    summary. Exit 2 for an unknown watchlist, 1 if the database cannot be read."""
    from .explain import backtest_command

    cfg = _load(config_path, check_channels=False)
    sys.exit(backtest_command(cfg, name, since, limit=limit, include_stale=include_stale))


@cli.command()
@CONFIG_OPTION
@click.option("--since", default=None, callback=lambda c, p, v: None if v is None else _duration(c, p, v),
              help="Only stories with an item first seen within this duration (1d, 12h, 1w ...); default all.")
@click.option("--json", "as_json", is_flag=True,
              help='One JSON object per line: {"story": id, "items": [{"link", "source", "title"}, ...]}.')
def stories(config_path: str, since: timedelta | None, as_json: bool) -> None:
    """The stories in the database, each with every item (outlet) that carried it.

    Reads the database read-only and sends nothing. Exit 1 if the database cannot be read."""
    from .stories import stories_command

    cfg = _load(config_path, check_channels=False)
    sys.exit(stories_command(cfg, since, as_json=as_json))


@cli.group()
def silence() -> None:
    """Mute a watchlist's alerts for a while (recorded, never sent)."""


@silence.command("add")
@CONFIG_OPTION
@click.option("--watchlist", "-w", required=True, help="The watchlist to silence.")
@click.option("--match", "query", default=None, help="Only items matching this query (watchlist language).")
@click.option("--source", default=None, help="Only items from this source (a name or a pattern like 'kcna-*').")
@click.option("--for", "duration", required=True, callback=_duration, help="How long: 30m, 6h, 2d ...")
@click.option("--comment", "-c", required=True, help="Why (shown in `monitor silence list`).")
def silence_add(config_path: str, watchlist: str, query: str | None, source: str | None, duration: timedelta,
                comment: str) -> None:
    """Silence a watchlist (optionally only items matching a query or from a source)."""
    from . import operate

    cfg = _load(config_path, check_channels=False)
    sys.exit(operate.silence_add(cfg, watchlist, duration, query, source, comment))


@silence.command("list")
@CONFIG_OPTION
@click.option("--all", "include_expired", is_flag=True, help="Expired silences too.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def silence_list(config_path: str, include_expired: bool, as_json: bool) -> None:
    """Active silences (newest first)."""
    from . import operate

    cfg = _load(config_path, check_channels=False)
    sys.exit(operate.silence_list(cfg, include_expired, as_json))


@silence.command("expire")
@CONFIG_OPTION
@click.argument("silence_id", type=int)
def silence_expire(config_path: str, silence_id: int) -> None:
    """End a silence now."""
    from . import operate

    cfg = _load(config_path, check_channels=False)
    sys.exit(operate.silence_expire(cfg, silence_id))


@cli.group(invoke_without_command=True)
@CONFIG_OPTION
@click.option("--dead", "only", flag_value="dead", default=None, help="Only dead-lettered rows.")
@click.option("--pending", "only", flag_value="pending", help="Only pending rows.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def outbox(ctx: click.Context, config_path: str, only: str | None, as_json: bool) -> None:
    """Notifications not delivered yet: pending and dead-lettered rows."""
    if ctx.invoked_subcommand is not None:
        return
    from . import operate

    cfg = _load(config_path, check_channels=False)
    sys.exit(operate.outbox_list(cfg, (only,) if only else ("pending", "dead"), as_json))


@outbox.command("retry")
@CONFIG_OPTION
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "every", is_flag=True, help="Every dead-lettered row.")
def outbox_retry(config_path: str, ids: tuple[int, ...], every: bool) -> None:
    """Re-queue dead-lettered rows (by ID, or --all); a pending ID is tried at once."""
    from . import operate

    cfg = _load(config_path, check_channels=False)
    sys.exit(operate.outbox_retry(cfg, ids, every))


@cli.command()
@CONFIG_OPTION
@click.option("--since", default="1d", show_default=True, callback=_duration,
              help="Alerts made within this duration (1d, 12h, 1w ...).")
@click.option("--watchlist", "-w", default=None, help="Only alerts of this watchlist.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def alerts(config_path: str, since: timedelta, watchlist: str | None, as_json: bool) -> None:
    """Recent alerts, newest first, with their delivery state on each channel."""
    from . import operate

    cfg = _load(config_path, check_channels=False)
    sys.exit(operate.alerts_list(cfg, since, watchlist, as_json))


@cli.group(invoke_without_command=True)
@CONFIG_OPTION
@click.option("--failing", is_flag=True, help="Only sources whose last poll failed.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def sources(ctx: click.Context, config_path: str, failing: bool, as_json: bool) -> None:
    """Every source's health: state, last success, next poll, interval, items per day, last error."""
    if ctx.invoked_subcommand is not None:
        return
    from . import operate

    cfg = _load(config_path, check_channels=False)
    sys.exit(operate.sources_list(cfg, as_json, failing))


@sources.command("import")
@CONFIG_OPTION
@click.argument("opml_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--to", "output", type=click.Path(dir_okay=False), default=None,
              help="Write the YAML to this new file (an includable sources file) instead of stdout.")
@click.option("--interval", default=None, help="Set this interval on every imported source (e.g. 30m).")
def sources_import(config_path: str, opml_file: str, output: str | None, interval: str | None) -> None:
    """Turn an OPML export into `sources:` YAML, leaving out feeds already configured."""
    from . import operate

    cfg = _load(config_path, check_channels=False)
    sys.exit(operate.sources_import(cfg, opml_file, output, interval))


@cli.command()
@CONFIG_OPTION
@click.option("--all", "include_stopped", is_flag=True, help="Also replicas that stopped cleanly.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def replicas(config_path: str, include_stopped: bool, as_json: bool) -> None:
    """The daemons sharing this database: alive or lost, and what each holds."""
    from . import operate

    cfg = _load(config_path, check_channels=False)
    sys.exit(operate.replicas_list(cfg, as_json, include_stopped))


def main() -> None:
    cli(prog_name="monitor")


if __name__ == "__main__":
    main()
