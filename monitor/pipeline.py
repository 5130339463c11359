"""Pipeline: one poll of one source, and one pass over the outbox.

Rules:
- A poll runs fetch -> parse -> normalize -> (drop known items) -> fingerprint (monitor.dedupe)
  -> match -> store. Everything a
  poll decides is written by one ``Store.commit_poll`` transaction; a failure at any stage is
  logged with its reason, recorded on the source, and never affects another source.
- An item is matched only when it is new and *fresh*: first seen with a published date within
  ``alerts.max_age`` (items without a date count as fresh). Older items are stored silently.
- Every new item joins the story of its nearest stored copy within ``stories.window`` or opens
  a new one (the store decides, in the poll's transaction). A story alerts once, on its first
  fresh item that matched, naming every watchlist that item matched (with score, terms and
  severity); a copy arriving later never re-alerts (with ``stories.notify_on_repost``, the
  first new outlet after the alert was sent brings one "now reported by N outlets" update).
  The alert gets one outbox row per enabled channel that accepts one of its hits: one of the
  channel's ``watchlists`` with severity at least its ``min_severity``. A channel's
  notification lists only the hits it accepts, and every outlet of the story known when it
  is sent.
- The snippet is the start of the item's summary, or, when none of the matched terms occur
  there, a window around the first one.
- Delivery sends due outbox rows; success marks the row sent, failure schedules the next try
  with exponential backoff (``delivery.retry_initial`` doubling up to ``delivery.retry_max``,
  ±10 % jitter). Rows for channels no longer configured wait untouched.
- Exactly one structured log line per poll: source, status, HTTP status, items, new, alerts,
  duration (and the error when it failed).
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from . import dedupe, metrics
from .config import Config, SourceConfig
from .fetch import Fetcher
from .logs import event
from .matcher import Matcher
from .model import FetchResult, Item, Notification
from .normalize import normalize_entry
from .notify import Notifier, term_pattern
from .parse import FeedParseError, parse_feed
from .store import NewItem, PendingDelivery, Store, StoryPolicy, utcnow

log = logging.getLogger("monitor.pipeline")

SNIPPET_CHARS = 400


@dataclass(frozen=True)
class PollReport:
    source: str
    status: str  # ok | not_modified | error
    items: int = 0
    new: int = 0
    alerts: int = 0
    error: str | None = None


@dataclass(frozen=True)
class DeliveryReport:
    sent: int = 0
    failed: int = 0


def is_fresh(item: Item, now: datetime, max_age: timedelta) -> bool:
    return item.published is None or item.published >= now - max_age


def unique_items(items: list[Item]) -> list[Item]:
    """Drop repeats inside one feed document (same guid or same canonical link)."""
    seen: set[str] = set()
    out = []
    for it in items:
        keys = {"g:" + it.guid} | ({"l:" + it.canonical_link} if it.canonical_link else set())
        if keys & seen:
            continue
        seen |= keys
        out.append(it)
    return out


def snippet(text: str, limit: int = SNIPPET_CHARS, terms: Iterable[str] = ()) -> str:
    """Whitespace-collapsed ``text`` cut to about ``limit`` characters at a word boundary. When
    ``terms`` are given and none occurs (whole word, any case) in the first ``limit``
    characters, the window starts shortly before the first one that does occur."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    start = 0
    pattern = term_pattern(terms)
    if pattern is not None:
        m = pattern.search(text)
        if m is not None and m.end() > limit:
            start = max(0, m.start() - limit // 4)
            start = text.find(" ", start, m.start()) + 1 or m.start()  # a word boundary
    cut = text[start:start + limit]
    if start + limit < len(text):
        cut = cut.rsplit(" ", 1)[0] + " …"
    return ("… " if start else "") + cut


def backoff(attempts: int, initial: timedelta, maximum: timedelta) -> timedelta:
    """Delay before retry number ``attempts`` (1 = after the first failure)."""
    base = min(initial.total_seconds() * (2 ** max(0, attempts - 1)), maximum.total_seconds())
    return timedelta(seconds=base * random.uniform(0.9, 1.1))


class Pipeline:
    def __init__(self, cfg: Config, store: Store, matcher: Matcher, fetcher: Fetcher, notifier: Notifier,
                 on_alert: Callable[[], None] | None = None):
        self.cfg = cfg
        self.store = store
        self.matcher = matcher
        self.fetcher = fetcher
        self.notifier = notifier
        self.on_alert = on_alert
        self._channels = [(c.name, c.accepts) for c in cfg.enabled_channels]
        self._channel_cfg = {c.name: c for c in cfg.enabled_channels}
        self._stories = StoryPolicy(cfg.stories.window, cfg.stories.notify_on_repost)

    # ------------------------------------------------------------ polling
    async def poll(self, source: SourceConfig) -> PollReport:
        started = time.monotonic()
        result: FetchResult | None = None
        try:
            state = await asyncio.to_thread(self.store.source_state, source.name)
            result = await self.fetcher.fetch(source.url, state.etag, state.last_modified)
            report = await self._process(source, result)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - one source's bug must not stop the daemon
            log.exception("poll of %s failed unexpectedly", source.name)
            report = PollReport(source.name, "error", error=f"internal error: {e.__class__.__name__}: {e}")
            await asyncio.to_thread(self.store.record_failure, source.name,
                                    FetchResult(url=source.url, status="error", error=report.error))
        duration = time.monotonic() - started
        metrics.POLLS.labels(source.name, report.status).inc()
        metrics.POLL_SECONDS.observe(duration)
        metrics.SOURCE_FAILURES.labels(source.name).set(0 if report.status != "error" else 1)
        if report.status != "error":
            metrics.SOURCE_LAST_SUCCESS.labels(source.name).set(time.time())
        event(log, "poll", logging.INFO if report.status != "error" else logging.WARNING,
              source=source.name, status=report.status,
              http=result.http_status if result else None, items=report.items, new=report.new,
              alerts=report.alerts, duration_ms=round(duration * 1000), error=report.error)
        if report.alerts and self.on_alert:
            self.on_alert()
        return report

    async def _process(self, source: SourceConfig, result: FetchResult) -> PollReport:
        if result.status == "error":
            await asyncio.to_thread(self.store.record_failure, source.name, result)
            return PollReport(source.name, "error", error=result.error)
        if result.status == "not_modified":
            await asyncio.to_thread(self.store.record_not_modified, source.name, result)
            return PollReport(source.name, "not_modified")
        try:
            feed = await asyncio.to_thread(parse_feed, result.body or b"", result.url, result.content_type)
        except FeedParseError as e:
            failed = FetchResult(url=result.url, status="error", http_status=result.http_status, error=str(e))
            await asyncio.to_thread(self.store.record_failure, source.name, failed)
            return PollReport(source.name, "error", error=str(e))
        if feed.warning:
            event(log, "feed warning", logging.DEBUG, source=source.name, warning=feed.warning)
        items = unique_items([normalize_entry(e) for e in feed.entries])
        known = await asyncio.to_thread(self.store.known_keys, source.name, items)
        now = utcnow()
        new_items = await asyncio.to_thread(self._analyse, [it for it in items if it.guid not in known], now)
        outcome = await asyncio.to_thread(self.store.commit_poll, source.name, result, new_items,
                                          self._channels, now, self._stories)
        metrics.ITEMS_NEW.labels(source.name).inc(len(outcome.stored))
        metrics.ALERTS.inc(outcome.alerts)
        hits_by_guid = {n.item.guid: n.hits for n in new_items}
        for st in outcome.stored:
            hits = hits_by_guid.get(st.item.guid) or ()
            if st.alerted:
                event(log, "alert", source=source.name, story=st.story_id, title=st.item.title,
                      link=st.item.link, watchlists=",".join(h.name for h in hits),
                      terms=",".join(t for h in hits for t in h.terms))
            elif st.joined:
                event(log, "repost", logging.DEBUG if not hits else logging.INFO, source=source.name,
                      story=st.story_id, title=st.item.title, link=st.item.link)
        return PollReport(source.name, "ok", items=len(items), new=len(outcome.stored), alerts=outcome.alerts)

    def _analyse(self, items: list[Item], now: datetime) -> list[NewItem]:
        """Match and fingerprint new items (CPU work, run off the event loop)."""
        out = []
        for it in items:
            fresh = is_fresh(it, now, self.cfg.alerts.max_age)
            text = it.text
            hits = tuple(self.matcher.match(it.title, text)) if fresh else ()
            out.append(NewItem(it, fresh, hits, dedupe.fingerprint(it.title, text)))
        return out

    # ------------------------------------------------------------ delivery
    def notification_for(self, d: PendingDelivery) -> Notification:
        chan = self._channel_cfg.get(d.channel)
        # The row exists because the channel accepted a hit when the alert was made; should its
        # config have changed since, it still gets the whole alert rather than an empty one.
        hits = tuple(h for h in d.hits if chan is None or chan.accepts(h)) or d.hits
        terms = [t for h in hits for t in h.terms]
        return Notification(alert_id=d.alert_id, channel=d.channel, title=d.title, link=d.link, source=d.source,
                            published=d.published, watchlists=hits, snippet=snippet(d.summary, terms=terms),
                            outlets=d.outlets, update=d.kind == "update")

    async def deliver(self, ignore_backoff: bool = False) -> DeliveryReport:
        """Send every due outbox row once; return how many went and how many failed."""
        if not self._channel_cfg:
            return DeliveryReport()
        due = await asyncio.to_thread(self.store.due_deliveries, utcnow(), ignore_backoff,
                                      list(self._channel_cfg))
        sem = asyncio.Semaphore(4)
        sent = failed = 0

        async def one(d: PendingDelivery) -> None:
            nonlocal sent, failed
            async with sem:
                res = await self.notifier.send(self.notification_for(d))
            if res.ok:
                await asyncio.to_thread(self.store.mark_sent, d.id)
                sent += 1
                metrics.DELIVERIES.labels(d.channel, "sent").inc()
                event(log, "sent", alert=d.alert_id, channel=d.channel, attempt=d.attempts + 1, title=d.title)
            else:
                delay = backoff(d.attempts + 1, self.cfg.delivery.retry_initial, self.cfg.delivery.retry_max)
                await asyncio.to_thread(self.store.mark_failed, d.id, res.error or "unknown error",
                                        utcnow() + delay)
                failed += 1
                metrics.DELIVERIES.labels(d.channel, "failed").inc()
                event(log, "send failed", logging.WARNING, alert=d.alert_id, channel=d.channel,
                      attempt=d.attempts + 1, error=res.error, retry_in=f"{delay.total_seconds():.0f}s")

        await asyncio.gather(*(one(d) for d in due))
        metrics.OUTBOX_PENDING.set(await asyncio.to_thread(self.store.pending_count))
        return DeliveryReport(sent, failed)
