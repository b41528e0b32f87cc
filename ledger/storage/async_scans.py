"""Public pack scans read on PostgreSQL's asynchronous driver, on the caller's event loop.

A scan is one statement (``SqlUnit.pack_scan``). Handing it to a request thread and back cost about a quarter
of a served scan's CPU (measured: 922-959 -> 1,169-1,227 scans/s at 64 clients when the scan ran on the loop),
so the public scans, made at every dispense and every patient check, wait for PostgreSQL here instead, without
a thread. Anything this cannot answer (SQLite, a broken connection, a server restart) returns ``None`` and the
caller reads the usual way, which reports an outage as it always has: this path is never the only way in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

import psycopg

from ledger.state import Batch, Pack
from ledger.storage.database import Database, redact
from ledger.storage.sql import TrailRow, pack_scan_rows, pack_scan_sql

logger = logging.getLogger("athar.ledger")

ScanRows = tuple[Pack, Batch, int, list[TrailRow]]

#: seconds to wait for a new connection before falling back to the request threads
CONNECT_TIMEOUT = 5


class AsyncScans:
    """Up to ``size`` connections, opened when first needed, each serving one scan at a time. Bound to the event
    loop that first uses it (a driver's asynchronous connection is); ``close`` on that loop."""

    def __init__(self, db: Database, size: int = 4) -> None:
        assert not db.is_sqlite, "asynchronous scans are for PostgreSQL"
        self._url = redact(db.url)
        self._dialect = db.reader.dialect
        _, params = db.reader.dialect.create_connect_args(db.reader.url)
        # the engine's own parameters, adapters included, so both paths read rows alike
        self._params: dict[str, Any] = {**params, "autocommit": True}
        self._params.setdefault("connect_timeout", CONNECT_TIMEOUT)
        self._slots = asyncio.Semaphore(size)
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._closed = False
        self._failing = False

    async def pack_scan(self, gtin: str, serial: str, *, single: Iterable[str], wide: Iterable[str]
                        ) -> tuple[bool, ScanRows | None]:
        """``(True, SqlUnit.pack_scan's answer)``, or ``(False, None)`` when the database could not be read here
        (the caller then reads through the engine)."""
        sql = pack_scan_sql(self._dialect, tuple(sorted(single)), tuple(sorted(wide)))
        async with self._slots:
            if self._closed:
                return False, None
            try:
                conn = self._idle.pop() if self._idle else await psycopg.AsyncConnection.connect(**self._params)
            except psycopg.Error as exc:
                self._failed("could not connect to", exc)
                return False, None
            try:
                async with psycopg.AsyncRawCursor(conn) as cur:
                    await cur.execute(sql, (gtin, serial))
                    found = await cur.fetchall()
            except psycopg.Error as exc:
                # a restarted server, a dropped connection: this connection is done; the next scan opens another
                self._failed("failed on", exc)
                await _discard(conn)
                return False, None
            except BaseException:
                # cancelled mid-statement: the driver has asked the server to cancel it, but whether that worked
                # is not known here, and a scan must never find its connection still busy
                await asyncio.shield(_discard(conn))
                raise
            self._idle.append(conn)
            if self._failing:
                self._failing = False
                logger.info("asynchronous scans read %s again", self._url)
        return True, pack_scan_rows(found)

    def _failed(self, what: str, exc: psycopg.Error) -> None:
        # once per outage: every scan meets it, and each is answered (or refused) by the usual path anyway
        if not self._failing:
            self._failing = True
            logger.warning("asynchronous scan %s %s: %s; scans go through the request threads until it answers",
                           what, self._url, str(exc).strip())

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await _discard(conn)


async def _discard(conn: psycopg.AsyncConnection[Any]) -> None:
    with contextlib.suppress(psycopg.Error):  # already broken: nothing left to release
        await conn.close()
