"""Configuration: YAML files -> validated pydantic models. Nothing else in the product reads YAML.

Rules:
- The main file may ``include:`` globs (relative to the including file, or absolute); each
  included file may add ``sources``, ``watchlists`` and ``channels`` (and include more files).
  Matches are read in sorted order, each file once; a glob matching nothing is a warning, a
  plain file name (no ``*?[``) that does not exist is an error, and an include cycle is an error.
- ``${VAR}`` and ``${VAR:-default}`` are replaced in every string scalar before validation;
  ``$$`` is a literal ``$``. An unset ``${VAR}`` without default is an error. (``:-`` also
  applies the default when VAR is set but empty, as in the shell.)
- Every error names file, line and key (``config/monitor.yaml:12: sources[0].interval: ...``);
  all errors found are reported together as one ConfigError.
- After merging all files: source, watchlist and channel names are unique; a channel only names
  known watchlists; every watchlist query parses (``query``, each ``signals[i].query`` and each
  ``exclude[i]``, errors naming that key path); every non-empty channel URL is accepted by a
  notification service.
- A query that does not parse is reported at the line and column *of the file* where the bad
  spot is written, whatever the YAML spelling (plain, quoted with escapes, ``|`` or ``>``
  blocks over several lines, flow style, behind an anchor or a tag), followed by that line of
  the file and a caret under the spot: ``file:line: watchlists[i].query: watchlist 'name':
  problem at column N``. A query that ``${VAR}`` interpolation changed is not in the file as
  written: it is reported at its key's line, with the query and its own column ("at column N
  of the query").
- A watchlist has a ``query`` (required clause), ``signals`` (weighted optional clauses;
  a weight is any finite number but 0, negative ones being penalties), or both; ``exclude``
  queries veto; ``min_score`` > 0, ``title_weight`` >= 1, ``severity`` one of
  ``info``/``high``/``critical`` (scoring rules: :class:`~monitor.model.WatchlistSpec`). A
  channel's ``min_severity`` (default ``info``) and ``watchlists`` filter the hits it is told
  about (:meth:`ChannelConfig.accepts`).
- A channel whose URL comes out empty is disabled (one warning), so the shipped config runs
  with no secrets set.
- Aliases for ``@name`` in queries: a watchlist's own ``aliases: {dprk: [North Korea, DPRK]}``,
  and shared ones in a top-level ``aliases:`` mapping of the main file or of any included
  file (merged; the same shared name in two places is an error naming both). A watchlist's
  own alias overrides a shared one of the same name. Alias names are letters, digits, ``_``,
  ``.`` and ``-``; each entry is a term or phrase, optionally ending in ``*``. An unknown
  ``@alias`` in a query is an error naming file, line, watchlist, alias and column.
- Top-level keys starting with ``x-`` are ignored in every file: a place for ``&anchors`` that
  entries merge with ``<<: *anchor``.
- ``MONITOR_DATABASE_URL`` (when set and non-empty) overrides ``database.url``; relative SQLite
  paths stay relative to the working directory.
"""
from __future__ import annotations

import difflib
import fnmatch
import glob
import logging
import os
import re
import types
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .durations import format_duration, parse_duration
from .model import DEFAULT_SEVERITY, SEVERITIES, Signal, WatchlistHit, WatchlistSpec
from .schedule import schedule_of, zone_of

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _positive(v: timedelta) -> timedelta:
    if v <= timedelta(0):
        raise ValueError("must be longer than 0")
    return v


PositiveDuration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_positive)]


def _poll_interval(v: timedelta) -> timedelta:
    if v < timedelta(seconds=10):
        raise ValueError("interval must be at least 10s")
    return v


#: A polling interval (a source's interval and min_interval, fetch.min_interval): 10s or more.
PollInterval = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_poll_interval)]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {None: 1, "b": 1, "kb": 10**3, "kib": 2**10, "mb": 10**6, "mib": 2**20, "gb": 10**9, "gib": 2**30}


def parse_size(value: str | int) -> int:
    """``20MB`` -> 20_000_000; ``512KiB``; bare numbers are bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"invalid size {value!r}: use bytes or a unit, like 512KB or 20MB")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower() if m.group(2) else None])


ByteSize = Annotated[int, BeforeValidator(parse_size)]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(Strict):
    url: str = "sqlite:///data/monitor.db"


class ServerConfig(Strict):
    """The HTTP endpoint for /healthz and /metrics. port 0 disables it."""

    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)


class FetchConfig(Strict):
    timeout: Duration = timedelta(seconds=30)
    connect_timeout: Duration = timedelta(seconds=10)
    read_timeout: Duration = timedelta(seconds=20)
    max_bytes: ByteSize = 20_000_000
    concurrency: int = Field(20, ge=1, le=1000)
    per_host: int = Field(6, ge=1, le=1000)  # requests in flight to one host at once
    host_delay: Duration = timedelta(0)  # least time between two requests to one host
    user_agent: str = "news-monitor/0.1 (+https://github.com/news-monitor; RSS alert daemon)"
    min_interval: PollInterval = timedelta(minutes=2)  # adaptive polling never goes faster than this ...
    max_interval: Duration = timedelta(hours=1)  # ... nor slower (failures back off up to it too)

    @model_validator(mode="after")
    def _interval_bounds(self) -> FetchConfig:
        if self.max_interval < self.min_interval:
            raise ValueError(f"max_interval ({self.max_interval}) is shorter than min_interval ({self.min_interval})")
        return self


class AlertsConfig(Strict):
    max_age: Duration = timedelta(days=3)
    source_alert_after: Duration = timedelta(hours=6)  # a source failing this long: a notice to admin


class StoriesConfig(Strict):
    """How reposts of one story are merged (see monitor.dedupe)."""

    window: PositiveDuration = timedelta(days=7)
    notify_on_repost: bool = False


class DeliveryConfig(Strict):
    retry_initial: Duration = timedelta(seconds=30)
    retry_max: Duration = timedelta(hours=1)
    timeout: Duration = timedelta(seconds=30)
    interval: Duration = timedelta(seconds=15)
    max_attempts: int = Field(20, ge=1)  # then the row is dead-lettered
    max_age: PositiveDuration = timedelta(days=2)  # in the outbox this long: dead-lettered at its next failure


class ReplicasConfig(Strict):
    """Several daemons on one PostgreSQL database share the work through leases."""

    lease: Duration = timedelta(seconds=60)  # a claimed source / channel is the holder's this long unrenewed
    heartbeat: Duration = timedelta(seconds=10)  # how often a replica says it lives (and renews its leases)
    claim_every: Duration = timedelta(seconds=1)  # how often a replica looks for due sources

    @model_validator(mode="after")
    def _lease_outlives_heartbeats(self) -> ReplicasConfig:
        if self.heartbeat < timedelta(seconds=1) or self.claim_every < timedelta(milliseconds=100):
            raise ValueError("heartbeat must be at least 1s and claim_every at least 100ms")
        if self.lease < 3 * self.heartbeat:
            raise ValueError(f"lease ({format_duration(self.lease)}) must be at least 3 heartbeats "
                             f"({format_duration(3 * self.heartbeat)}): a replica that misses one heartbeat "
                             "must not lose its work")
        return self


class LoggingConfig(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class SourceConfig(Strict):
    name: str = Field(min_length=1)
    url: str
    interval: PollInterval = timedelta(minutes=15)  # the first interval; then adapted (see monitor.polling)
    min_interval: PollInterval | None = None  # default: fetch.min_interval
    max_interval: Duration | None = None  # default: fetch.max_interval
    enabled: bool = True
    full_text: bool = False  # fetch each new item's page and use its main text (monitor.fulltext)
    source_alert_after: Duration | None = None  # this source's alerts.source_alert_after

    @model_validator(mode="after")
    def _bounds(self) -> SourceConfig:
        if self.min_interval is not None and self.max_interval is not None and self.max_interval < self.min_interval:
            raise ValueError(f"source '{self.name}': max_interval is shorter than min_interval")
        return self

    def bounds(self, fetch: FetchConfig) -> tuple[timedelta, timedelta]:
        """(min, max) polling interval of this source."""
        lo = self.min_interval or fetch.min_interval
        hi = self.max_interval or max(fetch.max_interval, lo)
        return lo, max(lo, hi)

    def first_interval(self, fetch: FetchConfig) -> timedelta:
        """``interval`` within this source's bounds: where adaptive polling starts."""
        lo, hi = self.bounds(fetch)
        return max(lo, min(hi, self.interval))

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"source url must start with http:// or https:// (got {v!r})")
        return v



