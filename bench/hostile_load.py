"""Hostile sources under load: ``monitor run --once`` over many feeds of which some are
hostile, against the same run without them, measured in one run.

Usage (from the project root)::

    .venv/bin/python bench/hostile_load.py [--feeds 2000] [--hostile 200] [--items 10]
                                           [--concurrency 50] [--seed N] [--corpus DIR]
                                           [--nginx PATH] [--workdir DIR] [--keep] [--json] [--strict]

What one run does (defaults: 2,000 sources of which 200 are hostile, 10 items per good feed):

- The good feeds (``--feeds`` minus ``--hostile``) are static RSS files of realistic items
  (``bench/polling.py``'s FeedSet, from ``../shared/corpus``) served by nginx on 127.0.0.1.
- The hostile sources are spread evenly over the kinds of "the daemon end to end": served
  by the same nginx, a 404 (``missing``), random bytes (``garbage``), an HTML page
  (``html``), half a feed (``truncated``), an entity-expansion bomb (``bomb``), an external
  entity reading /etc/passwd (``xxe``), a 3 MB feed over ``fetch.max_bytes`` (``huge``);
  served by a small aiohttp server in a process of its own, a 500 (``error``), a 429 with
  ``Retry-After: 3600`` (``busy``), a connection that never answers (``hang``), a body
  dripped a byte a second (``drip``), a gzip bomb of 1 GiB (``gzbomb``), a redirect to
  itself (``loop``); and a closed port (``refused``). Nothing is sent anywhere but 127.0.0.1.
- Two runs of ``monitor run --once`` as whole processes, each on a new SQLite database and
  with ``fetch.timeout: 4s`` (read 3 s, connect 2 s) and ``fetch.max_bytes: 2MB``:
  *baseline* over the good feeds only, then *mixed* over all of them.

Checks (PASS/FAIL; ``--strict`` exits 1 when one fails): in the mixed run every good source
polls ``ok`` and all its items are stored (as many as in the baseline run); every hostile
source of the kinds that cannot give a feed is recorded as failing (``status=error`` with
an error), and none of the others brought in /etc/passwd; the run exits 0; the mixed run
takes at most the baseline plus ``SLACK_S`` (the hostile sources cost the time of a few
timeouts, not of one each); the process tree's peak memory stays <= 300 MB.
"""
from __future__ import annotations

import argparse
import random
import sqlite3
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):  # run as a script from anywhere
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from _words import emit, progress, work_directory  # noqa: E402
from polling import (  # noqa: E402
    DEFAULT_CORPUS,
    DEFAULT_NGINX,
    TARGET_PEAK_MB,
    WATCHLISTS,
    BenchError,
    FeedSet,
    Nginx,
    clean_env,
    free_port,
    load_corpus,
    log_summary,
    run_cli,
)

#: Kinds served as static files by nginx, by the hostile server, and the closed port.
STATIC_KINDS = ("missing", "garbage", "html", "truncated", "bomb", "xxe", "huge")
DYNAMIC_KINDS = ("error", "busy", "hang", "drip", "gzbomb", "loop")
KINDS = (*STATIC_KINDS, *DYNAMIC_KINDS, "refused")
#: Kinds that can never give a feed: each such source must be recorded as failing.
MUST_FAIL = ("missing", "garbage", "html", "huge", "error", "busy", "hang", "drip", "gzbomb", "loop", "refused")
#: The mixed run may take this much longer than the baseline (a few rounds of the 4 s
#: fetch timeout: the hanging sources hold connection slots while they last).
SLACK_S = 20.0

ENTITY_BOMB = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
               + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
                          for i in range(1, 10))
               + b']><rss version="2.0"><channel><title>&lol9;</title><item><title>&lol9;</title></item>'
               b"</channel></rss>")
XXE = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
       b'<rss version="2.0"><channel><title>x</title><item><title>Missile test &x;</title>'
       b"<link>http://xxe.example/1</link><description>A ballistic missile test &x;</description>"
       b"</item></channel></rss>")

HOSTILE_SERVER = r'''
import asyncio, gzip, sys
from aiohttp import web
BOMB = gzip.compress(b"<rss>" + b" " * (1 << 30) + b"</rss>", compresslevel=9)
async def error(request): return web.Response(status=500, text="boom")
async def busy(request): return web.Response(status=429, headers={"Retry-After": "3600"})
async def hang(request):
    await asyncio.sleep(3600)
async def drip(request):
    resp = web.StreamResponse(headers={"Content-Type": "application/rss+xml"})
    await resp.prepare(request)
    for _ in range(3600):
        await resp.write(b"<")
        await asyncio.sleep(1)
    return resp
async def gzbomb(request):
    return web.Response(body=BOMB, headers={"Content-Encoding": "gzip", "Content-Type": "application/rss+xml"})
async def loop(request): raise web.HTTPFound(request.path)
app = web.Application()
for name, handler in (("error", error), ("busy", busy), ("hang", hang), ("drip", drip), ("gzbomb", gzbomb), ("loop", loop)):
    app.router.add_get("/{n}/" + name + ".xml", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=lambda *a: print("ready", flush=True), access_log=None)
'''


