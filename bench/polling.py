"""Polling speed: the daemon's poll cycle over feeds served by nginx on loopback, against a
naive feedparser loop and an aiohttp + lxml limit run measured in the same run.

Usage (from the project root)::

    .venv/bin/python bench/polling.py [--feeds 2000] [--items 50] [--changed 0.1] [--big 10000]
                                      [--big-items 5] [--concurrency 50] [--seed N] [--corpus DIR]
                                      [--nginx PATH] [--workdir DIR] [--keep] [--json] [--strict]

What one run does (defaults: 2,000 feeds of 50 items, 10% of them changed per steady cycle,
10,000 sources of 5 items for the memory phase):

- Writes the feeds as static RSS 2.0 files into a temporary directory (``--workdir DIR``
  names a new one instead, which is kept; ``--keep`` keeps the temporary one) and serves them
  with nginx (``--nginx``, default /usr/sbin/nginx; exit status 2 when it is missing) in a
  process of its own on a free 127.0.0.1 port: one worker, ``etag on``, no access log, so
  conditional GETs get a 304 when a file is unchanged (ETag from mtime and size). Nothing is
  sent anywhere but 127.0.0.1.
- Items are realistic: the title and the summary of one item of ``../shared/corpus``
  (``items.jsonl``) followed by the summary of another as a second paragraph (so the 100,000
  texts are mostly distinct stories, not 19 copies of each corpus item), as HTML in
  ``<description>``; 10% of the items are verbatim copies of an item of an earlier outlet
  (wire copies, which join its story). Each item has its own link
  (``https://outletK.example/J``, also the guid) and an RFC 822 ``<pubDate>`` within the last
  day. Without the corpus, pseudo-words.
- Then, one after another:

  1. **first poll** (in-process): ``Daemon(cfg).run_once()`` of the project over every feed on
     a new SQLite database: fetch, parse (the daemon's process pool), normalise, fingerprint,
     match the shipped watchlists (``config/watchlists``), store, alert (no channels, so the
     alerts are stored and nothing is sent). Timed from ``run_once`` to its return (start-up:
     migrations and source registration included; loading the config and building the
     Daemon are shown apart; after building it, what exists is frozen out of the cyclic
     garbage collector's sight, as ``monitor run`` does: ``daemon.freeze_start_up``). A probe task in the same event loop sleeps 10 ms in a loop and
     records how late each wake-up is: the event-loop lag, p50/p99/max.
  2. **steady cycle** (in-process): ``--changed`` of the feed files (10%, seeded choice) are
     rewritten with one new newest item, then the bench sleeps 1.1 s so their mtimes, hence
     nginx's ETags and Last-Modified, change; then ``run_once`` again on the same database
     (90% get a 304). Timed and lag-probed the same way.
  3. **naive baseline** (in the bench process): a sequential loop of ``feedparser.parse(url)``
     over all the URLs, one compiled regex (missile|ballistic|ICBM|launch*|test-fire*|deploy*)
     searched in each item's title and summary.
  4. **limit run** (in the bench process): aiohttp, one ClientSession with
     ``TCPConnector(limit=50)``, every URL fetched once, each body parsed with lxml.etree
     (counting ``<item>`` elements), no other work. Done twice: *full* (plain GETs, the
     fetches of a first poll) and *conditional* (after another 10% of the files changed,
     GETs with the ETag and Last-Modified of the full run: the fetches of a steady cycle).
  4b. **floor** (in the bench process, not a target): a lower bound for the first poll. The
     stages a first poll cannot skip, run one after another in one thread over the items of
     the feed files (as they are then): parse (the lxml fast path), normalise, fingerprint,
     match the shipped watchlists, and a bare insert of the rows it stores (items,
     fingerprints, band keys, a story each; the store's own multi-row INSERTs into its schema,
     500 items a transaction, no story planning, no foreign-key checks), as CPU seconds; divided
     by the CPUs and scaled to the naive run's items, the best a first poll could do with
     every stage spread perfectly over every CPU and nothing else (no fetching, scheduling,
     dedupe planning or alerting). Printed with naive / floor: the most the first poll's
     ratio could be on this machine.
  5. ``monitor run --once --config CFG`` as a **whole process**, as cron runs it: a first poll
     on a fresh database, then (after another 10% of the files changed) a steady cycle. Peak
     memory: the peak RSS of the ``monitor`` process, from GNU time's ``%M`` (the command
     runs under ``/usr/bin/time``, which waits for it: exact; ``ru_maxrss`` of a child of
     the bench itself would not do, since a child inherits its parent's peak RSS until it
     execs), or its VmHWM sampled from ``/proc`` every 50 ms without /usr/bin/time; and the
     peak of the summed PSS of its process tree (the process, the multiprocessing
     forkserver and the parse workers: ``/proc/PID/smaps_rollup``, shared pages counted
     once) sampled every 50 ms. The *tree* figure, the memory the command takes, is the
     larger of the two (a sample may miss the process's own peak). For the in-process
     phases, the bench process's own peak RSS during ``run_once`` is shown (VmHWM, reset
     before; it includes the bench's own memory, not the parse workers).
  6. **memory**: ``monitor run --once`` on a fresh database over ``--big`` sources (10,000) of
     ``--big-items`` items (5) each, served by the same nginx; its peak memory as above.

The project's config (written to the work directory): the database, ``server.port: 0``, the
shipped watchlists by ``include:``, no channels, and ``fetch.concurrency`` and
``fetch.per_host`` set to ``--concurrency`` (50, the limit run's connections): every feed
here lives on one host, 127.0.0.1, where 2,000 real feeds live on hundreds of hosts, and the
per-host politeness limit (6 by default) would otherwise measure politeness, not the daemon.

Targets (OK/MISSED; ``--strict`` exits 1 when one is missed): first poll >= 3x faster than
the naive baseline; steady cycle >= 10x faster than the naive baseline and at most 3x the
time of the conditional limit run; peak memory (the process tree's) of ``monitor run
--once`` over ``--big`` sources <= 300 MB; event-loop lag p99 <= 100 ms during the first poll
and during the steady cycle. Speed targets are ratios measured in the same run; absolute
times depend on the machine and its load. Progress goes to stderr; the full size took about
20 minutes on a 2-CPU VM (most of it the two first polls of 100,000 items and the memory phase).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import math
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):  # run as a script from anywhere
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from _words import corpus_items, emit, progress, synthetic_counts  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"
DEFAULT_NGINX = Path("/usr/sbin/nginx")
GNU_TIME = Path("/usr/bin/time")
WATCHLISTS = ROOT / "config" / "watchlists"

TARGET_FIRST_VS_NAIVE = 3.0
TARGET_STEADY_VS_NAIVE = 10.0
TARGET_STEADY_VS_LIMIT = 3.0
TARGET_PEAK_MB = 300.0
TARGET_LAG_P99_MS = 100.0

#: Share of the items that are verbatim copies of an earlier outlet's item (wire copies).
WIRE_SHARE = 0.1
#: The limit run's connections (the spec's figure).
LIMIT_CONNECTIONS = 50
#: The lag probe's sleep, and the /proc sampling period for the subprocess's memory.
PROBE_SECONDS = 0.010
SAMPLE_SECONDS = 0.05
#: Seconds to wait after rewriting files so their mtimes (whole seconds in Last-Modified) change.
MTIME_SLEEP = 1.1
#: The naive baseline's per-item regex.
NAIVE_PATTERN = re.compile(r"\b(missile|ballistic|ICBM|launch\w*|test-fire\w*|deploy\w*)\b", re.IGNORECASE)
#: Environment variables that would change where the project or urllib connects or what it reads.
DROPPED_ENV = ("MONITOR_DATABASE_URL", "MONITOR_CONFIG", "http_proxy", "https_proxy", "all_proxy",
               "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


class BenchError(Exception):
    """A phase could not run (nginx would not start, the daemon failed, ...)."""


# --------------------------------------------------------------------------- feeds


def load_corpus(corpus: Path, rng: random.Random) -> tuple[list[tuple[str, str]], str]:
    """(title, summary) pairs of the corpus items with a title; pseudo-words without it."""
    pairs: list[tuple[str, str]] = []
    for d in corpus_items(corpus):
        title = " ".join((d.get("title") or "").split())
        if title:
            pairs.append((title, " ".join((d.get("summary") or "").split())))
    if len(pairs) >= 100:
        return pairs, str(corpus)
    words = list(synthetic_counts(rng))
    for _ in range(2000):
        title = " ".join(rng.choices(words, k=rng.randint(5, 10))).capitalize()
        summary = " ".join(rng.choices(words, k=rng.randint(15, 45))).capitalize() + "."
        pairs.append((title, summary))
    return pairs, "synthetic"


class FeedSet:
    """``count`` RSS 2.0 files ``ROOT/<prefix>/<prefix>NNNNN.xml`` of ``items`` items each
    (more after :meth:`add_items`). Item texts are a deterministic function of the seed and
    (feed, item), so nothing but the item counts is kept in memory."""

    def __init__(self, directory: Path, prefix: str, count: int, items: int,
                 corpus: list[tuple[str, str]], seed: int, now: datetime):
        self.directory = directory
        self.prefix = prefix
        self.items = items
        self.corpus = corpus
        self.seed = seed
        self.now = now
        self.counts = [items] * count
        self.added_at: dict[tuple[int, int], datetime] = {}

    def __len__(self) -> int:
        return len(self.counts)

    def path(self, k: int) -> str:
        return f"/{self.prefix}/{self.prefix}{k:05d}.xml"

    def urls(self, base: str) -> list[str]:
        return [base + self.path(k) for k in range(len(self.counts))]

    def _rng(self, k: int, j: int) -> random.Random:
        return random.Random(f"{self.seed}:{self.prefix}:{k}:{j}")

    def text(self, k: int, j: int) -> tuple[str, str]:
        """(title, description HTML) of item ``j`` of feed ``k``."""
        rng = self._rng(k, j)
        if k > 0 and rng.random() < WIRE_SHARE:  # a wire copy of an earlier outlet's item
            return self.text(rng.randrange(k), rng.randrange(self.items))
        title, lead = self.corpus[rng.randrange(len(self.corpus))]
        second = self.corpus[rng.randrange(len(self.corpus))][1]
        paragraphs = [p for p in (lead, second) if p] if lead else []  # headline-only pages stay so
        return title, "".join(f"<p>{escape(p)}</p>" for p in paragraphs)

    def published(self, k: int, j: int) -> datetime:
        if j >= self.items:
            return self.added_at[(k, j)]
        # within the last day, item 0 the oldest
        step = 86400.0 / (self.items + 1)
        return self.now - timedelta(seconds=(self.items - j) * step + self._rng(k, j).uniform(0, step / 2))

    def document(self, k: int) -> bytes:
        site = f"https://outlet{k}.example"
        parts = [
            '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0">\n<channel>\n',
            f"<title>Outlet {k}</title>\n<link>{site}/</link>\n<description>News from outlet {k}</description>\n",
            f"<language>en</language>\n<lastBuildDate>{format_datetime(self.now, usegmt=True)}</lastBuildDate>\n",
        ]
        for j in range(self.counts[k] - 1, -1, -1):  # newest first
            title, html = self.text(k, j)
            link = f"{site}/{j}"
            parts.append(
                f"<item>\n<title>{escape(title)}</title>\n<link>{link}</link>\n"
                f'<guid isPermaLink="true">{link}</guid>\n'
                f"<pubDate>{format_datetime(self.published(k, j), usegmt=True)}</pubDate>\n"
                f"<description>{escape(html)}</description>\n</item>\n")
        parts.append("</channel>\n</rss>\n")
        return "".join(parts).encode("utf-8")

    def write(self, k: int) -> int:
        data = self.document(k)
        target = self.directory / self.path(k).lstrip("/")
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)  # nginx never serves half a file
        return len(data)

    def write_all(self) -> int:
        (self.directory / self.prefix).mkdir(parents=True, exist_ok=True)
        return sum(self.write(k) for k in range(len(self.counts)))

    def add_items(self, feeds: list[int], when: datetime) -> None:
        """One new newest item in each of ``feeds``, then the files rewritten."""
        for k in feeds:
            j = self.counts[k]
            self.added_at[(k, j)] = when
            self.counts[k] = j + 1
            self.write(k)


def change_round(feeds: FeedSet, share: float, rng: random.Random) -> int:
    """Give ``share`` of the feeds one new item; wait until their mtimes differ. Returns how many."""
    n = changed_count(len(feeds), share)
    chosen = sorted(rng.sample(range(len(feeds)), n))
    feeds.add_items(chosen, datetime.now(UTC))
    time.sleep(MTIME_SLEEP)
    return n


def changed_count(feeds: int, share: float) -> int:
    return min(feeds, max(1, round(feeds * share))) if share > 0 else 0


# --------------------------------------------------------------------------- nginx


NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
worker_rlimit_nofile 8192;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    types {{ application/rss+xml xml; }}
    default_type application/octet-stream;
    etag on;
    sendfile on;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_version(binary: Path) -> str:
    try:
        out = subprocess.run([str(binary), "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (out.stderr or out.stdout).strip().rsplit("/", 1)[-1] or "?"


class Nginx:
    """nginx in a process of its own (``daemon off``, ``master_process off``: one process)
    serving ``root`` on a free 127.0.0.1 port; ``stop()`` ends it."""

    def __init__(self, binary: Path, root: Path, workdir: Path):
        self.binary = binary
        self.root = root
        self.dir = workdir / "nginx"
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        self.dir.mkdir(parents=True, exist_ok=True)
        errors = []
        for _ in range(5):  # another process may take the free port first: try another
            self.port = free_port()
            conf = self.dir / "nginx.conf"
            conf.write_text(NGINX_CONF.format(dir=self.dir, port=self.port, root=self.root), encoding="utf-8")
            log = self.dir / "nginx-stderr.log"
            with log.open("ab") as err:
                self.proc = subprocess.Popen(
                    [str(self.binary), "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "nginx-error.log")],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
            if self._wait_ready(10.0):
                return self
            self.stop()
            errors.append(self._errors())
        raise BenchError(f"nginx did not start on 127.0.0.1: {errors[-1] if errors else '?'}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"HEAD / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                    if s.recv(16).startswith(b"HTTP/"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def _errors(self) -> str:
        text = ""
        for name in ("nginx-error.log", "nginx-stderr.log"):
            with contextlib.suppress(OSError):
                text += (self.dir / name).read_text(encoding="utf-8", errors="replace")
        lines = [line for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else "no message"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# --------------------------------------------------------------------------- measuring


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class LagProbe:
    """Sleeps PROBE_SECONDS in a loop in the event loop it runs in and records how late each
    wake-up is (ms)."""

    def __init__(self) -> None:
        self.late_ms: list[float] = []
        self._stop = False

    async def run(self) -> None:
        while not self._stop:
            t = time.perf_counter()
            await asyncio.sleep(PROBE_SECONDS)
            self.late_ms.append(max(0.0, (time.perf_counter() - t - PROBE_SECONDS) * 1000))

    def stop(self) -> None:
        self._stop = True

    def summary(self) -> dict:
        v = self.late_ms
        return {"p50": round(percentile(v, 50), 2), "p99": round(percentile(v, 99), 2),
                "max": round(max(v, default=0.0), 2), "samples": len(v)}


def _proc_kb(pid: int, path: str, fields: tuple[str, ...]) -> dict[str, int]:
    """``Field: N kB`` lines of /proc/PID/<path> (status, smaps_rollup); {} when it is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/{path}", encoding="ascii", errors="replace") as f:
            for line in f:
                name = line.split(":", 1)[0]
                if name in fields:
                    out[name] = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return out


