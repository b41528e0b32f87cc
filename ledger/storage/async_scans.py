"""Public pack scans, in batches, and served proofs read on PostgreSQL's asynchronous driver, on the caller's
event loop.

A scan is one statement (``SqlUnit.pack_scan``). Handing it to a request thread and back cost about a quarter
of a served scan's CPU (measured: 922-959 -> 1,169-1,227 scans/s at 64 clients when the scan ran on the loop),
so the public scans, made at every dispense and every patient check, wait for PostgreSQL here instead, without
a thread. Anything this cannot answer (a broken connection, a server restart) returns ``(False, None)`` and
the caller reads the usual way (as on SQLite, which has no such path), which reports an outage as it always
has: this path is never the only way in.

The scans that arrive while every connection is busy, or within one turn of the event loop, go to PostgreSQL
together as one statement (``pack_scans_sql``: the scan run for each pair of an array): one socket write, one
wake-up of the server and one result for the lot, where each of those cost a scan about as much CPU as its
statement's execution (group commit, for reads). Each pack's rows are exactly those its own scan would read,
and all come from one snapshot, as on the thread path.

A served proof is one statement too (``SqlUnit.proof_material``), read here on the same connections; the hop to
a request thread and back cost a proof served to one client about 0.4 ms of its 1.5 ms (p50), 0.6-1.0 ms at
p95, on a 10^6-entry ledger. When every connection is busy, or scans are waiting for one, a proof goes to the
request threads instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from ledger.merkle import NodeID
from ledger.state import Batch, Pack
from ledger.storage.database import Database, redact
from ledger.storage.sql import (
    PROOF_PG,
    ProofMaterial,
    TrailRow,
    pack_scan_rows,
    pack_scans_sql,
    proof_material_rows,
    proof_params,
)

logger = logging.getLogger("athar.ledger")

ScanRows = tuple[Pack, Batch, int, list[TrailRow]]
Answer = tuple[bool, ScanRows | None]
Kinds = tuple[tuple[str, ...], tuple[str, ...]]
UNREAD: Answer = (False, None)

APPLICATION_NAME = "athar-scans"
#: seconds to wait for a new connection before falling back to the request threads
CONNECT_TIMEOUT = 5
#: seconds ``close`` lets the batches under way finish before it cancels them
CLOSE_WAIT = 5
#: scans read by one statement at most: enough to empty a worker's queue at 64 clients in a turn or two
MAX_BATCH = 32


class _Scan:
    __slots__ = ("answer", "gtin", "kinds", "serial")

    def __init__(self, kinds: Kinds, gtin: str, serial: str, answer: asyncio.Future[Answer]) -> None:
        self.kinds, self.gtin, self.serial, self.answer = kinds, gtin, serial, answer


class AsyncScans:
    """Up to ``size`` connections, opened when first needed, each reading one batch of scans at a time. Bound to
    the event loop that first uses it (a driver's asynchronous connection is); ``close`` on that loop."""

    def __init__(self, db: Database, size: int = 4) -> None:
        assert not db.is_sqlite, "asynchronous scans are for PostgreSQL"
        self._url = redact(db.url)
        self._dialect = db.reader.dialect
        _, params = db.reader.dialect.create_connect_args(db.reader.url)
        # the engine's own parameters, adapters included, so both paths read rows alike
        self._params: dict[str, Any] = {**params, "autocommit": True}
        self._params.setdefault("connect_timeout", CONNECT_TIMEOUT)
        self._params.setdefault("application_name", APPLICATION_NAME)  # what pg_stat_activity shows for them
        self._size = size
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._queue: list[_Scan] = []
        self._batches: set[asyncio.Task[None]] = set()
        self._proofs = 0  # proofs being read, each on a connection of its own
        self._dispatch_due = False
        self._closed = False
        self._failing = False

    async def pack_scan(self, gtin: str, serial: str, *, single: Iterable[str], wide: Iterable[str]) -> Answer:
        """``(True, SqlUnit.pack_scan's answer)``, or ``(False, None)`` when the database could not be read here
        (the caller then reads through the engine)."""
        if self._closed:
            return UNREAD
        loop = asyncio.get_running_loop()
        scan = _Scan((tuple(sorted(single)), tuple(sorted(wide))), gtin, serial, loop.create_future())
        self._queue.append(scan)
        if not self._dispatch_due:
            # after the other requests of this turn of the loop have queued their scans too
            self._dispatch_due = True
            loop.call_soon(self._dispatch)
        # a cancelled caller cancels only its own wait: its scan, maybe already sent, is answered to nobody
        return await scan.answer

    async def proof_material(self, ids: Sequence[NodeID], *, checkpoint: int = -1, first: int = -1,
                             index: int = -1) -> ProofMaterial | None:
        """``SqlUnit.proof_material``'s answer, or None when it cannot be read here now (every connection busy,
        scans waiting for one, the database unreachable, a defect): the caller then reads it through the
        engine."""
        if self._closed or self._queue or len(self._batches) + self._proofs >= self._size:
            return None  # scans waiting for a connection come first: a pack is being dispensed
        self._proofs += 1
        try:
            try:
                conn = self._idle.pop() if self._idle else await self._connect()
            except psycopg.Error as exc:
                self._failed("could not connect to", exc)
                return None
            try:
                async with psycopg.AsyncRawCursor(conn) as cur:
                    await cur.execute(PROOF_PG, proof_params(ids, checkpoint, first, index), prepare=True)
                    rows = await cur.fetchall()
            except psycopg.Error as exc:
                self._failed("failed on", exc)
                await self._drop(conn)
                return None
            except Exception:  # a defect, not an outage: said in the log, and the proof goes to the threads
                logger.exception("asynchronous proof read failed")
                await _discard(conn)  # its state is not known
                return None
            except BaseException:
                await asyncio.shield(_discard(conn))  # cancelled mid-statement: its state is not known
                raise
            await self._release(conn)
            try:
                return proof_material_rows(rows)
            except Exception:  # a defect, not an outage: said in the log, and the proof goes to the threads
                logger.exception("asynchronous proof read failed")
                return None
        finally:
            self._proofs -= 1
            if self._queue:
                self._dispatch()  # scans that waited for this connection

    def _dispatch(self) -> None:
        self._dispatch_due = False
        while self._queue and len(self._batches) + self._proofs < self._size:
            kinds = self._queue[0].kinds  # one statement per kind of scan (there is one kind today)
            batch = [s for s in self._queue if s.kinds == kinds][:MAX_BATCH]
            taken = {id(s) for s in batch}
            self._queue = [s for s in self._queue if id(s) not in taken]
            task = asyncio.get_running_loop().create_task(self._read(batch))
            self._batches.add(task)
            task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        self._dispatch()  # the scans that queued while every connection was busy: the next batch

    async def _read(self, batch: list[_Scan]) -> None:
        found: list[Answer] = [UNREAD] * len(batch)
        try:
            found = await self._statements(batch)
        except Exception:  # a defect, not an outage: said in the log, and the scans go to the request threads
            logger.exception("asynchronous scan failed")
        finally:  # whatever happened, nobody is left waiting
            for scan, answer in zip(batch, found, strict=True):
                if not scan.answer.done():
                    scan.answer.set_result(answer)

    async def _statements(self, batch: list[_Scan]) -> list[Answer]:
        if self._closed:
            return [UNREAD] * len(batch)
        try:
            conn = self._idle.pop() if self._idle else await self._connect()
        except psycopg.Error as exc:
            self._failed("could not connect to", exc)
            return [UNREAD] * len(batch)
        try:
            rows = await _execute(conn, pack_scans_sql(self._dialect, *batch[0].kinds), batch)
        except psycopg.Error as exc:
            # a restarted server, a dropped connection: this connection is done; the next batch opens another
            self._failed("failed on", exc)
            await self._drop(conn)
            return [UNREAD] * len(batch)
        except BaseException:
            # cancelled mid-statement (the server is closing down): the connection's state is not known
            await asyncio.shield(_discard(conn))
            raise
        await self._release(conn)
        return [(True, pack_scan_rows(r)) for r in rows]

    async def _release(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """A connection whose statement succeeded: kept for the next one, unless closing down."""
        if self._closed:
            await _discard(conn)
        else:
            self._idle.append(conn)
        if self._failing:
            self._failing = False
            logger.info("asynchronous scans read %s again", self._url)

    async def _drop(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """A connection whose statement failed: after a restart the idle ones are as stale, each would fail a
        statement of its own."""
        stale, self._idle = [conn, *self._idle], []
        for c in stale:
            await _discard(c)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(**self._params)
        try:
            # One plan for the batch statement, made once per connection. Left to choose, PostgreSQL planned it
            # afresh for every batch, as it cannot tell how many pairs an array holds (0.9 against 0.2 ms a
            # batch). Set here, not in the connection's options, which would hide PGOPTIONS from libpq.
            await conn.execute("SET plan_cache_mode = force_generic_plan")
        except BaseException:
            await asyncio.shield(_discard(conn))
            raise
        return conn

    def _failed(self, what: str, exc: psycopg.Error) -> None:
        # once per outage: every scan meets it, and each is answered (or refused) by the usual path anyway
        if not self._failing:
            self._failing = True
            logger.warning("asynchronous scan %s %s: %s; scans go through the request threads until it answers",
                           what, self._url, str(exc).strip())

    async def close(self) -> None:
        """Stop taking scans, let the batches under way finish, and close every connection."""
        self._closed = True
        if self._batches:
            _, stuck = await asyncio.wait(list(self._batches), timeout=CLOSE_WAIT)
            for task in stuck:  # a statement waiting on a lock, say: its callers are told to read elsewhere
                task.cancel()
            if stuck:
                await asyncio.wait(stuck, timeout=CLOSE_WAIT)  # the driver's cancellation is bounded too
        queued, self._queue = self._queue, []
        for scan in queued:
            if not scan.answer.done():
                scan.answer.set_result(UNREAD)
        idle, self._idle = self._idle, []
        for conn in idle:
            await _discard(conn)


async def _execute(conn: psycopg.AsyncConnection[Any], sql: str, batch: list[_Scan]) -> list[list[Any]]:
    """Each scan's rows, in the batch's order, from one statement (``pack_scans_sql``)."""
    found: list[list[Any]] = [[] for _ in batch]
    async with psycopg.AsyncRawCursor(conn) as cur:
        await cur.execute(sql, ([s.gtin for s in batch], [s.serial for s in batch]), prepare=True)
        for row in await cur.fetchall():
            found[row[0] - 1].append(row[1:])
    return found


async def _discard(conn: psycopg.AsyncConnection[Any]) -> None:
    with contextlib.suppress(psycopg.Error):  # already broken: nothing left to release
        await conn.close()
