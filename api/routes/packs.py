"""GET /v1/packs/{gtin}/{serial}: the verdict made at every dispense."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api.deps import AppState, MaybeWho, State
from api.path_segments import SEGMENT  # noqa: F401 - registers the {name:segment} convertor used below
from api.problems import responses
from api.schemas import PackBundleOut, PackOut, pack_json
from ledger import identifiers as ids
from ledger.queries import Principal

router = APIRouter(prefix="/v1/packs", tags=["packs"])
LOT_MAX = 20


async def scan_pack(st: AppState, gtin: str, serial: str, lot: str | None, expiry: str | None,
                    who: Principal | None) -> dict[str, Any]:
    """The verdict as JSON; shared by this route and its fast path (``api.fast_paths``)."""
    g, s, scanned_lot = ids.gtin14(gtin), ids.serial(serial), ids.lot(lot) if lot else None
    scanned_expiry = ids.expiry(expiry) if expiry else None
    if who is None:
        return pack_json(await st.public_pack(g, s, lot=scanned_lot, expiry=scanned_expiry))
    return pack_json(await st.run(lambda: st.reader.scan(g, s, lot=scanned_lot, expiry=scanned_expiry, who=who)))


@router.get("/{gtin}/{serial:segment}", response_model=PackOut, summary="Verdict and provenance of one pack",
            description="Public. Give lot and expiry as scanned to detect a MISMATCH. A signed request by a "
                        "pharmacy or hospital also checks that it holds the pack (NOT_IN_CUSTODY).",
            responses=responses(401, 422))
async def get_pack(gtin: str, serial: str, st: State, who: MaybeWho,
                   lot: str | None = Query(default=None, max_length=LOT_MAX),
                   expiry: str | None = Query(default=None, description="YYYY-MM-DD or GS1 YYMMDD")) -> JSONResponse:
    return JSONResponse(await scan_pack(st, gtin, serial, lot, expiry, who))


@router.get("/{gtin}/{serial:segment}/bundle", response_model=PackBundleOut, summary="A one-pack verification bundle",
            description="Public. A few kilobytes that let a scanner check this pack with no network: the pack's "
                        "public state and provenance signed by the ledger key at a signed checkpoint, with an "
                        "inclusion proof of its latest step (and that step's signed entry when it is a dispense, a "
                        "recall or a quarantine). It does not say who holds the pack. Verify it with `athar bundle "
                        "verify`; `athar scan --offline` takes it like a batch bundle.",
            responses=responses(404, 422, 503))
async def get_pack_bundle(gtin: str, serial: str, st: State) -> JSONResponse:
    g, s = ids.gtin14(gtin), ids.serial(serial)
    return JSONResponse(await st.run(lambda: st.reader.pack_bundle(g, s)))