def process_tree(root: int) -> tuple[list[int], dict[int, list[int]]]:
    """``root`` and its descendants (from the parent pids in /proc/*/stat), and the children
    of each process."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree, children


class TreeSampler(threading.Thread):
    """Samples a process and its descendants every SAMPLE_SECONDS: the peak of their summed PSS
    (``/proc/PID/smaps_rollup``: shared pages counted once, split between the processes
    sharing them; VmRSS where it is missing), of their summed RSS, and the last VmHWM (peak
    RSS) seen of the main process. ``wrapped``: ``pid`` is a wrapper (/usr/bin/time) whose
    only child is the main process; the wrapper itself is not counted."""

    def __init__(self, pid: int, wrapped: bool = False):
        super().__init__(daemon=True)
        self.pid = pid
        self.wrapped = wrapped
        self.main: int | None = None if wrapped else pid
        self.main_hwm_kb = 0
        self.peak_pss_kb = 0
        self.peak_rss_kb = 0
        self.processes = 0
        self._done = threading.Event()

    def sample(self) -> None:
        pids, children = process_tree(self.pid)
        if self.wrapped:
            pids = pids[1:]
            if self.main is None and children.get(self.pid):
                self.main = children[self.pid][0]
        rss = pss = 0
        for p in pids:
            status = _proc_kb(p, "status", ("VmRSS", "VmHWM"))
            rss += status.get("VmRSS", 0)
            pss += _proc_kb(p, "smaps_rollup", ("Pss",)).get("Pss", status.get("VmRSS", 0))
            if p == self.main:
                self.main_hwm_kb = max(self.main_hwm_kb, status.get("VmHWM", 0))
        self.peak_rss_kb = max(self.peak_rss_kb, rss)
        self.peak_pss_kb = max(self.peak_pss_kb, pss)
        self.processes = max(self.processes, len(pids))

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._done.set()
        self.join(5)


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def self_rss_mb(field: str) -> float | None:
    kb = _proc_kb(os.getpid(), "status", (field,)).get(field)
    return None if kb is None else round(kb / 1024, 1)


def db_counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608 - fixed names
                for t in ("items", "stories", "alerts", "sources")}
    finally:
        conn.close()


_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def log_summary(log: Path) -> dict:
    """Counts from the daemon's text log: poll statuses, items in the feeds, new items, alerts,
    and the ``once done`` line's fields."""
    statuses: Counter[str] = Counter()
    items = new = alerts = 0
    done: dict[str, str] = {}
    errors: list[str] = []
    with log.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if " monitor.pipeline poll " in line:
                fields = dict(_FIELD.findall(line))
                statuses[fields.get("status", "?")] += 1
                items += int(fields.get("items", 0))
                new += int(fields.get("new", 0))
                alerts += int(fields.get("alerts", 0))
                if fields.get("status") == "error" and len(errors) < 3:
                    errors.append(fields.get("error", "?").strip('"'))
            elif " monitor.daemon once done " in line:
                done = dict(_FIELD.findall(line))
    return {"polls": sum(statuses.values()), "statuses": dict(statuses), "items": items, "new": new,
            "alerts": alerts, "once_done": done, "errors": errors}


