"""Polling policy: when each source is polled next. Pure functions; the store keeps the state.

Rules:
- Every source has bounds ``[min_interval, max_interval]`` (its own, else ``fetch.``'s). Its
  first interval is its configured ``interval`` (clamped to the bounds).
- After a successful poll the interval adapts to how often the source publishes:
  ``items_per_day`` is an estimate kept per source (from the published times of the items in
  the feed, blended with what earlier polls saw), and the target is half the expected gap
  between two items (two polls per new item). A poll that found nothing new lengthens the
  interval by a quarter; one that found new items moves it to the target at once.
- The server's own hints are a floor: RSS ``<ttl>`` / ``sy:updatePeriod`` and
  ``Cache-Control: max-age`` (never polled more often than they allow, but never less often
  than ``max_interval``).
- A failure backs off exponentially from ``min_interval`` (doubling per consecutive
  failure) up to ``max_interval``; a source is never disabled. ``Retry-After`` on 429/503
  pushes the next poll at least that far (up to a day).
- Every next time gets ±10 % jitter, so sources added together drift apart.
"""
from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

JITTER = 0.10
SLOWDOWN = 1.25  # an empty poll lengthens the interval by this factor
BLEND = 0.5  # weight of a new items-per-day estimate against the old one
RATE_WINDOW = timedelta(days=14)  # published times older than this do not count towards the rate


@dataclass(frozen=True)
class Bounds:
    lo: timedelta
    hi: timedelta

    def clamp(self, value: timedelta) -> timedelta:
        return max(self.lo, min(self.hi, value))


def jittered(delay: timedelta, rng: random.Random | None = None) -> timedelta:
    r = (rng or random).uniform(1 - JITTER, 1 + JITTER)
    return timedelta(seconds=delay.total_seconds() * r)


def published_rate(times: Iterable[datetime | None], now: datetime) -> float | None:
    """Items per day from the published times of a feed's items (the recent ones); None when
    fewer than two have usable times."""
    recent = sorted(t for t in times if t is not None and now - RATE_WINDOW <= t <= now)
    if len(recent) < 2:
        return None
    span = (now - recent[0]).total_seconds() / 86400
    return (len(recent)) / max(span, 1 / 24)


def blend_rate(old: float | None, new: float | None) -> float | None:
    if new is None:
        return old
    if old is None:
        return new
    return (1 - BLEND) * old + BLEND * new


def next_interval(current: timedelta, bounds: Bounds, new_items: int, items_per_day: float | None,
                  server_hint: timedelta | None) -> timedelta:
    """The interval after a successful poll (before jitter)."""
    if new_items > 0 and items_per_day:
        target = timedelta(days=1) / items_per_day / 2
    elif new_items > 0:
        target = current
    else:
        target = current * SLOWDOWN
    if server_hint is not None:
        target = max(target, min(server_hint, bounds.hi))
    return bounds.clamp(target)


def failure_delay(failures: int, bounds: Bounds, retry_after: float | None = None) -> timedelta:
    """Delay before the next poll after ``failures`` consecutive failures (before jitter)."""
    delay = bounds.clamp(bounds.lo * (2 ** max(0, failures - 1)))
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=retry_after))
    return delay
