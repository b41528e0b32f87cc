"""Group commit when the disk is slow (issue 6: appends must keep their rate "if each flush took 2 ms", which
one commit per request cannot). PostgreSQL's ``commit_delay`` with ``commit_siblings`` 0 sleeps before every
WAL flush, as a slow disk would; concurrent submissions must then share flushes, and each still gets its
receipt only once its group is committed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from ledger.audit import verify_store
from ledger.entry import Receipt
from ledger.merkle import verify_inclusion
from ledger.sequencer import GroupCommitter
from tests.support import GTIN, make_world

SUBMISSIONS = 40


def test_concurrent_appends_share_the_slow_flushes(tmp_path: Path, postgres_url: str) -> None:
    with sa.create_engine(postgres_url).connect() as conn:
        superuser = conn.execute(sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar()
        fsync = conn.execute(sa.text("SHOW fsync")).scalar()
    if not superuser or fsync != "on":
        pytest.skip("needs a PostgreSQL superuser (commit_delay is a superuser setting) and fsync on (PostgreSQL "
                    f"delays no flush without it); here superuser={superuser}, fsync={fsync}")
    slow = f"{postgres_url}%20-ccommit_delay%3D2000%20-ccommit_siblings%3D0"  # appended to the schema's options
    world = make_world(tmp_path / "home", slow)
    try:
        with world.db.writer.connect() as conn:  # the ledger's own sessions flush 2 ms late
            assert conn.execute(sa.text("SHOW commit_delay")).scalar() == "2000"  # microseconds
            assert conn.execute(sa.text("SHOW commit_siblings")).scalar() == "0"
        serials = world.commission("SLOWDISK", SUBMISSIONS)
        world.deliver("maphar", "ph-rabat", "SLOWDISK", serials)
        ph = world.as_("ph-rabat")
        events = [ph.dispense(GTIN, s) for s in serials]
        committer = GroupCommitter(world.ledger)
        try:
            with ThreadPoolExecutor(SUBMISSIONS) as pool:
                receipts = list(pool.map(committer.submit, events))
        finally:
            committer.close()
        assert all(isinstance(r, Receipt) and not r.replayed for r in receipts)
        for r in receipts:
            verify_inclusion(r.entry_hash, r.index, r.tree_size, list(r.inclusion_proof), r.root)
        assert committer.appended == SUBMISSIONS
        # one commit per request would be 40 flushes; the submissions that arrive while a group waits for its
        # flush go together in the next one (4-5 groups here; the bound leaves room for a slow machine)
        assert committer.groups <= SUBMISSIONS // 2, committer.groups
        report = verify_store(world.ledger.store, world.ledger.config.trust, world.ledger.config.origin)
        assert report.ok, report.failure
        assert report.tree_size == max(r.index for r in receipts) + 1
    finally:
        world.db.dispose()
