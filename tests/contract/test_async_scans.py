"""Public pack scans read on the event loop (``ledger.storage.async_scans``) answer exactly as the thread path
does, alone or batched in one statement, or step aside (None) so that it answers: on real PostgreSQL, with
connections killed, refused and closed, callers that stop waiting and statements stuck on a lock."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from api.settings import Settings
from ledger.provenance import BATCH_WIDE, SINGLE_PACK
from ledger.queries import Reader
from ledger.storage import async_scans
from ledger.storage.async_scans import Answer, AsyncScans
from ledger.storage.database import open_database
from tests.integration.server import running_server
from tests.support import GTIN, GTIN_B, World, make_world, pg_activity, pg_kill_sessions, pg_sessions


@pytest.fixture
def app_url(postgres_url: str) -> str:
    """The test schema's URL with an application name of its own, so its sessions can be found and killed."""
    return f"{postgres_url}&application_name=scan-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def world(tmp_path: Path, app_url: str) -> Iterator[World]:
    w = make_world(tmp_path / "home", app_url)
    yield w
    w.db.dispose()


def _last_scans(url: str, statement: str) -> list[Any]:
    """When the application's sessions whose last statement is like ``statement`` began it: the thread path's
    scan (``SELECT s.gtin...``) or the loop's batch (``SELECT q.n, s.gtin...``)."""
    return sorted(r[0] for r in pg_activity(url, "query_start", f"AND query LIKE '{statement}'"))


async def _scan(scans: AsyncScans, serial: str, gtin: str = GTIN) -> Answer:
    return await scans.pack_scan(gtin, serial, single=SINGLE_PACK, wide=BATCH_WIDE)


def test_public_scans_on_the_loop_match_the_thread_path(world: World) -> None:
    w = world
    serials = w.supply_history("ASY")
    in_transit = w.as_("dist-north").ship(GTIN, "ASY", "ph-rabat", serials=[serials[5]])
    w.ledger.submit(in_transit)
    recalled = w.commission("RCL", 3, gtin=GTIN_B, expiry=dt.date(2026, 12, 1))
    w.ledger.submit(w.as_("regulator").recall(GTIN_B, "RCL", "contamination"))
    w.clock.advance(days=30)  # the recalled batch is now expired too
    scanned = [(GTIN, s, None, None) for s in serials] + [
        (GTIN, serials[1], "ASY", dt.date(2028, 6, 30)),  # as printed
        (GTIN, serials[1], "OTHER", None),  # a lot that is not the pack's
        (GTIN, serials[1], None, dt.date(2029, 1, 1)),  # an expiry that is not the batch's
        (GTIN, "NEVER-SEEN", None, None),
        (GTIN_B, recalled[0], None, None),
    ]
    reader = Reader(w.ledger)

    async def run() -> None:
        scans = AsyncScans(w.db)
        try:
            for gtin, serial, lot, expiry in scanned:
                expected = reader.pack(gtin, serial, lot=lot, expiry=expiry)  # also fills the actor cache
                assert await reader.public_pack(scans, gtin, serial, lot=lot, expiry=expiry) == expected, serial
        finally:
            await scans.close()

    asyncio.run(run())
    verdicts = {reader.pack(g, s, lot=lot, expiry=e).finding.verdict.value for g, s, lot, e in scanned}
    assert len(verdicts) >= 4, verdicts  # the cases above reach several verdicts, not one


def test_provenance_that_needs_more_reads_is_left_to_the_thread_path(world: World) -> None:
    w = world
    serials = w.commission("DST", 4)
    reader = Reader(w.ledger)

    async def public(serial: str) -> object:
        scans = AsyncScans(w.db)
        try:
            return await reader.public_pack(scans, GTIN, serial)
        finally:
            await scans.close()

    # an actor not read for a minute: its name is read by the thread path, which caches it for the next scans
    assert asyncio.run(public(serials[0])) is None
    expected = reader.pack(GTIN, serials[0])
    assert asyncio.run(public(serials[0])) == expected
    # a destruction names its packs only in its signed body: every scan of the batch then reads it
    w.ledger.submit(w.as_("maphar").destroy(GTIN, "DST", "damaged", serials=[serials[1]]))
    assert [s.type for s in reader.pack(GTIN, serials[1]).steps] == ["commission", "destroy"]
    assert asyncio.run(public(serials[1])) is None
    assert asyncio.run(public(serials[2])) is None


