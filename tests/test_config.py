"""load_config: real YAML files in tmp_path; every error names file:line: key."""
from __future__ import annotations

import logging
import re
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from monitor.config import ConfigError, load_config, summarize

SLACK = "slack://T1234ABCD/B5678EFGH/abcdefghijklmnopqrstuvwx"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Run in tmp_path so files are named as a user would: relative, e.g. 'cfg.yaml'."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(name: str, text: str) -> str:
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return name


def errors(name: str = "cfg.yaml", env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(name, env={} if env is None else env)
    assert str(info.value) == "\n".join(info.value.messages)
    return info.value.messages


# --------------------------------------------------------------------------- valid configs


def test_valid_config_with_include_glob_and_defaults(caplog):
    write("cfg.yaml", """
        include: conf.d/*.yaml
        sources:
          - name: wire
            url: https://wire.example/rss
        channels:
          - name: quiet
            url: ""
            watchlists: [missiles]
    """)
    # sorted order: a-... before b-..., whatever the order of creation
    write("conf.d/b-watch.yaml", """
        watchlists:
          - name: missiles
            query: missile AND test
    """)
    write("conf.d/a-sources.yaml", """
        sources:
          - name: agency
            url: http://agency.example/feed.xml
            interval: 90s
            enabled: false
    """)
    write("conf.d/notes.txt", "not: yaml config\n")
    cfg = load_config("cfg.yaml", env={})

    assert cfg.path == Path("cfg.yaml")
    assert [s.name for s in cfg.sources] == ["wire", "agency"]
    wire, agency = cfg.sources
    assert (wire.interval, wire.enabled) == (timedelta(minutes=15), True)
    assert (agency.interval, agency.enabled) == (timedelta(seconds=90), False)
    assert [w.name for w in cfg.watchlists] == ["missiles"]
    assert cfg.watchlists[0].query == "missile AND test"
    assert cfg.database.url == "sqlite:///data/monitor.db"
    assert cfg.server.port == 9108
    assert cfg.delivery.retry_max == timedelta(hours=1)
    assert cfg.logging.level == "INFO"
    assert [c.name for c in cfg.channels] == ["quiet"] and cfg.enabled_channels == []


def test_empty_file_is_the_default_config():
    write("cfg.yaml", "# nothing configured yet\n")
    cfg = load_config("cfg.yaml", env={})
    assert (cfg.sources, cfg.watchlists, cfg.channels) == ([], [], [])
    assert cfg.fetch.max_bytes == 20_000_000


def test_include_absolute_path_and_nested_includes_read_once(in_tmp):
    write("deep/more/w.yaml", """
        watchlists:
          - name: w1
            query: missile
    """)
    write("deep/list.yaml", """
        include: [more/w.yaml]
        sources:
          - name: s1
            url: https://one.example/
    """)
    # the same file reached twice (absolute path and glob) is read once: no duplicate-name error
    write("cfg.yaml", f"""
        include:
          - {in_tmp / 'deep' / 'list.yaml'}
          - deep/*.yaml
    """)
    cfg = load_config("cfg.yaml", env={})
    assert [s.name for s in cfg.sources] == ["s1"]
    assert [w.name for w in cfg.watchlists] == ["w1"]


def test_folded_multiline_query_is_accepted():
    write("cfg.yaml", """
        watchlists:
          - name: missiles
            query: >
              (missile* OR ICBM*)
              AND (launch* OR "test-fire*")
    """)
    cfg = load_config("cfg.yaml", env={})
    assert cfg.watchlists[0].query == '(missile* OR ICBM*) AND (launch* OR "test-fire*")'


def test_valid_apprise_url_is_accepted():
    write("cfg.yaml", f"""
        channels:
          - name: slack
            url: {SLACK}
    """)
    cfg = load_config("cfg.yaml", env={})
    assert [c.name for c in cfg.enabled_channels] == ["slack"]


def test_yaml_merge_keys_and_x_blocks():
    write("cfg.yaml", """
        x-feed: &feed
          interval: 5m
          enabled: false
        sources:
          - <<: *feed
            name: a
            url: https://a.example/
          - <<: *feed
            name: b
            url: https://b.example/
            enabled: true
    """)
    a, b = load_config("cfg.yaml", env={}).sources
    assert (a.interval, a.enabled, b.interval, b.enabled) == (timedelta(minutes=5), False, timedelta(minutes=5), True)


# --------------------------------------------------------------------------- interpolation


def test_env_interpolation_defaults_and_dollar_escape():
    write("cfg.yaml", """
        server:
          port: ${PORT:-9200}
        sources:
          - name: wire-${REGION}
            url: https://${HOST}/feed?key=$${HOST}&cost=$$5
            interval: ${INTERVAL:-10m}
        watchlists:
          - name: w
            query: missile
            description: "${EMPTY:-fallback} and ${SET:-unused}"
    """)
    env = {"REGION": "eu", "HOST": "news.example", "EMPTY": "", "SET": "given"}
    cfg = load_config("cfg.yaml", env=env)
    src = cfg.sources[0]
    assert src.name == "wire-eu"
    assert src.url == "https://news.example/feed?key=${HOST}&cost=$5"
    assert src.interval == timedelta(minutes=10)
    assert cfg.server.port == 9200
    assert cfg.watchlists[0].description == "fallback and given"


def test_env_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("CHECKS_FEED_HOST", "osenv.example")
    write("cfg.yaml", """
        sources:
          - name: s
            url: https://${CHECKS_FEED_HOST}/rss
    """)
    assert load_config("cfg.yaml").sources[0].url == "https://osenv.example/rss"


def test_unset_env_var_is_an_error_naming_file_line_and_key():
    write("cfg.yaml", """
        watchlists: []
        channels:
          - name: desk
            url: ${CHECKS_UNSET_SLACK_URL}
    """)
    assert errors() == [
        "cfg.yaml:4: channels[0].url: environment variable CHECKS_UNSET_SLACK_URL is not set "
        "(use ${CHECKS_UNSET_SLACK_URL:-} for an optional value)"
    ]


def test_malformed_reference_is_an_error():
    write("cfg.yaml", """
        sources:
          - name: s
            url: https://${HOST NAME}/
    """)
    (msg,) = errors(env={"HOST": "x"})
    assert msg.startswith("cfg.yaml:3: sources[0].url: invalid reference '${HOST NAME}'")


# --------------------------------------------------------------------------- file:line errors


def test_yaml_syntax_error_names_the_line():
    write("cfg.yaml", """
        sources:
          - name: wire
            url: https://wire.example/
          interval: 5m
    """)
    (msg,) = errors()
    assert re.fullmatch(r"cfg\.yaml:4: YAML syntax error: .+", msg), msg


def test_syntax_error_in_included_file_names_that_file():
    write("cfg.yaml", "include: [extra.yaml]\n")
    write("extra.yaml", "sources: [unclosed\n\n")
    (msg,) = errors()
    assert msg.startswith("extra.yaml:3: YAML syntax error: ")


def test_unknown_key_with_suggestion():
    write("cfg.yaml", """
        database:
          url: sqlite:///x.db
        sorces:
          - name: wire
    """)
    assert errors() == ["cfg.yaml:3: sorces: unknown key (did you mean 'sources'?)"]


def test_unknown_nested_key_with_suggestion():
    write("cfg.yaml", """
        sources:
          - name: wire
            url: https://wire.example/
            intervall: 5m
    """)
    assert errors() == ["cfg.yaml:4: sources[0].intervall: unknown key (did you mean 'interval'?)"]


def test_bad_duration():
    write("cfg.yaml", """
        sources:
          - name: wire
            url: https://wire.example/
            interval: 15 parsecs
    """)
    assert errors() == [
        "cfg.yaml:4: sources[0].interval: invalid duration '15 parsecs': "
        "use a number with a unit, like 90s, 15m, 2h or 3d"
    ]


def test_missing_required_key_names_the_entry_line():
    write("cfg.yaml", """
        sources:
          - name: ok
            url: https://ok.example/
          - name: nourl
    """)
    assert errors() == ["cfg.yaml:4: sources[1].url: required, but missing"]


def test_duplicate_source_name_across_two_files():
    write("cfg.yaml", """
        include: [other.yaml]
        sources:
          - name: agency
            url: https://agency.example/
          - name: wire
            url: https://wire.example/
    """)
    write("other.yaml", """
        sources:
          - name: wire
            url: https://elsewhere.example/
    """)
    assert errors() == [
        "other.yaml:2: sources[0].name: duplicate source name 'wire' (first defined at cfg.yaml:5)"
    ]


def test_duplicate_watchlist_and_channel_names():
    write("cfg.yaml", """
        watchlists:
          - {name: w, query: missile}
          - {name: w, query: rocket}
        channels:
          - {name: c, url: ""}
          - {name: c, url: ""}
    """)
    assert errors() == [
        "cfg.yaml:3: watchlists[1].name: duplicate watchlist name 'w' (first defined at cfg.yaml:2)",
        "cfg.yaml:6: channels[1].name: duplicate channel name 'c' (first defined at cfg.yaml:5)",
    ]


def test_query_syntax_error_shows_column_and_caret():
    write("cfg.yaml", """
        watchlists:
          - name: ok
            query: missile
          - name: probe
            query: missile AND (test
    """)
    (msg,) = errors()
    first, query_line, caret_line = msg.split("\n")
    m = re.fullmatch(r"cfg\.yaml:5: watchlists\[1\]\.query: watchlist 'probe': .+ at column (\d+)", first)
    assert m, first
    column = int(m.group(1))
    assert query_line == "missile AND (test"
    assert caret_line == " " * (column - 1) + "^"
    assert column in (13, len(query_line) + 1)  # the unclosed '(' or the end of the query


def test_bad_channel_url_is_rejected():
    write("cfg.yaml", """
        channels:
          - name: ok
            url: ""
          - name: desk
            url: notaservice://nowhere
    """)
    (msg,) = errors()
    assert re.fullmatch(
        r"cfg\.yaml:5: channels\[1\]\.url: channel 'desk': no notification service accepts "
        r"'notaservice://nowhere' \(.+\)", msg), msg


def test_channel_naming_unknown_watchlist():
    write("cfg.yaml", """
        watchlists:
          - name: missile-tests
            query: missile
        channels:
          - name: desk
            url: ""
            watchlists:
              - missile-tests
              - missle-tests
    """)
    assert errors() == [
        "cfg.yaml:9: channels[0].watchlists[1]: channel 'desk': unknown watchlist 'missle-tests' "
        "(did you mean 'missile-tests'?)"
    ]


def test_channel_may_name_a_watchlist_from_an_included_file():
    write("cfg.yaml", """
        include: watch.yaml
        channels:
          - {name: desk, url: "", watchlists: [remote]}
    """)
    write("watch.yaml", "watchlists:\n  - {name: remote, query: missile}\n")
    assert load_config("cfg.yaml", env={}).channels[0].watchlists == ["remote"]


def test_included_file_with_forbidden_top_level_key():
    write("cfg.yaml", "include: extra/*.yaml\n")
    write("extra/x.yaml", """
        sources: []
        database:
          url: sqlite:///elsewhere.db
        sorces: []
    """)
    msgs = errors()
    assert len(msgs) == 2
    assert msgs[0].startswith("extra/x.yaml:2: database: may only be set in the main file")
    assert msgs[1].startswith("extra/x.yaml:4: sorces: not allowed in an included file (did you mean 'sources'?")


def test_include_cycle_is_an_error():
    write("cfg.yaml", "include: a.yaml\n")
    write("a.yaml", "include: b.yaml\n")
    write("b.yaml", "sources: []\ninclude: [a.yaml]\n")
    assert errors() == ["b.yaml:2: include[0]: include cycle: cfg.yaml -> a.yaml -> b.yaml -> a.yaml"]


def test_glob_matching_nothing_warns_but_a_missing_named_file_is_an_error(caplog):
    write("cfg.yaml", "include:\n  - nowhere/*.yaml\n  - missing.yaml\n")
    with caplog.at_level(logging.WARNING, logger="monitor.config"):
        msgs = errors()
    assert msgs == ["cfg.yaml:3: include[1]: cannot include 'missing.yaml': no such file"]
    assert [r.getMessage() for r in caplog.records] == [
        "cfg.yaml:2: include pattern 'nowhere/*.yaml' matches no files"
    ]


def test_glob_matching_nothing_alone_loads(caplog):
    write("cfg.yaml", "include: nowhere/*.yaml\n")
    with caplog.at_level(logging.WARNING, logger="monitor.config"):
        load_config("cfg.yaml", env={})
    assert "matches no files" in caplog.text


def test_all_errors_are_reported_together_in_file_order():
    write("cfg.yaml", """
        include: [b.yaml]
        server:
          port: 99999
        sources:
          - name: s
            url: ftp://nope
    """)
    write("b.yaml", """
        watchlists:
          - name: bad name
            query: missile
        channels:
          - name: c
            url: ${NOPE}
    """)
    msgs = errors()
    assert [m.split(":", 2)[:2] for m in msgs] == [
        ["cfg.yaml", "3"], ["cfg.yaml", "6"], ["b.yaml", "2"], ["b.yaml", "6"],
    ]
    assert "server.port: should be less than or equal to 65535 (got 99999)" in msgs[0]
    assert "sources[0].url: source url must start with http:// or https://" in msgs[1]
    assert "watchlists[0].name: names may contain only letters" in msgs[2]
    assert "channels[0].url: environment variable NOPE is not set" in msgs[3]


def test_duplicate_yaml_key_is_an_error():
    write("cfg.yaml", """
        server:
          port: 1
          port: 2
    """)
    assert errors() == ["cfg.yaml:3: server.port: duplicate key (also set at line 2; the last one would win)"]


@pytest.mark.parametrize(("text", "expected"), [
    ("- a\n- b\n", "cfg.yaml:1: the top level should be a mapping of keys (like 'sources:'), not a list"),
    ("just text\n", "cfg.yaml:1: the top level should be a mapping of keys (like 'sources:'), not a string"),
    ("sources: 5\n", "cfg.yaml:1: sources: should be a list (lines starting with '- '), not a number"),
    ("sources:\n  - wire\n", "cfg.yaml:2: sources[0]: should be a mapping of keys, not a string"),
    ("database: sqlite:///x.db\n", "cfg.yaml:1: database: should be a mapping of keys, not a string"),
    ("include: 5\n", "cfg.yaml:1: include: should be a file name, a glob pattern or a list of them, not a number"),
    ("logging:\n  level: LOUD\n",
     "cfg.yaml:2: logging.level: should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR' (got 'LOUD')"),
    ("channels:\n  - name: c\n    watchlists: w\n", "cfg.yaml:3: channels[0].watchlists: should be a list, not a string"),
    ("fetch:\n  max_bytes: lots\n",
     "cfg.yaml:2: fetch.max_bytes: invalid size 'lots': use bytes or a unit, like 512KB or 20MB"),
    ("a: !secret x\n", "cfg.yaml:1: a: unsupported YAML tag '!secret'"),
    ("a: 1\n---\nb: 2\n", "cfg.yaml:2: YAML syntax error: a config file holds one YAML document; remove the second '---'"),
])
def test_bad_input_gives_a_message_not_a_traceback(text, expected):
    write("cfg.yaml", text)
    assert errors()[0] == expected


def test_missing_main_file():
    assert errors("nope/cfg.yaml") == ["nope/cfg.yaml: no such file"]


def test_directory_and_binary_main_file(in_tmp):
    (in_tmp / "dir.yaml").mkdir()
    assert errors("dir.yaml") == ["dir.yaml: is a directory, not a file"]
    (in_tmp / "bin.yaml").write_bytes(b"sources: \xff\xfe\n")
    assert errors("bin.yaml") == ["bin.yaml: not UTF-8 text (bad byte at offset 9)"]


# --------------------------------------------------------------------------- channels, database, summary


def test_empty_channel_url_disables_it_with_one_warning(caplog):
    write("cfg.yaml", """
        channels:
          - name: slack
            url: ${MONITOR_SLACK_URL:-}
          - name: mail
            url: ""
          - name: live
            url: ${LIVE_URL}
    """)
    with caplog.at_level(logging.WARNING, logger="monitor.config"):
        cfg = load_config("cfg.yaml", env={"MONITOR_SLACK_URL": "", "LIVE_URL": SLACK})
    assert [c.name for c in cfg.channels] == ["slack", "mail", "live"]
    assert [c.name for c in cfg.enabled_channels] == ["live"]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "channel 'slack' has no URL (set MONITOR_SLACK_URL?) and is disabled; alerts are still recorded",
        "channel 'mail' has no URL and is disabled; alerts are still recorded",
    ]


