"""Tampering below the application, on SQLite and PostgreSQL: the append-only triggers refuse edits, and
when an attacker drops them, ``verify_store`` detects each edit and names the first bad entry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ledger import errors as E
from ledger.audit import AuditReport, verify_store
from ledger.builder import EventBuilder
from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.entry import EVENT_PURPOSE, Entry, SignedEvent
from ledger.home import open_ledger
from ledger.merkle import CompactRange, ProofError, leaf_hash, root_nodes, verify_inclusion
from signing import KeyPair, b64encode, canonical
from tests.support import GTIN, World, make_world

APPEND_ONLY = ("log_entries", "merkle_nodes", "checkpoints", "meta")
TARGET = 12  # dist-north ships three packs to ph-rabat (see ``world``)


def audit(world: World) -> AuditReport:
    cfg = world.ledger.config
    return verify_store(world.ledger.store, cfg.trust, cfg.origin)


def sql(world: World, statement: str, **params: Any) -> None:
    with world.db.writer.begin() as conn:
        conn.execute(sa.text(statement), params)


def drop_triggers(world: World) -> None:
    with world.db.writer.begin() as conn:
        for table in APPEND_ONLY:
            if world.db.is_sqlite:
                conn.exec_driver_sql(f"DROP TRIGGER {table}_no_update")
                conn.exec_driver_sql(f"DROP TRIGGER {table}_no_delete")
            else:
                conn.exec_driver_sql(f"ALTER TABLE {table} DISABLE TRIGGER USER")


def leaf_doc(world: World, index: int) -> dict[str, Any]:
    stored = world.ledger.entries(index, index + 1)[0]
    doc = json.loads(stored.leaf)
    assert isinstance(doc, dict)
    return doc


def write_leaf(world: World, index: int, doc: dict[str, Any], *, rehash: bool = True) -> None:
    leaf = canonical(doc)
    if rehash:
        sql(world, "UPDATE log_entries SET leaf = :leaf, entry_hash = :h WHERE idx = :i",
            leaf=leaf, h=leaf_hash(leaf), i=index)
    else:
        sql(world, "UPDATE log_entries SET leaf = :leaf WHERE idx = :i", leaf=leaf, i=index)


def failed_at(world: World, index: int | None, *words: str) -> AuditReport:
    report = audit(world)
    assert not report.ok, "tampering went undetected"
    assert report.failure is not None
    assert report.failure.index == index, report.failure
    for word in words:
        assert word in report.failure.reason, report.failure
    return report


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    """Nine registrations (0-8), then a small history of one batch (9-16)."""
    w = make_world(tmp_path / "home", db_url)
    try:
        serials = w.commission("L1", 10)  # 9
        w.deliver("maphar", "dist-north", "L1", serials[:6])  # 10, 11
        w.deliver("dist-north", "ph-rabat", "L1", serials[:3])  # 12, 13
        assert w.ledger.entries(TARGET, TARGET + 1)[0].event_type == "ship"
        w.ledger.submit(w.as_("ph-rabat").dispense(GTIN, serials[0]))  # 14
        with pytest.raises(E.DuplicateDispense):
            w.ledger.submit(w.as_("ph-fes").dispense(GTIN, serials[0]))  # 15: alert
        w.ledger.submit(w.as_("inspector").report(GTIN, "suspected_falsified", serial=serials[1]))  # 16
        assert w.ledger.size() == 17
        report = audit(w)
        assert report.ok, report.failure
        assert report.checkpoints == 17
        yield w
    finally:
        w.db.dispose()


# ---- the triggers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", APPEND_ONLY)
def test_triggers_refuse_update_and_delete(world: World, table: str) -> None:
    column = {"log_entries": "leaf", "merkle_nodes": "hash", "checkpoints": "note", "meta": "value"}[table]
    value: Any = "x" if table in ("checkpoints", "meta") else b"x"
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        sql(world, f"UPDATE {table} SET {column} = :v", v=value)
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        sql(world, f"DELETE FROM {table}")
    if not world.db.is_sqlite:
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            sql(world, f"TRUNCATE {table}")
    assert world.ledger.size() == 17
    assert audit(world).ok


def test_triggers_refuse_a_targeted_edit_of_one_entry(world: World) -> None:
    with pytest.raises(sa.exc.DBAPIError):
        sql(world, "UPDATE log_entries SET prev = NULL WHERE idx = :i", i=TARGET)
    with pytest.raises(sa.exc.DBAPIError):
        sql(world, "DELETE FROM log_entries WHERE idx = :i", i=16)
    assert audit(world).ok


# ---- tampering with the triggers dropped ------------------------------------------------------------------


@pytest.mark.parametrize("rehash", [False, True])
def test_one_changed_byte_in_a_leaf(world: World, rehash: bool) -> None:
    drop_triggers(world)
    leaf = world.ledger.entries(TARGET, TARGET + 1)[0].leaf
    assert leaf.count(b"ph-rabat") == 1
    doc = json.loads(leaf.replace(b"ph-rabat", b"ph-fabat"))
    write_leaf(world, TARGET, doc, rehash=rehash)
    if rehash:
        failed_at(world, TARGET, "signature")
    else:
        failed_at(world, TARGET, "does not match its hash")


def test_one_changed_byte_anywhere_in_raw_leaf_bytes(world: World) -> None:
    """Not even a still-parseable edit: a raw byte flip in the middle of the leaf."""
    drop_triggers(world)
    leaf = bytearray(world.ledger.entries(5, 6)[0].leaf)
    leaf[len(leaf) // 2] ^= 0x01
    sql(world, "UPDATE log_entries SET leaf = :leaf WHERE idx = 5", leaf=bytes(leaf))
    failed_at(world, 5)


def test_replaced_signature_with_rehashed_entry(world: World) -> None:
    drop_triggers(world)
    doc = leaf_doc(world, TARGET)
    attacker = KeyPair.generate()
    doc["signature"] = b64encode(attacker.sign(EVENT_PURPOSE, doc["event"]))
    write_leaf(world, TARGET, doc)
    failed_at(world, TARGET, "signature does not verify")


def resign_as(world: World, actor: str, index: int = TARGET) -> None:
    """Re-sign an entry, key id and signature, with another registered actor's key."""
    drop_triggers(world)
    doc = leaf_doc(world, index)
    other = world.keys[actor]
    doc["key_id"], doc["signature"] = other.key_id, b64encode(other.sign(EVENT_PURPOSE, doc["event"]))
    write_leaf(world, index, doc)


