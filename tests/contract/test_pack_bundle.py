"""One-pack bundles, built from a real ledger and verified with the pinned keys: they agree with the server's
verdict and provenance and with a batch bundle's, and every edit, forgery or contradiction fails verification."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ledger import errors as E
from ledger.bundle import verify_bundle
from ledger.bundle_build import build_bundle
from ledger.checkpoint import Checkpoint, sign_checkpoint, split_note
from ledger.entry import Entry
from ledger.pack_bundle import (
    STATEMENT_PURPOSE,
    WHOLE_ENTRY_KINDS,
    TamperedPackBundle,
    verify_pack_bundle,
)
from ledger.queries import Reader
from signing import KeyPair, b64decode, b64encode
from tests.support import GTIN, World, make_world


@dataclass
class Packs:
    world: World
    reader: Reader
    serials: list[str]


@pytest.fixture
def packs(tmp_path: Path, db_url: str) -> Packs:
    """Packs dispensed, undone and dispensed again, moved by quantity, destroyed, in transit, in a recalled batch."""
    w = make_world(tmp_path / "home", db_url)
    serials = w.supply_history("PB1")
    w.ledger.submit(w.as_("maphar").destroy(GTIN, "PB1", "damaged", serials=[serials[7]]))
    w.ledger.submit(w.as_("dist-north").ship(GTIN, "PB1", "ph-fes", serials=[serials[4]]))  # in transit
    w.ledger.submit(w.as_("ph-rabat").dispense(GTIN, serials[1]))
    w.ledger.submit(w.as_("ph-rabat").undo_dispense(GTIN, serials[1], "wrong box"))
    recalled = w.commission("PB2", 3)
    w.deliver("maphar", "dist-south", "PB2", recalled[:2])
    w.ledger.submit(w.as_("regulator").recall(GTIN, "PB2", "contamination"))
    w.ledger.submit(w.as_("maphar").commission(GTIN, "PB3", dt.date(2026, 12, 15), "Sirop", ["EXP1"]))
    quarantined = w.commission("PB4", 2)
    w.ledger.submit(w.as_("regulator").quarantine(GTIN, "PB4", "under investigation"))
    w.clock.advance(days=30)  # PB3 has expired since
    return Packs(w, Reader(w.ledger), [*serials, *recalled, "EXP1", *quarantined])


def _json(doc: dict[str, Any]) -> Any:
    return json.loads(json.dumps(doc))  # as it travels: through JSON text


def test_agrees_with_the_server_and_a_batch_bundle(packs: Packs) -> None:
    w, reader = packs.world, packs.reader
    trust = w.ledger.config.trust
    with w.ledger.store.read() as u:
        chains = [f"batch/{GTIN}/{lot}" for lot in ("PB1", "PB2", "PB3", "PB4")]
        batches = verify_bundle(_json(build_bundle(u, w.ledger.config.ledger_key, chains, created=w.clock())), trust)
        hashes = {e.index: e.hash for e in batches.entries}
    kinds = set()
    for serial in packs.serials:
        bundle = verify_pack_bundle(_json(reader.pack_bundle(GTIN, serial)), trust)
        server = reader.pack(GTIN, serial)
        assert bundle.verdict(now=w.clock()) == server.finding == batches.verdict(GTIN, serial, now=w.clock())
        assert [(s.index, s.type, s.actor, s.time) for s in bundle.steps] == [
            (s.index, s.type, s.actor, s.time) for s in server.steps], serial
        assert all(s.hash == hashes[s.index] for s in bundle.steps), serial
        latest = bundle.steps[-1]
        assert (bundle.anchor is not None) == (latest.type in WHOLE_ENTRY_KINDS), serial
        assert bundle.anchor is None or (bundle.anchor.index, bundle.anchor.hash) == (latest.index, latest.hash)
        kinds.add((latest.type, bundle.verdict(now=w.clock()).verdict.value))
    assert kinds >= {("dispense", "ALREADY_DISPENSED"), ("ship", "AUTHENTIC"), ("recall", "RECALLED"),
                     ("commission", "EXPIRED"), ("destroy", "ALREADY_DISPENSED"), ("undo_dispense", "AUTHENTIC"),
                     ("quarantine", "QUARANTINED")}


def test_what_a_public_bundle_tells(packs: Packs) -> None:
    """Not who holds a pack (custody is not judged from it); the dispensing pharmacy's double scan; a mismatch."""
    trust = packs.world.ledger.config.trust
    now = packs.world.clock()
    doc = _json(packs.reader.pack_bundle(GTIN, packs.serials[1]))  # dispensed, undone: back at ph-rabat
    assert "holder" not in doc["statement"]["pack"]
    held = verify_pack_bundle(doc, trust)
    assert held.pack.holder is None and held.anchor is None  # an undo's reason does not travel
    assert held.verdict(scanner="ph-fes", now=now).verdict.value == "AUTHENTIC"
    assert held.verdict(lot="OTHER", now=now).verdict.value == "MISMATCH"
    assert held.holds(GTIN, packs.serials[1]) and not held.holds(GTIN, packs.serials[2])
    dispensed = verify_pack_bundle(_json(packs.reader.pack_bundle(GTIN, packs.serials[0])), trust)
    assert "double scan" in dispensed.verdict(scanner="ph-rabat", now=now).reason
    assert "double scan" not in dispensed.verdict(scanner="ph-fes", now=now).reason


