"""Shared fixtures: real databases (a SQLite file per test; a fresh PostgreSQL schema per test
on the server named by MONITOR_TEST_POSTGRES_URL) and paths to the shared seeds/corpus."""
from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from pathlib import Path
from types import ModuleType
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script(path: Path, name: str) -> ModuleType:
    """Import a script (e.g. under bench/) as module ``name``, to test its functions."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module
SHARED = ROOT.parent / "shared"
SEEDS = SHARED / "seeds"
PG_URL = os.environ.get("MONITOR_TEST_POSTGRES_URL", "")


def _pg_schema_url():
    """Create a throw-away schema; yield a URL whose connections use it; drop it after."""
    if not PG_URL:
        pytest.skip("MONITOR_TEST_POSTGRES_URL is not set (.ci/run sets it)")
    from sqlalchemy import create_engine, text

    schema = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as c:
            c.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as e:  # noqa: BLE001
        admin.dispose()
        pytest.fail(f"PostgreSQL at MONITOR_TEST_POSTGRES_URL is not usable: {e}")
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}"
    with admin.begin() as c:
        c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/monitor.db"
    else:
        yield from _pg_schema_url()


@pytest.fixture
def pg_url():
    yield from _pg_schema_url()


@pytest.fixture
def smtp():
    """A recording SMTP server on 127.0.0.1 (aiosmtpd)."""
    from sinks import SmtpSink

    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def receiver():
    """A recording HTTP webhook receiver on 127.0.0.1 (set ``.status = 500`` to make it fail)."""
    from sinks import WebhookReceiver

    with WebhookReceiver() as r:
        yield r
