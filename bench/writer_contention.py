"""Writer contention: what a group commit costs on SQLite while other Python threads are busy,
against the same commits with the process otherwise idle, in the same run.

Usage (from the project root)::

    .venv/bin/python bench/writer_contention.py [--stored 10000] [--items 3000] [--poll 30]
                                                [--group 17] [--busy 1] [--json]

Why: in the daemon, polls' parsing, normalising, fingerprinting and matching run on work
threads while the store's writer thread commits. The sqlite3 driver lets go of the
interpreter lock around every step of a statement (every row an ``executemany`` inserts, every
row a query returns), and with a busy Python thread beside it, taking the lock back waits for
that thread's switch interval (5 ms). So the number of steps per commit, not their SQL cost,
decides how fast the writer goes under load (see ``_insert`` and ``_rows`` in
``monitor/store.py``).

What it does: a fresh SQLite database (``bench/dedupe_speed.py``'s generator and fill) with
``--stored`` items, then ``--items`` new items (30 % reposts) fingerprinted up front and stored
by ``Store.commit_polls`` in groups of ``--group`` polls of ``--poll`` items (a first poll's
shape), twice: alone, then with ``--busy`` threads spinning in pure Python. Prints ms per item
for each and the ratio (busy / alone). Target: ratio <= 10 (it was ~350 when every row was a
step of its own).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dedupe_speed as ds  # noqa: E402

from monitor import dedupe  # noqa: E402
from monitor.model import FetchResult  # noqa: E402
from monitor.store import NewItem, PollCommit, StoryPolicy  # noqa: E402

TARGET_RATIO = 10.0


def _groups(bench: ds.Bench, items: int, poll: int, group: int) -> list[list[PollCommit]]:
    batches = ds.make_batches(bench, items, poll, 0.3)
    polls = [PollCommit(b.source, FetchResult(url=f"https://{b.source}.example/feed.xml", status="ok",
                                              http_status=200, etag=f'"{n}"'),
                        [NewItem(item, True, hits, dedupe.fingerprint(item.title, item.text)) for item, hits in b.items],
                        ds.CHANNELS, bench.now, StoryPolicy(window=bench.window))
             for n, b in enumerate(batches)]
    return [polls[i:i + group] for i in range(0, len(polls), group)]


def _store(bench: ds.Bench, groups: list[list[PollCommit]], busy: int) -> float:
    """Seconds to commit ``groups`` with ``busy`` threads spinning meanwhile."""
    stop = threading.Event()

    def spin() -> None:
        x = 0
        while not stop.is_set():
            for i in range(1000):
                x += i

    threads = [threading.Thread(target=spin, daemon=True) for _ in range(busy)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    for g in groups:
        for outcome in bench.store.commit_polls(g):
            if isinstance(outcome, Exception):
                raise outcome
    elapsed = time.perf_counter() - t0
    stop.set()
    for t in threads:
        t.join()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stored", type=int, default=10_000, help="items stored before measuring (%(default)s)")
    ap.add_argument("--items", type=int, default=3000, help="items committed in each phase (%(default)s)")
    ap.add_argument("--poll", type=int, default=30, help="items per poll (%(default)s)")
    ap.add_argument("--group", type=int, default=17, help="polls per group commit (%(default)s)")
    ap.add_argument("--busy", type=int, default=1, help="busy Python threads in the second phase (%(default)s)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-writer-") as tmp:
        bench = ds.open_bench(Path(tmp) / "bench.db", 1, ds.DEFAULT_CORPUS, timedelta(days=7))
        ds.fill(bench, args.stored)
        print(f"committing {args.items:,} items alone, then beside {args.busy} busy thread(s) ...", file=sys.stderr)
        alone = _store(bench, _groups(bench, args.items, args.poll, args.group), 0)
        busy = _store(bench, _groups(bench, args.items, args.poll, args.group), args.busy)
        bench.store.close()
    r = {"items": args.items, "alone_ms_per_item": 1000 * alone / args.items,
         "busy_ms_per_item": 1000 * busy / args.items, "busy_threads": args.busy}
    r["ratio"] = r["busy_ms_per_item"] / r["alone_ms_per_item"]
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"writer contention bench: Store.commit_polls on SQLite, {args.stored:,} stored, groups of {args.group} "
          f"polls x {args.poll} items")
    print(f"  alone                          {r['alone_ms_per_item']:8.3f} ms/item")
    print(f"  beside {args.busy} busy Python thread(s)  {r['busy_ms_per_item']:8.3f} ms/item")
    verdict = "OK" if r["ratio"] <= TARGET_RATIO else "MISSED"
    print(f"  busy / alone                   {r['ratio']:8.2f}x  target <= {TARGET_RATIO:g}x  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
