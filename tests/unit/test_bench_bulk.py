"""The benchmark's bulk loader lays out logs that pass the audit, with as many checkpoints as asked (the audit
benchmark times a log with one per entry, as a server writes at low traffic)."""

from __future__ import annotations

import pytest

from bench.bulk import EVERY_ENTRY, big_ledger
from ledger.audit import verify_store


@pytest.mark.parametrize(("every", "checkpoints"), [(EVERY_ENTRY, 400), (1000, 1), (150, 3)])
def test_a_bulk_log_passes_the_audit_with_its_checkpoints(every: int, checkpoints: int) -> None:
    with big_ledger("sqlite", 400, say=lambda _: None, checkpoint_every=every) as b:
        cfg = b.ledger.config
        report = verify_store(b.ledger.store, cfg.trust, cfg.origin, helpers=0)
        assert report.ok, report.failure
        assert (report.entries, report.checkpoints) == (400, checkpoints)
        with b.ledger.store.read() as u:
            assert sorted(c.tree_size for c in u.checkpoints())[-1] == 400
