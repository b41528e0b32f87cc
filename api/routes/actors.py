"""The actor registry (public: names, roles, regions and keys of licensed actors are public record)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import State
from api.problems import responses
from api.schemas import ActorOut

router = APIRouter(prefix="/v1/actors", tags=["actors"])


@router.get("", response_model=list[ActorOut], summary="All registered actors and their keys")
async def list_actors(st: State) -> list[ActorOut]:
    return [ActorOut.of(a, keys) for a, keys in await st.run(st.reader.actors)]


@router.get("/{actor_id}", response_model=ActorOut, summary="One actor", responses=responses(404))
async def get_actor(actor_id: str, st: State) -> ActorOut:
    actor, keys = await st.run(st.reader.actor, actor_id)
    return ActorOut.of(actor, keys)
