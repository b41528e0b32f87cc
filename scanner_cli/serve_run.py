"""What one ``athar serve`` run sets up around uvicorn: how many workers it starts by default, and the private
directory its processes share (the sequencer's socket, the count of anonymous reports)."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

# A worker's threads use at most 14 PostgreSQL connections at once (10 from its pool: 6 request threads, 2 for
# reports, the committer, the overdue check; and 4 for scans), the sequencer a few: four workers stay well within
# PostgreSQL's default max_connections of 100, and more are asked for by name.
MAX_DEFAULT_WORKERS = 4
PREFIX = "athar-"
PID_FILE = "pid"
CGROUP = Path("/sys/fs/cgroup")


def default_workers(cgroup: Path = CGROUP) -> int:
    """One worker process per core this process may use, at most ``MAX_DEFAULT_WORKERS``: the cores it may run
    on, or fewer when its control group's CPU quota allows fewer (a container limited to one CPU on a large
    host)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpus(cgroup)
    return max(1, min(cores, quota or cores, MAX_DEFAULT_WORKERS))


def cgroup_cpus(root: Path = CGROUP) -> int | None:
    """The CPUs a control group's quota allows, rounded up (cgroup v2 ``cpu.max``, else v1's CFS quota); None
    without a quota."""
    try:
        quota, period = (root / "cpu.max").read_text().split()
        if quota == "max":
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return max(1, math.ceil(quota_us / period_us)) if quota_us > 0 and period_us > 0 else None


@contextlib.contextmanager
def run_directory(parent: str | None = None) -> Iterator[str]:
    """A new directory of mode 0700 (only this user reaches what is in it), removed when the run ends, SIGTERM
    included; those left by runs that were killed are removed first."""
    parent = parent or tempfile.gettempdir()
    sweep_stale(Path(parent))
    path = tempfile.mkdtemp(prefix=PREFIX, dir=parent)
    Path(path, PID_FILE).write_text(str(os.getpid()))
    # With one worker uvicorn serves in this process, and after its graceful shutdown it raises SIGTERM again
    # with the handler it found: the default one ended the process before the directory was removed.
    restore = None
    if threading.current_thread() is threading.main_thread():
        restore = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield path
    finally:
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)
        shutil.rmtree(path, ignore_errors=True)


def sweep_stale(parent: Path) -> list[Path]:
    """Remove the run directories of this user whose process is gone (a kill -9 leaves its directory); return
    them. A directory without a process id, or whose process lives, is left."""
    removed = []
    for candidate in parent.glob(PREFIX + "*"):
        try:
            if candidate.stat().st_uid != os.getuid():
                continue
            pid = int((candidate / PID_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not _alive(pid):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    return True


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
