"""Durations as users write them: ``90s``, ``15m``, ``2h``, ``3d``, ``1w``, or combined
(``1h30m``). Bare numbers are seconds. Anything else is a ValueError naming the text."""
from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_WHOLE = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d|w)\s*)+$", re.IGNORECASE)


def parse_duration(text: str | int | float | timedelta) -> timedelta:
    """Parse a duration; raise ValueError with a message that quotes the bad text."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, bool):
        raise ValueError(f"invalid duration {text!r}: use a number with a unit, like 90s, 15m, 2h or 3d")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"invalid duration {text!r}: must not be negative")
        return timedelta(seconds=text)
    s = str(text).strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", s):
        return timedelta(seconds=float(s))
    if not _WHOLE.match(s):
        raise ValueError(f"invalid duration {text!r}: use a number with a unit, like 90s, 15m, 2h or 3d")
    seconds = sum(float(n) * _UNITS[u.lower()] for n, u in _PART.findall(s))
    return timedelta(seconds=seconds)


def format_duration(td: timedelta) -> str:
    """Short human form: 90 s -> '1m30s'."""
    total = int(td.total_seconds())
    if total == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, total = divmod(total, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)
