"""build_demo on a real database (SQLite and PostgreSQL): volumes, refusals kept as alerts, idempotency,
resumption after an interruption, a clean audit, and sample packs that get the verdict they promise."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fixtures import demo
from fixtures.demo import DemoSummary, build_demo
from ledger import errors as E
from ledger.audit import verify_store
from ledger.home import Home, init_home, open_ledger
from ledger.queries import Principal, Reader
from ledger.service import Ledger
from ledger.storage.database import Database


def _open(tmp_path: Path, db_url: str) -> tuple[Home, Ledger, Database]:
    home, _ = init_home(tmp_path / "home", database_url=db_url)
    ledger, db = open_ledger(home.path, db_url)
    return home, ledger, db


def _check_complete(ledger: Ledger, summary: DemoSummary) -> None:
    assert summary.actors == len(demo.load_actors())
    assert summary.products >= 3
    assert summary.batches >= 10
    assert summary.packs >= 2000
    assert summary.shipments >= 20 and summary.returns == 1
    assert 100 <= summary.dispensed <= 300
    assert summary.destroyed > 0
    assert summary.recalled_batches == 1 and summary.quarantined_batches == 1
    assert summary.reports == 1
    assert sorted(r.code for r in summary.refused) == ["duplicate_dispense", "over_shipment"]
    with ledger.store.read() as u:
        kinds = {a.kind for a in u.alerts()}
        assert summary.tree_size == u.head()[0]
    assert {E.DuplicateDispense.code, E.OverShipment.code} <= kinds
    report = verify_store(ledger.store, ledger.config.trust, ledger.config.origin)
    assert report.ok, report.failure
    assert report.entries == summary.tree_size


def test_build_demo(tmp_path: Path, db_url: str) -> None:
    home, ledger, db = _open(tmp_path, db_url)
    try:
        messages: list[str] = []
        first = build_demo(ledger, home, progress=messages.append)
        assert first.created and first.appended == first.tree_size > 300
        assert any("duplicate_dispense" in m for m in messages)
        _check_complete(ledger, first)

        # the refused double dispense names the pharmacy that tried it and the cloned pack
        clone = next(r for r in first.refused if r.code == "duplicate_dispense")
        assert clone.actor == demo.CLONE_SECOND and clone.serial == first.sample("cloned").serial

        # every sample gets the verdict it promises, scanned by its holder
        labels = {s.label for s in first.samples}
        assert {"genuine", "dispensed", "recalled", "unknown"} <= labels
        reader = Reader(ledger)
        for s in first.samples:
            with ledger.store.read() as u:
                holder = u.actor(s.holder) if s.holder else None
            report = reader.pack(s.gtin, s.serial, lot=s.lot, expiry=s.expiry,
                                 who=Principal(holder) if holder else None)
            assert report.finding.verdict.value == s.expected, (s, report.finding)

        # actor keys are saved for the CLI, private
        for actor in demo.load_actors():
            path = home.keys / "actors" / f"{actor.id}.key"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600

        # a second run adds nothing and reports the same demo
        second = build_demo(ledger, home)
        assert not second.created and second.appended == 0
        assert second.tree_size == first.tree_size
        assert second.samples == first.samples
        assert second.refused == first.refused
        _check_complete(ledger, second)
    finally:
        db.dispose()


def test_build_demo_resumes_after_an_interruption(tmp_path: Path, db_url: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    home, ledger, db = _open(tmp_path, db_url)
    try:
        real_flush = demo._Session.flush
        calls = {"n": 0}

        def failing_flush(self: demo._Session) -> None:
            calls["n"] += 1
            if calls["n"] == 6:  # after the shipments to pharmacies were signed, before their receipts
                raise RuntimeError("power cut")
            real_flush(self)

        monkeypatch.setattr(demo._Session, "flush", failing_flush)
        with pytest.raises(RuntimeError):
            build_demo(ledger, home)
        partial = ledger.size()
        assert partial > 0
        monkeypatch.setattr(demo._Session, "flush", real_flush)

        summary = build_demo(ledger, home)
        assert summary.created and summary.appended == summary.tree_size - partial
        _check_complete(ledger, summary)
    finally:
        db.dispose()


def test_another_seed_is_refused_on_an_existing_demo(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    home, ledger, db = _open(tmp_path, url)
    try:
        build_demo(ledger, home)
        with pytest.raises(demo.DemoError, match="another seed"):
            build_demo(ledger, home, seed=7)
    finally:
        db.dispose()
