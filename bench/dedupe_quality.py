"""Story-merging quality on the labelled corpus: which items end up in one story.

Usage (from the project root)::

    .venv/bin/python bench/dedupe_quality.py [--corpus DIR] [--window 7d] [--db PATH]
                                             [--examples N] [--json] [--strict]

What one run does:

- Feeds every item of ``items.jsonl`` and ``reposts.jsonl`` through the daemon's own path,
  in date order (originals before their reposts on the same day): the text becomes feed
  HTML (one ``<p>`` per line) and goes through ``normalize_entry``, ``dedupe.fingerprint``
  and ``Store.commit_poll`` into a fresh SQLite database, polls grouped by outlet (the
  origin for corpus items, the link's host for reposts). Items without a date (AG News) are
  published "now"; so all of them share one window — harder than real life.
- Reads back which story each item joined, and scores the result against the gold clusters:
  each natural duplicate group of ``dup_groups.jsonl``, with the reposts of its members,
  and each other reposted item with its reposts.
- Prints pairwise precision and recall over all gold pairs; recall on (repost, original)
  pairs and on natural-group pairs separately (and per group kind); how many
  ``hard_negatives.jsonl`` pairs were merged; and the same figures for a baseline measured
  in the same run: what a feed reader does (same canonical link or the same headline,
  case-insensitively).

Targets (``--strict`` exits 1 when one is missed): pairwise precision >= 0.97, recall >= 0.93
on repost pairs and on natural-group pairs, hard-negative pairs merged <= 1 %.
Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import html
import itertools
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):  # run as a script from anywhere
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from _words import progress  # noqa: E402

from monitor import dedupe  # noqa: E402
from monitor.durations import parse_duration  # noqa: E402
from monitor.model import FeedEntry, FetchResult  # noqa: E402
from monitor.normalize import normalize_entry  # noqa: E402
from monitor.store import NewItem, Store, StoryPolicy  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # "now" for undated items; later than every date
TARGET_PRECISION = 0.97
TARGET_RECALL = 0.93
TARGET_HARD_NEGATIVES = 0.01
POLL_SIZE = 50


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@dataclass(frozen=True)
class Corpus:
    rows: list[dict]  # items then reposts, each with "id", "title", "text", "summary", "date", "link"
    groups: list[dict]  # natural duplicate groups: {"group", "ids", "kind"}
    reposts: list[tuple[str, str]]  # (repost id, original id)
    hard_negatives: list[tuple[str, str]]


def load_corpus(corpus: Path) -> Corpus:
    items = read_jsonl(corpus / "items.jsonl")
    reposts = read_jsonl(corpus / "reposts.jsonl")
    groups = read_jsonl(corpus / "dup_groups.jsonl")
    negatives = read_jsonl(corpus / "hard_negatives.jsonl")
    return Corpus(items + reposts, groups, [(r["id"], r["repost_of"]) for r in reposts],
                  [tuple(n["ids"]) for n in negatives])


def gold_clusters(c: Corpus) -> dict[str, str]:
    """Item id -> gold cluster id: natural groups, each reposted item with its reposts."""
    gold = {r["id"]: r["id"] for r in c.rows}
    for g in c.groups:
        for i in g["ids"]:
            gold[i] = g["group"]
    for repost, original in c.reposts:
        gold[repost] = gold[original]
    return gold


def _when(row: dict) -> datetime:
    return datetime.fromisoformat(row["date"]).replace(tzinfo=UTC) if row.get("date") else NOW


def outlet(row: dict) -> str:
    """Where the item came from: the origin for corpus items, the link's host for reposts."""
    if row.get("repost_of") and row.get("link"):
        return urlsplit(row["link"]).hostname or "repost"
    return row.get("origin") or "corpus"


def feed_entry(row: dict) -> FeedEntry:
    text = row.get("text") or row.get("summary") or ""
    body = "".join(f"<p>{line}</p>" for line in text.splitlines() if line.strip())
    link = row.get("link") or f"https://{outlet(row)}.example/{row['id']}"
    return FeedEntry(guid=row["id"], link=link, title=html.escape(row["title"] or ""), summary_html=body,
                     published=_when(row))


