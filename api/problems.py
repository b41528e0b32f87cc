"""RFC 9457 problem details for every error: ledger errors by class (most specific wins), and the
framework's own errors (validation, unknown route, wrong method, oversized body)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.path_segments import restore
from ledger import errors as E

logger = logging.getLogger("athar.api")
PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "/problems/"

#: HTTP status per error class; the most specific class in an error's MRO wins.
STATUS: dict[type[E.LedgerError], int] = {
    E.LedgerError: 400,
    E.InvalidEvent: 422,
    E.InvalidQuery: 422,
    E.AuthError: 403,
    E.UnknownKey: 401,
    E.SignatureInvalid: 401,
    E.SignerMismatch: 401,
    E.UnknownActor: 422,
    E.ConflictError: 409,
    E.CustodyError: 409,
    E.NotFound: 404,
    E.IntegrityError: 500,
    E.StorageUnavailable: 503,
}


#: problem types raised by the HTTP layer itself rather than by the ledger
HTTP_PROBLEMS: dict[str, tuple[int, str]] = {
    "invalid_request": (422, "A parameter or the body does not match the API's schema"),
    "unauthenticated": (401, "This resource needs a signed request (Athar-* headers)"),
    "body_too_large": (413, "The request body is larger than the server accepts"),
    "rate_limited": (429, "Too many requests from this address; retry later"),
    "not_found": (404, E.NotFound.title),  # the ledger's own not_found and the router's are one type
    "method_not_allowed": (405, "The resource does not accept this method"),
    "internal_error": (500, "The server failed; nothing was written"),
    "unsupported_media_type": (415, "The body must be JSON"),
    "bad_request": (400, "The request is malformed"),
}


def status_for(cls: type[E.LedgerError]) -> int:
    for klass in cls.__mro__:
        if klass in STATUS:
            return STATUS[klass]  # type: ignore[index]
    return 400


def problem(status: int, code: str, title: str, detail: str, instance: str | None = None,
            **extra: Any) -> JSONResponse:
    if code in HTTP_PROBLEMS:  # a type's title is the same at every occurrence (RFC 9457 section 3.1.4)
        title = HTTP_PROBLEMS[code][1]
    body: dict[str, Any] = {"type": PROBLEM_BASE + code, "title": title, "status": status, "detail": detail,
                            "code": code}
    if instance:
        body["instance"] = restore(instance)
    body.update({k: v for k, v in extra.items() if v is not None})
    headers = {"Retry-After": "2"} if status == 503 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def public_detail(err: E.LedgerError) -> str:
    """What any caller may read of an error. What the database said, and where it is, goes to the server's log."""
    if isinstance(err, E.StorageUnavailable) and err.public != err.message:
        logger.warning("%s", err.message)
        return err.public
    return err.message


def ledger_problem(err: E.LedgerError, instance: str | None = None) -> JSONResponse:
    details = {k: v for k, v in err.details.items() if isinstance(v, str | int | float | bool) or v is None}
    return problem(status_for(type(err)), err.code, err.title, public_detail(err), instance,
                   **({"details": details} if details else {}))


def install(app: FastAPI) -> None:
    @app.exception_handler(E.LedgerError)
    async def _ledger(request: Request, err: E.LedgerError) -> JSONResponse:
        return ledger_problem(err, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in err.errors()]
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors) or "invalid request"
        return problem(422, "invalid_request", HTTP_PROBLEMS["invalid_request"][1], detail, request.url.path,
                       errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type",
                429: "rate_limited", 400: "bad_request", 401: "unauthenticated"}.get(err.status_code, "http_error")
        # the title is the type's, the same at every occurrence (RFC 9457 section 3.1.4); the detail is this one's
        title = HTTP_PROBLEMS[code][1] if code in HTTP_PROBLEMS else str(err.detail)
        response = problem(err.status_code, code, title, str(err.detail), request.url.path)
        for k, v in (err.headers or {}).items():
            response.headers[k] = v
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        return problem(500, "internal_error", HTTP_PROBLEMS["internal_error"][1],
                       "the server failed; nothing was written", request.url.path)


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "properties": {
        "type": {"type": "string", "example": "/problems/over_shipment"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "code": {"type": "string", "description": "stable machine-readable error code"},
        "details": {"type": "object"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["type", "title", "status", "detail", "code"],
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of the problem responses a route can give."""
    return {s: {"description": "problem details (RFC 9457)",
                "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
            for s in statuses}