def test_database_url_env_override_and_relative_sqlite_path_kept():
    write("cfg.yaml", "database:\n  url: sqlite:///relative/dir/monitor.db\n")
    assert load_config("cfg.yaml", env={}).database.url == "sqlite:///relative/dir/monitor.db"
    assert load_config("cfg.yaml", env={"MONITOR_DATABASE_URL": ""}).database.url == \
        "sqlite:///relative/dir/monitor.db"
    pg = "postgresql+psycopg://monitor:s3cret@db.example/monitor"
    assert load_config("cfg.yaml", env={"MONITOR_DATABASE_URL": pg}).database.url == pg


def test_summarize_lists_everything_and_masks_the_password():
    write("cfg.yaml", f"""
        database:
          url: postgresql+psycopg://monitor:s3cret@db.example/monitor
        sources:
          - {{name: wire, url: "https://wire.example/", interval: 5m}}
          - {{name: old, url: "https://old.example/", enabled: false}}
        watchlists:
          - {{name: missiles, query: missile}}
        channels:
          - {{name: slack, url: "{SLACK}", watchlists: [missiles]}}
          - {{name: mail, url: ""}}
    """)
    text = summarize(load_config("cfg.yaml", env={}))
    assert "s3cret" not in text
    assert "postgresql+psycopg://monitor:***@db.example/monitor" in text
    for fragment in ("sources: 2 (1 enabled)", "wire: every 5m", "old: every 15m, disabled",
                     "watchlists: 1", "missiles", "channels: 2 (1 enabled)",
                     "slack: enabled; missiles", "mail: disabled (no URL); all watchlists"):
        assert fragment in text, fragment


