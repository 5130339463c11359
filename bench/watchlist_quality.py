"""Watchlist quality on the development corpus: precision, recall and F1 per watchlist and group.

Usage (from the project root)::

    .venv/bin/python bench/watchlist_quality.py [--corpus DIR] [--config PATH]
                                                [--errors WATCHLIST] [--json] [--strict]

Scoring follows ``../shared/corpus/README.md`` ("How to score"): for each label separately, over
the items whose label is not null, TP/FP/FN, precision = TP/(TP+FP), recall = TP/(TP+FN),
F1 = 2PR/(P+R) (each 0.0 when its denominator is 0). Groups: ``news`` (agnews + kcna),
``csis``, ``all`` (news + csis) and ``reposts`` (scored with the labels of their
``repost_of`` item). The watchlists are loaded and matched the product's way (load_config +
Matcher); two plain-regex reference baselines from the issue are scored in the same run, for
scale. The development corpus is not the held-out test set: do not tune to its items.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from monitor.config import load_config  # noqa: E402
from monitor.matcher import Matcher  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"
DEFAULT_CONFIG = ROOT / "config" / "monitor.yaml"

LABELS = ("missile_test", "nuclear_test", "strategic_deployment")
WATCHLIST_LABELS = {
    "missile-tests": "missile_test",
    "nuclear-tests": "nuclear_test",
    "strategic-deployments": "strategic_deployment",
}
GROUPS = ("news", "csis", "all", "reposts")
NEWS_ORIGINS = frozenset({"agnews", "kcna"})

# The reference baselines: plain Python regex rules over title + text, case-insensitive.
_DEPLOY = re.compile(r"\bdeploy\w*", re.IGNORECASE)
_STRATEGIC = re.compile(r"\b(strategic|THAAD|bomber\w*|carrier\w*|nuclear|submarine\w*|missile\w*)\b",
                        re.IGNORECASE)
_MISSILE = re.compile(r"\b(missile\w*|ICBM\w*|ballistic)\b", re.IGNORECASE)
# "a hand list of launch phrases": what an analyst types first for launches
_LAUNCH_PHRASES = re.compile(
    r"\b(missile (test|launch|firing)\w*|rocket launch\w*|test[- ]?(fire|launch)\w*|flight[- ]test\w*|"
    r"(launched|fired|fires|launches) (a|an|two|three|several|its)? ?(\w+ )?(ballistic |cruise )?missiles?|"
    r"satellite launch\w*)\b", re.IGNORECASE)
BASELINES: dict[str, tuple[str, Callable[[str], bool]]] = {
    "baseline:feed-reader-rule": (
        "strategic_deployment", lambda s: bool(_DEPLOY.search(s) and _STRATEGIC.search(s))),
    "baseline:naive-missile": ("missile_test", lambda s: bool(_MISSILE.search(s))),
    "baseline:launch-phrases": ("missile_test", lambda s: bool(_LAUNCH_PHRASES.search(s))),
}

# (watchlist, group, minimum F1)
TARGETS = (
    ("missile-tests", "news", 0.95),
    ("missile-tests", "csis", 0.95),
    ("strategic-deployments", "news", 0.90),
)


@dataclass(frozen=True)
class Item:
    id: str
    origin: str  # agnews, kcna, csis or repost
    title: str
    text: str  # the `text` field, or `summary` when text is empty
    labels: dict[str, bool | None]
    note: str
    groups: tuple[str, ...]


@dataclass
class Row:
    system: str  # watchlist name or baseline name
    label: str
    group: str
    tp: int = 0
    fp: int = 0
    fn: int = 0
    n: int = 0  # items scored (label not null)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict:
        if not self.n:  # label null on every item of the group
            return {**asdict(self), "precision": None, "recall": None, "f1": None}
        return {**asdict(self), "precision": round(self.precision, 3), "recall": round(self.recall, 3),
                "f1": round(self.f1, 3)}


@dataclass
class Report:
    corpus: str
    config: str
    rows: list[Row]
    skipped_watchlists: list[str]  # watchlists with no label
    no_watchlist: list[str]  # labels with no watchlist
    errors: dict[str, list[dict]] = field(default_factory=dict)  # watchlist -> FP/FN records

    def row(self, system: str, group: str) -> Row | None:
        return next((r for r in self.rows if r.system == system and r.group == group), None)

    def targets(self) -> list[dict]:
        out = []
        for name, group, minimum in TARGETS:
            row = self.row(name, group)
            f1 = row.f1 if row and row.n else None
            out.append({"watchlist": name, "group": group, "min_f1": minimum,
                        "f1": None if f1 is None else round(f1, 3),
                        "holds": f1 is not None and f1 >= minimum})
        return out


# --------------------------------------------------------------------------- corpus


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _groups(origin: str) -> tuple[str, ...]:
    if origin in NEWS_ORIGINS:
        return ("news", "all")
    if origin == "csis":
        return ("csis", "all")
    if origin == "repost":
        return ("reposts",)
    return ("all",)


def load_corpus(corpus: Path) -> list[Item]:
    """items.jsonl + labels.jsonl, then reposts.jsonl (if present) with their original's labels."""
    labels = {rec["id"]: rec for rec in _read_jsonl(corpus / "labels.jsonl")}
    items: list[Item] = []
    for rec in _read_jsonl(corpus / "items.jsonl"):
        lab = labels[rec["id"]]
        items.append(_item(rec, rec["origin"], lab))
    reposts = corpus / "reposts.jsonl"
    if reposts.exists():
        for rec in _read_jsonl(reposts):
            items.append(_item(rec, "repost", labels[rec["repost_of"]]))
    return items


