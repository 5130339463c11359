"""Small pure pieces: durations, sizes, freshness, in-feed duplicates, backoff, snippets, log lines."""
from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from monitor.config import parse_size
from monitor.durations import format_duration, parse_duration
from monitor.logs import JsonFormatter, TextFormatter
from monitor.model import Item
from monitor.pipeline import backoff, is_fresh, snippet, unique_items

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("15m", 900), ("2h", 7200), ("3d", 259200),
                                          ("1h30m", 5400), ("45", 45), (" 1w ", 604800), (30, 30)])
def test_durations(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["15 parsecs", "", "m", "-5s", "1.5.2h", True])
def test_bad_durations_quote_the_text(bad):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(bad)


def test_format_duration():
    assert format_duration(timedelta(seconds=5400)) == "1h30m"


def test_sizes():
    assert parse_size("20MB") == 20_000_000 and parse_size("1KiB") == 1024 and parse_size(5) == 5
    with pytest.raises(ValueError):
        parse_size("lots")


def _item(guid, link, published=None):
    return Item(guid, link, link, "t", "", "", published)


def test_freshness_window():
    max_age = timedelta(days=3)
    assert is_fresh(_item("a", None, NOW - timedelta(days=2)), NOW, max_age)
    assert not is_fresh(_item("a", None, NOW - timedelta(days=4)), NOW, max_age)
    assert is_fresh(_item("a", None, None), NOW, max_age)  # no date counts as new


def test_unique_items_drops_repeats_by_guid_or_link():
    items = [_item("1", "https://a/1"), _item("1", "https://a/2"), _item("3", "https://a/1"), _item("4", None)]
    assert [i.guid for i in unique_items(items)] == ["1", "4"]


def test_backoff_doubles_and_caps():
    init, cap = timedelta(seconds=30), timedelta(minutes=10)
    delays = [backoff(n, init, cap).total_seconds() for n in range(1, 8)]
    assert 27 <= delays[0] <= 33 and 54 <= delays[1] <= 66
    assert all(d <= 660 for d in delays) and delays[-1] >= 540


def test_snippet_cuts_on_a_word():
    s = snippet("word " * 200, 50)
    assert len(s) <= 52 and s.endswith("…") and "wor …" not in s


def _record(**fields):
    r = logging.LogRecord("monitor.pipeline", logging.INFO, __file__, 1, "poll", (), None)
    r.fields = fields
    return r


def test_log_lines_carry_fields():
    text = TextFormatter().format(_record(source="wire", status="ok", error=None, title="a b"))
    assert "poll source=wire status=ok" in text and 'title="a b"' in text and "error" not in text
    data = json.loads(JsonFormatter().format(_record(source="wire", new=3)))
    assert data["event"] == "poll" and data["source"] == "wire" and data["new"] == 3