def test_replaced_signature_and_key_id_of_another_actor(world: World) -> None:
    """Re-sign the entry with another registered actor's key: a signer mismatch."""
    resign_as(world, "dist-south")
    failed_at(world, TARGET, "belongs to dist-south")


def test_changed_prev_in_leaf_and_column(world: World) -> None:
    drop_triggers(world)
    doc = leaf_doc(world, TARGET)
    skipped = world.ledger.entries(10, 11)[0].entry_hash  # link past entry 11
    doc["prev"] = skipped.hex()
    write_leaf(world, TARGET, doc)
    sql(world, "UPDATE log_entries SET prev = :p WHERE idx = :i", p=skipped, i=TARGET)
    failed_at(world, TARGET, "link broken")


def test_changed_prev_column_only(world: World) -> None:
    drop_triggers(world)
    sql(world, "UPDATE log_entries SET prev = NULL WHERE idx = :i", i=TARGET)
    failed_at(world, TARGET, "indexed columns")


def test_deleted_entry(world: World) -> None:
    drop_triggers(world)
    sql(world, "DELETE FROM log_entries WHERE idx = :i", i=TARGET)
    failed_at(world, TARGET, "missing")


def test_deleted_last_entry(world: World) -> None:
    drop_triggers(world)
    sql(world, "DELETE FROM log_entries WHERE idx = 16")
    failed_at(world, 16, "missing")


