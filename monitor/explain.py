"""Dry-run reports for people tuning watchlists: ``monitor match --explain`` and ``monitor backtest``.

Rules:
- Both only read: ``--explain`` reads its INPUT like ``monitor match`` (``batch.read_records``)
  and touches no database; ``backtest`` opens the database read-only
  (``Store.open_readonly``), refuses a schema that is not the current one, and sends nothing.
- ``--explain`` prints, per item, its id and title, then per watchlist the matcher explains
  (:meth:`~monitor.matcher.Matcher.explain`): FIRED or near miss, severity, score against
  ``min_score``, whether an exclude vetoed it; then each clause (kind, true/false, weight,
  points, "in title", its query) and each matched term with ~60 characters of context per
  occurrence, the term marked ``[[like this]]`` (bold when stdout is a terminal). An item
  with nothing to show is one line. ``--json`` prints the same as one JSON object per item.
- ``backtest`` runs one watchlist, as the config now defines it, over the items first seen
  within ``--since`` (oldest first, in batches, so memory stays flat), skipping items the
  daemon would not have alerted on (first seen already older than ``alerts.max_age``)
  unless ``--include-stale``; it prints one line per story (its first matching item) and a
  summary, and reports progress on stderr during long runs.
- Exit status: 0 done; 1 bad input lines (explain) or an unusable database (backtest);
  2 an unknown watchlist (with a did-you-mean).
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TextIO

import click

from .config import Config, name_hint
from .model import ClauseExplanation, Explanation
from .query import WORD_RE

SNIPPET_WIDTH = 60  # characters of context around one occurrence, the term included
MAX_OCCURRENCES = 3  # shown per term and clause; the rest are counted
TITLE_WIDTH = 100


# --------------------------------------------------------------------------- formatting helpers


def _num(value: float) -> str:
    """3.0 -> '3', 2.5 -> '2.5', 1/3 -> '0.33'."""
    return f"{value:.2f}".rstrip("0").rstrip(".") if value == value else "nan"


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _norm(surface: str) -> str:
    """A term's identity for grouping occurrences: its words, lower-cased, single-spaced."""
    return " ".join(WORD_RE.findall(surface.lower()))


def _plain_mark(term: str) -> str:
    return f"[[{term}]]"


def _tty_mark(term: str) -> str:
    return click.style(term, bold=True, fg="yellow")


