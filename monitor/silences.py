"""Silences: operator-set mutes with an expiry, checked when a notification is about to go out.

Rules:
- A silence names a watchlist, optionally a query (the watchlist language, with the shared
  aliases) that the item's title or text must match, and optionally a source (a name or a
  shell-style pattern such as ``kcna-*``). It covers a hit of that watchlist on an item from
  a matching source while it is active: ``starts_at <= now < ends_at``.
- Silences are applied per channel message at send time (instant and digest alike): the
  hits a channel would be told about that an active silence covers are left out; when none
  is left, the outbox row is recorded ``silenced`` with the covering silence's id (the
  oldest one, when several apply) and never sent. A silence added after an alert was queued
  therefore still stops it; one that expired lets later alerts through.
- ``monitor silence add`` checks the watchlist name and the query before storing anything.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from datetime import datetime

from .matcher import Matcher
from .model import WatchlistHit, WatchlistSpec
from .store import Silence


class SilenceCheck:
    """The active silences at one moment, compiled once for a delivery pass."""

    def __init__(self, silences: Sequence[Silence], now: datetime,
                 aliases: Mapping[str, Sequence[str]] | None = None):
        self.silences = sorted((s for s in silences if s.active(now)), key=lambda s: s.id)
        specs = [WatchlistSpec(name=str(s.id), query=s.query, aliases=dict(aliases or {}))
                 for s in self.silences if s.query]
        self._matcher = Matcher(specs) if specs else None

    def __bool__(self) -> bool:
        return bool(self.silences)

    def covering(self, hits: Sequence[WatchlistHit], source: str, title: str, text: str) -> dict[str, int]:
        """Watchlist name -> id of the (oldest) active silence covering that hit."""
        if not self.silences:
            return {}
        matched: set[str] | None = None  # silence ids whose query matches, computed when needed
        out: dict[str, int] = {}
        for hit in hits:
            for s in self.silences:
                if s.watchlist != hit.name:
                    continue
                if s.source is not None and not fnmatch.fnmatchcase(source, s.source):
                    continue
                if s.query:
                    if matched is None:
                        matched = {h.name for h in self._matcher.match(title, text)} if self._matcher else set()
                    if str(s.id) not in matched:
                        continue
                out[hit.name] = s.id
                break
        return out
