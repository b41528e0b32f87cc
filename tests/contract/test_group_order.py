"""Small events queued beside large ones are committed first, in a group of their own, and the large ones together
right after (``GroupCommitter.large_event_bytes``): a pharmacy's dispense waits for the group under way, not for
every large commission queued beside it."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import sqlalchemy as sa

from ledger.entry import Receipt, SignedEvent
from ledger.sequencer import GroupCommitter
from tests.support import GTIN, make_world


def _wait(until: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _queued(committer: GroupCommitter, n: int) -> Callable[[], bool]:
    return lambda: committer._queue.qsize() == n


def test_small_events_queued_beside_large_ones_are_not_held_behind_them(tmp_path: Path, postgres_url: str) -> None:
    world = make_world(tmp_path / "home", postgres_url)
    try:
        serials = world.commission("SMALLS", 7)
        world.deliver("maphar", "ph-rabat", "SMALLS", serials)
        ph, mfr = world.as_("ph-rabat"), world.as_("maphar")
        blocker, *dispenses = [ph.dispense(GTIN, s) for s in serials]
        large = [mfr.commission(GTIN, f"LARGE{i}", dt.date(2028, 6, 30), "Amoxicilline 500 mg",
                                [f"LARGE{i}S{k:05d}" for k in range(300)]) for i in range(3)]
        bound = max(len(e.body_bytes) for e in dispenses)
        assert all(len(e.body_bytes) > bound for e in large)
        committer = GroupCommitter(world.ledger, large_event_bytes=bound)
        engine = sa.create_engine(postgres_url)
        try:
            with ThreadPoolExecutor(10) as pool, engine.connect() as lock:
                # hold the log head, so what is submitted next queues behind a group that cannot commit yet
                lock.execute(sa.text("SELECT tree_size FROM log_head WHERE id = 1 FOR UPDATE"))
                first = pool.submit(committer.submit, blocker)
                with engine.connect() as probe:
                    _wait(lambda: probe.execute(sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database()")).scalar(), "the first group to wait for the lock")
                order: list[SignedEvent] = [large[0], *dispenses, large[1], large[2]]
                pending: list[Future[Receipt]] = []
                for n, event in enumerate(order, 1):  # queued one by one, so their order is known
                    pending.append(pool.submit(committer.submit, event))
                    _wait(_queued(committer, n), "the submission to queue")
                lock.rollback()
                receipts = [f.result(60) for f in pending]
                first.result(60)
        finally:
            committer.close()
            engine.dispose()
        group_of = {e.event_id: r.tree_size for e, r in zip(order, receipts, strict=True)}
        # the dispenses go first, in a group of their own; the large commissions follow, together
        smalls = {group_of[e.event_id] for e in dispenses}
        larges = {group_of[e.event_id] for e in large}
        assert len(smalls) == 1 and len(larges) == 1 and smalls.pop() < larges.pop(), group_of
        assert committer.groups == 3
    finally:
        world.db.dispose()
