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
import hashlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from concurrent.futures import BrokenExecutor, Executor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from . import dedupe, metrics
from .config import ChannelConfig, Config, SourceConfig
from .fetch import Fetcher
from .fulltext import FullText
from .logs import event
from .matcher import Matcher
from .model import Digest, FeedEntry, FetchResult, Item, ItemKey, Notification, ParsedFeed, WatchlistHit
from .normalize import entry_keys, normalize_entry
from .notify import Notifier, term_pattern
from .parse import FeedParseError, ParsePool, parse_feed, parse_plain
from .polling import Bounds, blend_rate, failure_delay, jittered, next_interval, published_rate
from .schedule import schedule_of
from .silences import SilenceCheck
from .store import (
    NewItem,
    PendingDelivery,
    PollCommit,
    PollOutcome,
    PollSchedule,
    RetryPolicy,
    SourceHealthPolicy,
    SourceState,
    Store,
    StoryPolicy,
    utcnow,
)

log = logging.getLogger("monitor.pipeline")

SNIPPET_CHARS = 400


@dataclass(frozen=True)
class PollReport:
    source: str
    status: str  # ok | not_modified | unchanged | error
    items: int = 0
    new: int = 0
    alerts: int = 0
    error: str | None = None
    next_poll_at: datetime | None = None
    interval: float | None = None  # seconds, the adaptive interval now in force
    failures: int = 0  # consecutive failures (0 after a success)


def _next_in(when: datetime | None) -> str | None:
    if when is None:
        return None
    return f"{max(0.0, (when - utcnow()).total_seconds()):.0f}s"


@dataclass(frozen=True)
class DeliveryReport:
    sent: int = 0  # rows delivered (a digest counts each of its rows)
    failed: int = 0  # rows that failed and will be retried
    dead: int = 0  # rows dead-lettered in this pass
    silenced: int = 0
    folded: int = 0  # rows held back by max_per_hour


def is_fresh(item: Item, now: datetime, max_age: timedelta) -> bool:
    return item.published is None or item.published >= now - max_age


T = TypeVar("T")
A = TypeVar("A")  # a request of _Batches
R = TypeVar("R")  # its result


def unique_items(items: list[Item]) -> list[Item]:
    """Drop repeats inside one feed document (same guid or same canonical link)."""
    return [it for it, _ in _unique([(it, ItemKey(it.guid, it.canonical_link)) for it in items])]


