"""The name a server process shows to ``ps``, ``top`` and ``/proc/PID/comm``.

``athar serve`` runs several Python processes whose command lines look alike (multiprocessing's spawn). Naming
them lets an operator, and the benchmark's CPU accounting, tell the sequencer from the API workers.
"""

from __future__ import annotations

import ctypes
import sys

SEQUENCER = "athar-sequencer"
API_WORKER = "athar-api"
_PR_SET_NAME = 15  # linux/prctl.h
_MAX = 15  # the kernel keeps 15 bytes and a NUL


def name_this_process(name: str) -> bool:
    """Set the calling process's name (Linux only); return whether it was set. A name is a convenience: where
    the call is not available nothing else changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the C library the interpreter already has loaded
        return int(libc.prctl(_PR_SET_NAME, name.encode()[:_MAX], 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False
