"""Served proofs read on the event loop (``AsyncScans.proof_material``, through ``Ledger.*_on``) answer exactly
as the request threads do, or step aside (None) so that the threads answer: on real PostgreSQL, with a killed
connection, every connection busy, scans waiting, and defects."""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from api.settings import Settings
from ledger import errors as E
from ledger.home import open_ledger
from ledger.merkle import NodeID
from ledger.provenance import BATCH_WIDE, SINGLE_PACK
from ledger.service import CheckedProof, Ledger
from ledger.storage import async_scans
from ledger.storage.async_scans import AsyncScans
from ledger.storage.sql import ProofMaterial
from tests.integration.server import running_server
from tests.support import GTIN, World, make_world, pg_kill_sessions, pg_sessions


@pytest.fixture
def app_url(postgres_url: str) -> str:
    """The test schema's URL with an application name of its own, so its sessions can be found and killed."""
    return f"{postgres_url}&application_name=proof-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def world(tmp_path: Path, app_url: str) -> Iterator[World]:
    w = make_world(tmp_path / "home", app_url)
    serials = w.commission("PRF", 6)
    w.deliver("maphar", "dist-north", "PRF", serials)
    w.deliver("dist-north", "ph-rabat", "PRF", serials[:2])
    yield w
    w.db.dispose()


@pytest.fixture
def locker(app_url: str) -> Iterator[sa.Engine]:
    """Sessions of another application name, to take table locks the loop's statements then wait on."""
    engine = sa.create_engine(app_url.replace("application_name=proof-", "application_name=lock-"))
    yield engine
    engine.dispose()


@pytest.fixture
def fresh(world: World) -> Iterator[Ledger]:
    """Another process's ledger: nothing kept, proofs read by the thread path."""
    ledger, db = open_ledger(world.home.path, world.db.url)
    yield ledger
    db.dispose()


def test_proofs_on_the_loop_match_the_thread_path(world: World, fresh: Ledger) -> None:
    loop_side, thread_side = world.ledger, fresh
    size = world.ledger.size()

    async def run() -> None:
        scans = AsyncScans(world.db)
        try:
            for _round in range(2):  # the second from the nodes kept in the first
                for tree_size in range(1, size + 1):
                    for index in range(tree_size):
                        got = await loop_side.inclusion_at_checkpoint_on(scans, index, tree_size)
                        assert got == thread_side.inclusion_at_checkpoint(index, tree_size)
                for first, second in itertools.combinations(range(1, size + 1), 2):
                    got = await loop_side.consistency_at_checkpoints_on(scans, first, second)
                    assert got == thread_side.consistency_at_checkpoints(first, second)
            # refusals are the same too: no checkpoint of that size; an index outside the tree
            for index, tree_size, refusal in ((0, size + 1, E.NotFound), (size, size, E.InvalidQuery)):
                with pytest.raises(refusal) as on_loop:
                    await loop_side.inclusion_at_checkpoint_on(scans, index, tree_size)
                with pytest.raises(refusal) as on_thread:
                    thread_side.inclusion_at_checkpoint(index, tree_size)
                assert on_loop.value.message == on_thread.value.message
        finally:
            await scans.close()

    asyncio.run(run())


def test_a_killed_connection_steps_aside_once_then_reconnects(world: World, app_url: str) -> None:
    size = world.ledger.size()

    async def run() -> list[CheckedProof | None]:
        scans = AsyncScans(world.db)
        try:
            got = [await world.ledger.inclusion_at_checkpoint_on(scans, 0, size)]
            world.db.dispose()  # the engine's sessions go; the loop's stays
            assert pg_kill_sessions(app_url) == 1
            for _ in range(2):
                got.append(await world.ledger.inclusion_at_checkpoint_on(scans, 1, size))
            return got
        finally:
            await scans.close()

    first, killed, again = asyncio.run(run())
    assert first is not None and killed is None and again == world.ledger.inclusion_at_checkpoint(1, size)


def test_with_every_connection_busy_a_proof_steps_aside_at_once(world: World, locker: sa.Engine) -> None:
    size = world.ledger.size()

    async def run() -> tuple[CheckedProof | None, CheckedProof | None]:
        scans = AsyncScans(world.db, size=1)
        try:
            with locker.connect() as conn:
                conn.execute(sa.text("LOCK TABLE packs IN ACCESS EXCLUSIVE MODE"))
                scan = asyncio.ensure_future(scans.pack_scan(GTIN, "X", single=SINGLE_PACK, wide=BATCH_WIDE))
                await asyncio.sleep(0.2)  # the scan now holds the only connection, waiting on the lock
                busy = await asyncio.wait_for(world.ledger.inclusion_at_checkpoint_on(scans, 0, size), 5)
                conn.rollback()
            await scan
            free = await world.ledger.inclusion_at_checkpoint_on(scans, 0, size)
            return busy, free
        finally:
            await scans.close()

    busy, free = asyncio.run(run())
    assert busy is None and free is not None