def test_include_relative_to_a_directory_with_glob_characters_in_its_name():
    write("conf[1]/cfg.yaml", "include: [named.yaml, 'parts/*.yaml']\n")
    write("conf[1]/named.yaml", "sources:\n  - {name: a, url: 'https://a.example/'}\n")
    write("conf[1]/parts/p.yaml", "sources:\n  - {name: b, url: 'https://b.example/'}\n")
    assert [s.name for s in load_config("conf[1]/cfg.yaml", env={}).sources] == ["a", "b"]


def test_interpolation_problem_is_reported_once():
    write("cfg.yaml", """
        channels:
          - name: c
            url: "${A:-${B}}"
    """)
    # only the interpolation problem: the broken URL is not also sent to the URL check
    assert errors() == ["cfg.yaml:3: channels[0].url: nested reference in the default of ${A:-...} is not supported"]


# --------------------------------------------------------------------------- aliases


def test_watchlist_aliases_shared_aliases_from_an_included_file_and_override():
    write("cfg.yaml", """
        include: lists/*.yaml
        aliases:
          launch: [launch*, test-fire*]
        watchlists:
          - name: korea
            query: "@dprk NEAR/5 @launch"
            aliases:
              dprk: ["North Korea", DPRK, Pyongyang, "Kim Jong Un"]
          - name: iran
            query: "@iran"
    """)
    write("lists/shared.yaml", """
        aliases:
          iran: [Iran, Tehran]
          dprk: [Korea]
    """)
    cfg = load_config("cfg.yaml", env={})
    assert cfg.aliases == {"launch": ["launch*", "test-fire*"], "iran": ["Iran", "Tehran"], "dprk": ["Korea"]}
    korea = cfg.watchlists[0]
    assert korea.aliases == {"dprk": ["North Korea", "DPRK", "Pyongyang", "Kim Jong Un"]}
    assert cfg.aliases_for(korea)["dprk"][0] == "North Korea"  # own alias overrides the shared one
    from monitor.matcher import Matcher

    m = Matcher(cfg.matcher_watchlists())
    assert [h.name for h in m.match("Pyongyang test-fires a rocket", "")] == ["korea"]
    assert [h.name for h in m.match("South Korea launches", "")] == []
    assert [h.name for h in m.match("Tehran", "")] == ["iran"]


