"""Structured logs: one JSON object per line on stderr (the access log itself is api.middleware.AccessLog).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

logger = logging.getLogger("athar.access")
# what a request's handler wants on the request's access-log line (one line per request, not two: writing a log
# line costs an append as much CPU as checking its signature)
_REQUEST_FIELDS: ContextVar[dict[str, Any] | None] = ContextVar("athar_request_fields", default=None)


@contextmanager
def request_fields() -> Iterator[dict[str, Any]]:
    """Fields for the access-log line of the request being served inside (``AccessLog``)."""
    fields: dict[str, Any] = {}
    token = _REQUEST_FIELDS.set(fields)
    try:
        yield fields
    finally:
        _REQUEST_FIELDS.reset(token)


def log_with_request(log: logging.Logger, message: str, fields: dict[str, Any]) -> None:
    """Put ``fields`` on the current request's access-log line, or log them as a line of their own when there is
    no request (or no access log)."""
    current = _REQUEST_FIELDS.get()
    if current is not None:
        current.update(fields)
    else:
        log.info(message, extra={"fields": fields})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname.lower(),
               "logger": record.name, "message": record.getMessage()}
        doc.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[0] is not None:
            # what an operator needs to diagnose a 500: uvicorn's own line says only "Exception in ASGI application"
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def configure_logging(level: int = logging.INFO) -> None:
    # Every request writes a line: skip what the JSON lines never show (the caller's file and line, thread and
    # process names), as the logging documentation's "Optimization" section suggests; a fifth of a line's cost.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("athar", "uvicorn.error"):
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.setLevel(level)
        log.propagate = False
