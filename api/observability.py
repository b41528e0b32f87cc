"""Structured request logs: one JSON object per line on stderr.

What is logged is chosen, not dumped: method, path without the query string (a dashboard token travels in
the query), status, duration, and the acting actor when the request was signed. Bodies, signatures, keys,
tokens and report details (personal data) are never logged.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi import Request, Response

from ledger.request_signing import HEADER_ACTOR

logger = logging.getLogger("athar.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname.lower(),
               "logger": record.name, "message": record.getMessage()}
        doc.update(getattr(record, "fields", {}))
        return json.dumps(doc, ensure_ascii=False)


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("athar", "uvicorn.error"):
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.setLevel(level)
        log.propagate = False


async def log_requests(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    started = time.perf_counter()
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
    status = 500
    try:
        response = await call_next(request)
        status = response.status_code
        response.headers["X-Request-Id"] = request_id
        return response
    finally:
        fields = {"request_id": request_id, "method": request.method, "path": request.url.path, "status": status,
                  "ms": round((time.perf_counter() - started) * 1000, 2)}
        actor = request.headers.get(HEADER_ACTOR)
        if actor and len(actor) <= 64:
            fields["actor"] = actor
        logger.info("request", extra={"fields": fields})