def _not_bool(value: Any) -> Any:
    """Numbers only: YAML's ``yes``/``true`` must not silently become 1.0."""
    if isinstance(value, bool):
        raise ValueError(f"should be a number (got {str(value).lower()})")
    return value


Number = Annotated[float, BeforeValidator(_not_bool)]
Severity = Literal["info", "high", "critical"]  # the order of model.SEVERITIES, lowest first


def _strip_query_text(v: str, what: str = "query") -> str:
    # A folded block (``query: >``) ends with a newline; keep error columns on the text itself.
    v = v.strip()
    if not v:
        raise ValueError(f"{what} must not be empty")
    return v


class SignalConfig(Strict):
    """One optional weighted clause of a watchlist: ``{query: ..., weight: 1.5}``. A negative
    weight takes points off (a penalty: "will deploy", "plans to"); zero is an error."""

    query: str = Field(min_length=1)
    weight: Number = Field(1.0, allow_inf_nan=False)

    @field_validator("query")
    @classmethod
    def _strip_query(cls, v: str) -> str:
        return _strip_query_text(v)

    @field_validator("weight")
    @classmethod
    def _nonzero(cls, v: float) -> float:
        if v == 0:
            raise ValueError("should not be 0 (a positive weight adds points, a negative one takes them off; "
                             "remove a signal that should not count)")
        return v


class WatchlistConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    query: str | None = Field(None, min_length=1)
    description: str | None = None
    aliases: dict[str, list[str]] | None = None
    signals: list[SignalConfig] = []
    exclude: list[Annotated[str, Field(min_length=1)]] = []
    min_score: Number = Field(1.0, gt=0, allow_inf_nan=False)
    title_weight: Number = Field(2.0, ge=1, allow_inf_nan=False)
    severity: Severity = DEFAULT_SEVERITY

    @field_validator("query")
    @classmethod
    def _strip_query(cls, v: str | None) -> str | None:
        return None if v is None else _strip_query_text(v)

    @field_validator("exclude")
    @classmethod
    def _strip_excludes(cls, v: list[str]) -> list[str]:
        return [_strip_query_text(q, "an exclude query") for q in v]

    @model_validator(mode="after")
    def _query_or_signals(self) -> WatchlistConfig:
        if self.query is None and not self.signals:
            raise ValueError(f"watchlist '{self.name}' needs a 'query', 'signals', or both "
                             "(it would never fire)")
        return self

    def spec(self, aliases: Mapping[str, list[str]]) -> WatchlistSpec:
        return WatchlistSpec(
            name=self.name, query=self.query, aliases=aliases,
            signals=tuple(Signal(s.query, s.weight) for s in self.signals),
            exclude=tuple(self.exclude), min_score=self.min_score, title_weight=self.title_weight,
            severity=self.severity,
        )


def severity_rank(severity: str) -> int:
    """Position in :data:`~monitor.model.SEVERITIES` (unknown severities rank as the default)."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        return SEVERITIES.index(DEFAULT_SEVERITY)


def _one_or_many(value: Any) -> Any:
    """``watchlist: x`` means ``watchlist: [x]``."""
    return [value] if isinstance(value, str) else value


OneOrMany = Annotated[list[str], BeforeValidator(_one_or_many)]


class RouteMatch(Strict):
    """What a route matches (every key given must match; none given matches everything):
    the hit's watchlist, its severity (one of a list, or at least ``min_severity``) and the
    item's source (names or shell-style patterns such as ``kcna-*``)."""

    watchlist: OneOrMany | None = None
    severity: Annotated[list[Severity], BeforeValidator(_one_or_many)] | None = None
    min_severity: Severity | None = None
    source: OneOrMany | None = None

    def matches(self, hit: WatchlistHit, source: str) -> bool:
        if self.watchlist is not None and hit.name not in self.watchlist:
            return False
        if self.severity is not None and hit.severity not in self.severity:
            return False
        if self.min_severity is not None and severity_rank(hit.severity) < severity_rank(self.min_severity):
            return False
        return self.source is None or any(fnmatch.fnmatchcase(source, p) for p in self.source)


class RouteConfig(Strict):
    """One entry of ``routes:``: hits it matches go to its ``channels``; the walk stops at the
    first matching route unless it says ``continue: true`` (Alertmanager's semantics)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    match: RouteMatch = RouteMatch()
    channels: OneOrMany
    continue_: bool = Field(False, alias="continue")


#: The channel that gets operator notices (dead letters, failing sources) and, unless it
#: names ``watchlists``, nothing else.
ADMIN_CHANNEL = "admin"


class ChannelConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    url: str = ""
    watchlists: list[str] | None = None
    min_severity: Severity = "info"
    mode: Literal["instant", "digest"] = "instant"
    every: str | None = None  # digest schedule: a duration ("1h") or a 5-field cron expression
    timezone: str = "UTC"  # of a cron ``every``
    max_per_hour: int | None = Field(None, ge=1)
    template: str | None = None  # a Jinja2 file; relative paths are resolved against the config file

    @field_validator("every")
    @classmethod
    def _every(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = " ".join(v.split())
        schedule_of(v, "UTC")  # raises ValueError with the reason
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        zone_of(v)
        return v

    @field_validator("template")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must name a template file (or leave the key out for the built-in one)")
        return v

    @model_validator(mode="after")
    def _mode_keys(self) -> ChannelConfig:
        if self.mode == "digest" and self.every is None:
            raise ValueError(f"channel '{self.name}': mode: digest needs 'every' (a duration like 1h, "
                             "or a cron expression like \"0 8 * * 1-5\")")
        if self.mode == "instant" and self.every is not None:
            raise ValueError(f"channel '{self.name}': 'every' only applies to mode: digest")
        if self.mode == "digest" and self.max_per_hour is not None:
            raise ValueError(f"channel '{self.name}': max_per_hour only applies to mode: instant "
                             "(a digest is one message per period)")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.url.strip())

    @property
    def is_admin(self) -> bool:
        return self.name == ADMIN_CHANNEL

    def wants(self, watchlist: str) -> bool:
        if self.watchlists is None:
            return not self.is_admin  # the admin channel gets alerts only for watchlists it names
        return watchlist in self.watchlists

    def accepts(self, hit: WatchlistHit) -> bool:
        """Whether this channel is told about ``hit``: one of its watchlists, severe enough."""
        return self.wants(hit.name) and severity_rank(hit.severity) >= severity_rank(self.min_severity)


class Config(Strict):
    database: DatabaseConfig = DatabaseConfig()
    server: ServerConfig = ServerConfig()
    fetch: FetchConfig = FetchConfig()
    alerts: AlertsConfig = AlertsConfig()
    stories: StoriesConfig = StoriesConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    replicas: ReplicasConfig = ReplicasConfig()
    logging: LoggingConfig = LoggingConfig()
    sources: list[SourceConfig] = []
    watchlists: list[WatchlistConfig] = []
    channels: list[ChannelConfig] = []
    routes: list[RouteConfig] = []
    aliases: dict[str, list[str]] = {}  # shared aliases, merged across all files
    path: Path | None = None  # the main file, set by load_config

    @property
    def enabled_channels(self) -> list[ChannelConfig]:
        return [c for c in self.channels if c.enabled]

    @property
    def admin_channel(self) -> ChannelConfig | None:
        """The enabled ``admin`` channel (operator notices), if any."""
        return next((c for c in self.enabled_channels if c.is_admin), None)

    def route(self, hit: WatchlistHit, source: str) -> list[str]:
        """The channels (enabled or not) a hit from ``source`` is routed to, before the
        channels' own filters: without ``routes``, every channel; with them, the channels of
        the first matching route (and of the following ones while a matching route says
        ``continue``); a hit no route matches goes to every channel, as without routes."""
        if not self.routes:
            return [c.name for c in self.channels]
        names: list[str] = []
        matched = False
        for r in self.routes:
            if r.match.matches(hit, source):
                matched = True
                names += [n for n in r.channels if n not in names]
                if not r.continue_:
                    break
        return names if matched else [c.name for c in self.channels]

    def channel_accepts(self, channel: ChannelConfig, hit: WatchlistHit, source: str) -> bool:
        """Whether ``channel`` is told about ``hit`` (from ``source``): routed to it, and
        accepted by its own ``watchlists`` and ``min_severity``."""
        return channel.accepts(hit) and channel.name in self.route(hit, source)

    def aliases_for(self, watchlist: WatchlistConfig) -> dict[str, list[str]]:
        """The aliases a watchlist's query sees: shared ones, overridden by its own."""
        return {**self.aliases, **(watchlist.aliases or {})}

    def matcher_watchlists(self) -> list[WatchlistSpec]:
        """Every watchlist as :class:`~monitor.matcher.Matcher` takes them, in config order."""
        return [w.spec(self.aliases_for(w)) for w in self.watchlists]

    def watchlist(self, name: str) -> WatchlistConfig | None:
        return next((w for w in self.watchlists if w.name == name), None)


