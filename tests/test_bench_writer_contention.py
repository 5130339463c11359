"""bench/writer_contention.py runs end to end on a tiny database and reports both phases."""
from __future__ import annotations

import contextlib
import io
import json

from conftest import ROOT, load_script


def test_a_tiny_run_reports_both_phases_and_their_ratio():
    bench = load_script(ROOT / "bench" / "writer_contention.py", "bench_writer_contention")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert bench.main(["--stored", "200", "--items", "60", "--poll", "10", "--group", "3", "--json"]) == 0
    r = json.loads(out.getvalue())
    assert r["items"] == 60 and r["busy_threads"] == 1
    assert r["alone_ms_per_item"] > 0 and r["busy_ms_per_item"] > 0
    assert abs(r["ratio"] - r["busy_ms_per_item"] / r["alone_ms_per_item"]) < 1e-9
