"""Configuration: YAML files -> validated pydantic models. Nothing else in the product reads YAML.

Rules:
- The main file may ``include:`` globs (relative to the including file, or absolute); each
  included file may add ``sources``, ``watchlists`` and ``channels`` (and include more files).
- ``${VAR}`` and ``${VAR:-default}`` are replaced in every string scalar before validation;
  ``$$`` is a literal ``$``. An unset ``${VAR}`` without default is an error.
- Every error names file, line and key (``config/monitor.yaml:12: sources[0].interval: ...``);
  all errors found are reported together as one ConfigError.
- A channel whose URL comes out empty is disabled (one warning), so the shipped config runs
  with no secrets set.
"""
from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from .durations import parse_duration

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]

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
    user_agent: str = "news-monitor/0.1 (+https://github.com/news-monitor; RSS alert daemon)"


class AlertsConfig(Strict):
    max_age: Duration = timedelta(days=3)


class DeliveryConfig(Strict):
    retry_initial: Duration = timedelta(seconds=30)
    retry_max: Duration = timedelta(hours=1)
    timeout: Duration = timedelta(seconds=30)
    interval: Duration = timedelta(seconds=15)


class LoggingConfig(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class SourceConfig(Strict):
    name: str = Field(min_length=1)
    url: str
    interval: Duration = timedelta(minutes=15)
    enabled: bool = True

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"source url must start with http:// or https:// (got {v!r})")
        return v

    @field_validator("interval")
    @classmethod
    def _min_interval(cls, v: timedelta) -> timedelta:
        if v < timedelta(seconds=10):
            raise ValueError("interval must be at least 10s")
        return v


class WatchlistConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    query: str = Field(min_length=1)
    description: str | None = None


class ChannelConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    url: str = ""
    watchlists: list[str] | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.url.strip())

    def wants(self, watchlist: str) -> bool:
        return self.watchlists is None or watchlist in self.watchlists


class Config(Strict):
    database: DatabaseConfig = DatabaseConfig()
    server: ServerConfig = ServerConfig()
    fetch: FetchConfig = FetchConfig()
    alerts: AlertsConfig = AlertsConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    logging: LoggingConfig = LoggingConfig()
    sources: list[SourceConfig] = []
    watchlists: list[WatchlistConfig] = []
    channels: list[ChannelConfig] = []
    path: Path | None = None  # the main file, set by load_config

    @property
    def enabled_channels(self) -> list[ChannelConfig]:
        return [c for c in self.channels if c.enabled]


class ConfigError(Exception):
    """One or more configuration problems; ``messages`` are ``file:line: key: problem`` lines."""

    def __init__(self, messages: list[str]):
        self.messages = messages
        super().__init__("\n".join(messages))


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    """Read, interpolate, include, validate. Raises ConfigError listing every problem."""
    raise NotImplementedError
