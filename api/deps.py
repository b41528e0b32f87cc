"""Dependencies: the ledger objects held by the app, and the optional or required reader identity."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request

from api.rate_limit import RateLimiter
from api.settings import Settings
from ledger import errors as E
from ledger.queries import PackReport, Principal, Reader
from ledger.read_auth import authenticate_read
from ledger.request_signing import HEADER_ACTOR, HEADER_KEY, HEADER_SIGNATURE, HEADER_TIME
from ledger.sequencer import GroupCommitter
from ledger.sequencer_link import RemoteCommitter
from ledger.service import CheckedProof, Ledger, PublicReports
from ledger.storage.async_scans import AsyncScans
from ledger.storage.database import Database

T = TypeVar("T")


@dataclass
class AppState:
    settings: Settings
    ledger: Ledger
    db: Database
    committer: GroupCommitter | RemoteCommitter
    reader: Reader
    reports: PublicReports
    limiter: RateLimiter
    # Blocking ledger calls run here: as many threads as the database pool holds connections for them, so
    # requests queue for a thread instead of opening (and closing) overflow connections under load.
    executor: ThreadPoolExecutor
    # Reports that read a whole history or the whole ledger (EPCIS, bundles, risk, dashboard...) have threads
    # of their own, so a few of them cannot hold up the scans made at every dispense.
    heavy: ThreadPoolExecutor
    # Public pack scans read on the event loop (PostgreSQL only; None on SQLite): see ledger.storage.async_scans.
    scans: AsyncScans | None = None
    # On SQLite a public scan is a read of a local file that does not wait on writers (WAL), shorter than the hop
    # to a request thread and back: read on the event loop when it needs only indexed columns, one worker served
    # 2,000 scans/s by threads and 3,400/s this way (thirteenth session, docs/performance.md).
    scans_inline: bool = False

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def public_pack(self, gtin: str, serial: str, *, lot: str | None, expiry: dt.date | None) -> PackReport:
        """A pack's public verdict (no reader, no custody check): read on the event loop where that can answer,
        else by a request thread."""
        if self.scans is not None:
            report = await self.reader.public_pack(self.scans, gtin, serial, lot=lot, expiry=expiry)
            if report is not None:
                return report
        elif self.scans_inline:
            report = self.reader.public_pack_now(gtin, serial, lot=lot, expiry=expiry)
            if report is not None:
                return report
        return await self.run(lambda: self.reader.pack(gtin, serial, lot=lot, expiry=expiry))

    async def inclusion_proof(self, index: int, tree_size: int) -> CheckedProof:
        """What ``GET /v1/log/proof/inclusion`` serves: read on the event loop where that can answer (PostgreSQL),
        else by a request thread."""
        if self.scans is not None:
            proof = await self.ledger.inclusion_at_checkpoint_on(self.scans, index, tree_size)
            if proof is not None:
                return proof
        return await self.run(self.ledger.inclusion_at_checkpoint, index, tree_size)

    async def consistency_proof(self, first: int, second: int) -> CheckedProof:
        if self.scans is not None:
            proof = await self.ledger.consistency_at_checkpoints_on(self.scans, first, second)
            if proof is not None:
                return proof
        return await self.run(self.ledger.consistency_at_checkpoints, first, second)

    async def run_heavy(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.heavy, fn, *args)


async def state(request: Request) -> AppState:
    # async: a plain function dependency would cost every request a hop through the thread pool
    app_state: AppState = request.app.state.athar
    return app_state


State = Annotated[AppState, Depends(state)]


async def _principal(request: Request, st: AppState) -> Principal | None:
    headers = request.headers
    names = (HEADER_ACTOR, HEADER_KEY, HEADER_TIME, HEADER_SIGNATURE)
    present = [h for h in names if h in headers]
    if not present:
        return None
    if len(present) != len(names):
        missing = ", ".join(h for h in names if h not in headers)
        raise E.SignatureInvalid(f"incomplete signed request: missing {missing}")
    # the path as sent, still percent-encoded (protocol.md section 7): what the client signed, and what tells a '/'
    # inside a lot (%2F) from the one between segments
    raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
    query: bytes = request.scope.get("query_string") or b""
    path = raw.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")
    return await st.run(
        lambda: authenticate_read(st.ledger, actor=headers[HEADER_ACTOR], key_id=headers[HEADER_KEY],
                                  timestamp=headers[HEADER_TIME], signature=headers[HEADER_SIGNATURE],
                                  method=request.method, path=path,
                                  max_skew=dt.timedelta(seconds=st.settings.read_auth_skew_seconds)))


async def optional_reader(request: Request, st: State) -> Principal | None:
    return await _principal(request, st)


async def required_reader(request: Request, st: State) -> Principal:
    who = await _principal(request, st)
    if who is None:
        raise HTTPException(401, "this resource needs a signed request (Athar-Actor, Athar-Key-Id, "
                                 "Athar-Timestamp, Athar-Signature headers; see docs/protocol.md)")
    return who


MaybeWho = Annotated[Principal | None, Depends(optional_reader)]
Who = Annotated[Principal, Depends(required_reader)]