# --------------------------------------------------------------------------- the project


def write_config(path: Path, db: Path, base: str, feeds: FeedSet, concurrency: int) -> Path:
    lines = [
        "# generated by bench/polling.py",
        "database:",
        f"  url: \"sqlite:///{db}\"",
        "server:",
        "  port: 0",
        "fetch:",
        f"  concurrency: {concurrency}",
        f"  per_host: {concurrency}",
        "logging:",
        "  level: INFO",
        "  format: text",
        "include:",
        f"  - \"{WATCHLISTS}/*.yaml\"",
        "sources:",
    ]
    lines += [f"  - {{name: s{k}, url: \"{url}\"}}" for k, url in enumerate(feeds.urls(base))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost"
    return env


class _PollCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.polls = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "poll":
            self.polls += 1


async def _run_once_measured(daemon, sources: int, label: str) -> tuple[float, LagProbe]:
    """``daemon.run_once()`` with the lag probe in the same event loop; progress every 15 s."""
    probe = LagProbe()
    counter = _PollCounter()
    logging.getLogger("monitor.pipeline").addHandler(counter)

    async def report() -> None:
        while True:
            await asyncio.sleep(15)
            progress(f"  {label}: {counter.polls:,}/{sources:,} sources polled")

    probe_task = asyncio.create_task(probe.run())
    reporter = asyncio.create_task(report())
    try:
        t0 = time.perf_counter()
        await daemon.run_once()
        elapsed = time.perf_counter() - t0
    finally:
        probe.stop()
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        await probe_task
        logging.getLogger("monitor.pipeline").removeHandler(counter)
    return elapsed, probe


def run_in_process(config: Path, log: Path, label: str) -> dict:
    """One ``Daemon(cfg).run_once()`` in this process, logging as ``monitor run`` does (text,
    INFO) to ``log``."""
    from monitor import logs
    from monitor.config import load_config
    from monitor.daemon import Daemon, freeze_start_up

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = log.open("w", encoding="utf-8")
    try:
        t0 = time.perf_counter()
        cfg = load_config(config, env=clean_env())
        logs.setup(cfg.logging.level, cfg.logging.format)
        root.handlers[0].setStream(stream)
        daemon = Daemon(cfg)
        freeze_start_up()  # as `monitor run` does
        startup = time.perf_counter() - t0
        before = self_rss_mb("VmRSS")
        reset = reset_peak_rss()
        elapsed, probe = asyncio.run(_run_once_measured(daemon, len(daemon.sources), label))
        peak = self_rss_mb("VmHWM") if reset else None
    finally:
        gc.unfreeze()  # this process goes on (the bench's tests run it inside pytest)
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        stream.close()
    return {"seconds": round(elapsed, 3), "config_and_daemon_seconds": round(startup, 3), "lag_ms": probe.summary(),
            "rss_before_mb": before, "peak_rss_mb": peak, "rss_method": "this process's VmHWM, reset before the run"}


def monitor_command() -> list[str]:
    script = Path(sys.executable).parent / "monitor"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "monitor"]