def test_an_unregistered_pack_has_no_bundle(packs: Packs) -> None:
    with pytest.raises(E.UnknownPack, match="was ever registered"):
        packs.reader.pack_bundle(GTIN, "NEVER-SEEN")


def test_one_pack_bundle_is_small(packs: Packs) -> None:
    """Here the log is small (a short proof); the benchmark measures the size at 10^6 entries."""
    doc = packs.reader.pack_bundle(GTIN, packs.serials[0])  # seven steps, the latest a dispense, whole
    assert len(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()) < 4096


# ---- tampering ------------------------------------------------------------------------------------------------

Edit = Callable[[dict[str, Any], KeyPair], None]


def _resign(doc: dict[str, Any], key: KeyPair) -> None:
    doc["signature"] = b64encode(key.sign(STATEMENT_PURPOSE, doc["statement"]))


def _status_edited(doc: dict[str, Any], _key: KeyPair) -> None:
    doc["statement"]["pack"]["status"] = "active"


def _lying_ledger(doc: dict[str, Any], key: KeyPair) -> None:
    """The ledger key itself signs a state its latest signed entry contradicts: a dispensed pack said active."""
    doc["statement"]["pack"].update(status="active", dispensed_by=None, dispensed_at=None, dispensed_index=None)
    _resign(doc, key)


def _other_key(doc: dict[str, Any], _key: KeyPair) -> None:
    doc["statement"]["pack"]["status"] = "active"
    _resign(doc, KeyPair.generate())


def _checkpoint_other_key(doc: dict[str, Any], _key: KeyPair) -> None:
    text, _ = split_note(doc["checkpoint"])
    cp = Checkpoint.parse_body(text)
    doc["checkpoint"] = sign_checkpoint(cp, cp.origin, KeyPair.generate())


def _proof_edited(doc: dict[str, Any], _key: KeyPair) -> None:
    path = bytearray(b64decode(doc["anchor"]["proof"]))
    path[0] ^= 1
    doc["anchor"]["proof"] = b64encode(bytes(path))


def _proof_truncated(doc: dict[str, Any], _key: KeyPair) -> None:
    doc["anchor"]["proof"] = b64encode(b64decode(doc["anchor"]["proof"])[:-32])


def _entry_edited(doc: dict[str, Any], _key: KeyPair) -> None:
    doc["anchor"]["entry"]["event"]["serial"] = "SOMEONE-ELSE"


def _entry_dropped(doc: dict[str, Any], _key: KeyPair) -> None:
    doc["anchor"]["entry"] = None


def _step_hash_edited(doc: dict[str, Any], key: KeyPair) -> None:
    """Even with the ledger key: the named leaf is not the one the proof puts in the tree."""
    step = doc["statement"]["steps"][-1]
    step["hash"] = b64encode(bytes(32))
    _resign(doc, key)


def _signer_swapped(doc: dict[str, Any], key: KeyPair) -> None:
    """The ledger names another key for the entry's actor than the one that signed it."""
    other = KeyPair.generate().public
    doc["statement"]["signer"] = {"key_id": other.key_id, "public_key": other.b64}
    _resign(doc, key)


def _signer_misnamed(doc: dict[str, Any], key: KeyPair) -> None:
    """The signer's key id kept, another public key given: it does not hash to the id."""
    doc["statement"]["signer"]["public_key"] = KeyPair.generate().public.b64
    _resign(doc, key)


def _steps_reordered(doc: dict[str, Any], key: KeyPair) -> None:
    steps = doc["statement"]["steps"]
    steps[1], steps[2] = steps[2], steps[1]
    _resign(doc, key)


def _not_a_bundle(doc: dict[str, Any], _key: KeyPair) -> None:
    doc["format"] = "athar-bundle/1"


def _anchor_not_an_object(doc: dict[str, Any], _key: KeyPair) -> None:
    doc["anchor"] = [doc["anchor"]]


def _proof_not_a_string(doc: dict[str, Any], _key: KeyPair) -> None:
    doc["anchor"]["proof"] = [doc["anchor"]["proof"]]


