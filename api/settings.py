"""API settings, read from the environment (ATHAR_*) by ``Settings.from_env``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ledger.paths import ENV_RUN_DIR, default_home


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str | None = None
    #: base of GS1 Digital Link URIs printed on labels (the resolver: this server, or a public host)
    public_url: str = "http://127.0.0.1:8000"
    max_body_bytes: int = 16 * 1024 * 1024
    #: anonymous citizen reports per client address per minute
    public_reports_per_minute: int = 5
    #: a signed read request is valid this many seconds either side of the server clock
    read_auth_skew_seconds: int = 300
    pool_size: int = 10
    #: shipments still in transit after this many days raise an alert
    max_transit_days: int = 7
    #: how often the server looks for overdue shipments (seconds; 0 disables)
    overdue_check_seconds: int = 600
    #: the Unix socket of the sequencer process started by ``athar serve`` (None: each process appends itself)
    sequencer_socket: str | None = None
    #: a directory private to one ``athar serve`` run, shared by its workers (None: the app keeps its state itself)
    run_dir: Path | None = None

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            data_dir=Path(env["ATHAR_HOME"]).expanduser() if env.get("ATHAR_HOME") else default_home(),
            database_url=env.get("ATHAR_DATABASE_URL") or None,
            public_url=env.get("ATHAR_PUBLIC_URL", cls.public_url).rstrip("/"),
            max_body_bytes=int(env.get("ATHAR_MAX_BODY_BYTES", cls.max_body_bytes)),
            public_reports_per_minute=int(env.get("ATHAR_PUBLIC_REPORTS_PER_MINUTE", cls.public_reports_per_minute)),
            pool_size=int(env.get("ATHAR_DB_POOL_SIZE", cls.pool_size)),
            max_transit_days=int(env.get("ATHAR_MAX_TRANSIT_DAYS", cls.max_transit_days)),
            overdue_check_seconds=int(env.get("ATHAR_OVERDUE_CHECK_SECONDS", cls.overdue_check_seconds)),
            sequencer_socket=env.get("ATHAR_SEQUENCER_SOCKET") or None,
            run_dir=Path(env[ENV_RUN_DIR]) if env.get(ENV_RUN_DIR) else None,
        )