def test_swapped_leaves(world: World) -> None:
    drop_triggers(world)
    a, b = world.ledger.entries(11, 13)
    sql(world, "UPDATE log_entries SET entry_hash = :h WHERE idx = 11", h=b"\x00" * 32)
    sql(world, "UPDATE log_entries SET leaf = :leaf, entry_hash = :h WHERE idx = 12", leaf=a.leaf, h=a.entry_hash)
    sql(world, "UPDATE log_entries SET leaf = :leaf, entry_hash = :h WHERE idx = 11", leaf=b.leaf, h=b.entry_hash)
    failed_at(world, 11, "moved")


def test_swapped_leaves_only(world: World) -> None:
    drop_triggers(world)
    a, b = world.ledger.entries(11, 13)
    sql(world, "UPDATE log_entries SET leaf = :leaf WHERE idx = 12", leaf=a.leaf)
    sql(world, "UPDATE log_entries SET leaf = :leaf WHERE idx = 11", leaf=b.leaf)
    failed_at(world, 11)


def test_checkpoint_note_replaced_by_another_genuine_note(world: World) -> None:
    drop_triggers(world)
    other = world.ledger.checkpoint(TARGET)
    assert other is not None
    sql(world, "UPDATE checkpoints SET note = :n WHERE tree_size = :s", n=other.note, s=TARGET + 1)
    failed_at(world, TARGET, "checkpoint")


def test_checkpoint_note_signed_by_an_attacker(world: World) -> None:
    drop_triggers(world)
    genuine = world.ledger.checkpoint(TARGET + 1)
    assert genuine is not None
    cfg = world.ledger.config
    forged = sign_checkpoint(Checkpoint(cfg.origin, TARGET + 1, genuine.root_hash), cfg.origin, KeyPair.generate())
    sql(world, "UPDATE checkpoints SET note = :n WHERE tree_size = :s", n=forged, s=TARGET + 1)
    failed_at(world, TARGET, "checkpoint")


def test_checkpoint_root_column_edited(world: World) -> None:
    drop_triggers(world)
    sql(world, "UPDATE checkpoints SET root_hash = :r WHERE tree_size = 4", r=b"\x01" * 32)
    failed_at(world, 3, "checkpoint")


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_edited_merkle_node(world: World, level: int) -> None:
    drop_triggers(world)
    node = TARGET >> level
    sql(world, "UPDATE merkle_nodes SET hash = :h WHERE level = :l AND idx = :i", h=b"\xee" * 32, l=level, i=node)
    failed_at(world, node << level, "Merkle node")


def test_deleted_merkle_node(world: World) -> None:
    drop_triggers(world)
    sql(world, "DELETE FROM merkle_nodes WHERE level = 1 AND idx = 3")
    failed_at(world, 6, "Merkle node")


def test_an_edited_node_a_worker_keeps_is_served_as_it_was_and_the_audit_finds_it(world: World) -> None:
    # what docs and ledger.node_cache say: a process serving proofs answers from the nodes it keeps, which an edit
    # of their rows does not reach; a process that reads them serves a proof that fails; the audit names the node
    size = world.ledger.size()
    kept = world.ledger.inclusion_at_checkpoint(TARGET, size)  # its path's nodes are now kept
    drop_triggers(world)
    sql(world, "UPDATE merkle_nodes SET hash = :h WHERE level = 1 AND idx = :i", h=b"\xee" * 32, i=(TARGET >> 1) ^ 1)
    assert world.ledger.inclusion_at_checkpoint(TARGET, size) == kept
    assert kept.leaf_hash is not None
    verify_inclusion(kept.leaf_hash, TARGET, size, kept.hashes, kept.root)
    fresh, db = open_ledger(world.home.path, world.db.url)
    try:
        read = fresh.inclusion_at_checkpoint(TARGET, size)
        with pytest.raises(ProofError):
            verify_inclusion(kept.leaf_hash, TARGET, size, read.hashes, read.root)
    finally:
        db.dispose()
    failed_at(world, ((TARGET >> 1) ^ 1) << 1, "Merkle node")


def test_rolled_back_head(world: World) -> None:
    sql(world, "UPDATE log_head SET tree_size = 16")  # log_head is not append-only; the audit still notices
    report = audit(world)
    assert not report.ok


# ---- the projection is never trusted by the audit ---------------------------------------------------------


