"""Normalize: STUB - being implemented."""
from __future__ import annotations

from .model import FeedEntry, Item


def html_to_text(html: str) -> str:
    raise NotImplementedError


def canonical_link(url: str | None) -> str | None:
    raise NotImplementedError


def normalize_entry(entry: FeedEntry) -> Item:
    raise NotImplementedError
