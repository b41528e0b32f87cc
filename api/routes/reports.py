"""Suspect-pack reports from the public, and the alerts the regulator reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request

from api.deps import MaybeWho, State, Who
from api.problems import responses
from api.routes.events import parse_json
from api.schemas import AlertOut, PublicReportIn, ReceiptOut
from ledger import identifiers as ids

router = APIRouter(tags=["reports and alerts"])


@router.post("/v1/reports", status_code=201, response_model=ReceiptOut, summary="Report a suspect pack",
             description="Open to citizens (rate limited per address) and actors. The report becomes an alert "
                         "for the regulator. Personal details in 'details' never enter the log: the log keeps a "
                         "salted hash and the text can be erased. Actors may instead submit a signed 'report' "
                         "event to /v1/events.",
             responses=responses(401, 422, 429, 503))
async def report(body: PublicReportIn, request: Request, st: State, who: MaybeWho) -> ReceiptOut:
    parse_json(await request.body())  # what the model cannot see: a key given twice (the last would win)
    client = request.client.host if request.client else "unknown"
    if who is None and not await st.run(st.limiter.allow, client):  # a file write: off the loop
        raise HTTPException(429, "too many reports from this address; try again in a minute",
                            headers={"Retry-After": "60"})
    region = body.region or (who.actor.region if who else None)
    receipt = await st.run(
        lambda: st.reports.file(gtin=ids.gtin14(body.gtin), category=body.category,
                                serial=ids.serial(body.serial) if body.serial is not None else None,
                                lot=ids.lot(body.lot) if body.lot is not None else None,
                                expiry=ids.expiry(body.expiry) if body.expiry is not None else None, region=region,
                                details=body.details))
    return ReceiptOut.of(receipt)


@router.get("/v1/alerts", response_model=list[AlertOut], summary="Alerts (regulators and inspectors)",
            responses=responses(401, 403))
async def alerts(st: State, who: Who,
                 status: Annotated[str | None, Query(pattern="^(open|investigating|closed)$")] = None,
                 kind: Annotated[str | None, Query(max_length=64, description="e.g. duplicate_dispense")] = None,
                 suspect: Annotated[str | None, Query(max_length=64, description="an actor id: the alerts about it "
                                                      "(and the reports it filed, kind 'report')")] = None,
                 gtin: Annotated[str | None, Query(max_length=14)] = None,
                 limit: Annotated[int, Query(ge=1, le=5000)] = 500,
                 before: Annotated[int | None, Query(ge=0, description="the next page: alerts logged before this "
                                                                       "log index (the last index of a page)")] = None,
                 ) -> list[AlertOut]:
    """Newest first, ``limit`` at a time; ``before`` pages on."""
    wanted = ids.gtin14(gtin) if gtin is not None else None
    rows = await st.run_heavy(lambda: st.reader.alerts(who, status, limit, kind=kind, suspect=suspect, gtin=wanted,
                                                       before=before))
    return [AlertOut.of(a) for a in rows]