def test_unknown_alias_is_an_error_with_file_line_watchlist_alias_and_column():
    write("cfg.yaml", """
        aliases:
          dprk: [DPRK]
        watchlists:
          - name: ok
            query: "@dprk"
          - name: probe
            query: missile AND @iran
    """)
    (msg,) = errors()
    first, query_line, caret_line = msg.split("\n")
    assert first == ("cfg.yaml:7: watchlists[1].query: watchlist 'probe': unknown alias '@iran' "
                     "at column 13")
    assert query_line == "missile AND @iran"
    assert caret_line == " " * 12 + "^"


def test_another_watchlists_alias_is_not_visible():
    write("cfg.yaml", """
        watchlists:
          - name: a
            query: "@x"
            aliases: {x: [foo]}
          - name: b
            query: "@x"
    """)
    assert errors() == ["cfg.yaml:6: watchlists[1].query: watchlist 'b': unknown alias '@x' (no aliases are defined) at column 1\n@x\n^"]


def test_duplicate_shared_alias_across_files_names_both_places():
    write("cfg.yaml", """
        include: more.yaml
        aliases:
          dprk: [DPRK]
    """)
    write("more.yaml", """
        aliases:
          other: [x]
          dprk: [Pyongyang]
    """)
    assert errors() == [
        "more.yaml:3: aliases.dprk: duplicate shared alias 'dprk' (first defined at cfg.yaml:3)",
    ]


