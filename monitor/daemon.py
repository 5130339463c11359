"""Daemon: wires the stages together and runs them on a schedule.

Rules:
- Start-up: validate config (done by the caller), apply migrations, register sources, compile
  watchlists, open one HTTP client. Any of these failing stops the daemon with a clear message.
- APScheduler 3.x (AsyncIOScheduler) ticks each enabled source at its ``interval`` with jitter
  (first poll within a few seconds, spread out); one poll per source at a time.
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
import random
import signal
import time
from datetime import UTC, datetime, timedelta

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from . import metrics
from .config import Config, SourceConfig
from .fetch import Fetcher
from .logs import event
from .matcher import Matcher
from .notify import Notifier
from .pipeline import Pipeline
from .store import Store, safe_url

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
            pipeline = Pipeline(self.cfg, self.store, self.matcher, fetcher, self.notifier)
            reports = await asyncio.gather(*(pipeline.poll(s) for s in self.sources))
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
        async with Fetcher(self.cfg.fetch) as fetcher:
            pipeline = Pipeline(self.cfg, self.store, self.matcher, fetcher, self.notifier,
                                on_alert=self._wake.set)
            scheduler = AsyncIOScheduler(timezone=UTC)
            now = datetime.now(UTC)
            for src in self.sources:
                interval = src.interval.total_seconds()
                scheduler.add_job(
                    self._poll_job, IntervalTrigger(seconds=interval, jitter=min(interval * 0.1, 60)),
                    args=[pipeline, src], id=f"poll:{src.name}", max_instances=1, coalesce=True,
                    misfire_grace_time=int(interval), next_run_time=now + timedelta(seconds=random.uniform(0, 5)),
                )
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
        if runner is not None:
            await runner.cleanup()
        self.store.close()
        event(log, "stopped")
        return 0

    def _on_signal(self, sig: signal.Signals) -> None:
        event(log, "signal", signal=sig.name)
        self._stop.set()

    async def _poll_job(self, pipeline: Pipeline, src: SourceConfig) -> None:
        if self._stop.is_set():
            return
        task = asyncio.create_task(pipeline.poll(src))
        self._polls.add(task)
        try:
            await task
        except asyncio.CancelledError:
            pass
        finally:
            self._polls.discard(task)

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


class ServeError(Exception):
    """The health/metrics endpoint could not start."""

