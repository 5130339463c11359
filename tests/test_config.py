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
    column = int(m.group(1))  # the column in the file's line, which is shown
    assert query_line == "    query: missile AND (test"
    assert caret_line == " " * (column - 1) + "^"
    assert column == 24  # the unclosed '('


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


def test_commands_that_never_send_can_skip_the_channel_url_check():
    # monitor match / backtest load the config with check_channels=False: a channel URL Apprise
    # rejects does not stop a dry run, while everything else is still checked
    write("cfg.yaml", """
        watchlists:
          - name: missile-tests
            query: missile
        channels:
          - name: desk
            url: notaservice://nowhere
    """)
    cfg = load_config("cfg.yaml", env={}, check_channels=False)
    assert [c.name for c in cfg.channels] == ["desk"]
    assert len(errors()) == 1
    write("cfg.yaml", """
        watchlists:
          - name: missile-tests
            query: missile AND (
        channels:
          - name: desk
            url: notaservice://nowhere
    """)
    with pytest.raises(ConfigError) as info:
        load_config("cfg.yaml", env={}, check_channels=False)
    assert len(info.value.messages) == 1 and "missile-tests" in info.value.messages[0]


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
    for fragment in ("sources: 2 (1 enabled)", "wire: every 5m at first, then adapted within 2m-1h", "old: every 15m at first, then adapted within 2m-1h, disabled",
                     "watchlists: 1", "missiles", "channels: 2 (1 enabled)",
                     "slack: enabled; missiles", "mail: disabled (no URL); all watchlists"):
        assert fragment in text, fragment


def test_stories_keys_are_validated_and_summarised():
    write("cfg.yaml", "stories: {window: 3d, notify_on_repost: true}\n")
    cfg = load_config("cfg.yaml", env={})
    assert cfg.stories.window.days == 3 and cfg.stories.notify_on_repost
    assert "stories: reposts within 3d merge; one update when a new outlet" in summarize(cfg)
    assert "stories: reposts within 7d merge; no re-alert" in summarize(load_config(write("d.yaml", "{}\n"), env={}))
    for bad, key in (("stories: {window: 0s}\n", "stories.window"), ("stories: {windows: 3d}\n", "stories.windows"),
                     ("stories: {notify_on_repost: maybe}\n", "stories.notify_on_repost")):
        write("bad.yaml", bad)
        with pytest.raises(ConfigError) as e:
            load_config("bad.yaml", env={})
        assert any("bad.yaml:1" in m and key in m for m in e.value.messages), e.value.messages


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
                     "at column 24")
    assert query_line == "    query: missile AND @iran"
    assert caret_line == " " * 23 + "^"


def test_another_watchlists_alias_is_not_visible():
    write("cfg.yaml", """
        watchlists:
          - name: a
            query: "@x"
            aliases: {x: [foo]}
          - name: b
            query: "@x"
    """)
    assert errors() == ["cfg.yaml:6: watchlists[1].query: watchlist 'b': unknown alias '@x' (no aliases are defined) "
                        "at column 13\n    query: \"@x\"\n            ^"]


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
    assert query_line == "      - query: launch AND (test" and caret_line == " " * (int(m.group(1)) - 1) + "^"
    assert int(m.group(1)) == 27
    first, query_line, caret_line = msgs[1].split("\n")
    assert first.startswith("cfg.yaml:14: watchlists[1].exclude[1]: watchlist 'probe': ")
    assert first.endswith("at column 9") and query_line == "      - NOT football" and caret_line == " " * 8 + "^"
    assert msgs[2].split("\n") == [
        "cfg.yaml:15: watchlists[1].exclude[2]: watchlist 'probe': unknown alias '@iran' at column 10",
        '      - "@iran"', " " * 9 + "^"]


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


# --------------------------------------------------------------------------- query errors: file, line, column, caret

# (query, the message's start, the text at the error spot and how far into it the spot is)
BAD_QUERIES = {
    "unknown alias": ("missile AND @dprkk", "unknown alias '@dprkk' (did you mean '@dprk'?)", "@dprkk", 0),
    "empty OR group": ("missile OR ()", "empty parentheses", "()", 0),
    "empty group": ("()", "empty parentheses", "()", 0),
    "NEAR/0": ("missile NEAR/0 launch*", "NEAR distance must be a whole number from 1 to 100 (got '0')", "NEAR/0", 5),
    "bad regex": ("missile AND /(unclosed/", "bad regex: missing ), unterminated subpattern", "/(unclosed", 1),
    "NOT in a NEAR operand": ("(NOT test) NEAR/5 missile", "the left operand of NEAR/5 contains NOT: NEAR operands "
                              "may only be terms, phrases, wildcards, @aliases or parenthesised OR-groups of those",
                              "NEAR/5", 0),
}

