"""An audit whose signature checks run ahead in a helper process (``ledger.audit_signatures``) reaches the same
verdict, naming the same failure, as one that checks everything itself: a helper can save work, never make
an audit pass. Scenarios from ``test_tamper`` (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

import pytest

from ledger.audit import AuditReport, verify_store
from ledger.builder import EventBuilder
from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.entry import EVENT_PURPOSE
from ledger.merkle import CompactRange, leaf_hash
from signing import KeyPair, b64encode
from tests.contract.test_tamper import TARGET, drop_triggers, leaf_doc, resign_as, sql, write_leaf
from tests.contract.test_tamper import world as tamper_world  # noqa: F401 - a fixture, used below
from tests.support import GTIN, World


@pytest.fixture
def world(tamper_world: World) -> World:  # noqa: F811 - the fixture of that name, taken as an argument
    return tamper_world


def both(w: World) -> AuditReport:
    cfg = w.ledger.config
    alone = verify_store(w.ledger.store, cfg.trust, cfg.origin, helpers=0)
    helped = verify_store(w.ledger.store, cfg.trust, cfg.origin, helpers=1)
    assert (helped.ok, helped.failure, helped.entries, helped.checkpoints, helped.chains) == (
        alone.ok, alone.failure, alone.entries, alone.checkpoints, alone.chains)
    return helped


def check(w: World, tamper: Callable[[World], None], index: int | None, words: str) -> None:
    tamper(w)
    report = both(w)
    assert not report.ok and report.failure is not None and report.failure.index == index, report.failure
    assert words in report.failure.reason, report.failure


def forge_signature(w: World, index: int = TARGET) -> None:
    """Re-sign an entry with a key nobody registered."""
    drop_triggers(w)
    doc = leaf_doc(w, index)
    doc["signature"] = b64encode(KeyPair.generate().sign(EVENT_PURPOSE, doc["event"]))
    write_leaf(w, index, doc)


def test_an_intact_log(world: World) -> None:
    report = both(world)
    assert report.ok and report.entries == world.ledger.size()


def test_a_signature_by_an_unregistered_key(world: World) -> None:
    check(world, forge_signature, TARGET, "signature does not verify")


def test_a_valid_signature_by_another_actors_key(world: World) -> None:
    check(world, lambda w: resign_as(w, "dist-south"), TARGET, "belongs to dist-south")


def test_a_stored_entry_hash_that_is_not_the_leafs(world: World) -> None:
    """The helpers check each leaf against its stored hash, and the audit then skips that check for the
    entries they accept: an edited hash must still be named at its entry, not found later as a wrong root."""
    def tamper(w: World) -> None:
        drop_triggers(w)
        sql(w, "UPDATE log_entries SET entry_hash = :h WHERE idx = :i", h=b"\x11" * 32, i=TARGET)
    check(world, tamper, TARGET, "does not match its hash")


def test_a_key_added_to_the_key_table_only(world: World) -> None:
    """The helper trusts the key table, so it finds the forged signature valid; the audit must not."""
    attacker = KeyPair.generate()
    sql(world, "INSERT INTO actor_keys (key_id, actor, public_key, status, added_index, retired_index) "
               "VALUES (:k, 'ph-rabat', :pk, 'active', 0, NULL)", k=attacker.key_id, pk=attacker.public.b64)
    receipt = world.ledger.submit(EventBuilder("ph-rabat", attacker, world.clock).dispense(GTIN, "L1S00002"))
    report = both(world)
    assert not report.ok and report.failure is not None and report.failure.index == receipt.index
    assert "not registered" in report.failure.reason


def test_a_key_swapped_in_the_key_table(world: World) -> None:
    """The helper then finds genuine signatures invalid; the audit checks them itself and passes."""
    victim = world.keys["ph-rabat"]
    sql(world, "UPDATE actor_keys SET public_key = :pk WHERE key_id = :k", pk=KeyPair.generate().public.b64,
        k=victim.key_id)
    assert both(world).ok


def _note(w: World, size: int, note: str) -> None:
    drop_triggers(w)
    sql(w, "UPDATE checkpoints SET note = :n WHERE tree_size = :s", n=note, s=size)


def _another_genuine_note(w: World) -> None:
    """A note the ledger really signed, for another size: the helpers find it signed, the audit must still
    compare it with the entries."""
    other = w.ledger.checkpoint(TARGET)
    assert other is not None
    _note(w, TARGET + 1, other.note)


def _forge_note_at(w: World, size: int) -> None:
    """The checkpoint at ``size``, with its true size and root, signed by a key that is not the ledger's."""
    genuine = w.ledger.checkpoint(size)
    assert genuine is not None
    cfg = w.ledger.config
    _note(w, size, sign_checkpoint(Checkpoint(cfg.origin, size, genuine.root_hash), cfg.origin, KeyPair.generate()))