class ConfigError(Exception):
    """One or more configuration problems; ``messages`` are ``file:line: key: problem`` lines."""

    def __init__(self, messages: list[str]):
        self.messages = messages
        super().__init__("\n".join(messages))



log = logging.getLogger("monitor.config")

Loc = tuple[str | int, ...]

_LISTS: dict[str, tuple[str, type[BaseModel]]] = {
    "sources": ("source", SourceConfig),
    "watchlists": ("watchlist", WatchlistConfig),
    "channels": ("channel", ChannelConfig),
}
_INCLUDE = "include"
_ALIASES = "aliases"
_OPML = "opml"
_INCLUDED_KEYS = (*_LISTS, _ALIASES, _INCLUDE)
# Keys a user may write at the top of the main file (``path`` is set by load_config).
_MAIN_KEYS = tuple(k for k in Config.model_fields if k != "path") + (_INCLUDE,)
_DATABASE_ENV = "MONITOR_DATABASE_URL"
_EXTENSION_PREFIX = "x-"  # top-level keys ignored by design, to hold YAML anchors (as in Compose files)


# --------------------------------------------------------------------------- problems


@dataclass(order=True)
class _Problem:
    order: int  # which file (in reading order) the problem is in; sorts messages like a compiler
    line: int
    seq: int
    text: str = field(compare=False)


class _Problems:
    def __init__(self) -> None:
        self.items: list[_Problem] = []

    def add(self, order: int, line: int, text: str) -> None:
        self.items.append(_Problem(order, line, len(self.items), text))

    def messages(self) -> list[str]:
        return [p.text for p in sorted(self.items)]