# how the query is written in the YAML file ({q}: the query; the block styles spread it over lines)
STYLES = {
    "plain": "query: {q}",
    "single-quoted": "query: '{q}'",
    "double-quoted": 'query: "{q}"',
    "literal block": "query: |\n  (launch* OR\n    test*)\n  AND {q}",
    "literal block, header comment": "query: |-  # a comment\n\n  launch* AND\n  {q}\n",
    "folded block": "query: >\n  (launch* OR\n  test*)\n  AND {q}",
    "flow mapping": '{{query: "{q}"}}',
}


def _position(text: str, spot: str, delta: int) -> tuple[int, int, str]:
    """(line, column, line text) of the ``delta``-th character of the one ``spot`` in ``text``."""
    assert text.count(spot) == 1, spot
    at = text.index(spot) + delta
    start = text.rfind("\n", 0, at) + 1
    return text.count("\n", 0, start) + 1, at - start + 1, text[start:text.index("\n", at)]


def _watchlist_file(entry: str) -> str:
    """A main file including watchlists/*.yaml, and watchlists/probe.yaml with one good and one
    bad watchlist (``entry`` is the bad one's keys, indented for the list item)."""
    write("cfg.yaml", "include: watchlists/*.yaml\n")
    body = ("# probe watchlists\naliases:\n  dprk: [DPRK, North Korea]\nwatchlists:\n"
            "  - name: good\n    query: missile\n  - name: probe\n" + textwrap.indent(entry, "    ") + "\n")
    Path("watchlists").mkdir(exist_ok=True)
    Path("watchlists/probe.yaml").write_text(body, encoding="utf-8")
    return body


@pytest.mark.parametrize("kind", BAD_QUERIES)
@pytest.mark.parametrize("style", STYLES)
def test_query_error_names_file_line_column_and_watchlist_in_every_yaml_style(kind, style):
    query, message, spot, delta = BAD_QUERIES[kind]
    entry = STYLES[style].format(q=query)
    if style == "flow mapping":
        body = _watchlist_file("")
        body = body.replace("  - name: probe\n", f"  - {{name: probe, {entry[1:-1]}}}\n")
        Path("watchlists/probe.yaml").write_text(body, encoding="utf-8")
    else:
        body = _watchlist_file(entry)
    line, column, source = _position(body, spot, delta)
    (msg,) = errors()
    assert msg.split("\n") == [
        f"watchlists/probe.yaml:{line}: watchlists[1].query: watchlist 'probe': {message} at column {column}",
        source,
        " " * (column - 1) + "^",
    ]


@pytest.mark.parametrize("kind", BAD_QUERIES)
@pytest.mark.parametrize("clause, entry", [
    ("signals[1].query", "query: missile\nsignals:\n  - query: launch*\n  - query: {q}\n    weight: 2"),
    ("signals[1].query", "query: missile\nsignals:\n  - {{query: launch*}}\n  - query: |\n      test*\n      OR ({q})"),
    ("signals[0].query", "signals:\n  - weight: 2\n    query: >-\n      test* AND\n      {q}\nmin_score: 2"),
    ("exclude[1]", "query: missile\nexclude:\n  - video game\n  - '{q}'"),
    ("exclude[0]", "query: missile\nexclude: [\"{q}\", video game]"),
    ("exclude[1]", "query: missile\nexclude:\n  - video game\n  - |\n    football\n    OR ({q})"),
])
def test_signal_and_exclude_errors_point_into_the_file(kind, clause, entry):
    query, message, spot, delta = BAD_QUERIES[kind]
    body = _watchlist_file(entry.format(q=query))
    line, column, source = _position(body, spot, delta)
    (msg,) = errors()
    assert msg.split("\n") == [
        f"watchlists/probe.yaml:{line}: watchlists[1].{clause}: watchlist 'probe': {message} at column {column}",
        source,
        " " * (column - 1) + "^",
    ]


