"""The regulator's views: alert statistics, recalls, risk indicators, and the dashboard page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse, JSONResponse

from api.deps import State, Who
from api.path_segments import SEGMENT  # noqa: F401 - registers the {name:segment} convertor used below
from api.problems import responses
from ledger import errors as E
from ledger import identifiers as ids
from ledger.queries import Oversight, Principal
from ledger.read_auth import authenticate_session
from ledger.recall import RecallReport
from ledger.risk import to_json as risk_json

router = APIRouter(tags=["oversight"])
_templates = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent.parent / "templates"),
                                autoescape=True)


def recall_json(r: RecallReport) -> dict[str, Any]:
    return {"gtin": r.gtin, "lot": r.lot, "recalled_index": r.recalled_index, "recalled_at": r.recalled_at.isoformat(),
            "reason": r.reason, "in_field_at_recall": r.in_field_at_recall, "in_field_now": r.in_field_now,
            "recovered_share": round(r.recovered_share, 4), "holders": r.holders,
            "timeline": [{"index": p.index, "time": p.time.isoformat(), "in_field": p.in_field,
                          "recovered_share": p.recovered_share} for p in r.timeline]}


@router.get("/v1/alerts/stats", summary="Alert counts and the false-alert rate", responses=responses(401, 403))
async def alert_stats(st: State, who: Who) -> JSONResponse:
    stats = await st.run_heavy(Oversight(st.reader).alert_stats, who)
    return JSONResponse({"by_status": stats.by_status, "by_kind": stats.by_kind,
                         "closed_confirmed": stats.closed_confirmed, "closed_false_alarm": stats.closed_false_alarm,
                         "false_alert_rate": stats.false_alert_rate})


@router.get("/v1/recalls", summary="Every recalled batch: who holds the stock, share recovered over time",
            responses=responses(401, 403))
async def recalls(st: State, who: Who) -> JSONResponse:
    reports = await st.run_heavy(st.reader.recalled_batches, who)
    return JSONResponse([recall_json(r) for r in reports])


@router.get("/v1/recalls/{gtin}/{lot:segment}", summary="One recall's progress",
            responses=responses(401, 403, 404, 409, 422))
async def recall(gtin: str, lot: str, st: State, who: Who) -> JSONResponse:
    report = await st.run_heavy(st.reader.recall, ids.gtin14(gtin), ids.lot(lot), who)
    return JSONResponse(recall_json(report))


@router.get("/v1/audit/risk", summary="Risk indicators per actor, region and batch, with their evidence",
            description="Each score is explained by the signals behind it; each signal names the log entries that "
                        "are its evidence. Regulators and inspectors only.", responses=responses(401, 403))
async def risk(st: State, who: Who,
               limit: Annotated[int, Query(ge=1, le=1000, description="subjects per level")] = 50) -> JSONResponse:
    report = await st.run_heavy(Oversight(st.reader).risk, who)
    doc = risk_json(report)
    for level in ("actors", "regions", "batches"):
        if isinstance(doc.get(level), list):
            doc[level] = doc[level][:limit]
    return JSONResponse(doc)


def _dashboard(st: State, who: Principal) -> str:
    oversight = Oversight(st.reader)
    alerts = st.reader.alerts(who, "open", 50)
    stats = oversight.alert_stats(who)
    risk_report = oversight.risk(who)
    recalls_ = st.reader.recalled_batches(who)
    volumes = oversight.volumes(who)
    dwell = oversight.dwell_histogram(who)
    regions = sorted({r for r, _, _ in volumes})
    days = sorted({d for _, d, _ in volumes})
    series = {r: [next((n for rr, dd, n in volumes if rr == r and dd == d), 0) for d in days] for r in regions}
    peak = max([n for _, _, n in volumes], default=1)
    return _templates.get_template("dashboard.html").render(
        who=who.actor, now=st.ledger.clock(), alerts=alerts, stats=stats, risk=risk_report.actors[:10],
        recalls=recalls_, series=series, days=days, peak=peak, dwell=dwell,
        dwell_peak=max([n for _, n in dwell], default=1) or 1, tree_size=st.ledger.size())


@router.get("/dashboard", response_class=HTMLResponse, summary="The regulator's dashboard (HTML)",
            description="Open with a session token made by `athar dashboard` (the regulator signs a short-lived "
                        "claim with its own key).", responses=responses(401, 403, 422))
async def dashboard(st: State, token: Annotated[str | None, Query(max_length=2000)] = None) -> HTMLResponse:
    if not token:  # as any signed resource: 401, saying how to sign
        raise HTTPException(401, "the dashboard needs a session token: open the link 'athar dashboard' prints")
    who = await st.run(authenticate_session, st.ledger, token)
    if not who.oversees:
        raise E.RoleNotAllowed("the dashboard is for regulators and inspectors")
    html = await st.run_heavy(_dashboard, st, who)
    return HTMLResponse(html, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})

