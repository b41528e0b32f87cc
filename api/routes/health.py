"""Liveness, readiness and the problem-type documentation."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import State
from api.problems import HTTP_PROBLEMS, problem, public_detail, responses, status_for
from api.schemas import HealthOut
from ledger import errors as E

router = APIRouter(tags=["operations"])


@router.get("/v1/health", response_model=HealthOut, summary="Liveness: the process answers")
async def health() -> HealthOut:
    return HealthOut(status="ok")


@router.get("/v1/ready", response_model=HealthOut, summary="Readiness: the database answers",
            responses={503: {"model": HealthOut}})
async def ready(st: State) -> JSONResponse:
    try:
        size = await st.run(st.ledger.size)
    except E.LedgerError as err:
        return JSONResponse(HealthOut(status="unavailable", detail=public_detail(err)).model_dump(), status_code=503)
    return JSONResponse(HealthOut(status="ready", tree_size=size).model_dump())


@router.get("/problems/{code}", summary="What a problem type means", responses=responses(404))
async def problem_type(code: str) -> JSONResponse:
    for cls in E.all_error_classes():
        if cls.code == code:
            return JSONResponse({"type": f"/problems/{code}", "title": cls.title, "status": status_for(cls),
                                 "description": (cls.__doc__ or cls.title).strip()})
    if code in HTTP_PROBLEMS:
        status, title = HTTP_PROBLEMS[code]
        return JSONResponse({"type": f"/problems/{code}", "title": title, "status": status, "description": title})
    return problem(404, "not_found", "Unknown problem type", f"no problem type {code!r}")