def _unique(keyed: list[tuple[T, ItemKey]]) -> list[tuple[T, ItemKey]]:
    seen: set[str] = set()
    out = []
    for thing, key in keyed:
        keys = {"g:" + key.guid} | ({"l:" + key.canonical_link} if key.canonical_link else set())
        if keys & seen:
            continue
        seen |= keys
        out.append((thing, key))
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
    #: Outbox rows read per channel per pass.
    BATCH = 500

    def __init__(self, cfg: Config, store: Store, matcher: Matcher, fetcher: Fetcher, notifier: Notifier,
                 on_alert: Callable[[], None] | None = None, parse_pool: ParsePool | None = None,
                 replica: str | None = None, work: Executor | None = None):
        self.cfg = cfg
        # threads for a poll's CPU work (parsing, known keys, normalising, fingerprints,
        # matching); None: the event loop's default executor
        self.work = work
        # with replicas sharing the database, a channel is delivered by the replica holding
        # its lease (Store.claim_channel); None: this process is the only sender
        self.replica = replica
        self.parse_pool = parse_pool
        self.full_text = FullText(fetcher)
        self._quiet: _Batches[tuple[str, FetchResult, datetime, PollSchedule], None] = _Batches(
            self._write_quiet, wait=QUIET_BATCH_WAIT)
        self._commits: _Batches[PollCommit, PollOutcome] = _Batches(
            lambda polls: self._write(self.store.commit_polls, polls), limit=COMMIT_GROUP_ITEMS,
            size=lambda poll: len(poll.new_items))
        self.store = store
        self.matcher = matcher
        self.fetcher = fetcher
        self.notifier = notifier
        self.on_alert = on_alert
        self._channel_cfg = {c.name: c for c in cfg.enabled_channels}
        self._stories = StoryPolicy(cfg.stories.window, cfg.stories.notify_on_repost)
        self._retry = RetryPolicy(cfg.delivery.max_attempts, cfg.delivery.max_age)
        self._health = SourceHealthPolicy(cfg.alerts.source_alert_after, cfg.admin_channel is not None)

    def channels_for(self, source: str) -> list[tuple[str, Callable[[WatchlistHit], bool]]]:
        """(channel, accepts(hit)) for the alerts of a poll of ``source`` (routes and filters)."""
        return [(c.name, lambda h, c=c: self.cfg.channel_accepts(c, h, source)) for c in self._channel_cfg.values()]

    # ------------------------------------------------------------ polling
    async def poll(self, source: SourceConfig, state: SourceState | None = None,
                   done_with_body: Callable[[], None] | None = None) -> PollReport:
        """Poll one source (``state``: its stored state when the caller read it already).
        ``done_with_body`` is called once the poll holds no response body any more and only
        waits for its record to be written (a 304 or an unchanged body): a caller bounding
        polls in flight to bound memory may let the next one start then."""
        started = time.monotonic()
        result: FetchResult | None = None
        http_status: int | None = None
        known_state = state
        state = state or SourceState(source.name, None, None)
        try:
            if known_state is None:
                state = await asyncio.to_thread(self.store.source_state, source.name)
            result = await self.fetcher.fetch(source.url, state.etag, state.last_modified)
            http_status = result.http_status
            processing = self._process(source, state, result, done_with_body)
            result = None  # the body lives only as long as _process needs it
            report = await processing
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - one source's bug must not stop the daemon
            log.exception("poll of %s failed unexpectedly", source.name)
            failed = FetchResult(url=source.url, status="error", error=f"internal error: {e.__class__.__name__}: {e}")
            report = await self._failed_poll(source, state, failed)
        duration = time.monotonic() - started
        metrics.POLLS.labels(source.name, report.status).inc()
        metrics.POLL_SECONDS.observe(duration)
        metrics.SOURCE_FAILURES.labels(source.name).set(report.failures)
        if report.status != "error":
            metrics.SOURCE_LAST_SUCCESS.labels(source.name).set(time.time())
        if report.next_poll_at is not None:
            metrics.SOURCE_NEXT_POLL.labels(source.name).set(report.next_poll_at.timestamp())
        if report.interval is not None:
            metrics.SOURCE_INTERVAL.labels(source.name).set(report.interval)
        event(log, "poll", logging.INFO if report.status != "error" else logging.WARNING,
              source=source.name, status=report.status,
              http=http_status, items=report.items, new=report.new,
              alerts=report.alerts, duration_ms=round(duration * 1000), error=report.error,
              next_in=_next_in(report.next_poll_at))
        if report.alerts and self.on_alert:
            self.on_alert()
        return report

    def _bounds(self, source: SourceConfig) -> Bounds:
        return Bounds(*source.bounds(self.cfg.fetch))

    def _interval(self, source: SourceConfig, state: SourceState) -> timedelta:
        """The interval in force before this poll: the stored adaptive one, else the first one."""
        if state.poll_interval:
            return self._bounds(source).clamp(timedelta(seconds=state.poll_interval))
        return source.first_interval(self.cfg.fetch)

    def _success_schedule(self, source: SourceConfig, state: SourceState, now: datetime, new_items: int,
                          items_per_day: float | None, hint: float | None, body_hash: str | None) -> PollSchedule:
        interval = next_interval(self._interval(source, state), self._bounds(source), new_items, items_per_day,
                                 timedelta(seconds=hint) if hint else None)
        return PollSchedule(now + jittered(interval), interval.total_seconds(), items_per_day, body_hash)

    async def _failed_poll(self, source: SourceConfig, state: SourceState, result: FetchResult) -> PollReport:
        now = utcnow()
        failures = state.consecutive_failures + 1
        delay = jittered(failure_delay(failures, self._bounds(source)))
        if result.retry_after is not None:  # the server said when: never earlier than that
            delay = max(delay, timedelta(seconds=result.retry_after))
        schedule = PollSchedule(now + delay)
        health = self._health if source.source_alert_after is None else replace(self._health,
                                                                                 after=source.source_alert_after)
        await self._write(self.store.record_failure, source.name, result, now, health, schedule)
        return PollReport(source.name, "error", error=result.error, next_poll_at=schedule.next_poll_at,
                          failures=failures, interval=self._interval(source, state).total_seconds())

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` off the event loop: a store write (on the store's writer thread with SQLite)."""
        if self.store.writer is None:
            return await asyncio.to_thread(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self.store.writer, fn, *args)

    async def _quiet_poll(self, source: str, result: FetchResult, now: datetime, schedule: PollSchedule) -> None:
        """Record a poll that brought nothing new. Such polls are written together (one
        transaction instead of one each: a cycle of thousands of 304s is database-bound
        otherwise): a batch is written ``QUIET_BATCH_WAIT`` after its first poll, or when the
        batch before it is written if that takes longer; the poll waits until its record is
        committed."""
        await self._quiet.submit((source, result, now, schedule))

    async def _write_quiet(self, polls: list[tuple[str, FetchResult, datetime, PollSchedule]]) -> list[None]:
        await self._write(self.store.record_quiet_polls, polls)
        return [None] * len(polls)

    async def _commit(self, poll: PollCommit) -> PollOutcome:
        """Store a poll's items (``Store.commit_polls``). Polls that arrive while a group is
        being written go together in the next one, up to ``COMMIT_GROUP_ITEMS`` items (a group
        commit: one transaction and one write of the index pages they share, where a first
        poll of many sources was one transaction per source); a poll arriving when nothing is
        being written goes at once. Each poll gets its own outcome, or its own error."""
        return await self._commits.submit(poll)

    async def _parse(self, result: FetchResult) -> ParsedFeed:
        """Plain RSS 2.0 / Atom 1.0 in a thread (lxml: quick); a feed that needs feedparser in
        the parse pool (started by the first such feed; threads until it is up)."""
        body = result.body or b""
        plain = await self._cpu(parse_plain, body, result.content_type)
        if plain is not None:
            return plain
        args = (body, result.url, result.content_type, False)
        pool = self.parse_pool
        if pool is not None and pool.wanted():
            try:
                return await asyncio.get_running_loop().run_in_executor(pool, parse_feed, *args)
            except BrokenExecutor as e:
                self._pool_broken(pool, e)
        return await self._cpu(parse_feed, *args)

    def _pool_broken(self, pool: ParsePool, e: BrokenExecutor) -> None:
        """A worker died (or could not start): parse and fingerprint in threads from now on,
        never lose the poll."""
        if self.parse_pool is pool:
            self.parse_pool = None
            event(log, "parse pool broken", logging.ERROR, error=f"{e.__class__.__name__}: {e}", fallback="threads")

    async def _cpu(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the work threads (see ``work``)."""
        if self.work is None:
            return await asyncio.to_thread(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self.work, fn, *args)

    async def _process(self, source: SourceConfig, state: SourceState, result: FetchResult,
                       done_with_body: Callable[[], None] | None = None) -> PollReport:
        if result.status == "error":
            return await self._failed_poll(source, state, result)
        now = utcnow()
        if result.status == "not_modified":
            schedule = self._success_schedule(source, state, now, 0, state.items_per_day, result.max_age, None)
            if done_with_body is not None:
                done_with_body()
            await self._quiet_poll(source.name, result, now, schedule)
            return PollReport(source.name, "not_modified", next_poll_at=schedule.next_poll_at,
                              interval=schedule.interval)
        body_hash = hashlib.sha1(result.body or b"").hexdigest()
        if body_hash == state.body_hash:  # the same bytes as last time (no validators): nothing to parse
            schedule = self._success_schedule(source, state, now, 0, state.items_per_day, result.max_age, None)
            result = replace(result, body=None)  # (no longer needed: see done_with_body)
            if done_with_body is not None:
                done_with_body()
            await self._quiet_poll(source.name, result, now, schedule)
            return PollReport(source.name, "unchanged", next_poll_at=schedule.next_poll_at, interval=schedule.interval)
        try:
            feed = await self._parse(result)
        except FeedParseError as e:
            failed = FetchResult(url=result.url, status="error", http_status=result.http_status, error=str(e))
            return await self._failed_poll(source, state, failed)
        if feed.warning:
            event(log, "feed warning", logging.DEBUG, source=source.name, warning=feed.warning)
        # which entries are new (stored ones are not even normalised), in one trip off the event loop
        count, fresh = await self._cpu(self._fresh_items, source.name, feed.entries)
        if source.full_text and fresh:
            fresh = await self.full_text.complete(source.name, fresh)
        now = utcnow()
        new_items = await self._analysed(fresh, now)
        rate = blend_rate(state.items_per_day, published_rate((e.published for e in feed.entries), now))
        hint = max((h for h in (feed.ttl, result.max_age) if h), default=None)
        schedule = self._success_schedule(source, state, now, len(new_items), rate, hint, body_hash)
        outcome = await self._commit(PollCommit(source.name, result, new_items, self.channels_for(source.name), now,
                                                self._stories, schedule))
        metrics.ITEMS_NEW.labels(source.name).inc(len(outcome.stored))
        metrics.ALERTS.inc(outcome.alerts)
        if rate is not None:
            metrics.SOURCE_ITEMS_PER_DAY.labels(source.name).set(rate)
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
        return PollReport(source.name, "ok", items=count, new=len(outcome.stored), alerts=outcome.alerts,
                          next_poll_at=schedule.next_poll_at, interval=schedule.interval)

    def _fresh_items(self, source: str, entries: Sequence[FeedEntry]) -> tuple[int, list[Item]]:
        """How many distinct items a feed document holds, and those not stored yet (the guid
        or canonical link of an earlier item of ``source``, or that link from any source),
        normalised: HTML to text is the costly part, and most entries of a changed feed are
        ones it carried before."""
        keyed: list[tuple[FeedEntry | Item, ItemKey]] = []
        for entry in entries:
            guid, canonical = entry_keys(entry)
            if guid is None:  # neither guid nor link: the guid comes from the text
                item = normalize_entry(entry)
                keyed.append((item, ItemKey(item.guid, item.canonical_link)))
            else:
                keyed.append((entry, ItemKey(guid, canonical)))
        unique = _unique(keyed)
        known = self.store.known_keys(source, [key for _, key in unique])
        fresh = [thing if isinstance(thing, Item) else normalize_entry(thing)
                 for thing, key in unique if key.guid not in known]
        return len(unique), fresh

    async def _analysed(self, items: list[Item], now: datetime) -> list[NewItem]:
        """``_analyse(items, now)`` off the event loop. Many items have their fingerprints made
        in the parse pool's worker processes (on another CPU) while a thread matches them."""
        pool = self.parse_pool
        if pool is None or len(items) < POOL_FINGERPRINTS or not pool.wanted():
            return await self._cpu(self._analyse, items, now)
        try:
            made = asyncio.get_running_loop().run_in_executor(pool, dedupe.fingerprints, items)
        except BrokenExecutor as e:  # (submit raises at once when the pool broke earlier)
            self._pool_broken(pool, e)
            return await self._cpu(self._analyse, items, now)
        try:
            matched = await self._cpu(self._match, items, now)
        finally:
            try:
                fingerprints = await made
            except BrokenExecutor as e:
                self._pool_broken(pool, e)
                fingerprints = await self._cpu(dedupe.fingerprints, items)
        return [NewItem(it, fresh, hits, fp) for it, (fresh, hits), fp in zip(items, matched, fingerprints, strict=True)]

    def _analyse(self, items: list[Item], now: datetime) -> list[NewItem]:
        """Match and fingerprint new items (CPU work, run off the event loop)."""
        return [NewItem(it, fresh, hits, dedupe.fingerprint(it.title, it.text))
                for it, (fresh, hits) in zip(items, self._match(items, now), strict=True)]

    def _match(self, items: list[Item], now: datetime) -> list[tuple[bool, tuple[WatchlistHit, ...]]]:
        """For each item: whether it is fresh enough to alert, and the watchlists it matched
        (only fresh ones are matched)."""
        fresh = [is_fresh(it, now, self.cfg.alerts.max_age) for it in items]
        found = iter(self.matcher.match_many([(it.title, it.text) for it, f in zip(items, fresh, strict=True) if f]))
        return [(f, tuple(next(found)) if f else ()) for f in fresh]

    # ------------------------------------------------------------ delivery
    def hits_for(self, channel: str, d: PendingDelivery) -> tuple[WatchlistHit, ...]:
        """The hits of ``d`` that ``channel`` is told about (routes and its own filters)."""
        chan = self._channel_cfg.get(channel)
        # The row exists because the channel accepted a hit when the alert was made; should its
        # config have changed since, it still gets the whole alert rather than an empty one.
        if chan is None:
            return d.hits
        return tuple(h for h in d.hits if self.cfg.channel_accepts(chan, h, d.source)) or d.hits

    def notification_for(self, d: PendingDelivery, hits: tuple[WatchlistHit, ...] | None = None) -> Notification:
        hits = self.hits_for(d.channel, d) if hits is None else hits
        terms = [t for h in hits for t in h.terms]
        return Notification(alert_id=d.alert_id, channel=d.channel, title=d.title, link=d.link, source=d.source,
                            published=d.published, watchlists=hits, snippet=snippet(d.summary, terms=terms),
                            outlets=d.outlets, update=d.kind == "update")

    async def deliver(self, ignore_backoff: bool = False, now: datetime | None = None) -> DeliveryReport:
        """One pass over the outbox: operator notices to the admin channel, then per enabled
        channel its instant messages (within ``max_per_hour``; the rest folded into one later
        message) or, when due, its digest. Silenced rows are recorded, never sent. ``now``
        (default: the clock) decides what is due; ``ignore_backoff`` sends every pending row
        of an instant channel now (``run --once``)."""
        now = now or utcnow()
        report = _Tally()
        if self._channel_cfg:
            silences = SilenceCheck(await asyncio.to_thread(self.store.silences, now), now, self.cfg.aliases)
            await asyncio.gather(*(
                self._claimed(None if self._row_claims(chan) else chan.name,
                              self._deliver_channel(chan, now, ignore_backoff, silences, report))
                for chan in self._channel_cfg.values()))
            admin = self.cfg.admin_channel
            if admin is not None:
                await self._claimed(NOTICES_LEASE, self._send_notices(admin.name, now, ignore_backoff, report))
        metrics.OUTBOX_PENDING.set(await asyncio.to_thread(self.store.pending_count))
        return DeliveryReport(report.sent, report.failed, report.dead, report.silenced, report.folded)

    def _row_claims(self, chan: ChannelConfig) -> bool:
        """Replicas share a plain instant channel's rows (each claims the rows it sends); a
        digest or rate-limited channel is delivered by one replica at a time (its lease):
        those need one view of all its rows."""
        return self.replica is not None and not _whole_view(chan)

    async def _claimed(self, lease: str | None, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` if this replica holds (or takes) the delivery lease ``lease``; give it
        back after. Without replicas (``self.replica`` None) or a lease (the work claims its
        rows itself) just run it."""
        if self.replica is None or lease is None:
            await work
            return
        if not await asyncio.to_thread(self.store.claim_channel, lease, self.replica, utcnow(),
                                       self.cfg.replicas.lease):
            work.close()  # another replica is delivering it now
            return
        try:
            await work
        finally:
            await asyncio.to_thread(self.store.release_channel, lease, self.replica)

    async def _deliver_channel(self, chan: ChannelConfig, now: datetime, ignore_backoff: bool,
                               silences: SilenceCheck, report: _Tally) -> None:
        waiting = _whole_view(chan)
        claim = (self.replica, self.cfg.replicas.lease) if self._row_claims(chan) else None
        rows = await asyncio.to_thread(self.store.due_deliveries, now, ignore_backoff, [chan.name],
                                       self.BATCH, waiting, claim)
        ready: list[tuple[PendingDelivery, tuple[WatchlistHit, ...]]] = []
        for d in rows:
            hits = self.hits_for(chan.name, d)
            covered = silences.covering(hits, d.source, d.title, d.text) if silences else {}
            if covered and all(h.name in covered for h in hits):
                silence = min(covered.values())
                await asyncio.to_thread(self.store.mark_silenced, d.id, silence, now)
                report.silenced += 1
                metrics.DELIVERIES.labels(chan.name, "silenced").inc()
                event(log, "silenced", alert=d.alert_id, channel=chan.name, silence=silence, title=d.title)
                continue
            ready.append((d, tuple(h for h in hits if h.name not in covered)))
        if chan.mode == "digest":
            await self._digest(chan, ready, now, report)
            return
        due = [(d, h) for d, h in ready if ignore_backoff or d.next_attempt_at is None or d.next_attempt_at <= now]
        limit = chan.max_per_hour
        used = await asyncio.to_thread(self.store.messages_sent_since, chan.name, now - HOUR) if limit else 0
        folded = [(d, h) for d, h in ready if d.folded]
        if folded and (limit is None or used < limit):
            due_ids = {d.id for d, _ in due}
            if any(d.id in due_ids for d, _ in folded):
                # the held-back rows (and whatever else is due) go out as one message
                rest = [(d, h) for d, h in due if not d.folded]
                await self._send_digest(chan, folded + rest, now, report, folded=len(folded), kind="rate_limit")
            return
        if folded:
            due = [(d, h) for d, h in due if not d.folded]
        if limit is not None:
            room = max(0, limit - used)
            held = due[room:]
            due = due[:room]
            if held:
                await asyncio.to_thread(self.store.mark_folded, [d.id for d, _ in held])
                report.folded += len(held)
                metrics.DELIVERIES.labels(chan.name, "folded").inc(len(held))
                event(log, "rate limited", channel=chan.name, max_per_hour=limit, held=len(held))
        sem = asyncio.Semaphore(SEND_CONCURRENCY)
        # A channel that fails CHANNEL_TRIP sends in a row is down for the rest of this pass:
        # its other rows are not tried (a down channel costs one timeout per row otherwise)
        # but are recorded as failed with the same error, so they back off with it. (Sends
        # already in flight finish: at most CHANNEL_TRIP + SEND_CONCURRENCY - 1 are tried.)
        down: list[str | None] = []  # errors of the failures in a row so far
        skipped: list[PendingDelivery] = []

        async def one(d: PendingDelivery, hits: tuple[WatchlistHit, ...]) -> None:
            async with sem:
                if len(down) >= CHANNEL_TRIP:
                    skipped.append(d)
                    return
                res = await self.notifier.send(self.notification_for(d, hits))
                if res.ok:
                    down.clear()
                else:
                    down.append(res.error)
            if res.ok:
                await asyncio.to_thread(self.store.mark_sent, d.id, now)
                report.sent += 1
                metrics.DELIVERIES.labels(chan.name, "sent").inc()
                event(log, "sent", alert=d.alert_id, channel=chan.name, attempt=d.attempts + 1, title=d.title)
            else:
                await self._failed(chan.name, [d], res.error, now, report)

        await asyncio.gather(*(one(d, h) for d, h in due))
        if skipped:
            why = f"not tried: the channel failed {len(down)} sends in a row in this pass ({down[-1] or 'unknown error'})"
            event(log, "channel down", logging.WARNING, channel=chan.name, skipped=len(skipped), error=down[-1])
            await self._failed(chan.name, skipped, why, now, report)

    async def _digest(self, chan: ChannelConfig, ready: list[tuple[PendingDelivery, tuple[WatchlistHit, ...]]],
                      now: datetime, report: _Tally) -> None:
        assert chan.every is not None
        schedule = schedule_of(chan.every, chan.timezone)
        state = await asyncio.to_thread(self.store.channel_state, chan.name)
        if state.next_digest_at is None:  # first sight of this channel: start its schedule
            await asyncio.to_thread(self.store.save_channel_state, replace(state, next_digest_at=schedule.next_after(now)))
            return
        upcoming = schedule.next_after(now)
        if state.next_digest_at > upcoming and state.digest_failures == 0:
            # the schedule was shortened since (e.g. every 1d -> 1h): follow the new one
            await asyncio.to_thread(self.store.save_channel_state, replace(state, next_digest_at=upcoming))
            return
        if now < state.next_digest_at:
            return
        if not ready:  # an empty digest is not sent
            await asyncio.to_thread(self.store.save_channel_state,
                                    replace(state, next_digest_at=upcoming, digest_failures=0))
            return
        ok = await self._send_digest(chan, ready, now, report, since=state.last_digest_at)
        if ok:
            state = replace(state, last_digest_at=now, next_digest_at=upcoming, digest_failures=0)
        else:
            failures = state.digest_failures + 1
            retry = now + backoff(failures, self.cfg.delivery.retry_initial, self.cfg.delivery.retry_max)
            state = replace(state, next_digest_at=min(retry, upcoming), digest_failures=failures)
        await asyncio.to_thread(self.store.save_channel_state, state)

    async def _send_digest(self, chan: ChannelConfig, rows: list[tuple[PendingDelivery, tuple[WatchlistHit, ...]]],
                           now: datetime, report: _Tally, since: datetime | None = None, folded: int = 0,
                           kind: str = "digest") -> bool:
        newest_first = sorted(rows, key=lambda r: (r[0].created_at or now, r[0].id), reverse=True)
        digest = Digest(channel=chan.name, entries=tuple(self.notification_for(d, h) for d, h in newest_first),
                        folded=folded, since=since, until=now)
        res = await self.notifier.send_digest(digest)
        if not res.ok:
            await self._failed(chan.name, [d for d, _ in rows], res.error, now, report, what=kind)
            return False
        digest_id = await asyncio.to_thread(self.store.mark_digest_sent, chan.name, [d.id for d, _ in rows],
                                            kind, folded, now)
        report.sent += len(rows)
        metrics.DELIVERIES.labels(chan.name, "sent").inc(len(rows))
        event(log, "digest sent", channel=chan.name, digest=digest_id, kind=kind, entries=len(rows), folded=folded)
        return True

    async def _failed(self, channel: str, rows: list[PendingDelivery], error: str | None, now: datetime,
                      report: _Tally, what: str = "alert") -> None:
        attempts = max(d.attempts for d in rows) + 1
        delay = backoff(attempts, self.cfg.delivery.retry_initial, self.cfg.delivery.retry_max)
        dead = await asyncio.to_thread(self.store.record_failures, [d.id for d in rows], error or "unknown error",
                                       now + delay, self._retry, now, self.cfg.admin_channel is not None)
        report.failed += len(rows) - len(dead)
        report.dead += len(dead)
        metrics.DELIVERIES.labels(channel, "failed").inc(len(rows) - len(dead))
        if dead:
            metrics.DELIVERIES.labels(channel, "dead").inc(len(dead))
            event(log, "dead-lettered", logging.ERROR, channel=channel, rows=",".join(map(str, dead)),
                  attempt=attempts, error=error)
        if len(dead) < len(rows):
            event(log, "send failed", logging.WARNING, channel=channel, kind=what,
                  alerts=",".join(str(d.alert_id) for d in rows if d.id not in dead), attempt=attempts,
                  error=error, retry_in=f"{delay.total_seconds():.0f}s")

    async def _send_notices(self, channel: str, now: datetime, ignore_backoff: bool, report: _Tally) -> None:
        for notice in await asyncio.to_thread(self.store.due_notices, now, ignore_backoff):
            res = await self.notifier.send_notice(channel, notice)
            # a notice that failed is tried again after the first step of the retry schedule
            retry = None if res.ok else now + backoff(1, self.cfg.delivery.retry_initial, self.cfg.delivery.retry_max)
            await asyncio.to_thread(self.store.notice_attempt, notice.id, None if res.ok else (res.error or "unknown"),
                                    retry, self._retry, now)
            if res.ok:
                report.notices += 1
                event(log, "notice sent", channel=channel, kind=notice.kind, subject=notice.subject)
            else:
                event(log, "notice failed", logging.WARNING, channel=channel, kind=notice.kind, error=res.error)


HOUR = timedelta(hours=1)
#: The delivery lease of the admin channel's operator notices (channel names are the others).
NOTICES_LEASE = "(notices)"
#: Failed sends in a row after which a channel is not tried again in the same delivery pass.
CHANNEL_TRIP = 3
#: Sends to one channel in flight at once.
SEND_CONCURRENCY = 4


#: How long a quiet poll (304 / same body) waits for others to share its transaction.
QUIET_BATCH_WAIT = 0.02
#: New items one group commit of polls holds at most (see Pipeline._commit): the write lock is
#: held for the whole group, a fraction of a second.
COMMIT_GROUP_ITEMS = 500
#: A poll with at least this many new items has their fingerprints made in the parse pool's
#: workers (when it has them): below, shipping the texts costs about what it saves.
POOL_FINGERPRINTS = 8


def _retrieved(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


def _whole_view(chan: ChannelConfig) -> bool:
    """A digest or rate-limited channel: its delivery needs all of its pending rows, not only
    those due now (a digest takes them all; ``max_per_hour`` must see the folded ones)."""
    return chan.mode == "digest" or chan.max_per_hour is not None


class _Batches(Generic[A, R]):
    """Requests written together: one write in flight at a time, and the requests that arrive
    meanwhile wait and go together in the next (at most ``limit`` of ``size`` per write; a
    request larger than that goes alone). The first request of a batch waits ``wait`` seconds
    for company when nothing is being written (0: it goes at once). ``write(requests)`` returns
    one result per request, an Exception in the place of a request's own failure; an
    exception it raises is every request's. A busy database makes bigger batches, not a queue
    of them."""

    def __init__(self, write: Callable[[list[A]], Awaitable[Sequence[R | Exception]]], wait: float = 0.0,
                 limit: int | None = None, size: Callable[[A], int] = lambda _request: 1):
        self._write, self._wait, self._limit, self._size = write, wait, limit, size
        self._queue: deque[tuple[A, asyncio.Future[R]]] = deque()
        self._writing = False
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Future] = set()

    async def submit(self, request: A) -> R:
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((request, done))
        if not self._writing and self._timer is None:
            if self._wait:
                self._timer = asyncio.get_running_loop().call_later(self._wait, self._flush)
            else:
                self._flush()
        return await asyncio.shield(done)

    def _flush(self) -> None:
        self._timer = None
        if self._writing or not self._queue:
            return
        batch = [self._queue.popleft()]
        total = self._size(batch[0][0])
        while self._queue and (self._limit is None or total + self._size(self._queue[0][0]) <= self._limit):
            batch.append(self._queue.popleft())
            total += self._size(batch[-1][0])
        self._writing = True
        self._tasks.add(task := asyncio.ensure_future(self._run(batch)))
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[A, asyncio.Future[R]]]) -> None:
        try:
            results = await self._write([request for request, _ in batch])
        except asyncio.CancelledError:
            for _, done in batch:
                done.cancel()
            raise
        except Exception as e:  # noqa: BLE001 - each waiting request reports it as its failure
            results = [e] * len(batch)
        finally:
            self._writing = False
            if self._queue:  # the requests that came meanwhile
                self._flush()
        for (_, done), result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                done.set_exception(result)
                done.add_done_callback(_retrieved)  # its waiter may have been cancelled meanwhile
            else:
                done.set_result(result)


class _Tally:
    def __init__(self) -> None:
        self.sent = self.failed = self.dead = self.silenced = self.folded = self.notices = 0
