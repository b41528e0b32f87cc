"""`athar audit verify --state FILE` as an auditor runs it day after day: the first audit is full, the next ones
verify only what was added, locally (SQLite and PostgreSQL) and through the API; a state that cannot be used, a
rolled-back log and a forked one are each said in one line, and the kept state is never lost."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from api.settings import Settings
from ledger.home import open_ledger
from signing.keys import write_private_key
from tests.integration.cli.test_cli_audit import athar
from tests.integration.server import running_server
from tests.support import GTIN, make_world


def test_daily_audits_resume_from_the_kept_state(tmp_path: Path, db_url: str) -> None:
    home = tmp_path / "home"
    world = make_world(home, db_url)
    serials = world.commission("LOT-A", 6)
    world.deliver("maphar", "dist-north", "LOT-A", serials)
    state = tmp_path / "audits" / "athar.state"
    common = ["audit", "verify", "--data-dir", str(home), "--db", db_url, "--state", str(state)]

    no_dir = athar(*common, "--json")
    assert no_dir.returncode == 2 and "does not exist" in no_dir.stderr
    assert len(no_dir.stderr.strip().splitlines()) == 1
    state.parent.mkdir()

    first = athar(*common, "--json")
    assert first.returncode == 0, first.stderr
    day1 = json.loads(first.stdout)
    assert day1["resumed_from"] == 0 and day1["entries"] == world.ledger.size() == 12
    assert state.is_file()

    world.deliver("dist-north", "ph-rabat", "LOT-A", serials[:2])
    world.ledger.submit(world.as_("ph-rabat").dispense(GTIN, serials[0]))
    second = athar(*common)
    assert second.returncode == 0, second.stderr
    assert "intact: 3 new entries (after the 12 of the last audit: 15 in all)" in second.stdout, second.stdout
    assert second.stderr == ""  # no progress bar where no one watches it, not even its empty line

    # a damaged state stops the audit in one line and stays as it was: it is all the auditor remembers
    kept = state.read_bytes()
    state.write_bytes(kept[: len(kept) // 2])
    damaged = athar(*common)
    assert damaged.returncode == 2 and "damaged" in damaged.stderr, damaged.stderr
    assert len(damaged.stderr.strip().splitlines()) == 1
    assert state.read_bytes() == kept[: len(kept) // 2]
    state.write_bytes(kept)

    # the log rolled back behind what was verified: TAMPERED, and the kept state is not replaced
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            for table in ("log_entries", "checkpoints"):
                conn.execute(sa.text(f"DROP TRIGGER {table}_no_delete"))
        else:
            conn.execute(sa.text("ALTER TABLE log_entries DISABLE TRIGGER USER"))
            conn.execute(sa.text("ALTER TABLE checkpoints DISABLE TRIGGER USER"))
        conn.execute(sa.text("DELETE FROM log_entries WHERE idx >= 13"))
        conn.execute(sa.text("DELETE FROM checkpoints WHERE tree_size > 13"))
        conn.execute(sa.text("UPDATE log_head SET tree_size = 13"))
    engine.dispose()
    rolled = athar(*common)
    assert rolled.returncode == 20 and "rolled back" in rolled.stderr, rolled.stderr
    assert rolled.stderr.count("\n") == 1
    assert state.read_bytes() == kept
    world.db.dispose()


def test_a_remote_auditor_resumes_and_catches_a_fork(tmp_path: Path) -> None:
    home = tmp_path / "home"
    world = make_world(home, f"sqlite:///{home}/ledger.db")
    world.commission("R1", 3)
    write_private_key(tmp_path / "regulator.key", world.keys["regulator"])
    world.db.dispose()
    fork_home = tmp_path / "fork"
    shutil.copytree(home, fork_home)  # same keys, same history so far
    state = tmp_path / "remote.state"
    identity = ["--data-dir", str(home), "--actor", "regulator", "--key", str(tmp_path / "regulator.key"),
                "--state", str(state), "--json"]

    with running_server(Settings(data_dir=home, overdue_check_seconds=0)) as url:
        first = athar("audit", "verify", "--url", url, *identity)
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["entries"] == 10
        world.ledger.submit(world.as_("maphar").commission(GTIN, "R2", dt.date(2029, 1, 1), "X", ["R2S1"]))
        world.ledger.submit(world.as_("maphar").commission(GTIN, "R3", dt.date(2029, 1, 1), "X", ["R3S1"]))
        second = athar("audit", "verify", "--url", url, *identity)
        assert second.returncode == 0, second.stderr
        report = json.loads(second.stdout)
        assert (report["resumed_from"], report["entries"], report["tree_size"]) == (10, 2, 12)
    kept = state.read_bytes()

    # another ledger's server (its own keys, the same default origin): its checkpoint is not signed by the pinned
    # ledger key, which is said as a finding about that server; the auditor's state is not read
    stranger = make_world(tmp_path / "stranger", f"sqlite:///{tmp_path / 'stranger.db'}")
    stranger.db.dispose()
    with running_server(Settings(data_dir=tmp_path / "stranger", overdue_check_seconds=0)) as other:
        refused = athar("audit", "verify", "--url", other, *identity[:-1])
    assert refused.returncode == 20, refused.stderr
    assert "not signed by the pinned ledger key" in refused.stderr and "rolled back" not in refused.stderr
    assert state.read_bytes() == kept

    # the copy of the ledger from before those two entries, served as it is: a signed checkpoint of a shorter log
    fork_url = f"sqlite:///{fork_home}/ledger.db"
    with running_server(Settings(data_dir=fork_home, database_url=fork_url, overdue_check_seconds=0)) as older:
        rolled = athar("audit", "verify", "--url", older, *identity[:-1])
    assert rolled.returncode == 20 and "shrank from the 12 entries verified before to 10" in rolled.stderr
    assert state.read_bytes() == kept
    # the fork: that copy appends other entries under the same keys
    fork, fork_db = open_ledger(fork_home, fork_url)
    for lot in ("EVIL1", "EVIL2", "EVIL3"):
        fork.submit(world.as_("maphar").commission(GTIN, lot, dt.date(2029, 1, 1), "X", [f"{lot}S1"]))
    fork_db.dispose()
    with running_server(Settings(data_dir=fork_home, database_url=fork_url, overdue_check_seconds=0)) as forked:
        alarm = athar("audit", "verify", "--url", forked, *identity[:-1])
    assert alarm.returncode == 20, alarm.stderr
    assert "TAMPERED" in alarm.stderr and "does not match the entries" in alarm.stderr, alarm.stderr
    assert state.read_bytes() == kept


def test_a_ledger_database_gone_is_unreachable_not_tampered(tmp_path: Path) -> None:
    home = tmp_path / "home"
    world = make_world(home, f"sqlite:///{home}/ledger.db")
    world.db.dispose()
    state = tmp_path / "athar.state"
    assert athar("audit", "verify", "--data-dir", str(home), "--state", str(state)).returncode == 0
    kept = state.read_bytes()
    (home / "ledger.db").rename(tmp_path / "elsewhere.db")
    gone = athar("audit", "verify", "--data-dir", str(home), "--state", str(state))
    assert gone.returncode == 5, gone.stderr
    assert "TAMPERED" not in gone.stderr and "ledger.db" in gone.stderr
    assert state.read_bytes() == kept


class _Withholding:
    """A server that signs a checkpoint of more entries than it serves: its pages come back empty."""

    def __init__(self, served: list[dict[str, object]]) -> None:
        self.served = served
        self.asked = 0

    def entries(self, start: int, end: int) -> list[dict[str, object]]:
        self.asked += 1
        return self.served[start:end]


def test_a_server_that_signs_more_than_it_serves_is_a_finding(tmp_path: Path) -> None:
    from ledger.audit import LogVerifier
    from ledger.checkpoint import Checkpoint, sign_checkpoint
    from scanner_cli.commands.audit import _verify_remote

    world = make_world(tmp_path / "home", f"sqlite:///{tmp_path / 'ledger.db'}")
    cfg = world.ledger.config
    stored = world.ledger.entries(0, world.ledger.size())
    served = [{"index": e.index, "entry": json.loads(e.leaf), "entry_hash": e.entry_hash.hex()} for e in stored]
    note = sign_checkpoint(Checkpoint(cfg.origin, 10**15, bytes(32)), cfg.origin, world.home.ledger_key())
    server: Any = _Withholding(served)
    report = _verify_remote(server, note, LogVerifier(cfg.trust, cfg.origin), {}, True)
    assert not report.ok and report.failure is not None
    assert f"returned {len(served)} of {10**15} entries" in report.failure.reason
    assert server.asked == 2  # the page it served, then the empty one: not the 10^12 pages the note promised
    world.db.dispose()


def test_a_served_entry_that_is_not_canonical_json_is_a_finding(tmp_path: Path) -> None:
    from ledger.audit import LogVerifier
    from scanner_cli.commands.audit import _verify_remote

    world = make_world(tmp_path / "home", f"sqlite:///{tmp_path / 'ledger.db'}")
    cfg = world.ledger.config
    note = world.ledger.checkpoint()
    assert note is not None
    stored = world.ledger.entries(0, world.ledger.size())
    served = [{"index": e.index, "entry": json.loads(e.leaf), "entry_hash": e.entry_hash.hex()} for e in stored]
    served[3]["entry"]["v"] = 2**60  # type: ignore[index]  # beyond what RFC 8785 (I-JSON) can write
    server: Any = _Withholding(served)
    report = _verify_remote(server, note.note, LogVerifier(cfg.trust, cfg.origin), {}, True)
    assert not report.ok and report.failure is not None and report.failure.index == 3
    assert "not a log entry" in report.failure.reason
    world.db.dispose()


class _ShortPages(_Withholding):
    """A server that sends at most ``per_call`` entries whatever was asked (as one cuts a page of big
    commissions by its bytes)."""

    def __init__(self, served: list[dict[str, object]], per_call: int) -> None:
        super().__init__(served)
        self.per_call = per_call

    def entries(self, start: int, end: int) -> list[dict[str, object]]:
        return super().entries(start, min(end, start + self.per_call))


def test_a_remote_audit_reads_on_after_pages_shorter_than_asked(tmp_path: Path) -> None:
    from ledger.audit import LogVerifier
    from scanner_cli.commands.audit import _verify_remote

    world = make_world(tmp_path / "home", f"sqlite:///{tmp_path / 'ledger.db'}")
    world.supply_history("L1")
    cfg = world.ledger.config
    note = world.ledger.checkpoint()
    assert note is not None
    stored = world.ledger.entries(0, world.ledger.size())
    served = [{"index": e.index, "entry": json.loads(e.leaf), "entry_hash": e.entry_hash.hex()} for e in stored]
    server: Any = _ShortPages(served, 3)
    report = _verify_remote(server, note.note, LogVerifier(cfg.trust, cfg.origin), {}, True)
    assert report.ok, report.failure
    assert report.entries == len(served) and server.asked == -(-len(served) // 3)
    world.db.dispose()