def test_query_error_in_double_quotes_with_escapes_and_over_several_lines():
    body = _watchlist_file('query: "\\"ballistic missile\\" AND\n  \\t(launch* OR\n  ()) AND @iran"')
    msgs = errors()
    assert len(msgs) == 1
    line, column, source = _position(body, "())", 0)
    assert msgs[0].split("\n") == [
        f"watchlists/probe.yaml:{line}: watchlists[1].query: watchlist 'probe': empty parentheses at column {column}",
        source, " " * (column - 1) + "^"]
    body = _watchlist_file('query: "\\"ballistic\\x20missile\\" AND @iran"')
    line, column, source = _position(body, "@iran", 0)
    (msg,) = errors()
    assert msg.startswith(f"watchlists/probe.yaml:{line}: watchlists[1].query: watchlist 'probe': "
                          f"unknown alias '@iran' at column {column}\n")


def test_query_error_at_the_end_of_a_block_query_points_after_its_last_word():
    body = _watchlist_file("query: |\n  missile AND\n  (launch* OR test*) AND\n\nseverity: high")
    (msg,) = errors()
    line, column, source = _position(body, "test*) AND\n", len("test*) AND"))
    assert source == "      (launch* OR test*) AND" and column == len(source) + 1
    assert msg.split("\n") == [
        f"watchlists/probe.yaml:{line}: watchlists[1].query: watchlist 'probe': AND needs a term after it at column "
        f"{column - 3}", source, " " * (column - 4) + "^"]


def test_caret_lines_up_under_tabs_and_wide_characters():
    write("cfg.yaml", "watchlists:\n  - name: probe\n    query: 导弹 OR\tミサイル OR ()\n")
    (msg,) = errors()
    first, source, caret = msg.split("\n")
    assert first == "cfg.yaml:3: watchlists[0].query: watchlist 'probe': empty parentheses at column 26"
    assert source == "    query: 导弹 OR\tミサイル OR ()"
    assert caret == " " * 11 + "    " + "   \t" + "        " + "    " + "^"


def test_interpolated_query_error_falls_back_to_the_key_line_and_the_querys_column():
    write("cfg.yaml", """
        watchlists:
          - name: probe
            query: "missile AND ${EXTRA}"
    """)
    assert errors(env={"EXTRA": "(test"}) == [
        "cfg.yaml:3: watchlists[0].query: watchlist 'probe': missing closing parenthesis at column 13 of the query\n"
        "missile AND (test\n"
        "            ^"]


def test_query_errors_are_listed_in_line_order_with_other_errors():
    write("cfg.yaml", """
        sources:
          - {name: s, url: "ftp://nope"}
        watchlists:
          - name: a
            query: |
              missile
              AND ()
          - name: b
            description: ${NOPE}
            query: x NEAR/0 y
    """)
    msgs = errors()
    assert [m.split(":", 2)[:2] for m in msgs] == [["cfg.yaml", str(n)] for n in (2, 7, 9, 10)]
    assert msgs[1] == "cfg.yaml:7: watchlists[0].query: watchlist 'a': empty parentheses at column 11\n      AND ()\n" \
                      + " " * 10 + "^"
    assert msgs[2].startswith("cfg.yaml:9: watchlists[1].description: environment variable NOPE is not set")
    assert msgs[3].startswith("cfg.yaml:10: watchlists[1].query: watchlist 'b': NEAR distance must be")


def test_regex_is_not_an_alias_entry_in_the_config():
    write("cfg.yaml", """
        aliases:
          dprk: [DPRK, "/north ?korea/"]
        watchlists:
          - name: probe
            query: missile AND @dprk
    """)
    assert errors() == [
        "cfg.yaml:2: aliases.dprk[1]: alias 'dprk': '/north ?korea/' is not a term: a regex is not an alias "
        "entry (entries are terms or phrases; write the regex in the query itself)",
        "cfg.yaml:5: watchlists[0].query: watchlist 'probe': alias '@dprk': entry '/north ?korea/': a regex is "
        "not an alias entry (entries are terms or phrases; write the regex in the query itself) at column 24\n"
        "    query: missile AND @dprk\n" + " " * 23 + "^"]


