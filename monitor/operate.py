"""Operator commands: ``monitor silence``, ``monitor outbox``, ``monitor alerts``, ``monitor sources``.

Rules:
- Commands that change state (``silence add``, ``silence expire``, ``outbox retry``) apply
  pending migrations first, as the daemon does; the others open the database read-only and
  refuse a schema that is not current. A running daemon sees changes at its next delivery
  pass (within ``delivery.interval``).
- ``silence add`` checks the watchlist against the configuration and parses ``--match``
  before anything is stored (exit 2 with the reason, a caret under a bad query).
- Times are shown in UTC; ``--json`` prints one JSON object per line.
"""
from __future__ import annotations

import getpass
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import click

from .config import Config, name_hint
from .store import AlertListing, DatabaseError, DeliveryState, Silence, Store, utcnow


def _when(t: datetime | None) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if t is not None else "-"


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat() if t is not None else None


def _open(cfg: Config, write: bool) -> Store:
    if write:
        store = Store(cfg.database.url)
        store.upgrade()
        return store
    try:
        store = Store.open_readonly(cfg.database.url)
    except DatabaseError:
        raise
    except Exception as e:  # noqa: BLE001 - e.g. a missing SQLite file
        raise DatabaseError(f"cannot open the database: {e}") from e
    problem = store.schema_problem()
    if problem is not None:
        store.close()
        raise DatabaseError(problem)
    return store


def with_store(cfg: Config, write: bool, work: Callable[[Store], int]) -> int:
    """Run ``work`` on an open store; a database problem is one line on stderr and exit 1."""
    try:
        store = _open(cfg, write)
    except DatabaseError as e:
        click.echo(f"error: {e}", err=True)
        return 1
    try:
        return work(store)
    except DatabaseError as e:
        click.echo(f"error: {e}", err=True)
        return 1
    finally:
        store.close()


# --------------------------------------------------------------------------- silences

def silence_add(cfg: Config, watchlist: str, duration: timedelta, query: str | None, source: str | None,
                comment: str) -> int:
    known = [w.name for w in cfg.watchlists]
    if watchlist not in known:
        click.echo(f"error: unknown watchlist '{watchlist}' ({name_hint(watchlist, known, 'no watchlists are defined')})",
                   err=True)
        return 2
    if query is not None:
        from .query import QuerySyntaxError, parse_query

        try:
            parse_query(query, cfg.aliases)
        except QuerySyntaxError as e:
            click.echo(f"error: --match: {e.message} at column {e.column}\n  {query}\n  {' ' * (e.column - 1)}^",
                       err=True)
            return 2
    now = utcnow()
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        user = ""

    def work(store: Store) -> int:
        sid = store.add_silence(watchlist, now + duration, query=query, source=source, comment=comment,
                                created_by=user, now=now)
        click.echo(f"silence {sid} active until {_when(now + duration)} UTC: {_describe(watchlist, query, source)}")
        return 0

    return with_store(cfg, True, work)


def _describe(watchlist: str, query: str | None, source: str | None) -> str:
    parts = [f"watchlist {watchlist}"]
    if query:
        parts.append(f"matching {query!r}")
    if source:
        parts.append(f"from source {source}")
    return ", ".join(parts)


def silence_list(cfg: Config, include_expired: bool, as_json: bool) -> int:
    def work(store: Store) -> int:
        now = utcnow()
        rows = store.silences(now, include_expired=include_expired)
        for s in rows:
            if as_json:
                click.echo(json.dumps(_silence_json(s, now), ensure_ascii=False))
            else:
                state = "active" if s.active(now) else "expired"
                click.echo(f"{s.id:>5}  {state:<8} until {_when(s.ends_at)}  {_describe(s.watchlist, s.query, s.source)}"
                           f"{'  -- ' + s.comment if s.comment else ''}{'  (' + s.created_by + ')' if s.created_by else ''}")
        if not rows and not as_json:
            click.echo("no active silences" if not include_expired else "no silences")
        return 0

    return with_store(cfg, False, work)


def _silence_json(s: Silence, now: datetime) -> dict:
    return {"id": s.id, "watchlist": s.watchlist, "match": s.query, "source": s.source,
            "starts_at": _iso(s.starts_at), "ends_at": _iso(s.ends_at), "active": s.active(now),
            "comment": s.comment, "created_by": s.created_by}


def silence_expire(cfg: Config, silence_id: int) -> int:
    def work(store: Store) -> int:
        s = store.expire_silence(silence_id)
        if s is None:
            click.echo(f"error: no silence {silence_id}", err=True)
            return 2
        click.echo(f"silence {s.id} expired at {_when(s.ends_at)} UTC")
        return 0

    return with_store(cfg, True, work)


# --------------------------------------------------------------------------- outbox