def test_bad_alias_definitions():
    write("cfg.yaml", """
        aliases:
          good: [ok]
          empty: []
          "-bad": [x]
          notlist: word
        watchlists:
          - name: w
            query: "@good"
            aliases:
              star: ["a", "*"]
    """)
    assert errors() == [
        "cfg.yaml:3: aliases.empty: alias 'empty' has no entries",
        "cfg.yaml:4: aliases.-bad: alias names may contain only letters, digits, '_', '.' and '-', "
        "and must not start with '.' or '-' (got '-bad')",
        "cfg.yaml:5: aliases.notlist: should be a list, not a string",
        "cfg.yaml:10: watchlists[0].aliases.star[1]: alias 'star': '*' is not a term: "
        "a lone '*' is not a term; put it at the end of a word, e.g. launch*",
    ]


def test_aliases_must_be_a_mapping():
    write("cfg.yaml", """
        aliases: [a, b]
    """)
    assert errors() == ["cfg.yaml:1: aliases: should be a mapping of alias names to lists of terms, not a list"]


# --------------------------------------------------------------------------- scoring keys


def test_watchlist_scoring_keys_defaults_and_specs():
    write("cfg.yaml", """
        aliases:
          dprk: ["North Korea", DPRK]
        watchlists:
          - name: plain
            query: missile
          - name: scored
            query: "@dprk"
            signals:
              - query: missile* NEAR/5 launch*
                weight: 2.5
              - query: title:ICBM
              - {query: '"will deploy" OR "plans to"', weight: -1.5}
            exclude: ["video game", "@dprk AND football"]
            min_score: 3
            title_weight: 1.5
            severity: critical
          - name: signals-only
            signals: [{query: nuclear test, weight: 1}]
            severity: info
        channels:
          - {name: pager, url: "", min_severity: critical}
          - {name: all, url: ""}
    """)
    cfg = load_config("cfg.yaml", env={})
    plain, scored, only = cfg.watchlists
    assert (plain.signals, plain.exclude, plain.min_score, plain.title_weight, plain.severity) == ([], [], 1.0, 2.0, "high")
    assert [(s.query, s.weight) for s in scored.signals] == [
        ("missile* NEAR/5 launch*", 2.5), ("title:ICBM", 1.0), ('"will deploy" OR "plans to"', -1.5)]
    assert only.query is None
    assert [c.min_severity for c in cfg.channels] == ["critical", "info"]
    from monitor.model import Signal, WatchlistSpec

    specs = cfg.matcher_watchlists()
    assert specs[0] == WatchlistSpec("plain", "missile", {"dprk": ["North Korea", "DPRK"]})
    assert specs[1] == WatchlistSpec(
        "scored", "@dprk", {"dprk": ["North Korea", "DPRK"]},
        signals=(Signal("missile* NEAR/5 launch*", 2.5), Signal("title:ICBM", 1.0),
                 Signal('"will deploy" OR "plans to"', -1.5)),
        exclude=("video game", "@dprk AND football"), min_score=3.0, title_weight=1.5, severity="critical")
    assert (specs[2].query, specs[2].signals, specs[2].severity) == (None, (Signal("nuclear test"),), "info")
    assert cfg.watchlist("scored") is scored and cfg.watchlist("nope") is None