def run_cli(config: Path, log: Path, cwd: Path) -> dict:
    """``monitor run --once --config CONFIG`` as a process: wall time; the peak RSS of that
    process, exact from GNU time's ``%M`` when /usr/bin/time is there (wait4 in a small parent;
    ``ru_maxrss`` of a child of this big process would report this process's own RSS, which
    the child inherits until it execs), else its last VmHWM sampled from /proc; and the
    sampled peak of its process tree's summed PSS."""
    monitor = [*monitor_command(), "run", "--once", "--config", str(config)]
    time_out = log.with_suffix(".maxrss")
    wrapped = GNU_TIME.is_file() and os.access(GNU_TIME, os.X_OK)
    cmd = [str(GNU_TIME), "-f", "%M", "-o", str(time_out), *monitor] if wrapped else monitor
    with log.open("wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=clean_env(), cwd=cwd)
        sampler = TreeSampler(proc.pid, wrapped)
        sampler.start()
        try:
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            elapsed = time.perf_counter() - t0
            sampler.stop()
    if code != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        raise BenchError(f"{' '.join(monitor)} exited {code}: " + " | ".join(tail))
    peak_kb, method = sampler.main_hwm_kb, "VmHWM sampled every 50 ms"
    if wrapped:
        with contextlib.suppress(OSError, ValueError, IndexError):
            peak_kb, method = int(time_out.read_text(encoding="ascii").split()[-1]), "GNU time %M"
    return {"seconds": round(elapsed, 3), "exit": code, "peak_rss_mb": round(peak_kb / 1024, 1),
            "rss_method": method,
            # the memory figure: the tree's sampled PSS, never less than the process's own peak
            "tree_peak_mb": round(max(sampler.peak_pss_kb, peak_kb) / 1024, 1),
            "tree_pss_sum_peak_mb": round(sampler.peak_pss_kb / 1024, 1),
            "tree_rss_sum_peak_mb": round(sampler.peak_rss_kb / 1024, 1), "tree_processes": sampler.processes}


def project_phase(counts_before: dict[str, int], db: Path, log: Path, measured: dict, feeds: int) -> dict:
    after = db_counts(db)
    summary = log_summary(log)
    return {
        **measured,
        "feeds": feeds,
        "polls": summary["polls"],
        "status": summary["statuses"],
        "failed": summary["statuses"].get("error", 0),
        "errors": summary["errors"],
        "items": summary["items"],
        "new": summary["new"],
        "alerts": summary["alerts"],
        "stored": after["items"] - counts_before.get("items", 0),
        "stories": after["stories"] - counts_before.get("stories", 0),
        "alerts_stored": after["alerts"] - counts_before.get("alerts", 0),
        "db_items": after["items"],
        "db": str(db),
        "log": str(log),
    }


# --------------------------------------------------------------------------- baselines


def naive_baseline(urls: list[str]) -> dict:
    """A sequential loop of ``feedparser.parse(url)``, one regex per item (title + summary)."""
    import feedparser

    no_proxy = urllib.request.ProxyHandler({})
    items = hits = errors = 0
    t0 = last = time.perf_counter()
    for i, url in enumerate(urls, 1):
        d = feedparser.parse(url, handlers=[no_proxy])
        if d.get("status") != 200 or not d.entries:
            errors += 1
        for e in d.entries:
            items += 1
            if NAIVE_PATTERN.search(f"{e.get('title', '')} {e.get('summary', '')}"):
                hits += 1
        if time.perf_counter() - last >= 15 and i < len(urls):
            last = time.perf_counter()
            progress(f"  naive: {i:,}/{len(urls):,} feeds, {last - t0:,.1f} s")
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 3), "feeds": len(urls), "items": items, "regex_hits": hits,
            "errors": errors, "status": {"200": len(urls) - errors}, "where": "bench process"}


