"""An audit that resumes from the state an earlier one kept (``ledger.audit_state``), on SQLite and PostgreSQL:
it verifies only the new entries, ends where a full audit ends, and still fails when the history it verified
before was rolled back or rewritten under a newly signed root."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger import audit_state
from ledger import errors as E
from ledger.admission import TrustAnchors
from ledger.audit import AuditReport, verify_store
from ledger.checkpoint import cosign
from ledger.home import open_ledger
from ledger.merkle import root_nodes
from ledger.replay import MemoryState
from ledger.replay_disk import DiskState
from signing import KeyPair, PublicKey
from signing.keys import write_public_key
from tests.contract.test_tamper import drop_triggers, sql
from tests.support import GTIN, World, make_world


def audit(world: World, state: Path | None = None, *, keep: bool = True,
          witnesses: dict[str, PublicKey] | None = None) -> AuditReport:
    """A full audit, or with ``state`` one resumed from that file (and kept in it when it passed); the report's
    state is then a ``MemoryState`` copy of what the file holds, for comparisons."""
    cfg = world.ledger.config
    if state is None:
        return verify_store(world.ledger.store, cfg.trust, cfg.origin, witnesses=witnesses)
    with audit_state.kept(state, cfg.trust, cfg.origin) as kept:
        report = verify_store(world.ledger.store, cfg.trust, cfg.origin, resume=kept.verifier, cosigned=kept,
                              witnesses=witnesses)
        on_disk = report.state
        assert isinstance(on_disk, DiskState)
        copy = on_disk.to_memory()
        if keep and report.ok:
            kept.commit(report)
    report.state = copy
    return report


def kept_state(world: World, state: Path) -> MemoryState:
    cfg = world.ledger.config
    with audit_state.kept(state, cfg.trust, cfg.origin) as kept:
        on_disk = kept.verifier.report.state
        assert isinstance(on_disk, DiskState)
        return on_disk.to_memory()


def same_state(a: MemoryState, b: MemoryState) -> None:
    assert a.actors == b.actors
    assert a.keys == b.keys
    assert a.batches == b.batches
    assert a.packs_ == b.packs_
    assert {k: v for k, v in a.holdings.items() if v} == {k: v for k, v in b.holdings.items() if v}
    assert a.shipments == b.shipments
    assert a.alerts == b.alerts
    assert {k: v for k, v in a.active.items() if v} == {k: v for k, v in b.active.items() if v}


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    w = make_world(tmp_path / "home", db_url)
    try:
        w.supply_history("L1")
        yield w
    finally:
        w.db.dispose()


def more_history(world: World) -> None:
    """Entries of every kind the state carries: a batch, shipments by serial and quantity, a dispense, an alert
    (a second dispense of one pack), a report, a recall, a key rotation."""
    world.supply_history("L2")
    serials = world.commission("L3", 4)
    world.deliver("maphar", "dist-north", "L3", serials)
    world.deliver("dist-north", "ph-rabat", "L3", serials[:2])
    world.ledger.submit(world.as_("ph-rabat").dispense(GTIN, serials[0]))
    with pytest.raises(Exception, match="dispensed"):
        world.ledger.submit(world.as_("ph-fes").dispense(GTIN, serials[0]))
    world.ledger.submit(world.as_("inspector").report(GTIN, "suspected_falsified", serial=serials[1]))
    world.ledger.submit(world.as_("regulator").recall(GTIN, "L2", "contamination"))
    new = KeyPair.generate()
    world.ledger.submit(world.root.rotate_key("ph-fes", new.public.b64))
    world.keys["ph-fes"] = new
    world.deliver("dist-north", "ph-fes", "L3", serials[2:3])
    world.ledger.submit(world.as_("ph-fes").dispense(GTIN, serials[2]))


def test_a_resumed_audit_verifies_only_new_entries_and_ends_where_a_full_audit_does(
        world: World, tmp_path: Path) -> None:
    state = tmp_path / "audit.state"
    first = audit(world, state)
    assert first.ok, first.failure
    assert (first.resumed_from, first.entries) == (0, world.ledger.size())
    before = first.tree_size

    more_history(world)
    resumed = audit(world, state)
    full = audit(world)
    assert resumed.ok and full.ok, (resumed.failure, full.failure)
    assert resumed.resumed_from == before
    assert resumed.entries == world.ledger.size() - before > 20
    assert resumed.tree_size == full.tree_size == world.ledger.size()
    assert resumed.tree.root() == full.tree.root()
    assert resumed.chain_heads == full.chain_heads
    assert (resumed.chains, resumed.actors, resumed.batches) == (full.chains, full.actors, full.batches)
    same_state(resumed.state, full.state)
    # the stored checkpoints from the resumed size on, the first of them the one at the old size
    assert resumed.checkpoints == sum(1 for s in range(before, full.tree_size + 1) if s)

    # nothing new: the log must still be the one verified
    again = audit(world, state)
    assert again.ok and (again.entries, again.resumed_from) == (0, full.tree_size)
    # and what was kept opens as the same state (the file round-trips every record)
    same_state(kept_state(world, state), full.state)


def test_a_log_rolled_back_behind_the_kept_state_fails(world: World, tmp_path: Path) -> None:
    state = tmp_path / "audit.state"
    assert audit(world, state).ok
    size = world.ledger.size()
    kept = state.read_bytes()
    drop_triggers(world)
    sql(world, "DELETE FROM log_entries WHERE idx >= :i", i=size - 3)
    sql(world, "DELETE FROM checkpoints WHERE tree_size > :i", i=size - 3)
    sql(world, "UPDATE log_head SET tree_size = :n", n=size - 3)
    report = audit(world, state)
    assert not report.ok
    assert report.failure is not None and "rolled back" in report.failure.reason
    assert state.read_bytes() == kept  # a failed audit leaves the kept state as it was


def test_history_rewritten_under_a_new_signed_root_fails_the_resumed_audit(
        world: World, tmp_path: Path, db_url: str) -> None:
    """The attacker changes a stored Merkle node covering verified entries; the ledger, reopened, then signs the
    next checkpoints over that changed tree. A resumed audit reads none of the old rows, but the root it computes
    from its kept compact range and the new entries does not match the newly signed one."""
    state = tmp_path / "audit.state"
    assert audit(world, state).ok
    size = world.ledger.size()
    oldest = root_nodes(size)[0]
    drop_triggers(world)
    sql(world, "UPDATE merkle_nodes SET hash = :h WHERE level = :l AND idx = :i",
        h=b"\x66" * 32, l=oldest.level, i=oldest.index)
    world.db.dispose()
    world.ledger, world.db = open_ledger(world.home.path, db_url)
    world.ledger.clock = world.clock
    world.commission("L9", 1)
    report = audit(world, state)
    assert not report.ok
    assert report.failure is not None
    assert "does not match the entries" in report.failure.reason, report.failure


def test_a_state_file_of_another_ledger_damaged_or_in_use_is_refused(world: World, tmp_path: Path) -> None:
    state = tmp_path / "audit.state"
    assert audit(world, state).ok
    cfg = world.ledger.config

    def opened(path: Path, trust: TrustAnchors = cfg.trust, origin: str = cfg.origin) -> None:
        with audit_state.kept(path, trust, origin):
            pass

    for trust, origin in ((TrustAnchors(root=cfg.trust.root, ledger=KeyPair.generate().public), cfg.origin),
                          (TrustAnchors(root=KeyPair.generate().public, ledger=cfg.trust.ledger), cfg.origin),
                          (cfg.trust, "another.example/log")):
        with pytest.raises(audit_state.StateFileError, match="another ledger"):
            opened(state, trust, origin)

    data = state.read_bytes()
    damaged = tmp_path / "damaged.state"
    page = 4096
    middle = data[:page * 3] + bytes(page) + data[page * 4:]
    for bad, why in ((data[: len(data) // 2], "damaged"), (middle, "damaged"), (b"", "not an audit state file"),
                     (b"trusted checkpoint\n1\n", "not an audit state file"), (bytes(8192), "not an audit state")):
        damaged.write_bytes(bad)
        with pytest.raises(audit_state.StateFileError, match=why):
            opened(damaged)
        assert damaged.read_bytes() == bad  # left as it was
    with pytest.raises(audit_state.StateFileError, match="not a file"):
        opened(tmp_path)
    # one audit per file: a second one waits a moment for the first, then says so
    with audit_state.kept(state, cfg.trust, cfg.origin), pytest.raises(audit_state.StateFileError,
                                                                         match="in use by another audit"):
        opened(state)
    opened(state)
    assert state.read_bytes() == data
    assert not list(tmp_path.glob(".*.tmp*"))  # nothing left of the file that the first audit built


def test_an_old_row_edited_with_nothing_signed_since_is_left_to_the_full_audit(world: World, tmp_path: Path) -> None:
    """What a resumed audit does not do (docs/reliability.md): re-read the stored rows of the part it verified.
    A leaf edited there, with no checkpoint signed over it since, is found by the next full audit."""
    state = tmp_path / "audit.state"
    assert audit(world, state).ok
    drop_triggers(world)
    sql(world, "UPDATE log_entries SET leaf = :leaf WHERE idx = 9", leaf=b'{"tampered":true}')
    assert audit(world, state, keep=False).ok
    full = audit(world)
    assert not full.ok and full.failure is not None and full.failure.index == 9


KILLED_MIDWAY = """
import os, signal, sys
from pathlib import Path
from ledger import audit_state
from ledger.home import open_ledger
from ledger.state import AddPacks
ledger, db = open_ledger(Path(sys.argv[1]), sys.argv[2])
cfg = ledger.config
with audit_state.kept(Path(sys.argv[3]), cfg.trust, cfg.origin) as kept:
    state = kept.verifier.report.state
    state.apply([AddPacks("06111234567895", "KILLED", tuple(f"K{i}" for i in range(5000)), "maphar")])
    state.flush()  # written to the file, not committed
    print(state.count("packs"), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_an_audit_killed_midway_leaves_the_state_as_the_last_good_audit_left_it(
        world: World, tmp_path: Path, db_url: str) -> None:
    state = tmp_path / "audit.state"
    assert audit(world, state).ok
    before = kept_state(world, state)
    run = subprocess.run([sys.executable, "-c", KILLED_MIDWAY, str(world.home.path), db_url, str(state)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert int(run.stdout) == len(before.packs_) + 5000  # it had written them
    same_state(kept_state(world, state), before)  # SQLite rolled the unfinished audit back
    world.commission("AFTER", 2)
    assert audit(world, state).ok


def test_a_first_audit_killed_midway_leaves_files_the_next_one_removes(world: World, tmp_path: Path) -> None:
    state = tmp_path / "audit.state"
    gone = tmp_path / audit_state.BUILDING.format(pid=4194999)  # a pid above Linux's largest
    live = tmp_path / audit_state.BUILDING.format(pid=os.getppid())  # a running process's: its own
    for leftover in (gone, gone.with_name(gone.name + "-journal"), live):
        leftover.write_bytes(b"half-built")
    assert audit(world, state).ok
    assert not gone.exists() and not gone.with_name(gone.name + "-journal").exists()
    assert live.exists()


def test_a_witness_cosigning_an_old_checkpoint_late_is_verified_once(world: World, tmp_path: Path,
                                                                      db_url: str) -> None:
    """A cosignature row may arrive for a checkpoint older than the kept size: the next audit verifies it (a forged
    one fails it), and the one after does not verify it again."""
    witness, other = KeyPair.generate(), KeyPair.generate()
    write_public_key(world.home.keys / "witnesses" / "witness.example.ma.pub", witness.public)
    write_public_key(world.home.keys / "witnesses" / "other.example.org.pub", other.public)
    world.db.dispose()
    world.ledger, world.db = open_ledger(world.home.path, db_url)
    world.ledger.clock = world.clock
    keys = {"witness.example.ma": witness.public}
    state = tmp_path / "audit.state"
    old = world.ledger.checkpoint()
    assert old is not None
    assert audit(world, state, witnesses=keys).ok
    world.commission("LATE", 2)
    world.ledger.add_cosignatures(cosign(old.note, "witness.example.ma", witness, 1795342500))
    world.ledger.add_cosignatures(cosign(old.note, "other.example.org", other, 1795342501))

    late = audit(world, state, witnesses=keys)
    assert late.ok and late.cosignatures == 1, late.failure
    assert late.unchecked_witnesses == {"other.example.org": 1}  # its key is not at hand: said once
    again = audit(world, state, witnesses=keys)
    assert again.ok and again.cosignatures == 0 and again.unchecked_witnesses == {}  # seen, kept
    both = audit(world, state, witnesses={**keys, "other.example.org": other.public})
    assert both.ok and both.cosignatures == 1  # the other witness's key at hand now: its row is verified
    forged = cosign(old.note, "witness.example.ma", KeyPair.generate(), 1795342500)[len(old.note):]
    sql(world, "UPDATE cosignatures SET line = :line WHERE tree_size = :n AND witness = 'witness.example.ma'",
        line=forged, n=old.tree_size)
    caught = audit(world, state, witnesses=keys)
    assert not caught.ok and caught.failure is not None and "does not verify" in caught.failure.reason


def test_a_database_that_cannot_be_read_is_not_a_finding(tmp_path: Path) -> None:
    """Storage errors are raised (the command says it cannot reach the ledger, exit 5), never reported as
    tampering, and the kept state stays as it was."""
    home = tmp_path / "home"
    w = make_world(home, f"sqlite:///{tmp_path / 'ledger.db'}")
    state = tmp_path / "audit.state"
    assert audit(w, state).ok
    kept = state.read_bytes()
    w.db.dispose()
    (tmp_path / "ledger.db").rename(tmp_path / "elsewhere.db")
    with pytest.raises(E.StorageUnavailable):
        audit(w, state)
    with pytest.raises(E.StorageUnavailable):
        audit(w)
    assert state.read_bytes() == kept


def test_a_state_file_name_its_journal_cannot_follow_is_refused(world: World, tmp_path: Path) -> None:
    cfg = world.ledger.config
    with pytest.raises(audit_state.StateFileError, match="too long a file name"), \
            audit_state.kept(tmp_path / ("s" * 250), cfg.trust, cfg.origin):
        pass
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".athar", "sss"))]