def test_channel_accepts_hits_by_watchlist_and_min_severity():
    from monitor.config import ChannelConfig
    from monitor.model import WatchlistHit

    def hit(name: str, severity: str) -> WatchlistHit:
        return WatchlistHit(name, 1.0, (), severity)

    pager = ChannelConfig(name="pager", min_severity="high", watchlists=["a", "b"])
    assert [pager.accepts(h) for h in (hit("a", "info"), hit("a", "high"), hit("b", "critical"),
                                       hit("c", "critical"))] == [False, True, True, False]
    everything = ChannelConfig(name="all")
    assert all(everything.accepts(hit("x", s)) for s in ("info", "high", "critical"))


def test_watchlist_needs_a_query_or_signals():
    write("cfg.yaml", """
        watchlists:
          - name: ok
            signals: [{query: missile}]
          - name: empty
            description: forgot the query
    """)
    assert errors() == ["cfg.yaml:4: watchlists[1]: watchlist 'empty' needs a 'query', 'signals', or both "
                        "(it would never fire)"]


def test_bad_scoring_values_name_file_line_and_key():
    write("cfg.yaml", """
        watchlists:
          - name: probe
            query: missile
            min_score: 0
            title_weight: 0.5
            severity: hgh
            signals:
              - query: launch
                weight: yes
              - {query: test, weight: 0}
              - {qury: x}
              - {query: "   "}
              - launch
            exclude: ["video game", ""]
          - name: inf
            query: x
            min_score: .inf
        channels:
          - {name: c, url: "", min_severity: loud}
    """)
    assert errors() == [
        "cfg.yaml:4: watchlists[0].min_score: should be greater than 0 (got 0)",
        "cfg.yaml:5: watchlists[0].title_weight: should be greater than or equal to 1 (got 0.5)",
        "cfg.yaml:6: watchlists[0].severity: should be 'info', 'high' or 'critical' (got 'hgh')",
        "cfg.yaml:9: watchlists[0].signals[0].weight: should be a number (got true)",
        "cfg.yaml:10: watchlists[0].signals[1].weight: should not be 0 (a positive weight adds points, "
        "a negative one takes them off; remove a signal that should not count)",
        "cfg.yaml:11: watchlists[0].signals[2].query: required, but missing",
        "cfg.yaml:11: watchlists[0].signals[2].qury: unknown key (did you mean 'query'?)",
        "cfg.yaml:12: watchlists[0].signals[3].query: query must not be empty",
        "cfg.yaml:13: watchlists[0].signals[4]: should be a mapping of keys, not a string",
        "cfg.yaml:14: watchlists[0].exclude[1]: must not be empty",
        "cfg.yaml:17: watchlists[1].min_score: should be a finite number (got inf)",
        "cfg.yaml:19: channels[0].min_severity: should be 'info', 'high' or 'critical' (got 'loud')",
    ]