def context(source: str, start: int, end: int, mark: Callable[[str], str] = _plain_mark,
            width: int = SNIPPET_WIDTH) -> str:
    """About ``width`` characters of ``source`` around ``source[start:end]`` (whitespace
    collapsed, cut at word boundaries where possible, ``…`` where text was left out), with
    the occurrence passed through ``mark``."""
    start = max(0, min(start, len(source)))
    end = max(start, min(end, len(source)))
    side = max(10, (width - (end - start)) // 2)
    lo, hi = max(0, start - side), min(len(source), end + side)
    if lo > 0:  # start at a word boundary when one is near
        space = source.find(" ", lo, start)
        lo = space + 1 if space != -1 else lo
    if hi < len(source):
        space = source.rfind(" ", end, hi)
        hi = space if space != -1 else hi
    before = " ".join(source[lo:start].split())
    term = " ".join(source[start:end].split())
    after = " ".join(source[end:hi].split())
    if source[lo:start][-1:].isspace() and before:
        before += " "
    if source[end:hi][:1].isspace() and after:
        after = " " + after
    return f"{'…' if lo > 0 else ''}{before}{mark(term)}{after}{'…' if hi < len(source) else ''}"


# --------------------------------------------------------------------------- monitor match --explain


def explain_command(cfg: Config, input_: str, near_misses: bool = False, as_json: bool = False,
                    out: TextIO | None = None) -> int:
    """Explain every watchlist decision on every item of INPUT; returns the exit status."""
    from .batch import read_records
    from .matcher import Matcher

    out = out or sys.stdout
    matcher = Matcher(cfg.matcher_watchlists())
    mark = _tty_mark if (not as_json and out.isatty()) else _plain_mark
    bad = items = fired = missed = 0
    for record in read_records(input_, cfg):
        if isinstance(record, str):  # an error about one input line
            click.echo(record, err=True)
            bad += 1
            continue
        rid, link, title, text = record
        explanations = matcher.explain(title, text, near_misses=near_misses)
        items += 1
        if any(e.matched for e in explanations):
            fired += 1
        elif explanations:
            missed += 1
        if as_json:
            out.write(json.dumps({"id": rid, "link": link, "title": title,
                                  "explanations": [dataclasses.asdict(e) for e in explanations]},
                                 ensure_ascii=False) + "\n")
        else:
            out.write(render_item(rid, link, title, text, explanations, near_misses, mark))
    if not as_json:
        tail = f", {missed} with near misses only" if near_misses else ""
        out.write(f"{items} item{'s' if items != 1 else ''}: {fired} fired{tail}\n")
    out.flush()
    return 1 if bad else 0


def render_item(rid: str, link: str | None, title: str, text: str, explanations: Sequence[Explanation],
                near_misses: bool = False, mark: Callable[[str], str] = _plain_mark) -> str:
    """The readable report of one item (ends with a newline)."""
    head = f"{rid}: {_one_line(title, TITLE_WIDTH) or '(untitled)'}"
    if not explanations:
        why = "no watchlist terms occur" if near_misses else "no watchlist fired"
        return f"{head} -- {why}\n"
    lines = [f"== {head}"]
    if link:
        lines.append(f"   {link}")
    for e in explanations:
        lines += _render_explanation(e, title, text, mark)
    return "\n".join(lines) + "\n\n"


def _render_explanation(e: Explanation, title: str, text: str, mark: Callable[[str], str]) -> list[str]:
    verdict = "FIRED" if e.matched else "near miss"
    cmp = ">=" if e.score >= e.min_score else "<"
    veto = "; EXCLUDED (an exclude query is true)" if e.excluded else ""
    lines = [f"  {verdict}: {e.name} [{e.severity}] score {_num(e.score)} {cmp} min_score {_num(e.min_score)}{veto}"]
    for c in e.clauses:
        lines += _render_clause(c, title, text, mark)
    return lines


def _render_clause(c: ClauseExplanation, title: str, text: str, mark: Callable[[str], str]) -> list[str]:
    state = "true " if c.true else "false"
    if c.kind == "exclude":
        effect = "vetoes" if c.true else "no veto"
    else:
        effect = f"weight {_num(c.weight)}, +{_num(c.points)}"
        if c.in_title:
            effect += " (in title)"
    lines = [f"    {c.kind:<7} {state}  {effect}:  {c.query}"]
    fields = {"title": title, "text": text}
    groups: dict[str, tuple[str, list[tuple[str, int, int]]]] = {}
    for term in c.terms:
        groups.setdefault(_norm(term), (term, []))
    for field, start, end in c.spans:
        source = fields.get(field, "")
        key = _norm(source[start:end])
        groups.setdefault(key, (source[start:end].lower(), []))[1].append((field, start, end))
    for label, spans in groups.values():
        if not spans:
            lines.append(f"      {label!r}")
            continue
        for i, (field, start, end) in enumerate(spans[:MAX_OCCURRENCES]):
            name = repr(label) if i == 0 else " " * len(repr(label))
            lines.append(f"      {name} {field}: {context(fields[field], start, end, mark)}")
        if len(spans) > MAX_OCCURRENCES:
            lines.append(f"      {' ' * len(repr(label))} (+{len(spans) - MAX_OCCURRENCES} more)")
    return lines


# --------------------------------------------------------------------------- monitor backtest


def unknown_watchlist(cfg: Config, name: str) -> str:
    """'unknown watchlist ...' with a did-you-mean or the known names."""
    hint = name_hint(name, [w.name for w in cfg.watchlists],
                     f"{cfg.path or 'the configuration'} defines no watchlists")
    return f"unknown watchlist '{name}' ({hint})"


def backtest_command(cfg: Config, name: str, since: timedelta, limit: int | None = None,
                     include_stale: bool = False, now: datetime | None = None,
                     out: TextIO | None = None, progress: TextIO | None = None,
                     progress_every: float = 2.0, batch_size: int = 500) -> int:
    """Print what watchlist ``name`` would have alerted on among stored items; the exit status."""
    from .matcher import Matcher
    from .store import DatabaseError, Store, safe_url

    out = out or sys.stdout
    progress = progress or sys.stderr
    watchlist = cfg.watchlist(name)
    if watchlist is None:
        click.echo(f"error: {unknown_watchlist(cfg, name)}", err=True)
        return 2
    matcher = Matcher([watchlist.spec(cfg.aliases_for(watchlist))])
    now = now or datetime.now(UTC)
    cutoff = now - since
    try:
        store = Store.open_readonly(cfg.database.url)
    except DatabaseError as e:
        click.echo(f"error: {e}", err=True)
        return 1
    try:
        problem = store.schema_problem()
        if problem is not None:
            click.echo(f"error: {problem}", err=True)
            return 1
        out.write(f"backtest of '{name}' (severity {watchlist.severity}, min_score {_num(watchlist.min_score)}) "
                  f"on items first seen since {cutoff:%Y-%m-%d %H:%M} UTC in {safe_url(cfg.database.url)}\n")
        out.flush()
        scanned = matched = stale = 0
        stories: set[int] = set()
        stopped = False
        started = last_report = time.monotonic()
        tty = progress.isatty()
        try:
            for rec in store.iter_items(cutoff, batch_size=batch_size):
                if not rec.fresh and not include_stale:
                    stale += 1
                    continue
                scanned += 1
                hits = matcher.match(rec.item.title, rec.item.text)
                if hits:
                    matched += 1
                    if rec.story_id not in stories:
                        stories.add(rec.story_id)
                        out.write(_story_line(rec, hits[0].score, hits[0].terms) + "\n")
                        if limit is not None and len(stories) >= limit:
                            stopped = True
                            break
                if time.monotonic() - last_report >= progress_every:
                    last_report = time.monotonic()
                    line = (f"scanned {scanned} items, {matched} matched, {len(stories)} stories "
                            f"({last_report - started:.0f}s)")
                    progress.write(f"\r{line}" if tty else f"{line}\n")
                    progress.flush()
        except Exception as e:  # noqa: BLE001 - a database failing mid-way: say so, no traceback
            if tty and last_report > started:
                progress.write("\n")
            click.echo(f"error: reading items from {safe_url(cfg.database.url)} failed after {scanned}: "
                       f"{e.__class__.__name__}: {e}", err=True)
            return 1
        if tty and last_report > started:
            progress.write("\n")
        summary = (f"{scanned} item{'s' if scanned != 1 else ''} scanned, {matched} matched, "
                   f"{len(stories)} stor{'ies' if len(stories) != 1 else 'y'}")
        if stopped:
            summary += f" (stopped at --limit {limit})"
        if stale:
            summary += (f"; {stale} stale item{'s' if stale != 1 else ''} skipped (first seen already "
                        "older than alerts.max_age; --include-stale scans them)")
        out.write(summary + "\n")
        out.flush()
        return 0
    finally:
        store.close()


def _story_line(rec, score: float, terms: Sequence[str]) -> str:
    when = rec.first_seen.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    title = _one_line(rec.item.title, TITLE_WIDTH) or "(untitled)"
    return f"{when}  {rec.source}  score {_num(score)}  {title}  [{', '.join(terms)}]"