def store_corpus(c: Corpus, url: str, window: timedelta) -> tuple[dict[str, int], float]:
    """Every row through normalize -> fingerprint -> Store.commit_poll; id -> story id, and
    the seconds spent."""
    store = Store(url)
    store.upgrade()
    order = sorted(range(len(c.rows)), key=lambda k: (_when(c.rows[k]), bool(c.rows[k].get("repost_of")), k))
    rows = [c.rows[k] for k in order]
    store.sync_sources([(name, f"https://{name}/feed") for name in dict.fromkeys(outlet(r) for r in rows)])
    policy = StoryPolicy(window=window)
    ok = FetchResult(url="bench", status="ok", http_status=200)
    story_of: dict[str, int] = {}
    by_link: dict[str, str] = {}  # canonical link -> id of the item stored under it
    duplicates: dict[str, str] = {}  # id -> id of the stored item with the same canonical link
    started = last = time.perf_counter()
    done = 0
    for name, run in itertools.groupby(rows, key=outlet):
        run = list(run)
        for k in range(0, len(run), POLL_SIZE):
            batch = []
            for row in run[k:k + POLL_SIZE]:
                item = normalize_entry(feed_entry(row))
                if item.canonical_link in by_link:  # the store drops an exact duplicate: same page
                    duplicates[row["id"]] = by_link[item.canonical_link]
                    continue
                by_link[item.canonical_link] = row["id"]
                batch.append(NewItem(item, False, (), dedupe.fingerprint(item.title, item.text)))
            outcome = store.commit_poll(name, ok, batch, (), NOW, policy)
            story_of.update((st.item.guid, st.story_id) for st in outcome.stored)
            done += len(batch)
            if time.perf_counter() - last > 2:
                last = time.perf_counter()
                progress(f"  stored {done:,}/{len(rows):,} items ({done / (last - started):,.0f}/s)")
    seconds = time.perf_counter() - started
    store.close()
    story_of.update((i, story_of[j]) for i, j in duplicates.items())
    if duplicates:
        progress(f"  {len(duplicates)} items had the canonical link of a stored one: exact duplicates, "
                 "counted in that item's story")
    missing = [r["id"] for r in rows if r["id"] not in story_of]
    if missing:
        raise SystemExit(f"items not stored (duplicate guid or link?): {missing[:5]}")
    return story_of, seconds