def test_replaced_key_in_projection_is_caught_by_the_audit(world: World) -> None:
    """An attacker swaps ph-rabat's public key in ``actor_keys`` and signs as ph-rabat."""
    victim = world.keys["ph-rabat"]
    attacker = KeyPair.generate()
    sql(world, "UPDATE actor_keys SET public_key = :pk WHERE key_id = :k", pk=attacker.public.b64, k=victim.key_id)
    # the log itself is untouched: the audit rebuilds the registry from the log and still passes
    assert audit(world).ok
    body = EventBuilder("ph-rabat", attacker, world.clock).dispense(GTIN, "L1S00001").body
    forged = SignedEvent(body, victim.key_id, attacker.sign(EVENT_PURPOSE, body))
    # a key id is the hash of its key, so the live path notices the swapped key and writes nothing
    size = world.ledger.size()
    with pytest.raises((E.SignatureInvalid, E.IntegrityError)):
        world.ledger.submit(forged)
    assert world.ledger.size() == size
    assert audit(world).ok


def test_added_key_in_projection_is_caught_by_the_audit(world: World) -> None:
    attacker = KeyPair.generate()
    sql(world, "INSERT INTO actor_keys (key_id, actor, public_key, status, added_index, retired_index) "
               "VALUES (:k, 'ph-rabat', :pk, 'active', 0, NULL)", k=attacker.key_id, pk=attacker.public.b64)
    assert audit(world).ok
    receipt = world.ledger.submit(EventBuilder("ph-rabat", attacker, world.clock).dispense(GTIN, "L1S00002"))
    report = failed_at(world, receipt.index, "not registered")
    assert report.entries == receipt.index


def test_forged_leaf_appended_by_hand(world: World) -> None:
    """A complete forgery below the application: a new leaf signed by an attacker, chained, hashed into the
    tree and the head; only a checkpoint cannot be forged. The audit refuses the leaf itself."""
    drop_triggers(world)
    attacker = KeyPair.generate()
    last = world.ledger.entries(16, 17)[0]
    body = EventBuilder("ph-rabat", attacker, world.clock).dispense(GTIN, "L1S00002").body
    entry = Entry(17, world.clock.now, last.chain, last.entry_hash,
                  SignedEvent(body, world.keys["ph-rabat"].key_id, attacker.sign(EVENT_PURPOSE, body)))
    with world.ledger.store.write() as u:
        size, _ = u.lock_head()
        tree = CompactRange.from_nodes(size, u.nodes(root_nodes(size)))
        u.insert_entries([(entry, "dispense", GTIN, "L1")])
        u.insert_nodes(tree.append(entry.hash))
        u.set_head(tree.size, tree.root())
    failed_at(world, 17, "signature")


def _reencoded(doc: dict[str, Any], how: str) -> dict[str, Any]:
    doc = dict(doc)
    if how == "uppercase prev":
        doc["prev"] = doc["prev"].upper()
    elif how == "received without microseconds":
        assert doc["received"].endswith(".000000Z")
        doc["received"] = doc["received"].replace(".000000Z", "Z")
    elif how == "index as a string":
        doc["index"] = str(doc["index"])
    else:
        doc["injected"] = "data the signature and the Merkle leaf hash never covered"
    return doc


@pytest.mark.parametrize("how", ["uppercase prev", "received without microseconds", "index as a string",
                                 "extra field"])
def test_leaf_bytes_rewritten_without_changing_the_entry_hash(world: World, how: str) -> None:
    """Regression: the audit once hashed the re-serialised entry instead of the stored leaf bytes, so a leaf
    re-encoded with the same meaning (or with an injected field) passed."""
    drop_triggers(world)
    original = world.ledger.entries(TARGET, TARGET + 1)[0]
    write_leaf(world, TARGET, _reencoded(leaf_doc(world, TARGET), how), rehash=False)
    tampered = world.ledger.entries(TARGET, TARGET + 1)[0]
    # the served leaf no longer hashes to the Merkle leaf: anyone checking a proof with it fails
    assert tampered.leaf != original.leaf and leaf_hash(tampered.leaf) != tampered.entry_hash
    failed_at(world, TARGET)