def hostile_sources(count: int) -> list[tuple[str, str]]:
    """(name, kind) of ``count`` hostile sources, the kinds in turn."""
    return [(f"{KINDS[k % len(KINDS)]}{k // len(KINDS)}", KINDS[k % len(KINDS)]) for k in range(count)]


def write_static(directory: Path, good: FeedSet) -> None:
    """The static hostile files (``missing`` is a path with no file)."""
    d = directory / "hostile"
    d.mkdir(parents=True, exist_ok=True)
    sample = good.document(0)
    huge = b"".join([sample[: sample.index(b"<item>")]] + [sample[sample.index(b"<item>"):sample.index(b"</channel>")]] * 400
                    + [b"</channel></rss>"])
    while len(huge) < 3 << 20:
        huge = huge.replace(b"</channel>", sample[sample.index(b"<item>"):sample.index(b"</channel>")] + b"</channel>", 1)
    files = {"garbage": bytes(range(256)) * 64, "html": b"<html><body><p>Please Wait...</p></body></html>",
             "truncated": sample[: len(sample) // 2], "bomb": ENTITY_BOMB, "xxe": XXE, "huge": huge}
    for name, body in files.items():
        (d / f"{name}.xml").write_bytes(body)


class HostileServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-c", HOSTILE_SERVER, str(self.port)], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=clean_env(), start_new_session=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if "ready" not in line:
            self.stop()
            raise BenchError("the hostile server did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def write_config(path: Path, db: Path, sources: list[tuple[str, str]], concurrency: int) -> Path:
    lines = ["# generated by bench/hostile_load.py", "database:", f'  url: "sqlite:///{db}"', "server:", "  port: 0",
             "fetch:", f"  concurrency: {concurrency}", f"  per_host: {concurrency}", "  timeout: 4s",
             "  read_timeout: 3s", "  connect_timeout: 2s", "  max_bytes: 2MB", "logging:", "  level: INFO",
             "  format: text", "include:", f'  - "{WATCHLISTS}/*.yaml"', "sources:"]
    lines += [f'  - {{name: {name}, url: "{url}"}}' for name, url in sources]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def stored_by_source(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT s.name, count(i.id) FROM sources s LEFT JOIN items i ON i.source_id = s.id "
                            "GROUP BY s.name").fetchall()
        leaked = conn.execute("SELECT count(*) FROM items WHERE title LIKE '%root:%' OR summary LIKE '%root:%'"
                              ).fetchone()[0]
    finally:
        conn.close()
    return {**dict(rows), "\0leaked": leaked}


def polls_by_source(log: Path) -> dict[str, str]:
    out = {}
    with log.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if " monitor.pipeline poll " in line and "source=" in line:
                out[line.split("source=", 1)[1].split()[0]] = line
    return out


def run(feeds: int, hostile: int, items: int, concurrency: int, seed: int, corpus: Path, nginx_bin: Path,
        workdir: Path) -> dict:
    if not nginx_bin.is_file():
        raise BenchError(f"nginx not found at {nginx_bin} (apt-get install nginx-light, or --nginx PATH)")
    rng = random.Random(seed)
    pairs, source = load_corpus(corpus, rng)
    good = FeedSet(workdir / "www", "g", feeds - hostile, items, pairs, seed, datetime.now(UTC))
    progress(f"writing {len(good):,} good feeds of {items} items and the hostile files ...")
    good.write_all()
    write_static(workdir / "www", good)
    nginx = Nginx(nginx_bin, workdir / "www", workdir).start()
    server = HostileServer()
    try:
        base = nginx.base
        good_sources = [(f"good{k}", url) for k, url in enumerate(good.urls(base))]
        bad = hostile_sources(hostile)
        dyn = f"http://127.0.0.1:{server.port}"
        refused = f"http://127.0.0.1:{free_port()}/feed.xml"
        urls = {kind: (f"{base}/hostile/{kind}.xml" if kind in STATIC_KINDS else refused if kind == "refused"
                       else f"{dyn}/{{n}}/{kind}.xml") for kind in KINDS}
        bad_sources = [(name, urls[kind].replace("{n}", name)) for name, kind in bad]
        runs = {}
        for label, sources in (("baseline", good_sources), ("mixed", good_sources + bad_sources)):
            db = workdir / f"{label}.db"
            config = write_config(workdir / f"{label}.yaml", db, sources, concurrency)
            progress(f"{label}: monitor run --once over {len(sources):,} sources ...")
            measured = run_cli(config, workdir / f"{label}.log", workdir)
            runs[label] = {**measured, "sources": len(sources), "summary": log_summary(workdir / f"{label}.log"),
                           "stored": stored_by_source(db), "polls": polls_by_source(workdir / f"{label}.log")}
            progress(f"  {measured['seconds']:.1f} s, tree peak {measured['tree_peak_mb']:.0f} MB")
    finally:
        server.stop()
        nginx.stop()
    return report(runs, good_sources, bad, feeds, hostile, items, source)


def report(runs: dict, good_sources: list[tuple[str, str]], bad: list[tuple[str, str]], feeds: int, hostile: int,
           items: int, corpus: str) -> dict:
    base, mixed = runs["baseline"], runs["mixed"]
    good_names = [name for name, _ in good_sources]
    good_ok = sum("status=ok" in mixed["polls"].get(name, "") for name in good_names)
    good_stored = sum(mixed["stored"].get(name, 0) for name in good_names)
    base_stored = sum(base["stored"].get(name, 0) for name in good_names)
    by_kind: dict[str, Counter] = {}
    for name, kind in bad:
        line = mixed["polls"].get(name, "")
        outcome = "error" if "status=error" in line and "error=" in line else "ok" if "status=ok" in line else "none"
        by_kind.setdefault(kind, Counter())[outcome] += 1
    must = [(name, kind) for name, kind in bad if kind in MUST_FAIL]
    failed_ok = sum(by_kind[kind]["error"] for kind in {k for _, k in must})
    leaked = mixed["stored"]["\0leaked"]
    extra = mixed["seconds"] - base["seconds"]
    checks = [
        {"name": "good sources polled ok (mixed run)", "value": f"{good_ok:,}/{len(good_names):,}",
         "pass": good_ok == len(good_names)},
        {"name": "good items stored (mixed vs baseline)", "value": f"{good_stored:,}/{base_stored:,}",
         "pass": good_stored == base_stored and base_stored > 0},
        {"name": "hostile sources recorded as failing", "value": f"{failed_ok:,}/{len(must):,}",
         "pass": failed_ok == len(must)},
        {"name": "items carrying /etc/passwd", "value": leaked, "pass": leaked == 0},
        {"name": "mixed run time - baseline (s)", "value": round(extra, 1), "target": f"<= {SLACK_S:g}",
         "pass": extra <= SLACK_S},
        {"name": "peak memory, process tree (MB)", "value": mixed["tree_peak_mb"], "target": f"<= {TARGET_PEAK_MB:g}",
         "pass": mixed["tree_peak_mb"] <= TARGET_PEAK_MB},
    ]
    slim = {label: {k: v for k, v in r.items() if k not in ("polls", "stored")} for label, r in runs.items()}
    return {"feeds": feeds, "hostile": hostile, "items": items, "corpus": corpus, "runs": slim,
            "hostile_by_kind": {kind: dict(c) for kind, c in sorted(by_kind.items())}, "targets": checks}


def print_report(r: dict, out=None) -> None:
    out = out or sys.stdout
    base, mixed = r["runs"]["baseline"], r["runs"]["mixed"]
    print(f"hostile sources under load: {r['feeds']:,} sources, {r['hostile']} of them hostile, "
          f"{r['items']} items per good feed; corpus {r['corpus']}", file=out)
    print(f"  baseline (good only)  {base['seconds']:7.1f} s   peak {base['tree_peak_mb']:5.0f} MB   "
          f"polls {base['summary']['statuses']}", file=out)
    print(f"  mixed                 {mixed['seconds']:7.1f} s   peak {mixed['tree_peak_mb']:5.0f} MB   "
          f"polls {mixed['summary']['statuses']}", file=out)
    print("  hostile sources by kind (outcome: count): " + "; ".join(
        f"{kind} {', '.join(f'{k} {v}' for k, v in sorted(c.items()))}" for kind, c in r["hostile_by_kind"].items()),
        file=out)
    for c in r["targets"]:
        target = f"target {c['target']}" if c.get("target") else ""
        print(f"  {c['name']:<42} {c['value']!s:>12}  {target:<14} {'PASS' if c['pass'] else 'FAIL'}", file=out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--feeds", type=int, default=2000, help="sources in the mixed run (%(default)s)")
    ap.add_argument("--hostile", type=int, default=200, help="of which hostile (%(default)s)")
    ap.add_argument("--items", type=int, default=10, help="items per good feed (%(default)s)")
    ap.add_argument("--concurrency", type=int, default=50, help="fetch.concurrency and per_host (%(default)s)")
    ap.add_argument("--seed", type=int, default=1, help="RNG seed (%(default)s)")
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="corpus directory (%(default)s)")
    ap.add_argument("--nginx", type=Path, default=DEFAULT_NGINX, help="nginx binary (%(default)s)")
    ap.add_argument("--workdir", type=Path, help="a new directory for feeds, configs, databases and logs (kept)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a check fails")
    args = ap.parse_args(argv)
    if not 0 < args.hostile < args.feeds or args.items < 1 or args.concurrency < 1:
        ap.error("need 0 < --hostile < --feeds, --items >= 1 and --concurrency >= 1")
    try:
        with work_directory(args.workdir, args.keep, "hostile-load-") as workdir:
            r = run(args.feeds, args.hostile, args.items, args.concurrency, args.seed, args.corpus, args.nginx, workdir)
    except BenchError as e:
        print(f"hostile_load: {e}", file=sys.stderr)
        return 2
    return emit(r, args.json, args.strict, print_report)


if __name__ == "__main__":
    sys.exit(main())