def test_signal_and_exclude_queries_are_checked_like_the_query():
    write("cfg.yaml", """
        aliases:
          dprk: [DPRK]
        watchlists:
          - name: ok
            query: missile
          - name: probe
            query: missile
            signals:
              - query: launch
              - query: launch AND (test
                weight: 2
            exclude:
              - video game
              - NOT football
              - "@iran"
    """)
    msgs = errors()
    assert len(msgs) == 3, msgs
    first, query_line, caret_line = msgs[0].split("\n")
    m = re.fullmatch(r"cfg\.yaml:10: watchlists\[1\]\.signals\[1\]\.query: watchlist 'probe': .+ at column (\d+)", first)
    assert m, first
    assert query_line == "launch AND (test" and caret_line == " " * (int(m.group(1)) - 1) + "^"
    first, query_line, caret_line = msgs[1].split("\n")
    assert first.startswith("cfg.yaml:14: watchlists[1].exclude[1]: watchlist 'probe': ")
    assert first.endswith("at column 1") and query_line == "NOT football" and caret_line == "^"
    assert msgs[2].split("\n") == [
        "cfg.yaml:15: watchlists[1].exclude[2]: watchlist 'probe': unknown alias '@iran' at column 1",
        "@iran", "^"]


def test_summary_shows_severity_min_score_and_channel_min_severity():
    write("cfg.yaml", """
        watchlists:
          - {name: plain, query: missile}
          - name: scored
            signals: [{query: a}, {query: b, weight: 2}]
            exclude: [c]
            min_score: 2.5
            severity: critical
        channels:
          - {name: pager, url: "", min_severity: critical, watchlists: [scored]}
    """)
    text = summarize(load_config("cfg.yaml", env={}))
    for fragment in ("  - plain: severity high, min_score 1\n",
                     "  - scored: severity critical, min_score 2.5, 2 signals, 1 exclude\n",
                     "  - pager: disabled (no URL); scored; min_severity critical"):
        assert fragment in text + "\n", fragment
