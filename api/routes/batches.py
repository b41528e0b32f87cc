"""Batch state, signed history with proofs, and the EPCIS 2.0 export. Actors that handled the batch,
regulators and inspectors only."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.deps import State, Who
from api.path_segments import SEGMENT  # noqa: F401 - registers the {name:segment} convertor used below
from api.problems import responses
from api.schemas import BatchOut, HistoryOut
from ledger import identifiers as ids
from ledger.epcis import to_epcis_document
from ledger.queries import Principal, Reader

router = APIRouter(prefix="/v1/batches", tags=["batches"])


@router.get("/{gtin}/{lot:segment}", response_model=BatchOut, summary="Batch state and holdings",
            responses=responses(401, 403, 404, 422))
async def get_batch(gtin: str, lot: str, st: State, who: Who) -> BatchOut:
    view = await st.run(st.reader.batch, ids.gtin14(gtin), ids.lot(lot), who)
    return BatchOut.of(view)


@router.get("/{gtin}/{lot:segment}/history", response_model=HistoryOut,
            summary="The batch's hash chain: signed entries with inclusion proofs against one checkpoint",
            responses=responses(401, 403, 404, 422))
async def history(gtin: str, lot: str, st: State, who: Who) -> HistoryOut:
    return HistoryOut.of(await st.run_heavy(st.reader.history, ids.gtin14(gtin), ids.lot(lot), who))


def _epcis(reader: Reader, gtin: str, lot: str, who: Principal) -> dict[str, Any]:
    entries = reader.batch_entries(gtin, lot, who)
    actors = {a.id: a for a, _ in reader.actors()}
    return to_epcis_document(entries, actors, created=dt.datetime.now(dt.UTC), sender=None)


@router.get("/{gtin}/{lot:segment}/epcis", summary="The batch's history as an EPCIS 2.0 JSON-LD document",
            responses={200: {"content": {"application/ld+json": {}}}, **responses(401, 403, 404, 422)})
async def epcis(gtin: str, lot: str, st: State, who: Who) -> JSONResponse:
    doc = await st.run_heavy(_epcis, st.reader, ids.gtin14(gtin), ids.lot(lot), who)
    return JSONResponse(doc, media_type="application/ld+json")


bundles = APIRouter(prefix="/v1/bundles", tags=["offline bundles"])


class BundleRequest(BaseModel):
    batches: list[str] = Field(default_factory=list, max_length=1000,
                               description="batches as '<gtin>/<lot>'", examples=[["06111234567895/L2026A"]])
    region: str | None = Field(default=None, max_length=100)
    actor: str | None = Field(default=None, max_length=64)


@bundles.post("", summary="An offline verification bundle",
              description="Signed checkpoint, manifest of chain heads signed by the ledger key, the actor registry "
                          "and every entry of the chosen batches with inclusion proofs. `athar scan --offline` "
                          "verifies it with no network.",
              responses={200: {"content": {"application/json": {}}}, **responses(401, 403, 404, 422)})
async def bundle(body: BundleRequest, st: State, who: Who) -> JSONResponse:
    pairs = []
    for item in body.batches:
        gtin, _, lot = item.partition("/")
        pairs.append((ids.gtin14(gtin), ids.lot(lot)))
    doc = await st.run_heavy(lambda: st.reader.bundle(who, batches=pairs, region=body.region, actor=body.actor))
    return JSONResponse(doc)