def outbox_list(cfg: Config, statuses: Sequence[str], as_json: bool) -> int:
    def work(store: Store) -> int:
        rows = store.outbox(statuses)
        for r in rows:
            if as_json:
                click.echo(json.dumps({
                    "id": r.id, "alert": r.alert_id, "channel": r.channel, "kind": r.kind, "status": r.status,
                    "attempts": r.attempts, "next_attempt_at": _iso(r.next_attempt_at) if r.status == "pending" else None,
                    "queued_at": _iso(r.queued_at), "folded": r.folded, "last_error": r.last_error, "title": r.title,
                }, ensure_ascii=False))
                continue
            state = r.status + (" (folded)" if r.folded else "")
            nxt = f"next {_when(r.next_attempt_at)}" if r.status == "pending" else "          "
            err = f"  error: {r.last_error}" if r.last_error else ""
            click.echo(f"{r.id:>6}  {r.channel:<12} {state:<17} attempts {r.attempts:<3} {nxt}  {r.title[:70]}{err}")
        if not as_json:
            pending = sum(r.status == "pending" for r in rows)
            dead = sum(r.status == "dead" for r in rows)
            click.echo(f"{pending} pending, {dead} dead" + (
                "; re-queue dead rows with `monitor outbox retry --all` or `monitor outbox retry ID`" if dead else ""))
        return 0

    return with_store(cfg, False, work)


def outbox_retry(cfg: Config, ids: Sequence[int], every: bool) -> int:
    if not ids and not every:
        click.echo("error: give outbox row IDs or --all", err=True)
        return 2

    def work(store: Store) -> int:
        changed = store.retry(None if every else list(ids))
        click.echo(f"re-queued {changed} row{'s' if changed != 1 else ''}")
        return 0 if changed or every else 1

    return with_store(cfg, True, work)


# --------------------------------------------------------------------------- alerts

def alerts_list(cfg: Config, since: timedelta, watchlist: str | None, as_json: bool) -> int:
    if watchlist is not None and cfg.watchlist(watchlist) is None:
        known = [w.name for w in cfg.watchlists]
        click.echo(f"note: '{watchlist}' is not a configured watchlist ({name_hint(watchlist, known, 'none defined')}); "
                   "showing stored alerts that name it", err=True)

    def work(store: Store) -> int:
        rows = store.recent_alerts(utcnow() - since, watchlist)
        for a in rows:
            click.echo(json.dumps(_alert_json(a), ensure_ascii=False) if as_json else _alert_text(a))
        if not as_json:
            click.echo(f"{len(rows)} alert{'s' if len(rows) != 1 else ''}")
        return 0

    return with_store(cfg, False, work)


def _delivery_text(d: DeliveryState) -> str:
    what = "" if d.kind == "alert" else f" {d.kind}"
    if d.status == "sent":
        how = f"sent {_when(d.sent_at)}" + (f" in digest #{d.digest_id}" if d.digest_id else "")
    elif d.status == "silenced":
        how = f"silenced by #{d.silence_id}"
    elif d.status == "dead":
        how = f"dead after {d.attempts} attempts ({d.last_error or 'unknown error'})"
    else:
        how = ("folded (rate limit)" if d.folded else "pending") + (
            f", {d.attempts} failed, next {_when(d.next_attempt_at)}" if d.attempts else "")
    return f"{d.channel}{what}: {how}"


def _alert_text(a: AlertListing) -> str:
    hits = ", ".join(f"{h.name} ({h.severity}, {h.score:g})" for h in a.hits)
    lines = [f"#{a.id}  {_when(a.created_at)}  [{hits}] {a.title}", f"        {a.source}  {a.link or ''}".rstrip()]
    lines += [f"        {_delivery_text(d)}" for d in a.deliveries] or ["        no channel took it"]
    return "\n".join(lines)


def _alert_json(a: AlertListing) -> dict:
    return {
        "alert": a.id, "story": a.story_id, "created_at": _iso(a.created_at), "title": a.title, "link": a.link,
        "source": a.source,
        "watchlists": [{"name": h.name, "score": h.score, "severity": h.severity, "terms": list(h.terms)} for h in a.hits],
        "deliveries": [{"id": d.id, "channel": d.channel, "kind": d.kind, "status": d.status, "attempts": d.attempts,
                        "sent_at": _iso(d.sent_at), "folded": d.folded, "digest": d.digest_id,
                        "silence": d.silence_id, "last_error": d.last_error} for d in a.deliveries],
    }


# --------------------------------------------------------------------------- sources

def _ago(t: datetime | None, now: datetime) -> str:
    if t is None:
        return "-"
    secs = (now - t).total_seconds()
    return ("in " if secs < 0 else "") + _span(abs(secs)) + ("" if secs < 0 else " ago")


def _span(secs: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs / size:.0f}{unit}"
    return f"{secs:.0f}s"