def _fmt_loc(loc: Loc) -> str:
    """('sources', 0, 'interval') -> 'sources[0].interval'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _describe(value: Any) -> str:
    """A short phrase for what the user wrote, for 'should be X, not Y' messages."""
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------- interpolation

# ``$$``, a well-formed ``${NAME}`` / ``${NAME:-default}``, or anything else starting ``${``.
_REF = re.compile(r"\$(?:(?P<dollar>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<default>:-[^}]*)?\}|(?P<bad>\{[^}]*\}?))")


def interpolate(text: str, env: Mapping[str, str]) -> tuple[str, list[str], list[str]]:
    """Replace ``${VAR}``, ``${VAR:-default}`` and ``$$`` in ``text``.

    Returns (result, names of the variables referenced, problems)."""
    names: list[str] = []
    problems: list[str] = []

    def replace(m: re.Match[str]) -> str:
        if m.group("dollar"):
            return "$"
        name = m.group("name")
        if name is None:
            problems.append(
                f"invalid reference '${m.group('bad')}': write ${{NAME}} or ${{NAME:-default}} "
                "(and $$ for a literal $)"
            )
            return m.group(0)
        names.append(name)
        default = m.group("default")
        value = env.get(name)
        if default is not None:
            default = default[2:]
            if "${" in default:
                problems.append(f"nested reference in the default of ${{{name}:-...}} is not supported")
            return value if value else default
        if value is None:
            problems.append(
                f"environment variable {name} is not set (use ${{{name}:-}} for an optional value)"
            )
            return ""
        return value

    return _REF.sub(replace, text), names, problems


# --------------------------------------------------------------------------- YAML reading

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAGS = ("tag:yaml.org,2002:seq", "tag:yaml.org,2002:omap", "tag:yaml.org,2002:pairs")
_MAP_TAGS = (_MAP_TAG, "tag:yaml.org,2002:set")


@dataclass
class _Doc:
    """One YAML file: its plain data, the line of every key / list element, and env references."""

    name: str  # the path as shown in messages
    order: int
    data: dict[str, Any]
    lines: dict[Loc, int]
    env_refs: dict[Loc, list[str]]
    bad_refs: set[Loc]  # strings whose interpolation failed: already reported, skip later checks
    text: str = ""  # the file's text, for pointing into it (see :func:`_source_position`)
    #: (offset of the scalar in ``text``, YAML style) of every string scalar that interpolation
    #: left as written (its value's characters can be found in ``text``)
    scalars: dict[Loc, tuple[int, str]] = field(default_factory=dict)

    def line(self, loc: Loc) -> int:
        """The line of the deepest key of ``loc`` that the file has (1 when none)."""
        for n in range(len(loc), 0, -1):
            line = self.lines.get(loc[:n])
            if line is not None:
                return line
        return 1


class _Builder:
    """Nodes -> plain Python data, recording lines, interpolating strings, reporting problems."""

    def __init__(self, loader: yaml.SafeLoader, name: str, order: int, env: Mapping[str, str],
                 problems: _Problems):
        self.loader = loader
        self.name = name
        self.order = order
        self.env = env
        self.problems = problems
        self.lines: dict[Loc, int] = {}
        self.env_refs: dict[Loc, list[str]] = {}
        self.bad_refs: set[Loc] = set()
        self.scalars: dict[Loc, tuple[int, str]] = {}
        self._active: set[int] = set()

    def error(self, node: Node, loc: Loc, text: str) -> None:
        line = node.start_mark.line + 1
        where = f"{_fmt_loc(loc)}: " if loc else ""
        self.problems.add(self.order, line, f"{self.name}:{line}: {where}{text}")

    def build(self, node: Node, loc: Loc) -> Any:
        if isinstance(node, ScalarNode):
            return self._scalar(node, loc)
        if id(node) in self._active:
            self.error(node, loc, "recursive YAML alias")
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return self._sequence(node, loc)
            if isinstance(node, MappingNode):
                return self._mapping(node, loc)
            return None
        finally:
            self._active.discard(id(node))

    def _scalar(self, node: ScalarNode, loc: Loc) -> Any:
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or str(e)
            if problem.startswith("could not determine a constructor for the tag"):
                problem = f"unsupported YAML tag {node.tag!r}"
            self.error(node, loc, problem)
            return None
        if isinstance(value, str):
            written = value
            value, names, problems = interpolate(value, self.env)
            if value == written:  # its characters are in the file (see _source_position)
                self.scalars[loc] = (node.start_mark.index, node.style or "")
            if names:
                self.env_refs[loc] = names
            for p in problems:
                self.error(node, loc, p)
            if problems:
                self.bad_refs.add(loc)
        return value

    def _sequence(self, node: SequenceNode, loc: Loc) -> list[Any] | None:
        if node.tag not in _SEQ_TAGS:
            self.error(node, loc, f"unsupported YAML tag {node.tag!r}")
            return None
        out = []
        for i, item in enumerate(node.value):
            self.lines[(*loc, i)] = item.start_mark.line + 1
            out.append(self.build(item, (*loc, i)))
        return out

    def _mapping(self, node: MappingNode, loc: Loc) -> dict[str, Any] | None:
        if node.tag not in _MAP_TAGS:
            self.error(node, loc, f"unsupported YAML tag {node.tag!r}")
            return None
        self._check_duplicate_keys(node, loc)
        try:
            self.loader.flatten_mapping(node)  # resolve ``<<: *anchor`` merge keys
        except yaml.YAMLError as e:
            self.error(node, loc, getattr(e, "problem", None) or str(e))
            return None
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.error(key_node, loc, "a key must be a plain name, not a list or mapping")
                continue
            key = key_node.value  # the text as written: ``yes:`` stays 'yes', ``1:`` stays '1'
            self.lines[(*loc, key)] = key_node.start_mark.line + 1
            out[key] = self.build(value_node, (*loc, key))
        return out

    def _check_duplicate_keys(self, node: MappingNode, loc: Loc) -> None:
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in seen:
                self.error(key_node, (*loc, key_node.value),
                           f"duplicate key (also set at line {seen[key_node.value]}; the last one would win)")
            else:
                seen[key_node.value] = line


def _syntax_error(name: str, text: str, e: yaml.YAMLError) -> tuple[int, str]:
    mark = getattr(e, "problem_mark", None)
    if isinstance(e, yaml.MarkedYAMLError) and mark is not None:
        line = mark.line + 1
        problem = e.problem or "invalid YAML"
        ctx_mark = e.context_mark
        if problem.startswith("but found another document"):
            problem = "a config file holds one YAML document; remove the second '---'"
        elif e.context and ctx_mark is not None and ctx_mark.line != mark.line:
            problem += f" ({e.context} at line {ctx_mark.line + 1})"
        return line, f"{name}:{line}: YAML syntax error: {problem}"
    if isinstance(e, yaml.reader.ReaderError):
        line = text.count("\n", 0, e.position) + 1
        return line, (f"{name}:{line}: YAML syntax error: unacceptable character "
                      f"#x{e.character if isinstance(e.character, int) else ord(e.character):04x}")
    return 1, f"{name}:1: YAML syntax error: {e}"


# libyaml's parser when PyYAML has it (several times faster on big watchlist files); same nodes and marks
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse_yaml(name: str, text: str, order: int, env: Mapping[str, str], problems: _Problems) -> _Doc | None:
    """Parse one file's text; None when it cannot be used at all (syntax error, not a mapping)."""
    try:
        loader = _SAFE_LOADER(text)
    except yaml.YAMLError as e:
        problems.add(order, *_syntax_error(name, text, e))
        return None
    try:
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as e:
            problems.add(order, *_syntax_error(name, text, e))
            return None
        builder = _Builder(loader, name, order, env, problems)
        data = builder.build(root, ()) if root is not None else None
    finally:
        loader.dispose()
    if data is None:
        data = {}
    if isinstance(data, dict):
        for key in [k for k in data if k.startswith(_EXTENSION_PREFIX)]:
            del data[key]  # ``x-...: &anchor`` blocks exist only to be merged elsewhere
    else:
        line = root.start_mark.line + 1 if root is not None else 1
        problems.add(order, line, f"{name}:{line}: the top level should be a mapping of keys "
                                  f"(like 'sources:'), not {_describe(data)}")
        return None
    return _Doc(name, order, data, builder.lines, builder.env_refs, builder.bad_refs, text, builder.scalars)


def _read_text(path: str) -> tuple[str | None, str | None]:
    """(text, None) or (None, reason)."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return f.read(), None
    except FileNotFoundError:
        return None, "no such file"
    except IsADirectoryError:
        return None, "is a directory, not a file"
    except PermissionError:
        return None, "cannot read: permission denied"
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 text (bad byte at offset {e.start})"
    except OSError as e:
        return None, f"cannot read: {e.strerror or e}"


# --------------------------------------------------------------------------- pydantic errors


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``loc`` (for 'did you mean' suggestions)."""
    t: Any = root
    for part in loc:
        t = _strip_optional(t)
        if isinstance(part, int):
            if get_origin(t) is not list:
                return None
            t = get_args(t)[0]
        elif isinstance(t, type) and issubclass(t, BaseModel):
            info = t.model_fields.get(part)
            if info is None:
                return None
            t = info.annotation
        else:
            return None
    t = _strip_optional(t)
    return t if isinstance(t, type) and issubclass(t, BaseModel) else None


