"""Helpers shared by the benchmark scripts (not a benchmark: `make bench` skips `_*.py`)."""
from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def corpus_items(corpus: Path) -> Iterator[dict]:
    """The records of ``corpus/items.jsonl`` (none when the file is missing); bad lines are skipped."""
    items = corpus / "items.jsonl"
    if not items.is_file():
        return
    with items.open(encoding="utf-8") as f:
        for line in f:
            try:
                yield json.loads(line)
            except ValueError:
                continue


def progress(msg: str) -> None:
    """A progress line on stderr (the report goes to stdout)."""
    print(msg, file=sys.stderr, flush=True)


def synthetic_counts(rng: random.Random) -> Counter[str]:
    """12,000 pseudo-words with a Zipf-like frequency, for when ``../shared/corpus`` is missing."""
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["an", "er", "in", "on", "st"]
    seen: set[str] = set()
    while len(seen) < 12000:
        seen.add("".join(rng.choice(syllables) for _ in range(rng.choice((1, 2, 2, 3, 3, 4)))))
    words = sorted(seen)
    rng.shuffle(words)
    return Counter({w: max(1, int(100000 / (rank + 10))) for rank, w in enumerate(words)})


def cumulative(words: list[str], counts: Counter[str]) -> list[float]:
    """Cumulative weights of ``words`` for ``random.choices(words, cum_weights=...)``."""
    cum: list[float] = []
    total = 0.0
    for w in words:
        total += counts[w]
        cum.append(total)
    return cum


def emit(report: dict, as_json: bool, strict: bool, printer: Callable[[dict], None]) -> int:
    """Print a bench's report (JSON, or the readable table of ``printer``); the exit status:
    1 with ``strict`` when a target was missed, else 0."""
    if as_json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        printer(report)
    return 1 if strict and not all(t["pass"] for t in report["targets"]) else 0


@contextmanager
def work_directory(path: Path | None, keep: bool, prefix: str) -> Iterator[Path]:
    """A bench's work directory: ``path`` (created, must be new, always kept), else a new
    temporary one, removed afterwards unless ``keep``; says where a kept one is."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=False)
        work, remove = path, False
    else:
        work, remove = Path(tempfile.mkdtemp(prefix=prefix)), not keep
    try:
        yield work
    finally:
        if remove:
            shutil.rmtree(work, ignore_errors=True)
        else:
            progress(f"work directory kept: {work}")
