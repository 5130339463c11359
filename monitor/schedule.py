"""Digest schedules: when a ``mode: digest`` channel sends its next message.

Rules:
- ``every`` is a duration (``1h``, ``30m``, ``1d``; at least one minute) or a 5-field cron
  expression (``"0 8 * * 1-5"``: minute hour day-of-month month day-of-week), read by
  APScheduler's ``CronTrigger.from_crontab``. A cron expression is evaluated in the channel's
  ``timezone`` (an IANA name; daylight-saving changes are the zone's), so "8 o'clock on
  weekdays" stays 8 o'clock local all year.
- A duration is aligned to multiples of itself since the Unix epoch (UTC): ``1h`` fires on
  the hour, ``15m`` at :00, :15, :30 and :45, ``1d`` at midnight UTC. Restarts therefore
  never shift a schedule and need no state; for local wall-clock times use cron.
- Cron's day-of-week numbers mean what they mean in crontab(5): 0 and 7 are Sunday, 1-5
  Monday to Friday (APScheduler 3 alone would read them Monday-first; see crontab_weekdays).
- ``next_after(t)`` is the first fire time strictly after ``t`` (aware UTC in and out).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .durations import format_duration, parse_duration

MIN_EVERY = timedelta(minutes=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def zone_of(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; ValueError naming it when unknown."""
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as UTC, Europe/Paris "
                         "or America/New_York)") from None


@dataclass(frozen=True)
class Schedule:
    text: str
    timezone: str
    interval: timedelta | None  # None: cron

    def next_after(self, t: datetime) -> datetime:
        t = t.astimezone(UTC)
        if self.interval is not None:
            step = self.interval.total_seconds()
            k = math.floor((t - _EPOCH).total_seconds() / step) + 1
            return _EPOCH + timedelta(seconds=k * step)
        trigger = _cron(self.text, self.timezone)
        # CronTrigger returns the first time >= now; ask from just after t
        nxt = trigger.get_next_fire_time(None, t + timedelta(microseconds=1))
        if nxt is None:  # pragma: no cover - a 5-field crontab always fires again
            raise ValueError(f"cron expression {self.text!r} never fires again")
        return nxt.astimezone(UTC)

    def describe(self) -> str:
        if self.interval is not None:
            return f"every {format_duration(self.interval)}"
        return f"cron '{self.text}' ({self.timezone})"


def schedule_of(every: str, timezone: str = "UTC") -> Schedule:
    """Parse ``every``; ValueError with the reason when it is neither a duration nor cron."""
    text = " ".join(str(every).split())
    if len(text.split(" ")) == 1:
        try:
            interval = parse_duration(text)
        except ValueError:
            raise ValueError(f"invalid schedule {every!r}: use a duration like 1h or 30m, or a cron "
                             "expression of 5 fields like \"0 8 * * 1-5\"") from None
        if interval < MIN_EVERY:
            raise ValueError(f"invalid schedule {every!r}: must be at least 1m")
        return Schedule(text, timezone, interval)
    zone_of(timezone)
    try:
        _cron(text, timezone)
    except ValueError as e:
        raise ValueError(f"invalid cron expression {every!r}: {e}") from None
    return Schedule(text, timezone, None)


@lru_cache(maxsize=256)
def _cron(text: str, timezone: str):  # noqa: ANN202 - apscheduler is imported lazily
    from apscheduler.triggers.cron import CronTrigger

    fields = text.split(" ")
    if len(fields) == 5:
        fields[4] = crontab_weekdays(fields[4])
    return CronTrigger.from_crontab(" ".join(fields), timezone=zone_of(timezone))


_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def crontab_weekdays(field: str) -> str:
    """A crontab day-of-week field (0 or 7 = Sunday, 1 = Monday) as weekday names.

    APScheduler 3 reads numbers in this field Monday-first (0 = Monday), unlike cron, so
    ``1-5`` would mean Tuesday to Saturday (its issue #286, fixed only in 4.x). Numbers,
    ranges, lists and steps are expanded to names here; a field that already uses names
    (or anything else) is left as written."""
    if field == "*" or not all(c.isdigit() or c in ",-/*" for c in field):
        return field
    days: set[int] = set()
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"invalid day-of-week step in {field!r}")
        if span == "*":
            lo, hi = 0, 6
        elif "-" in span:
            a, _, b = span.partition("-")
            if not a or not b:
                raise ValueError(f"invalid day-of-week range {part!r}")
            lo, hi = int(a), int(b)
        else:
            lo = int(span)
            hi = 6 if step_text else lo
        if not (0 <= lo <= 7 and 0 <= hi <= 7) or lo > hi:
            raise ValueError(f"day of week {part!r} is out of range (0-7, 0 and 7 are Sunday)")
        days.update(d % 7 for d in range(lo, hi + 1, step))
    return ",".join(_DAY_NAMES[d] for d in sorted(days))
