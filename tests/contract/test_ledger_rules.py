"""The ledger's contract through ``Ledger.submit`` / ``Ledger.append``, on SQLite and on PostgreSQL.

Every test ends with a full ``verify_store`` of the log it built (see the ``world`` fixture).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger import errors as E
from ledger import events as ev
from ledger.audit import AuditReport, verify_store
from ledger.builder import EventBuilder
from ledger.checkpoint import open_checkpoint
from ledger.entry import Entry, Receipt
from ledger.merkle import leaf_hash, verify_consistency, verify_inclusion
from ledger.service import Ledger
from signing import KeyPair, canonical
from tests.support import GTIN, World, make_world


def audit(ledger: Ledger) -> AuditReport:
    return verify_store(ledger.store, ledger.config.trust, ledger.config.origin)


def assert_verified(ledger: Ledger) -> AuditReport:
    report = audit(ledger)
    assert report.ok, report.failure
    assert report.entries == report.tree_size == ledger.size()
    return report


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    w = make_world(tmp_path / "home", db_url)
    try:
        yield w
        assert_verified(w.ledger)
    finally:
        w.db.dispose()


def check_receipt(ledger: Ledger, receipt: Receipt) -> None:
    verify_inclusion(receipt.entry_hash, receipt.index, receipt.tree_size, list(receipt.inclusion_proof),
                     receipt.root)
    cp = open_checkpoint(receipt.checkpoint, ledger.config.verifier_key)
    assert (cp.origin, cp.size, cp.root) == (ledger.config.origin, receipt.tree_size, receipt.root)
    stored = ledger.entries(receipt.index, receipt.index + 1)[0]
    assert stored.entry_hash == receipt.entry_hash == leaf_hash(stored.leaf)
    assert Entry.from_leaf(stored.leaf).prev == receipt.prev


def entries(ledger: Ledger) -> list[Entry]:
    return [Entry.from_leaf(s.leaf) for s in ledger.entries(0, ledger.size())]


def alerts(world: World) -> list[object]:
    with world.ledger.store.read() as u:
        return list(u.alerts())


# ---- lifecycle, receipts, chains --------------------------------------------------------------------------


def test_full_lifecycle_with_verifiable_receipts(world: World) -> None:
    ledger = world.ledger
    start = ledger.size()
    serials = [f"S{i:03d}" for i in range(4)]
    receipts = [ledger.submit(world.as_("maphar").commission(GTIN, "L001", world.clock.now.date().replace(
        year=2028), "Amoxicilline 500 mg", serials))]
    ship = world.as_("maphar").ship(GTIN, "L001", "dist-north", serials=serials)
    receipts.append(ledger.submit(ship))
    receipts.append(ledger.submit(world.as_("dist-north").receive(ship.event_id)))
    ship2 = world.as_("dist-north").ship(GTIN, "L001", "ph-rabat", serials=serials[:2])
    receipts.append(ledger.submit(ship2))
    receipts.append(ledger.submit(world.as_("ph-rabat").receive(ship2.event_id)))
    receipts.append(ledger.submit(world.as_("ph-rabat").dispense(GTIN, serials[0], lot="L001")))

    assert [r.index for r in receipts] == list(range(start, start + 6))
    assert ledger.size() == start + 6
    for r in receipts:
        assert not r.replayed
        assert r.chain == f"batch/{GTIN}/L001"
        check_receipt(ledger, r)
    # an earlier receipt's entry is still provably included in the latest tree
    latest = receipts[-1]
    verify_inclusion(receipts[0].entry_hash, receipts[0].index, latest.tree_size,
                     ledger.inclusion_proof(receipts[0].index, latest.tree_size), latest.root)

    with ledger.store.read() as u:
        pack = u.pack(GTIN, serials[0])
        assert pack is not None and pack.status == "dispensed" and pack.dispensed_by == "ph-rabat"
        assert u.holdings_of_batch(GTIN, "L001") == {"dist-north": 2, "ph-rabat": 1}


def test_prev_links_each_batch_chain(world: World) -> None:
    a = world.commission("LA", 4)
    b = world.commission("LB", 4)
    world.deliver("maphar", "dist-north", "LA", a[:2])
    world.deliver("maphar", "dist-south", "LB", b[:2])
    world.deliver("maphar", "dist-north", "LA", a[2:])
    all_entries = entries(world.ledger)
    chains: dict[str, list[Entry]] = {}
    for e in all_entries:
        chains.setdefault(e.chain, []).append(e)
    assert len(chains[f"batch/{GTIN}/LA"]) == 5 and len(chains[f"batch/{GTIN}/LB"]) == 3
    for chain in chains.values():
        assert chain[0].prev is None
        for before, after in itertools.pairwise(chain):
            assert after.prev == before.hash
    # every actor registration starts its own chain
    assert all(chains[f"actor/{a}"][0].prev is None for a in world.keys)


def test_replay_returns_the_original_receipt(world: World) -> None:
    world.commission("L1", 3)
    signed = world.as_("maphar").ship(GTIN, "L1", "dist-north", quantity=2)
    first = world.ledger.submit(signed)
    size = world.ledger.size()
    world.clock.advance(minutes=5)
    again = world.ledger.submit(signed)
    assert again.replayed and not first.replayed
    assert (again.index, again.entry_hash, again.prev, again.event_id, again.received) == (
        first.index, first.entry_hash, first.prev, first.event_id, first.received)
    assert world.ledger.size() == size
    check_receipt(world.ledger, again)
    # a replay inside a group with new events is still answered from the log
    group = world.ledger.append([signed, world.as_("dist-north").receive(signed.event_id), signed])
    assert isinstance(group[0], Receipt) and group[0].replayed and group[0].index == first.index
    assert isinstance(group[2], Receipt) and group[2].replayed and group[2].index == first.index
    assert isinstance(group[1], Receipt) and not group[1].replayed
    assert world.ledger.size() == size + 1


def test_same_event_id_with_other_content_conflicts(world: World) -> None:
    world.commission("L1", 3)
    world.ledger.submit(world.as_("maphar").ship(GTIN, "L1", "dist-north", quantity=1, event_id="ship-42"))
    size = world.ledger.size()
    with pytest.raises(E.EventIdConflict):
        world.ledger.submit(world.as_("maphar").ship(GTIN, "L1", "dist-north", quantity=2, event_id="ship-42"))
    # the same body re-signed by another actor's key under the same id also conflicts
    with pytest.raises(E.EventIdConflict):
        world.ledger.submit(world.as_("dist-south").receive("x", event_id="ship-42"))
    assert world.ledger.size() == size


def test_revoked_key_signs_nothing_after_revocation(world: World) -> None:
    serials = world.commission("L1", 4)
    world.deliver("maphar", "ph-rabat", "L1", serials)
    before = world.ledger.submit(world.as_("ph-rabat").dispense(GTIN, serials[0]))
    world.ledger.submit(world.root.revoke_key("ph-rabat", world.keys["ph-rabat"].key_id, "stolen laptop"))
    size = world.ledger.size()
    with pytest.raises(E.KeyNotActive):
        world.ledger.submit(world.as_("ph-rabat").dispense(GTIN, serials[1]))
    assert world.ledger.size() == size
    # the earlier entry still verifies: the audit checks each signature against the keys valid at its index
    report = assert_verified(world.ledger)
    assert report.entries > before.index
    # a new key registered by rotation lets the pharmacy work again
    new = KeyPair.generate()
    world.ledger.submit(world.root.rotate_key("ph-rabat", new.public.b64))
    world.ledger.submit(EventBuilder("ph-rabat", new, world.clock).dispense(GTIN, serials[1]))


def test_rotated_key(world: World) -> None:
    serials = world.commission("L1", 4)
    world.deliver("maphar", "ph-fes", "L1", serials)
    old = world.keys["ph-fes"]
    new = KeyPair.generate()
    world.ledger.submit(world.as_("ph-fes").dispense(GTIN, serials[0]))
    world.ledger.submit(world.root.rotate_key("ph-fes", new.public.b64))
    with pytest.raises(E.KeyNotActive):
        world.ledger.submit(EventBuilder("ph-fes", old, world.clock).dispense(GTIN, serials[1]))
    world.keys["ph-fes"] = new
    world.ledger.submit(world.as_("ph-fes").dispense(GTIN, serials[1]))
    with world.ledger.store.read() as u:
        assert {k.key_id: k.status for k in u.keys_of("ph-fes")} == {old.key_id: "rotated", new.key_id: "active"}
    # rotating to a key that is already registered is refused
    with pytest.raises(E.DuplicateKey):
        world.ledger.submit(world.root.rotate_key("ph-rabat", new.public.b64))


def test_event_signed_by_another_actor_is_a_signer_mismatch(world: World) -> None:
    serials = world.commission("L1", 2)
    world.deliver("maphar", "ph-rabat", "L1", serials)
    size = world.ledger.size()
    with pytest.raises(E.SignerMismatch):
        world.ledger.submit(EventBuilder("ph-fes", world.keys["ph-rabat"], world.clock).dispense(GTIN, serials[0]))
    with pytest.raises(E.SignerMismatch):  # a registry event signed by the regulator's own key, not the root key
        world.ledger.submit(EventBuilder("root", world.keys["regulator"], world.clock).revoke_key(
            "ph-rabat", world.keys["ph-rabat"].key_id, "x"))
    with pytest.raises(E.UnknownKey):
        world.ledger.submit(EventBuilder("ph-rabat", KeyPair.generate(), world.clock).dispense(GTIN, serials[0]))
    assert world.ledger.size() == size
    assert alerts(world) == []


# ---- alerts ---------------------------------------------------------------------------------------------


def test_double_dispense_by_another_pharmacy_writes_one_alert(world: World) -> None:
    serials = world.commission("L1", 4)
    world.deliver("maphar", "ph-rabat", "L1", serials[:2])
    world.deliver("maphar", "ph-fes", "L1", serials[2:])
    world.ledger.submit(world.as_("ph-rabat").dispense(GTIN, serials[0]))
    size = world.ledger.size()
    clone = world.as_("ph-fes").dispense(GTIN, serials[0])
    with pytest.raises(E.DuplicateDispense):
        world.ledger.submit(clone)
    assert world.ledger.size() == size + 1
    alert_stored = world.ledger.entries(size, size + 1)[0]
    alert_entry = Entry.from_leaf(alert_stored.leaf)
    body = alert_entry.signed.body
    assert (alert_stored.event_type, body["actor"], body["kind"], body["suspect"]) == (
        "alert", "ledger", "duplicate_dispense", "ph-fes")
    assert (body["gtin"], body["lot"], body["serial"]) == (GTIN, "L1", serials[0])
    assert alert_entry.signed.key_id == world.ledger.config.ledger_key.key_id
    world.ledger.config.ledger_key.public.verify("event", dict(body), alert_entry.signed.signature)
    assert body["evidence"] == clone.to_json()
    assert alert_entry.chain == f"batch/{GTIN}/L1"
    recorded = alerts(world)
    assert len(recorded) == 1
    assert (recorded[0].kind, recorded[0].suspect, recorded[0].serial, recorded[0].index) == (  # type: ignore[attr-defined]
        "duplicate_dispense", "ph-fes", serials[0], size)

    # the same refused submission again: refused again, but no second alert
    with pytest.raises(E.DuplicateDispense):
        world.ledger.submit(clone)
    assert world.ledger.size() == size + 1
    assert len(alerts(world)) == 1
    # the same pharmacy scanning again is told when, and raises no alert
    with pytest.raises(E.AlreadyDispensedByYou) as info:
        world.ledger.submit(world.as_("ph-rabat").dispense(GTIN, serials[0]))
    assert info.value.details["dispensed_at"].startswith(world.clock.now.date().isoformat())
    assert world.ledger.size() == size + 1


def test_refused_over_shipment_changes_no_holdings(world: World) -> None:
    serials = world.commission("L1", 5)
    world.deliver("maphar", "dist-north", "L1", serials[:3])
    with world.ledger.store.read() as u:
        before = u.holdings_of_batch(GTIN, "L1")
        packs_before = u.packs(GTIN, tuple(serials))
    with pytest.raises(E.OverShipment):
        world.ledger.submit(world.as_("dist-north").ship(GTIN, "L1", "ph-rabat", quantity=4))
    with pytest.raises(E.NotHolder):
        world.ledger.submit(world.as_("dist-north").ship(GTIN, "L1", "ph-rabat", serials=serials[2:4]))
    with world.ledger.store.read() as u:
        assert u.holdings_of_batch(GTIN, "L1") == before == {"maphar": 2, "dist-north": 3}
        assert u.packs(GTIN, tuple(serials)) == packs_before
        assert u.shipments_of_batch(GTIN, "L1")[-1].recipient == "dist-north"
    # the over-shipment is evidence of risk: it was kept as an alert
    assert [a.kind for a in alerts(world)] == ["over_shipment"]  # type: ignore[attr-defined]


# ---- checkpoints and groups -----------------------------------------------------------------------------


def test_consistency_between_every_pair_of_checkpoints(world: World) -> None:
    serials = world.commission("L1", 6)
    world.deliver("maphar", "dist-north", "L1", serials)
    world.deliver("dist-north", "ph-rabat", "L1", serials[:3])
    with world.ledger.store.read() as u:
        checkpoints = u.checkpoints()
    assert [c.tree_size for c in checkpoints] == list(range(1, world.ledger.size() + 1))
    vkey = world.ledger.config.verifier_key
    for c in checkpoints:
        opened = open_checkpoint(c.note, vkey)
        assert (opened.size, opened.root) == (c.tree_size, c.root_hash)
    for a, b in itertools.combinations(checkpoints, 2):
        proof = world.ledger.consistency_proof(a.tree_size, b.tree_size)
        verify_consistency(a.tree_size, b.tree_size, a.root_hash, b.root_hash, proof)
    with pytest.raises(E.InvalidQuery):
        world.ledger.consistency_proof(1, world.ledger.size() + 1)
    with pytest.raises(E.InvalidQuery, match="larger than the log"):  # the size is read with the nodes
        world.ledger.inclusion_proof(0, world.ledger.size() + 1)


def test_group_append_gives_one_checkpoint(world: World) -> None:
    serials = world.commission("L1", 6)
    with world.ledger.store.read() as u:
        cps_before = len(u.checkpoints())
    size = world.ledger.size()
    ship = world.as_("maphar").ship(GTIN, "L1", "dist-north", serials=serials[:4])
    group = [
        ship,
        world.as_("dist-south").receive(ship.event_id),  # refused: not the recipient
        world.as_("dist-north").receive(ship.event_id),  # accepted: sees the ship above, same transaction
        world.as_("regulator").commission(GTIN, "LX", world.clock.now.date().replace(year=2029), "p", ["X1"]),
        world.as_("dist-north").ship(GTIN, "L1", "ph-rabat", quantity=9),  # refused, with an alert
        world.as_("dist-north").ship(GTIN, "L1", "ph-rabat", serials=serials[:2]),
    ]
    results = world.ledger.append(group)
    kinds = [type(r).__name__ for r in results]
    assert kinds == ["Receipt", "NotRecipient", "Receipt", "RoleNotAllowed", "OverShipment", "Receipt"]
    receipts = [r for r in results if isinstance(r, Receipt)]
    # three accepted events, then the alert of the refused shipment (a group files its alerts after its events)
    assert world.ledger.size() == size + 4
    assert [r.index for r in receipts] == [size, size + 1, size + 2]
    with world.ledger.store.read() as u:
        alert = u.entry(size + 3)
    assert alert is not None and alert.event_type == "alert" and alert.actor == ev.LEDGER_ACTOR
    assert {(r.tree_size, r.root, r.checkpoint) for r in receipts} == {
        (size + 4, receipts[0].root, receipts[0].checkpoint)}
    for r in receipts:
        check_receipt(world.ledger, r)
    with world.ledger.store.read() as u:
        cps = u.checkpoints()
    assert len(cps) == cps_before + 1 and cps[-1].tree_size == size + 4
    # a group of refusals only (no alert) writes nothing, not even a checkpoint
    only_refused = world.ledger.append([world.as_("dist-south").receive(ship.event_id)])
    assert isinstance(only_refused[0], E.NotRecipient)
    with world.ledger.store.read() as u:
        assert len(u.checkpoints()) == cps_before + 1
    assert world.ledger.size() == size + 4


def test_malformed_submissions_are_refused_without_writing(world: World) -> None:
    size = world.ledger.size()
    bad = world.as_("maphar").commission("06111234567896", "L1", world.clock.now.date().replace(year=2029), "p",
                                         ["S1"])
    with pytest.raises(E.InvalidIdentifier):
        world.ledger.submit(bad)
    assert world.ledger.size() == size


def test_a_client_cannot_suppress_the_alert_by_taking_its_id(world: World) -> None:
    serials = world.commission("L1", 2)
    world.deliver("maphar", "ph-rabat", "L1", serials)
    world.ledger.submit(world.as_("ph-rabat").dispense(GTIN, serials[0]))
    clone = world.as_("ph-fes").dispense(GTIN, serials[0])
    alert_id = "alert:" + hashlib.sha256(canonical(clone.to_json())).hexdigest()[:40]
    # refusing a client event under a reserved alert id is one acceptable fix
    with contextlib.suppress(E.LedgerError):
        world.ledger.submit(world.as_("ph-fes").report(GTIN, "other", event_id=alert_id))
    with pytest.raises(E.DuplicateDispense):
        world.ledger.submit(clone)
    assert [a.kind for a in alerts(world) if a.kind != "report"] == ["duplicate_dispense"]  # type: ignore[attr-defined]


def test_the_ledgers_own_keys_are_never_an_actors_key(world: World) -> None:
    """The server holds the ledger's private key: as an actor's key it would let the server sign as that actor."""
    trust = world.ledger.config.trust
    size = world.ledger.size()
    for public in (trust.ledger, trust.root):
        with pytest.raises(E.InvalidEvent, match="own keys"):
            world.ledger.submit(world.root.register_actor("ph-shadow", "Shadow", "pharmacy", "Oriental", public.b64))
        with pytest.raises(E.InvalidEvent, match="own keys"):
            world.ledger.submit(world.root.rotate_key("ph-rabat", public.b64))
    assert world.ledger.size() == size
