"""Engines and migrations for the two supported databases.

SQLite (embedded default): WAL journal, ``synchronous=FULL`` so an acknowledged append survives a crash,
and write transactions opened with ``BEGIN IMMEDIATE`` so two processes never interleave appends.
PostgreSQL (production): the sequencer locks the single ``log_head`` row (``SELECT ... FOR UPDATE``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import Engine

from ledger.errors import StorageUnavailable

BUSY_TIMEOUT_MS = 30_000


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@dataclass
class Database:
    """A writer engine and a reader engine (the same one on PostgreSQL)."""

    url: str
    writer: Engine
    reader: Engine

    @property
    def is_sqlite(self) -> bool:
        return self.writer.dialect.name == "sqlite"

    def dispose(self) -> None:
        self.writer.dispose()
        if self.reader is not self.writer:
            self.reader.dispose()


def open_database(url: str, *, pool_size: int = 10, connect_args: dict[str, Any] | None = None,
                  read_only: bool = False) -> Database:
    """``read_only``: for verifying a copy, which must not change and may be on read-only storage; SQLite opens
    the file read-only, PostgreSQL runs every transaction READ ONLY. Its writer engine is its reader."""
    try:
        if url.startswith("sqlite") and read_only:
            engine = _sqlite_engine(_sqlite_read_only_url(url), immediate=False, read_only=True)
            return Database(url, engine, engine)
        if url.startswith("sqlite"):
            return Database(url, _sqlite_engine(url, immediate=True), _sqlite_engine(url, immediate=False))
        # No pre-ping: it would cost every transaction a round trip. A connection broken by a server restart
        # fails its statement (503 to that one caller); after a statement sent through SQLAlchemy it replaces the
        # whole pool, after one sent through the driver (scans, a group's reads and writes) that connection only.
        engine = sa.create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False,
                                  connect_args=connect_args or {})
        if read_only:
            event.listen(engine, "connect", _postgres_read_only)
        return Database(url, engine, engine)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
        raise StorageUnavailable(f"cannot use database URL {redact(url)}: {exc}") from exc
    except ImportError as exc:
        raise StorageUnavailable(f"cannot use database URL {redact(url)}: its driver is not installed "
                                 f"({exc.name}); athar supports sqlite:/// and postgresql+psycopg://") from exc


def redact(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<invalid database URL>"


def _sqlite_read_only_url(url: str) -> str:
    parsed = sa.engine.make_url(url)
    name = parsed.database or ""
    if not name or name == ":memory:" or name.startswith("file:"):
        return url
    path = Path(name)
    if not path.is_file():
        # SQLite would create it, even read-only; say so plainly instead
        raise StorageUnavailable(f"the database file {path} does not exist")
    # A WAL database needs its -shm file, which SQLite cannot create in a read-only directory; there the copy
    # is opened as immutable (no locking, no -shm): nothing can be writing to it.
    frozen = not os.access(path.parent, os.W_OK)
    query = "mode=ro" + ("&immutable=1" if frozen else "")
    return f"sqlite:///file:{quote(str(path.resolve()))}?{query}&uri=true"


def _postgres_read_only(dbapi_conn: Any, _record: Any) -> None:
    with dbapi_conn.cursor() as cur:
        cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    dbapi_conn.commit()


def _sqlite_engine(url: str, *, immediate: bool, read_only: bool = False) -> Engine:
    engine = sa.create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see the "begin" hook).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if not read_only:  # the journal mode is the file's, set by whoever writes it
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _alembic_config(connection: sa.Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("migrations")))
    cfg.attributes["connection"] = connection
    return cfg


def migrate(db: Database) -> None:
    """Bring the schema to the newest Alembic revision (the only way athar creates its schema)."""
    try:
        with db.writer.begin() as conn:
            command.upgrade(_alembic_config(conn), "head")
    except sa.exc.DBAPIError as exc:
        # Not only OperationalError: a search_path naming no schema, missing privileges and the like arrive as
        # ProgrammingError, and are as much "this database cannot be used" as a refused connection.
        raise StorageUnavailable(f"cannot migrate {redact(db.url)}: {exc.orig}") from exc


def schema_is_current(db: Database) -> bool:
    with db.reader.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        head = ScriptDirectory.from_config(_alembic_config(conn)).get_current_head()
    return current is not None and current == head