def _item(rec: dict, origin: str, lab: dict) -> Item:
    text = rec.get("text") or rec.get("summary") or ""
    return Item(rec["id"], origin, rec.get("title") or "", text,
                {k: lab.get(k) for k in LABELS}, lab.get("note") or "", _groups(origin))


# --------------------------------------------------------------------------- matching


def build_matcher(config: Path) -> tuple[Matcher, list[str]]:
    cfg = load_config(config)
    return Matcher(cfg.matcher_watchlists()), [w.name for w in cfg.watchlists]


def matched_names(matcher: Matcher, title: str, text: str) -> set[str]:
    """The one place that calls the matcher (its API may gain parameters)."""
    return {hit.name for hit in matcher.match(title, text)}


# --------------------------------------------------------------------------- scoring


def score(corpus: Path = DEFAULT_CORPUS, config: Path = DEFAULT_CONFIG,
          errors_for: Iterable[str] = (), baselines: bool = True) -> Report:
    items = load_corpus(corpus)
    matcher, names = build_matcher(config)
    systems: dict[str, str] = {n: WATCHLIST_LABELS[n] for n in names if n in WATCHLIST_LABELS}
    skipped = [n for n in names if n not in WATCHLIST_LABELS]
    covered = set(systems.values())
    rules = BASELINES if baselines else {}
    systems.update({name: label for name, (label, _) in rules.items()})

    rows = {(s, g): Row(s, lab, g) for s, lab in systems.items() for g in GROUPS}
    errors_for = [e for e in errors_for]
    errors: dict[str, list[dict]] = {e: [] for e in errors_for}
    for item in items:
        predicted = matched_names(matcher, item.title, item.text)
        if rules:
            joined = f"{item.title}\n{item.text}"
            predicted |= {name for name, (_, rule) in rules.items() if rule(joined)}
        for system, label in systems.items():
            gold = item.labels[label]
            if gold is None:
                continue
            pred = system in predicted
            for g in item.groups:
                row = rows[(system, g)]
                row.n += 1
                if pred and gold:
                    row.tp += 1
                elif pred:
                    row.fp += 1
                elif gold:
                    row.fn += 1
            if system in errors and pred != gold:
                errors[system].append({"kind": "FP" if pred else "FN", "id": item.id, "origin": item.origin,
                                       "title": item.title, "note": item.note})
    return Report(str(corpus), str(config), list(rows.values()), skipped,
                  [lab for lab in LABELS if lab not in covered], errors)