async def _limit(urls: list[str], validators: list[tuple[str | None, str | None]] | None) -> dict:
    import aiohttp
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    status: Counter[str] = Counter()
    got: list[tuple[str | None, str | None]] = [(None, None)] * len(urls)
    totals = {"items": 0, "bytes": 0}

    async def one(session: aiohttp.ClientSession, i: int, url: str) -> None:
        headers = {}
        if validators is not None:
            etag, modified = validators[i]
            if etag:
                headers["If-None-Match"] = etag
            if modified:
                headers["If-Modified-Since"] = modified
        async with session.get(url, headers=headers) as resp:
            status[str(resp.status)] += 1
            got[i] = (resp.headers.get("ETag"), resp.headers.get("Last-Modified"))
            if resp.status != 200:
                return
            body = await resp.read()
        totals["bytes"] += len(body)
        root = etree.fromstring(body, parser)
        totals["items"] += sum(1 for _ in root.iter("item"))

    t0 = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=LIMIT_CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(one(session, i, url) for i, url in enumerate(urls)))
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 3), "feeds": len(urls), "items": totals["items"], "bytes": totals["bytes"],
            "status": dict(status), "validators": got, "where": "bench process"}


def limit_run(urls: list[str], validators: list[tuple[str | None, str | None]] | None = None) -> dict:
    """aiohttp (50 connections) fetching every URL once, lxml parsing each 200 body."""
    return asyncio.run(_limit(urls, validators))


# --------------------------------------------------------------------------- the run


def stage_floor(bodies: list[bytes], config: Path, work: Path) -> dict:
    """A lower bound for the project's first poll: the CPU seconds of the work it cannot skip,
    each stage over every item in turn in this thread, with no fetching, scheduling, story
    planning, alerting or threads: parse (the lxml fast path), normalise, fingerprint, match
    the shipped watchlists, and a bare insert of the rows a first poll stores (items,
    fingerprints, band keys; one story each) with the store's own multi-row statements
    (``monitor.store._insert``) into its schema, 500 items a transaction, no foreign-key
    checks. ``run`` divides it by the CPUs: the best a first poll could do if the stages ran in
    parallel on every CPU with nothing else."""
    from sqlalchemy import create_engine

    from monitor import dedupe
    from monitor.batch import usable_cpus
    from monitor.config import load_config
    from monitor.matcher import Matcher
    from monitor.normalize import normalize_entry
    from monitor.parse import parse_plain
    from monitor.store import _FINGERPRINT_COLUMNS, _ITEM_COLUMNS, Store, _DateTimeIO, _hour, _insert, _key

    cfg = load_config(config, env=clean_env())
    matcher = Matcher(cfg.matcher_watchlists())
    cpu = time.process_time
    t = cpu()
    parsed = [parse_plain(body, "application/rss+xml") for body in bodies]
    parse_s = cpu() - t
    if any(feed is None for feed in parsed):
        raise BenchError("the floor's feeds did not all take the lxml fast path")
    entries = [entry for feed in parsed if feed is not None for entry in feed.entries]
    t = cpu()
    items = [normalize_entry(entry) for entry in entries]
    normalize_s = cpu() - t
    t = cpu()
    fingerprints = dedupe.fingerprints(items)
    fingerprint_s = cpu() - t
    t = cpu()
    hits = matcher.match_many([(item.title, item.text) for item in items])
    match_s = cpu() - t

    db = work / "floor.db"
    store = Store(f"sqlite:///{db}")
    store.upgrade()
    store.sync_sources([("floor", "http://127.0.0.1/floor.xml")])
    store.close()
    engine = create_engine(f"sqlite:///{db}")  # the file is in WAL mode already; no foreign-key checks
    t = cpu()
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA synchronous=NORMAL")
        when = _DateTimeIO(conn.dialect)
        at = datetime.now(UTC)
        now, hour = when.bind(at), _hour(at)
        (source_id,) = conn.exec_driver_sql("SELECT id FROM sources").one()
        conn.commit()  # (the statements above began a transaction)
        done = 0  # a fresh database: the k-th item inserted (and its story) gets id k
        for start in range(0, len(items), 500):
            chunk = list(zip(items[start:start + 500], fingerprints[start:start + 500], strict=True))
            ids = range(done + 1, done + len(chunk) + 1)
            with conn.begin():
                _insert(conn, "stories", ("title", "created_at"), [(item.title, now) for item, _ in chunk])
                _insert(conn, "items", _ITEM_COLUMNS, [(
                    source_id, i, item.guid, _key(item.guid), item.link, item.canonical_link,
                    _key(item.canonical_link) if item.canonical_link else None, item.title, item.summary,
                    item.content, when.bind(item.published), now, True) for i, (item, _) in zip(ids, chunk, strict=True)])
                _insert(conn, "fingerprints", _FINGERPRINT_COLUMNS, [(
                    i, i, now, fp.size, fp.signature, fp.lead_key, fp.title_key, fp.title, fp.words or None)
                    for i, (_, fp) in zip(ids, chunk, strict=True)])
                _insert(conn, "story_bands", ("band_key", "item_id", "at_hour"),
                        [(band, i, hour) for i, (_, fp) in zip(ids, chunk, strict=True) for band in set(fp.bands)])
            done += len(chunk)
    insert_s = cpu() - t
    engine.dispose()
    stages = {"parse": parse_s, "normalize": normalize_s, "fingerprint": fingerprint_s, "match": match_s,
              "insert": insert_s}
    cpus = usable_cpus()
    total = sum(stages.values())
    return {"feeds": len(bodies), "items": len(items), "hits": sum(map(len, hits)), "cpus": cpus,
            "stages_cpu_s": {k: round(v, 3) for k, v in stages.items()}, "cpu_s": round(total, 3),
            "ms_per_item": round(1000 * total / max(1, len(items)), 4)}


