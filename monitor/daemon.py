"""Daemon: wires the stages together and runs them on a schedule.

Rules:
- Start-up: validate config (done by the caller), apply migrations, register sources, compile
  watchlists, open one HTTP client. Any of these failing stops the daemon with a clear message.
- APScheduler 3.x (AsyncIOScheduler) runs one date job per enabled source, re-armed after each
  poll for the time monitor.polling chose (adaptive interval, failure backoff, Retry-After,
  jitter) and kept in the database, so a restart resumes each source's rhythm; a source not
  polled yet (or overdue) is polled within a few seconds of start, spread out. One poll per
  source at a time.
- Feeds are parsed in a process pool (one worker per usable CPU, forkserver) when there are
  enough sources to pay for it, so the event loop never waits for feedparser.
- The outbox is swept every ``delivery.interval`` and at once after a poll created alerts.
- ``/healthz`` and ``/metrics`` are served on ``server.host:server.port`` (port 0: off).
- SIGTERM/SIGINT: stop scheduling, cancel polls in flight (their work is redone next time;
  nothing is half-written because a poll commits in one transaction), let sends in flight
  finish (bounded), exit 0 within 10 s.
- ``--once``: poll every enabled source once, concurrently, then attempt every undelivered
  notification once (backoff timers ignored), and exit 0 even when sources failed.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import random
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from . import metrics
from .config import Config, SourceConfig
from .fetch import Fetcher
from .logs import event
from .matcher import Matcher
from .notify import Notifier
from .pipeline import Pipeline, PollReport
from .store import SourceState, Store, safe_url

log = logging.getLogger("monitor.daemon")

SHUTDOWN_SEND_GRACE = 7.0  # seconds in-flight sends get after SIGTERM


class Daemon:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.store = Store(cfg.database.url)
        self.matcher = Matcher(cfg.matcher_watchlists())
        self.notifier = Notifier(cfg.enabled_channels, timeout=cfg.delivery.timeout.total_seconds())
        self.started = time.time()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._polls: set[asyncio.Task] = set()
        self._poll_slots: asyncio.Semaphore | None = None  # polls in flight (fetch to commit)

    @property
    def sources(self) -> list[SourceConfig]:
        return [s for s in self.cfg.sources if s.enabled]

    async def prepare(self) -> None:
        """Migrate the database and register sources (raises store.DatabaseError)."""
        await asyncio.to_thread(self.store.upgrade)
        await asyncio.to_thread(self.store.sync_sources, [(s.name, s.url) for s in self.cfg.sources])
        event(log, "started", sources=len(self.sources), watchlists=len(self.cfg.watchlists),
              channels=len(self.cfg.enabled_channels), database=safe_url(self.cfg.database.url))

    # ------------------------------------------------------------ --once
    async def run_once(self) -> int:
        await self.prepare()
        async with Fetcher(self.cfg.fetch) as fetcher:
            with parse_pool(len(self.sources)) as pool:
                pipeline = Pipeline(self.cfg, self.store, self.matcher, fetcher, self.notifier, parse_pool=pool)
                states = await asyncio.to_thread(self.store.source_states)
                reports = await asyncio.gather(*(self._bounded_poll(pipeline, s, states.get(s.name))
                                                 for s in self.sources))
            delivered = await pipeline.deliver(ignore_backoff=True)
        counts = await asyncio.to_thread(self.store.counts)
        event(log, "once done", sources=len(reports), failed=sum(r.status == "error" for r in reports),
              new=sum(r.new for r in reports), alerts=sum(r.alerts for r in reports),
              sent=delivered.sent, send_failures=delivered.failed, pending=counts["pending"])
        self.store.close()
        return 0

    # ------------------------------------------------------------ daemon
    async def run_forever(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        await self.prepare()
        runner = await self._start_http()
        with parse_pool(len(self.sources)) as pool:
            await self._serve(runner, pool)
        if runner is not None:
            await runner.cleanup()
        self.store.close()
        event(log, "stopped")
        return 0

    async def _serve(self, runner: web.AppRunner | None, pool: ProcessPoolExecutor | None) -> None:
        async with Fetcher(self.cfg.fetch) as fetcher:
            pipeline = Pipeline(self.cfg, self.store, self.matcher, fetcher, self.notifier,
                                on_alert=self._wake.set, parse_pool=pool)
            scheduler = AsyncIOScheduler(timezone=UTC)
            self._scheduler = scheduler
            now = datetime.now(UTC)
            planned = {h.name: h.next_poll_at for h in await asyncio.to_thread(self.store.source_health)}
            for src in self.sources:
                # where the last run left it (restarts keep each source's rhythm), else soon, spread out
                when = planned.get(src.name)
                if when is None or when < now:
                    when = now + timedelta(seconds=random.uniform(0, min(5.0, 0.002 * len(self.sources) + 1)))
                self._arm(pipeline, src, when)
            scheduler.start()
            sender = asyncio.create_task(self._delivery_loop(pipeline))
            await self._stop.wait()
            event(log, "stopping", polls_in_flight=len(self._polls))
            scheduler.shutdown(wait=False)
            for t in list(self._polls):
                t.cancel()
            await asyncio.gather(*self._polls, return_exceptions=True)
            self._wake.set()  # let the sender notice the stop
            try:
                await asyncio.wait_for(asyncio.shield(sender), SHUTDOWN_SEND_GRACE)
            except TimeoutError:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender

    def _on_signal(self, sig: signal.Signals) -> None:
        event(log, "signal", signal=sig.name)
        self._stop.set()

    def _arm(self, pipeline: Pipeline, src: SourceConfig, when: datetime) -> None:
        """Schedule the next poll of ``src`` (one APScheduler date job per source, re-armed
        after every poll with the time the polling policy chose)."""
        self._scheduler.add_job(self._poll_job, DateTrigger(run_date=when), args=[pipeline, src],
                                id=f"poll:{src.name}", replace_existing=True, misfire_grace_time=None)

    async def _bounded_poll(self, pipeline: Pipeline, src: SourceConfig,
                            state: SourceState | None = None) -> PollReport:
        """A poll, once fewer than 2 x fetch.concurrency are in flight: bounding whole polls,
        not only fetches, keeps fetched bodies of thousands of sources from queueing up for
        parsing and matching (memory would grow with the number of sources)."""
        if self._poll_slots is None:
            self._poll_slots = asyncio.Semaphore(max(4, 2 * self.cfg.fetch.concurrency))
        slots = self._poll_slots
        await slots.acquire()
        held = True

        def release() -> None:  # once, when the poll is done with its body or ends
            nonlocal held
            if held:
                held = False
                slots.release()

        try:
            return await pipeline.poll(src, state, done_with_body=release)
        finally:
            release()

    async def _poll_job(self, pipeline: Pipeline, src: SourceConfig) -> None:
        if self._stop.is_set():
            return
        task = asyncio.create_task(self._bounded_poll(pipeline, src))
        self._polls.add(task)
        report = None
        try:
            report = await task
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - poll() handles its own errors; this is a last resort
            log.exception("poll job of %s failed", src.name)
        finally:
            self._polls.discard(task)
        if self._stop.is_set():
            return
        when = report.next_poll_at if report is not None and report.next_poll_at else None
        self._arm(pipeline, src, when or datetime.now(UTC) + src.bounds(self.cfg.fetch)[0])

    async def _delivery_loop(self, pipeline: Pipeline) -> None:
        interval = self.cfg.delivery.interval.total_seconds()
        while not self._stop.is_set():
            self._wake.clear()
            try:
                await pipeline.deliver()
            except Exception:  # noqa: BLE001 - keep the loop alive; the rows stay pending
                log.exception("delivery pass failed; will retry")
            if self._stop.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)

    # ------------------------------------------------------------ /healthz, /metrics
    async def _start_http(self) -> web.AppRunner | None:
        if not self.cfg.server.port:
            return None
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.cfg.server.host, self.cfg.server.port)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise ServeError(f"cannot listen on {self.cfg.server.host}:{self.cfg.server.port}: {e.strerror or e}") from None
        event(log, "http", listen=f"{self.cfg.server.host}:{self.cfg.server.port}", paths="/healthz /metrics")
        return runner

    async def _healthz(self, _request: web.Request) -> web.Response:
        try:
            counts = await asyncio.wait_for(asyncio.to_thread(self.store.counts), 5)
        except Exception as e:  # noqa: BLE001
            body = {"status": "error", "error": f"database: {e.__class__.__name__}: {e}"}
            return web.json_response(body, status=503)
        body = {"status": "ok", "uptime_s": round(time.time() - self.started), **counts}
        return web.Response(text=json.dumps(body), content_type="application/json")

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"})


@contextlib.contextmanager
def parse_pool(sources: int) -> Iterator[ProcessPoolExecutor | None]:
    """Worker processes for feedparser, one per usable CPU (none on a one-CPU machine or for a
    handful of sources, where the threads suffice); shut down on exit."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    if cpus < 2 or sources < PARSE_POOL_MIN_SOURCES:
        yield None
        return
    # forkserver: a clean worker that imports only what parsing needs, not a copy of the daemon
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["monitor.parse"])
    pool = ProcessPoolExecutor(max_workers=cpus, mp_context=ctx)
    try:
        yield pool
    finally:
        pool.shutdown(wait=False, cancel_futures=True)

#: Fewer sources than this parse in threads: starting worker processes costs more.
PARSE_POOL_MIN_SOURCES = 20


class ServeError(Exception):
    """The health/metrics endpoint could not start."""