def test_a_killed_connection_steps_aside_once_then_reconnects(world: World, app_url: str) -> None:
    serial = world.commission("KIL", 1)[0]

    async def run() -> list[bool]:
        scans = AsyncScans(world.db)
        try:
            read = [(await _scan(scans, serial))[0]]
            world.db.dispose()  # the engine's sessions go; the scan's stays
            assert pg_kill_sessions(app_url) == 1
            for _ in range(2):
                read.append((await _scan(scans, serial))[0])
            return read
        finally:
            await scans.close()

    assert asyncio.run(run()) == [True, False, True]


def test_an_unreachable_database_steps_aside_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    db = open_database("postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2")

    async def run() -> list[object]:
        scans = AsyncScans(db)
        try:
            return [await _scan(scans, "S1") for _ in range(3)]
        finally:
            await scans.close()

    with caplog.at_level(logging.WARNING, logger="athar.ledger"):
        assert asyncio.run(run()) == [(False, None)] * 3
    # said once for the outage, not once per scan
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "asynchronous scan could not connect to postgresql+psycopg"]
    assert "postgres@127.0.0.1:1/test" in caplog.text


def test_close_releases_its_connections(world: World, app_url: str) -> None:
    serials = world.commission("CLS", 6)
    world.db.dispose()
    locker = sa.create_engine(app_url.replace("application_name=scan-", "application_name=lock-"))

    async def run() -> list[Answer]:
        scans = AsyncScans(world.db, size=3)
        with locker.connect() as conn:
            conn.execute(sa.text("LOCK TABLE packs IN ACCESS EXCLUSIVE MODE"))  # every batch waits on it
            waiting = []
            for s in serials:  # one scan per turn of the loop: a batch each, while connections are free
                waiting.append(asyncio.ensure_future(_scan(scans, s)))
                await asyncio.sleep(0.05)
            assert pg_sessions(app_url) == 3  # never more than its size: the other three queue
            conn.rollback()
        answers = list(await asyncio.gather(*waiting))
        await scans.close()
        assert pg_sessions(app_url) == 0
        assert await _scan(scans, serials[0]) == (False, None)  # closed: the thread path answers
        return answers

    try:
        answers = asyncio.run(run())
    finally:
        locker.dispose()
    assert [found[0].serial for read, found in answers if read and found] == serials