@dataclass
class Settings:
    feeds: int = 2000
    items: int = 50
    changed: float = 0.1
    big: int = 10_000
    big_items: int = 5
    concurrency: int = 50
    seed: int = 1
    corpus: Path = DEFAULT_CORPUS
    nginx: Path = DEFAULT_NGINX
    workdir: Path | None = None
    keep: bool = False


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b > 0 else float("inf")


def run(s: Settings) -> dict:
    t_start = time.perf_counter()
    rng = random.Random(s.seed)
    corpus, corpus_source = load_corpus(s.corpus, rng)
    if s.workdir is not None:
        s.workdir.mkdir(parents=True)
        work, tmp = s.workdir, None
    else:
        tmp = tempfile.mkdtemp(prefix="bench-polling-")
        work = Path(tmp)
    site = work / "site"
    nginx = Nginx(s.nginx, site, work)
    phases: dict[str, dict] = {}
    try:
        now = datetime.now(UTC)
        feeds = FeedSet(site, "feeds", s.feeds, s.items, corpus, s.seed, now)
        progress(f"writing {s.feeds:,} feeds x {s.items} items to {site} ...")
        size = feeds.write_all()
        nginx.start()
        progress(f"nginx {nginx_version(s.nginx)} serving on {nginx.base} ({size / 1e6:,.1f} MB of feeds)")
        urls = feeds.urls(nginx.base)

        # 1. first poll, in-process
        db1 = work / "m.db"
        cfg1 = write_config(work / "monitor.yaml", db1, nginx.base, feeds, s.concurrency)
        progress(f"project first poll: Daemon.run_once over {s.feeds:,} sources (in-process) ...")
        measured = run_in_process(cfg1, work / "first.log", "first poll")
        phases["first_poll"] = project_phase({}, db1, work / "first.log", measured, s.feeds)
        progress(f"  {measured['seconds']:,.1f} s, {phases['first_poll']['stored']:,} items stored")

        # 2. steady cycle, in-process
        changed = change_round(feeds, s.changed, rng)
        before = db_counts(db1)
        progress(f"project steady cycle: {changed:,} feeds changed; Daemon.run_once (in-process) ...")
        measured = run_in_process(cfg1, work / "steady.log", "steady cycle")
        phases["steady"] = {**project_phase(before, db1, work / "steady.log", measured, s.feeds), "changed": changed}
        progress(f"  {measured['seconds']:,.2f} s, {phases['steady']['new']:,} new items")

        # 3. naive baseline
        progress(f"naive baseline: feedparser.parse(url) over {s.feeds:,} URLs, sequentially ...")
        phases["naive"] = naive_baseline(urls)
        progress(f"  {phases['naive']['seconds']:,.1f} s")

        # 4. limit runs
        progress(f"limit run: aiohttp ({LIMIT_CONNECTIONS} connections) + lxml, plain GETs ...")
        full = limit_run(urls)
        validators = full.pop("validators")
        phases["limit_full"] = full
        changed = change_round(feeds, s.changed, rng)
        progress(f"limit run: conditional GETs after {changed:,} feeds changed ...")
        cond = limit_run(urls, validators)
        cond.pop("validators")
        phases["limit_steady"] = {**cond, "changed": changed}
        progress(f"  full {full['seconds']:,.2f} s, conditional {cond['seconds']:,.2f} s")

        # 4b. the floor: the first poll's unavoidable stages, as CPU seconds
        progress(f"floor: parse, normalise, fingerprint, match and insert the {s.feeds:,} feeds' items, "
                 "one stage after another ...")
        phases["floor"] = stage_floor([(site / feeds.path(k).lstrip("/")).read_bytes() for k in range(len(feeds))],
                                      cfg1, work)
        progress(f"  {phases['floor']['cpu_s']:,.1f} s of CPU ({phases['floor']['ms_per_item']:.3f} ms per item)")

        # 5. monitor run --once as a process
        db2 = work / "cli.db"
        cfg2 = write_config(work / "monitor-cli.yaml", db2, nginx.base, feeds, s.concurrency)
        progress(f"monitor run --once, first poll of {s.feeds:,} sources on a fresh database ...")
        measured = run_cli(cfg2, work / "cli-first.log", work)
        phases["cli_first"] = {**project_phase({}, db2, work / "cli-first.log", measured, s.feeds),
                               "where": "subprocess"}
        progress(f"  {measured['seconds']:,.1f} s, peak RSS {measured['peak_rss_mb']:,.0f} MB")
        changed = change_round(feeds, s.changed, rng)
        before = db_counts(db2)
        progress(f"monitor run --once, steady cycle ({changed:,} feeds changed) ...")
        measured = run_cli(cfg2, work / "cli-steady.log", work)
        phases["cli_steady"] = {**project_phase(before, db2, work / "cli-steady.log", measured, s.feeds),
                                "changed": changed, "where": "subprocess"}
        progress(f"  {measured['seconds']:,.2f} s, peak RSS {measured['peak_rss_mb']:,.0f} MB")

        # 6. memory at --big sources
        if s.big > 0:
            big = FeedSet(site, "big", s.big, s.big_items, corpus, s.seed + 1, datetime.now(UTC))
            progress(f"memory: writing {s.big:,} feeds x {s.big_items} items; monitor run --once on a fresh database ...")
            big.write_all()
            db3 = work / "big.db"
            cfg3 = write_config(work / "monitor-big.yaml", db3, nginx.base, big, s.concurrency)
            measured = run_cli(cfg3, work / "big.log", work)
            phases["memory"] = {**project_phase({}, db3, work / "big.log", measured, s.big),
                                "items_per_source": s.big_items, "where": "subprocess"}
            progress(f"  {measured['seconds']:,.1f} s, peak RSS {measured['peak_rss_mb']:,.0f} MB "
                     f"(tree {measured['tree_peak_mb']:,.0f} MB)")
        version = nginx_version(s.nginx)
        port = nginx.port
    finally:
        nginx.stop()
        if tmp is not None and not s.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    naive_s = phases["naive"]["seconds"]
    floor = phases["floor"]  # scaled to the items the naive run parsed (the feeds have changed since the first poll)
    floor["seconds"] = round(floor["ms_per_item"] * phases["naive"]["items"] / 1000 / floor["cpus"], 3)
    for name, p in phases.items():
        p["vs_naive"] = 1.0 if name == "naive" else ratio(naive_s, p["seconds"])
    ratios = {
        "first_vs_naive": phases["first_poll"]["vs_naive"],
        "steady_vs_naive": phases["steady"]["vs_naive"],
        "steady_vs_limit": ratio(phases["steady"]["seconds"], phases["limit_steady"]["seconds"]),
        "first_vs_limit": ratio(phases["first_poll"]["seconds"], phases["limit_full"]["seconds"]),
        "cli_first_vs_naive": phases["cli_first"]["vs_naive"],
        "cli_steady_vs_naive": phases["cli_steady"]["vs_naive"],
        "naive_vs_floor": phases["floor"]["vs_naive"],
    }
    targets = [
        {"name": "first poll: faster than naive", "value": ratios["first_vs_naive"],
         "target": f">= {TARGET_FIRST_VS_NAIVE:g}x", "pass": ratios["first_vs_naive"] >= TARGET_FIRST_VS_NAIVE},
        {"name": "steady cycle: faster than naive", "value": ratios["steady_vs_naive"],
         "target": f">= {TARGET_STEADY_VS_NAIVE:g}x", "pass": ratios["steady_vs_naive"] >= TARGET_STEADY_VS_NAIVE},
        {"name": "steady cycle: time / limit (cond.)", "value": ratios["steady_vs_limit"],
         "target": f"<= {TARGET_STEADY_VS_LIMIT:g}x", "pass": ratios["steady_vs_limit"] <= TARGET_STEADY_VS_LIMIT},
    ]
    if "memory" in phases:
        peak = phases["memory"]["tree_peak_mb"]
        targets.append({"name": f"peak memory at {s.big:,} sources (MB)", "value": peak,
                        "target": f"<= {TARGET_PEAK_MB:g} MB", "pass": peak <= TARGET_PEAK_MB})
    for name, label in (("first_poll", "first poll"), ("steady", "steady cycle")):
        p99 = phases[name]["lag_ms"]["p99"]
        targets.append({"name": f"event-loop lag p99, {label} (ms)", "value": p99,
                        "target": f"<= {TARGET_LAG_P99_MS:g} ms", "pass": p99 <= TARGET_LAG_P99_MS})
    return {
        "feeds": s.feeds,
        "items": s.items,
        "changed": s.changed,
        "big": s.big,
        "big_items": s.big_items,
        "concurrency": s.concurrency,
        "seed": s.seed,
        "corpus": corpus_source,
        "nginx": {"version": version, "port": port},
        "cpus": phases["floor"]["cpus"],
        "workdir": str(work) if (tmp is None or s.keep) else None,
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "phases": phases,
        "ratios": ratios,
        "targets": targets,
    }


