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

from ledger.paths import ENV_SUPERVISOR_PID

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


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
