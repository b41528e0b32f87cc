"""Shared fixtures: real databases (SQLite always, PostgreSQL when reachable) and a populated test world.

PostgreSQL tests use ATHAR_TEST_POSTGRES_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test).
Each test gets its own schema, dropped afterwards. If the server cannot be reached the tests skip with a
message, unless ATHAR_REQUIRE_POSTGRES=1 (as in CI), where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
_pg_state: dict[str, str | None] = {}


def postgres_base_url() -> str | None:
    """The PostgreSQL URL if the server answers, else None (and the reason in _pg_state)."""
    if "url" not in _pg_state:
        url = os.environ.get("ATHAR_TEST_POSTGRES_URL", DEFAULT_PG)
        try:
            engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(sa.text("select 1"))
            engine.dispose()
            _pg_state["url"] = url
        except Exception as exc:  # any driver failure means: not available here
            _pg_state["url"] = None
            _pg_state["why"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return _pg_state["url"]


def _require_postgres() -> str:
    url = postgres_base_url()
    if url is None:
        msg = (f"PostgreSQL not reachable ({_pg_state.get('why')}). To run these tests start PostgreSQL and set "
               "ATHAR_TEST_POSTGRES_URL=postgresql+psycopg://USER@HOST:5432/DB")
        if os.environ.get("ATHAR_REQUIRE_POSTGRES") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL to a fresh, empty PostgreSQL schema (search_path set in the URL, so subprocesses can use it)."""
    base = _require_postgres()
    schema = "t_" + uuid.uuid4().hex[:12]
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return str(request.getfixturevalue("postgres_url"))
