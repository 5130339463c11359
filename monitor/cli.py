"""The ``monitor`` command: a thin shell over the functions the daemon uses.

Exit status: 0 success; 1 the database or runtime is unusable (or bad input lines in
``match``); 2 the configuration is invalid (every problem printed as ``file:line: key: ...``).
"""
from __future__ import annotations

import asyncio
import os
import sys

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
@click.option("--explain", is_flag=True,
              help="For each item, show which clauses fired, the matched terms in context, score and threshold.")
@click.option("--near-misses", is_flag=True,
              help="With --explain (implied): also show watchlists whose terms occurred but that did not fire.")
@click.option("--jobs", "-j", type=click.IntRange(min=0), default=0, show_default=True,
              help="Worker processes for large inputs (0: one per CPU core, 1: no workers).")
def match(config_path: str, input_: str, explain: bool, near_misses: bool, jobs: int) -> None:
    """Dry run of the watchlists over INPUT: a feed file, a URL, or JSON Lines of
    {"id", "title", "summary", "link"} ('-' reads stdin). Prints one JSON line per item
    (or, with --explain, a readable report); writes nothing to the database and sends nothing."""
    cfg = _load(config_path)
    if explain or near_misses:
        from .explain import explain_command

        sys.exit(explain_command(cfg, input_, near_misses=near_misses))
    from .batch import match_command

    sys.exit(match_command(cfg, input_, jobs=jobs))


def main() -> None:
    cli(prog_name="monitor")


if __name__ == "__main__":
    main()
