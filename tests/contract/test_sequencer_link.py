"""Appending through the sequencer process (``ledger.sequencer_link``), on SQLite and PostgreSQL: receipts and
refusals come back as if appended locally, and a worker whose sequencer is gone appends by itself."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger import errors as E
from ledger.audit import verify_store
from ledger.checkpoint import open_checkpoint
from ledger.entry import Receipt, SignedEvent
from ledger.merkle import verify_inclusion
from ledger.sequencer import GroupCommitter
from ledger.sequencer_link import STOP_SIGNAL, RemoteCommitter, run_sequencer
from tests.support import GTIN, World, make_world


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    w = make_world(tmp_path / "home", db_url)
    try:
        yield w
    finally:
        w.db.dispose()


def start_sequencer(world: World, db_url: str, parent: int | None = None) -> tuple[multiprocessing.Process, str]:
    run_dir = tempfile.mkdtemp(prefix="athar-test-")
    path = os.path.join(run_dir, "s.sock")
    proc = multiprocessing.get_context("spawn").Process(
        target=run_sequencer, args=(str(world.home.path), db_url, path, parent or os.getpid()), daemon=True)
    proc.start()
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        assert proc.is_alive() and time.monotonic() < deadline, "the sequencer did not start"
        time.sleep(0.05)
    return proc, path  # type: ignore[return-value]


def check(world: World, receipt: Receipt) -> None:
    verify_inclusion(receipt.entry_hash, receipt.index, receipt.tree_size, list(receipt.inclusion_proof),
                     receipt.root)
    assert open_checkpoint(receipt.checkpoint, world.ledger.config.verifier_key).size == receipt.tree_size


def submit_all(committer: RemoteCommitter, events: list[SignedEvent]) -> list[Receipt | E.LedgerError]:
    async def main() -> list[Receipt | E.LedgerError]:
        async def one(e: SignedEvent) -> Receipt | E.LedgerError:
            try:
                return await committer.submit_async(e)
            except E.LedgerError as err:
                return err
        return list(await asyncio.gather(*(one(e) for e in events)))
    return asyncio.run(main())


def test_receipts_and_refusals_come_back_through_the_sequencer(world: World, db_url: str) -> None:
    serials = world.commission("SEQ", 30)
    world.deliver("maphar", "ph-rabat", "SEQ", serials)
    proc, path = start_sequencer(world, db_url)
    remote = RemoteCommitter(GroupCommitter(world.ledger), path)
    try:
        ph = world.as_("ph-rabat")
        events = [ph.dispense(GTIN, s) for s in serials[:20]]
        results = submit_all(remote, [*events, ph.dispense(GTIN, serials[0]), events[3]])
        receipts = results[:20]
        assert all(isinstance(r, Receipt) and not r.replayed for r in receipts)
        for r in receipts:
            assert isinstance(r, Receipt)
            check(world, r)
        # a second dispense of a pack, under another event id: the same refusal class as a local append
        assert isinstance(results[20], E.LedgerError) and results[20].code == "already_dispensed_by_you"
        replay = results[21]
        assert isinstance(replay, Receipt) and replay.replayed and replay.index == receipts[3].index
        assert remote._remote and remote.local.groups == 0, "the sequencer appended them, not this process"

        # SIGTERM to the process group (a service manager stopping the server) leaves it running...
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGTERM)
        assert isinstance(submit_all(remote, [ph.dispense(GTIN, serials[25])])[0], Receipt)
        assert remote.local.groups == 0
        # ... until the server stops it: then the worker appends by itself
        os.kill(proc.pid, STOP_SIGNAL)
        proc.join(15)
        assert proc.exitcode == 0
        later = submit_all(remote, [ph.dispense(GTIN, s) for s in serials[20:25]])
        assert all(isinstance(r, Receipt) for r in later), later
        assert not remote._remote and remote.local.appended == 5
    finally:
        remote.close()
        if proc.is_alive():
            proc.kill()
        proc.join(10)
    report = verify_store(world.ledger.store, world.ledger.config.trust, world.ledger.config.origin)
    assert report.ok, report.failure


def test_the_sequencer_stops_when_the_server_that_started_it_is_gone(world: World, db_url: str) -> None:
    # started with the pid of a "server" that is not its parent: it behaves as after a kill -9 of the server
    not_the_parent = os.getpid() + 1_000_000
    run_dir = tempfile.mkdtemp(prefix="athar-test-")
    proc = multiprocessing.get_context("spawn").Process(
        target=run_sequencer, args=(str(world.home.path), db_url, os.path.join(run_dir, "s.sock"), not_the_parent),
        daemon=True)
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0