def feed_reader_baseline(c: Corpus) -> dict[str, int]:
    """What a feed reader merges: the same canonical link, or the same headline (any case)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first: dict[str, str] = {}
    for row in c.rows:
        item = normalize_entry(feed_entry(row))
        for key in ("l:" + (item.canonical_link or row["id"]), "t:" + item.title.casefold()):
            if key == "t:":
                continue
            if key in first:
                parent[find(row["id"])] = find(first[key])
            else:
                first[key] = row["id"]
    roots: dict[str, int] = {}
    return {row["id"]: roots.setdefault(find(row["id"]), len(roots)) for row in c.rows}


def score(c: Corpus, story_of: dict[str, int], gold: dict[str, str], examples: int = 0) -> dict:
    """Pairwise precision/recall against the gold clusters, recall by kind, hard negatives."""
    by_story: dict[int, list[str]] = defaultdict(list)
    for i, s in story_of.items():
        by_story[s].append(i)
    tp = fp = 0
    false_pairs = []
    for ids in by_story.values():
        for a, b in itertools.combinations(ids, 2):
            if gold[a] == gold[b]:
                tp += 1
            else:
                fp += 1
                if len(false_pairs) < examples:
                    false_pairs.append((a, b))
    by_gold: dict[str, int] = Counter(gold[i] for i in story_of)
    gold_pairs = sum(n * (n - 1) // 2 for n in by_gold.values())

    def same(a: str, b: str) -> bool:
        return story_of[a] == story_of[b]

    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    missed = []
    for g in c.groups:
        for a, b in itertools.combinations(g["ids"], 2):
            kinds[g["kind"]][1] += 1
            if same(a, b):
                kinds[g["kind"]][0] += 1
            elif len(missed) < examples:
                missed.append((a, b, g["kind"]))
    natural_ok = sum(v[0] for v in kinds.values())
    natural_all = sum(v[1] for v in kinds.values())
    repost_ok = sum(same(a, b) for a, b in c.reposts)
    missed_reposts = [(a, b) for a, b in c.reposts if not same(a, b)][:examples]
    merged_negatives = [pair for pair in c.hard_negatives if same(*pair)]
    return {
        "stories": len(by_story), "items": len(story_of),
        "precision": tp / (tp + fp) if tp + fp else 1.0, "recall": tp / gold_pairs if gold_pairs else 1.0,
        "true_pairs": tp, "false_pairs": fp, "gold_pairs": gold_pairs,
        "repost_recall": repost_ok / len(c.reposts) if c.reposts else 1.0,
        "repost_pairs": [repost_ok, len(c.reposts)],
        "natural_recall": natural_ok / natural_all if natural_all else 1.0,
        "natural_pairs": [natural_ok, natural_all],
        "natural_by_kind": {k: v for k, v in sorted(kinds.items())},
        "hard_negatives_merged": len(merged_negatives) / len(c.hard_negatives) if c.hard_negatives else 0.0,
        "hard_negative_pairs": [len(merged_negatives), len(c.hard_negatives)],
        "examples": {"false_merges": false_pairs, "missed_reposts": missed_reposts, "missed_natural": missed, "merged_hard_negatives": merged_negatives},
    }


def run(corpus: Path = DEFAULT_CORPUS, window: timedelta = timedelta(days=7), db: Path | None = None,
        examples: int = 0) -> dict:
    progress(f"loading {corpus} ...")
    c = load_corpus(corpus)
    gold = gold_clusters(c)
    with tempfile.TemporaryDirectory(prefix="dedupe-quality-") as tmp:
        path = db or Path(tmp) / "bench.db"
        if path.exists():
            raise SystemExit(f"{path} exists: give a new file to --db")
        progress(f"storing {len(c.rows):,} items through normalize -> fingerprint -> Store.commit_poll "
                 f"(SQLite {path}) ...")
        story_of, seconds = store_corpus(c, f"sqlite:///{path}", window)
    progress("feed-reader baseline ...")
    baseline = score(c, feed_reader_baseline(c), gold)
    result = score(c, story_of, gold, examples)
    result["seconds"] = seconds
    result["ms_per_item"] = seconds / len(c.rows) * 1000
    targets = [
        ("pairwise precision", result["precision"], f">= {TARGET_PRECISION}", result["precision"] >= TARGET_PRECISION),
        ("recall, (repost, original) pairs", result["repost_recall"], f">= {TARGET_RECALL}",
         result["repost_recall"] >= TARGET_RECALL),
        ("recall, natural-group pairs", result["natural_recall"], f">= {TARGET_RECALL}",
         result["natural_recall"] >= TARGET_RECALL),
        ("hard-negative pairs merged", result["hard_negatives_merged"], f"<= {TARGET_HARD_NEGATIVES:.0%}",
         result["hard_negatives_merged"] <= TARGET_HARD_NEGATIVES),
    ]
    return {"corpus": str(corpus), "window": str(window), "method": method(), "result": result,
            "baseline": baseline, "targets": [{"name": n, "value": round(v, 4), "target": t, "pass": p}
                                              for n, v, t, p in targets]}


def method() -> str:
    return (f"MinHash {dedupe.NUM_PERM} perms over word {dedupe.SHINGLE}-shingles, LSH {dedupe.BANDS}x{dedupe.ROWS}; "
            f"Jaccard >= {dedupe.JACCARD} within {dedupe.NEAR_DAYS} days (>= {dedupe.FAR_JACCARD} beyond), "
            f"containment >= {dedupe.CONTAINMENT} with the same lead; below {dedupe.FAR_JACCARD}, headlines sharing "
            f">= {dedupe.TITLE_OVERLAP:.0%} of their words; headline-only pages by headline")


def print_report(r: dict, out=None) -> None:
    out = out or sys.stdout
    res, base = r["result"], r["baseline"]

    def frac(pair: list[int]) -> str:
        return f"{pair[0]:,}/{pair[1]:,}"

    w = out.write
    w(f"dedupe quality: {res['items']:,} items -> {res['stories']:,} stories; window {r['window']}; "
      f"corpus {r['corpus']}\n")
    w(f"  method: {r['method']}\n")
    w(f"  stored through the store at {res['ms_per_item']:.2f} ms/item (SQLite, fingerprint included)\n\n")
    w(f"  {'':34}{'merger':>10}{'feed reader':>14}\n")
    rows = [
        ("pairwise precision", "precision", None),
        ("pairwise recall (all gold pairs)", "recall", None),
        ("recall, (repost, original)", "repost_recall", "repost_pairs"),
        ("recall, natural groups", "natural_recall", "natural_pairs"),
        ("hard-negative pairs merged", "hard_negatives_merged", "hard_negative_pairs"),
    ]
    for label, key, pairs in rows:
        extra = f"   ({frac(res[pairs])})" if pairs else ""
        w(f"  {label:34}{res[key]:>10.4f}{base[key]:>14.4f}{extra}\n")
    w(f"  false merges: {res['false_pairs']:,} pairs; gold pairs: {res['gold_pairs']:,}\n")
    w("  natural groups by kind (merger / feed reader):\n")
    for kind, (ok, n) in res["natural_by_kind"].items():
        b_ok = base["natural_by_kind"].get(kind, [0, n])[0]
        w(f"    {kind:28}{ok:>5}/{n:<5} {b_ok:>5}/{n}\n")
    w("\n")
    for t in r["targets"]:
        w(f"  {t['name']:38}{t['value']:>8.4f}   target {t['target']:<8} {'PASS' if t['pass'] else 'FAIL'}\n")
    ex = res["examples"]
    if any(ex.values()):
        w("\n  examples:\n")
        for a, b in ex["false_merges"]:
            w(f"    merged, not one story: {a} + {b}\n")
        for a, b in ex["missed_reposts"]:
            w(f"    repost not merged with its original: {a} + {b}\n")
        for a, b, kind in ex["missed_natural"]:
            w(f"    not merged ({kind}): {a} + {b}\n")
        for a, b in ex["merged_hard_negatives"]:
            w(f"    hard negative merged: {a} + {b}\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    p.add_argument("--window", default="7d", help="story window (default 7d)")
    p.add_argument("--db", type=Path, default=None, help="keep the database at this (new) path")
    p.add_argument("--examples", type=int, default=0, help="list this many false merges and misses")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    r = run(args.corpus, parse_duration(args.window), args.db, args.examples)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print_report(r)
    return 1 if args.strict and not all(t["pass"] for t in r["targets"]) else 0


if __name__ == "__main__":
    sys.exit(main())
