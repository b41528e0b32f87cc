"""What one ``athar serve`` run sets up around uvicorn: how many workers it starts by default, and the private
directory its processes share (the sequencer's socket, the count of anonymous reports)."""

from __future__ import annotations

import contextlib
import fcntl
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
OWN_CGROUP = Path("/proc/self/cgroup")


def default_workers(cgroup: Path = CGROUP, own: Path = OWN_CGROUP) -> int:
    """One worker process per core this process may use, at most ``MAX_DEFAULT_WORKERS``: the cores it may run
    on, or fewer when a CPU quota on its control group, or on a group above it, allows fewer (a container, or a
    service with systemd's ``CPUQuota=``)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpus(cgroup, own)
    return max(1, min(cores, quota or cores, MAX_DEFAULT_WORKERS))


def cgroup_cpus(root: Path = CGROUP, own: Path = OWN_CGROUP) -> int | None:
    """The fewest CPUs a quota allows on this process's control group or those above it, rounded up (cgroup v2
    ``cpu.max``; else v1's CFS quota at the mount's root); None without a quota."""
    try:
        # cgroup v2: "0::/system.slice/athar.service"
        path = next(line[3:].strip() for line in own.read_text().splitlines() if line.startswith("0::"))
    except (OSError, StopIteration):
        path = "/"
    group = root / path.lstrip("/")
    found = []
    for directory in (group, *group.parents):
        if directory == root.parent:
            break
        try:
            quota, period = (directory / "cpu.max").read_text().split()
            if quota != "max":
                found.append(max(1, math.ceil(int(quota) / int(period))))
        except (OSError, ValueError):
            pass
    if found:
        return min(found)
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
    # Locked for the whole run: the lock, not the process id, says the run is alive, so a run in another process
    # namespace sharing this directory (a container) or a reused id is never taken for a dead one. Locked before
    # it takes its name, so a sweep never finds it unlocked.
    with open(Path(path, PID_FILE + ".new"), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(f"{os.getpid()}\n")
        held.flush()
        os.rename(held.name, Path(path, PID_FILE))
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
    """Remove the run directories of this user that no run holds any more (a kill -9 leaves its directory);
    return them. A directory without a pid file, or whose pid file is locked by a live run, is left."""
    removed = []
    for candidate in parent.glob(PREFIX + "*"):
        try:
            if candidate.is_symlink() or candidate.stat().st_uid != os.getuid():
                continue
            with open(candidate / PID_FILE) as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its run holds it
                shutil.rmtree(candidate, ignore_errors=True)
                removed.append(candidate)
        except OSError:
            continue
    return removed


def _exit_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)  # a stop asked for, as uvicorn's supervisor ends one; service managers count 143 a failure