def _forged_note(w: World) -> None:
    _forge_note_at(w, TARGET + 1)


def _garbled_note(w: World) -> None:
    genuine = w.ledger.checkpoint(TARGET + 1)
    assert genuine is not None
    _note(w, TARGET + 1, genuine.note.replace("\n\n", "\n", 1))


@pytest.mark.usefixtures("small_pages")
@pytest.mark.parametrize("tamper", [_another_genuine_note, _forged_note, _garbled_note],
                         ids=["another genuine note", "signed by an attacker", "garbled"])
def test_a_checkpoint_note_checked_by_the_helpers(world: World, tamper: Callable[[World], None]) -> None:
    """The helpers check the notes of the checkpoints each page completes; a note they reject or that says
    another size fails at its entry, named as the audit names it alone."""
    check(world, tamper, TARGET, f"checkpoint at tree size {TARGET + 1}")


@pytest.mark.usefixtures("small_pages")
def test_the_replay_leaves_checkpoint_signatures_to_the_helpers(world: World,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A log written at low traffic holds one checkpoint per entry: with helpers, the replay checks none of
    their signatures itself (every one is still compared with the entries)."""
    from ledger import audit, audit_reader

    def refuse(*args: object) -> None:
        raise AssertionError("the replay checked a checkpoint signature itself")

    monkeypatch.setattr(audit, "open_checkpoint", refuse)
    monkeypatch.setattr(audit_reader, "NOTE_SHARE_STEP", 0.0)  # all notes to the helpers, however fast they are
    cfg = world.ledger.config
    report = verify_store(world.ledger.store, cfg.trust, cfg.origin, helpers=1)
    assert report.ok and report.checkpoints == world.ledger.size() == 17


@pytest.mark.usefixtures("small_pages")
@pytest.mark.parametrize("size", [TARGET + 1, TARGET + 2, TARGET + 3])
def test_checkpoints_shared_between_the_helpers_and_the_replay(world: World, monkeypatch: pytest.MonkeyPatch,
                                                               size: int) -> None:
    """When the helpers fall behind, the replay checks part of each page's checkpoint notes itself: of a page of
    3 entries (12-14), the helpers check the notes at sizes 13 and 14, the replay the one at 15. A forged note
    fails either way, named as the audit names it alone."""
    from ledger import audit_reader

    monkeypatch.setattr(audit_reader, "NOTE_SHARE_START", 0.5)
    monkeypatch.setattr(audit_reader, "NOTE_SHARE_STEP", 0.0)
    assert both(world).ok
    check(world, lambda w: _forge_note_at(w, size), size - 1, f"checkpoint at tree size {size}")


class _DeadPool:
    """A helper pool whose processes died (killed for memory, say): every page comes back broken."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def submit(self, *args: object, **kwargs: object) -> Future[list[bool]]:
        future: Future[list[bool]] = Future()
        future.set_exception(BrokenProcessPool("a helper process was killed"))
        return future

    def shutdown(self, **kwargs: object) -> None:
        pass


def test_dead_helpers_leave_the_audit_to_check_signatures_itself(world: World,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from ledger import audit_signatures

    monkeypatch.setattr(audit_signatures, "ProcessPoolExecutor", _DeadPool)
    assert both(world).ok

    check(world, forge_signature, TARGET, "signature does not verify")


def _reencoded(w: World, how: str) -> None:
    """Rewrite the target leaf with the same meaning in other bytes, hashed anew (so only its form is wrong)."""
    drop_triggers(w)
    doc = leaf_doc(w, TARGET)
    if how == "extra field":
        doc["injected"] = "data the sequencer never writes"
        write_leaf(w, TARGET, doc)
        return
    leaf = json.dumps(doc, sort_keys=True).encode()  # spaces after separators: not RFC 8785
    sql(w, "UPDATE log_entries SET leaf = :leaf, entry_hash = :h WHERE idx = :i", leaf=leaf, h=leaf_hash(leaf),
        i=TARGET)


@pytest.mark.parametrize("how", ["extra field", "not canonical"])
def test_a_rehashed_leaf_in_another_form_fails_with_or_without_helpers(world: World, how: str) -> None:
    """The helpers check the form of each leaf, and the audit then skips that check for the leaves they
    accept: a leaf they reject must still fail, named as the audit names it alone."""
    check(world, lambda w: _reencoded(w, how), TARGET, "entry 12")


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages of 3 entries: the 17-entry log is read in six pages, four ahead of the replay."""
    from ledger import audit_reader

    monkeypatch.setattr(audit_reader, "PAGE", 3)


@pytest.mark.usefixtures("small_pages")
def test_pages_read_ahead_give_the_same_verdict(world: World) -> None:
    report = both(world)
    assert report.ok and report.entries == world.ledger.size() and report.checkpoints == world.ledger.size()


@pytest.mark.usefixtures("small_pages")
@pytest.mark.parametrize("level", [0, 1, 2, 3, 4])
def test_an_edited_merkle_node_in_any_page(world: World, level: int) -> None:
    def tamper(w: World) -> None:
        drop_triggers(w)
        sql(w, "UPDATE merkle_nodes SET hash = :h WHERE level = :l AND idx = :i", h=b"\xee" * 32, l=level,
            i=TARGET >> level)
    check(world, tamper, (TARGET >> level) << level, "Merkle node")


@pytest.mark.usefixtures("small_pages")
def test_a_failure_on_the_first_page_stops_the_reader(world: World) -> None:
    """The audit stops at its first failure while the reader has pages queued: it must return, not hang."""
    for _ in range(30):
        world.ledger.submit(world.as_("inspector").report(GTIN, "damaged_pack", serial="L1S00009"))

    check(world, lambda w: forge_signature(w, 1), 1, "signature does not verify")


def test_nodes_completed_are_the_nodes_each_page_of_leaves_completes(world: World) -> None:
    """``nodes_completed(start, end)`` reads, by index ranges, exactly the nodes a tree completes while leaves
    start..end-1 are appended: every range of the 17-entry log, compared with ``CompactRange``."""
    size = world.ledger.size()
    hashes = [e.entry_hash for e in world.ledger.entries(0, size)]
    with world.ledger.store.read() as u:
        for start in range(size):
            tree = CompactRange()
            tree.extend(hashes[:start])
            for end in range(start + 1, size + 1):
                want = dict(tree.copy().extend(hashes[start:end]))
                assert u.nodes_completed(start, end) == want, (start, end)
        assert u.nodes_completed(5, 5) == {}


def test_pages_are_bounded_by_the_bytes_of_their_leaves(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page is read ahead, copied to the helpers and parsed, several at once: the bytes it holds bound the
    audit's memory, whatever the entries (a commission lists every serial of its batch). Pages cover the log in
    order, each within ``PAGE_BYTES`` unless it is one entry bigger than that."""
    from ledger import audit_reader

    world.commission("BIG", 400)  # one entry of about 10 kB among entries of about 650 B
    size = world.ledger.size()
    with world.ledger.store.read() as u:
        sizes = u.leaf_sizes(0, size)
        assert sizes == [(e.index, len(e.leaf)) for e in world.ledger.entries(0, size)]
        lengths = [n for _, n in sizes]
        assert u.leaf_sizes(size, size + 10) == []
        monkeypatch.setattr(audit_reader, "PAGE", 4)  # small entries: pages of PAGE entries
        assert list(audit_reader._pages(u, size, 3)) == [(s, min(size, s + 4)) for s in range(3, size, 4)]
        monkeypatch.setattr(audit_reader, "PAGE", 2000)
        monkeypatch.setattr(audit_reader, "PAGE_BYTES", 2_000)
        bounds = list(audit_reader._pages(u, size, 0))
    assert [s for s, _ in bounds] == [0] + [e for _, e in bounds[:-1]] and bounds[-1][1] == size
    for start, end in bounds:
        assert end - start == 1 or sum(lengths[start:end]) <= 2_000, (start, end)
        if end < size:  # as many entries as fit
            assert sum(lengths[start:end + 1]) > 2_000 or end - start == audit_reader.PAGE
    assert any(end - start == 1 and lengths[start] > 2_000 for start, end in bounds)


def test_pages_bounded_by_bytes_give_the_same_verdict(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from ledger import audit_reader

    monkeypatch.setattr(audit_reader, "PAGE_BYTES", 1_500)  # about two entries a page
    report = both(world)
    assert report.ok and report.entries == world.ledger.size()
    check(world, forge_signature, TARGET, "signature does not verify")


def test_a_page_keeps_missing_entries_inside_it(world: World) -> None:
    """With entries deleted from the store, a page still ends where the bytes of the stored ones say, so the
    missing indexes fall inside a page and its reader finds them missing (never a page that skips them)."""
    world.commission("BIG", 400)  # about 10 kB
    size = world.ledger.size()
    drop_triggers(world)
    sql(world, "DELETE FROM log_entries WHERE idx IN (3, 4)")
    with world.ledger.store.read() as u:
        assert [i for i, _ in u.leaf_sizes(0, 8)] == [0, 1, 2, 5, 6, 7]
        first = len(world.ledger.entries(0, 1)[0].leaf)
        assert u.page_end(0, 8, first) == 1  # the second stored entry no longer fits
        assert u.page_end(2, 8, len(world.ledger.entries(2, 3)[0].leaf)) == 5  # cut at the next stored one
        assert u.page_end(3, 5, 1) == 5  # nothing stored: the whole range, read as empty
        assert u.page_end(0, size, 10**9) == size
        assert u.page_end(size - 1, size, 1) == size  # the big commission alone
    report = both(world)
    assert not report.ok and report.failure is not None and report.failure.index == 3