def test_a_defect_in_a_batch_is_logged_and_its_scans_step_aside(world: World, caplog: pytest.LogCaptureFixture,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    serial = world.commission("BUG", 1)[0]

    def broken(found: object) -> object:
        raise ValueError("a row of an unexpected shape")

    monkeypatch.setattr(async_scans, "pack_scan_rows", broken)

    async def run() -> Answer:
        scans = AsyncScans(world.db)
        try:
            return await _scan(scans, serial)
        finally:
            await scans.close()

    with caplog.at_level(logging.ERROR, logger="athar.ledger"):
        assert asyncio.run(run()) == (False, None)
    assert "asynchronous scan failed" in caplog.text and "unexpected shape" in caplog.text


def test_concurrent_scans_share_a_statement_and_each_gets_its_own_pack(world: World) -> None:
    serials = world.commission("PIP", 40)
    world.deliver("maphar", "dist-north", "PIP", serials[:20])
    reader = Reader(world.ledger)
    expected = {s: reader.pack(GTIN, s) for s in serials}

    async def run() -> list[object]:
        scans = AsyncScans(world.db, size=1)  # one connection: the scans queued behind the first go as one batch
        try:
            # more than one batch holds (MAX_BATCH), a pack asked for twice, one the ledger never saw
            return await asyncio.gather(*(reader.public_pack(scans, GTIN, s)
                                          for s in [*serials, serials[7], "NONE"]))
        finally:
            await scans.close()

    *reports, again, unknown = asyncio.run(run())
    assert reports == [expected[s] for s in serials]
    assert again == expected[serials[7]]
    assert unknown == reader.pack(GTIN, "NONE")


def test_a_batch_on_a_killed_connection_steps_aside_whole(world: World, app_url: str) -> None:
    serials = world.commission("KLB", 5)

    async def run() -> tuple[list[Answer], list[Answer]]:
        scans = AsyncScans(world.db, size=1)
        try:
            await _scan(scans, serials[0])
            world.db.dispose()
            assert pg_kill_sessions(app_url) == 1
            failed = await asyncio.gather(*(_scan(scans, s) for s in serials))
            again = await asyncio.gather(*(_scan(scans, s) for s in serials))
            return failed, again
        finally:
            await scans.close()

    failed, again = asyncio.run(run())
    assert failed == [(False, None)] * 5
    assert [found[0].serial for read, found in again if read and found] == serials


def test_a_caller_that_stops_waiting_leaves_its_batch_and_the_pool_usable(world: World, app_url: str) -> None:
    serials = world.commission("CNC", 3)
    world.db.dispose()
    locker = sa.create_engine(app_url.replace("application_name=scan-", "application_name=lock-"))

    async def run() -> tuple[list[Answer], Answer]:
        scans = AsyncScans(world.db, size=1)
        try:
            with locker.connect() as conn:
                conn.execute(sa.text("LOCK TABLE packs IN ACCESS EXCLUSIVE MODE"))  # the scans will wait on it
                waiting = [asyncio.ensure_future(_scan(scans, s)) for s in serials]
                with pytest.raises(TimeoutError):  # a client that went away
                    await asyncio.wait_for(waiting[0], timeout=0.5)
                conn.rollback()
            answers = list(await asyncio.gather(*waiting[1:]))
            after = await _scan(scans, serials[0])
            assert pg_sessions(app_url) == 1  # the same connection served on
            return answers, after
        finally:
            await scans.close()

    try:
        answers, after = asyncio.run(run())
    finally:
        locker.dispose()
    assert [found[0].serial for read, found in [*answers, after] if read and found] == [*serials[1:], serials[0]]


def test_close_does_not_wait_for_ever_on_a_stuck_statement(world: World, app_url: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(async_scans, "CLOSE_WAIT", 0.3)
    serial = world.commission("STK", 1)[0]
    world.db.dispose()
    locker = sa.create_engine(app_url.replace("application_name=scan-", "application_name=lock-"))

    async def run() -> Answer:
        scans = AsyncScans(world.db)
        with locker.connect() as conn:
            conn.execute(sa.text("LOCK TABLE packs IN ACCESS EXCLUSIVE MODE"))
            waiting = asyncio.ensure_future(_scan(scans, serial))
            await asyncio.sleep(0.2)
            await asyncio.wait_for(scans.close(), timeout=5)
            answer = await waiting
            conn.rollback()
        return answer

    try:
        assert asyncio.run(run()) == (False, None)  # told to read elsewhere, not left waiting
    finally:
        locker.dispose()
    assert pg_sessions(app_url) == 0


def test_the_server_answers_public_scans_on_its_loop_and_closes_itspg_sessions(world: World, app_url: str) -> None:
    serial = world.commission("SRV", 2)[0]
    world.db.dispose()
    settings = Settings(data_dir=world.home.path, database_url=app_url)
    with running_server(settings) as base, httpx.Client(base_url=base, timeout=30) as http:
        first = http.get(f"/v1/packs/{GTIN}/{serial}")  # then the thread path reads the manufacturer's name
        thread_read = _last_scans(app_url, "SELECT s.gtin%")
        loop_read = _last_scans(app_url, "SELECT q.n, s.gtin%")
        again = http.get(f"/v1/packs/{GTIN}/{serial}")
        assert _last_scans(app_url, "SELECT s.gtin%") == thread_read  # no thread read this one...
        assert _last_scans(app_url, "SELECT q.n, s.gtin%") > loop_read  # ...the loop did, alone
        assert first.status_code == again.status_code == 200 and first.json() == again.json()
        assert first.json()["verdict"] == "AUTHENTIC"
        # the patient's path, from the QR code on the pack, reads the same way
        linked = http.get(f"/01/{GTIN}/21/{serial}", headers={"accept": "application/json"})
        assert linked.status_code == 200 and linked.json() == first.json()
        unknown = http.get(f"/v1/packs/{GTIN}/NOT-A-PACK")
        assert unknown.status_code == 200 and unknown.json()["verdict"] == "UNKNOWN"
    assert pg_sessions(app_url) == 0  # the server closed them all as it stopped
