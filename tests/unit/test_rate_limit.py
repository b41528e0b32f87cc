"""The anonymous-report limit: a sliding minute per client address, one count for all of a server's workers."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from api.rate_limit import RateLimiter

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_client_files_its_limit_per_sliding_minute() -> None:
    clock = Clock()
    limiter = RateLimiter(3, clock=clock)
    assert [limiter.allow("10.0.0.1") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("10.0.0.2")  # another address has its own count
    clock.now += 30
    assert not limiter.allow("10.0.0.1")
    clock.now += 30.5  # the first three are more than a minute old
    assert [limiter.allow("10.0.0.1") for _ in range(4)] == [True, True, True, False]
    limiter.close()


def test_refused_reports_are_not_counted() -> None:
    clock = Clock()
    limiter = RateLimiter(1, clock=clock)
    assert limiter.allow("a")
    for _ in range(5):
        clock.now += 10
        assert not limiter.allow("a")
    clock.now += 10.1  # a minute after the one report that was counted, however many were refused since
    assert limiter.allow("a")


_FILE_REPORTS = """
import sys, time
from pathlib import Path
from api.rate_limit import RateLimiter
limiter = RateLimiter(5, Path(sys.argv[1]))
sys.stdin.readline()  # every process is started before any of them counts
allowed = 0
for _ in range(8):  # the processes run through the same addresses together, each one's five taken by all
    for n in range(100):
        allowed += limiter.allow(f"203.0.113.{n}")
print(allowed)
"""


def test_worker_processes_share_one_count(tmp_path: Path) -> None:
    """Four processes (what `athar serve --workers 4` runs) counting in one file: five reports per address get
    through in all, not five per process."""
    path = tmp_path / "public-reports.sqlite"
    procs = [subprocess.Popen([sys.executable, "-c", _FILE_REPORTS, str(path)], cwd=ROOT, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(4)]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _out, err in results]
    assert sum(int(out) for out, _err in results) == 100 * 5
    assert not RateLimiter(5, path).allow("203.0.113.9")  # a worker started later sees the same count
    assert RateLimiter(5, path).allow("203.0.113.100")


def test_a_limiter_it_cannot_write_lets_the_report_through(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "public-reports.sqlite"
    limiter = RateLimiter(1, path, busy_timeout=0.1)
    assert limiter.allow("a")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holding the file
    try:
        with caplog.at_level(logging.WARNING, logger="athar.rate_limit"):
            assert limiter.allow("a")  # over the limit, but not counted: let through rather than lost
        assert "report limit not checked" in caplog.text
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not limiter.allow("a")  # counted again once the file is free


def test_a_check_queued_behind_others_lets_the_report_through_in_time(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RateLimiter(1, busy_timeout=0.1)
    assert limiter.allow("a")
    limiter._lock.acquire()  # another request thread of this worker, stuck on the file
    try:
        with caplog.at_level(logging.WARNING, logger="athar.rate_limit"):
            assert limiter.allow("a")
        assert "not checked in time" in caplog.text
    finally:
        limiter._lock.release()
    assert not limiter.allow("a")