def test_a_first_audit_never_replaces_a_state_kept_while_it_ran(world: World, tmp_path: Path, db_url: str) -> None:
    """Two first audits overlap (a slow one from last night's cron, today's): the slower one must not put its older
    state over the newer one, which would hide a later rollback."""
    state = tmp_path / "audit.state"
    cfg = world.ledger.config
    with audit_state.kept(state, cfg.trust, cfg.origin) as slow:
        report = verify_store(world.ledger.store, cfg.trust, cfg.origin, resume=slow.verifier, cosigned=slow)
        world.commission("MEANWHILE", 1)
        other = subprocess.run([sys.executable, "-m", "scanner_cli.main", "audit", "verify", "--data-dir",
                                str(world.home.path), "--db", db_url, "--state", str(state)],
                               capture_output=True, text=True, timeout=120, check=False)
        assert other.returncode == 0, other.stderr
        newer = state.read_bytes()
        with pytest.raises(audit_state.StateFileError, match="written by another audit while this one ran"):
            slow.commit(report)
    assert state.read_bytes() == newer
    assert not list(tmp_path.glob(".athar-audit-*"))
    assert audit(world, state).resumed_from == world.ledger.size()


def test_a_journal_left_by_a_failed_write_is_rolled_back_when_the_audit_closes(
        world: World, tmp_path: Path, db_url: str) -> None:
    """What a full disk leaves (SQLite could not roll back in the same connection): pages of the unfinished audit
    written into the file, and the journal that undoes them. Here a killed audit with a small page cache leaves
    the same; rolling the journal back gives the file alone its last good content again."""
    state = tmp_path / "audit.state"
    assert audit(world, state).ok
    good = state.read_bytes()
    spill = KILLED_MIDWAY.replace("state = kept.verifier.report.state",
                                  "kept.db.execute('PRAGMA cache_size = 8')\n    state = kept.verifier.report.state")
    run = subprocess.run([sys.executable, "-c", spill, str(world.home.path), db_url, str(state)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == -signal.SIGKILL, run.stderr
    journal = state.with_name(state.name + audit_state.JOURNAL)
    assert journal.exists() and state.read_bytes() != good  # the unfinished audit's pages are in the file
    audit_state._roll_back_journal(state)
    assert state.read_bytes() == good and not journal.exists()


def scratch_audit(world: World, directory: Path, flush_every: int) -> tuple[AuditReport, MemoryState]:
    cfg = world.ledger.config
    with audit_state.scratch(cfg.trust, cfg.origin, directory, flush_every) as verifier:
        assert list(directory.iterdir()), "the scratch file is in the directory given"
        report = verify_store(world.ledger.store, cfg.trust, cfg.origin, resume=verifier)
        on_disk = report.state
        assert isinstance(on_disk, DiskState)
        return report, on_disk.to_memory()


@pytest.mark.parametrize("flush_every", [1, 7, audit_state.SCRATCH_FLUSH_EVERY])
def test_a_full_audit_on_a_scratch_file_ends_where_the_audit_in_memory_does(
        world: World, tmp_path: Path, flush_every: int) -> None:
    """The audit that keeps nothing replays on a throwaway file (so its memory does not grow with the log): with
    its records written out after every change, every few, or never, it ends in the state the replay in memory
    reaches, and leaves no file behind."""
    more_history(world)
    scratch_dir = tmp_path / "scratch"
    scratch_dir.mkdir()
    report, state = scratch_audit(world, scratch_dir, flush_every)
    full = audit(world)
    assert report.ok and full.ok, (report.failure, full.failure)
    assert (report.resumed_from, report.entries, report.checkpoints) == (0, full.entries, full.checkpoints)
    assert report.tree.root() == full.tree.root()
    assert report.chain_heads == full.chain_heads
    same_state(state, full.state)
    assert not list(scratch_dir.iterdir())


def test_a_scratch_audit_finds_what_the_audit_in_memory_finds(world: World, tmp_path: Path) -> None:
    more_history(world)
    drop_triggers(world)
    sql(world, "UPDATE log_entries SET entry_hash = :h WHERE idx = 5", h=b"\x11" * 32)
    scratch_dir = tmp_path / "scratch"
    scratch_dir.mkdir()
    report, _ = scratch_audit(world, scratch_dir, 3)
    full = audit(world)
    assert not report.ok and report.failure is not None
    assert report.failure == full.failure and report.failure.index == 5
    assert not list(scratch_dir.iterdir())


def test_a_scratch_file_that_cannot_be_made_is_one_error(world: World, tmp_path: Path) -> None:
    cfg = world.ledger.config
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("x")
    with pytest.raises(audit_state.StateFileError, match=r"cannot make the audit's scratch file.*TMPDIR"), \
            audit_state.scratch(cfg.trust, cfg.origin, not_a_directory):
        pass


def test_a_killed_audit_s_scratch_directory_is_removed_by_the_next(world: World, tmp_path: Path) -> None:
    """An audit killed outright (SIGKILL, SIGTERM, a power cut) runs no cleanup, and its scratch file may hold
    gigabytes: the next audit in that directory removes it. A running audit's (its lock held, here by another
    open file) is left alone, and so is anything the audit did not make, whatever its name."""
    scratch_dir = tmp_path / "scratch"
    scratch_dir.mkdir()

    def made(suffix: str, files: tuple[str, ...] = ("lock", "replay.db")) -> Path:
        d = scratch_dir / (audit_state.SCRATCH_PREFIX + suffix)
        d.mkdir()
        for name in files:
            (d / name).write_bytes(b"x" * 100)
        return d

    dead, running = made("abcd1234"), made("efgh5678")
    others = [made("notes"), made("ijkl9012", ("lock", "replay.db", "report.pdf")), made("mnop3456", ("replay.db",)),
              scratch_dir / "athar-audit-2024-reports"]
    others[-1].mkdir()
    (scratch_dir / (audit_state.SCRATCH_PREFIX + "qrst7890")).symlink_to(dead)
    others.append(scratch_dir / (audit_state.SCRATCH_PREFIX + "qrst7890"))
    with open(running / "lock", "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        report, _ = scratch_audit(world, scratch_dir, 5)
    assert report.ok
    assert sorted(p.name for p in scratch_dir.iterdir()) == sorted(p.name for p in [running, *others])
