"""The FastAPI application: ``create_app(settings)``; ``app`` is built from the environment for uvicorn."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import logging
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api import problems
from api.deps import AppState
from api.fast_paths import EventSubmissions, PublicPackScans, PublicProofs
from api.middleware import AccessLog, BodyLimit
from api.observability import configure_logging
from api.path_segments import EncodedSlashes
from api.rate_limit import FILE_NAME as RATE_FILE
from api.rate_limit import RateLimiter
from api.routes import actors, batches, digital_link, events, health, log, oversight, packs, reports
from api.settings import Settings
from api.supervision import STARTUP_FAILURE, end_with_supervisor, record_startup_failure
from ledger.errors import LedgerError
from ledger.heap import settle_after_start
from ledger.home import open_ledger
from ledger.proc_name import API_WORKER, name_this_process
from ledger.queries import Reader
from ledger.sequencer import GroupCommitter
from ledger.sequencer_link import RemoteCommitter
from ledger.service import PublicReports
from ledger.storage.async_scans import AsyncScans

logger = logging.getLogger("athar.api")

DESCRIPTION = """\
athar is a tamper-evident traceability ledger for medicines. Every batch is recorded from manufacturer to
pharmacy as an append-only, hash-chained log of events that each party signs with Ed25519 (RFC 8785
canonical JSON), logged in an RFC 9162 Merkle tree with C2SP signed checkpoints.

* **Writes**: `POST /v1/events` with a signed event; the signature is the authentication.
* **Reads**: public for pack verdicts, proofs and checkpoints; signed requests (`Athar-*` headers) for batch
  histories, raw entries and alerts. See `docs/protocol.md`.
* **Errors**: RFC 9457 `application/problem+json`, with a stable `code`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The sequencer thread waits on the database between short bursts of work while request threads
        # compute; with the default 5 ms GIL switch interval it would wait up to 5 ms after every query.
        sys.setswitchinterval(0.0005)
        try:
            ledger, db = open_ledger(settings.data_dir, settings.database_url, pool_size=settings.pool_size)
        except LedgerError as err:
            record_startup_failure(err.message)
            raise
        local = GroupCommitter(ledger)
        committer = RemoteCommitter(local, settings.sequencer_socket) if settings.sequencer_socket else local
        # the committer and the overdue check hold a connection each, two go to heavy reports, the request
        # threads share the rest
        executor = ThreadPoolExecutor(max(2, settings.pool_size - 4), thread_name_prefix="athar-request")
        heavy = ThreadPoolExecutor(2, thread_name_prefix="athar-report")
        # counted across this server's workers when `athar serve` gave them a run directory
        limiter = RateLimiter(settings.public_reports_per_minute,
                              settings.run_dir / RATE_FILE if settings.run_dir else None)
        app_state = AppState(settings, ledger, db, committer, Reader(ledger), PublicReports(ledger), limiter,
                             executor, heavy, None if db.is_sqlite else AsyncScans(db), scans_inline=db.is_sqlite)
        app.state.athar = app_state
        watcher = (asyncio.create_task(_overdue_loop(app_state)) if settings.overdue_check_seconds > 0
                   else None)
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
            try:
                if app_state.scans is not None:
                    await app_state.scans.close()
            finally:
                committer.close()
                executor.shutdown(wait=True, cancel_futures=True)
                heavy.shutdown(wait=True, cancel_futures=True)
                app_state.limiter.close()
                db.dispose()

    app = FastAPI(title="athar", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  docs_url="/docs", redoc_url=None, **_no_telemetry())
    problems.install(app)
    app.add_middleware(PublicProofs)  # innermost of ours: access-logged and size-limited like any request
    app.add_middleware(PublicPackScans)
    app.add_middleware(EventSubmissions)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(EncodedSlashes)  # outside the fast paths, which route by the path as it leaves
    app.add_middleware(AccessLog)  # added last, so outermost: it sees every response, 413s included

    for module in (events, log, actors, batches, packs, digital_link, reports, oversight, health):
        app.include_router(module.router)
    app.include_router(batches.bundles)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = problems.PROBLEM_SCHEMA
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _no_telemetry() -> dict[str, Any]:
    """athar's observability is its JSON access log. Recent FastAPI releases (0.165 here) look up the global
    OpenTelemetry providers, environment included, on every request unless told not to: about 5 % of a scan's
    CPU. Older releases have no such hook, nor the setting."""
    if "telemetry" not in inspect.signature(FastAPI).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


async def _overdue_loop(st: AppState) -> None:
    """Alert on shipments not received in time. Alert ids are per shipment, so several workers doing this
    at once file each alert once."""
    while True:
        await asyncio.sleep(st.settings.overdue_check_seconds)
        try:
            await st.run(st.ledger.overdue_shipments, dt.timedelta(days=st.settings.max_transit_days))
        except LedgerError as err:
            logger.warning("overdue-shipment check failed: %s", err.message)


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory api.app:app_from_env`` (what ``athar serve`` runs)."""
    name_this_process(API_WORKER)
    end_with_supervisor()
    configure_logging()
    try:
        app = create_app(Settings.from_env())
    except Exception as exc:  # uvicorn would restart a worker that raised here, forever: say why, and stop
        record_startup_failure(str(exc) or type(exc).__name__)
        logger.error("the API worker cannot start: %s", exc)
        sys.exit(STARTUP_FAILURE)
    settle_after_start()  # not in create_app: tests build many apps in one process
    return app
