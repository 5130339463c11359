"""Daemon: wires the stages together and runs them on a schedule.

Rules:
- Start-up: validate config (done by the caller), apply migrations, register sources, compile
  watchlists, open one HTTP client. Any of these failing stops the daemon with a clear message.
- Work is claimed in the database, so several replicas (daemons on one PostgreSQL database)
  share it and one alone works the same way (SQLite included). Each replica registers itself
  (``replicas`` table: host, pid, started, heartbeat; ``monitor replicas``) and heartbeats
  every ``replicas.heartbeat``, which also renews every lease it holds. APScheduler 3.x
  (AsyncIOScheduler) runs the claim job every ``replicas.claim_every``: it claims due sources
  (next poll reached, not retired, no live lease; ``SELECT … FOR UPDATE SKIP LOCKED``) up to
  the polls it has room for, with a lease of ``replicas.lease``, and polls them. Recording the
  poll writes the next poll time monitor.polling chose (adaptive interval, failure backoff,
  Retry-After, jitter) and ends the lease. A replica that dies stops renewing: its sources
  are claimed by the others once their leases run out. One poll per source at a time.
- A channel's messages (and the admin channel's notices) are sent by the replica holding the
  channel's delivery lease for that pass (``Store.claim_channel``).
- Plain RSS/Atom is parsed with lxml in a thread; feeds that need feedparser in a process pool
  (one worker per usable CPU, forkserver; started by the first such feed) when there are
  enough sources to pay for it. The event loop never waits for a parse.
- The outbox is swept every ``delivery.interval`` and at once after a poll created alerts.
- Story band rows and fingerprints of items older than ``stories.window`` (and a day) are
  pruned hourly and at the end of ``--once``, so the story indexes stay the size of the window.
- ``/healthz`` and ``/metrics`` are served on ``server.host:server.port`` (port 0: off).
- SIGTERM/SIGINT: stop claiming, cancel polls in flight (their work is redone next time;
  nothing is half-written because a poll commits in one transaction), let sends in flight
  finish (bounded), give up the leases held (the other replicas take them at once), exit 0
  within 10 s.
- ``--once``: poll every enabled source once, concurrently, then attempt every undelivered
  notification once (backoff timers ignored), and exit 0 even when sources failed.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import multiprocessing
import os
import secrets
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from . import metrics
from .batch import usable_cpus
from .config import Config, ConfigError, SourceConfig, load_config
from .fetch import Fetcher
from .logs import event
from .matcher import Matcher
from .notify import Notifier
from .parse import ParsePool
from .pipeline import Pipeline, PollReport
from .store import SourceState, Store, safe_url

if TYPE_CHECKING:  # the HTTP server and the scheduler are imported when started: `run --once` needs neither
    from aiohttp import web

log = logging.getLogger("monitor.daemon")

SHUTDOWN_SEND_GRACE = 7.0  # seconds in-flight sends get after SIGTERM
CLAIM_ERROR_EVERY = 60.0  # seconds between two log lines about claims failing
PRUNE_EVERY = timedelta(hours=1)  # story band rows older than the window are dropped this often
PRUNE_MARGIN = timedelta(days=1)  # ... kept this much longer than stories.window
POLL_STARTS_PER_TURN = 8  # --once: polls started per turn of the event loop (see Daemon._poll_all)


class Daemon:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.store = Store(cfg.database.url)
        self.matcher = Matcher(cfg.matcher_watchlists())
        self.notifier = Notifier(cfg.enabled_channels, timeout=cfg.delivery.timeout.total_seconds())
        self.started = time.time()
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"  # unique per run
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._polls: set[asyncio.Task] = set()
        self._poll_slots: asyncio.Semaphore | None = None  # polls in flight (fetch to commit)
        self._pipeline: Pipeline | None = None  # the daemon's current one (a reload makes a new one)
        self._fetcher: Fetcher | None = None
        self._pool: ParsePool | None = None
        self._work: ThreadPoolExecutor | None = None  # the polls' work threads (work_threads)
        self._jobs: set[asyncio.Task] = set()  # scheduler jobs running now
        self._by_name: dict[str, SourceConfig] = {}
        self._reloads: set[asyncio.Future] = set()
        self._reload_lock = asyncio.Lock()
        self._ready = False  # /readyz: claiming and delivering
        self._claim_failing_since: float | None = None  # claims failing (the database) since (monotonic)
        self._claim_logged_at = 0.0

    @property
    def sources(self) -> list[SourceConfig]:
        return [s for s in self.cfg.sources if s.enabled]

    async def prepare(self) -> None:
        """Migrate the database and register sources (raises store.DatabaseError)."""
        await asyncio.to_thread(self.store.upgrade)
        await self._register_sources()
        event(log, "started", sources=len(self.sources), watchlists=len(self.cfg.watchlists),
              channels=len(self.cfg.enabled_channels), database=safe_url(self.cfg.database.url))

    async def _register_sources(self) -> None:
        """A row for every configured source; those not enabled (or gone) marked retired."""
        await asyncio.to_thread(self.store.sync_sources, [(s.name, s.url) for s in self.cfg.sources],
                                [s.name for s in self.sources])

    # ------------------------------------------------------------ --once
    async def run_once(self) -> int:
        await self.prepare()
        async with Fetcher(self.cfg.fetch) as fetcher:
            with parse_pool(len(self.sources)) as pool, work_threads() as work:
                pipeline = Pipeline(self.cfg, self.store, self.matcher, fetcher, self.notifier, parse_pool=pool,
                                    work=work)
                states = await asyncio.to_thread(self.store.source_states)
                reports = await self._poll_all(pipeline, states)
            delivered = await pipeline.deliver(ignore_backoff=True)
        await self._prune()
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
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        await self.prepare()
        runner = await self._start_http()
        with parse_pool(len(self.sources)) as pool, work_threads() as work:
            self._work = work
            await self._serve(runner, pool)
        if runner is not None:
            await runner.cleanup()
        self.store.close()
        event(log, "stopped")
        return 0

    async def _serve(self, runner: web.AppRunner | None, pool: ParsePool | None) -> None:
        async with Fetcher(self.cfg.fetch) as fetcher:
            self._fetcher, self._pool = fetcher, pool
            self._pipeline = self._make_pipeline()
            await asyncio.to_thread(self.store.register_replica, self.replica, socket.gethostname(), os.getpid())
            event(log, "replica", id=self.replica, lease=f"{self.cfg.replicas.lease.total_seconds():g}s")
            self._by_name = {s.name: s for s in self.sources}
            from apscheduler.schedulers.asyncio import AsyncIOScheduler
            from apscheduler.triggers.interval import IntervalTrigger

            scheduler = AsyncIOScheduler(timezone=UTC)
            self._scheduler = scheduler
            scheduler.add_job(self._claim_job, IntervalTrigger(seconds=self.cfg.replicas.claim_every.total_seconds()),
                              id="claim", max_instances=1, coalesce=True,
                              next_run_time=datetime.now(UTC), misfire_grace_time=None)
            scheduler.add_job(self._prune, IntervalTrigger(seconds=PRUNE_EVERY.total_seconds()), id="prune",
                              max_instances=1, coalesce=True, next_run_time=datetime.now(UTC) + PRUNE_EVERY / 60,
                              misfire_grace_time=None)
            scheduler.start()
            heart = asyncio.create_task(self._heartbeat_loop())
            sender = asyncio.create_task(self._delivery_loop())
            self._ready = True
            await self._stop.wait()
            event(log, "stopping", polls_in_flight=len(self._polls))
            # A claim (or prune) under way finishes, so that what it claims is given back below:
            # the scheduler's shutdown would cancel it. No new job starts meanwhile; a job
            # started just now registers itself (_job) at its first step.
            scheduler.pause()
            await asyncio.sleep(0)
            if self._jobs:
                await asyncio.wait(list(self._jobs), timeout=SHUTDOWN_SEND_GRACE)
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
            heart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heart
            try:  # the leases it holds go at once: the other replicas need not wait for them to run out
                await asyncio.to_thread(self.store.retire_replica, self.replica)
            except Exception:  # noqa: BLE001 - they run out by themselves
                log.exception("could not give up this replica's leases")

    def _on_signal(self, sig: signal.Signals) -> None:
        event(log, "signal", signal=sig.name)
        self._ready = False
        self._stop.set()

    def _make_pipeline(self) -> Pipeline:
        return Pipeline(self.cfg, self.store, self.matcher, self._fetcher, self.notifier,
                        on_alert=self._wake.set, parse_pool=self._pool, replica=self.replica, work=self._work)

    def _on_hup(self) -> None:
        event(log, "signal", signal="SIGHUP")
        if self._pipeline is None or self._stop.is_set():
            return
        task = asyncio.ensure_future(self.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> bool:
        """Read the config file again (SIGHUP). It is validated first, as at start; on any
        problem the running config stays and the problems are logged. Sources, watchlists,
        aliases, channels, routes, alert, story, delivery and replica settings take effect
        for the next polls and delivery passes (polls in flight finish with the old ones);
        ``database``, ``server`` and ``fetch`` need a restart (logged when they changed)."""
        async with self._reload_lock:
            path = self.cfg.path
            if path is None:
                event(log, "reload failed", logging.ERROR, error="the config was not read from a file")
                return False
            try:
                new = await asyncio.to_thread(load_config, path)
                matcher = await asyncio.to_thread(Matcher, new.matcher_watchlists())
                notifier = Notifier(new.enabled_channels, timeout=new.delivery.timeout.total_seconds())
            except ConfigError as e:
                event(log, "reload failed", logging.ERROR, path=str(path), problems=len(e.messages),
                      error=" | ".join(e.messages), kept="the running config")
                return False
            except Exception as e:  # noqa: BLE001 - whatever it was, the running config stays
                event(log, "reload failed", logging.ERROR, path=str(path), error=f"{e.__class__.__name__}: {e}",
                      kept="the running config")
                return False
            restart = [key for key in ("database", "server", "fetch") if getattr(new, key) != getattr(self.cfg, key)]
            if new.replicas.claim_every != self.cfg.replicas.claim_every:
                from apscheduler.triggers.interval import IntervalTrigger

                self._scheduler.reschedule_job(
                    "claim", trigger=IntervalTrigger(seconds=new.replicas.claim_every.total_seconds()))
            self.cfg, self.matcher, self.notifier = new, matcher, notifier
            await self._register_sources()
            self._by_name = {s.name: s for s in self.sources}
            self._pipeline = self._make_pipeline()
            logging.getLogger().setLevel(new.logging.level)
            if gc.get_freeze_count():  # `monitor run` froze what start-up built (freeze_start_up)
                gc.unfreeze()  # the old config and matcher may now be collected
                gc.collect()
                gc.freeze()  # ... and the new ones leave the collector's sight
            event(log, "reloaded", path=str(path), sources=len(self.sources), watchlists=len(new.watchlists),
                  channels=len(new.enabled_channels),
                  restart_needed=",".join(restart) + " (changes not applied)" if restart else None)
            return True

    @property
    def _capacity(self) -> int:
        """Polls in flight at most (fetch to commit): 2 x fetch.concurrency."""
        return max(4, 2 * self.cfg.fetch.concurrency)

    async def _prune(self) -> None:
        """Drop the story band rows and fingerprints of items older than the story window (and
        a day for clocks and late lookups): the story indexes stay the size of the window.
        Hourly in the daemon, at the end of ``--once``; a failure is logged and tried again
        next time."""
        before = datetime.now(UTC) - self.cfg.stories.window - PRUNE_MARGIN
        started = time.perf_counter()
        try:
            with self._job():
                bands, fingerprints = await asyncio.to_thread(self.store.prune_story_keys, before, self._stop.is_set)
        except Exception as e:  # noqa: BLE001 - the database is down or busy: next time
            log.warning("pruning story keys failed: %s: %s", e.__class__.__name__, e)
            return
        if bands or fingerprints:
            event(log, "pruned", story_bands=bands, fingerprints=fingerprints,
                  first_seen_before=before.isoformat(timespec="seconds"),
                  seconds=round(time.perf_counter() - started, 1))

    @contextlib.contextmanager
    def _job(self) -> Iterator[None]:
        """Mark the running scheduler job (stopping waits for it instead of cancelling it)."""
        task = asyncio.current_task()
        if task is not None:
            self._jobs.add(task)
        try:
            yield
        finally:
            self._jobs.discard(task)  # type: ignore[arg-type]

    async def _claim_job(self) -> None:
        """Claim due sources (as many as there is room for) and start their polls."""
        with self._job():
            await self._claim()

    async def _claim(self) -> None:
        pipeline = self._pipeline
        if self._stop.is_set() or pipeline is None:
            return
        room = self._capacity - len(self._polls)
        if room <= 0:
            return
        try:
            claimed = await asyncio.to_thread(self.store.claim_sources, self.replica, datetime.now(UTC),
                                              self.cfg.replicas.lease, room)
        except Exception as e:  # noqa: BLE001 - the database may be back at the next claim
            # tried every claim_every: say it when it starts and then once a minute, not each time
            now = time.monotonic()
            if self._claim_failing_since is None or now - self._claim_logged_at >= CLAIM_ERROR_EVERY:
                if self._claim_failing_since is None:
                    self._claim_failing_since = now
                self._claim_logged_at = now
                event(log, "claim failed", logging.ERROR, error=f"{e.__class__.__name__}: {e}",
                      failing_for_s=round(now - self._claim_failing_since), retry="every claim_every")
            return
        if self._claim_failing_since is not None:
            event(log, "claim recovered", failed_for_s=round(time.monotonic() - self._claim_failing_since))
            self._claim_failing_since = None
        # a source another replica's config has but this one's not (a config rolled out to some
        # replicas only): leave it to them
        foreign = [state.name for state in claimed if state.name not in self._by_name]
        if foreign:
            await asyncio.to_thread(self.store.release_sources, self.replica, foreign)
        for state in claimed:
            src = self._by_name.get(state.name)
            if src is not None and not self._stop.is_set():
                task = asyncio.create_task(self._poll_claimed(pipeline, src, state))
                self._polls.add(task)
                task.add_done_callback(self._polls.discard)

    async def _poll_claimed(self, pipeline: Pipeline, src: SourceConfig, state: SourceState) -> None:
        try:
            await self._bounded_poll(pipeline, src, state)
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - poll() handles its own errors; this is a last resort
            log.exception("poll of %s failed", src.name)

    async def _heartbeat_loop(self) -> None:
        every = self.cfg.replicas.heartbeat.total_seconds()
        while not self._stop.is_set():
            try:
                held = await asyncio.to_thread(self.store.heartbeat, self.replica, self.cfg.replicas.lease)
                metrics.SOURCES_HELD.set(held)
            except Exception:  # noqa: BLE001 - a missed heartbeat is renewed by the next one
                log.exception("heartbeat failed; will retry")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), every)

    async def _poll_all(self, pipeline: Pipeline, states: dict[str, SourceState]) -> list[PollReport]:
        """Every source polled once (``--once``), as ``_bounded_poll`` bounds them; a poll's task
        is made when it has its slot, ``POLL_STARTS_PER_TURN`` at most per turn of the event
        loop: made all at once, the first steps of thousands of polls ran in one turn (a stall
        of ~0.1 s at 1,000 sources)."""
        slots = self._slots()
        tasks: list[asyncio.Task[PollReport]] = []
        try:
            for k, src in enumerate(self.sources):
                await slots.acquire()
                tasks.append(asyncio.create_task(self._poll_in_slot(pipeline, src, states.get(src.name), slots)))
                if k % POLL_STARTS_PER_TURN == POLL_STARTS_PER_TURN - 1:
                    await asyncio.sleep(0)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        return list(await asyncio.gather(*tasks))

    def _slots(self) -> asyncio.Semaphore:
        if self._poll_slots is None:
            self._poll_slots = asyncio.Semaphore(self._capacity)
        return self._poll_slots

    async def _bounded_poll(self, pipeline: Pipeline, src: SourceConfig,
                            state: SourceState | None = None) -> PollReport:
        """A poll, once fewer than 2 x fetch.concurrency are in flight: bounding whole polls,
        not only fetches, keeps fetched bodies of thousands of sources from queueing up for
        parsing and matching (memory would grow with the number of sources)."""
        slots = self._slots()
        await slots.acquire()
        return await self._poll_in_slot(pipeline, src, state, slots)

    async def _poll_in_slot(self, pipeline: Pipeline, src: SourceConfig, state: SourceState | None,
                            slots: asyncio.Semaphore) -> PollReport:
        """A poll holding one of ``slots``, given back when the poll is done with its body."""
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

    async def _delivery_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            interval = self.cfg.delivery.interval.total_seconds()
            try:
                await self._pipeline.deliver()  # type: ignore[union-attr]
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
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.cfg.server.host, self.cfg.server.port)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise ServeError(f"cannot listen on {self.cfg.server.host}:{self.cfg.server.port}: {e.strerror or e}") from None
        event(log, "http", listen=f"{self.cfg.server.host}:{self.cfg.server.port}", paths="/healthz /readyz /metrics")
        return runner

    async def _healthz(self, _request: web.Request) -> web.Response:
        from aiohttp import web

        try:
            counts = await asyncio.wait_for(asyncio.to_thread(self.store.counts), 5)
        except Exception as e:  # noqa: BLE001
            body = {"status": "error", "error": f"database: {e.__class__.__name__}: {e}"}
            return web.json_response(body, status=503)
        body = {"status": "ok", "uptime_s": round(time.time() - self.started), **counts}
        return web.Response(text=json.dumps(body), content_type="application/json")

    async def _readyz(self, _request: web.Request) -> web.Response:
        """200 once this replica claims and delivers work and its database answers; 503 while
        it starts, when it stops, or when the database does not answer (a load balancer or
        Kubernetes then leaves it out; /healthz says whether it should be restarted)."""
        from aiohttp import web

        if not self._ready or self._stop.is_set():
            return web.json_response({"status": "not ready", "replica": self.replica}, status=503)
        try:
            await asyncio.wait_for(asyncio.to_thread(self.store.pending_count), 5)
        except Exception as e:  # noqa: BLE001
            return web.json_response({"status": "not ready", "replica": self.replica,
                                      "error": f"database: {e.__class__.__name__}: {e}"}, status=503)
        return web.json_response({"status": "ready", "replica": self.replica})

    async def _metrics(self, _request: web.Request) -> web.Response:
        from aiohttp import web

        return web.Response(body=metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"})


def freeze_start_up() -> None:
    """Take what start-up built (modules, the config, the matcher, the ORM mappers: it lives as
    long as the process) out of the cyclic garbage collector's sight (``gc.freeze``), so that
    a full collection does not walk it again: one paused the event loop for 70-90 ms in a
    steady cycle of 1,000 sources. For a process's entry point (``monitor run``) once the
    Daemon is built; ``Daemon.reload`` unfreezes, collects and freezes again."""
    gc.freeze()


@contextlib.contextmanager
def parse_pool(sources: int) -> Iterator[ParsePool | None]:
    """Worker processes for feedparser, one per usable CPU (none on a one-CPU machine or for a
    handful of sources, where the threads suffice), started when first wanted
    (``ParsePool.wanted``); shut down on exit."""
    cpus = usable_cpus()
    if cpus < 2 or sources < PARSE_POOL_MIN_SOURCES:
        yield None
        return
    # forkserver: a clean worker that imports only what parsing needs, not a copy of the daemon
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["monitor.parse", "monitor.dedupe"])
    pool = ParsePool(cpus, ctx)
    try:
        yield pool
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


@contextlib.contextmanager
def work_threads() -> Iterator[ThreadPoolExecutor]:
    """Threads for the polls' CPU work (parsing, known keys, fingerprints, matching), one per
    usable CPU and at least 2 (so a slow database read does not hold up every other poll).
    More only contend for the interpreter lock: with the default executor's 6 threads on 2
    CPUs, a first poll of 1,000 feeds x 30 items took ~24 s, with 2 ~21 s. Blocking I/O
    (sends, store reads and writes) stays on the default executor and the store's writer."""
    pool = ThreadPoolExecutor(max_workers=max(2, usable_cpus()), thread_name_prefix="poll-work")
    try:
        yield pool
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


#: Fewer sources than this parse in threads: starting worker processes costs more.
PARSE_POOL_MIN_SOURCES = 20


class ServeError(Exception):
    """The health/metrics endpoint could not start."""

