"""A worker of a multi-worker ``athar serve`` ends when the process that started it is gone.

uvicorn's workers are processes of their own that share the listening socket. If the supervisor is killed (the
OOM killer, ``kill -9``), they would go on serving without it, and a restarted ``athar serve`` could not bind
its port while they hold it. Linux's parent-death signal asks the kernel to send the worker SIGTERM, which
uvicorn answers as at any shutdown: it stops accepting and finishes the requests in flight (appends whose
sequencer died with the supervisor are made by the worker itself, as ``ledger.sequencer_link`` does).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

from ledger.paths import ENV_RUN_DIR, ENV_SUPERVISOR_PID, STARTUP_FAILURE_FILE

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
#: uvicorn's exit status for a worker that failed before serving: its supervisor then stops instead of starting
#: another one that would fail the same way (any other status is taken for a crash, and the worker restarted)
STARTUP_FAILURE = 3


def end_with_supervisor() -> bool:
    """Arrange for SIGTERM when the supervisor named in the environment exits; return whether it is arranged
    (Linux, under a supervisor). Where it cannot be, nothing else changes."""
    expected = os.environ.get(ENV_SUPERVISOR_PID)
    if not expected or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        args = (ctypes.c_int(_PR_SET_PDEATHSIG), *(ctypes.c_ulong(a) for a in (signal.SIGTERM, 0, 0, 0)))
        if int(libc.prctl(*args)) != 0:  # typed: prctl is variadic, and takes unsigned longs after the option
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != int(expected):  # it died before the request was made: the kernel will not tell us now
        os.kill(os.getpid(), signal.SIGTERM)
    return True


def record_startup_failure(reason: str) -> None:
    """Leave ``reason`` in the run directory, where ``athar serve`` reads it after its workers have stopped: their
    own output is uvicorn's log, and the supervisor is the one to say, once, why the server did not start."""
    run_dir = os.environ.get(ENV_RUN_DIR)
    if not run_dir:
        return
    try:
        with open(os.path.join(run_dir, STARTUP_FAILURE_FILE), "x", encoding="utf-8") as f:
            f.write(reason)
    except OSError:  # another worker's reason is there already, or the directory is gone: nothing to add
        pass
