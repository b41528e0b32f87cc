"""Where athar keeps its data by default (kept light: the CLI reads it before importing anything heavy)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "ATHAR_HOME"
ENV_DATABASE_URL = "ATHAR_DATABASE_URL"
#: the checkpoint origin (and signed-note key name) when none is configured
DEFAULT_ORIGIN = "athar.local/ledger"


def default_home() -> Path:
    """``$ATHAR_HOME``, else the per-user data directory."""
    if os.environ.get(ENV_HOME):
        return Path(os.environ[ENV_HOME]).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("athar"))
