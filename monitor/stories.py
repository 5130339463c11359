"""``monitor stories``: the stories in the database and the outlets that carried each.

Rules:
- Reads the database read-only (it must be at the current schema); writes and sends nothing.
- ``--since D`` lists the stories with an item first seen within D (all stories without it),
  oldest story first, each with *all* of its items, first seen first: every stored item is
  in exactly one story.
- Text output: one header line per story (id, when it opened, items, outlets, whether it
  alerted, title), then one line per item (first seen, source, link, title when it differs).
- ``--json``: one line per story, ``{"story": id, "items": [{"link", "source", "title"}, ...]}``.
- Stories are read in batches (flat memory), and the output is flushed as it goes.
"""
from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from typing import TextIO

import click

from .config import Config


def stories_command(cfg: Config, since: timedelta | None, as_json: bool = False, now: datetime | None = None,
                    out: TextIO | None = None) -> int:
    """Print the stories; the exit status (1 when the database cannot be read)."""
    from .store import DatabaseError, Store, safe_url

    out = out or sys.stdout
    cutoff = (now or datetime.now(UTC)) - since if since is not None else None
    try:
        store = Store.open_readonly(cfg.database.url)
    except DatabaseError as e:
        click.echo(f"error: {e}", err=True)
        return 1
    count = items = 0
    try:
        problem = store.schema_problem()
        if problem is not None:
            click.echo(f"error: {problem}", err=True)
            return 1
        try:
            for story in store.iter_stories(cutoff):
                count += 1
                items += len(story.items)
                if as_json:
                    out.write(json.dumps({"story": story.id, "items": [
                        {"link": i.link, "source": i.source, "title": i.title} for i in story.items]},
                        ensure_ascii=False) + "\n")
                    continue
                outlets = story.outlets
                out.write(f"story {story.id}  {story.created_at:%Y-%m-%d %H:%M} UTC  "
                          f"{len(story.items)} item{'s' if len(story.items) != 1 else ''}, "
                          f"{len(outlets)} outlet{'s' if len(outlets) != 1 else ''}"
                          f"{'  alerted' if story.alerted else ''}  {_one_line(story.title)}\n")
                for i in story.items:
                    title = f"  {_one_line(i.title)}" if i.title != story.title else ""
                    out.write(f"    {i.first_seen:%Y-%m-%d %H:%M}  {i.source}  {i.link or '(no link)'}{title}\n")
                if count % 100 == 0:
                    out.flush()
        except Exception as e:  # noqa: BLE001 - a database failing mid-way: say so, no traceback
            click.echo(f"error: reading stories from {safe_url(cfg.database.url)} failed after {count}: "
                       f"{e.__class__.__name__}: {e}", err=True)
            return 1
    finally:
        store.close()
    out.flush()
    if not as_json:
        scope = f"with items first seen since {cutoff:%Y-%m-%d %H:%M} UTC" if cutoff else "in the database"
        click.echo(f"{count} stor{'ies' if count != 1 else 'y'}, {items} item{'s' if items != 1 else ''} {scope}",
                   err=True)
    return 0


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