# --------------------------------------------------------------------------- report


ROWS = (
    ("naive", "naive: feedparser.parse(url) + regex", "bench"),
    ("limit_full", "limit: aiohttp(50) + lxml, plain GETs", "bench"),
    ("limit_steady", "limit: aiohttp(50) + lxml, conditional", "bench"),
    ("first_poll", "project first poll (Daemon.run_once)", "in-proc"),
    ("steady", "project steady cycle (Daemon.run_once)", "in-proc"),
    ("cli_first", "monitor run --once, first poll", "process"),
    ("cli_steady", "monitor run --once, steady cycle", "process"),
    ("memory", "monitor run --once, {big:,} sources x {bi}", "process"),
)


def _fmt(v, spec: str = ",") -> str:
    return "-" if v is None else format(v, spec)


def print_report(r: dict, out=None) -> None:
    out = out or sys.stdout
    ph = r["phases"]
    print(f"polling bench: {r['feeds']:,} feeds x {r['items']} items (RSS 2.0; texts from {r['corpus']}) served by "
          f"nginx {r['nginx']['version']} on 127.0.0.1:{r['nginx']['port']}; steady cycles: {100 * r['changed']:g}% "
          f"of the feeds get one new item; project config fetch.concurrency = per_host = {r['concurrency']}; "
          f"{r['cpus']} CPUs; run {r['total_seconds']:,.1f} s"
          f"{'; work directory kept at ' + r['workdir'] if r['workdir'] else ''}", file=out)
    print(f"  {'phase':<44} {'where':<7} {'feeds':>6} {'200':>6} {'304':>6} {'items':>8} {'stored':>8} "
          f"{'alerts':>6} {'time s':>8} {'vs naive':>8} {'peak MB':>8} {'tree MB':>8}", file=out)
    for key, label, where in ROWS:
        p = ph.get(key)
        if p is None:
            continue
        label = label.format(big=r["big"], bi=r["big_items"])
        status = p.get("status", {})
        ok = status.get("200", status.get("ok"))
        not_mod = status.get("304", status.get("not_modified", 0))
        stored = p.get("stored")
        alerts = p.get("alerts_stored", p.get("alerts")) if key not in ("naive", "limit_full", "limit_steady") else None
        print(f"  {label:<44} {where:<7} {p['feeds']:>6,} {_fmt(ok):>6} {_fmt(not_mod):>6} {p['items']:>8,} "
              f"{_fmt(stored):>8} {_fmt(alerts):>6} {p['seconds']:>8,.2f} {p['vs_naive']:>7.2f}x "
              f"{_fmt(p.get('peak_rss_mb'), ',.0f'):>8} {_fmt(p.get('tree_peak_mb'), ',.0f'):>8}", file=out)
    print("  (200/304: responses, for the project its polls with status ok/not_modified; items: items in the feeds "
          "fetched with a 200; stored: new rows in items; vs naive: naive time / time; peak MB: the monitor "
          f"process's peak RSS ({ph['cli_first'].get('rss_method', '?')}), in-proc: the bench process's peak RSS "
          f"during run_once (before it: {_fmt(ph['first_poll'].get('rss_before_mb'), ',.0f')} MB); tree MB: peak "
          "of the summed PSS of the monitor process and its children (forkserver, parse workers) sampled every "
          "50 ms, at least peak MB)", file=out)
    f, st = ph["first_poll"], ph["steady"]
    print(f"  work: naive regex hits {ph['naive']['regex_hits']:,}; first poll {f['polls']:,} polls, {f['failed']} "
          f"failed, {f['new']:,} new, {f['stored']:,} stored in {f['stories']:,} stories, {f['alerts_stored']:,} alerts; "
          f"steady {st['changed']:,} feeds changed, {st['new']:,} new, {st['alerts_stored']:,} alerts; "
          f"config + Daemon() {f['config_and_daemon_seconds']:.2f} s (not in the times)", file=out)
    fl = ph["floor"]
    stages = ", ".join(f"{name} {sec:,.2f}" for name, sec in fl["stages_cpu_s"].items())
    print(f"  floor of a first poll (its unavoidable stages, one after another in one thread): {stages} = "
          f"{fl['cpu_s']:,.2f} s of CPU for {fl['items']:,} items ({fl['ms_per_item']:.3f} ms per item); spread "
          f"perfectly over {fl['cpus']} CPUs with nothing else, {fl['seconds']:,.2f} s for the naive run's items: "
          f"a first poll can be at most {fl['vs_naive']:.2f}x faster than naive here "
          f"(target {TARGET_FIRST_VS_NAIVE:g}x)", file=out)
    for key, label in (("first_poll", "first poll"), ("steady", "steady cycle")):
        lag = ph[key]["lag_ms"]
        print(f"  event-loop lag, {label}: p50 {lag['p50']:.1f} ms, p99 {lag['p99']:.1f} ms, max {lag['max']:.1f} ms "
              f"({lag['samples']:,} wake-ups of a 10 ms sleep)", file=out)
    rt = r["ratios"]
    print(f"  ratios: first poll / limit (plain GETs) {rt['first_vs_limit']:.2f}x; steady / limit (conditional) "
          f"{rt['steady_vs_limit']:.2f}x; monitor run --once vs naive: first {rt['cli_first_vs_naive']:.2f}x, "
          f"steady {rt['cli_steady_vs_naive']:.2f}x", file=out)
    for t in r["targets"]:
        print(f"  {t['name']:<40} {t['value']!s:>10}  target {t['target']:<10} {'OK' if t['pass'] else 'MISSED'}",
              file=out)