def _strip_optional(t: Any) -> Any:
    if get_origin(t) in (Union, types.UnionType):
        args = [a for a in get_args(t) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return t


def _unknown_key(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown key (did you mean '{close[0]}'?)"
    return f"unknown key (known keys: {', '.join(known)})"


def _known_keys(model: type[BaseModel] | None, root: type[BaseModel]) -> list[str]:
    if model is None:
        return []
    if model is root and model is Config:
        return list(_MAIN_KEYS)
    return list(model.model_fields)


def _pydantic_message(err: Any, root: type[BaseModel], loc: Loc) -> str:
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else ""
        return _unknown_key(key, _known_keys(_model_at(root, loc[:-1]), root))
    if kind == "missing":
        return "required, but missing"
    if kind == "value_error":
        error = ctx.get("error")
        return str(error) if error is not None else err["msg"].removeprefix("Value error, ")
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"should be a mapping of keys, not {_describe(value)}"
    if kind == "list_type":
        return f"should be a list, not {_describe(value)}"
    if kind == "string_type":
        return f"should be a string, not {_describe(value)}"
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == NAME_PATTERN:
        return ("names may contain only letters, digits, '_', '.' and '-', and must start with a letter "
                f"or digit (got {_shown(value)})")
    if kind == "bool_parsing" or kind == "bool_type":
        return f"should be true or false (got {_shown(value)})"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"should be a whole number (got {_shown(value)})"
    msg = re.sub(r"\s*\[type=.*$|\s*For further information visit \S+", "", err["msg"])
    msg = re.sub(r"^(Input|String|Value) should", "should", msg)
    if not isinstance(value, dict | list):
        msg += f" (got {_shown(value)})"
    return msg


def _validate(model: type[BaseModel], data: Any, doc: _Doc, prefix: Loc,
              problems: _Problems) -> BaseModel | None:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            rel: Loc = tuple(err["loc"])
            loc = (*prefix, *rel)
            line = doc.line(loc)
            where = f"{_fmt_loc(loc)}: " if loc else ""
            problems.add(doc.order, line, f"{doc.name}:{line}: {where}{_pydantic_message(err, model, rel)}")
        return None


# --------------------------------------------------------------------------- loading


@dataclass
class _Entry:
    """One validated list entry and where it was written."""

    model: Any
    doc: _Doc
    loc: Loc  # ('sources', 1)

    def where(self, *sub: str | int) -> tuple[int, str]:
        """(line, 'file:line: sources[1].name') for a key of this entry."""
        loc = (*self.loc, *sub)
        line = self.doc.line(loc)
        return line, f"{self.doc.name}:{line}: {_fmt_loc(loc)}"


class _AliasesFile(Strict):
    """The top-level ``aliases:`` of one file (validated on its own, from any file)."""

    aliases: dict[str, list[str]] = {}


_ALIAS_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # what may follow '@' in a query


class _Loader:
    def __init__(self, env: Mapping[str, str]):
        self.env = env
        self.shared_aliases: dict[str, list[str]] = {}
        self.problems = _Problems()
        self.docs: list[_Doc] = []
        self.loaded: set[str] = set()  # real paths already read
        self.order = 0

    def _next_order(self) -> int:
        self.order += 1
        return self.order

    # -- files and includes

    def load_main(self, name: str) -> _Doc | None:
        order = self._next_order()
        text, reason = _read_text(name)
        if text is None:
            self.problems.add(order, 0, f"{name}: {reason}")
            return None
        return self._load(name, text, order, stack=(os.path.realpath(name),), included=False)

    def _load(self, name: str, text: str, order: int, stack: tuple[str, ...], included: bool) -> _Doc | None:
        self.loaded.add(stack[-1])
        doc = _parse_yaml(name, text, order, self.env, self.problems)
        if doc is None:
            return None
        self.docs.append(doc)
        if included:
            self._check_included_keys(doc)
        includes = doc.data.pop(_INCLUDE, None)
        for loc, pattern in self._include_patterns(doc, includes):
            self._include(doc, loc, pattern, stack)
        return doc

    def _check_included_keys(self, doc: _Doc) -> None:
        for key in list(doc.data):
            if key in _INCLUDED_KEYS:
                continue
            line = doc.line((key,))
            if key in _MAIN_KEYS:
                why = "may only be set in the main file (an included file may only have sources, " \
                      "watchlists, channels, aliases and include)"
            else:
                close = difflib.get_close_matches(key, _INCLUDED_KEYS, n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'? " if close else ""
                why = f"not allowed in an included file ({hint}only sources, watchlists, channels, aliases and include)"
            self.problems.add(doc.order, line, f"{doc.name}:{line}: {key}: {why}")
            del doc.data[key]

    def _include_patterns(self, doc: _Doc, value: Any) -> list[tuple[Loc, str]]:
        if value is None:
            return []
        if isinstance(value, str):
            return [((_INCLUDE,), value)]
        if not isinstance(value, list):
            line = doc.line((_INCLUDE,))
            self.problems.add(doc.order, line, f"{doc.name}:{line}: include: should be a file name, a glob "
                                               f"pattern or a list of them, not {_describe(value)}")
            return []
        out = []
        for i, item in enumerate(value):
            loc: Loc = (_INCLUDE, i)
            if isinstance(item, str) and item.strip():
                out.append((loc, item))
            else:
                line = doc.line(loc)
                self.problems.add(doc.order, line, f"{doc.name}:{line}: {_fmt_loc(loc)}: should be a file "
                                                   f"name or glob pattern, not {_describe(item)}")
        return out

    def _include(self, doc: _Doc, loc: Loc, pattern: str, stack: tuple[str, ...]) -> None:
        line = doc.line(loc)
        here = f"{doc.name}:{line}: {_fmt_loc(loc)}"
        base = os.path.dirname(doc.name)
        expanded = os.path.expanduser(pattern.strip())
        is_glob = glob.has_magic(expanded)
        if is_glob:
            # os.path.join keeps an absolute pattern as is; the base dir's own name is not a pattern
            full = os.path.join(glob.escape(base), expanded)
            matches = sorted(m for m in glob.glob(full, recursive=True) if not os.path.isdir(m))
            if not matches:
                log.warning("%s:%d: include pattern %r matches no files", doc.name, line, pattern)
                return
        else:
            full = os.path.join(base, expanded)
            if os.path.isdir(full):
                self.problems.add(doc.order, line, f"{here}: '{pattern}' is a directory; include its files "
                                                   f"with a glob like '{pattern.rstrip('/')}/*.yaml'")
                return
            matches = [full]
        for path in matches:
            real = os.path.realpath(path)
            name = os.path.normpath(path)
            if real in stack:
                if not is_glob:  # a glob naturally matches the file it is written in: skip that
                    chain = " -> ".join([*(d.name for d in self._chain(stack)), name])
                    self.problems.add(doc.order, line, f"{here}: include cycle: {chain}")
                continue
            if real in self.loaded:
                log.debug("%s: %s is already included; reading it once", here, name)
                continue
            text, reason = _read_text(path)
            if text is None:
                self.problems.add(doc.order, line, f"{here}: cannot include '{name}': {reason}")
                continue
            self._load(name, text, self._next_order(), (*stack, real), included=True)

    def _chain(self, stack: tuple[str, ...]) -> list[_Doc]:
        by_real = {os.path.realpath(d.name): d for d in self.docs}
        return [by_real[r] for r in stack if r in by_real]

    # -- validation

    def validate(self, main: _Doc) -> tuple[Config | None, dict[str, list[_Entry]]]:
        settings = self._validate_settings(main)
        entries: dict[str, list[_Entry]] = {kind: [] for kind in _LISTS}
        first: dict[str, str] = {}  # shared alias name -> 'file:line' where defined
        for doc in self.docs:
            for kind, (_, model) in _LISTS.items():
                entries[kind].extend(self._validate_list(doc, kind, model))
            self._collect_aliases(doc, first)
        for e in entries["watchlists"]:
            self._check_alias_map(e.model.aliases or {}, e.doc, (*e.loc, _ALIASES))
        return settings, entries

    def _collect_aliases(self, doc: _Doc, first: dict[str, str]) -> None:
        """Validate one file's top-level ``aliases:`` and merge it into the shared ones."""
        raw = doc.data.get(_ALIASES)
        if raw is None:
            return
        if not isinstance(raw, dict):
            line = doc.line((_ALIASES,))
            self.problems.add(doc.order, line, f"{doc.name}:{line}: {_ALIASES}: should be a mapping of alias "
                                               f"names to lists of terms, not {_describe(raw)}")
            return
        aliases: dict[str, list[str]] = {}
        for key, value in raw.items():  # one by one, so one bad alias does not hide the others
            result = _validate(_AliasesFile, {_ALIASES: {key: value}}, doc, (), self.problems)
            if isinstance(result, _AliasesFile):
                aliases.update(result.aliases)
        self._check_alias_map(aliases, doc, (_ALIASES,))
        for name, entries in aliases.items():
            line = doc.line((_ALIASES, name))
            if name in first:
                self.problems.add(doc.order, line, f"{doc.name}:{line}: {_ALIASES}.{name}: duplicate shared "
                                                   f"alias '{name}' (first defined at {first[name]})")
                continue
            first[name] = f"{doc.name}:{line}"
            self.shared_aliases[name] = entries

    def _check_alias_map(self, aliases: Mapping[str, list[str]], doc: _Doc, prefix: Loc) -> None:
        """Alias names must be usable after '@'; entries must be terms; no empty alias."""
        from .query import QuerySyntaxError, parse_alias_entry

        for name, entries in aliases.items():
            line = doc.line((*prefix, name))
            where = f"{doc.name}:{line}: {_fmt_loc((*prefix, name))}"
            if not _ALIAS_NAME.match(name):
                self.problems.add(doc.order, line, f"{where}: alias names may contain only letters, digits, "
                                                   f"'_', '.' and '-', and must not start with '.' or '-' "
                                                   f"(got {_shown(name)})")
            if not entries:
                self.problems.add(doc.order, line, f"{where}: alias '{name}' has no entries")
            for i, entry in enumerate(entries):
                if (*prefix, name, i) in doc.bad_refs:
                    continue
                try:
                    parse_alias_entry(entry)
                except QuerySyntaxError as err:
                    eline = doc.line((*prefix, name, i))
                    self.problems.add(doc.order, eline, f"{doc.name}:{eline}: {_fmt_loc((*prefix, name, i))}: "
                                                        f"alias '{name}': {_shown(entry)} is not a term: {err.message}")

    def _validate_settings(self, doc: _Doc) -> Config | None:
        top = {k: v for k, v in doc.data.items() if k not in _LISTS and k != _ALIASES}
        if "path" in top:  # a Config field, but set by load_config, not by the user
            line = doc.line(("path",))
            self.problems.add(doc.order, line, f"{doc.name}:{line}: path: {_unknown_key('path', list(_MAIN_KEYS))}")
            del top["path"]
        result = _validate(Config, top, doc, (), self.problems)
        return result if isinstance(result, Config) else None

    def _validate_list(self, doc: _Doc, kind: str, model: type[BaseModel]) -> list[_Entry]:
        value = doc.data.get(kind)
        if value is None:
            return []
        if not isinstance(value, list):
            line = doc.line((kind,))
            self.problems.add(doc.order, line, f"{doc.name}:{line}: {kind}: should be a list "
                                               f"(lines starting with '- '), not {_describe(value)}")
            return []
        out = []
        for i, item in enumerate(value):
            loc: Loc = (kind, i)
            if kind == "sources" and isinstance(item, dict) and _OPML in item:
                out += self._opml_sources(doc, loc, item)
                continue
            validated = _validate(model, item, doc, loc, self.problems)
            if validated is not None:
                out.append(_Entry(validated, doc, loc))
        return out

    def _opml_sources(self, doc: _Doc, loc: Loc, item: dict) -> list[_Entry]:
        """``{opml: feeds.opml, interval: 30m, ...}``: one source per feed of the OPML file (the
        other keys apply to each; names come from the outlines, see monitor.opml)."""
        from .opml import OpmlError, read_opml

        line = doc.line((*loc, _OPML))
        where = f"{doc.name}:{line}: {_fmt_loc((*loc, _OPML))}"
        path = item.get(_OPML)
        if not isinstance(path, str) or not path.strip():
            self.problems.add(doc.order, line, f"{where}: should be the path of an OPML file")
            return []
        rest = {k: v for k, v in item.items() if k != _OPML}
        for key in ("name", "url"):
            if key in rest:
                self.problems.add(doc.order, doc.line((*loc, key)),
                                  f"{doc.name}:{doc.line((*loc, key))}: {_fmt_loc((*loc, key))}: not allowed beside "
                                  "'opml' (each feed's name and url come from the OPML file)")
                return []
        full = os.path.join(os.path.dirname(doc.name), os.path.expanduser(path.strip()))
        try:
            feeds, skipped = read_opml(full)
        except OpmlError as e:
            self.problems.add(doc.order, line, f"{where}: {e}")
            return []
        for why in skipped:
            log.warning("%s: %s: skipped outline at line %s", where, full, why)
        if not feeds:
            log.warning("%s: %s lists no feeds", where, full)
        out = []
        for feed in feeds:
            validated = _validate(SourceConfig, {"name": feed.name, "url": feed.url, **rest}, doc, loc, self.problems)
            if validated is not None:
                out.append(_Entry(validated, doc, loc))
        return out

    def raw_names(self, kind: str) -> set[str]:
        """Names of every entry as written, valid or not (so one bad entry does not cascade)."""
        names = set()
        for doc in self.docs:
            items = doc.data.get(kind)
            if isinstance(items, list):
                names.update(i["name"] for i in items if isinstance(i, dict) and isinstance(i.get("name"), str))
        return names

    # -- checks across files

    def check(self, entries: dict[str, list[_Entry]], check_channels: bool = True,
              settings: Config | None = None, main: _Doc | None = None) -> None:
        for kind, (label, _) in _LISTS.items():
            self._check_unique(entries[kind], label)
        self._check_channel_watchlists(entries["channels"])
        self._check_queries(entries["watchlists"])
        self._check_channel_templates(entries["channels"])
        if settings is not None and main is not None:
            self._check_routes(settings, main)
        if check_channels:
            self._check_channel_urls(entries["channels"])

    def _check_channel_templates(self, channels: list[_Entry]) -> None:
        """A channel's ``template`` exists and compiles (a relative path is relative to the
        file the channel is written in)."""
        for e in channels:
            path = e.model.template
            if path is None or (*e.loc, "template") in e.doc.bad_refs:
                continue
            from .notify import check_template

            full = template_path(path, e.doc.name)
            reason = check_template(full)
            if reason is not None:
                line, where = e.where("template")
                self._add(e, line, f"{where}: channel '{e.model.name}': template {full}: {reason}")

    def _check_routes(self, settings: Config, main: _Doc) -> None:
        channels = sorted(self.raw_names("channels"))
        watchlists = sorted(self.raw_names("watchlists"))
        sources = sorted(self.raw_names("sources"))
        for i, route in enumerate(settings.routes):
            checks = [("channels", route.channels, channels, "channel", "no channels are defined")]
            if route.match.watchlist is not None:
                checks.append(("match.watchlist", route.match.watchlist, watchlists, "watchlist",
                               "no watchlists are defined"))
            if route.match.source is not None:
                plain = [n for n in route.match.source if not glob.has_magic(n)]
                checks.append(("match.source", plain, sources, "source", "no sources are defined"))
            raw = main.data.get("routes")
            raw_route = raw[i] if isinstance(raw, list) and i < len(raw) and isinstance(raw[i], dict) else {}
            for key, names, known, label, none in checks:
                path = tuple(key.split("."))
                written = raw_route.get(path[0]) if len(path) == 1 else (raw_route.get("match") or {}).get(path[1])
                for name in names:
                    if name in known:
                        continue
                    loc: Loc = ("routes", i, *path)
                    if isinstance(written, list) and name in written:
                        loc = (*loc, written.index(name))
                    line = main.line(loc)
                    self.problems.add(main.order, line, f"{main.name}:{line}: {_fmt_loc(loc)}: unknown {label} "
                                                        f"'{name}' ({name_hint(name, known, none)})")

    @staticmethod
    def warn_routes_reaching_no_channel(cfg: Config, main: _Doc) -> None:
        """A route whose channels all refuse the watchlists it matches (the admin channel with no
        ``watchlists``, say) delivers its hits nowhere, and unless it says ``continue`` no later
        route sees them: almost surely a mistake, and a silent one at run time. A route to
        nowhere (``channels: []``) is a deliberate drop; unknown names were errors already."""
        by_name = {c.name: c for c in cfg.channels}
        every = [w.name for w in cfg.watchlists]
        for i, route in enumerate(cfg.routes):
            named = [by_name[n] for n in route.channels if n in by_name]
            matched = every if route.match.watchlist is None else route.match.watchlist
            if not named or len(named) < len(route.channels) or not matched:
                continue
            if any(c.wants(w) for c in named for w in matched):
                continue
            # a channel with no ``watchlists`` wants them all, unless it is the admin channel
            takes = ["only the watchlists it names (none)" if c.watchlists is None
                     else ", ".join(c.watchlists) or "no watchlists" for c in named]
            hints = "; ".join(f"'{c.name}' takes {t}" for c, t in zip(named, takes, strict=True))
            line = main.line(("routes", i, "channels"))
            log.warning("%s:%d: routes[%d]: none of its channels takes the watchlists it matches (%s; %s): their "
                        "hits are delivered nowhere%s", main.name, line, i, ", ".join(matched), hints,
                        "" if route.continue_ else " and no later route sees them")

    def _add(self, entry: _Entry, line: int, text: str) -> None:
        self.problems.add(entry.doc.order, line, text)

    def _check_unique(self, entries: list[_Entry], label: str) -> None:
        first: dict[str, str] = {}
        for e in entries:
            line, where = e.where("name")
            if e.model.name in first:
                self._add(e, line, f"{where}: duplicate {label} name '{e.model.name}' "
                                   f"(first defined at {first[e.model.name]})")
            else:
                first[e.model.name] = f"{e.doc.name}:{line}"

    def _check_channel_watchlists(self, channels: list[_Entry]) -> None:
        known = sorted(self.raw_names("watchlists"))
        for e in channels:
            for j, wl in enumerate(e.model.watchlists or []):
                if wl in known:
                    continue
                line, where = e.where("watchlists", j)
                hint = name_hint(wl, known, "no watchlists are defined")
                self._add(e, line, f"{where}: channel '{e.model.name}': unknown watchlist '{wl}' ({hint})")

    def _check_queries(self, watchlists: list[_Entry]) -> None:
        """Every query of every watchlist (``query``, each signal's, each exclude) parses."""
        from .query import QuerySyntaxError, parse_query

        for e in watchlists:
            w: WatchlistConfig = e.model
            aliases = {**self.shared_aliases, **(w.aliases or {})}
            queries: list[tuple[tuple[str | int, ...], str]] = []  # (key path under the entry, query)
            if w.query is not None:
                queries.append((("query",), w.query))
            queries += [(("signals", i, "query"), s.query) for i, s in enumerate(w.signals)]
            queries += [(("exclude", i), q) for i, q in enumerate(w.exclude)]
            for sub, query in queries:
                if (*e.loc, *sub) in e.doc.bad_refs:
                    continue
                try:
                    parse_query(query, aliases)
                except QuerySyntaxError as err:
                    loc = (*e.loc, *sub)
                    spot = _source_position(e.doc, loc, query, err.column - 1)
                    if spot is None:  # interpolated, or not found: the key's line, the query's column
                        line, where = e.where(*sub)
                        self._add(e, line, f"{where}: watchlist '{w.name}': {_query_problem(err)}")
                        continue
                    line, column, source = spot
                    self._add(e, line, f"{e.doc.name}:{line}: {_fmt_loc(loc)}: watchlist '{w.name}': "
                                       f"{err.message} at column {column}\n{source}\n{_caret(source, column)}")

    def _check_channel_urls(self, channels: list[_Entry]) -> None:
        from .notify import validate_url

        for e in channels:
            url = e.model.url
            if not url.strip() or (*e.loc, "url") in e.doc.bad_refs:
                continue
            reason = validate_url(url)
            if reason is not None:
                line, where = e.where("url")
                self._add(e, line, f"{where}: channel '{e.model.name}': no notification service accepts "
                                   f"'{url}' ({reason})")

    def warn_disabled_channels(self, channels: list[_Entry]) -> None:
        for e in channels:
            if e.model.enabled:
                continue
            names = e.doc.env_refs.get((*e.loc, "url"), [])
            hint = f" (set {' or '.join(dict.fromkeys(names))}?)" if names else ""
            log.warning("channel '%s' has no URL%s and is disabled; alerts are still recorded",
                        e.model.name, hint)


def _query_problem(err: Any) -> str:
    """'<message> at column N of the query' and two more lines: the query (the line of it with
    the error) and a caret under the column. (When the spot cannot be found in the file.)"""
    query: str = err.query
    if "\n" not in query:
        return f"{err.message} at column {err.column} of the query\n{err.caret()}"
    offset = max(0, min(err.column - 1, len(query)))
    start = query.rfind("\n", 0, offset) + 1
    end = query.find("\n", offset)
    text = query[start:] if end < 0 else query[start:end]
    lineno = query.count("\n", 0, start) + 1
    col = offset - start + 1
    return f"{err.message} at line {lineno}, column {col} of the query\n{text}\n{' ' * (col - 1)}^"


_ESCAPES = {"0": "\0", "a": "\a", "b": "\b", "t": "\t", "\t": "\t", "n": "\n", "v": "\v", "f": "\f",
            "r": "\r", "e": "\x1b", " ": " ", '"': '"', "/": "/", "\\": "\\", "N": "\x85", "_": "\xa0",
            "L": "\u2028", "P": "\u2029"}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


def _unescape(text: str, at: int) -> tuple[str, int] | None:
    """The character a double-quoted scalar's escape at ``text[at]`` (a backslash) stands for,
    and the escape's length (None for an escaped line break or a malformed escape)."""
    kind = text[at + 1:at + 2]
    if kind in _ESCAPES:
        return _ESCAPES[kind], 2
    width = _HEX_ESCAPES.get(kind)
    if width is not None:
        digits = text[at + 2:at + 2 + width]
        if len(digits) == width and all(c in "0123456789abcdefABCDEF" for c in digits):
            return chr(int(digits, 16)), 2 + width
    return None


def _align(text: str, start: int, style: str, value: str) -> list[int] | None:
    """Where each character of ``value`` (a scalar's value, possibly stripped) is written in
    ``text``, for the scalar that starts at ``start`` with YAML ``style``, plus one more
    offset for the end of the value; None when the value cannot be found there.

    Every non-blank character of the value must be written in the source in order (after
    undoing ``''`` in single quotes and escapes in double quotes); blanks are flexible, since
    YAML folds line breaks and drops indentation."""
    n = len(text)
    p = start
    while text[p:p + 1] in ("&", "!"):  # an anchor or a tag (the node's start): skip it
        while p < n and text[p] not in " \t\n":
            p += 1
        while p < n and text[p] in " \t\n":
            p += 1
    if style in ("'", '"'):
        if text[p:p + 1] != style:
            return None
        p += 1
    elif style in ("|", ">"):
        p = text.find("\n", p) + 1  # the body starts on the line after the header
        if p == 0:
            return None
    out: list[int] = []
    for ch in value:
        if ch in " \t\n":  # written as is, or made by folding (then it has no place of its own)
            out.append(p)
            escape = _unescape(text, p) if style == '"' and text[p:p + 1] == "\\" else None
            if p < n and text[p] == ch:
                p += 1
            elif escape is not None and escape[0] == ch:
                p += escape[1]
            continue
        while p < n:  # skip indentation, folded line breaks and (in double quotes) escaped blanks
            c = text[p]
            if c in " \t\n":
                p += 1
            elif style == '"' and c == "\\" and text[p + 1:p + 2] == "\n":
                p += 2  # an escaped line break
            elif style == '"' and c == "\\" and (escape := _unescape(text, p)) is not None and escape[0] in " \t":
                p += escape[1]
            else:
                break
        if p >= n:
            return None
        if style == "'" and ch == "'":
            if not text.startswith("''", p):
                return None
            out.append(p)
            p += 2
        elif style == '"' and text[p] == "\\":
            escape = _unescape(text, p)
            if escape is None or escape[0] != ch:
                return None
            out.append(p)
            p += escape[1]
        elif text[p] == ch:
            out.append(p)
            p += 1
        else:
            return None
    out.append(p)  # just after the last character
    return out


def _source_position(doc: _Doc, loc: Loc, value: str, offset: int) -> tuple[int, int, str] | None:
    """(line, column, the text of that line) in ``doc``'s file of character ``offset`` of the
    string ``value`` written at ``loc`` (``offset == len(value)``: just after it); None when
    the value cannot be found in the file (it was interpolated, for one)."""
    written = doc.scalars.get(loc)
    if written is None or not doc.text:
        return None
    positions = _align(doc.text, written[0], written[1], value)
    if positions is None:
        return None
    at = positions[max(0, min(offset, len(value)))]
    text = doc.text
    line_start = text.rfind("\n", 0, at) + 1
    line_end = text.find("\n", at)
    source = text[line_start:] if line_end < 0 else text[line_start:line_end]
    return text.count("\n", 0, line_start) + 1, at - line_start + 1, source


def _caret(line: str, column: int) -> str:
    """A caret under ``column`` (1-based) of ``line``, lined up under tabs and wide characters."""
    pad = "".join("\t" if c == "\t" else "  " if unicodedata.east_asian_width(c) in "WF" else " "
                  for c in line[:column - 1])
    return f"{pad}^"


def name_hint(name: str, known: list[str], none: str) -> str:
    """Help for an unknown name: "did you mean 'x'?", else the known names, else ``none``."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"known: {', '.join(known)}" if known else none


def template_path(path: str, config_file: str) -> str:
    """A channel's ``template`` as an absolute path (relative ones are relative to the
    directory of the file that names them; ``~`` is expanded)."""
    p = os.path.expanduser(path.strip())
    return os.path.abspath(os.path.join(os.path.dirname(config_file), p))


def load_config(path: str | Path, env: Mapping[str, str] | None = None, *, check_channels: bool = True) -> Config:
    """Read, interpolate, include, validate. Raises ConfigError listing every problem.

    ``check_channels=False`` skips asking Apprise whether each channel URL is one it can
    send to (importing Apprise's plugins takes about half a second): for the commands that
    never send (``monitor match``, ``monitor backtest``). Everything else is checked."""
    env = os.environ if env is None else env
    name = os.fspath(path)
    loader = _Loader(env)
    main = loader.load_main(name)
    if main is None:
        raise ConfigError(loader.problems.messages())
    settings, entries = loader.validate(main)
    loader.check(entries, check_channels=check_channels, settings=settings, main=main)
    if loader.problems.items or settings is None:
        raise ConfigError(loader.problems.messages())
    loader.warn_disabled_channels(entries["channels"])
    for e in entries["channels"]:
        if e.model.template is not None:
            e.model = e.model.model_copy(update={"template": template_path(e.model.template, e.doc.name)})
    update: dict[str, Any] = {kind: [e.model for e in entries[kind]] for kind in _LISTS}
    update["aliases"] = loader.shared_aliases
    update["path"] = Path(name)
    db_url = env.get(_DATABASE_ENV)
    if db_url and db_url.strip():
        update["database"] = settings.database.model_copy(update={"url": db_url.strip()})
    cfg = settings.model_copy(update=update)
    loader.warn_routes_reaching_no_channel(cfg, main)
    return cfg


# --------------------------------------------------------------------------- summary


def summarize(cfg: Config) -> str:
    """A short human summary of a loaded configuration (for ``monitor check``)."""
    from .store import safe_url

    lines = []
    if cfg.path is not None:
        lines.append(f"config: {cfg.path}")
    lines.append(f"database: {safe_url(cfg.database.url)}")
    enabled = sum(1 for s in cfg.sources if s.enabled)
    lines.append(f"sources: {len(cfg.sources)} ({enabled} enabled)")
    for s in cfg.sources:
        state = "" if s.enabled else ", disabled"
        lo, hi = s.bounds(cfg.fetch)
        lines.append(f"  - {s.name}: every {format_duration(s.first_interval(cfg.fetch))} "
                     f"at first, then adapted within {format_duration(lo)}-{format_duration(hi)}{state}")
    lines.append(f"watchlists: {len(cfg.watchlists)}")
    for w in cfg.watchlists:
        clauses = []
        if w.signals:
            clauses.append(f"{len(w.signals)} signal{'s' if len(w.signals) != 1 else ''}")
        if w.exclude:
            clauses.append(f"{len(w.exclude)} exclude{'s' if len(w.exclude) != 1 else ''}")
        extra = f", {', '.join(clauses)}" if clauses else ""
        lines.append(f"  - {w.name}: severity {w.severity}, min_score {_number(w.min_score)}{extra}")
    repost = "one update when a new outlet carries an alerted story" if cfg.stories.notify_on_repost else "no re-alert"
    lines.append(f"stories: reposts within {format_duration(cfg.stories.window)} merge; {repost}")
    lines.append(f"channels: {len(cfg.channels)} ({len(cfg.enabled_channels)} enabled)")
    for c in cfg.channels:
        state = "enabled" if c.enabled else "disabled (no URL)"
        if c.watchlists is None:
            wanted = "operator notices only" if c.is_admin else "all watchlists"
        else:
            wanted = ", ".join(c.watchlists) or "no watchlists"
        how = [f"min_severity {c.min_severity}"]
        if c.mode == "digest" and c.every is not None:
            how.append(f"digest {schedule_of(c.every, c.timezone).describe()}")
        if c.max_per_hour is not None:
            how.append(f"at most {c.max_per_hour} messages/hour")
        if c.template is not None:
            how.append(f"template {c.template}")
        if c.is_admin and c.watchlists is not None:
            how.append("and operator notices")
        lines.append(f"  - {c.name}: {state}; {wanted}; {'; '.join(how)}")
    if cfg.routes:
        lines.append(f"routes: {len(cfg.routes)}")
        for r in cfg.routes:
            m = r.match
            conds = [f"{k} {', '.join(v) if isinstance(v, list) else v}" for k, v in (
                ("watchlist", m.watchlist), ("severity", m.severity), ("min_severity", m.min_severity),
                ("source", m.source)) if v is not None]
            lines.append(f"  - {' and '.join(conds) or 'everything'} -> {', '.join(r.channels) or 'nowhere'}"
                         f"{' (continue)' if r.continue_ else ''}")
    d = cfg.delivery
    lines.append(f"delivery: retries {format_duration(d.retry_initial)} doubling to {format_duration(d.retry_max)}; "
                 f"dead-lettered after {d.max_attempts} attempts or {format_duration(d.max_age)}; "
                 f"source notices after {format_duration(cfg.alerts.source_alert_after)}"
                 f"{_own_notice_delays(cfg)}"
                 f"{'' if cfg.admin_channel else ' (no admin channel: notices are only logged)'}")
    return "\n".join(lines)


def _own_notice_delays(cfg: Config) -> str:
    own = sum(src.source_alert_after is not None for src in cfg.sources)
    return f" ({own} source{'s' if own != 1 else ''} with their own)" if own else ""


def _number(value: float) -> str:
    """1.0 -> '1', 2.5 -> '2.5' (for summaries)."""
    return f"{value:g}"