@pytest.mark.parametrize("where", ["proof_params", "proof_material_rows"])
def test_a_defect_in_sending_or_reading_a_proof_is_logged_and_the_proof_steps_aside(
        world: World, where: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> object:
        raise ValueError("something of an unexpected shape")

    monkeypatch.setattr(async_scans, where, broken)

    async def run() -> CheckedProof | None:
        scans = AsyncScans(world.db)
        try:
            return await world.ledger.inclusion_at_checkpoint_on(scans, 0, world.ledger.size())
        finally:
            await scans.close()

    with caplog.at_level(logging.ERROR, logger="athar.ledger"):
        assert asyncio.run(run()) is None
    assert "asynchronous proof read failed" in caplog.text and "unexpected shape" in caplog.text


def test_served_proofs_are_read_on_the_loop_and_by_the_threads_when_it_steps_aside(
        world: World, app_url: str, fresh: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    size = world.ledger.size()
    expected = fresh
    read_on_loop: list[int] = []
    real = AsyncScans.proof_material
    step_aside = False

    async def counted(self: AsyncScans, ids: list[NodeID], **kw: Any) -> ProofMaterial | None:
        read_on_loop.append(1)
        return None if step_aside else await real(self, ids, **kw)

    monkeypatch.setattr(AsyncScans, "proof_material", counted)
    world.db.dispose()
    settings = Settings(data_dir=world.home.path, database_url=app_url)
    with running_server(settings) as base, httpx.Client(base_url=base, timeout=30) as http:
        answers = []
        for aside in (False, True):
            step_aside = aside
            before = len(read_on_loop)
            inclusion = http.get("/v1/log/proof/inclusion", params={"index": 2, "tree_size": size})
            consistency = http.get("/v1/log/proof/consistency", params={"first": 3, "second": size})
            assert inclusion.status_code == consistency.status_code == 200
            assert len(read_on_loop) == before + 2  # each asked the loop first
            answers.append((inclusion.json(), consistency.json()))
    want_inclusion = expected.inclusion_at_checkpoint(2, size)
    want_consistency = expected.consistency_at_checkpoints(3, size)
    for inclusion_doc, consistency_doc in answers:  # the loop's answers, then the threads'
        assert inclusion_doc["hashes"] == [h.hex() for h in want_inclusion.hashes]
        assert inclusion_doc["leaf_hash"] == want_inclusion.leaf_hash.hex()  # type: ignore[union-attr]
        assert consistency_doc["hashes"] == [h.hex() for h in want_consistency.hashes]
        assert consistency_doc["root_hash"] == want_consistency.root.hex()


def test_a_scan_waiting_for_a_proofs_connection_gets_it_when_the_proof_ends(world: World, app_url: str,
                                                                            locker: sa.Engine) -> None:
    size = world.ledger.size()
    world.db.dispose()

    async def run() -> tuple[CheckedProof | None, Any]:
        scans = AsyncScans(world.db, size=1)
        try:
            with locker.connect() as conn:
                conn.execute(sa.text("LOCK TABLE merkle_nodes IN ACCESS EXCLUSIVE MODE"))  # the proof waits on it
                proof = asyncio.ensure_future(world.ledger.inclusion_at_checkpoint_on(scans, 0, size))
                await asyncio.sleep(0.2)
                scan = asyncio.ensure_future(scans.pack_scan(GTIN, "X", single=SINGLE_PACK, wide=BATCH_WIDE))
                await asyncio.sleep(0.2)
                assert pg_sessions(app_url) == 1  # the scan waits for the proof's connection: no second one
                assert not scan.done()
                conn.rollback()
            return await proof, await asyncio.wait_for(scan, 5)  # the proof's end starts the waiting scan
        finally:
            await scans.close()

    proof, scan = asyncio.run(run())
    assert proof is not None and scan == (True, None)  # read on the loop: no such pack


def test_a_proof_arriving_with_a_scan_lets_the_scan_go_first(world: World) -> None:
    size = world.ledger.size()

    async def run() -> tuple[Any, CheckedProof | None, CheckedProof | None]:
        scans = AsyncScans(world.db)
        try:
            # in the same turn of the event loop: the scan queues first, and the proof steps aside to the threads
            scan = asyncio.ensure_future(scans.pack_scan(GTIN, "X", single=SINGLE_PACK, wide=BATCH_WIDE))
            proof = asyncio.ensure_future(world.ledger.inclusion_at_checkpoint_on(scans, 0, size))
            found, aside = await scan, await proof
            return found, aside, await world.ledger.inclusion_at_checkpoint_on(scans, 0, size)
        finally:
            await scans.close()

    found, aside, later = asyncio.run(run())
    assert found == (True, None) and aside is None and later is not None