def sources_list(cfg: Config, as_json: bool, failing_only: bool) -> int:
    configured = {s.name: s for s in cfg.sources}

    def work(store: Store) -> int:
        now = utcnow()
        rows = [h for h in store.source_health() if h.name in configured]
        seen = {h.name for h in rows}
        if failing_only:
            rows = [h for h in rows if not h.ok]
        if as_json:
            for h in rows:
                click.echo(json.dumps({
                    "source": h.name, "url": h.url, "enabled": configured[h.name].enabled, "ok": h.ok,
                    "failing_since": _iso(h.failing_since), "last_error": h.last_error,
                    "consecutive_failures": h.consecutive_failures, "last_success": _iso(h.last_success_at),
                    "last_poll": _iso(h.last_polled_at), "next_poll": _iso(h.next_poll_at),
                    "interval_s": h.interval, "items_per_day": h.items_per_day, "items": h.items_total,
                }, ensure_ascii=False))
            return 0
        header = f"{'source':<24} {'state':<8} {'last success':<13} {'next poll':<10} {'every':>6} {'items/d':>8}  problem"
        click.echo(header)
        for h in rows:
            state = "disabled" if not configured[h.name].enabled else "ok" if h.ok else "failing"
            problem = "" if h.ok else f"{h.consecutive_failures} failures since {_when(h.failing_since)}: {h.last_error or '?'}"
            every = _span(h.interval) if h.interval else "-"
            ipd = f"{h.items_per_day:.1f}" if h.items_per_day is not None else "-"
            click.echo(f"{h.name[:24]:<24} {state:<8} {_ago(h.last_success_at, now):<13} {_ago(h.next_poll_at, now):<10} "
                       f"{every:>6} {ipd:>8}  {problem}".rstrip())
        never = sorted(set(configured) - seen)
        failing = sum(not h.ok for h in rows)
        click.echo(f"{len(rows)} source{'s' if len(rows) != 1 else ''}, {failing} failing"
                   + (f"; never polled: {', '.join(never)}" if never else ""))
        return 0

    return with_store(cfg, False, work)


def replicas_list(cfg: Config, as_json: bool, include_stopped: bool) -> int:
    """``monitor replicas``: the daemons sharing this database, whether each is alive (a
    heartbeat within ``replicas.lease``) and the sources and channels it holds."""
    lease = cfg.replicas.lease

    def work(store: Store) -> int:
        now = utcnow()
        rows = store.replicas(now)

        def state(r) -> str:
            if r.stopped_at is not None:
                return "stopped"
            return "alive" if now - r.heartbeat_at <= lease else "lost"

        if not include_stopped:
            rows = [r for r in rows if state(r) != "stopped"]
        if as_json:
            for r in rows:
                click.echo(json.dumps({
                    "replica": r.id, "host": r.host, "pid": r.pid, "state": state(r), "started": _iso(r.started_at),
                    "heartbeat": _iso(r.heartbeat_at), "stopped": _iso(r.stopped_at), "sources_held": r.sources,
                    "channels": list(r.channels)}, ensure_ascii=False))
            return 0
        click.echo(f"{'replica':<40} {'state':<8} {'started':<13} {'heartbeat':<13} {'sources':>7}  channels")
        for r in rows:
            click.echo(f"{r.id[:40]:<40} {state(r):<8} {_ago(r.started_at, now):<13} {_ago(r.heartbeat_at, now):<13} "
                       f"{r.sources:>7}  {', '.join(r.channels) or '-'}")
        alive = sum(state(r) == "alive" for r in rows)
        click.echo(f"{len(rows)} replica{'s' if len(rows) != 1 else ''}, {alive} alive "
                   f"(a heartbeat within the {_span(lease.total_seconds())} lease)")
        return 0

    return with_store(cfg, False, work)


def sources_import(cfg: Config, opml_file: str, output: str | None, interval: str | None) -> int:
    """``monitor sources import``: YAML for the OPML's feeds that the config does not have yet."""
    import os

    import yaml

    from .durations import parse_duration
    from .opml import OpmlError, read_opml

    if interval is not None:
        try:
            parse_duration(interval)
        except ValueError as e:
            click.echo(f"error: --interval: {e}", err=True)
            return 2
    try:
        feeds, skipped = read_opml(opml_file)
    except OpmlError as e:
        click.echo(f"error: {e}", err=True)
        return 2
    for why in skipped:
        click.echo(f"{opml_file}:{why} (skipped)", err=True)
    have_urls = {s.url.strip() for s in cfg.sources}
    names = {s.name for s in cfg.sources}
    new = []
    for feed in feeds:
        if feed.url in have_urls:
            continue
        base = feed.base or feed.name
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.add(name)
        have_urls.add(feed.url)
        entry: dict[str, str] = {"name": name, "url": feed.url}
        if interval is not None:
            entry["interval"] = interval
        new.append(entry)
    text = f"# imported from {os.path.basename(opml_file)} by `monitor sources import`\n" + yaml.safe_dump(
        {"sources": new}, sort_keys=False, allow_unicode=True, width=1000)
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            with open(output, "x", encoding="utf-8") as f:
                f.write(text)
        except FileExistsError:
            click.echo(f"error: {output} exists; choose a new file (then add it to `include:`)", err=True)
            return 2
        except OSError as e:
            click.echo(f"error: cannot write {output}: {e.strerror or e}", err=True)
            return 1
    click.echo(f"{len(new)} new source{'s' if len(new) != 1 else ''} from {len(feeds)} feed"
               f"{'s' if len(feeds) != 1 else ''} in {opml_file}"
               f"{f'; {len(feeds) - len(new)} already configured' if len(feeds) > len(new) else ''}"
               f"{f'; written to {output} (add it to include: in the main config)' if output else ''}", err=True)
    return 0
