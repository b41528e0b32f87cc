"""How many anonymous reports each client address filed in the last minute, counted across the worker processes
of one ``athar serve``.

uvicorn's workers are separate processes: a count kept in each of them let a client file the limit once per
worker. The count lives in a small SQLite file in the server's run directory instead (``ATHAR_RUN_DIR``, made by
``athar serve`` and removed when it stops), shared through SQLite's own file locking. An app made without a run
directory (tests, a program embedding the API) counts in memory. Reports are rare, so one small write per report
costs nothing that matters, and the counts need not outlive the server. The check is a blocking file write, so
the API makes it on a request thread, never on the event loop; if the file cannot be written in time the report
is let through (and logged): the limit protects the alert queue from floods, and a citizen's report of a suspect
pack must not be lost to a fault of the limiter.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

WINDOW_SECONDS = 60.0

#: the file in the run directory
FILE_NAME = "public-reports.sqlite"
#: how long a check waits for another worker's (seconds); each takes well under a millisecond
BUSY_TIMEOUT = 2.0

log = logging.getLogger("athar.rate_limit")


class RateLimiter:
    """A sliding one-minute window per client address."""

    def __init__(self, per_minute: int, path: Path | None = None, clock: Callable[[], float] = time.monotonic,
                 busy_timeout: float = BUSY_TIMEOUT) -> None:
        # CLOCK_MONOTONIC is one clock for every process of the machine, and the file lasts one server run
        self.per_minute = per_minute
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        # autocommit mode: the transaction below is spelled out, so the check and the count are one step
        self._db = sqlite3.connect(str(path) if path else ":memory:", timeout=busy_timeout, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA synchronous=OFF")  # lost counts after a machine crash let a minute's reports more
        self._db.execute("CREATE TABLE IF NOT EXISTS hits (client TEXT NOT NULL, at REAL NOT NULL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS hits_by_client ON hits (client, at)")
        self._db.execute("CREATE INDEX IF NOT EXISTS hits_by_time ON hits (at)")

    def allow(self, client: str) -> bool:
        """Count one report from ``client`` unless it already filed ``per_minute`` in the last minute. Blocks for
        up to the busy timeout: call it off the event loop."""
        now = self._clock()
        if not self._lock.acquire(timeout=self._busy_timeout):  # this worker's other checks, queued on the file
            log.warning("report limit not checked in time, report let through")
            return True
        try:
            return self._count(client, now)
        except sqlite3.Error as exc:
            log.warning("report limit not checked, report let through: %s", exc)
            return True
        finally:
            self._lock.release()

    def _count(self, client: str, now: float) -> bool:
        self._db.execute("BEGIN IMMEDIATE")  # the write lock first: two workers cannot both see room for one
        try:
            self._db.execute("DELETE FROM hits WHERE at <= ?", (now - WINDOW_SECONDS,))
            (filed,) = self._db.execute("SELECT count(*) FROM hits WHERE client = ?", (client,)).fetchone()
            allowed = bool(filed < self.per_minute)
            if allowed:
                self._db.execute("INSERT INTO hits (client, at) VALUES (?, ?)", (client, now))
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # SQLite may have rolled it back already
                self._db.execute("ROLLBACK")
            raise
        return allowed

    def close(self) -> None:
        with self._lock:
            self._db.close()
