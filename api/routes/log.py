"""The transparency-log endpoints: checkpoint, verifier key, entries and RFC 9162 proofs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from api.deps import State, Who
from api.problems import responses
from api.schemas import EntriesOut, EntryOut, ProofOut
from ledger import errors as E
from ledger.checkpoint import CheckpointError

router = APIRouter(prefix="/v1/log", tags=["log"])
MAX_SIZE = 2**62
Size = Annotated[int, Query(ge=0, le=MAX_SIZE)]


@router.get("/checkpoint", response_class=PlainTextResponse, summary="The latest signed checkpoint",
            description="A C2SP tlog-checkpoint in a C2SP signed note, signed by the ledger key, followed by the "
                        "C2SP tlog-cosignature lines of the witnesses that verified it.",
            responses={200: {"content": {"text/plain": {"example": "athar.local/ledger\n43\nw5Nd...=\n\n"
                                                                   "— athar.local/ledger AbCd...\n"}}},
                       **responses(404, 503)})
async def checkpoint(st: State) -> PlainTextResponse:
    note = await st.run(st.ledger.cosigned_checkpoint)
    if note is None:
        raise E.NotFound("the log is empty: no checkpoint yet")
    return PlainTextResponse(note, headers={"Cache-Control": "no-cache"})


class CosignaturesOut(BaseModel):
    accepted: list[str]


@router.post("/cosignatures", response_model=CosignaturesOut, summary="A witness cosigns a checkpoint",
             description="Body: a checkpoint note of this ledger with C2SP tlog-cosignature lines added by witnesses "
                         "configured on the server (keys/witnesses/<name>.pub). Each cosignature is verified before "
                         "it is stored and served with the checkpoint.",
             openapi_extra={"requestBody": {"required": True,
                                            "content": {"text/plain": {"schema": {"type": "string"}}}}},
             responses=responses(401, 404, 422))
async def cosignatures(request: Request, st: State) -> CosignaturesOut:
    try:
        note = (await request.body()).decode("utf-8")
        accepted = await st.run(st.ledger.add_cosignatures, note)
    except (UnicodeDecodeError, CheckpointError) as exc:
        raise E.InvalidEvent(f"not a checkpoint note: {exc}") from exc
    return CosignaturesOut(accepted=accepted)


@router.get("/public-key", response_class=PlainTextResponse, summary="The ledger's verifier key",
            description="The checkpoint verifier key in signed-note verifier-key form: name+keyhash+base64(0x01||key).")
async def public_key(st: State) -> PlainTextResponse:
    return PlainTextResponse(st.ledger.config.verifier_key + "\n")


@router.get("/entries", response_model=EntriesOut, summary="Log entries [start, end)",
            description="At most 1000 entries per call, and fewer when they are large (about 8 MB of entries; at "
                        "least one): continue from start plus the number returned. Regulators and inspectors only "
                        "(entries hold volumes).",
            responses=responses(401, 403, 422, 503))
async def entries(st: State, who: Who, start: Size, end: Size) -> EntriesOut:
    rows = await st.run_heavy(st.reader.entries, start, end, who)
    return EntriesOut(start=start, entries=[EntryOut.of(e) for e in rows])


@router.get("/proof/inclusion", response_model=ProofOut, summary="RFC 9162 inclusion proof",
            responses=responses(404, 422, 503))
async def inclusion(st: State, index: Size, tree_size: Size) -> ProofOut:
    if not index < tree_size:
        raise E.InvalidQuery(f"index {index} must be smaller than tree_size {tree_size}")
    p = await st.inclusion_proof(index, tree_size)
    return ProofOut(tree_size=tree_size, root_hash=p.root.hex(), hashes=[h.hex() for h in p.hashes],
                    leaf_index=index, leaf_hash=p.leaf_hash.hex() if p.leaf_hash else None)


@router.get("/proof/consistency", response_model=ProofOut, summary="RFC 9162 consistency proof",
            responses=responses(404, 422, 503))
async def consistency(st: State, first: Size, second: Size) -> ProofOut:
    if not 0 < first <= second:
        raise E.InvalidQuery(f"need 0 < first <= second, got first={first} second={second}")
    p = await st.consistency_proof(first, second)
    assert p.first_root is not None
    return ProofOut(tree_size=second, root_hash=p.root.hex(), hashes=[h.hex() for h in p.hashes],
                    first=first, first_root_hash=p.first_root.hex())
