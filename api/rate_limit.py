"""How many anonymous reports each client address filed in the last minute, counted across the worker processes
of one ``athar serve``.

uvicorn's workers are separate processes: a count kept in each of them let a client file the limit once per
worker. The count lives in a small SQLite file in the server's run directory instead (``ATHAR_RUN_DIR``, made by
``athar serve`` and removed when it stops), shared through SQLite's own file locking. An app made without a run
directory (tests, a program embedding the API) counts in memory. Reports are rare, so one small write per report
costs nothing that matters, and the counts need not outlive the server.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

WINDOW_SECONDS = 60.0

#: the file in the run directory
FILE_NAME = "public-reports.sqlite"


class RateLimiter:
    """A sliding one-minute window per client address."""

    def __init__(self, per_minute: int, path: Path | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        # CLOCK_MONOTONIC is one clock for every process of the machine, and the file lasts one server run
        self.per_minute = per_minute
        self._clock = clock
        self._lock = threading.Lock()
        # autocommit mode: the transaction below is spelled out, so the check and the count are one step
        self._db = sqlite3.connect(str(path) if path else ":memory:", timeout=10, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA synchronous=OFF")  # lost counts after a machine crash let a minute's reports more
        self._db.execute("CREATE TABLE IF NOT EXISTS hits (client TEXT NOT NULL, at REAL NOT NULL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS hits_by_client ON hits (client, at)")
        self._db.execute("CREATE INDEX IF NOT EXISTS hits_by_time ON hits (at)")

    def allow(self, client: str) -> bool:
        """Count one report from ``client`` unless it already filed ``per_minute`` in the last minute."""
        now = self._clock()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # the write lock first: two workers cannot both see room for one
            try:
                self._db.execute("DELETE FROM hits WHERE at <= ?", (now - WINDOW_SECONDS,))
                (filed,) = self._db.execute("SELECT count(*) FROM hits WHERE client = ?", (client,)).fetchone()
                allowed = bool(filed < self.per_minute)
                if allowed:
                    self._db.execute("INSERT INTO hits (client, at) VALUES (?, ?)", (client, now))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return allowed

    def close(self) -> None:
        with self._lock:
            self._db.close()
