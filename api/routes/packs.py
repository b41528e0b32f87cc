"""GET /v1/packs/{gtin}/{serial}: the verdict made at every dispense."""

from __future__ import annotations

from fastapi import APIRouter, Query

from api.deps import MaybeWho, State
from api.problems import responses
from api.schemas import PackOut
from ledger import identifiers as ids

router = APIRouter(prefix="/v1/packs", tags=["packs"])


@router.get("/{gtin}/{serial}", response_model=PackOut, summary="Verdict and provenance of one pack",
            description="Public. Give lot and expiry as scanned to detect a MISMATCH. A signed request by a "
                        "pharmacy or hospital also checks that it holds the pack (NOT_IN_CUSTODY).",
            responses=responses(401, 422))
async def get_pack(gtin: str, serial: str, st: State, who: MaybeWho,
                   lot: str | None = Query(default=None, max_length=20),
                   expiry: str | None = Query(default=None, description="YYYY-MM-DD or GS1 YYMMDD")) -> PackOut:
    report = await st.run(
        lambda: st.reader.scan(ids.gtin14(gtin), ids.serial(serial), lot=ids.lot(lot) if lot else None,
                               expiry=ids.expiry(expiry) if expiry else None, who=who))
    return PackOut.of(report)
