"""The GS1 Digital Link resolver path printed in the QR code on each pack.

``/01/{gtin}/10/{lot}/21/{serial}?17={yymmdd}`` answers an HTML page to a browser (verdict in Arabic, French
and English, minimal provenance, no volumes) and JSON to a client that asks for ``application/json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from api.deps import State
from api.path_segments import SEGMENT  # noqa: F401 - registers the {name:segment} convertor used below
from api.problems import responses
from api.schemas import PackOut
from api.verdict_texts import SAFE, TEXTS
from ledger import identifiers as ids

router = APIRouter(tags=["digital link"])
_templates = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent.parent / "templates"),
                                autoescape=True)


def wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    if "application/json" in accept and "text/html" not in accept:
        return False
    return "text/html" in accept


async def _resolve(request: Request, st: State, gtin: str, serial: str, lot: str | None,
                   expiry: str | None) -> Response:
    report = await st.public_pack(ids.gtin14(gtin), ids.serial(serial), lot=ids.lot(lot) if lot else None,
                                  expiry=ids.expiry(expiry) if expiry else None)
    out = PackOut.of(report)
    if not wants_html(request):
        return JSONResponse(out.model_dump(mode="json"))
    html = _templates.get_template("pack.html").render(
        verdict=out.verdict, texts=TEXTS.get(out.verdict, TEXTS["UNKNOWN"]), safe=out.verdict in SAFE,
        gtin=out.gtin, serial=out.serial, lot=lot or out.lot, expiry=out.expiry, product=out.product,
        steps=report.steps, reason=out.reason)
    return HTMLResponse(html)


PACK_SCHEMA = {"$ref": "#/components/schemas/PackOut"}
DL_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": "HTML for browsers, JSON (PackOut) for clients asking application/json",
          "content": {"text/html": {}, "application/json": {"schema": PACK_SCHEMA}}}}


@router.get("/01/{gtin}/10/{lot:segment}/21/{serial:segment}", summary="GS1 Digital Link: pack page",
            response_class=Response, responses={**DL_DOC, **responses(422)})
async def digital_link(request: Request, st: State, gtin: str, lot: str, serial: str,
                       expiry: str | None = Query(default=None, alias="17", pattern=r"^[0-9]{6}$")) -> Response:
    return await _resolve(request, st, gtin, serial, lot, expiry)


@router.get("/01/{gtin}/21/{serial:segment}", summary="GS1 Digital Link without lot", response_class=Response,
            responses={**DL_DOC, **responses(422)})
async def digital_link_no_lot(request: Request, st: State, gtin: str, serial: str,
                              expiry: str | None = Query(default=None, alias="17", pattern=r"^[0-9]{6}$")) -> Response:
    return await _resolve(request, st, gtin, serial, None, expiry)