def test_monitor_check_cli_reports_query_errors_with_exit_2(in_tmp):
    import subprocess
    import sys

    body = _watchlist_file("query: |\n  (missile* OR rocket*)\n  AND launch* NEAR/0 test\n"
                           "exclude:\n  - /(video/\n  - '@iran OR game'")
    monitor = Path(sys.executable).with_name("monitor")
    r = subprocess.run([str(monitor), "check", "--config", "cfg.yaml"], capture_output=True, text=True,
                       cwd=in_tmp, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    near_line, near_col, near_src = _position(body, "NEAR/0", 5)
    re_line, re_col, re_src = _position(body, "/(video", 1)
    alias_line, alias_col, alias_src = _position(body, "@iran", 0)
    assert r.stderr.splitlines() == [
        "configuration errors in cfg.yaml:",
        f"watchlists/probe.yaml:{near_line}: watchlists[1].query: watchlist 'probe': NEAR distance must be a whole "
        f"number from 1 to 100 (got '0') at column {near_col}",
        near_src, " " * (near_col - 1) + "^",
        f"watchlists/probe.yaml:{re_line}: watchlists[1].exclude[0]: watchlist 'probe': bad regex: missing ), "
        f"unterminated subpattern at column {re_col}",
        re_src, " " * (re_col - 1) + "^",
        f"watchlists/probe.yaml:{alias_line}: watchlists[1].exclude[1]: watchlist 'probe': unknown alias '@iran' "
        f"at column {alias_col}",
        alias_src, " " * (alias_col - 1) + "^",
    ]
    assert (near_line, near_col, re_line, re_col, alias_line, alias_col) == (10, 24, 12, 10, 13, 10)


@pytest.mark.parametrize("yaml_text", [
    # a plain scalar over several lines
    "watchlists:\n  - name: probe\n    query: missile\n      AND\n      ()\n",
    # an escaped line break in double quotes
    'watchlists:\n  - name: probe\n    query: "missile \\\n      AND ()"\n',
    # an explicit indentation indicator: the extra spaces are part of the value
    "watchlists:\n  - name: probe\n    query: |2\n         missile\n        AND ()\n",
    # a folded block with a more-indented line (kept as a line of its own)
    "watchlists:\n  - name: probe\n    query: >\n      missile\n        AND\n      ()\n",
    # tags and anchors before the value
    "watchlists:\n  - name: probe\n    query: !!str missile AND ()\n",
    "watchlists:\n  - name: probe\n    query: &q |\n      missile\n      AND ()\n",
    "watchlists:\n  - name: probe\n    query: &q\n      missile AND ()\n",
    # escapes in double quotes before the spot, and '' in single quotes
    'watchlists:\n  - name: probe\n    query: "\\u00e9t\\u00e9 \\"x\\" AND ()"\n',
    "watchlists:\n  - name: probe\n    query: '\"it''s\" AND ()'\n",
    # a regex with a $ (not an interpolation) and a comment after the value
    "watchlists:\n  - name: probe\n    query: /\\$\\d+/ AND ()  # wrong\n",
], ids=["plain multi-line", "escaped break", "indent indicator", "folded more-indented", "tag", "anchored block",
        "anchored plain", "double-quoted escapes", "single-quoted quote", "dollar and comment"])
def test_query_error_position_in_other_yaml_spellings(yaml_text):
    write("cfg.yaml", yaml_text)
    line, column, source = _position(yaml_text, "()", 0)
    assert errors() == [f"cfg.yaml:{line}: watchlists[0].query: watchlist 'probe': empty parentheses at column "
                        f"{column}\n{source}\n{' ' * (column - 1)}^"]


def test_query_used_through_a_yaml_alias_is_shown_where_it_is_written():
    write("cfg.yaml", """
        x-queries:
          broken: &broken "missile AND ()"
        watchlists:
          - name: a
            query: *broken
    """)
    assert errors() == ["cfg.yaml:2: watchlists[0].query: watchlist 'a': empty parentheses at column 32\n"
                        '  broken: &broken "missile AND ()"\n' + " " * 31 + "^"]


def test_query_error_position_with_windows_line_ends_and_a_byte_order_mark(in_tmp):
    (in_tmp / "cfg.yaml").write_bytes(b"\xef\xbb\xbfwatchlists:\r\n  - name: probe\r\n    query: |\r\n"
                                      b"      missile\r\n      AND ()\r\n")
    assert errors() == ["cfg.yaml:5: watchlists[0].query: watchlist 'probe': empty parentheses at column 11\n"
                        "      AND ()\n" + " " * 10 + "^"]


def test_query_changed_by_a_dollar_escape_falls_back_to_the_querys_column():
    write("cfg.yaml", """
        watchlists:
          - name: probe
            query: "$$x AND ()"
    """)
    assert errors() == ["cfg.yaml:3: watchlists[0].query: watchlist 'probe': empty parentheses at column 8 of the "
                        "query\n$x AND ()\n       ^"]


def test_the_readme_example_of_a_query_error():
    write("config/monitor.yaml", "include: watchlists/*.yaml\n")
    write("config/watchlists/x.yaml", """
        watchlists:
          - name: x
            query: "@missile NEAR/5 @misile"
            aliases:
              missile: [missile*]
    """)
    assert errors("config/monitor.yaml") == [
        "config/watchlists/x.yaml:3: watchlists[0].query: watchlist 'x': unknown alias '@misile' (did you mean "
        "'@missile'?) at column 29\n"
        '    query: "@missile NEAR/5 @misile"\n'
        "                            ^"]


# --------------------------------------------------------------------------- delivery control (issue 5)

DELIVERY_BASE = """
    sources: [{name: wire, url: "http://127.0.0.1/w.xml"}, {name: kcna-en, url: "http://127.0.0.1/k.xml"}]
    watchlists: [{name: missile-tests, query: missile, severity: critical}, {name: deployments, query: carrier}]"""


def test_digest_rate_limit_routes_and_delivery_keys_are_read():
    write("cfg.yaml", DELIVERY_BASE + """
    channels:
      - {name: daily, url: "json://127.0.0.1/d", mode: digest, every: "0 8 * * 1-5", timezone: Europe/Paris}
      - {name: pager, url: "json://127.0.0.1/p", max_per_hour: 10}
      - {name: admin, url: "json://127.0.0.1/a"}
    routes:
      - match: {severity: critical, source: "kcna-*"}
        channels: pager
        continue: true
      - channels: [daily]
    delivery: {max_attempts: 5, max_age: 12h}
    alerts: {source_alert_after: 2h}
    """)
    cfg = load_config("cfg.yaml", env={})
    daily, pager, admin = cfg.channels
    assert (daily.mode, daily.every, daily.timezone) == ("digest", "0 8 * * 1-5", "Europe/Paris")
    assert (pager.mode, pager.max_per_hour) == ("instant", 10)
    assert cfg.admin_channel is admin and not admin.wants("missile-tests")
    assert cfg.routes[0].continue_ and cfg.routes[0].channels == ["pager"]
    assert (cfg.delivery.max_attempts, cfg.delivery.max_age) == (5, timedelta(hours=12))
    assert cfg.alerts.source_alert_after == timedelta(hours=2)
    from monitor.model import WatchlistHit

    crit, info = WatchlistHit("missile-tests", 1, (), "critical"), WatchlistHit("deployments", 1, (), "high")
    assert cfg.route(crit, "kcna-en") == ["pager", "daily"]
    assert cfg.route(crit, "wire") == ["daily"]
    assert cfg.route(info, "kcna-en") == ["daily"]
    text = summarize(cfg)
    assert "digest cron '0 8 * * 1-5' (Europe/Paris)" in text and "at most 10 messages/hour" in text
    assert "operator notices only" in text and "routes: 2" in text


def test_routes_without_a_match_for_a_hit_fall_back_to_every_channel():
    write("cfg.yaml", DELIVERY_BASE + """
    channels: [{name: a, url: "json://127.0.0.1/a"}, {name: b, url: "json://127.0.0.1/b"}]
    routes: [{match: {watchlist: deployments}, channels: [a]}]
    """)
    cfg = load_config("cfg.yaml", env={})
    from monitor.model import WatchlistHit

    assert cfg.route(WatchlistHit("deployments", 1), "wire") == ["a"]
    assert cfg.route(WatchlistHit("missile-tests", 1), "wire") == ["a", "b"]


def test_a_route_whose_channels_take_none_of_its_watchlists_is_a_warning_naming_its_line(caplog):
    """Hits routed only to channels that refuse them would be delivered nowhere, silently."""
    write("cfg.yaml", DELIVERY_BASE + """
    channels:
      - {name: admin, url: "json://127.0.0.1/a"}
      - {name: desk, url: "json://127.0.0.1/d", watchlists: [missile-tests]}
      - {name: pager, url: "json://127.0.0.1/p"}
    routes:
      - match: {severity: critical}
        channels: [admin]
      - match: {watchlist: deployments}
        channels: [desk]
        continue: true
      - match: {watchlist: deployments}
        channels: [desk, pager]
      - match: {source: wire}
        channels: []
    """)
    with caplog.at_level(logging.WARNING, logger="monitor.config"):
        load_config("cfg.yaml", env={})
    assert [r.getMessage() for r in caplog.records] == [
        "cfg.yaml:9: routes[0]: none of its channels takes the watchlists it matches (missile-tests, "
        "deployments; 'admin' takes only the watchlists it names (none)): their hits are delivered nowhere "
        "and no later route sees them",
        "cfg.yaml:11: routes[1]: none of its channels takes the watchlists it matches (deployments; 'desk' "
        "takes missile-tests): their hits are delivered nowhere",
    ]


def test_bad_delivery_keys_name_file_line_and_key():
    write("cfg.yaml", DELIVERY_BASE + """
    channels:
      - {name: d1, url: "json://127.0.0.1/d", mode: digest}
      - {name: d2, url: "json://127.0.0.1/d", mode: digest, every: "0 8 * *"}
      - {name: d3, url: "json://127.0.0.1/d", mode: digest, every: 1h, timezone: Mars/Olympus}
      - {name: i1, url: "json://127.0.0.1/i", every: 1h}
      - {name: i2, url: "json://127.0.0.1/i", max_per_hour: 0}
    routes:
      - match: {watchlist: missle-tests, source: [wire, kcna-*, tass]}
        channels: [d1, pagr]
    """)
    msgs = errors()
    text = "\n".join(msgs)
    assert re.search(r"cfg\.yaml:4: channels\[0\]: .*mode: digest needs 'every'", text)
    assert re.search(r"cfg\.yaml:5: channels\[1\]\.every: .*Wrong number of fields", text)
    assert re.search(r"cfg\.yaml:6: channels\[2\]\.timezone: .*unknown time zone 'Mars/Olympus'", text)
    assert re.search(r"cfg\.yaml:7: channels\[3\]: .*'every' only applies to mode: digest", text)
    assert re.search(r"cfg\.yaml:8: channels\[4\]\.max_per_hour: ", text)
    assert re.search(r"cfg\.yaml:10: routes\[0\]\.match\.watchlist: unknown watchlist 'missle-tests' "
                     r"\(did you mean 'missile-tests'\?\)", text)
    assert re.search(r"cfg\.yaml:10: routes\[0\]\.match\.source\[2\]: unknown source 'tass'", text)
    assert re.search(r"cfg\.yaml:11: routes\[0\]\.channels\[1\]: unknown channel 'pagr'", text)
    write("cfg.yaml", DELIVERY_BASE + """
    delivery: {max_attempts: 0, max_age: 0s}
    """)
    text = "\n".join(errors())
    assert re.search(r"cfg\.yaml:3: delivery\.max_attempts: should be greater than or equal to 1", text)
    assert re.search(r"cfg\.yaml:3: delivery\.max_age: must be longer than 0", text)


def test_channel_template_is_resolved_against_its_file_and_checked(in_tmp):
    write("conf/tpl/ok.j2", "{{ alerts[0].title }}\n")
    write("conf/tpl/bad.j2", "line one\n{% if %}\n")
    write("conf/cfg.yaml", DELIVERY_BASE + """
    channels:
      - {name: good, url: "json://127.0.0.1/a", template: tpl/ok.j2}
    """)
    cfg = load_config("conf/cfg.yaml", env={})
    assert cfg.channels[0].template == str(in_tmp / "conf/tpl/ok.j2")
    write("conf/cfg.yaml", DELIVERY_BASE + """
    channels:
      - {name: broken, url: "json://127.0.0.1/a", template: tpl/bad.j2}
      - {name: missing, url: "json://127.0.0.1/a", template: tpl/nope.j2}
    """)
    text = "\n".join(errors("conf/cfg.yaml"))
    assert re.search(r"conf/cfg\.yaml:4: channels\[0\]\.template: channel 'broken': template .*bad\.j2: .*2", text)
    assert re.search(r"conf/cfg\.yaml:5: channels\[1\]\.template: channel 'missing': template .*nope\.j2: ", text)


def test_replica_lease_must_outlive_three_heartbeats():
    write("cfg.yaml", """
        replicas:
          lease: 20s
          heartbeat: 10s
    """)
    (message,) = errors()
    assert message == ("cfg.yaml:1: replicas: lease (20s) must be at least 3 heartbeats (30s): "
                       "a replica that misses one heartbeat must not lose its work")
