"""API settings, read from the environment (ATHAR_*) by ``Settings.from_env``.

``athar serve`` reads them once before it starts any worker (by name: the CLI does not import the API), so a bad
value stops it with one line instead of every worker failing, and being restarted, on its own. Each variable, its
default and its range are listed in ``ENV_LIMITS``; README's "Configuration" section documents the same.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ledger.paths import ENV_RUN_DIR, default_home


class SettingsError(ValueError):
    """An ATHAR_* variable that cannot be used; the message names it, its value and what is allowed."""


#: variable -> (field, lowest, highest) for the numeric settings. The lowest values are what the server needs to work
#: at all: a body limit under 1 KiB refuses every signed event, a pool under 3 connections leaves the committer or
#: the overdue check waiting on the request threads (see ``api.app``), a transit limit of 0 days flags every shipment.
ENV_LIMITS: dict[str, tuple[str, int, int]] = {
    "ATHAR_MAX_BODY_BYTES": ("max_body_bytes", 1024, 1024**3),
    "ATHAR_PUBLIC_REPORTS_PER_MINUTE": ("public_reports_per_minute", 0, 1_000_000),
    "ATHAR_DB_POOL_SIZE": ("pool_size", 3, 1000),
    "ATHAR_MAX_TRANSIT_DAYS": ("max_transit_days", 1, 3650),
    "ATHAR_OVERDUE_CHECK_SECONDS": ("overdue_check_seconds", 0, 86_400),
    "ATHAR_SHUTDOWN_TIMEOUT_SECONDS": ("shutdown_timeout_seconds", 1, 3600),
}


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    #: anonymous citizen reports per client address per minute (0: none are taken)
    public_reports_per_minute: int = 5
    #: a signed read request is valid this many seconds either side of the server clock
    read_auth_skew_seconds: int = 300
    pool_size: int = 10
    #: shipments still in transit after this many days raise an alert
    max_transit_days: int = 7
    #: how often the server looks for overdue shipments (seconds; 0 disables)
    overdue_check_seconds: int = 600
    #: after SIGTERM, how long ``athar serve`` lets requests in flight finish before it closes their connections: a
    #: client that sent half a request must not hold a stop for ever (systemd's TimeoutStopSec is 90 s by default)
    shutdown_timeout_seconds: int = 20
    #: the Unix socket of the sequencer process started by ``athar serve`` (None: each process appends itself)
    sequencer_socket: str | None = None
    #: a directory private to one ``athar serve`` run, shared by its workers (None: the app keeps its state itself)
    run_dir: Path | None = None

    @classmethod
    def from_env(cls) -> Settings:
        """The settings the environment gives; ``SettingsError`` for a value that is not a whole number in range."""
        env = os.environ
        numbers = {field: _whole_number(env, name, getattr(cls, field), low, high)
                   for name, (field, low, high) in ENV_LIMITS.items()}
        return cls(
            data_dir=Path(env["ATHAR_HOME"]).expanduser() if env.get("ATHAR_HOME") else default_home(),
            database_url=env.get("ATHAR_DATABASE_URL") or None,
            sequencer_socket=env.get("ATHAR_SEQUENCER_SOCKET") or None,
            run_dir=Path(env[ENV_RUN_DIR]) if env.get(ENV_RUN_DIR) else None,
            **numbers,
        )


def _whole_number(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip()
    # int() alone would also take "1_000" and non-ASCII digits; an operator's typo should not pass as a number
    value = int(text) if text.lstrip("+-").isascii() and text.lstrip("+-").isdigit() else None
    if value is None or not low <= value <= high:
        raise SettingsError(f"{name}={raw!r} is not allowed: it must be a whole number from {low} to {high}")
    return value
