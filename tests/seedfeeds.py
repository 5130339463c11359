"""Three loopback feeds built from the two seed articles in ../shared/seeds:

- ``sputnik``: article 000 as its original outlet publishes it (doubled paragraph and credit
  line removed);
- ``reposter``: article 000 verbatim as reposted elsewhere: another domain, tracking
  parameters, a site suffix on the title, the doubled paragraph and the credit line;
- ``almanar``: article 002 with its page boilerplate, a later and different event.
"""
from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta

from conftest import SEEDS
from feedserver import rss

ORIG_LINK = "https://sputnik.example/20161020/us-south-korea-strategic-weapons-1046556.html"
REPOST_LINK = ("https://repost.example/news/2016/10/us-ready-to-deploy-strategic-weapons-korea/"
               "?utm_source=rss&utm_medium=feed")
OTHER_LINK = "https://almanar.example/story/us-vows-deploy-strategic-assets-korean-peninsula"
TITLE_000 = "US Ready to Further Deploy Strategic Weapons in South Korea to Counter North"
TITLE_002 = "US Vows to Deploy Strategic Assets to Korean Peninsula After North's Nuclear Law"


def _paras(text: str) -> list[str]:
    return [p.strip() for p in text.splitlines() if p.strip()]


def _html(paras: list[str]) -> str:
    return "".join(f"<p>{html.escape(p)}</p>" for p in paras)


def ago(minutes: float) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes)


def seed_feeds() -> dict[str, bytes]:
    p000 = _paras((SEEDS / "000_6ccf21d8d40f38ac.txt").read_text())
    p002 = _paras((SEEDS / "002_67247b03e79c0a31.txt").read_text())
    original: list[str] = []
    for p in p000:
        if p not in original and not p.startswith("This story first appeared"):
            original.append(p)
    return {
        "/feeds/sputnik.xml": rss("Sputnik International", "https://sputnik.example/", [
            dict(title=TITLE_000, link=ORIG_LINK, description=_html(original), published=ago(50))]),
        "/feeds/reposter.xml": rss("Repost Daily", "https://repost.example/", [
            dict(title=TITLE_000 + " | Repost Daily", link=REPOST_LINK, description=_html(p000),
                 published=ago(20))]),
        "/feeds/almanar.xml": rss("Al-Manar English", "https://almanar.example/", [
            dict(title=TITLE_002, link=OTHER_LINK, description=_html(p002), published=ago(35))]),
    }
