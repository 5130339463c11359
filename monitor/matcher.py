"""Matcher: STUB - being implemented."""
from __future__ import annotations

from collections.abc import Sequence

from .model import WatchlistHit


class Matcher:
    def __init__(self, watchlists: Sequence[tuple[str, str]]):
        raise NotImplementedError

    def match(self, title: str, text: str) -> list[WatchlistHit]:
        raise NotImplementedError