def _no_steps(doc: dict[str, Any], key: KeyPair) -> None:
    doc["statement"]["steps"] = []
    _resign(doc, key)


def _no_commissioning(doc: dict[str, Any], key: KeyPair) -> None:
    del doc["statement"]["steps"][0]
    _resign(doc, key)


def _step_past_the_tree(doc: dict[str, Any], key: KeyPair) -> None:
    doc["statement"]["steps"][-1]["index"] = doc["statement"]["tree_size"]
    _resign(doc, key)


def _missing_field(doc: dict[str, Any], key: KeyPair) -> None:
    del doc["statement"]["batch"]["expiry"]
    _resign(doc, key)


def _dispensed_by_a_shipment(doc: dict[str, Any], key: KeyPair) -> None:
    doc["statement"]["pack"]["dispensed_index"] = doc["statement"]["steps"][1]["index"]
    _resign(doc, key)


def _step_time_edited(doc: dict[str, Any], key: KeyPair) -> None:
    doc["statement"]["steps"][-1]["time"] = "2020-01-01T00:00:00.000000Z"
    _resign(doc, key)


def _deeply_nested(doc: dict[str, Any], _key: KeyPair) -> None:
    nested: Any = 0
    for _ in range(5_000):
        nested = [nested]
    doc["statement"]["x"] = nested


@pytest.mark.parametrize(("edit", "says"), [
    (_status_edited, "statement is not signed by the pinned ledger key"),
    (_other_key, "statement is not signed by the pinned ledger key"),
    (_lying_ledger, "contradicts its latest dispense"),
    (_checkpoint_other_key, "checkpoint is not signed by the pinned ledger key"),
    (_proof_edited, "not in the signed tree"),
    (_proof_truncated, "not in the signed tree"),
    (_entry_edited, "is not the leaf the statement names"),
    (_entry_dropped, "malformed"),
    (_step_hash_edited, "not in the signed tree"),
    (_signer_swapped, "names no key for the entry's signer"),
    (_signer_misnamed, "does not hash to its id"),
    (_steps_reordered, "out of order"),
    (_not_a_bundle, "not an athar-pack-bundle/1 bundle"),
    (_anchor_not_an_object, "proves no entry"),
    (_proof_not_a_string, "not in the signed tree"),
    (_no_steps, "names no commissioning"),
    (_no_commissioning, "names no commissioning"),
    (_step_past_the_tree, "past the tree"),
    (_missing_field, "statement is malformed"),
    (_dispensed_by_a_shipment, "dispensed by an entry its steps do not name"),
    (_step_time_edited, "entry's time is not the step's"),
    (_deeply_nested, "statement is not signed"),
], ids=lambda v: v.__name__.strip("_") if callable(v) else None)
def test_tampered_pack_bundle(packs: Packs, edit: Edit, says: str) -> None:
    ledger = packs.world.ledger
    doc = _json(packs.reader.pack_bundle(GTIN, packs.serials[0]))  # dispensed: its dispense travels whole
    verify_pack_bundle(copy.deepcopy(doc), ledger.config.trust)
    edit(doc, ledger.config.ledger_key)
    with pytest.raises(TamperedPackBundle, match=says):
        verify_pack_bundle(doc, ledger.config.trust)


def test_a_statement_from_another_checkpoint(packs: Packs) -> None:
    w = packs.world
    old = _json(packs.reader.pack_bundle(GTIN, packs.serials[1]))
    w.ledger.submit(w.as_("ph-rabat").dispense(GTIN, packs.serials[1]))
    new = _json(packs.reader.pack_bundle(GTIN, packs.serials[1]))
    assert verify_pack_bundle(new, w.ledger.config.trust).pack.status == "dispensed"
    old["checkpoint"] = new["checkpoint"]  # an old "still in stock" statement under the latest checkpoint
    with pytest.raises(TamperedPackBundle, match="different trees"):
        verify_pack_bundle(old, w.ledger.config.trust)


def test_a_whole_entry_where_none_may_travel(packs: Packs) -> None:
    """A shipment lists a pallet (volumes): a bundle that carries one is refused, not shown."""
    ledger = packs.world.ledger
    doc = _json(packs.reader.pack_bundle(GTIN, packs.serials[1]))  # latest step: a shipment
    assert doc["anchor"]["entry"] is None
    with ledger.store.read() as u:
        stored = u.entry(doc["anchor"]["index"])
        assert stored is not None
    doc["anchor"]["entry"] = Entry.from_leaf(stored.leaf).to_json()
    with pytest.raises(TamperedPackBundle, match="does not travel whole"):
        verify_pack_bundle(doc, ledger.config.trust)
