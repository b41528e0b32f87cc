"""Where athar keeps its data by default (kept light: the CLI reads it before importing anything heavy)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "ATHAR_HOME"
ENV_DATABASE_URL = "ATHAR_DATABASE_URL"
#: set by ``athar serve`` for the processes it starts: the directory they share, and (with several workers) the
#: process their lifetime is tied to (``api.supervision``)
ENV_RUN_DIR = "ATHAR_RUN_DIR"
ENV_SUPERVISOR_PID = "ATHAR_SUPERVISOR_PID"
#: in the run directory: why a worker could not start, for ``athar serve`` to report once it has stopped
STARTUP_FAILURE_FILE = "startup-failure"
#: the checkpoint origin (and signed-note key name) when none is configured
DEFAULT_ORIGIN = "athar.local/ledger"


def default_home() -> Path:
    """``$ATHAR_HOME``, else the per-user data directory."""
    if os.environ.get(ENV_HOME):
        return Path(os.environ[ENV_HOME]).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("athar"))
