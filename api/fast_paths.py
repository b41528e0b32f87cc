"""The busiest requests served ahead of FastAPI's router.

``GET /v1/packs/{gtin}/{serial}`` (every dispense, every patient check), ``POST /v1/events`` (every handoff)
and the RFC 9162 proofs (every verifier keeping up with the log) need none of the router's machinery, which
costs about a third of a request's CPU, or half a millisecond of a proof's latency. These middlewares answer
exactly their plain forms with the routes' own functions (``scan_pack``, ``record_event``, ``inclusion``,
``consistency``) and the same problem responses; any other form (a signed read, other query parameters, odd
values) goes on to the router unchanged. Tests compare both answers.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api import problems
from api.routes.events import record_event
from api.routes.log import MAX_SIZE, consistency, inclusion
from api.routes.packs import LOT_MAX, scan_pack
from ledger.errors import LedgerError

PREFIX = "/v1/packs/"
EVENTS = "/v1/events"
PROOFS = {"/v1/log/proof/inclusion": ("index", "tree_size"), "/v1/log/proof/consistency": ("first", "second")}


class EventSubmissions:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == EVENTS
                and not scope["query_string"]):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:  # the size limit is enforced by BodyLimit, outside this middleware
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        response: Response
        try:
            response = await record_event(scope["app"].state.athar, b"".join(chunks))
        except LedgerError as err:
            response = problems.ledger_problem(err, scope["path"])
        await response(scope, receive, send)


class PublicPackScans:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._public_scan(scope) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        gtin, serial, lot, expiry = route
        response: Response
        try:
            response = JSONResponse(await scan_pack(scope["app"].state.athar, gtin, serial, lot, expiry, None))
        except LedgerError as err:
            response = problems.ledger_problem(err, scope["path"])
        await response(scope, receive, send)

    @staticmethod
    def _public_scan(scope: Scope) -> tuple[str, str, str | None, str | None] | None:
        path: str = scope["path"]
        if scope["method"] != "GET" or not path.startswith(PREFIX):
            return None
        parts = path[len(PREFIX):].split("/")
        if len(parts) != 2 or not all(parts):
            return None
        if any(name.startswith(b"athar-") for name, _ in scope["headers"]):
            return None  # a signed read: the router authenticates it
        query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        names = [k for k, _ in query]
        if len(set(names)) != len(names) or not set(names) <= {"lot", "expiry"}:
            return None
        values = dict(query)
        lot, expiry = values.get("lot"), values.get("expiry")
        if lot is not None and len(lot) > LOT_MAX:
            return None  # the router's parameter validation answers that one
        return parts[0], parts[1], lot or None, expiry or None


class PublicProofs:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        numbers = self._plain_proof(scope) if scope["type"] == "http" else None
        if numbers is None:
            await self.app(scope, receive, send)
            return
        st = scope["app"].state.athar
        response: Response
        try:
            proof = await (inclusion if scope["path"].endswith("/inclusion") else consistency)(st, *numbers)
            response = JSONResponse(proof.model_dump(mode="json"))
        except LedgerError as err:
            response = problems.ledger_problem(err, scope["path"])
        await response(scope, receive, send)

    @staticmethod
    def _plain_proof(scope: Scope) -> tuple[int, int] | None:
        names = PROOFS.get(scope["path"])
        if names is None or scope["method"] != "GET":
            return None
        query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        if sorted(k for k, _ in query) != sorted(names):
            return None
        values = dict(query)
        # plain decimal within the router's bounds; anything else gets the router's validation problem
        if not all(v.isascii() and v.isdigit() and len(v) <= 19 for v in values.values()):
            return None
        a, b = (int(values[n]) for n in names)
        return (a, b) if max(a, b) <= MAX_SIZE else None
