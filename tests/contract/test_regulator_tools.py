"""Regulator tools on SQLite and PostgreSQL: alert lifecycle and causes, overdue shipments, projection
rebuild, log monitoring (rollback, fork), witness cosignatures."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from ledger import errors as E
from ledger.audit import verify_store
from ledger.checkpoint import CheckpointError, cosign, open_checkpoint, verify_cosignature, verify_every_cosignature
from ledger.home import open_ledger
from ledger.identifiers import batch_chain
from ledger.monitor import ForkDetected, RollbackDetected, check_update
from ledger.rebuild import rebuild
from ledger.state import AlertRecord
from ledger.storage import tables
from signing import KeyPair
from signing.keys import write_public_key
from tests.support import GTIN, World, make_world


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> World:
    return make_world(tmp_path / "home", db_url)


def _alerts(world: World) -> dict[str, AlertRecord]:
    with world.ledger.store.read() as u:
        return {a.kind: a for a in u.alerts()}


def test_alert_lifecycle_is_recorded_in_the_ledger(world: World) -> None:
    serials = world.commission("L1", 3)
    world.deliver("maphar", "dist-north", "L1", serials)
    world.deliver("dist-north", "ph-rabat", "L1", serials[:1])
    world.deliver("dist-north", "ph-fes", "L1", serials[1:2])
    world.ledger.submit(world.as_("ph-rabat").dispense(GTIN, serials[0]))
    with pytest.raises(E.DuplicateDispense):
        world.ledger.submit(world.as_("ph-fes").dispense(GTIN, serials[0]))
    alert = _alerts(world)["duplicate_dispense"]
    assert alert.status == "open" and alert.suspect == "ph-fes"
    assert "clone" in (alert.cause or "")

    with pytest.raises(E.RoleNotAllowed):
        world.ledger.submit(world.as_("ph-rabat").sign("alert_update", alert=alert.id, status="investigating"))
    world.ledger.submit(world.as_("inspector").sign("alert_update", alert=alert.id, status="investigating"))
    world.ledger.submit(world.as_("regulator").sign("alert_update", alert=alert.id, status="closed",
                                                    outcome="confirmed", finding="cloned packs seized in Fès"))
    closed = _alerts(world)["duplicate_dispense"]
    assert (closed.status, closed.outcome, closed.finding) == ("closed", "confirmed", "cloned packs seized in Fès")
    with pytest.raises(E.InvalidTransition):
        world.ledger.submit(world.as_("regulator").sign("alert_update", alert=alert.id, status="investigating"))
    with pytest.raises(E.InvalidEvent):  # closing needs an outcome
        world.ledger.submit(world.as_("regulator").sign("alert_update", alert=alert.id, status="closed"))
    assert verify_store(world.ledger.store, world.ledger.config.trust, world.ledger.config.origin).ok


def test_a_lot_one_character_off_is_explained_as_a_typing_error(world: World) -> None:
    serials = world.commission("AB12", 2)
    world.deliver("maphar", "dist-north", "AB12", serials)
    world.deliver("dist-north", "ph-rabat", "AB12", serials)
    with pytest.raises(E.MismatchError):
        world.ledger.submit(world.as_("ph-rabat").dispense(GTIN, serials[0], lot="AB13"))
    alert = _alerts(world)["mismatch"]
    assert "typing error" in (alert.cause or "")
    assert alert.lot == "AB12"  # filed in the real batch's chain


def test_overdue_shipments_raise_one_alert_each(world: World) -> None:
    import datetime as dt

    serials = world.commission("L2", 4)
    shipment = world.as_("maphar").ship(GTIN, "L2", "dist-south", serials=serials[:2])
    world.ledger.submit(shipment)
    world.deliver("maphar", "dist-north", "L2", serials[2:])
    assert world.ledger.overdue_shipments(dt.timedelta(days=7)) == []
    world.clock.advance(days=8)
    receipts = world.ledger.overdue_shipments(dt.timedelta(days=7))
    assert len(receipts) == 1
    assert world.ledger.overdue_shipments(dt.timedelta(days=7)) == []
    alert = _alerts(world)["shipment_overdue"]
    assert alert.suspect == "dist-south" and shipment.event_id in alert.message


def test_rebuild_finds_and_repairs_edited_projections(world: World) -> None:
    serials = world.commission("L3", 5)
    world.deliver("maphar", "dist-north", "L3", serials[:3])
    with world.db.writer.begin() as conn:
        conn.execute(sa.text("UPDATE holdings SET quantity = quantity + 100 WHERE actor = 'dist-north'"))
        conn.execute(sa.text(f"UPDATE packs SET status = 'dispensed' WHERE serial = '{serials[4]}'"))
        conn.execute(sa.text("DELETE FROM actors WHERE id = 'ph-fes'"))
        conn.execute(sa.text("UPDATE chain_heads SET head_hash = :h WHERE chain = :c"),
                     {"h": b"\x00" * 32, "c": batch_chain(GTIN, "L3")})
    trust, origin = world.ledger.config.trust, world.ledger.config.origin
    _, report = rebuild(world.ledger.store, trust, origin)
    assert not report.clean
    (head,) = report.differences["chain_heads"]
    assert f"head_hash is {'00' * 32}, log says " in head and "\\x" not in head, head  # hashes in hex, as elsewhere
    assert len(report.differences["holdings"]) == 1 and len(report.differences["packs"]) == 1
    assert report.differences["actors"] == ["actors ph-fes: missing from the stored projection"]
    _, report = rebuild(world.ledger.store, trust, origin, write=True)
    assert report.rewritten
    _, report = rebuild(world.ledger.store, trust, origin)
    assert report.clean
    with world.ledger.store.read() as u:
        assert u.holding("dist-north", GTIN, "L3") == 3 and u.actor("ph-fes") is not None


def test_rebuild_compares_a_growing_log_with_the_projections_of_what_it_verified(world: World) -> None:
    """On a live ledger an event lands while the log is verified: the comparison is with the projections of the
    verified entries (read in the head's snapshot), not of a later log; a rewrite then is refused, not done."""
    serials = world.commission("L7", 4)
    trust, origin = world.ledger.config.trust, world.ledger.config.origin
    landed: list[int] = []

    def an_event_lands(done: int, total: int) -> None:
        if not landed:
            landed.append(world.ledger.submit(world.as_("maphar").ship(GTIN, "L7", "dist-north",
                                                                       serials=serials[:1])).index)

    audit, report = rebuild(world.ledger.store, trust, origin, progress=an_event_lands)
    assert report.clean and audit.tree_size == landed[0] < world.ledger.size()
    landed.clear()
    serials = serials[1:]
    with pytest.raises(E.LogGrew):
        rebuild(world.ledger.store, trust, origin, write=True, progress=an_event_lands)
    assert rebuild(world.ledger.store, trust, origin)[1].clean


def test_monitor_accepts_growth_and_detects_rollback_and_fork(tmp_path: Path, world: World, db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("the fork is made by copying the SQLite file")
    ledger = world.ledger
    vkey = ledger.config.verifier_key
    first = open_checkpoint(ledger.checkpoint().note, vkey)  # type: ignore[union-attr]
    world.commission("L4", 2)
    grown_note = ledger.checkpoint().note  # type: ignore[union-attr]
    grown = check_update(first, grown_note, vkey, ledger.consistency_proof)
    assert grown.size > first.size
    with pytest.raises(RollbackDetected):
        check_update(grown, ledger.checkpoint(first.size).note, vkey, ledger.consistency_proof)  # type: ignore[union-attr]

    # a fork: a copy of the database (same keys) that diverges from the original
    world.db.dispose()
    fork_home = tmp_path / "fork"
    shutil.copytree(world.home.path, fork_home)
    fork_url = f"sqlite:///{fork_home}/ledger.db"
    shutil.copy(Path(db_url.removeprefix("sqlite:///")), fork_home / "ledger.db")
    fork, fork_db = open_ledger(fork_home, fork_url)
    fork.clock = world.clock
    fork.submit(world.as_("maphar").commission(GTIN, "FORKED", __import__("datetime").date(2029, 1, 1), "X", ["F1"]))
    world.commission("L5", 1)
    honest_note = ledger.checkpoint().note  # type: ignore[union-attr]
    trusted = check_update(grown, honest_note, vkey, ledger.consistency_proof)
    forked_note = fork.checkpoint().note  # type: ignore[union-attr]
    with pytest.raises(ForkDetected):
        check_update(trusted, forked_note, vkey, fork.consistency_proof)
    fork_db.dispose()


def test_witness_cosignatures_are_verified_stored_and_served(tmp_path: Path, world: World, db_url: str) -> None:
    witness = KeyPair.generate()
    write_public_key(world.home.keys / "witnesses" / "witness.example.ma.pub", witness.public)
    world.db.dispose()
    ledger, db = open_ledger(world.home.path, db_url)
    note = ledger.checkpoint().note  # type: ignore[union-attr]
    cosigned = cosign(note, "witness.example.ma", witness, 1795342500)
    assert ledger.add_cosignatures(cosigned) == ["witness.example.ma"]
    served = ledger.cosigned_checkpoint()
    assert served is not None and verify_cosignature(served, "witness.example.ma", witness.public) == 1795342500
    open_checkpoint(served, ledger.config.verifier_key)  # still a valid checkpoint for plain clients
    stranger = cosign(note, "stranger", KeyPair.generate(), 1)
    with pytest.raises(E.UnknownKey):
        ledger.add_cosignatures(stranger)
    forged = cosign(note, "witness.example.ma", KeyPair.generate(), 5)
    with pytest.raises((E.SignatureInvalid, E.UnknownKey)):
        ledger.add_cosignatures(forged)
    # a bad line behind the witness's good one (as the served note carries it) is refused, not stored over it
    garbage = served + "— witness.example.ma " + base64.b64encode(bytes(76)).decode() + "\n"
    with pytest.raises(E.SignatureInvalid):
        ledger.add_cosignatures(garbage)
    assert ledger.cosigned_checkpoint() == served
    assert verify_cosignature(garbage, "witness.example.ma", witness.public)  # one good line is not enough:
    with pytest.raises(CheckpointError):  # what the audit checks a served note with
        verify_every_cosignature(garbage, "witness.example.ma", witness.public)
    assert verify_store(ledger.store, ledger.config.trust, ledger.config.origin,
                        witnesses={"witness.example.ma": witness.public}).cosignatures == 1
    db.dispose()


def test_audit_checks_stored_witness_cosignatures(world: World, db_url: str) -> None:
    """A cosignature row is a witness's word that it saw this log: the audit verifies each one whose witness key is
    at hand, and fails on one forged, moved to another checkpoint, or stored under another name."""
    witness, other = KeyPair.generate(), KeyPair.generate()
    for name, pair in (("witness.example.ma", witness), ("other.example.org", other)):
        write_public_key(world.home.keys / "witnesses" / f"{name}.pub", pair.public)
    world.db.dispose()
    ledger, db = open_ledger(world.home.path, db_url)
    first = ledger.checkpoint()
    assert first is not None
    ledger.add_cosignatures(cosign(first.note, "witness.example.ma", witness, 1795342500))
    world.ledger = ledger
    world.commission("CS1", 2)
    second = ledger.checkpoint()
    assert second is not None and second.tree_size > first.tree_size
    ledger.add_cosignatures(cosign(second.note, "witness.example.ma", witness, 1795342600))
    ledger.add_cosignatures(cosign(second.note, "other.example.org", other, 1795342601))
    trust, origin, store = ledger.config.trust, ledger.config.origin, ledger.store

    report = verify_store(store, trust, origin, witnesses={"witness.example.ma": witness.public,
                                                           "other.example.org": other.public})
    assert report.ok and report.cosignatures == 3 and report.unchecked_witnesses == {}
    # an auditor without a witness's key is told, not failed
    report = verify_store(store, trust, origin, witnesses={"witness.example.ma": witness.public})
    assert report.ok and report.cosignatures == 2 and report.unchecked_witnesses == {"other.example.org": 1}

    table = tables.cosignatures
    c = table.c
    keys = {"witness.example.ma": witness.public}

    def tampered(change: sa.Update) -> str:
        with db.writer.begin() as conn:
            saved = [dict(r._mapping) for r in conn.execute(sa.select(table))]
            conn.execute(change)
        try:
            failed = verify_store(store, trust, origin, witnesses=keys)
        finally:
            with db.writer.begin() as conn:
                conn.execute(sa.delete(table))
                conn.execute(sa.insert(table), saved)
        assert not failed.ok and failed.failure is not None
        return failed.failure.reason

    where = (c.tree_size == first.tree_size) & (c.witness == "witness.example.ma")
    forged = cosign(first.note, "witness.example.ma", KeyPair.generate(), 1795342500)
    forged_line = forged[len(first.note):]
    assert "does not verify" in tampered(sa.update(table).where(where).values(line=forged_line))
    # the witness's real cosignature of the second checkpoint, moved onto the first
    theirs = (c.tree_size == second.tree_size) & (c.witness == "witness.example.ma")
    moved = sa.update(table).where(where).values(line=sa.select(c.line).where(theirs).scalar_subquery(),
                                                 timestamp=1795342600)
    assert "does not verify" in tampered(moved)
    # the time stored beside a line is the time inside it, for any witness, its key at hand or not
    assert "is dated 1795342999, but the witness signed it at 1795342500" in tampered(
        sa.update(table).where(where).values(timestamp=1795342999))
    assert "other.example.org" in tampered(sa.update(table).where(c.witness == "other.example.org").values(
        timestamp=0))
    renamed = (c.tree_size == second.tree_size) & (c.witness == "other.example.org")
    assert "another name" in tampered(sa.update(table).where(renamed).values(witness="third.example.org"))
    assert "no checkpoint" in tampered(sa.update(table).where(where).values(tree_size=second.tree_size + 5))
    assert verify_store(store, trust, origin, witnesses=keys).ok  # each change was undone
    db.dispose()
