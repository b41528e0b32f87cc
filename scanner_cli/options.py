"""Options shared by every command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ledger.paths import ENV_DATABASE_URL, ENV_HOME, default_home

DataDir = Annotated[Path | None, typer.Option("--data-dir", help=f"data directory (default ${ENV_HOME}, else a "
                                              "per-user directory)", show_default=False)]
DbUrl = Annotated[str | None, typer.Option("--db", help=f"database URL (default ${ENV_DATABASE_URL}, else the URL "
                                           "in the data directory's config.json, else SQLite in the data directory)",
                                           show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="machine-readable JSON output")]


def home_path(data_dir: Path | None) -> Path:
    return (data_dir or default_home()).expanduser().resolve()
