"""POST /v1/events: submit a signed event. Authenticated by the event signature alone."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import AppState, State
from api.observability import log_with_request
from api.problems import HTTP_PROBLEMS, problem, responses
from api.schemas import ReceiptOut
from ledger import errors as E
from ledger.entry import SignedEvent

router = APIRouter(tags=["events"])
logger = logging.getLogger("athar.events")
MAX_DEPTH = 32
# Bodies up to this size are parsed and signature-checked in the event loop (well under a millisecond);
# bigger ones (a commission listing thousands of serials) in a thread, so other requests are not held up.
INLINE_BYTES = 64 * 1024

SUBMISSION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event", "key_id", "signature"],
    "additionalProperties": False,
    "properties": {
        "event": {"type": "object", "description": "the event body exactly as signed (see docs/protocol.md)"},
        "key_id": {"type": "string", "example": "ed25519:84c613d7c43394245f1519983420cfc6"},
        "signature": {"type": "string", "description": "base64 Ed25519 signature over "
                      "'athar/v1/event' || 0x00 || RFC 8785 canonical JSON of event"},
    },
    "example": {"event": {"v": 1, "type": "dispense", "id": "f3b1c2d4e5", "actor": "ph-rabat",
                          "time": "2026-11-22T10:15:00Z", "gtin": "06111234567895", "serial": "L001S00001"},
                "key_id": "ed25519:84c613d7c43394245f1519983420cfc6", "signature": "base64..."},
}


def parse_json(raw: bytes) -> Any:
    """Strict JSON: UTF-8, no duplicate keys (they would make the signed bytes ambiguous), bounded depth."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise E.InvalidEvent("the JSON object has a duplicate key")
        return dict(pairs)

    def reject_constant(name: str) -> Any:
        raise E.InvalidEvent(f"{name} is not valid JSON")

    check_depth(raw)
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=reject_constant)
    except UnicodeDecodeError as exc:
        raise E.InvalidEvent("the body is not UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise E.InvalidEvent(f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise E.InvalidEvent(f"the body cannot be read: {exc}") from exc
    except RecursionError as exc:  # defence in depth: check_depth should have refused it
        raise E.InvalidEvent(f"the JSON is nested more than {MAX_DEPTH} levels deep") from exc


def check_depth(raw: bytes) -> None:
    """Refuse JSON nested deeper than MAX_DEPTH before parsing it (the parser recurses). Brackets inside
    strings do not count, so a text field may hold any characters."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return  # cannot be nested deeper than that; the usual case, and a 2 MB commission costs nothing
    depth = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # closing quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise E.InvalidEvent(f"the JSON is nested more than {MAX_DEPTH} levels deep")
        elif byte in b"]}":
            depth -= 1


@router.post(
    "/v1/events", status_code=201, response_model=ReceiptOut,
    summary="Submit a signed event",
    description="Records a signed event and returns its receipt. The same signed event submitted again returns "
                "the original receipt (200, replayed=true). A refused event gets a problem naming the rule.",
    openapi_extra={"requestBody": {"required": True,
                                   "content": {"application/json": {"schema": SUBMISSION_SCHEMA}}}},
    responses={200: {"description": "replay: the original receipt", "model": ReceiptOut},
               **responses(401, 403, 404, 409, 413, 415, 422, 503)},
)
async def submit_event(request: Request, st: State) -> JSONResponse:
    refusal = media_problem(request.headers.get("content-type", "").encode("latin-1"), request.url.path)
    return refusal or await record_event(st, await request.body())


def media_problem(content_type: bytes, instance: str) -> JSONResponse | None:
    """A 415 problem unless the body is declared JSON (or not declared at all: a submission is JSON whatever its
    sender forgot to say, and it is parsed strictly). A form or text body is a client that means something else."""
    media = content_type.split(b";", 1)[0].strip().lower()
    if not media or media == b"application/json" or media.endswith(b"+json"):
        return None
    return problem(415, "unsupported_media_type", HTTP_PROBLEMS["unsupported_media_type"][1],
                   f"a signed event is sent as application/json, not {media.decode('latin-1')[:100]}", instance)


async def record_event(st: AppState, raw: bytes) -> JSONResponse:
    """Parse, check and append one submission; shared by this route and its fast path (``api.fast_paths``)."""
    inline = len(raw) <= INLINE_BYTES
    signed = (SignedEvent.from_json(parse_json(raw)) if inline
              else await st.run(lambda: SignedEvent.from_json(parse_json(raw))))
    fields = {"event_type": str(signed.body.get("type"))[:32], "actor": str(signed.body.get("actor"))[:64]}
    try:
        receipt = await st.committer.submit_async(signed, inline=inline)
    except E.LedgerError as err:
        log_with_request(logger, "event refused", {**fields, "code": err.code})
        raise
    log_with_request(logger, "event recorded", {**fields, "index": receipt.index, "replayed": receipt.replayed})
    # the receipt's JSON is the documented ReceiptOut already (tests check it against the schema)
    return JSONResponse(receipt.to_json(), status_code=200 if receipt.replayed else 201)
