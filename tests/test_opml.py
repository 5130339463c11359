"""OPML: reading feed lists safely, `sources: [{opml: ...}]` in config, `monitor sources import`."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT

from monitor.config import ConfigError, load_config
from monitor.opml import OpmlError, read_opml

OPML = """<?xml version="1.0"?>
<opml version="2.0"><head><title>desk</title></head><body>
 <outline text="Defence">
  <outline type="rss" text="Breaking Defense" xmlUrl="https://breakingdefense.com/feed/"/>
  <outline type="rss" title="Yonhap: North Korea" text="x" xmlUrl="https://en.yna.co.kr/RSS/nk.xml"/>
  <outline type="rss" text="Breaking Defense" xmlUrl="https://breakingdefense.com/other/"/>
  <outline type="rss" text="old" xmlUrl="ftp://example.org/feed"/>
  <outline type="rss" xmlUrl="https://www.38north.org/feed/"/>
 </outline>
 <outline text="a folder without feeds"/>
</body></opml>
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def test_read_opml_names_feeds_and_skips_what_is_not_http(tmp_path):
    feeds, skipped = read_opml(write(tmp_path / "f.opml", OPML))
    assert [(f.name, f.url) for f in feeds] == [
        ("breaking-defense", "https://breakingdefense.com/feed/"),
        ("yonhap-north-korea", "https://en.yna.co.kr/RSS/nk.xml"),
        ("breaking-defense-2", "https://breakingdefense.com/other/"),
        ("www-38north-org-feed", "https://www.38north.org/feed/"),
    ]
    assert skipped == ["7: 'ftp://example.org/feed' is not an http(s) URL"]


def test_read_opml_refuses_entities_and_garbage(tmp_path):
    xxe = write(tmp_path / "x.opml", """<?xml version="1.0"?>
        <!DOCTYPE opml [<!ENTITY e SYSTEM "file:///etc/passwd">]>
        <opml><body><outline text="&e;" xmlUrl="https://a.example/feed"/></body></opml>""")
    with pytest.raises(OpmlError, match="external entity"):  # never loaded: refused
        read_opml(xxe)
    with pytest.raises(OpmlError, match="not well-formed"):
        read_opml(write(tmp_path / "bad.opml", "<opml><body><outline"))
    with pytest.raises(OpmlError, match="not an OPML file"):
        read_opml(write(tmp_path / "rss.opml", "<rss/>"))
    with pytest.raises(OpmlError, match="cannot read"):
        read_opml(tmp_path / "missing.opml")


def test_config_sources_may_come_from_an_opml_file(tmp_path):
    (tmp_path / "feeds").mkdir()
    write(tmp_path / "feeds" / "desk.opml", OPML)
    cfg = write(tmp_path / "monitor.yaml", """
        sources:
          - {name: wire, url: "https://wire.example/rss"}
          - opml: feeds/desk.opml
            interval: 30m
            max_interval: 2h
        """)
    c = load_config(cfg, env={})
    assert [s.name for s in c.sources] == ["wire", "breaking-defense", "yonhap-north-korea", "breaking-defense-2",
                                           "www-38north-org-feed"]
    assert all(s.interval.total_seconds() == 1800 and s.max_interval.total_seconds() == 7200 for s in c.sources[1:])


def test_opml_entry_errors_name_the_file_and_line(tmp_path):
    write(tmp_path / "desk.opml", OPML)
    cfg = write(tmp_path / "monitor.yaml", """
        sources:
          - opml: nowhere.opml
          - opml: desk.opml
            name: x
          - opml: desk.opml
            interval: 1s
          - {name: breaking-defense, url: "https://other.example/"}
        """)
    with pytest.raises(ConfigError) as info:
        load_config(cfg, env={})
    text = "\n".join(info.value.messages)
    assert "monitor.yaml:2: sources[0].opml: cannot read" in text and "nowhere.opml" in text
    assert "monitor.yaml:4: sources[1].name: not allowed beside 'opml'" in text
    assert "monitor.yaml:6: sources[2].interval: interval must be at least 10s" in text


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monitor", "sources", "import", *args, "--config",
                           str(tmp_path / "monitor.yaml")], capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_monitor_sources_import_writes_yaml_for_new_feeds(tmp_path):
    import yaml

    opml = write(tmp_path / "desk.opml", OPML)
    write(tmp_path / "monitor.yaml", """
        sources:
          - {name: breaking-defense, url: "https://elsewhere.example/feed"}
          - {name: nk, url: "https://en.yna.co.kr/RSS/nk.xml"}
        """)
    out = run(tmp_path, str(opml), "--interval", "20m")
    assert out.returncode == 0, out.stderr
    got = yaml.safe_load(out.stdout)["sources"]
    assert got == [  # the Yonhap feed is configured already; a taken name gets a suffix
        {"name": "breaking-defense-2", "url": "https://breakingdefense.com/feed/", "interval": "20m"},
        {"name": "breaking-defense-3", "url": "https://breakingdefense.com/other/", "interval": "20m"},
        {"name": "www-38north-org-feed", "url": "https://www.38north.org/feed/", "interval": "20m"},
    ]
    assert "3 new sources from 4 feeds" in out.stderr and "1 already configured" in out.stderr
    target = tmp_path / "imported.yaml"
    assert run(tmp_path, str(opml), "--to", str(target)).returncode == 0
    assert len(yaml.safe_load(target.read_text())["sources"]) == 3
    again = run(tmp_path, str(opml), "--to", str(target))
    assert again.returncode == 2 and "exists" in again.stderr
    # the written file is a valid include
    write(tmp_path / "monitor.yaml", f"""
        include: [{target.name}]
        sources:
          - {{name: breaking-defense, url: "https://elsewhere.example/feed"}}
        """)
    assert len(load_config(tmp_path / "monitor.yaml", env={}).sources) == 4