# --------------------------------------------------------------------------- main


def _share(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError("must be in (0, 1]")
    return v


def _on_sigterm(_signum, _frame) -> None:
    raise KeyboardInterrupt  # unwind: the finally blocks stop nginx and the daemon


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--feeds", type=int, default=2000, help="feeds served and polled (%(default)s)")
    ap.add_argument("--items", type=int, default=50, help="items per feed (%(default)s)")
    ap.add_argument("--changed", type=_share, default=0.1,
                    help="share of the feeds that get one new item per steady cycle (%(default)s)")
    ap.add_argument("--big", type=int, default=10_000, help="sources of the memory phase; 0 skips it (%(default)s)")
    ap.add_argument("--big-items", type=int, default=5, help="items per feed in the memory phase (%(default)s)")
    ap.add_argument("--concurrency", type=int, default=LIMIT_CONNECTIONS,
                    help="fetch.concurrency and fetch.per_host of the project's config (%(default)s)")
    ap.add_argument("--seed", type=int, default=1, help="RNG seed (%(default)s)")
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="corpus directory (%(default)s)")
    ap.add_argument("--nginx", type=Path, default=DEFAULT_NGINX, help="nginx binary (%(default)s)")
    ap.add_argument("--workdir", type=Path, help="a new directory for feeds, configs, databases and logs (kept)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)
    if args.feeds < 1 or args.items < 1 or args.big < 0 or args.big_items < 1:
        ap.error("--feeds, --items and --big-items must be at least 1, --big at least 0")
    if not 1 <= args.concurrency <= 1000:
        ap.error("--concurrency must be between 1 and 1000")
    if args.workdir is not None and args.workdir.exists():
        ap.error(f"--workdir {args.workdir} exists: name a new directory")
    if not (args.nginx.is_file() and os.access(args.nginx, os.X_OK)):
        print(f"error: nginx not found at {args.nginx}: this bench serves the feeds with nginx "
              "(Debian: apt-get install nginx-light), or name it with --nginx PATH", file=sys.stderr)
        return 2
    settings = Settings(args.feeds, args.items, args.changed, args.big, args.big_items, args.concurrency,
                        args.seed, args.corpus, args.nginx, args.workdir, args.keep)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        report = run(settings)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return emit(report, args.json, args.strict, print_report)


if __name__ == "__main__":
    sys.exit(main())
