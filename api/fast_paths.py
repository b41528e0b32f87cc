"""The busiest requests served ahead of FastAPI's router.

``GET /v1/packs/{gtin}/{serial}`` (every dispense, every patient check), ``POST /v1/events`` (every handoff)
and the RFC 9162 proofs (every verifier keeping up with the log) need none of the router's machinery, which
costs about a third of a request's CPU, or half a millisecond of a proof's latency. These middlewares answer
exactly their plain forms with the routes' own functions (``scan_pack``, ``record_event``, ``inclusion``,
``consistency``) and the same problem responses; any other form (a signed read, other query parameters, odd
values) goes on to the router unchanged. Tests compare both answers.
"""

from __future__ import annotations

from typing import Generic, TypeVar
from urllib.parse import parse_qsl

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api import problems
from api.deps import AppState
from api.path_segments import SLASH
from api.routes.events import media_problem, record_event
from api.routes.log import MAX_SIZE, consistency, inclusion
from api.routes.packs import LOT_MAX, scan_pack
from ledger.errors import LedgerError

T = TypeVar("T")
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
        refusal = media_problem(next((v for k, v in scope["headers"] if k == b"content-type"), b""), EVENTS)
        if refusal is not None:
            await refusal(scope, receive, send)
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


class _PlainGet(Generic[T]):
    """A GET answered ahead of the router when ``plain`` recognises its plain form (and returns its arguments);
    any other request goes on unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        args = self.plain(scope) if scope["type"] == "http" and scope["method"] == "GET" else None
        if args is None:
            await self.app(scope, receive, send)
            return
        response: Response
        try:
            response = await self.answer(scope["app"].state.athar, scope["path"], args)
        except LedgerError as err:
            response = problems.ledger_problem(err, scope["path"])
        await response(scope, receive, send)

    @staticmethod
    def plain(scope: Scope) -> T | None:
        raise NotImplementedError

    async def answer(self, st: AppState, path: str, args: T) -> Response:
        raise NotImplementedError


class PublicPackScans(_PlainGet[tuple[str, str, str | None, str | None]]):
    async def answer(self, st: AppState, path: str, args: tuple[str, str, str | None, str | None]) -> Response:
        gtin, serial, lot, expiry = args
        return JSONResponse(await scan_pack(st, gtin, serial, lot, expiry, None))

    @staticmethod
    def plain(scope: Scope) -> tuple[str, str, str | None, str | None] | None:
        path: str = scope["path"]
        if not path.startswith(PREFIX):
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
        return parts[0], parts[1].replace(SLASH, "/"), lot or None, expiry or None


class PublicProofs(_PlainGet[tuple[int, int]]):
    async def answer(self, st: AppState, path: str, args: tuple[int, int]) -> Response:
        proof = await (inclusion if path.endswith("/inclusion") else consistency)(st, *args)
        return JSONResponse(proof.model_dump(mode="json"))

    @staticmethod
    def plain(scope: Scope) -> tuple[int, int] | None:
        names = PROOFS.get(scope["path"])
        if names is None:
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
