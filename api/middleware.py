"""Pure ASGI middleware (Starlette's function middleware costs every request a task and a stream copy)."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import problems
from api.observability import request_fields
from ledger.request_signing import HEADER_ACTOR

logger = logging.getLogger("athar.access")


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with a 413 problem, whether announced or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._too_large(scope, send)
            return
        if length is not None:
            await self.app(scope, receive, send)
            return
        # streamed (chunked) body: read it here, bounded, and replay it to the app
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._too_large(scope, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        response = problems.problem(413, "body_too_large", "Request body too large",
                                    f"the body must be at most {self.limit} bytes", scope.get("path"))
        await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


class AccessLog:
    """One structured line per request: method, path without the query (tokens travel there), status, time,
    and the actor of a signed request. Bodies, signatures, tokens and personal data are never logged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex[:16]
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        with request_fields() as extra:
            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                self._log(extra, request_id, scope, status, started, headers)

    @staticmethod
    def _log(extra: dict[str, Any], request_id: str, scope: Scope, status: int, started: float,
             headers: dict[bytes, bytes]) -> None:
        fields: dict[str, Any] = {**extra, "request_id": request_id, "method": scope.get("method"),
                                  "path": scope.get("path"), "status": status,
                                  "ms": round((time.perf_counter() - started) * 1000, 2)}
        actor = headers.get(HEADER_ACTOR.lower().encode())
        if actor and len(actor) <= 64:  # never over the signed event's actor: the header is not checked there
            fields.setdefault("actor", actor.decode("latin-1"))
        logger.info("request", extra={"fields": fields})