# --------------------------------------------------------------------------- output


def print_table(report: Report, out=sys.stdout) -> None:
    w = max([len(r.system) for r in report.rows] + [len("watchlist"), 22])
    head = f"{'watchlist':<{w}}  {'label':<20}  {'group':<7}  {'n':>5}  {'TP':>4}  {'FP':>4}  {'FN':>4}  " \
           f"{'prec':>5}  {'recall':>6}  {'F1':>5}"
    print(f"corpus: {report.corpus}\nconfig: {report.config}\n", file=out)
    print(head, file=out)
    print("-" * len(head), file=out)
    last = None
    for r in report.rows:
        if last is not None and r.system != last and r.system.startswith("baseline:") \
                and not last.startswith("baseline:"):
            print("-- reference baselines (plain regex, same text) --", file=out)
        last = r.system
        if not r.n:
            print(f"{r.system:<{w}}  {r.label:<20}  {r.group:<7}  {0:>5}  (label null on every item: not scored)",
                  file=out)
            continue
        print(f"{r.system:<{w}}  {r.label:<20}  {r.group:<7}  {r.n:>5}  {r.tp:>4}  {r.fp:>4}  {r.fn:>4}  "
              f"{r.precision:>5.3f}  {r.recall:>6.3f}  {r.f1:>5.3f}", file=out)
    for lab in report.no_watchlist:
        print(f"{'(no watchlist)':<{w}}  {lab:<20}  no watchlist", file=out)
    for name in report.skipped_watchlists:
        print(f"{name:<{w}}  (no label: skipped)", file=out)
    print("\ntargets:", file=out)
    for t in report.targets():
        f1 = "n/a" if t["f1"] is None else f"{t['f1']:.3f}"
        status = "OK" if t["holds"] else "MISSED"
        print(f"  {t['watchlist']} F1 >= {t['min_f1']:.2f} on {t['group']}: {f1}  {status}", file=out)


def print_errors(report: Report, out=sys.stdout) -> None:
    for name, recs in report.errors.items():
        fps = [r for r in recs if r["kind"] == "FP"]
        fns = [r for r in recs if r["kind"] == "FN"]
        print(f"\n{name}: {len(fps)} false positives, {len(fns)} false negatives "
              f"(every group, reposts included)", file=out)
        for kind, group in (("false positives", fps), ("false negatives", fns)):
            print(f"\n  {kind}:", file=out)
            for r in group:
                print(f"    {r['id']}  [{r['origin']}]  {r['title']!r}\n        note: {r['note'] or '(none)'}", file=out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="corpus directory (%(default)s)")
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="main config file (%(default)s)")
    ap.add_argument("--errors", metavar="WATCHLIST", action="append", default=[],
                    help="list false positives and false negatives of this watchlist (repeatable)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)

    report = score(args.corpus, args.config, errors_for=args.errors)
    unknown = [e for e in args.errors if report.row(e, "all") is None]
    if unknown:
        ap.error(f"--errors: no scored watchlist named {', '.join(unknown)} "
                 f"(scored: {', '.join(sorted({r.system for r in report.rows}))})")
    targets = report.targets()
    if args.json:
        obj = {"corpus": report.corpus, "config": report.config, "rows": [r.as_dict() for r in report.rows],
               "no_watchlist": report.no_watchlist, "skipped_watchlists": report.skipped_watchlists,
               "targets": targets}
        if report.errors:
            obj["errors"] = report.errors
        print(json.dumps(obj, indent=2, ensure_ascii=False))
    else:
        print_table(report)
        print_errors(report)
    if args.strict and not all(t["holds"] for t in targets):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
